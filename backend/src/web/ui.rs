//! The pages: host list and host detail, and the error page.
//!
//! Handlers gather data and turn it into plain view structs of strings (all
//! formatting happens here and in [`super::format`]), so templates only lay
//! them out. Askama escapes every value.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::get;

use super::auth::UiUser;
use super::error::WebError;
use super::format::{self, MISSING};
use super::{RequestId, html};
use crate::registry::Registry;
use crate::state::AppState;
use crate::store::{CommandRow, CommandStatus, Host, MetricsRow, Millis};

/// How far back the host page's charts reach.
const CHART_WINDOW_MS: Millis = 60 * 60 * 1000;
/// Most samples a chart draws (one every 5 s over the hour).
const CHART_MAX_SAMPLES: u32 = 720;
/// Longest host id we look up.
const MAX_HOST_ID: usize = 128;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/hosts") }))
        .route("/hosts", get(hosts_page))
        .route("/hosts/{id}", get(host_page))
}

/// What the frame around every page needs.
pub(crate) struct Layout {
    pub css_href: &'static str,
    /// The signed-in user, if any (shows the logout button).
    pub username: Option<String>,
}

impl Layout {
    pub fn anonymous() -> Self {
        Layout {
            css_href: super::stylesheet_href(),
            username: None,
        }
    }

    fn for_user(user: &UiUser) -> Self {
        Layout {
            css_href: super::stylesheet_href(),
            username: Some(user.0.user.username.clone()),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    title: &'a str,
    message: &'a str,
    request_id: String,
}

/// The HTML body of an error response.
pub(super) fn error_page(status: StatusCode, message: &str, request_id: RequestId) -> String {
    let page = ErrorPage {
        layout: Layout::anonymous(),
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error"),
        message,
        request_id: request_id.to_string(),
    };
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the error page");
        format!("{} {message} (request id {request_id})", status.as_u16())
    })
}

/// Whether the host is connected and how, or how it last was.
struct Status {
    online: bool,
    /// "QUIC" or "WSS" when online; offline, the last known one marked as
    /// such, or `MISSING`.
    transport: String,
    connected_since: Option<String>,
}

impl Status {
    fn of(host: &Host, registry: &Registry, now: Millis) -> Status {
        match registry.get(&host.id) {
            Some(conn) => Status {
                online: true,
                transport: conn.transport.as_str().to_uppercase(),
                connected_since: Some(format!(
                    "{} ({})",
                    format::utc(conn.connected_at),
                    format::age(conn.connected_at, now)
                )),
            },
            None => Status {
                online: false,
                transport: match host.last_transport.as_deref() {
                    Some(t) => format!("{} (last known)", t.to_uppercase()),
                    None => MISSING.to_owned(),
                },
                connected_since: None,
            },
        }
    }
}

fn last_seen(host: &Host, now: Millis) -> String {
    match host.last_seen {
        Some(at) => format!("{} ({})", format::utc(at), format::age(at, now)),
        None => "never".to_owned(),
    }
}

fn or_missing(value: Option<&str>) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or(MISSING)
        .to_owned()
}

fn memory_used(m: &MetricsRow) -> u64 {
    m.memory_total_bytes
        .saturating_sub(m.memory_available_bytes)
}

fn swap_used(m: &MetricsRow) -> u64 {
    m.swap_total_bytes.saturating_sub(m.swap_free_bytes)
}

fn percent_or_missing(p: Option<f64>) -> String {
    p.map_or_else(|| MISSING.to_owned(), format::percent)
}

// ---------------------------------------------------------------------------
// Host list

struct HostRow {
    id: String,
    hostname: String,
    os: String,
    status: Status,
    last_seen: String,
    cpu: String,
    memory: String,
}

#[derive(Template)]
#[template(path = "hosts.html")]
struct HostsPage {
    layout: Layout,
    hosts: Vec<HostRow>,
    online: usize,
}

async fn hosts_page(user: UiUser, State(state): State<AppState>) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let mut hosts = state.store.list_hosts().await?;
    hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname).then_with(|| a.id.cmp(&b.id)));
    let mut rows = Vec::with_capacity(hosts.len());
    for host in hosts {
        let metrics = state.store.latest_metrics(&host.id).await?;
        let status = Status::of(&host, &state.registry, now);
        rows.push(HostRow {
            cpu: percent_or_missing(metrics.as_ref().map(|m| m.cpu_percent)),
            memory: percent_or_missing(
                metrics
                    .as_ref()
                    .and_then(|m| format::used_percent(memory_used(m), m.memory_total_bytes)),
            ),
            os: or_missing(host.os_pretty_name.as_deref()),
            last_seen: last_seen(&host, now),
            status,
            id: host.id,
            hostname: host.hostname,
        });
    }
    let online = rows.iter().filter(|r| r.status.online).count();
    let page = HostsPage {
        layout: Layout::for_user(&user),
        hosts: rows,
        online,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

// ---------------------------------------------------------------------------
// Host detail

struct Fact {
    label: &'static str,
    value: String,
}

struct MetricsView {
    collected: String,
    cpu: String,
    memory: String,
    memory_percent: f64,
    swap: String,
    swap_percent: f64,
    load: String,
    uptime: String,
    processes: u32,
    filesystems: Vec<FilesystemView>,
    network: Vec<NetworkView>,
}

struct FilesystemView {
    mount_point: String,
    device: String,
    fs_type: String,
    used: String,
    total: String,
    percent: String,
    percent_value: f64,
}

struct NetworkView {
    interface: String,
    rx: String,
    tx: String,
}

/// One process of the agent, from its latest health report.
struct AgentProcess {
    role: String,
    pid: String,
    healthy: bool,
    restarts: String,
    sandbox: String,
}

/// One command issued to the host, for the commands table.
struct CommandView {
    issued: String,
    /// The action, with its unit for a service restart.
    what: String,
    requested_by: String,
    status: &'static str,
    /// `online` (succeeded), `bad` (failed, rejected) or `offline` (waiting, expired).
    badge: &'static str,
    exit_code: String,
    finished: String,
    output: String,
    error: String,
}

/// How many of a host's latest commands its page lists.
const PAGE_COMMANDS: u32 = 20;

fn command_view(c: CommandRow) -> CommandView {
    let what = match c.payload.get("unit").and_then(serde_json::Value::as_str) {
        Some(unit) => format!("{} {unit}", c.kind),
        None => c.kind.clone(),
    };
    let badge = match c.status {
        CommandStatus::Succeeded => "online",
        CommandStatus::Failed | CommandStatus::Rejected => "bad",
        CommandStatus::Pending | CommandStatus::Delivered | CommandStatus::Expired => "offline",
    };
    CommandView {
        issued: format::utc(c.issued_at),
        what,
        requested_by: c.requested_by,
        status: c.status.as_str(),
        badge,
        exit_code: c
            .exit_code
            .filter(|_| c.status.is_final() && c.status != CommandStatus::Rejected)
            .map_or_else(|| MISSING.to_owned(), |code| code.to_string()),
        finished: c.finished_at.map_or_else(
            || MISSING.to_owned(),
            |at| format!("{} (agent clock)", format::utc(at)),
        ),
        output: c.output.unwrap_or_default(),
        error: c.error.unwrap_or_default(),
    }
}

/// A chart of a percentage over the last hour.
struct Chart {
    label: &'static str,
    lines: Vec<String>,
    summary: String,
}

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage {
    layout: Layout,
    hostname: String,
    status: Status,
    last_seen: String,
    facts: Vec<Fact>,
    metrics: Option<MetricsView>,
    charts: Vec<Chart>,
    agent: Vec<AgentProcess>,
    agent_reported: bool,
    commands: Vec<CommandView>,
    /// Records the agent's spool dropped because it was full.
    spool_dropped_total: u64,
    spark_width: f64,
    spark_height: f64,
}

async fn host_page(
    user: UiUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such host");
    if id.len() > MAX_HOST_ID {
        return Err(UNKNOWN);
    }
    let Some(host) = state.store.host(&id).await? else {
        return Err(UNKNOWN);
    };
    let now = crate::now_millis();
    let latest = state.store.latest_metrics(&host.id).await?;
    let from = now - CHART_WINDOW_MS;
    let history = state
        .store
        .metrics_between(&host.id, from, now + 1, CHART_MAX_SAMPLES)
        .await?;
    let commands = state.store.host_commands(&host.id, PAGE_COMMANDS).await?;

    let page = HostPage {
        layout: Layout::for_user(&user),
        status: Status::of(&host, &state.registry, now),
        last_seen: last_seen(&host, now),
        facts: facts(&host),
        metrics: latest.as_ref().map(|m| metrics_view(m, now)),
        charts: charts(&history, from, now),
        agent: agent_processes(host.agent_health.as_ref()),
        agent_reported: host.agent_health.is_some(),
        commands: commands.into_iter().map(command_view).collect(),
        spool_dropped_total: host.spool_dropped_total,
        spark_width: format::SPARK_WIDTH,
        spark_height: format::SPARK_HEIGHT,
        hostname: host.hostname,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

fn facts(host: &Host) -> Vec<Fact> {
    let os_version = match (host.os_id.as_deref(), host.os_version_id.as_deref()) {
        (Some(id), Some(version)) => Some(format!("{id} {version}")),
        (Some(id), None) => Some(id.to_owned()),
        _ => None,
    };
    vec![
        Fact {
            label: "Hostname",
            value: host.hostname.clone(),
        },
        Fact {
            label: "Operating system",
            value: or_missing(host.os_pretty_name.as_deref()),
        },
        Fact {
            label: "OS id and version",
            value: or_missing(os_version.as_deref()),
        },
        Fact {
            label: "Kernel",
            value: or_missing(host.kernel_release.as_deref()),
        },
        Fact {
            label: "Architecture",
            value: or_missing(host.architecture.as_deref()),
        },
        Fact {
            label: "CPUs",
            value: host
                .cpu_count
                .map_or_else(|| MISSING.to_owned(), |n| n.to_string()),
        },
        Fact {
            label: "Memory",
            value: host
                .memory_total_bytes
                .map_or_else(|| MISSING.to_owned(), format::bytes),
        },
        Fact {
            label: "Host group",
            value: or_missing(host.host_group.as_deref()),
        },
        Fact {
            label: "Enrolled",
            value: format!(
                "{} from {}",
                format::utc(host.enrolled_at),
                host.enrolled_from
            ),
        },
        Fact {
            label: "Certificate SHA-256",
            value: host.cert_sha256.clone(),
        },
        Fact {
            label: "Agent id",
            value: host.id.clone(),
        },
    ]
}

fn metrics_view(m: &MetricsRow, now: Millis) -> MetricsView {
    let mem_used = memory_used(m);
    let swap_used = swap_used(m);
    MetricsView {
        collected: format!(
            "{} ({})",
            format::utc(m.collected_at),
            format::age(m.collected_at, now)
        ),
        cpu: format::percent(m.cpu_percent),
        memory: format!(
            "{} of {}",
            format::bytes(mem_used),
            format::bytes(m.memory_total_bytes)
        ),
        memory_percent: format::used_percent(mem_used, m.memory_total_bytes).unwrap_or(0.0),
        swap: if m.swap_total_bytes == 0 {
            "none".to_owned()
        } else {
            format!(
                "{} of {}",
                format::bytes(swap_used),
                format::bytes(m.swap_total_bytes)
            )
        },
        swap_percent: format::used_percent(swap_used, m.swap_total_bytes).unwrap_or(0.0),
        load: format!("{:.2} / {:.2} / {:.2}", m.load_1, m.load_5, m.load_15),
        uptime: format::duration(m.uptime_seconds),
        processes: m.process_count,
        filesystems: m
            .filesystems
            .iter()
            .map(|fs| {
                let percent = format::used_percent(fs.used_bytes, fs.total_bytes);
                FilesystemView {
                    mount_point: fs.mount_point.clone(),
                    device: fs.device.clone(),
                    fs_type: fs.fs_type.clone(),
                    used: format::bytes(fs.used_bytes),
                    total: format::bytes(fs.total_bytes),
                    percent: percent_or_missing(percent),
                    percent_value: percent.unwrap_or(0.0),
                }
            })
            .collect(),
        network: m
            .network
            .iter()
            .map(|n| NetworkView {
                interface: n.interface.clone(),
                rx: format::bytes(n.rx_bytes),
                tx: format::bytes(n.tx_bytes),
            })
            .collect(),
    }
}

fn charts(history: &[MetricsRow], from: Millis, to: Millis) -> Vec<Chart> {
    let chart = |label: &'static str, value: &dyn Fn(&MetricsRow) -> Option<f64>| {
        let samples: Vec<(Millis, f64)> = history
            .iter()
            .filter_map(|m| value(m).map(|v| (m.collected_at, v)))
            .collect();
        let summary = match samples.iter().map(|s| s.1).reduce(f64::max) {
            Some(max) => {
                let min = samples.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
                format!(
                    "min {}, max {}, {} samples",
                    format::percent(min),
                    format::percent(max),
                    samples.len()
                )
            }
            None => "no samples in the last hour".to_owned(),
        };
        Chart {
            label,
            lines: format::sparkline(&samples, from, to),
            summary,
        }
    };
    vec![
        chart("CPU", &|m| Some(m.cpu_percent)),
        chart("Memory", &|m| {
            format::used_percent(memory_used(m), m.memory_total_bytes)
        }),
    ]
}

/// Reads the stored health report leniently: it is our own JSON, but an older
/// or newer agent may have written fewer or more fields.
fn agent_processes(health: Option<&serde_json::Value>) -> Vec<AgentProcess> {
    let Some(health) = health else {
        return Vec::new();
    };
    let children = health.get("children").unwrap_or(health);
    let Some(children) = children.as_array() else {
        return Vec::new();
    };
    let text = |child: &serde_json::Value, key: &str| match child.get(key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => MISSING.to_owned(),
    };
    children
        .iter()
        .map(|child| AgentProcess {
            role: text(child, "role"),
            pid: text(child, "pid"),
            healthy: child
                .get("healthy")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            restarts: text(child, "restarts"),
            sandbox: text(child, "sandbox"),
        })
        .collect()
}
