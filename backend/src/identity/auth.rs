//! Reading a request's credentials: the session cookie of a browser, or an
//! API token (turned into a caller with its grants by
//! [`crate::access::authorize`]).
//!
//! A session cookie carries 256 random bits; the database keeps only their
//! SHA-256. A session ends after `session_idle_timeout_secs` without a
//! request, and in any case `session_max_lifetime_secs` after sign-in: a
//! request moves the idle expiry, never past that cap. To keep page views
//! from writing to the database every time, the move is written at most
//! once per [`TOUCH_INTERVAL_MS`] (so an idle session may end up to that much
//! earlier than the timeout says, never later).
//!
//! API tokens travel in `Authorization: Bearer <id>.<secret>`, which a
//! browser never adds on its own.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};

use super::{User, store};
use crate::audit::Actor;
use crate::db::Millis;
use crate::secrets;
use crate::state::AppState;
use crate::web::WebError;

/// `__Host-`: the browser accepts it only with `Secure`, `Path=/` and no
/// `Domain`, so no other host or plain-HTTP page can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-palisade_session";
/// Longest user agent we keep.
const MAX_USER_AGENT: usize = 512;
/// Session activity is written at most this often.
pub const TOUCH_INTERVAL_MS: Millis = 60_000;

/// Random bytes in a session id.
const SESSION_ID_BYTES: usize = 32;

/// A new session of `user_id` from `client`, starting at `now`, and the
/// cookie that names it (only its hash is stored). Every sign-in and every
/// privilege change (password, second factor, re-authentication) makes one.
pub fn new_session(
    state: &AppState,
    user_id: i64,
    client: &ClientInfo,
    now: Millis,
) -> Result<(String, super::NewSession), WebError> {
    let cookie = secrets::random_urlsafe(SESSION_ID_BYTES).map_err(WebError::internal)?;
    let session = super::NewSession {
        id_hash: secrets::hash_secret(&cookie),
        user_id,
        created_at: now,
        expires_at: session_expiry(state, now, now),
        source_ip: client.ip.clone().unwrap_or_default(),
        user_agent: client.user_agent.clone().unwrap_or_default(),
    };
    Ok((cookie, session))
}

/// The value of our session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `name`, if the request carries one.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn session_cookie_header(value: &str) -> Result<HeaderValue, WebError> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(WebError::internal)
}

pub fn clear_session_cookie_header() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-palisade_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
    )
}

/// Where a request came from, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
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

/// `s` cut to at most `max` characters.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

/// Names the authenticated caller in the request's span (declared empty by
/// the envelope middleware), so every later log line of the request has it.
fn record_actor(actor: &Actor) {
    tracing::Span::current().record("actor", tracing::field::display(actor));
}

/// A signed-in browser user and their session.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user: User,
    /// When they signed in.
    pub created_at: Millis,
    /// When they last gave their password (and second factor).
    pub authenticated_at: Millis,
}

fn secs_to_millis(secs: u64) -> Millis {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// When a session used at `now` expires: after the idle timeout, but never
/// later than the absolute lifetime allows.
pub fn session_expiry(state: &AppState, created_at: Millis, now: Millis) -> Millis {
    let web = &state.config.web;
    let idle = now.saturating_add(secs_to_millis(web.session_idle_timeout_secs));
    let cap = created_at.saturating_add(secs_to_millis(web.session_max_lifetime_secs));
    idle.min(cap)
}

/// The user of the session `cookie`, if it is valid at `now`; moves the
/// session's idle expiry (at most once per [`TOUCH_INTERVAL_MS`]).
pub async fn resume_session(
    state: &AppState,
    cookie: &str,
    now: Millis,
) -> Result<Option<SessionUser>, WebError> {
    let id_hash = secrets::hash_secret(cookie);
    let lookup_hash = id_hash.clone();
    let found = state
        .db
        .read("load session", move |tx| {
            store::session(tx, &lookup_hash, now)
        })
        .await?;
    let Some((session, user)) = found else {
        return Ok(None);
    };
    if now.saturating_sub(session.last_seen_at) >= TOUCH_INTERVAL_MS {
        let expires_at = session_expiry(state, session.created_at, now);
        state
            .db
            .write("touch session", move |tx| {
                store::touch_session(tx, &id_hash, now, expires_at)
            })
            .await?;
    }
    record_actor(&Actor::User(user.username.clone()));
    Ok(Some(SessionUser {
        user,
        created_at: session.created_at,
        authenticated_at: session.authenticated_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
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
    fn session_expiry_is_capped_by_the_lifetime() {
        let mut config = crate::config::Config::default();
        config.web.session_idle_timeout_secs = 60;
        config.web.session_max_lifetime_secs = 100;
        let state = crate::web::testing::state_with_config(config);
        assert_eq!(session_expiry(&state, 0, 0), 60_000);
        assert_eq!(session_expiry(&state, 0, 30_000), 90_000);
        assert_eq!(session_expiry(&state, 0, 50_000), 100_000);
    }
}
