//! Driving a real chromium (Debian's `chromium` through `chromedriver`)
//! against a real `palisade-backend`.
//!
//! The WebDriver server is the run's (`cargo xtask test` exports
//! `PALISADE_TEST_WEBDRIVER_URL`), or one this test starts when
//! `chromedriver` is on the `PATH`; without either the test says why it
//! skips, or fails under `CI=true`. Each [`Browser`] is a fresh headless
//! chromium with a profile and a download directory of its own, that
//! resolves no name but loopback, so nothing leaves the machine.
//!
//! Passkeys: a [`Browser`] opened at [`Address::Localhost`] can be given a
//! virtual authenticator ([`Browser::add_virtual_authenticator`]), which
//! answers `navigator.credentials.create()` and `.get()` at once, as a
//! person who touched the sensor would. Checked on chromium 156: the
//! backend's certificate, which this profile does not trust, is no obstacle
//! (chromium skips its "WebAuthn is not supported on sites with TLS
//! certificate errors" check while a virtual authenticator is attached, and
//! `acceptInsecureCerts` already keeps the page free of certificate errors),
//! so no extra switch is needed; but an IP address is never a relying
//! party id ("SecurityError: This is an invalid domain."), hence `localhost`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::Method;
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use palisade_testkit::webdriver::{self, Chromedriver};

use crate::support::Backend;

/// How long a page or a download may take on a small, shared CI machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Browser tests run one at a time in a process (`cargo test` runs a
/// binary's tests on threads; nextest runs each in its own process and
/// its `browser` test group allows one at a time).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The WebDriver server a test drives its browsers through.
pub struct Driver {
    url: String,
    /// The test's own chromedriver, when the run has no shared one.
    _own: Option<Chromedriver>,
    _turn: MutexGuard<'static, ()>,
}

impl Driver {
    /// The run's driver, or one of the test's own; `None` (after saying
    /// why) when there is none and this is not CI.
    pub fn get(test: &str) -> Option<Driver> {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(url) = std::env::var(webdriver::ENV_URL)
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Some(Driver {
                url,
                _own: None,
                _turn: turn,
            });
        }
        let Some(program) = webdriver::find() else {
            assert!(
                !palisade_testkit::is_ci(),
                "CI=true, {} is unset and chromedriver is not on the PATH: \
                 `cargo xtask test` (as root) installs chromium and chromium-driver and starts one",
                webdriver::ENV_URL
            );
            eprintln!(
                "skipped {test}: no browser to drive ({} is unset and chromedriver is not on the PATH; \
                 apt-get install chromium chromium-driver, or run cargo xtask test as root)",
                webdriver::ENV_URL
            );
            return None;
        };
        let own = Chromedriver::start(&program, None)
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Some(Driver {
            url: own.url(),
            _own: Some(own),
            _turn: turn,
        })
    }
}

/// The name a browser reaches the backend by; the backend's certificate
/// names both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    /// `https://127.0.0.1:PORT`, the address the backend listens on.
    Ip,
    /// `https://localhost:PORT`, a domain: what a passkey test needs, since
    /// WebAuthn refuses an IP address as relying party id.
    Localhost,
}

/// A WebDriver extension command of the Web Authentication API
/// (<https://w3c.github.io/webauthn/#sctn-automation>), which fantoccini
/// has no method for: `path` is under `/session/{id}/webauthn/`.
#[derive(Debug)]
struct WebAuthnCommand {
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
}

impl WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        // fantoccini's client has a session from `connect` to `close`, and
        // a `Browser` issues commands only in between.
        let session = session_id.expect("a WebDriver session");
        base_url.join(&format!("session/{session}/webauthn/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(serde_json::Value::to_string),
        )
    }
}

/// A headless chromium signed in to nothing yet, looking at one backend.
pub struct Browser {
    client: Client,
    base: String,
    webdriver: String,
    session: Option<String>,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens a fresh browser for `backend`, which it reaches at `address`;
    /// `user_agent` tells its sessions apart on the account page.
    pub async fn open(
        driver: &Driver,
        backend: &Backend,
        user_agent: &str,
        address: Address,
    ) -> Browser {
        let profile = tempfile::tempdir().expect("profile directory");
        let downloads = tempfile::tempdir().expect("download directory");
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--user-agent={user_agent}"),
            "--window-size=1280,1024".to_owned(),
            // Small containers have a small /dev/shm.
            "--disable-dev-shm-usage".to_owned(),
            // Nothing but the backend under test: no name resolves but
            // loopback, and chromium's own background traffic is off.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"
                .to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-crash-reporter".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--password-store=basic".to_owned(),
        ];
        // Chromium's sandbox refuses to run as root; as an ordinary user it
        // stays on.
        if nix::unistd::geteuid().is_root() {
            args.push("--no-sandbox".to_owned());
        }
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            // The backend's certificate chains to its own CA, which this
            // throwaway profile does not trust.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                },
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal");
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("a chromium session from {}: {e}", driver.url));
        let session = client.session_id().await.expect("the session id");
        let base = match address {
            Address::Ip => format!("https://{}", backend.addr),
            Address::Localhost => format!("https://localhost:{}", backend.addr.port()),
        };
        Browser {
            client,
            base,
            webdriver: driver.url.clone(),
            session,
            downloads,
            _profile: profile,
        }
    }

    /// Opens `path` of the backend and waits for the page.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The path and query of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the page shown is `path` (query ignored).
    pub async fn wait_path(&self, path: &str) {
        let end = Instant::now() + WAIT;
        loop {
            let now = self.path().await;
            if now.split('?').next() == Some(path) {
                return;
            }
            assert!(
                Instant::now() < end,
                "still on {now}, waiting for {path}; page: {}",
                self.main_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in through the form (whatever the outcome).
    pub async fn sign_in(&self, username: &str, password: &str) {
        self.goto("/login").await;
        self.fill("#username", username).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
    }

    /// Signs in and waits for the page it leads to.
    pub async fn sign_in_to(&self, username: &str, password: &str, landing: &str) {
        self.sign_in(username, password).await;
        self.wait_path(landing).await;
    }

    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page within {} s ({e})", WAIT.as_secs()))
    }

    /// Every element matching `css` on the page shown (no waiting).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("looking for {css}: {e}"))
    }

    pub async fn count(&self, css: &str) -> usize {
        self.all(css).await.len()
    }

    /// The visible text of the first element matching `css` (waits for it).
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// The visible text of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.all(css).await {
            out.push(e.text().await.expect("element text"));
        }
        out
    }

    /// Attribute `name` of every element matching `css`.
    pub async fn attrs(&self, css: &str, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.all(css).await {
            if let Some(v) = e.attr(name).await.expect("attribute") {
                out.push(v);
            }
        }
        out
    }

    /// The text of the page's `<main>`, for assertions and failure reports.
    pub async fn main_text(&self) -> String {
        match self.client.find(Locator::Css("main")).await {
            Ok(main) => main.text().await.unwrap_or_default(),
            Err(_) => self.client.source().await.unwrap_or_default(),
        }
    }

    /// The page's `<h1>`.
    pub async fn heading(&self) -> String {
        self.text("h1").await
    }

    /// The labels of the navigation bar.
    pub async fn nav(&self) -> Vec<String> {
        self.texts("header nav a").await
    }

    /// The `action` of every POST form on the page: what the page offers
    /// to change.
    pub async fn post_actions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for form in self.all("form").await {
            let method = form
                .attr("method")
                .await
                .expect("method")
                .unwrap_or_default();
            if method.eq_ignore_ascii_case("post") {
                let action = form
                    .attr("action")
                    .await
                    .expect("action")
                    .unwrap_or_default();
                out.push(action);
            }
        }
        out
    }

    /// Types `value` into the (emptied) field matching `css`.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear the field");
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Picks the option with `value` in the select matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing {value:?} in {css}: {e}"));
    }

    /// Clicks the element matching `css`, a link or a submit button, and
    /// waits until the page it leads to has replaced this one.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.click_element(element).await;
    }

    /// Clicks `element` and waits until the page it leads to has replaced
    /// this one (the same address may come back, so the address alone
    /// cannot tell).
    pub async fn click_element(&self, element: Element) {
        let page = self
            .client
            .find(Locator::Css("html"))
            .await
            .expect("the page's root");
        element.click().await.expect("click");
        let end = Instant::now() + WAIT;
        // The old root goes stale once the new document is there.
        while page.tag_name().await.is_ok() {
            assert!(
                Instant::now() < end,
                "the click led to no new page within {} s",
                WAIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_loaded().await;
    }

    /// Clicks a download link (the page stays).
    pub async fn click_download(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Waits until the document shown has finished loading.
    async fn wait_loaded(&self) {
        let end = Instant::now() + WAIT;
        loop {
            let state = self
                .client
                .execute("return document.readyState", Vec::new())
                .await
                .ok();
            if state.as_ref().and_then(|s| s.as_str()) == Some("complete") {
                return;
            }
            assert!(
                Instant::now() < end,
                "the page did not finish loading within {} s",
                WAIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `name` is completely downloaded; returns its text.
    pub async fn downloaded(&self, name: &str) -> String {
        let path: PathBuf = self.downloads.path().join(name);
        let end = Instant::now() + WAIT;
        loop {
            // Chromium writes `<name>.crdownload` and renames it when done.
            if path.is_file() {
                return std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            }
            let present: Vec<String> = std::fs::read_dir(self.downloads.path())
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                Instant::now() < end,
                "{name} was not downloaded within {} s (download directory holds {present:?})",
                WAIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Attaches a virtual authenticator to the browser's tab and returns its
    /// id: a platform authenticator (CTAP2, transport `internal`) that keeps
    /// discoverable credentials, verifies the user and consents to every
    /// request at once. Attach it before or after opening the page that
    /// uses it; it stays through navigations in the tab.
    pub async fn add_virtual_authenticator(&self) -> String {
        let id = self
            .webauthn(
                Method::POST,
                "authenticator".to_owned(),
                Some(serde_json::json!({
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserConsenting": true,
                    "isUserVerified": true,
                })),
            )
            .await;
        match id {
            serde_json::Value::String(id) => id,
            other => panic!("adding a virtual authenticator answered {other}"),
        }
    }

    /// The credentials `authenticator` holds, as WebDriver describes them:
    /// `credentialId`, `rpId`, `userHandle` (base64url), `signCount` (the
    /// counter after the last ceremony: 1 after `create()`, one more per
    /// `get()`), `isResidentCredential`, `privateKey` (PKCS#8, base64url),
    /// `userName`, `userDisplayName`, `backupEligibility`, `backupState`.
    pub async fn virtual_credentials(&self, authenticator: &str) -> Vec<serde_json::Value> {
        let credentials = self
            .webauthn(
                Method::GET,
                format!("authenticator/{authenticator}/credentials"),
                None,
            )
            .await;
        match credentials {
            serde_json::Value::Array(credentials) => credentials,
            other => panic!("the credentials of {authenticator} were answered as {other}"),
        }
    }

    /// Whether `authenticator` reports the user verified from now on: when
    /// not, chromium fails the ceremony in the page (`NotAllowedError`),
    /// as when a person does not pass the fingerprint or PIN check.
    pub async fn set_user_verified(&self, authenticator: &str, verified: bool) {
        self.webauthn(
            Method::POST,
            format!("authenticator/{authenticator}/uv"),
            Some(serde_json::json!({ "isUserVerified": verified })),
        )
        .await;
    }

    /// Detaches `authenticator`, with its credentials: the browser has no
    /// passkey any more (as on another device).
    pub async fn remove_virtual_authenticator(&self, authenticator: &str) {
        self.webauthn(
            Method::DELETE,
            format!("authenticator/{authenticator}"),
            None,
        )
        .await;
    }

    async fn webauthn(
        &self,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let what = format!("{method} webauthn/{path}");
        self.client
            .issue_cmd(WebAuthnCommand { method, path, body })
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Ends the WebDriver session (the browser exits).
    pub async fn close(mut self) {
        self.session = None;
        let client = self.client.clone();
        client.close().await.expect("closing the browser");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reaches `close`: end the session here, so its
        // chromium does not live on until the run's driver stops.
        if let Some(id) = self.session.take() {
            webdriver::delete_session(&self.webdriver, &id);
        }
    }
}
