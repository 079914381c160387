//! The JSON API, `/api/v1/`. Callers authenticate with a browser session or
//! an API token (`Authorization: Bearer <id>.<secret>`). Times are RFC 3339
//! strings in UTC; sizes are bytes.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::auth::ApiCaller;
use super::error::WebError;
use super::format;
use crate::state::AppState;
use crate::store::{FilesystemRow, Host, MetricsRow, NetworkRow};

/// Longest host id we look up.
const MAX_HOST_ID: usize = 128;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/hosts/{id}", get(get_host))
}

#[derive(Debug, Serialize)]
pub(super) struct HostList {
    hosts: Vec<HostJson>,
}

#[derive(Debug, Serialize)]
pub(super) struct HostJson {
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
    online: bool,
    last_seen: Option<String>,
    /// `quic` or `wss`: the live transport if online, else the last known.
    transport: Option<String>,
    connected_since: Option<String>,
    /// Whether the live QUIC connection resumed with 0-RTT.
    zero_rtt: bool,
    enrolled_at: Option<String>,
    agent_health: Option<serde_json::Value>,
    /// Records the agent's spool dropped because it was full, as last reported.
    spool_dropped_total: u64,
    metrics: Option<MetricsJson>,
}

#[derive(Debug, Serialize)]
struct MetricsJson {
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
    filesystems: Vec<FilesystemRow>,
    network: Vec<NetworkRow>,
}

impl From<MetricsRow> for MetricsJson {
    fn from(m: MetricsRow) -> Self {
        MetricsJson {
            seq: m.seq,
            collected_at: format::rfc3339(m.collected_at),
            cpu_percent: m.cpu_percent,
            memory_total_bytes: m.memory_total_bytes,
            memory_available_bytes: m.memory_available_bytes,
            memory_used_bytes: m
                .memory_total_bytes
                .saturating_sub(m.memory_available_bytes),
            swap_total_bytes: m.swap_total_bytes,
            swap_free_bytes: m.swap_free_bytes,
            swap_used_bytes: m.swap_total_bytes.saturating_sub(m.swap_free_bytes),
            load_1: m.load_1,
            load_5: m.load_5,
            load_15: m.load_15,
            uptime_seconds: m.uptime_seconds,
            process_count: m.process_count,
            filesystems: m.filesystems,
            network: m.network,
        }
    }
}

async fn host_json(state: &AppState, host: Host) -> Result<HostJson, WebError> {
    let metrics = state.store.latest_metrics(&host.id).await?;
    let connection = state.registry.get(&host.id);
    let transport = match &connection {
        Some(conn) => Some(conn.transport.as_str().to_owned()),
        None => host.last_transport,
    };
    Ok(HostJson {
        online: connection.is_some(),
        zero_rtt: connection.as_ref().is_some_and(|c| c.zero_rtt),
        connected_since: connection.and_then(|c| format::rfc3339(c.connected_at)),
        transport,
        last_seen: host.last_seen.and_then(format::rfc3339),
        enrolled_at: format::rfc3339(host.enrolled_at),
        metrics: metrics.map(MetricsJson::from),
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
        agent_health: host.agent_health,
        spool_dropped_total: host.spool_dropped_total,
    })
}

async fn list_hosts(
    _caller: ApiCaller,
    State(state): State<AppState>,
) -> Result<Json<HostList>, WebError> {
    let mut hosts = Vec::new();
    for host in state.store.list_hosts().await? {
        hosts.push(host_json(&state, host).await?);
    }
    Ok(Json(HostList { hosts }))
}

async fn get_host(
    _caller: ApiCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HostJson>, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such host");
    if id.len() > MAX_HOST_ID {
        return Err(UNKNOWN);
    }
    let host = state.store.host(&id).await?.ok_or(UNKNOWN)?;
    Ok(Json(host_json(&state, host).await?))
}
