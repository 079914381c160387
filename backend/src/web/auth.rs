//! Who is asking: browser sessions, API tokens, login and logout, and the
//! same-origin check on unsafe methods.
//!
//! A session cookie carries 256 random bits; the store keeps only their
//! SHA-256. A session ends after `session_idle_timeout_secs` without a
//! request, and in any case `session_max_lifetime_secs` after login: every
//! authenticated request moves the idle expiry, never past that cap.
//!
//! Cross-site request forgery: the cookie is `SameSite=Strict`, and unsafe
//! methods sent with it must also come from our own origin (see
//! [`require_same_origin`]). API tokens travel in `Authorization`, which a
//! browser never adds on its own, so bearer requests are exempt.

use std::net::SocketAddr;
use std::sync::OnceLock;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::error::WebError;
use super::{RequestId, html};
use crate::secrets;
use crate::state::AppState;
use crate::store::{Millis, NewAuditEvent, NewSession, Role, User};

/// `__Host-`: the browser accepts it only with `Secure`, `Path=/` and no
/// `Domain`, so no other host or plain-HTTP page can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-palisade_session";

/// Random bytes in a session id.
const SESSION_ID_BYTES: usize = 32;
/// Longest username we look up or write into the audit log.
const MAX_USERNAME: usize = 256;
/// Longest user agent we keep.
const MAX_USER_AGENT: usize = 512;
/// The one message a failed login gets, whatever the reason.
pub const LOGIN_FAILED: &str = "invalid username or password";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
}

// ---------------------------------------------------------------------------
// Reading credentials from a request

/// The value of our session cookie, if the request carries one.
pub(super) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn session_cookie_header(value: &str) -> Result<HeaderValue, WebError> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(WebError::internal)
}

fn clear_session_cookie_header() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-palisade_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
    )
}

/// Where a request came from, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub(super) struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ip = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .ok()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()), MAX_USER_AGENT));
        Ok(ClientInfo { ip, user_agent })
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

/// Names the authenticated caller in the request's span (declared empty by
/// the envelope middleware), so every later log line of the request has it.
fn record_actor(actor: &str) {
    tracing::Span::current().record("actor", actor);
}

// ---------------------------------------------------------------------------
// Sessions

/// A signed-in browser user.
#[derive(Debug, Clone)]
pub(super) struct SessionUser {
    pub user: User,
}

/// When a session used at `now` expires: after the idle timeout, but never
/// later than the absolute lifetime allows.
fn session_expiry(state: &AppState, created_at: Millis, now: Millis) -> Millis {
    let web = &state.config.web;
    let idle = now.saturating_add(secs_to_millis(web.session_idle_timeout_secs));
    let cap = created_at.saturating_add(secs_to_millis(web.session_max_lifetime_secs));
    idle.min(cap)
}

fn secs_to_millis(secs: u64) -> Millis {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// The user of the session `cookie`, if it is valid at `now`; moves the
/// session's idle expiry.
async fn resume_session(
    state: &AppState,
    cookie: &str,
    now: Millis,
) -> Result<Option<SessionUser>, WebError> {
    let id_hash = secrets::hash_secret(cookie);
    let Some((session, user)) = state.store.session(&id_hash, now).await? else {
        return Ok(None);
    };
    if user.disabled {
        state.store.delete_session(&id_hash).await?;
        return Ok(None);
    }
    let expires_at = session_expiry(state, session.created_at, now);
    state.store.touch_session(&id_hash, now, expires_at).await?;
    record_actor(&format!("user:{}", user.username));
    Ok(Some(SessionUser { user }))
}

/// Extractor for pages: the signed-in user, or a redirect to the login form.
pub(super) struct UiUser(pub SessionUser);

pub(super) enum UiRejection {
    Login,
    Error(WebError),
}

impl IntoResponse for UiRejection {
    fn into_response(self) -> Response {
        match self {
            UiRejection::Login => Redirect::to("/login").into_response(),
            UiRejection::Error(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for UiUser {
    type Rejection = UiRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(UiRejection::Login);
        };
        match resume_session(state, cookie, crate::now_millis()).await {
            Ok(Some(user)) => Ok(UiUser(user)),
            Ok(None) => Err(UiRejection::Login),
            Err(e) => Err(UiRejection::Error(e)),
        }
    }
}

/// Extractor for the API: a session or an API token, else 401.
#[derive(Debug, Clone)]
pub(super) struct ApiCaller {
    /// As the audit log names it: `user:<name>` or `api-token:<id>`.
    pub actor: String,
    /// What the caller may do. API tokens are not scoped yet (scopes come
    /// with RBAC), so a token acts as an admin.
    pub role: Role,
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // An Authorization header decides alone: a bad token does not fall
        // back to the cookie.
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let token = bearer_token(&parts.headers).ok_or(WebError::Unauthorized)?;
            return api_token_caller(state, token)
                .await?
                .ok_or(WebError::Unauthorized);
        }
        let cookie = session_cookie(&parts.headers).ok_or(WebError::Unauthorized)?;
        let session = resume_session(state, cookie, crate::now_millis()).await?;
        let SessionUser { user } = session.ok_or(WebError::Unauthorized)?;
        Ok(ApiCaller {
            actor: format!("user:{}", user.username),
            role: user.role,
        })
    }
}

async fn api_token_caller(state: &AppState, token: &str) -> Result<Option<ApiCaller>, WebError> {
    let Some((id, secret)) = secrets::split_token(token) else {
        tracing::info!("malformed api token");
        return Ok(None);
    };
    let Some(stored) = state.store.api_token(id).await? else {
        tracing::info!(token_id = %id, "unknown api token");
        return Ok(None);
    };
    if stored.revoked_at.is_some() {
        tracing::info!(token_id = %id, "revoked api token");
        return Ok(None);
    }
    if !secrets::secret_matches(secret, &stored.secret_hash) {
        tracing::info!(token_id = %id, "api token secret does not match");
        return Ok(None);
    }
    let actor = format!("api-token:{}", stored.id);
    record_actor(&actor);
    Ok(Some(ApiCaller {
        actor,
        role: Role::Admin,
    }))
}

// ---------------------------------------------------------------------------
// Same-origin check

/// Refuses (403) an unsafe request that a browser may have sent on another
/// site's behalf: one that carries our session cookie, or targets the login
/// and logout forms, unless it demonstrably comes from our own origin.
/// Requests with an `Authorization` header are exempt (no browser adds one by
/// itself), and so are cookie-less requests to other paths (the agents'
/// enrollment).
pub(super) async fn require_same_origin(req: Request, next: Next) -> Response {
    let unsafe_method = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let headers = req.headers();
    let exempt = headers.contains_key(header::AUTHORIZATION);
    let browser_form = matches!(req.uri().path(), "/login" | "/logout");
    if unsafe_method && !exempt && (browser_form || session_cookie(headers).is_some()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !host.is_some_and(|host| is_same_origin(headers, host)) {
            tracing::warn!(
                origin = ?headers.get(header::ORIGIN),
                sec_fetch_site = ?headers.get("sec-fetch-site"),
                "refused a cross-origin request"
            );
            return WebError::Forbidden("cross-origin request refused").into_response();
        }
    }
    next.run(req).await
}

/// Whether the browser tells us the request comes from a page of `host`.
///
/// `Sec-Fetch-Site` (set by the browser, not by page scripts) is trusted when
/// present. Then a real `Origin` must match. Pages are served with
/// `Referrer-Policy: no-referrer`, under which browsers send `Origin: null` on
/// their own form posts: that counts only with `Sec-Fetch-Site: same-origin`.
/// Without an `Origin`, the `Referer` must match.
fn is_same_origin(headers: &HeaderMap, host: &str) -> bool {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let fetch_site = header_str(header::HeaderName::from_static("sec-fetch-site"));
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    match header_str(header::ORIGIN) {
        Some("null") => fetch_site == Some("same-origin"),
        Some(origin) => origin_matches_host(origin, host),
        None => match header_str(header::REFERER) {
            Some(referer) => origin_matches_host(referer, host),
            None => fetch_site == Some("same-origin"),
        },
    }
}

/// Whether the scheme and authority of `url` (an origin or a full URL) are
/// `https://<host>`. The backend serves only HTTPS, so the default port is 443.
fn origin_matches_host(url: &str, host: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    normalize_authority(authority).is_some_and(|a| Some(a) == normalize_authority(host))
}

/// `host[:port]` lowercased with the port made explicit, or None if malformed.
fn normalize_authority(authority: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        // A bare IPv6 literal in brackets has colons but no port.
        Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().ok()?),
        _ => (authority, 443),
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

// ---------------------------------------------------------------------------
// Login and logout

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: super::ui::Layout,
    username: &'a str,
    error: Option<&'a str>,
    request_id: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if let Some(cookie) = session_cookie(&headers)
        && resume_session(&state, cookie, crate::now_millis())
            .await?
            .is_some()
    {
        return Ok(Redirect::to("/hosts").into_response());
    }
    let page = LoginPage {
        layout: super::ui::Layout::anonymous(),
        username: "",
        error: None,
        request_id: None,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Why a login failed, for the audit log only: the user sees one message.
#[derive(Clone, Copy)]
enum LoginFailure {
    UnknownUser,
    WrongPassword,
    Disabled,
}

impl LoginFailure {
    fn as_str(self) -> &'static str {
        match self {
            LoginFailure::UnknownUser => "unknown_user",
            LoginFailure::WrongPassword => "wrong_password",
            LoginFailure::Disabled => "disabled",
        }
    }
}

async fn login_submit(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    client: ClientInfo,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let username = truncate(&form.username, MAX_USERNAME);
    let user = if username.is_empty() || username != form.username {
        None
    } else {
        state.store.user_by_name(&username).await?
    };

    // Always one argon2 verification, against a dummy hash when there is no
    // such user, so the response time does not tell whether a name exists.
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let password = form.password;
    let password_ok = tokio::task::spawn_blocking(move || {
        let phc = match &stored_hash {
            Some(phc) => phc.as_str(),
            None => dummy_password_hash()?,
        };
        Ok::<_, WebError>(secrets::verify_password(&password, phc))
    })
    .await
    .map_err(WebError::internal)??;
    let outcome = match &user {
        None => Err(LoginFailure::UnknownUser),
        Some(user) if user.disabled => Err(LoginFailure::Disabled),
        Some(_) if !password_ok => Err(LoginFailure::WrongPassword),
        Some(user) => Ok(user),
    };

    let audit = |outcome: &str, details: serde_json::Value| NewAuditEvent {
        at: now,
        actor: format!("user:{username}"),
        action: "auth.login".into(),
        target: None,
        source_ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        outcome: outcome.into(),
        details,
    };

    let user = match outcome {
        Ok(user) => user,
        Err(reason) => {
            tracing::info!(reason = reason.as_str(), "login failed");
            state
                .store
                .append_audit(audit(
                    "failure",
                    serde_json::json!({ "reason": reason.as_str() }),
                ))
                .await?;
            let page = LoginPage {
                layout: super::ui::Layout::anonymous(),
                username: &username,
                error: Some(LOGIN_FAILED),
                request_id: Some(request_id.to_string()),
            };
            return Ok(html(StatusCode::UNAUTHORIZED, page.render()?));
        }
    };

    // A fresh id at every login; the session the browser may still hold ends.
    if let Some(old) = session_cookie(&headers) {
        state
            .store
            .delete_session(&secrets::hash_secret(old))
            .await?;
    }
    let cookie = secrets::random_urlsafe(SESSION_ID_BYTES).map_err(WebError::internal)?;
    state
        .store
        .create_session(NewSession {
            id_hash: secrets::hash_secret(&cookie),
            user_id: user.id,
            created_at: now,
            expires_at: session_expiry(&state, now, now),
            source_ip: client.ip.clone().unwrap_or_default(),
            user_agent: client.user_agent.clone().unwrap_or_default(),
        })
        .await?;
    state
        .store
        .append_audit(audit("success", serde_json::json!({})))
        .await?;
    tracing::info!(user = %user.username, "login");

    let mut response = Redirect::to("/hosts").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
    Ok(response)
}

/// Computes what the first login would otherwise compute on its own time, so
/// that the first unknown-user login is not slower than the others.
pub(super) fn prepare() {
    if let Err(e) = dummy_password_hash() {
        tracing::error!(error = %e, "cannot prepare the login");
    }
}

/// An argon2id hash of a random password, made like every stored password
/// hash (same parameters, so the same cost), computed once.
fn dummy_password_hash() -> Result<&'static str, WebError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let password = secrets::random_urlsafe(16).map_err(WebError::internal)?;
    let hash = secrets::hash_password(&password).map_err(WebError::internal)?;
    Ok(DUMMY.get_or_init(|| hash))
}

async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if let Some(cookie) = session_cookie(&headers) {
        let id_hash = secrets::hash_secret(cookie);
        let now = crate::now_millis();
        if let Some((_, user)) = state.store.session(&id_hash, now).await? {
            state.store.delete_session(&id_hash).await?;
            state
                .store
                .append_audit(NewAuditEvent {
                    at: now,
                    actor: format!("user:{}", user.username),
                    action: "auth.logout".into(),
                    target: None,
                    source_ip: client.ip,
                    user_agent: client.user_agent,
                    outcome: "success".into(),
                    details: serde_json::json!({}),
                })
                .await?;
            tracing::info!(user = %user.username, "logout");
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_session_cookie_header());
    Ok(response)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; __Host-palisade_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        let h = headers(&[("cookie", "palisade_session=abc"), ("cookie", "x=y")]);
        assert_eq!(session_cookie(&h), None);
        let h = headers(&[("cookie", "__Host-palisade_session=")]);
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer a.b")])),
            Some("a.b")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic a.b")])),
            None
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(origin_matches_host(
            "https://palisade.example",
            "palisade.example"
        ));
        assert!(origin_matches_host(
            "https://Palisade.example:443",
            "palisade.example"
        ));
        assert!(origin_matches_host(
            "https://palisade.example:8443",
            "palisade.example:8443"
        ));
        assert!(origin_matches_host(
            "https://[::1]:8443/hosts?x",
            "[::1]:8443"
        ));
        assert!(!origin_matches_host(
            "http://palisade.example",
            "palisade.example"
        ));
        assert!(!origin_matches_host(
            "https://palisade.example:8443",
            "palisade.example"
        ));
        assert!(!origin_matches_host(
            "https://palisade.example.evil",
            "palisade.example"
        ));
        assert!(!origin_matches_host(
            "https://user@palisade.example",
            "palisade.example"
        ));
        assert!(!origin_matches_host("https://[::1]", "[::1]:8443"));
    }

    #[test]
    fn fetch_metadata_decides_before_origin() {
        let host = "palisade.example";
        assert!(is_same_origin(
            &headers(&[("origin", "https://palisade.example")]),
            host
        ));
        assert!(!is_same_origin(
            &headers(&[("origin", "https://evil.example")]),
            host
        ));
        assert!(!is_same_origin(&headers(&[("origin", "null")]), host));
        assert!(is_same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            host
        ));
        assert!(!is_same_origin(
            &headers(&[
                ("origin", "https://palisade.example"),
                ("sec-fetch-site", "cross-site")
            ]),
            host
        ));
        assert!(is_same_origin(
            &headers(&[("referer", "https://palisade.example/hosts")]),
            host
        ));
        assert!(!is_same_origin(
            &headers(&[("referer", "https://evil.example/")]),
            host
        ));
        assert!(!is_same_origin(&headers(&[]), host));
    }

    #[test]
    fn session_expiry_is_capped_by_the_lifetime() {
        let mut config = crate::config::Config::default();
        config.web.session_idle_timeout_secs = 60;
        config.web.session_max_lifetime_secs = 100;
        let state = super::super::tests::state_with_config(config);
        assert_eq!(session_expiry(&state, 0, 0), 60_000);
        assert_eq!(session_expiry(&state, 0, 30_000), 90_000);
        assert_eq!(session_expiry(&state, 0, 50_000), 100_000);
    }
}
