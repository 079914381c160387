//! The Palisade backend. One module per domain, each owning its model, its
//! queries, its HTTP handlers and its templates (see `ARCHITECTURE.md`):
//!
//! - [`identity`]: users, sessions, API tokens, sign-in;
//! - [`enrollment`]: enrollment tokens and `POST /api/v1/enroll`;
//! - [`hosts`]: hosts, storing what agents send, the host pages and API;
//! - [`metrics`]: samples, rollups, retention, partitions;
//! - [`commands`]: signed commands to agents;
//! - [`audit`]: the hash-chained audit trail;
//! - [`uplink`]: the agents' QUIC and WSS connections;
//!
//! and what they share:
//!
//! - [`db`]: the database layer (one transaction type, SQLite and PostgreSQL);
//! - [`web`]: the router assembled from each domain's routes, middleware,
//!   layout, errors, the OpenAPI document;
//! - [`pki`], [`secrets`]: the CA and signing key; random tokens and hashes;
//! - [`config`], [`state`], [`server`] (`serve`), [`cli`] (the commands).

#![forbid(unsafe_code)]
// The web tests compare whole JSON documents written with `serde_json::json!`.
#![recursion_limit = "256"]

pub mod access;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod enrollment;
pub mod hosts;
pub mod identity;
pub mod metrics;
pub mod packages;
pub mod patching;
pub mod pki;
pub mod secrets;
pub mod server;
pub mod state;
pub mod uplink;
pub mod web;

/// A name that is not one of the known ones (a role, an action, a status...),
/// typed by someone or read back from storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl UnknownName {
    pub fn new(kind: &'static str, value: &str) -> UnknownName {
        UnknownName {
            kind,
            value: value.chars().take(64).collect(),
        }
    }
}

/// Current Unix time in milliseconds. Logic takes time as an argument; only
/// the edges (request handlers, the uplink loop, the CLI) call this.
pub fn now_millis() -> db::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
