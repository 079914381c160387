//! Passkeys in a real browser: chromium's virtual authenticator (a
//! platform authenticator that keeps discoverable ES256 credentials and
//! verifies its user) against the real backend, reached at
//! `https://localhost:PORT` (WebAuthn refuses an IP address). The pages'
//! own script runs the ceremonies and posts the forms.

use std::time::{Duration, Instant};

use crate::Site;
use crate::factors::sign_out;
use crate::harness::{Address, Browser, WAIT};

/// Clicks a passkey button whose ceremony fails: the page stays and says
/// why; returns what it says.
async fn refused_passkey(browser: &Browser, form: &str) -> String {
    browser
        .click_download(&format!("{form} button[type=submit]"))
        .await;
    let end = Instant::now() + WAIT;
    loop {
        let said = browser
            .texts(&format!("{form} [data-passkey-error]"))
            .await
            .join(" ");
        if !said.trim().is_empty() {
            return said;
        }
        assert!(
            Instant::now() < end,
            "no error shown; page: {}",
            browser.main_text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_is_registered_and_replaces_the_code_and_the_password() {
    let Some(site) = Site::start(
        "a_passkey_is_registered_and_replaces_the_code_and_the_password",
        "",
    ) else {
        return;
    };
    let password = site.user("pia", "operator", None);
    let browser = site
        .browser_at("palisade-test pia", Address::Localhost)
        .await;
    let authenticator = browser.add_virtual_authenticator().await;
    browser.sign_in_to("pia", &password, "/hosts").await;

    // Registered from the second-factor page: the first factor of the
    // account brings its backup codes.
    browser.goto("/account/second-factor").await;
    browser.fill("#passkey-name", "Laptop").await;
    browser.click("#passkey-register button[type=submit]").await;
    let codes = browser.texts("#backup-codes li code").await;
    assert_eq!(codes.len(), 10, "{}", browser.main_text().await);
    assert!(
        browser.text("#passkey-list").await.contains("Laptop"),
        "{}",
        browser.main_text().await
    );
    let credentials = browser.virtual_credentials(&authenticator).await;
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["rpId"], "localhost");

    // The password now opens only the second step, which the passkey
    // answers.
    sign_out(&browser).await;
    browser
        .sign_in_to("pia", &password, "/login/second-factor")
        .await;
    browser
        .click("#passkey-second-factor button[type=submit]")
        .await;
    browser.wait_path("/hosts").await;

    // Without the password: the passkey verified its user.
    sign_out(&browser).await;
    browser.goto("/login").await;
    browser.click("#passkey-sign-in button[type=submit]").await;
    browser.wait_path("/hosts").await;
    assert!(
        browser.text("header .whoami").await.contains("pia"),
        "signed in as pia"
    );

    // Confirming it is you before a dangerous operation.
    browser.goto("/reauth?next=/account").await;
    browser.click("#passkey-reauth button[type=submit]").await;
    browser.wait_path("/account").await;
    let used = browser.virtual_credentials(&authenticator).await;
    assert!(
        used[0]["signCount"].as_u64().is_some_and(|n| n >= 4),
        "the counter moved at each use: {used:?}"
    );

    // A person whose fingerprint is not recognized: nothing signs in.
    sign_out(&browser).await;
    browser.set_user_verified(&authenticator, false).await;
    browser.goto("/login").await;
    let said = refused_passkey(&browser, "#passkey-sign-in").await;
    assert!(said.contains("not used"), "{said}");
    assert_eq!(browser.path().await, "/login");
    assert_eq!(browser.count("header nav").await, 0, "not signed in");
    browser.close().await;
}
