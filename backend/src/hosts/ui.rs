//! The pages: the host list and a host's page (facts, status, metrics with
//! charts over 1 hour, 24 hours, 7 days or 90 days, agent processes,
//! commands).
//!
//! Handlers gather data and turn it into plain view structs of strings (all
//! formatting happens here and in [`crate::web::format`]), so templates only lay
//! them out. Askama escapes every value.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use palisade_proto::msg::MAX_REBOOT_DELAY_MINUTES;
use serde::Deserialize;

use super::{AgentHealth, Host, MAX_HOST_ID, store};
use crate::access::{Caller, Permission};
use crate::commands::{CommandKind, CommandRow, CommandStatus};
use crate::db::Millis;
use crate::metrics::{Resolution, Sample};
use crate::state::AppState;
use crate::uplink::registry::Registry;
use crate::web::form::FormFields;
use crate::web::format::{self, MISSING};
use crate::web::layout::Layout;
use crate::web::{Access, RequestId, Routes, WebError, html};

/// Most raw samples the one-hour chart draws (one every 5 s).
const CHART_MAX_SAMPLES: u32 = 720;

pub fn routes() -> Routes {
    Routes::new()
        .get("/", Access::Public, || async { Redirect::to("/hosts") })
        .get(
            "/hosts",
            Access::Permission(Permission::HostsRead),
            hosts_page,
        )
        .get(
            "/hosts/{id}",
            Access::Permission(Permission::HostsRead),
            host_page,
        )
        .post(
            "/hosts/{id}/group",
            Access::Permission(Permission::HostsAssignGroup),
            assign_group_form,
        )
        .post(
            "/hosts/{id}/revoke",
            Access::Permission(Permission::HostsRevoke),
            revoke_form,
        )
        .post(
            "/hosts/{id}/delete",
            Access::Permission(Permission::HostsDelete),
            delete_form,
        )
        .post(
            "/hosts/{id}/reboot",
            Access::Permission(Permission::HostsReboot),
            reboot_form,
        )
}

/// How far back a host page's charts reach, and from which series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChartRange {
    #[default]
    Hour,
    Day,
    Week,
    Quarter,
}

impl ChartRange {
    const ALL: [ChartRange; 4] = [
        ChartRange::Hour,
        ChartRange::Day,
        ChartRange::Week,
        ChartRange::Quarter,
    ];

    fn parse(s: Option<&str>) -> ChartRange {
        match s {
            Some("24h") => ChartRange::Day,
            Some("7d") => ChartRange::Week,
            Some("90d") => ChartRange::Quarter,
            _ => ChartRange::Hour,
        }
    }

    fn param(self) -> &'static str {
        match self {
            ChartRange::Hour => "1h",
            ChartRange::Day => "24h",
            ChartRange::Week => "7d",
            ChartRange::Quarter => "90d",
        }
    }

    fn millis(self) -> Millis {
        const HOUR: Millis = 3_600_000;
        match self {
            ChartRange::Hour => HOUR,
            ChartRange::Day => 24 * HOUR,
            ChartRange::Week => 7 * 24 * HOUR,
            ChartRange::Quarter => 90 * 24 * HOUR,
        }
    }

    /// Raw samples for an hour, 1-minute rollups for a day, 1-hour rollups
    /// beyond: at most a few thousand points whatever the range.
    fn resolution(self) -> Resolution {
        match self {
            ChartRange::Hour => Resolution::Raw,
            ChartRange::Day => Resolution::Minute,
            ChartRange::Week | ChartRange::Quarter => Resolution::Hour,
        }
    }

    fn description(self) -> &'static str {
        match self {
            ChartRange::Hour => "the last hour",
            ChartRange::Day => "the last 24 hours",
            ChartRange::Week => "the last 7 days",
            ChartRange::Quarter => "the last 90 days",
        }
    }
}

/// A link to a chart range on the host page.
struct RangeLink {
    label: &'static str,
    href: String,
    current: bool,
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
                transport: match host.last_transport {
                    Some(t) => format!("{} (last known)", t.as_str().to_uppercase()),
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
#[template(path = "hosts/templates/hosts.html")]
struct HostsPage {
    layout: Layout,
    hosts: Vec<HostRow>,
    /// Hosts matching the filter, on every page.
    total: u64,
    /// Connected to this backend now (all hosts).
    online: usize,
    /// The filter as typed, for the search box.
    name: String,
    /// The groups the caller may filter by (empty: no group select).
    group_options: Vec<GroupOption>,
    /// Whether a group filter is applied.
    group_filtered: bool,
    /// The link to the next page, if there is one.
    next: Option<String>,
    /// The link to the first page, when this is not it.
    first: Option<String>,
}

/// Hosts per page of the list.
const PAGE_SIZE: u32 = 100;

#[derive(Debug, Deserialize)]
struct HostsQuery {
    after: Option<String>,
    name: Option<String>,
    /// A host group's id.
    group: Option<String>,
}

async fn hosts_page(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<HostsQuery>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let name = query
        .name
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect::<String>();
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(cursor) => Some(
            super::parse_page_cursor(cursor)
                .ok_or_else(|| WebError::BadRequest("this page link is not valid".into()))?,
        ),
    };
    let is_first = after.is_none();
    let group = query.group.filter(|g| !g.is_empty());
    let visible = super::api::list_groups(&caller, Permission::HostsRead);
    let groups = super::api::filter_groups(&caller, Permission::HostsRead, group.as_deref());
    let page = store::HostQuery {
        after,
        groups: groups.clone(),
        limit: PAGE_SIZE + 1,
        name_contains: (!name.is_empty()).then(|| name.clone()),
    };
    let filter = page.name_contains.clone();
    let scoped = groups.is_some();
    // One snapshot: the page (one query, an index range), the count and
    // the groups to filter by.
    let (mut hosts, total, all_groups) = state
        .db
        .read("list hosts", move |tx| {
            Ok((
                store::list_page(tx, &page)?,
                store::count(tx, filter.as_deref(), groups.as_deref())?,
                super::groups::list(tx)?,
            ))
        })
        .await?;
    let group_options: Vec<GroupOption> = all_groups
        .into_iter()
        .filter(|g| visible.as_ref().is_none_or(|v| v.contains(&g.id)))
        .map(|g| GroupOption {
            selected: group.as_deref() == Some(g.id.as_str()),
            id: g.id,
            name: g.name,
        })
        .collect();
    let more = hosts.len() > PAGE_SIZE as usize;
    hosts.truncate(PAGE_SIZE as usize);
    let link = |after: Option<String>| {
        let mut params = Vec::new();
        if !name.is_empty() {
            params.push(format!("name={}", urlencode(&name)));
        }
        if let Some(group) = &group {
            params.push(format!("group={}", urlencode(group)));
        }
        if let Some(after) = after {
            params.push(format!("after={after}"));
        }
        if params.is_empty() {
            "/hosts".to_owned()
        } else {
            format!("/hosts?{}", params.join("&"))
        }
    };
    let next = more
        .then(|| hosts.last().map(|(h, _)| link(Some(super::page_cursor(h)))))
        .flatten();
    let first = (!is_first).then(|| link(None));
    let mut rows = Vec::with_capacity(hosts.len());
    for (host, metrics) in hosts {
        let status = Status::of(&host, &state.registry, now);
        rows.push(HostRow {
            cpu: percent_or_missing(metrics.as_ref().map(|m| m.cpu_percent)),
            memory: percent_or_missing(
                metrics.as_ref().and_then(|m| {
                    format::used_percent(m.memory_used_bytes(), m.memory_total_bytes)
                }),
            ),
            os: or_missing(host.os_pretty_name.as_deref()),
            last_seen: last_seen(&host, now),
            status,
            id: host.id,
            hostname: host.hostname,
        });
    }
    let page = HostsPage {
        layout: Layout::for_caller(&caller),
        online: if scoped {
            rows.iter().filter(|r| r.status.online).count()
        } else {
            state.registry.online_count()
        },
        hosts: rows,
        total,
        name,
        group_filtered: group.is_some(),
        group_options,
        next,
        first,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// Percent-encodes `s` for a query string.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

/// What the caller may do to the host, as the page offers it.
struct HostActions {
    assign: bool,
    /// The groups the caller may move the host into.
    groups: Vec<GroupOption>,
    revoke: bool,
    delete: bool,
    /// The caller may reboot the host (the "Reboot" form).
    reboot: bool,
    /// The reboot form's defaults.
    reboot_delay_minutes: u32,
    reboot_message: &'static str,
    /// When the host was revoked.
    revoked: Option<String>,
}

struct GroupOption {
    id: String,
    name: String,
    selected: bool,
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
    let unit = c.payload.get("unit").and_then(serde_json::Value::as_str);
    let delay = c
        .payload
        .get("delay_minutes")
        .and_then(serde_json::Value::as_u64);
    let what = match (c.kind, unit, delay) {
        (_, Some(unit), _) => format!("{} {unit}", c.kind.as_str()),
        (CommandKind::Reboot, _, Some(0)) => "reboot now".to_owned(),
        (CommandKind::Reboot, _, Some(minutes)) => format!("reboot in {minutes} min"),
        _ => c.kind.as_str().to_owned(),
    };
    let badge = match c.status {
        CommandStatus::Succeeded => "online",
        CommandStatus::Failed
        | CommandStatus::Rejected
        | CommandStatus::TimedOut
        | CommandStatus::Cancelled => "bad",
        CommandStatus::Pending | CommandStatus::Delivered | CommandStatus::Expired => "offline",
    };
    CommandView {
        issued: format::utc(c.issued_at),
        what,
        requested_by: c.requested_by.to_string(),
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

/// A chart of a percentage over the page's range.
struct Chart {
    label: &'static str,
    lines: Vec<String>,
    summary: String,
}

#[derive(Template)]
#[template(path = "hosts/templates/host.html")]
struct HostPage {
    layout: Layout,
    hostname: String,
    status: Status,
    last_seen: String,
    facts: Vec<Fact>,
    metrics: Option<MetricsView>,
    charts: Vec<Chart>,
    ranges: Vec<RangeLink>,
    range_description: &'static str,
    actions: HostActions,
    host_id: String,
    agent: Vec<AgentProcess>,
    agent_reported: bool,
    commands: Vec<CommandView>,
    /// Records the agent's spool dropped because it was full.
    spool_dropped_total: u64,
    spark_width: f64,
    spark_height: f64,
    /// The caller may see packages; `packages` is `None` when the host has
    /// not reported them.
    packages_allowed: bool,
    packages: Option<PackagesView>,
    /// The caller may start a patch run here (the "Patch" form).
    patch_allowed: bool,
    /// The caller may see patch runs (links to them).
    patch_runs_allowed: bool,
}

/// The host's package inventory, for the host page.
struct PackagesView {
    collected: String,
    lists_updated: Option<String>,
    reboot_required: bool,
    reboot_reasons: Vec<String>,
    security_count: usize,
    pending_count: usize,
    /// Security first, then by name.
    updates: Vec<crate::packages::api::UpdateJson>,
    installed: Vec<crate::packages::api::InstalledJson>,
    held: Vec<String>,
}

fn packages_view(held: crate::packages::HostInventory) -> PackagesView {
    let updates = crate::packages::api::updates_security_first(held.inventory.updates);
    let installed: Vec<crate::packages::api::InstalledJson> = held
        .inventory
        .installed
        .into_values()
        .map(crate::packages::api::InstalledJson::from)
        .collect();
    PackagesView {
        collected: format::utc(held.report.collected_at),
        lists_updated: held.report.lists_updated_at.map(format::utc),
        reboot_required: held.report.reboot.required,
        reboot_reasons: held.report.reboot.reasons,
        security_count: updates.iter().filter(|u| u.security).count(),
        pending_count: updates.iter().filter(|u| u.status == "pending").count(),
        held: installed
            .iter()
            .filter(|p| p.held)
            .map(|p| p.name.clone())
            .collect(),
        updates,
        installed,
    }
}

#[derive(Debug, Deserialize)]
struct HostPageQuery {
    range: Option<String>,
}

async fn host_page(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HostPageQuery>,
) -> Result<Response, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such host");
    if id.len() > MAX_HOST_ID {
        return Err(UNKNOWN);
    }
    let range = ChartRange::parse(query.range.as_deref());
    let now = crate::now_millis();
    let from = now - range.millis();
    // One snapshot for the whole page.
    let found = state
        .db
        .read("host page", move |tx| {
            let Some((host, latest)) = store::get_with_latest(tx, &id)? else {
                return Ok(None);
            };
            let series = chart_series(tx, &host.id, range, from, now)?;
            let commands = crate::commands::store::for_host(tx, &host.id, PAGE_COMMANDS)?;
            let groups = super::groups::list(tx)?;
            let packages = crate::packages::store::load(tx, &host.id)?;
            Ok(Some((host, latest, series, commands, groups, packages)))
        })
        .await?;
    let Some((host, latest, series, commands, groups, packages)) = found else {
        return Err(UNKNOWN);
    };
    // Outside the caller's groups, the host does not exist for them.
    caller.require_for_host(Permission::HostsRead, host.group_id(), "no such host")?;
    let group = host.group_id();
    let (latest, series) = if caller.may(Permission::MetricsRead, group) {
        (latest, series)
    } else {
        (
            None,
            Series {
                cpu: Vec::new(),
                memory: Vec::new(),
            },
        )
    };
    let commands = if caller.may(Permission::CommandsRead, group) {
        commands
    } else {
        Vec::new()
    };
    let packages_allowed = caller.may(Permission::PackagesRead, group);
    let packages = packages.filter(|_| packages_allowed).map(packages_view);
    let actions = HostActions {
        assign: caller.may(Permission::HostsAssignGroup, group),
        groups: groups
            .into_iter()
            .filter(|g| caller.may(Permission::HostsAssignGroup, Some(&g.id)))
            .map(|g| GroupOption {
                selected: Some(g.id.as_str()) == group,
                id: g.id,
                name: g.name,
            })
            .collect(),
        revoke: caller.may(Permission::HostsRevoke, group) && host.revoked_at.is_none(),
        delete: caller.may(Permission::HostsDelete, group),
        reboot: caller.may(Permission::HostsReboot, group) && host.revoked_at.is_none(),
        reboot_delay_minutes: crate::commands::DEFAULT_REBOOT_DELAY_MINUTES,
        reboot_message: crate::commands::DEFAULT_REBOOT_MESSAGE,
        revoked: host.revoked_at.map(format::utc),
    };
    let ranges = ChartRange::ALL
        .into_iter()
        .map(|r| RangeLink {
            label: r.param(),
            href: format!("/hosts/{}?range={}", host.id, r.param()),
            current: r == range,
        })
        .collect();
    let page = HostPage {
        layout: Layout::for_caller(&caller),
        actions,
        host_id: host.id.clone(),
        status: Status::of(&host, &state.registry, now),
        last_seen: last_seen(&host, now),
        facts: facts(&host),
        metrics: latest.as_ref().map(|m| metrics_view(m, now)),
        charts: charts(&series, range, from, now),
        ranges,
        range_description: range.description(),
        agent: agent_processes(host.agent_health.as_ref()),
        agent_reported: host.agent_health.is_some(),
        commands: commands.into_iter().map(command_view).collect(),
        spool_dropped_total: host.spool_dropped_total,
        spark_width: format::SPARK_WIDTH,
        spark_height: format::SPARK_HEIGHT,
        packages_allowed,
        packages,
        patch_allowed: caller.may(Permission::PatchRunsCreate, group) && host.revoked_at.is_none(),
        patch_runs_allowed: caller.may(Permission::PatchRunsRead, group),
        hostname: host.hostname,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// The points of the page's two charts: CPU and memory, in percent.
struct Series {
    cpu: Vec<(Millis, f64)>,
    memory: Vec<(Millis, f64)>,
}

fn chart_series(
    tx: &mut crate::db::Tx<'_>,
    host_id: &str,
    range: ChartRange,
    from: Millis,
    to: Millis,
) -> crate::db::Result<Series> {
    let resolution = range.resolution();
    if resolution == Resolution::Raw {
        let samples = crate::metrics::store::between(tx, host_id, from, to + 1, CHART_MAX_SAMPLES)?;
        return Ok(Series {
            cpu: samples
                .iter()
                .map(|m| (m.collected_at, m.cpu_percent))
                .collect(),
            memory: samples
                .iter()
                .filter_map(|m| {
                    format::used_percent(m.memory_used_bytes(), m.memory_total_bytes)
                        .map(|p| (m.collected_at, p))
                })
                .collect(),
        });
    }
    let rollups = crate::metrics::store::rollups(
        tx,
        host_id,
        resolution,
        from - resolution.millis(),
        to + 1,
    )?;
    Ok(Series {
        cpu: rollups.iter().map(|r| (r.bucket, r.cpu_avg)).collect(),
        memory: rollups
            .iter()
            .filter(|r| r.memory_total > 0)
            .map(|r| (r.bucket, r.memory_used_avg * 100.0 / r.memory_total as f64))
            .collect(),
    })
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
            value: or_missing(host.host_group.as_ref().map(|(_, name)| name.as_str())),
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

fn metrics_view(m: &Sample, now: Millis) -> MetricsView {
    let mem_used = m.memory_used_bytes();
    let swap_used = m.swap_used_bytes();
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

fn charts(series: &Series, range: ChartRange, from: Millis, to: Millis) -> Vec<Chart> {
    // A gap of more than a few points breaks the line.
    let gap = (range.resolution().millis() * 3).max(5 * 60_000);
    let chart = |label: &'static str, samples: &[(Millis, f64)]| {
        let summary = match samples.iter().map(|s| s.1).reduce(f64::max) {
            Some(max) => {
                let min = samples.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
                format!(
                    "min {}, max {}, {} points",
                    format::percent(min),
                    format::percent(max),
                    samples.len()
                )
            }
            None => format!("no samples in {}", range.description()),
        };
        Chart {
            label,
            lines: format::sparkline_with_gap(samples, from, to, gap),
            summary,
        }
    };
    vec![chart("CPU", &series.cpu), chart("Memory", &series.memory)]
}

/// The agent's processes from its latest health report.
fn agent_processes(health: Option<&AgentHealth>) -> Vec<AgentProcess> {
    let Some(health) = health else {
        return Vec::new();
    };
    let or_missing = |s: &str| {
        if s.is_empty() {
            MISSING.to_owned()
        } else {
            s.to_owned()
        }
    };
    health
        .children
        .iter()
        .map(|child| AgentProcess {
            role: or_missing(&child.role),
            pid: child.pid.to_string(),
            healthy: child.healthy,
            restarts: child.restarts.to_string(),
            sandbox: or_missing(&child.sandbox),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Actions

#[derive(Debug, Deserialize)]
struct GroupForm {
    /// Empty: no group.
    #[serde(default)]
    host_group_id: String,
}

async fn assign_group_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<GroupForm>,
) -> Result<Response, WebError> {
    let host = super::api::visible_host(&state, &caller, id, Permission::HostsAssignGroup).await?;
    let group = (!form.host_group_id.is_empty()).then_some(form.host_group_id);
    super::api::assign_group(&state, &caller, &host, group).await?;
    Ok(Redirect::to(&format!("/hosts/{}", host.id)).into_response())
}

async fn revoke_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let host = super::api::visible_host(&state, &caller, id, Permission::HostsRevoke).await?;
    super::api::revoke(&state, &caller, &host).await?;
    Ok(Redirect::to(&format!("/hosts/{}", host.id)).into_response())
}

/// The host page's reboot form (`delay_minutes`, `message`), issued as the
/// API issues it: `hosts:reboot` for the host's group, a refusal audited.
/// The route's permission is dangerous, so a session that has not proved
/// itself again recently is sent to do so first, and comes back here.
async fn reboot_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Response, WebError> {
    let delay_minutes = form
        .get("delay_minutes")
        .trim()
        .parse::<u32>()
        .map_err(|_| {
            WebError::BadRequest(format!(
                "the delay must be a whole number of minutes from 0 to {MAX_REBOOT_DELAY_MINUTES}"
            ))
        })?;
    let action = crate::commands::reboot_action_of(delay_minutes, form.get("message").to_owned())
        .map_err(|e| WebError::BadRequest(e.0))?;
    let request = crate::commands::CommandRequest {
        action,
        expires_in_secs: crate::commands::DEFAULT_EXPIRES_IN_SECS,
    };
    let row =
        crate::commands::api::issue_for_caller(&state, &caller, request_id, id, &request).await?;
    Ok(Redirect::to(&format!("/hosts/{}#commands", row.host_id)).into_response())
}

async fn delete_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let host = super::api::visible_host(&state, &caller, id, Permission::HostsDelete).await?;
    super::api::delete(&state, &caller, &host).await?;
    Ok(Redirect::to("/hosts").into_response())
}
