//! `GET /api/v1/hosts` and `GET /api/v1/hosts/{id}`. Callers authenticate
//! with a browser session or an API token (`Authorization: Bearer
//! <id>.<secret>`). Times are RFC 3339 strings in UTC; sizes are bytes.
//!
//! The JSON is made of view types of its own ([`HostJson`], ...), built from
//! the domain types: a schema change is not an API change.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AgentHealth, DEFAULT_PAGE, Host, MAX_HOST_ID, MAX_PAGE, page_cursor, parse_page_cursor, store,
};
use crate::identity::auth::ApiCaller;
use crate::metrics::Sample;
use crate::state::AppState;
use crate::web::{Routes, WebError, format};

pub fn routes() -> Routes {
    Routes::new()
        .user("/api/v1/hosts", get(list_hosts))
        .user("/api/v1/hosts/{id}", get(get_host))
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
    host_group: Option<String>,
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

fn host_json(state: &AppState, host: Host, latest: Option<Sample>) -> HostJson {
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
        host_group: host.host_group,
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
    _caller: ApiCaller,
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
    let page = store::HostQuery {
        after,
        // One more than asked, to know whether there is a next page.
        limit: limit + 1,
        name_contains: name.clone(),
    };
    let (mut hosts, total) = state
        .db
        .read("list hosts", move |tx| {
            Ok((
                store::list_page(tx, &page)?,
                store::count(tx, name.as_deref())?,
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
            .map(|(host, latest)| host_json(&state, host, latest))
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
    _caller: ApiCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HostJson>, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such host");
    if id.len() > MAX_HOST_ID {
        return Err(UNKNOWN);
    }
    let (host, latest) = state
        .db
        .read("load host", move |tx| store::get_with_latest(tx, &id))
        .await?
        .ok_or(UNKNOWN)?;
    Ok(Json(host_json(&state, host, latest)))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list_hosts, get_host))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
