//! What the web UI and the JSON API share: the router assembled from each
//! domain's routes, the middleware every response passes through, the page
//! layout, the error type, formatting, and the OpenAPI document.
//!
//! - [`routes`]: [`Routes`], how a domain declares its routes and who may
//!   use each ([`Access`]);
//! - [`csrf`]: the same-origin check on unsafe methods;
//! - [`error`]: the one error type handlers return;
//! - [`layout`]: the frame around every page, and the error page;
//! - [`format`]: human-readable units, dates and the sparklines;
//! - [`openapi`]: the OpenAPI 3.1 document of `/api/v1`.
//!
//! Every response passes through [`envelope`]: it gives the request an id
//! (`x-request-id`, the tracing span, every error body), and adds the
//! security headers and `Cache-Control: no-store` (the stylesheet, which is
//! immutable per build, is the one thing cached). Pages are server-rendered
//! (askama templates beside each domain's code) and work without JavaScript.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::state::AppState;

pub mod csrf;
pub mod error;
pub mod form;
pub mod format;
pub mod layout;
pub mod openapi;
pub mod routes;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use error::WebError;
pub use routes::{Access, RouteInfo, Routes};

/// The stylesheet, embedded in the binary.
const APP_CSS: &str = include_str!("static/app.css");
/// The pages' progressive enhancements (passkeys), embedded in the binary.
const APP_JS: &str = include_str!("static/app.js");

/// The id of one HTTP request: in the `x-request-id` header, the tracing
/// span and every error shown to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub uuid::Uuid);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Every route of the backend's HTTPS port, from every domain.
pub fn all_routes() -> Routes {
    Routes::new()
        .get("/healthz", Access::Public, healthz)
        .get("/static/app.css", Access::Public, stylesheet)
        .get("/static/app.js", Access::Public, script)
        .merge(openapi::routes())
        .merge(crate::identity::login::routes())
        .merge(crate::identity::users_http::routes())
        .merge(crate::identity::tokens_http::routes())
        .merge(crate::identity::account_http::routes())
        .merge(crate::identity::factors::routes())
        .merge(crate::identity::passkeys::routes())
        .merge(crate::identity::reauth::routes())
        .merge(crate::access::http::routes())
        .merge(crate::hosts::ui::routes())
        .merge(crate::hosts::api::routes())
        .merge(crate::hosts::groups_http::routes())
        .merge(crate::commands::api::routes())
        .merge(crate::packages::api::routes())
        .merge(crate::patching::api::routes())
        .merge(crate::patching::policy_api::routes())
        .merge(crate::enrollment::http::routes())
        .merge(crate::enrollment::tokens_http::routes())
        .merge(crate::audit::http::routes())
        .merge(crate::uplink::wss::routes())
}

/// The whole HTTPS application: every route with the middleware.
pub fn router(state: AppState) -> Router {
    crate::identity::login::prepare();
    let (routes, _) = all_routes().into_parts();
    routes
        .fallback(not_found)
        .with_state(state.clone())
        // The route layers (access::authorize) find the state here.
        .layer(axum::Extension(state))
        .layer(middleware::from_fn(csrf::require_same_origin))
        .layer(middleware::from_fn(envelope))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> WebError {
    WebError::NotFound("no such page")
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        APP_CSS,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        APP_JS,
    )
}

/// The address pages link a static file with: the query string changes
/// with the content, so the year-long cache never serves an old one.
fn versioned_href(path: &str, content: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content.as_bytes());
    format!("{path}?v={}", hex::encode(&digest.as_ref()[..8]))
}

pub(crate) fn stylesheet_href() -> &'static str {
    static HREF: OnceLock<String> = OnceLock::new();
    HREF.get_or_init(|| versioned_href("/static/app.css", APP_CSS))
}

pub(crate) fn script_href() -> &'static str {
    static HREF: OnceLock<String> = OnceLock::new();
    HREF.get_or_init(|| versioned_href("/static/app.js", APP_JS))
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The outermost middleware: request id and tracing span, error bodies,
/// security headers.
async fn envelope(mut req: Request, next: Next) -> Response {
    let request_id = RequestId(uuid::Uuid::new_v4());
    req.extensions_mut().insert(request_id);
    let wants_json = req.uri().path().starts_with("/api/");
    let span = tracing::info_span!(
        "http",
        request_id = %request_id,
        method = %req.method(),
        path = %req.uri().path(),
        actor = tracing::field::Empty,
    );
    async move {
        let started = std::time::Instant::now();
        let response = next.run(req).await;
        let mut response = render_error(response, request_id, wants_json);
        set_standard_headers(response.headers_mut(), request_id);
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request handled"
        );
        response
    }
    .instrument(span)
    .await
}

/// Gives an error response its body: the message of a [`WebError`], or for an
/// error produced elsewhere (an extractor rejection, a 405), the generic
/// reason of its status, so that no internal detail reaches the client.
fn render_error(response: Response, request_id: RequestId, wants_json: bool) -> Response {
    let status = response.status();
    let message = match response.extensions().get::<error::ErrorMessage>() {
        Some(error::ErrorMessage(message)) => message.clone(),
        None if is_bare_error(&response) => status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
            .into(),
        None => return response,
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let (content_type, body) = if wants_json {
        let body = serde_json::json!({ "error": message, "request_id": request_id.to_string() });
        ("application/json", body.to_string())
    } else {
        (
            "text/html; charset=utf-8",
            layout::error_page(status, &message, request_id),
        )
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(parts, Body::from(body))
}

/// An error status whose body is not one of ours (plain text or nothing).
fn is_bare_error(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.as_bytes().starts_with(b"text/plain"),
    }
}

fn set_standard_headers(headers: &mut HeaderMap, request_id: RequestId) {
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The Referer goes to this site only: the re-authentication gate uses
    // it to bring the browser back to the page a dangerous form was on.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// A rendered page with its status.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}
