//! Cross-site request forgery: the session cookie is `SameSite=Strict`, and
//! unsafe methods sent with it must also come from our own origin. API
//! tokens travel in `Authorization`, which a browser never adds on its own,
//! so bearer requests are exempt.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::WebError;
use crate::identity::auth::session_cookie;

/// Refuses (403) an unsafe request that a browser may have sent on another
/// site's behalf: one that carries our session cookie, or targets the login
/// and logout forms, unless it demonstrably comes from our own origin.
/// Requests with an `Authorization` header are exempt (no browser adds one by
/// itself), and so are cookie-less requests to other paths (the agents'
/// enrollment).
pub async fn require_same_origin(req: Request, next: Next) -> Response {
    let unsafe_method = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let headers = req.headers();
    let exempt = headers.contains_key(header::AUTHORIZATION);
    let browser_form = matches!(
        req.uri().path(),
        "/login"
            | "/logout"
            | "/login/second-factor"
            | "/login/passkey"
            | "/login/second-factor/passkey"
    );
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
/// present. Then a real `Origin` must match. Under `Referrer-Policy:
/// no-referrer` (pages are served with `same-origin`, but a proxy may change
/// it) browsers send `Origin: null` on their own form posts: that counts only
/// with `Sec-Fetch-Site: same-origin`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
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
}
