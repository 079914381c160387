//! The Palisade backend.
//!
//! - [`config`]: the TOML configuration and the data directory layout.
//! - [`store`]: the storage interface and its SQLite implementation.
//! - [`secrets`]: random tokens, their one-way hashes, argon2id passwords.
//! - [`pki`]: the agent CA, the server certificate, the command-signing key.
//! - [`enroll`]: turning an enrollment request into a host and a certificate.
//! - [`commands`]: signed commands to agents: signing, storing, delivering.
//! - [`uplink`]: the QUIC endpoint agents connect to.
//! - [`registry`]: which agents are connected right now, and how.
//! - [`web`]: the web UI and the JSON API (axum, askama).
//! - [`wss`]: the same uplink over WebSocket, for agents whose UDP is blocked.
//! - [`server`]: `serve`: one port number, QUIC on UDP and HTTPS on TCP.
//! - [`cli`]: the administrative commands (`token`, `user`, `api-token`).

#![forbid(unsafe_code)]
// The web tests compare whole JSON documents written with `serde_json::json!`.
#![recursion_limit = "256"]

pub mod cli;
pub mod commands;
pub mod config;
pub mod enroll;
pub mod pki;
pub mod registry;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod uplink;
pub mod web;
pub mod wss;

/// Current Unix time in milliseconds. Logic takes time as an argument; only
/// the edges (request handlers, the uplink loop, the CLI) call this.
pub fn now_millis() -> store::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
