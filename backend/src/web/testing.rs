//! What the web tests share: an application on a real SQLite database (in
//! memory), one test CA, and helpers to create users, sessions, tokens and
//! hosts the way the rest of the backend does.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use tower::ServiceExt;

use crate::audit::AuditEvent;
use crate::config::Config;
use crate::db::{Db, Millis};
use crate::enrollment::EnrollmentToken;
use crate::hosts::NewHost;
use crate::identity::auth::SESSION_COOKIE;
use crate::identity::{ApiToken, NewSession, NewUser, User};
use crate::pki::Pki;
use crate::secrets;
use crate::state::AppState;
use crate::uplink::registry::Registry;

pub const HOST: &str = "palisade.test";
pub const ORIGIN: &str = "https://palisade.test";
pub const CLIENT_IP: [u8; 4] = [192, 0, 2, 7];
/// 2023-11-14T22:13:20Z.
pub const T0: Millis = 1_700_000_000_000;

/// One CA for all tests: generating keys is the slow part and no test here
/// depends on which keys they are.
pub fn pki() -> Arc<Pki> {
    static PKI: OnceLock<Arc<Pki>> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        Arc::new(Pki::load_or_create(dir.path(), &[], None).expect("test pki"))
    })
    .clone()
}

pub fn state_with_config(config: Config) -> AppState {
    AppState::new(
        Db::open_memory().expect("in-memory database"),
        Arc::new(Registry::new()),
        pki(),
        Arc::new(config),
        Arc::new(crate::audit::checkpoint::AuditKey::ephemeral().expect("audit key")),
    )
}

pub fn state() -> AppState {
    state_with_config(Config::default())
}

/// The router as the server runs it, with a fixed client address.
pub fn app(state: &AppState) -> Router {
    crate::web::router(state.clone()).layer(MockConnectInfo(SocketAddr::from((CLIENT_IP, 40_000))))
}

/// A cheap argon2id hash (tests only: the parameters are in the PHC string,
/// so verification follows them).
pub fn test_password_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"a fixed test salt").expect("salt");
    argon
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

/// A user holding `role` (a role id) for all hosts.
pub async fn create_user(state: &AppState, username: &str, password: &str, role: &str) -> User {
    create_scoped_user(state, username, password, role, None).await
}

/// A user holding `role` for all hosts, or for the hosts of group `group`
/// (an id).
pub async fn create_scoped_user(
    state: &AppState,
    username: &str,
    password: &str,
    role: &str,
    group: Option<&str>,
) -> User {
    let user = NewUser {
        username: username.into(),
        password_hash: test_password_hash(password),
        created_at: T0,
    };
    let (role, group) = (role.to_owned(), group.map(str::to_owned));
    state
        .db
        .write("test user", move |tx| {
            let user = crate::identity::store::create_user(tx, &user)?;
            crate::access::roles::assign(tx, user.id, &role, group.as_deref(), T0)?;
            Ok(user)
        })
        .await
        .expect("user")
}

/// A host group; returns its id.
pub async fn create_group(state: &AppState, name: &str) -> String {
    let name = name.to_owned();
    state
        .db
        .write("test group", move |tx| {
            crate::hosts::groups::create(tx, &name, "", T0)
        })
        .await
        .expect("group")
}

/// Moves a host into a group.
pub async fn put_in_group(state: &AppState, host: &str, group: &str) {
    let (host, group) = (host.to_owned(), group.to_owned());
    state
        .db
        .write("test group", move |tx| {
            crate::hosts::groups::set_host_group(tx, &host, Some(&group))
        })
        .await
        .expect("moved");
}

/// A session of `user` valid for an hour; returns the cookie value.
pub async fn session(state: &AppState, user: &User) -> String {
    let cookie = secrets::random_urlsafe(32).expect("random");
    let now = crate::now_millis();
    let session = NewSession {
        id_hash: secrets::hash_secret(&cookie),
        user_id: user.id,
        created_at: now,
        expires_at: now + 3_600_000,
        source_ip: "192.0.2.7".into(),
        user_agent: "test".into(),
    };
    state
        .db
        .write("test session", move |tx| {
            crate::identity::store::create_session(tx, &session)
        })
        .await
        .expect("session");
    cookie
}

/// An API token holding the admin role (as one made on the command
/// line); returns it whole and its id.
pub async fn api_token(
    state: &AppState,
    name: &str,
    revoked_at: Option<Millis>,
) -> (String, String) {
    token_with(
        state,
        TokenSpec {
            name,
            revoked_at,
            role: Some("admin"),
            ..TokenSpec::default()
        },
    )
    .await
}

/// What [`token_with`] makes.
#[derive(Default)]
pub struct TokenSpec<'a> {
    pub name: &'a str,
    pub revoked_at: Option<Millis>,
    pub user_id: Option<i64>,
    pub role: Option<&'a str>,
    pub permissions: Vec<String>,
    pub group: Option<&'a str>,
    pub expires_at: Option<Millis>,
}

/// An API token as `spec` says; returns it whole and its id.
pub async fn token_with(state: &AppState, spec: TokenSpec<'_>) -> (String, String) {
    let parts = secrets::TokenParts::generate().expect("token");
    let token = ApiToken {
        id: parts.id.clone(),
        name: spec.name.into(),
        secret_hash: secrets::hash_secret(&parts.secret),
        created_at: T0,
        revoked_at: spec.revoked_at,
        user_id: spec.user_id,
        role_id: spec.role.map(str::to_owned),
        permissions: spec.permissions,
        host_group_id: spec.group.map(str::to_owned),
        expires_at: spec.expires_at,
        last_used_at: None,
        last_used_ip: None,
    };
    state
        .db
        .write("test api token", move |tx| {
            crate::identity::store::create_api_token(tx, &token)
        })
        .await
        .expect("api token");
    (parts.to_string(), parts.id)
}

/// Enrolls a host with id `id` (through a token of its own).
pub async fn enroll(state: &AppState, id: &str, hostname: &str, at: Millis) {
    let token_id = format!("t{}", &id[..8.min(id.len())]);
    let token = EnrollmentToken {
        id: token_id.clone(),
        secret_hash: secrets::hash_secret("s"),
        host_group_id: None,
        cidrs: Vec::new(),
        max_per_day: None,
        expires_at: None,
        created_at: at,
        revoked_at: None,
    };
    let host = NewHost {
        id: id.into(),
        hostname: hostname.into(),
        host_group_id: None,
        enrolled_at: at,
        enrolled_from: "192.0.2.10".into(),
        token_id,
        cert_sha256: "ab".repeat(32),
    };
    state
        .db
        .write("test enroll", move |tx| {
            crate::enrollment::store::create_token(tx, &token)?;
            crate::enrollment::store::enroll_host(tx, at, &host)
        })
        .await
        .expect("database")
        .expect("enrolled");
}

/// The newest `n` audit events, newest first.
pub async fn audit(state: &AppState, n: u32) -> Vec<AuditEvent> {
    state
        .db
        .read("test audit", move |tx| crate::audit::store::latest(tx, n))
        .await
        .expect("audit")
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: impl header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn request_id(&self) -> &str {
        self.header("x-request-id")
    }

    /// The body with what is fresh on every page masked (the request id,
    /// passkey challenges) and `name` replaced, so that two answers can be
    /// compared for what they tell.
    pub fn normalized(&self, name: &str) -> String {
        let body = self
            .body
            .replace(self.request_id(), "ID")
            .replace(name, "NAME");
        body.split("data-options=\"")
            .enumerate()
            .map(|(i, part)| match (i, part.split_once('"')) {
                (0, _) | (_, None) => part.to_owned(),
                (_, Some((_, rest))) => format!("data-options=\"OPTIONS\"{rest}"),
            })
            .collect()
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("router is infallible");
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 24).await.expect("body");
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A form POST as a browser sends it (`origin` and `cookie` optional).
pub fn post_form(
    uri: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
    form: &str,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::USER_AGENT, "test-browser/1.0")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"));
    }
    request.body(Body::from(form.to_owned())).expect("request")
}

/// The sign-in form's body.
pub fn login_form(username: &str, password: &str) -> String {
    format!(
        "username={}&password={}",
        urlencode(username),
        urlencode(password)
    )
}

/// Percent-encodes everything but unreserved characters.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
