//! `GET /api/v1/hosts/{id}/packages` (one host's inventory),
//! `GET /api/v1/packages?name=...` (the fleet's installed packages of a
//! name), `GET /api/v1/packages/summary` (every host's and every host
//! group's update counts) and the fleet page `/packages` ("Updates": the
//! counts per group, the hosts needing security updates, the package
//! search, without JavaScript), all under `packages:read` in the host's
//! group.

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{FleetHost, GroupSummary, store};
use crate::access::{Caller, Permission};
use crate::db::Millis;
use crate::hosts::api::{filter_groups, list_groups, visible_host};
use crate::state::AppState;
use crate::web::format::MISSING;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, format, html};

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
        .get(
            "/api/v1/packages/summary",
            Access::Permission(Permission::PackagesRead),
            packages_summary,
        )
        .get(
            "/packages",
            Access::Permission(Permission::PackagesRead),
            updates_page,
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
    let found = find(&state, &caller, query).await?;
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

/// The search of `GET /api/v1/packages` and of the fleet page, on the
/// hosts the caller may see packages of.
async fn find(
    state: &AppState,
    caller: &Caller,
    query: FindQuery,
) -> Result<Vec<store::Found>, WebError> {
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
    let groups = list_groups(caller, Permission::PackagesRead);
    Ok(state
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
        .await?)
}

/// The query of `GET /api/v1/packages/summary` (and of the fleet page).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// `security`: only hosts with pending security updates in `hosts`
    /// (the groups' counts are unchanged).
    pub needs: Option<String>,
    /// Only the hosts of this host group (an id).
    pub group: Option<String>,
}

/// One host's update counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostSummaryJson {
    pub host_id: String,
    pub hostname: String,
    pub host_group_id: Option<String>,
    /// The group's name.
    pub host_group: Option<String>,
    /// Null: the host has not reported an inventory yet (its updates are
    /// unknown, not zero).
    pub inventory: Option<InventorySummaryJson>,
}

/// What a host's inventory says about its updates.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventorySummaryJson {
    /// `dpkg` or `rpm`.
    pub manager: String,
    /// Updates the next upgrade installs (status `pending`).
    pub pending_updates: u64,
    /// Pending updates that are security updates.
    pub pending_security_updates: u64,
    pub held_updates: u64,
    pub kept_back_updates: u64,
    pub deferred_updates: u64,
    pub reboot_required: bool,
    /// When the agent read the package databases (RFC 3339).
    pub collected_at: Option<String>,
    /// When the package indexes were last refreshed, if known.
    pub lists_updated_at: Option<String>,
    /// The indexes are older than `stale_after_days`: the counts miss
    /// newer updates (false when their age is unknown).
    pub stale_indexes: bool,
}

/// One host group's counts (`host_group_id` null: hosts in no group).
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSummaryJson {
    pub host_group_id: Option<String>,
    pub host_group: Option<String>,
    pub hosts: u64,
    pub hosts_without_inventory: u64,
    pub hosts_needing_security_updates: u64,
    /// Pending security updates over the group's hosts.
    pub pending_security_updates: u64,
    pub hosts_needing_reboot: u64,
    pub hosts_with_stale_indexes: u64,
}

impl From<GroupSummary> for GroupSummaryJson {
    fn from(g: GroupSummary) -> Self {
        GroupSummaryJson {
            host_group_id: g.host_group_id,
            host_group: g.host_group,
            hosts: g.hosts,
            hosts_without_inventory: g.hosts_without_inventory,
            hosts_needing_security_updates: g.hosts_needing_security_updates,
            pending_security_updates: g.pending_security_updates,
            hosts_needing_reboot: g.hosts_needing_reboot,
            hosts_with_stale_indexes: g.hosts_with_stale_indexes,
        }
    }
}

/// The fleet's updates.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryJson {
    /// Indexes refreshed longer ago than this many days are stale.
    pub stale_after_days: u64,
    /// Per host group, by name (hosts in no group last).
    pub groups: Vec<GroupSummaryJson>,
    /// Most pending security updates first, then most pending updates;
    /// hosts without an inventory after those with one.
    pub hosts: Vec<HostSummaryJson>,
}

/// The fleet view for a caller: every host it may see packages of (of the
/// group asked for), sorted security first, and the counts per group.
struct Summary {
    groups: Vec<GroupSummary>,
    hosts: Vec<FleetHost>,
}

async fn summary(
    state: &AppState,
    caller: &Caller,
    query: &SummaryQuery,
    now: Millis,
) -> Result<Summary, WebError> {
    let only_security = match query.needs.as_deref().filter(|n| !n.is_empty()) {
        None => false,
        Some("security") => true,
        Some(other) => {
            return Err(WebError::BadRequest(format!(
                "needs must be \"security\", not {:?}",
                other.chars().take(64).collect::<String>()
            )));
        }
    };
    let groups = filter_groups(caller, Permission::PackagesRead, query.group.as_deref());
    let mut hosts = state
        .db
        .read("fleet updates", move |tx| {
            store::fleet(tx, groups.as_deref())
        })
        .await?;
    let groups = super::group_summaries(&hosts, now);
    if only_security {
        hosts.retain(|h| h.pending_security() > 0);
    }
    super::sort_security_first(&mut hosts);
    Ok(Summary { groups, hosts })
}

fn host_summary_json(h: FleetHost, now: Millis) -> HostSummaryJson {
    HostSummaryJson {
        inventory: h.counts.map(|c| InventorySummaryJson {
            manager: c.manager.as_str().to_owned(),
            pending_updates: c.pending,
            pending_security_updates: c.pending_security,
            held_updates: c.held,
            kept_back_updates: c.kept_back,
            deferred_updates: c.deferred,
            reboot_required: c.reboot_required,
            collected_at: format::rfc3339(c.collected_at),
            lists_updated_at: c.lists_updated_at.and_then(format::rfc3339),
            stale_indexes: c.stale_indexes(now),
        }),
        host_id: h.host_id,
        hostname: h.hostname,
        host_group_id: h.host_group_id,
        host_group: h.host_group,
    }
}

const DAY: Millis = 24 * 60 * 60 * 1000;

/// Every host's pending, security, held, kept-back and deferred updates,
/// reboot status and index age, and the counts per host group: the hosts
/// the caller may see packages of.
#[utoipa::path(get, path = "/api/v1/packages/summary", tag = "packages",
    params(SummaryQuery),
    responses((status = 200, description = "the fleet's updates, most pending security updates first", body = SummaryJson),
              (status = 400, description = "an unknown `needs`"),
              (status = 401, description = "no valid session or API token")),
    security(("bearer" = []), ("session" = [])))]
async fn packages_summary(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<SummaryQuery>,
) -> Result<Json<SummaryJson>, WebError> {
    let now = crate::now_millis();
    let Summary { groups, hosts } = summary(&state, &caller, &query, now).await?;
    Ok(Json(SummaryJson {
        stale_after_days: u64::try_from(super::STALE_INDEXES_AFTER / DAY).unwrap_or_default(),
        groups: groups.into_iter().map(GroupSummaryJson::from).collect(),
        hosts: hosts
            .into_iter()
            .map(|h| host_summary_json(h, now))
            .collect(),
    }))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(host_packages, find_packages, packages_summary))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

// ---------------------------------------------------------------------------
// The fleet page

/// The query of `/packages`: a host group (an id) and the package search.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    group: Option<String>,
    /// The package search: a name (empty: no search) and "older than".
    name: Option<String>,
    older_than: Option<String>,
}

/// A host group's row.
struct GroupRow {
    /// `None` for hosts in no group.
    id: Option<String>,
    name: String,
    counts: GroupSummary,
}

/// A host needing security updates.
struct HostRow {
    id: String,
    hostname: String,
    group: String,
    manager: &'static str,
    pending_security: u64,
    pending: u64,
    held: u64,
    kept_back: u64,
    deferred: u64,
    reboot_required: bool,
    lists_updated: String,
    stale: bool,
}

/// A host running the package searched for.
struct FoundRow {
    host_id: String,
    hostname: String,
    manager: &'static str,
    arch: String,
    version: String,
    held: bool,
}

#[derive(Template)]
#[template(path = "packages/templates/updates.html")]
struct UpdatesPage {
    layout: Layout,
    hosts_total: u64,
    hosts_needing_security: u64,
    group_filtered: bool,
    /// Some host's indexes are stale.
    any_stale: bool,
    stale_after_days: i64,
    groups: Vec<GroupRow>,
    hosts: Vec<HostRow>,
    name: String,
    older_than: String,
    /// `None`: no search asked for.
    found: Option<Vec<FoundRow>>,
}

fn group_row(g: GroupSummary) -> GroupRow {
    GroupRow {
        id: g.host_group_id.clone(),
        name: g
            .host_group
            .clone()
            .unwrap_or_else(|| "(no group)".to_owned()),
        counts: g,
    }
}

fn host_row(h: FleetHost, now: Millis) -> Option<HostRow> {
    let c = h.counts?;
    Some(HostRow {
        group: h.host_group.unwrap_or_else(|| MISSING.to_owned()),
        manager: c.manager.as_str(),
        pending_security: c.pending_security,
        pending: c.pending,
        held: c.held,
        kept_back: c.kept_back,
        deferred: c.deferred,
        reboot_required: c.reboot_required,
        lists_updated: c
            .lists_updated_at
            .map_or_else(|| "unknown".to_owned(), |at| format::age(at, now)),
        stale: c.stale_indexes(now),
        id: h.host_id,
        hostname: h.hostname,
    })
}

fn found_row(f: store::Found) -> FoundRow {
    FoundRow {
        host_id: f.host_id,
        hostname: f.hostname,
        manager: f.manager.as_str(),
        arch: f.package.arch,
        version: f.package.version,
        held: f.package.held,
    }
}

/// The fleet page: counts per host group, the hosts needing security
/// updates, and the package search (a GET form).
async fn updates_page(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let summary_query = SummaryQuery {
        needs: None,
        group: query.group,
    };
    let Summary { groups, hosts } = summary(&state, &caller, &summary_query, now).await?;
    let name = query.name.unwrap_or_default().trim().to_owned();
    let older_than = query.older_than.unwrap_or_default().trim().to_owned();
    let found = if name.is_empty() {
        None
    } else {
        let search = FindQuery {
            name: name.clone(),
            older_than: Some(older_than.clone()).filter(|o| !o.is_empty()),
            limit: None,
        };
        Some(find(&state, &caller, search).await?)
    };
    let page = UpdatesPage {
        layout: Layout::for_caller(&caller),
        hosts_total: groups.iter().map(|g| g.hosts).sum(),
        hosts_needing_security: groups
            .iter()
            .map(|g| g.hosts_needing_security_updates)
            .sum(),
        group_filtered: summary_query.group.is_some_and(|g| !g.is_empty()),
        any_stale: groups.iter().any(|g| g.hosts_with_stale_indexes > 0),
        stale_after_days: super::STALE_INDEXES_AFTER / DAY,
        groups: groups.into_iter().map(group_row).collect(),
        hosts: hosts
            .into_iter()
            .filter(|h| h.pending_security() > 0)
            .filter_map(|h| host_row(h, now))
            .collect(),
        name,
        older_than,
        found: found.map(|f| f.into_iter().map(found_row).collect()),
    };
    Ok(html(StatusCode::OK, page.render()?))
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

    #[tokio::test]
    async fn the_fleet_summary_and_page_show_only_the_callers_groups() {
        const LATE: &str = "9c4f5d85-7cab-4f6d-8d88-3f4a5b6c7d8e";
        let state = testing::state();
        testing::enroll(&state, WEB, "web-1", T0).await;
        testing::enroll(&state, DB, "db-1", T0).await;
        testing::enroll(&state, LATE, "late-1", T0).await;
        let web_group = testing::create_group(&state, "web").await;
        let db_group = testing::create_group(&state, "db").await;
        testing::put_in_group(&state, WEB, &web_group).await;
        testing::put_in_group(&state, LATE, &web_group).await;
        testing::put_in_group(&state, DB, &db_group).await;
        let now = crate::now_millis();
        // web-1: one security and one other update, fresh indexes, needs a
        // reboot; db-1: the same from indexes a month old; late-1 never
        // reported.
        for (host, lists_age, reboot) in
            [(WEB, 60_000, true), (DB, 30 * 24 * 60 * 60 * 1000, false)]
        {
            let change = Change::Whole(inventory("3.0.11-1~deb12u1"));
            let report = Report {
                collected_at: now,
                lists_updated_at: Some(now - lists_age),
                reboot: Reboot {
                    required: reboot,
                    reasons: Vec::new(),
                },
            };
            state
                .db
                .write("t", move |tx| {
                    super::store::store(tx, host, 1, &change, &report)
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

        let (status, body) = get(&app, &admin, "/api/v1/packages/summary").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stale_after_days"], 7);
        let names = |body: &Value, list: &str, key: &str| -> Vec<String> {
            body[list]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| i[key].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names(&body, "groups", "host_group"), ["db", "web"]);
        assert_eq!(
            names(&body, "hosts", "hostname"),
            ["db-1", "web-1", "late-1"],
            "most security updates first (a tie by hostname), no inventory last"
        );
        let db = &body["hosts"][0]["inventory"];
        assert_eq!(db["pending_updates"], 2);
        assert_eq!(db["pending_security_updates"], 1);
        assert_eq!(db["stale_indexes"], true);
        assert_eq!(body["hosts"][1]["inventory"]["stale_indexes"], false);
        assert_eq!(body["hosts"][1]["inventory"]["reboot_required"], true);
        assert_eq!(body["hosts"][2]["inventory"], Value::Null);
        let web = &body["groups"][1];
        assert_eq!(web["hosts"], 2);
        assert_eq!(web["hosts_without_inventory"], 1);
        assert_eq!(web["hosts_needing_security_updates"], 1);
        assert_eq!(web["pending_security_updates"], 1);
        assert_eq!(web["hosts_needing_reboot"], 1);

        // The scoped viewer: only the web group, whatever it asks for.
        let (status, body) = get(&app, &web_viewer, "/api/v1/packages/summary").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(names(&body, "groups", "host_group"), ["web"]);
        assert_eq!(names(&body, "hosts", "hostname"), ["web-1", "late-1"]);
        let (_, body) = get(
            &app,
            &web_viewer,
            &format!("/api/v1/packages/summary?group={db_group}"),
        )
        .await;
        assert_eq!(names(&body, "hosts", "hostname"), Vec::<String>::new());
        let (_, body) = get(&app, &web_viewer, "/api/v1/packages/summary?needs=security").await;
        assert_eq!(names(&body, "hosts", "hostname"), ["web-1"]);
        assert_eq!(
            body["groups"][0]["hosts"], 2,
            "the groups' counts are whole"
        );
        let (status, _) = get(&app, &admin, "/api/v1/packages/summary?needs=magic").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // The page, without JavaScript: counts per group, the hosts needing
        // security updates, and the search.
        let page = |cookie: &str, uri: &str| {
            let request = Request::get(uri)
                .header(header::HOST, HOST)
                .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
                .body(Body::empty())
                .expect("request");
            let app = app.clone();
            async move { testing::send(&app, request).await }
        };
        let reply = page(&admin, "/packages?name=openssl&older_than=3.0.12").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(reply.body.contains("<title>Updates"), "{}", reply.body);
        assert!(reply.body.contains("2 of 3 hosts need security updates"));
        assert!(
            reply
                .body
                .contains(&format!("<a href=\"/hosts/{DB}\">db-1</a>"))
        );
        assert!(reply.body.contains("Stale"));
        assert!(reply.body.contains("Reboot required"));
        let groups = &reply.body[reply.body.find("id=\"groups\"").expect("groups")..];
        assert!(groups.contains(&format!("href=\"/packages?group={web_group}\">web</a>")));
        let found = &reply.body[reply.body.find("id=\"found\"").expect("found")..];
        assert!(found.contains("Hosts running openssl older than 3.0.12 (2)"));
        assert!(found.contains("3.0.11-1~deb12u1"));

        let reply = page(&web_viewer, "/packages?name=openssl").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.contains("1 of 2 hosts need security updates"));
        assert!(reply.body.contains("web-1") && !reply.body.contains("db-1"));
        assert!(
            reply.body.contains("href=\"/packages\">Updates</a>"),
            "in the navigation"
        );
    }
}
