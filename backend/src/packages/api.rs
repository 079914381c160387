//! `GET /api/v1/hosts/{id}/packages` (one host's inventory) and
//! `GET /api/v1/packages?name=...` (the fleet's installed packages of a
//! name), both under `packages:read` in the host's group.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::store;
use crate::access::{Caller, Permission};
use crate::hosts::api::{list_groups, visible_host};
use crate::state::AppState;
use crate::web::{Access, Routes, WebError, format};

/// The most a fleet search returns.
const MAX_FOUND: u32 = 1000;

pub fn routes() -> Routes {
    Routes::new()
        .get(
            "/api/v1/hosts/{id}/packages",
            Access::Permission(Permission::PackagesRead),
            host_packages,
        )
        .get(
            "/api/v1/packages",
            Access::Permission(Permission::PackagesRead),
            find_packages,
        )
}

/// An installed package.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstalledJson {
    pub name: String,
    pub arch: String,
    pub version: String,
    pub source: String,
    pub held: bool,
}

impl From<palisade_packages::inventory::Installed> for InstalledJson {
    fn from(p: palisade_packages::inventory::Installed) -> Self {
        InstalledJson {
            name: p.name,
            arch: p.arch,
            version: p.version,
            source: p.source,
            held: p.held,
        }
    }
}

/// An update the host's package manager offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateJson {
    pub name: String,
    pub arch: String,
    pub installed: String,
    pub candidate: String,
    pub security: bool,
    /// `pending` (the next upgrade installs it), `held`, `deferred`
    /// (phased), `kept_back` or `excluded`.
    pub status: String,
    /// Why it is not pending, in words.
    pub detail: String,
    pub origins: Vec<String>,
    pub advisories: Vec<String>,
    pub severity: String,
    pub cves: Vec<String>,
}

/// A host's updates as shown: security first, then by name.
pub(crate) fn updates_security_first(
    updates: std::collections::BTreeMap<(String, String), palisade_packages::inventory::Update>,
) -> Vec<UpdateJson> {
    let mut updates: Vec<UpdateJson> = updates
        .into_values()
        .map(|u| UpdateJson {
            name: u.name,
            arch: u.arch,
            installed: u.installed,
            candidate: u.candidate,
            security: u.security,
            status: u.status.as_str().to_owned(),
            detail: u.detail,
            origins: u.origins,
            advisories: u.advisories,
            severity: u.severity,
            cves: u.cves,
        })
        .collect();
    updates.sort_by(|a, b| (!a.security, &a.name).cmp(&(!b.security, &b.name)));
    updates
}

/// One host's inventory.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostPackagesJson {
    /// `dpkg` or `rpm`.
    pub manager: String,
    /// When the agent read the package databases (RFC 3339).
    pub collected_at: Option<String>,
    /// When the package indexes were last refreshed, if known: updates read
    /// from stale indexes are stale too.
    pub lists_updated_at: Option<String>,
    pub reboot_required: bool,
    pub reboot_reasons: Vec<String>,
    /// Updates, security first, then by name.
    pub updates: Vec<UpdateJson>,
    /// Installed packages by name.
    pub installed: Vec<InstalledJson>,
}

/// A host's installed packages, pending updates (security first), held
/// packages and whether it needs a reboot.
#[utoipa::path(get, path = "/api/v1/hosts/{id}/packages", tag = "packages",
    params(("id" = String, Path, description = "the host's agent id")),
    responses((status = 200, description = "the host's inventory", body = HostPackagesJson),
              (status = 401, description = "no valid session or API token"),
              (status = 404, description = "no such host, or it has not reported an inventory yet")),
    security(("bearer" = []), ("session" = [])))]
async fn host_packages(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HostPackagesJson>, WebError> {
    let host = visible_host(&state, &caller, id, Permission::PackagesRead).await?;
    let held = state
        .db
        .read("load inventory", move |tx| store::load(tx, &host.id))
        .await?
        .ok_or(WebError::NotFound(
            "the host has not reported its packages yet",
        ))?;
    let updates = updates_security_first(held.inventory.updates);
    Ok(Json(HostPackagesJson {
        manager: held.inventory.manager.as_str().to_owned(),
        collected_at: format::rfc3339(held.report.collected_at),
        lists_updated_at: held.report.lists_updated_at.and_then(format::rfc3339),
        reboot_required: held.report.reboot.required,
        reboot_reasons: held.report.reboot.reasons,
        updates,
        installed: held
            .inventory
            .installed
            .into_values()
            .map(InstalledJson::from)
            .collect(),
    }))
}

/// The query of `GET /api/v1/packages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// The package name (exact).
    pub name: String,
    /// Only versions older than this one, compared as each host's package
    /// manager compares versions.
    pub older_than: Option<String>,
    /// At most this many (1 to 1000, default 1000).
    pub limit: Option<u32>,
}

/// One host's installed package of the name asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct FoundJson {
    pub host_id: String,
    pub hostname: String,
    pub manager: String,
    pub package: InstalledJson,
}

/// Which hosts run a package, and which version ("which hosts run openssl
/// older than X").
#[utoipa::path(get, path = "/api/v1/packages", tag = "packages",
    params(FindQuery),
    responses((status = 200, description = "the hosts' packages of that name, by hostname", body = [FoundJson]),
              (status = 400, description = "no name, or a bad limit"),
              (status = 401, description = "no valid session or API token")),
    security(("bearer" = []), ("session" = [])))]
async fn find_packages(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<FindQuery>,
) -> Result<Json<Vec<FoundJson>>, WebError> {
    let limit = query.limit.unwrap_or(MAX_FOUND);
    if !(1..=MAX_FOUND).contains(&limit) {
        return Err(WebError::BadRequest(format!(
            "limit must be 1 to {MAX_FOUND}"
        )));
    }
    if query.name.is_empty() || query.name.len() > 256 {
        return Err(WebError::BadRequest(
            "name must be a package name (1 to 256 bytes)".into(),
        ));
    }
    let groups = list_groups(&caller, Permission::PackagesRead);
    let found = state
        .db
        .read("find packages", move |tx| {
            store::find(
                tx,
                &query.name,
                query.older_than.as_deref(),
                groups.as_deref(),
                limit,
            )
        })
        .await?;
    Ok(Json(
        found
            .into_iter()
            .map(|f| FoundJson {
                host_id: f.host_id,
                hostname: f.hostname,
                manager: f.manager.as_str().to_owned(),
                package: InstalledJson::from(f.package),
            })
            .collect(),
    ))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(host_packages, find_packages))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use palisade_packages::inventory::{Installed, Inventory, Manager, Status, Update};
    use serde_json::Value;

    use super::super::{Change, Reboot, Report};
    use crate::identity::auth::SESSION_COOKIE;
    use crate::web::testing::{self, HOST, T0};

    const WEB: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";
    const DB: &str = "7a2d3b63-5a8f-4e4b-8b66-1d2e3f4a5b6c";

    fn inventory(openssl: &str) -> Inventory {
        let mut inventory = Inventory::empty(Manager::Dpkg);
        for (name, version) in [("openssl", openssl), ("bash", "5.2.15-2+b2")] {
            inventory.insert_installed(Installed {
                name: name.into(),
                arch: "amd64".into(),
                version: version.into(),
                source: name.into(),
                held: false,
            });
        }
        for (name, security) in [("bash", false), ("openssl", true)] {
            inventory.insert_update(Update {
                name: name.into(),
                arch: "amd64".into(),
                installed: "1".into(),
                candidate: "2".into(),
                security,
                status: Status::Pending,
                detail: String::new(),
                origins: vec!["Debian/bookworm-security".into()],
                advisories: Vec::new(),
                severity: String::new(),
                cves: Vec::new(),
            });
        }
        inventory
    }

    async fn get(app: &axum::Router, cookie: &str, uri: &str) -> (StatusCode, Value) {
        let reply = testing::send(
            app,
            Request::get(uri)
                .header(header::HOST, HOST)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        (
            reply.status,
            serde_json::from_str(&reply.body).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_hosts_inventory_and_the_fleet_search_within_the_callers_groups() {
        let state = testing::state();
        testing::enroll(&state, WEB, "web-1", T0).await;
        testing::enroll(&state, DB, "db-1", T0).await;
        let web_group = state
            .db
            .write("t", |tx| {
                let group = crate::hosts::groups::create(tx, "web", "", T0)?;
                crate::hosts::groups::set_host_group(tx, WEB, Some(&group))?;
                Ok(group)
            })
            .await
            .expect("group");
        for (host, openssl) in [(WEB, "3.0.11-1~deb12u1"), (DB, "1.1.1w-0+deb11u1")] {
            let change = Change::Whole(inventory(openssl));
            state
                .db
                .write("t", move |tx| {
                    super::store::store(
                        tx,
                        host,
                        1,
                        &change,
                        &Report {
                            collected_at: T0,
                            lists_updated_at: None,
                            reboot: Reboot {
                                required: true,
                                reasons: vec!["/run/reboot-required".into()],
                            },
                        },
                    )
                })
                .await
                .expect("inventory");
        }
        let app = testing::app(&state);
        let admin = testing::create_user(&state, "ada", "pw", "admin").await;
        let admin = testing::session(&state, &admin).await;
        let web_viewer =
            testing::create_scoped_user(&state, "vic", "pw", "viewer", Some(&web_group)).await;
        let web_viewer = testing::session(&state, &web_viewer).await;

        let (status, body) = get(&app, &admin, &format!("/api/v1/hosts/{WEB}/packages")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["manager"], "dpkg");
        assert_eq!(body["reboot_required"], true);
        assert_eq!(body["updates"][0]["name"], "openssl", "security first");
        assert_eq!(body["updates"][0]["security"], true);
        assert_eq!(body["updates"][1]["name"], "bash");
        assert_eq!(body["installed"].as_array().map(Vec::len), Some(2));

        // The scoped viewer sees the web host, not the other one.
        let (status, _) = get(&app, &web_viewer, &format!("/api/v1/hosts/{WEB}/packages")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(&app, &web_viewer, &format!("/api/v1/hosts/{DB}/packages")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let hosts = |body: &Value| -> Vec<String> {
            body.as_array()
                .map(|found| {
                    found
                        .iter()
                        .map(|f| f["hostname"].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let (_, body) = get(&app, &admin, "/api/v1/packages?name=openssl").await;
        assert_eq!(hosts(&body), ["db-1", "web-1"]);
        let (_, body) = get(
            &app,
            &admin,
            "/api/v1/packages?name=openssl&older_than=3.0.0",
        )
        .await;
        assert_eq!(hosts(&body), ["db-1"]);
        assert_eq!(body[0]["package"]["version"], "1.1.1w-0+deb11u1");
        let (_, body) = get(&app, &web_viewer, "/api/v1/packages?name=openssl").await;
        assert_eq!(hosts(&body), ["web-1"], "only the caller's groups");
        let (status, _) = get(&app, &admin, "/api/v1/packages?name=").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get(&app, &admin, "/api/v1/packages?name=x&limit=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // The host page shows the same, without JavaScript: security first.
        let page = testing::send(
            &app,
            Request::get(format!("/hosts/{WEB}"))
                .header(header::HOST, HOST)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={admin}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(page.status, StatusCode::OK);
        let updates = &page.body[page.body.find("id=\"updates\"").expect("an updates table")..];
        let (openssl, bash) = (
            updates.find("<td>openssl").expect("openssl"),
            updates.find("<td>bash").expect("bash"),
        );
        assert!(openssl < bash, "security first");
        assert!(page.body.contains("Reboot required: /run/reboot-required"));
        assert!(page.body.contains("All 2 installed packages"));

        // A host that never reported: 404 with a reason.
        testing::enroll(&state, "8b3e4c74-6b9a-4f5c-9c77-2e3f4a5b6c7d", "new-1", T0).await;
        let (status, _) = get(
            &app,
            &admin,
            "/api/v1/hosts/8b3e4c74-6b9a-4f5c-9c77-2e3f4a5b6c7d/packages",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
