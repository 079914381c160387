//! The hosts API: `GET /api/v1/hosts` (pages, filtered to the caller's host
//! groups), `GET|PATCH|DELETE /api/v1/hosts/{id}`, `POST
//! /api/v1/hosts/{id}/revoke`. Callers authenticate with a browser session
//! or an API token (`Authorization: Bearer <id>.<secret>`). Times are RFC
//! 3339 strings in UTC; sizes are bytes.
//!
//! The JSON is made of view types of its own ([`HostJson`], ...), built from
//! the domain types: a schema change is not an API change.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AgentHealth, DEFAULT_PAGE, Host, MAX_HOST_ID, MAX_PAGE, page_cursor, parse_page_cursor, store,
};
use crate::access::{Caller, HostScope, Permission};
use crate::audit::{Action, Outcome};
use crate::metrics::Sample;
use crate::state::AppState;
use crate::web::{Access, Routes, WebError, format};

pub fn routes() -> Routes {
    Routes::new()
        .get(
            "/api/v1/hosts",
            Access::Permission(Permission::HostsRead),
            list_hosts,
        )
        .get(
            "/api/v1/hosts/{id}",
            Access::Permission(Permission::HostsRead),
            get_host,
        )
        .patch(
            "/api/v1/hosts/{id}",
            Access::Permission(Permission::HostsAssignGroup),
            update_host,
        )
        .delete(
            "/api/v1/hosts/{id}",
            Access::Permission(Permission::HostsDelete),
            delete_host,
        )
        .post(
            "/api/v1/hosts/{id}/revoke",
            Access::Permission(Permission::HostsRevoke),
            revoke_host,
        )
}

const UNKNOWN_HOST: WebError = WebError::NotFound("no such host");

/// The host `id` if the caller holds `p` for it; otherwise "no such host",
/// so a caller scoped to other groups cannot tell it exists.
pub async fn visible_host(
    state: &AppState,
    caller: &Caller,
    id: String,
    p: Permission,
) -> Result<Host, WebError> {
    if id.len() > MAX_HOST_ID {
        return Err(UNKNOWN_HOST);
    }
    let host = state
        .db
        .read("load host", move |tx| store::get(tx, &id))
        .await?
        .ok_or(UNKNOWN_HOST)?;
    caller.require_for_host(p, host.group_id(), "no such host")?;
    Ok(host)
}

/// The groups a host list is limited to for a caller (None: all hosts).
pub fn list_groups(caller: &Caller, p: Permission) -> Option<Vec<String>> {
    match caller.host_scope(p) {
        HostScope::All => None,
        HostScope::Groups(groups) => Some(groups),
    }
}

/// [`list_groups`] narrowed to the one group a list asks for: that group
/// when the caller may see it, else nothing at all.
pub fn filter_groups(caller: &Caller, p: Permission, only: Option<&str>) -> Option<Vec<String>> {
    let scope = list_groups(caller, p);
    match only.filter(|g| !g.is_empty()) {
        None => scope,
        Some(g) => match scope {
            None => Some(vec![g.to_owned()]),
            Some(groups) => Some(groups.into_iter().filter(|s| s == g).collect()),
        },
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostList {
    /// One page, by hostname.
    hosts: Vec<HostJson>,
    /// Hosts in all pages (matching the filter).
    total: u64,
    /// Pass as `after=` for the next page; absent on the last page.
    next: Option<String>,
}

/// Paging and filtering of `GET /api/v1/hosts`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Hosts per page: 1 to 1000, default 200.
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Only hosts whose hostname contains this (case-insensitive).
    name: Option<String>,
    /// Only the hosts of this host group (its id).
    group: Option<String>,
}

/// A host as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostJson {
    /// The agent id (a UUID).
    id: String,
    hostname: String,
    os: Option<String>,
    os_id: Option<String>,
    os_version: Option<String>,
    kernel: Option<String>,
    architecture: Option<String>,
    cpu_count: Option<u32>,
    memory_total_bytes: Option<u64>,
    /// The name of its host group.
    host_group: Option<String>,
    host_group_id: Option<String>,
    /// When it was revoked: its agent can no longer connect.
    revoked_at: Option<String>,
    /// Whether its agent holds a connection to the backend now.
    online: bool,
    last_seen: Option<String>,
    /// `quic` or `wss`: the live transport if online, else the last known.
    transport: Option<String>,
    connected_since: Option<String>,
    /// Whether the live QUIC connection resumed with 0-RTT.
    zero_rtt: bool,
    enrolled_at: Option<String>,
    agent_health: Option<AgentHealthJson>,
    /// Records the agent's spool dropped because it was full, as last reported.
    spool_dropped_total: u64,
    metrics: Option<MetricsJson>,
}

/// The agent's report on its own processes.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentHealthJson {
    children: Vec<ChildHealthJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChildHealthJson {
    role: String,
    pid: u32,
    healthy: bool,
    restarts: u32,
    /// What the process's sandbox applied, in one line.
    sandbox: String,
}

impl From<AgentHealth> for AgentHealthJson {
    fn from(h: AgentHealth) -> Self {
        AgentHealthJson {
            children: h
                .children
                .into_iter()
                .map(|c| ChildHealthJson {
                    role: c.role,
                    pid: c.pid,
                    healthy: c.healthy,
                    restarts: c.restarts,
                    sandbox: c.sandbox,
                })
                .collect(),
        }
    }
}

/// The latest metrics sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsJson {
    seq: u64,
    collected_at: Option<String>,
    cpu_percent: f64,
    memory_total_bytes: u64,
    memory_available_bytes: u64,
    memory_used_bytes: u64,
    swap_total_bytes: u64,
    swap_free_bytes: u64,
    swap_used_bytes: u64,
    load_1: f64,
    load_5: f64,
    load_15: f64,
    uptime_seconds: u64,
    process_count: u32,
    filesystems: Vec<FilesystemJson>,
    network: Vec<NetworkJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FilesystemJson {
    mount_point: String,
    device: String,
    fs_type: String,
    total_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkJson {
    interface: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl From<Sample> for MetricsJson {
    fn from(m: Sample) -> Self {
        MetricsJson {
            seq: m.seq,
            collected_at: format::rfc3339(m.collected_at),
            cpu_percent: m.cpu_percent,
            memory_used_bytes: m.memory_used_bytes(),
            swap_used_bytes: m.swap_used_bytes(),
            memory_total_bytes: m.memory_total_bytes,
            memory_available_bytes: m.memory_available_bytes,
            swap_total_bytes: m.swap_total_bytes,
            swap_free_bytes: m.swap_free_bytes,
            load_1: m.load_1,
            load_5: m.load_5,
            load_15: m.load_15,
            uptime_seconds: m.uptime_seconds,
            process_count: m.process_count,
            filesystems: m
                .filesystems
                .into_iter()
                .map(|f| FilesystemJson {
                    mount_point: f.mount_point,
                    device: f.device,
                    fs_type: f.fs_type,
                    total_bytes: f.total_bytes,
                    used_bytes: f.used_bytes,
                    available_bytes: f.available_bytes,
                })
                .collect(),
            network: m
                .network
                .into_iter()
                .map(|n| NetworkJson {
                    interface: n.interface,
                    rx_bytes: n.rx_bytes,
                    tx_bytes: n.tx_bytes,
                })
                .collect(),
        }
    }
}

fn host_json(state: &AppState, caller: &Caller, host: Host, latest: Option<Sample>) -> HostJson {
    let latest = latest.filter(|_| caller.may(Permission::MetricsRead, host.group_id()));
    let connection = state.registry.get(&host.id);
    let transport = match &connection {
        Some(conn) => Some(conn.transport.as_str().to_owned()),
        None => host.last_transport.map(|t| t.as_str().to_owned()),
    };
    HostJson {
        online: connection.is_some(),
        zero_rtt: connection.as_ref().is_some_and(|c| c.zero_rtt),
        connected_since: connection.and_then(|c| format::rfc3339(c.connected_at)),
        transport,
        last_seen: host.last_seen.and_then(format::rfc3339),
        enrolled_at: format::rfc3339(host.enrolled_at),
        metrics: latest.map(MetricsJson::from),
        id: host.id,
        hostname: host.hostname,
        os: host.os_pretty_name,
        os_id: host.os_id,
        os_version: host.os_version_id,
        kernel: host.kernel_release,
        architecture: host.architecture,
        cpu_count: host.cpu_count,
        memory_total_bytes: host.memory_total_bytes,
        revoked_at: host.revoked_at.and_then(format::rfc3339),
        host_group_id: host.host_group.as_ref().map(|(id, _)| id.clone()),
        host_group: host.host_group.map(|(_, name)| name),
        agent_health: host.agent_health.map(AgentHealthJson::from),
        spool_dropped_total: host.spool_dropped_total,
    }
}

/// Hosts with their latest metrics, a page at a time, by hostname.
#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts",
    params(ListQuery),
    responses((status = 200, description = "a page of hosts, by hostname", body = HostList),
              (status = 400, description = "a bad `after` or `limit`"),
              (status = 401, description = "no valid session or API token")),
    security(("bearer" = []), ("session" = [])))]
async fn list_hosts(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<HostList>, WebError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(WebError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let after =
        match query.after.as_deref() {
            None => None,
            Some(cursor) => Some(parse_page_cursor(cursor).ok_or_else(|| {
                WebError::BadRequest("after is not a cursor this API gave".into())
            })?),
        };
    let name = query
        .name
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(256).collect::<String>());
    let groups = filter_groups(&caller, Permission::HostsRead, query.group.as_deref());
    let page = store::HostQuery {
        after,
        groups: groups.clone(),
        // One more than asked, to know whether there is a next page.
        limit: limit + 1,
        name_contains: name.clone(),
    };
    let (mut hosts, total) = state
        .db
        .read("list hosts", move |tx| {
            Ok((
                store::list_page(tx, &page)?,
                store::count(tx, name.as_deref(), groups.as_deref())?,
            ))
        })
        .await?;
    let more = hosts.len() > limit as usize;
    hosts.truncate(limit as usize);
    let next = more
        .then(|| hosts.last().map(|(h, _)| page_cursor(h)))
        .flatten();
    Ok(Json(HostList {
        hosts: hosts
            .into_iter()
            .map(|(host, latest)| host_json(&state, &caller, host, latest))
            .collect(),
        total,
        next,
    }))
}

/// One host.
#[utoipa::path(get, path = "/api/v1/hosts/{id}", tag = "hosts",
    params(("id" = String, Path, description = "the host's agent id")),
    responses((status = 200, description = "the host", body = HostJson),
              (status = 401, description = "no valid session or API token"),
              (status = 404, description = "no such host")),
    security(("bearer" = []), ("session" = [])))]
async fn get_host(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HostJson>, WebError> {
    let host = visible_host(&state, &caller, id, Permission::HostsRead).await?;
    let host_id = host.id.clone();
    let latest = state
        .db
        .read("load latest metrics", move |tx| {
            crate::metrics::store::latest(tx, &host_id)
        })
        .await?;
    Ok(Json(host_json(&state, &caller, host, latest)))
}

/// The body of `PATCH /api/v1/hosts/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostPatch {
    /// The host group to move the host into; `null` for none; absent to
    /// leave it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub host_group_id: Option<Option<String>>,
}

/// A field that is present (possibly `null`), as opposed to absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Moves a host into a host group (or out of every group).
#[utoipa::path(patch, path = "/api/v1/hosts/{id}", tag = "hosts",
    params(("id" = String, Path, description = "the host's agent id")),
    request_body = HostPatch,
    responses((status = 200, description = "the host as it is now", body = HostJson),
              (status = 400, description = "an unknown group"),
              (status = 403, description = "the caller may not move hosts into that group"),
              (status = 404, description = "no such host")),
    security(("bearer" = []), ("session" = [])))]
async fn update_host(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(patch): Json<HostPatch>,
) -> Result<Json<HostJson>, WebError> {
    let host = visible_host(&state, &caller, id, Permission::HostsAssignGroup).await?;
    if let Some(group) = patch.host_group_id {
        assign_group(&state, &caller, &host, group).await?;
    }
    let host_id = host.id.clone();
    let (host, latest) = state
        .db
        .read("load host", move |tx| store::get_with_latest(tx, &host_id))
        .await?
        .ok_or(UNKNOWN_HOST)?;
    Ok(Json(host_json(&state, &caller, host, latest)))
}

/// Moves `host` into `group` (None: no group), checking the caller may
/// move hosts out of the current group and into the new one.
pub async fn assign_group(
    state: &AppState,
    caller: &Caller,
    host: &Host,
    group: Option<String>,
) -> Result<(), WebError> {
    if !caller.may(Permission::HostsAssignGroup, group.as_deref()) {
        return Err(WebError::Forbidden(
            "you may not move hosts into that group",
        ));
    }
    let event = caller
        .event(
            crate::now_millis(),
            Action::HostAssignGroup,
            Outcome::Success,
        )
        .target(host.id.clone())
        .details(serde_json::json!({ "from": host.group_id(), "to": group }));
    let host_id = host.id.clone();
    let moved = state
        .db
        .write("assign host group", move |tx| {
            if let Some(group) = &group
                && super::groups::get(tx, group)?.is_none()
            {
                return Ok(false);
            }
            super::groups::set_host_group(tx, &host_id, group.as_deref())?;
            crate::audit::store::append(tx, &event)?;
            Ok(true)
        })
        .await?;
    if !moved {
        return Err(WebError::BadRequest("no such host group".into()));
    }
    Ok(())
}

/// Revokes a host: its live connection is closed within seconds and its
/// certificate refused from then on.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/revoke", tag = "hosts",
    params(("id" = String, Path, description = "the host's agent id")),
    responses((status = 200, description = "revoked", body = HostJson),
              (status = 404, description = "no such host")),
    security(("bearer" = []), ("session" = [])))]
async fn revoke_host(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HostJson>, WebError> {
    let host = visible_host(&state, &caller, id, Permission::HostsRevoke).await?;
    revoke(&state, &caller, &host).await?;
    let host_id = host.id.clone();
    let (host, latest) = state
        .db
        .read("load host", move |tx| store::get_with_latest(tx, &host_id))
        .await?
        .ok_or(UNKNOWN_HOST)?;
    Ok(Json(host_json(&state, &caller, host, latest)))
}

/// Revokes `host` (audited) and closes its agent's live connection.
pub async fn revoke(state: &AppState, caller: &Caller, host: &Host) -> Result<(), WebError> {
    let now = crate::now_millis();
    let event = caller
        .event(now, Action::HostRevoke, Outcome::Success)
        .target(host.id.clone())
        .details(serde_json::json!({ "hostname": host.hostname }));
    let host_id = host.id.clone();
    state
        .db
        .write("revoke host", move |tx| {
            store::revoke(tx, &host_id, now)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    if state.registry.close(&host.id) {
        tracing::info!(host_id = %host.id, "closing the connection of a revoked host");
    }
    Ok(())
}

/// Deletes a host and everything stored about it (revoking it first).
#[utoipa::path(delete, path = "/api/v1/hosts/{id}", tag = "hosts",
    params(("id" = String, Path, description = "the host's agent id")),
    responses((status = 204, description = "deleted"),
              (status = 404, description = "no such host")),
    security(("bearer" = []), ("session" = [])))]
async fn delete_host(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    let host = visible_host(&state, &caller, id, Permission::HostsDelete).await?;
    delete(&state, &caller, &host).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes `host` (audited), closing its connection.
pub async fn delete(state: &AppState, caller: &Caller, host: &Host) -> Result<(), WebError> {
    let event = caller
        .event(crate::now_millis(), Action::HostDelete, Outcome::Success)
        .target(host.id.clone())
        .details(serde_json::json!({ "hostname": host.hostname }));
    let host_id = host.id.clone();
    state
        .db
        .write("delete host", move |tx| {
            store::delete(tx, &host_id)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    state.registry.close(&host.id);
    Ok(())
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list_hosts, get_host, update_host, revoke_host, delete_host))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
