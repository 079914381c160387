//! The storage interface of the backend.
//!
//! One trait, [`Store`], with one implementation per database: [`sqlite`]
//! (embedded, the default) now, PostgreSQL next. Callers never see SQL or a
//! driver type. Rules every implementation keeps:
//!
//! - Timestamps are Unix milliseconds (`i64`, [`Millis`]); SQL uses only
//!   portable types (INTEGER/BIGINT, TEXT, BLOB/BYTEA, REAL/DOUBLE) and
//!   `INSERT ... ON CONFLICT DO NOTHING`, so the same statements run on both.
//! - Migrations are numbered files per dialect under `migrations/<dialect>/`,
//!   applied in order inside a transaction, recorded in `schema_migrations`.
//! - Secrets are stored only as one-way hashes: passwords as argon2id PHC
//!   strings, session ids and API/enrollment token secrets as SHA-256 of
//!   256-bit random values.
//! - Records from agents are stored idempotently on `(host_id, seq)`: storing
//!   the same record twice changes nothing.
//! - The audit log is append-only; each row carries the SHA-256 of the
//!   previous row's hash and its own content (a hash chain).

use async_trait::async_trait;
use palisade_proto::msg::Record;
use serde::Serialize;

pub mod sqlite;

/// Unix time in milliseconds.
pub type Millis = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("database error: {0}")]
    Database(String),
    #[error("migration {version} failed: {reason}")]
    Migration { version: u32, reason: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Built-in roles. Custom roles and the permission model come later; these
/// names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role {other:?} (admin, operator, auditor, viewer)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: Millis,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the cookie value.
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub source_ip: String,
    pub user_agent: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
    pub source_ip: String,
    pub user_agent: String,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Public id, the part before the dot in `<id>.<secret>`.
    pub id: String,
    pub name: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct EnrollmentToken {
    /// Public id, the part before the dot in `<id>.<secret>`.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// Host group new hosts join.
    pub host_group: Option<String>,
    /// Source networks allowed to enroll; empty means any.
    pub cidrs: Vec<ipnet::IpNet>,
    /// Enrollments allowed per rolling 24 hours; `None` means no limit.
    pub max_per_day: Option<u32>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// Why an enrollment token was not accepted. Checked inside the store's
/// transaction so that two concurrent enrollments cannot both pass the daily
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollRefusal {
    UnknownToken,
    RevokedToken,
    ExpiredToken,
    AddressNotAllowed,
    RateLimited,
}

/// A host to create at enrollment.
#[derive(Debug, Clone)]
pub struct NewHost {
    /// The agent id (a UUID), also the CN of its certificate.
    pub id: String,
    pub hostname: String,
    pub host_group: Option<String>,
    pub enrolled_at: Millis,
    pub enrolled_from: String,
    pub token_id: String,
    /// Hex SHA-256 of the issued certificate (DER).
    pub cert_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub id: String,
    pub hostname: String,
    pub host_group: Option<String>,
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
    /// "quic" or "wss": the transport of the most recent connection.
    pub last_transport: Option<String>,
    /// Highest record sequence stored for this host (0: none).
    pub stored_up_to_seq: u64,
    /// Records the agent's spool dropped because it was full, as the agent
    /// last reported (0: none, or not reported yet).
    pub spool_dropped_total: u64,
    /// The latest agent health report, as JSON (see `pb::AgentHealth`).
    pub agent_health: Option<serde_json::Value>,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesystemRow {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkRow {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One stored metrics sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsRow {
    pub seq: u64,
    pub collected_at: Millis,
    pub cpu_percent: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub load_1: f64,
    pub load_5: f64,
    pub load_15: f64,
    pub uptime_seconds: u64,
    pub process_count: u32,
    pub filesystems: Vec<FilesystemRow>,
    pub network: Vec<NetworkRow>,
}

#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: Millis,
    /// "user:<name>", "api-token:<id>", "agent:<id>", "cli" or "anonymous".
    pub actor: String,
    /// Dotted verb, e.g. "auth.login", "enrollment_token.create", "host.enroll".
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// "success", "failure" or "denied".
    pub outcome: String,
    /// Free-form JSON details; never a secret.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub details: serde_json::Value,
    /// Hex SHA-256 chaining this row to the previous one.
    pub hash: String,
}

/// Where a command stands. Stored as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Signed and stored, not handed to a connection yet.
    Pending,
    /// Queued on the agent's connection; no result yet.
    Delivered,
    Succeeded,
    Failed,
    /// Control refused it; nothing ran (the error says why).
    Rejected,
    /// Expired before it was ever delivered, so it never ran.
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Delivered => "delivered",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
        }
    }

    /// True once the agent's result is in.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::Rejected
        )
    }
}

impl std::str::FromStr for CommandStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pending" => Ok(CommandStatus::Pending),
            "delivered" => Ok(CommandStatus::Delivered),
            "succeeded" => Ok(CommandStatus::Succeeded),
            "failed" => Ok(CommandStatus::Failed),
            "rejected" => Ok(CommandStatus::Rejected),
            "expired" => Ok(CommandStatus::Expired),
            other => Err(format!("unknown command status {other:?}")),
        }
    }
}

/// A signed command to store, before anything was sent.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// A UUID, also the id inside the signed command.
    pub id: String,
    pub host_id: String,
    /// `ping`, `restart_service` or `refresh_inventory`.
    pub kind: String,
    /// The request as JSON, e.g. `{"type":"restart_service","unit":"nginx.service"}`.
    pub payload: serde_json::Value,
    /// `user:<name>` or `api-token:<id>`.
    pub requested_by: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub issued_at: Millis,
    pub expires_at: Millis,
    /// The encoded `Command`, exactly as signed.
    pub command_bytes: Vec<u8>,
    /// The Ed25519 signature over the context and `command_bytes`.
    pub signature: Vec<u8>,
}

/// A stored command and, once it arrived, its result.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    pub id: String,
    pub host_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub requested_by: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub issued_at: Millis,
    pub expires_at: Millis,
    pub command_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub status: CommandStatus,
    pub delivered_at: Option<Millis>,
    pub exit_code: Option<i32>,
    pub output: Option<String>,
    pub error: Option<String>,
    /// The agent's clock.
    pub started_at: Option<Millis>,
    /// The agent's clock.
    pub finished_at: Option<Millis>,
    /// The backend's clock when the result was stored.
    pub result_received_at: Option<Millis>,
}

/// The check applied to a token inside the enrollment transaction.
/// Arguments: the token, enrollments with it in the last 24 hours, now.
pub type TokenCheck = fn(&EnrollmentToken, u32, Millis) -> std::result::Result<(), EnrollRefusal>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Users and sessions
    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn user_by_name(&self, username: &str) -> Result<Option<User>>;
    async fn create_session(&self, session: NewSession) -> Result<()>;
    /// The session and its user, if the session exists and has not expired at `now`.
    async fn session(&self, id_hash: &[u8], now: Millis) -> Result<Option<(Session, User)>>;
    /// Marks activity and moves the idle expiry.
    async fn touch_session(&self, id_hash: &[u8], now: Millis, expires_at: Millis) -> Result<()>;
    async fn delete_session(&self, id_hash: &[u8]) -> Result<()>;

    // API tokens
    async fn create_api_token(&self, token: ApiToken) -> Result<()>;
    async fn api_token(&self, id: &str) -> Result<Option<ApiToken>>;

    // Enrollment tokens
    async fn create_enrollment_token(&self, token: EnrollmentToken) -> Result<()>;
    async fn enrollment_token(&self, id: &str) -> Result<Option<EnrollmentToken>>;
    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>>;
    /// Returns false when no such token exists (revoking twice is fine).
    async fn revoke_enrollment_token(&self, id: &str, now: Millis) -> Result<bool>;
    /// In one transaction: loads token `token_id`, counts its enrollments in
    /// the 24 hours before `now`, runs `check`, and if it passes creates the
    /// host and records the use. An unknown token is `Err(UnknownToken)`.
    async fn enroll_host(
        &self,
        token_id: &str,
        now: Millis,
        check: TokenCheck,
        host: NewHost,
    ) -> Result<std::result::Result<Host, EnrollRefusal>>;

    // Hosts and their data
    async fn host(&self, id: &str) -> Result<Option<Host>>;
    async fn list_hosts(&self) -> Result<Vec<Host>>;
    /// Records a connection (or activity) from the host's agent.
    async fn host_seen(&self, id: &str, now: Millis, transport: &str) -> Result<()>;
    /// Stores records idempotently on (host, seq) in one transaction and
    /// applies their content (facts update the host, metrics are appended,
    /// agent health replaces the previous report, a command result completes
    /// the host's command of that id if it has none yet; a result matching
    /// no command of this host is audited instead). Returns the host's
    /// stored-up-to sequence afterwards.
    async fn store_records(
        &self,
        host_id: &str,
        received_at: Millis,
        records: &[Record],
    ) -> Result<u64>;
    async fn latest_metrics(&self, host_id: &str) -> Result<Option<MetricsRow>>;
    /// Samples with `from <= collected_at < to`, oldest first, at most `limit`.
    async fn metrics_between(
        &self,
        host_id: &str,
        from: Millis,
        to: Millis,
        limit: u32,
    ) -> Result<Vec<MetricsRow>>;
    /// Every stored record sequence of a host, ascending (for audits of the no-loss guarantee).
    async fn record_seqs(&self, host_id: &str) -> Result<Vec<u64>>;

    // Audit
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent>;
    /// Newest first.
    async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>>;
    /// Recomputes the hash chain; `Ok(None)` if intact, else the id of the first bad row.
    async fn verify_audit_chain(&self) -> Result<Option<i64>>;

    /// Records the agent's count of records its spool dropped because it
    /// was full (sent in every hello).
    async fn set_spool_dropped(&self, host_id: &str, total: u64) -> Result<()>;

    // Commands

    /// Stores a new command (pending) and appends `audit` to the audit log
    /// in the same transaction: both or neither. Returns the stored row.
    async fn create_command(&self, command: NewCommand, audit: NewAuditEvent)
    -> Result<CommandRow>;
    async fn command(&self, id: &str) -> Result<Option<CommandRow>>;
    /// A host's commands, newest first, at most `limit`.
    async fn host_commands(&self, host_id: &str, limit: u32) -> Result<Vec<CommandRow>>;
    /// First marks the host's commands that were never delivered and have
    /// expired at `now` as expired; then returns the ones to (re)deliver:
    /// pending or delivered without a result (a delivery may have been lost
    /// with its connection; control never runs an id twice), unexpired at
    /// `now`, oldest first, at most `limit`.
    async fn commands_to_deliver(
        &self,
        host_id: &str,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<CommandRow>>;
    /// Records that the command was handed to its agent's connection: a
    /// pending command becomes delivered; the first delivery time is kept.
    async fn command_delivered(&self, id: &str, now: Millis) -> Result<()>;
}
