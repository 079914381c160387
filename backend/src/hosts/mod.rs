//! Hosts: what an enrolled agent tells about its machine, and how it is
//! doing.
//!
//! - this file: the model ([`Host`], [`NewHost`], [`HostFacts`],
//!   [`AgentHealth`]) and the conversion from the wire;
//! - [`store`]: host queries (the list is one query, latest sample joined);
//! - [`ingest`]: storing an agent's records: idempotent on (host, seq), each
//!   kind applied by the domain that owns it, all in one transaction;
//! - [`api`]: `GET /api/v1/hosts`, `GET /api/v1/hosts/{id}`;
//! - [`ui`]: the host list and host pages.
//!
//! Invariants: a record is applied once (the ledger `host_records`, or the
//! sample's own key); facts and health describe "now", so only a newer
//! record replaces them; `stored_up_to_seq` only grows.

use palisade_proto::pb;
use serde::{Deserialize, Serialize};

use crate::db::Millis;
use crate::uplink::Transport;

pub mod api;
pub mod cli;
pub mod groups;
pub mod groups_http;
pub mod ingest;
pub mod store;
pub mod ui;

/// A host to create at enrollment.
#[derive(Debug, Clone)]
pub struct NewHost {
    /// The agent id (a UUID), also the CN of its certificate.
    pub id: String,
    pub hostname: String,
    /// The group it joins (its enrollment token's default group).
    pub host_group_id: Option<String>,
    pub enrolled_at: Millis,
    pub enrolled_from: String,
    pub token_id: String,
    /// Hex SHA-256 of the issued certificate (DER).
    pub cert_sha256: String,
}

/// A stored host.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub id: String,
    pub hostname: String,
    /// (id, name) of its host group.
    pub host_group: Option<(String, String)>,
    pub os_pretty_name: Option<String>,
    pub os_id: Option<String>,
    pub os_version_id: Option<String>,
    pub kernel_release: Option<String>,
    pub architecture: Option<String>,
    pub cpu_count: Option<u32>,
    pub memory_total_bytes: Option<u64>,
    pub enrolled_at: Millis,
    pub enrolled_from: String,
    pub cert_sha256: String,
    pub last_seen: Option<Millis>,
    /// The transport of the most recent connection.
    pub last_transport: Option<Transport>,
    /// Highest record sequence stored for this host (0: none).
    pub stored_up_to_seq: u64,
    /// Records the agent's spool dropped because it was full, as the agent
    /// last reported (0: none, or not reported yet).
    pub spool_dropped_total: u64,
    /// The latest agent health report.
    pub agent_health: Option<AgentHealth>,
    pub revoked_at: Option<Millis>,
}

/// What the agent reports about its machine (a facts record).
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    pub os_pretty_name: Option<String>,
    pub os_id: Option<String>,
    pub os_version_id: Option<String>,
    pub kernel_release: Option<String>,
    pub architecture: Option<String>,
    pub cpu_count: Option<u32>,
    pub memory_total_bytes: Option<u64>,
}

/// proto3 sends "unknown" as the empty string or zero.
fn known(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl From<&pb::HostFacts> for HostFacts {
    /// The decoder already refused a facts record without a hostname.
    fn from(f: &pb::HostFacts) -> HostFacts {
        HostFacts {
            hostname: f.hostname.clone(),
            os_pretty_name: known(&f.os_pretty_name),
            os_id: known(&f.os_id),
            os_version_id: known(&f.os_version_id),
            kernel_release: known(&f.kernel_release),
            architecture: known(&f.architecture),
            cpu_count: (f.cpu_count != 0).then_some(f.cpu_count),
            memory_total_bytes: (f.memory_total_bytes != 0).then_some(f.memory_total_bytes),
        }
    }
}

/// The agent's report on its own processes. Stored as JSON; read leniently
/// (an older or newer agent may have written fewer or more fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    #[serde(default)]
    pub children: Vec<ChildHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildHealth {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub sandbox: String,
}

impl From<&pb::AgentHealth> for AgentHealth {
    fn from(h: &pb::AgentHealth) -> AgentHealth {
        AgentHealth {
            children: h
                .children
                .iter()
                .map(|c| ChildHealth {
                    role: c.role.clone(),
                    pid: c.pid,
                    healthy: c.healthy,
                    restarts: c.restarts,
                    sandbox: c.sandbox.clone(),
                })
                .collect(),
        }
    }
}

impl Host {
    /// Its group's id, for permission checks.
    pub fn group_id(&self) -> Option<&str> {
        self.host_group.as_ref().map(|(id, _)| id.as_str())
    }
}

/// Longest host id looked up (ids are UUIDs; anything longer is unknown).
pub const MAX_HOST_ID: usize = 128;

/// Hosts per page when a request names no limit, and the most it may ask.
pub const DEFAULT_PAGE: u32 = 200;
pub const MAX_PAGE: u32 = 1000;

/// The opaque position after a host in (hostname, id) order, for the next
/// page's `after=`.
pub fn page_cursor(host: &Host) -> String {
    use base64::Engine as _;
    let json = serde_json::json!([host.hostname, host.id]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// The (hostname, id) a cursor names; `None` for anything else.
pub fn parse_page_cursor(cursor: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    if cursor.len() > 1024 {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let (name, id): (String, String) = serde_json::from_slice(&json).ok()?;
    Some((name, id))
}
