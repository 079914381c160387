//! The OpenAPI 3.1 document of the JSON API, generated from the handlers'
//! annotations and the view types (utoipa), served at
//! `GET /api/v1/openapi.json`. A test checks that every `/api/v1` route is in
//! it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Routes;

pub const PATH: &str = "/api/v1/openapi.json";

pub fn routes() -> Routes {
    Routes::new().get(PATH, super::Access::Public, openapi_json)
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<id>.<secret>")
                    .description(Some(
                        "An API token, `palisade-backend api-token create NAME --role ROLE`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::identity::auth::SESSION_COOKIE,
                "The browser session of a signed-in user.",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Palisade API",
        description = "The JSON API of the Palisade backend. Times are RFC 3339 strings in UTC; sizes are bytes. \
                       Errors are `{\"error\": \"...\", \"request_id\": \"...\"}`.",
    ),
    paths(openapi_json),
    modifiers(&SecuritySchemes),
    tags((name = "hosts", description = "Enrolled hosts and their latest state"),
         (name = "commands", description = "Signed commands to agents"),
         (name = "packages", description = "Installed packages and pending updates"),
         (name = "agents", description = "What agents call: enrollment and the WSS uplink; enrollment tokens"),
         (name = "access", description = "Users, roles, permissions and API tokens"),
         (name = "audit", description = "The audit trail"),
         (name = "meta", description = "This document")),
)]
struct Api;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Api::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(crate::hosts::api::openapi_paths());
    doc.merge(crate::hosts::groups_http::openapi_paths());
    doc.merge(crate::access::http::openapi_paths());
    doc.merge(crate::identity::users_http::openapi_paths());
    doc.merge(crate::identity::tokens_http::openapi_paths());
    doc.merge(crate::identity::account_http::openapi_paths());
    doc.merge(crate::identity::factors::openapi_paths());
    doc.merge(crate::enrollment::tokens_http::openapi_paths());
    doc.merge(crate::audit::http::openapi_paths());
    doc.merge(crate::commands::api::openapi_paths());
    doc.merge(crate::packages::api::openapi_paths());
    doc.merge(crate::patching::api::openapi_paths());
    doc.merge(crate::patching::policy_api::openapi_paths());
    doc.merge(crate::enrollment::http::openapi_paths());
    doc.merge(crate::uplink::wss::openapi_paths());
    doc
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_documented() {
        let doc = document();
        let documented: Vec<&String> = doc.paths.paths.keys().collect();
        let routes = crate::web::all_routes();
        let mut api: Vec<&str> = routes
            .declared()
            .iter()
            .map(|r| r.path)
            .filter(|p| p.starts_with("/api/v1/"))
            .collect();
        api.dedup();
        assert!(api.len() >= 7, "{api:?}");
        for path in &api {
            assert!(
                documented.iter().any(|d| d.as_str() == *path),
                "{path} is not in the OpenAPI document"
            );
        }
        for path in &documented {
            assert!(
                api.contains(&path.as_str()),
                "{path} is documented but not routed"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let json: serde_json::Value =
            serde_json::from_str(&document().to_json().expect("json")).expect("parses");
        assert!(
            json["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            json["openapi"]
        );
        assert!(json["components"]["schemas"]["HostJson"].is_object());
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }
}
