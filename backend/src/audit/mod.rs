//! The audit trail: who did what, to what, from where, and how it ended.
//!
//! - this file: the model ([`Actor`], [`Action`] with its [`Category`],
//!   [`Outcome`], [`NewAuditEvent`], [`AuditEvent`]);
//! - [`chain`]: the hash chain's canonical form and its verification, the
//!   same for every dialect;
//! - [`store`]: appending (inside the caller's transaction, so an action and
//!   its audit event commit together), listing, searching, walking the chain;
//! - [`checkpoint`]: the signing key kept outside the database, signed
//!   checkpoints of the chain's head, retention behind a signed boundary;
//! - [`verify`]: the chain checked against every checkpoint (`audit verify`);
//! - [`limits`]: what unauthenticated requests may add;
//! - [`http`]: the audit page, `GET /api/v1/audit` and its exports.
//!
//! Invariants: the log is append-only (triggers refuse UPDATE, and DELETE
//! of any row not behind a prune checkpoint);
//! every row's hash covers the previous row's hash and the row's own
//! canonical form, ids are consecutive from 1, so an edited, removed,
//! reordered or inserted row breaks the chain at or after that row; a detail
//! never holds a secret.

use serde::Serialize;

use crate::db::Millis;

pub mod chain;
pub mod checkpoint;
pub mod cli;
pub mod http;
pub mod limits;
pub mod store;
pub mod verify;

/// Who acted. Stored as text: `user:<name>`, `api-token:<id>`,
/// `agent:<host id>`, `cli`, `system` or `anonymous`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    User(String),
    ApiToken(String),
    Agent(String),
    /// The administrative command line on the backend machine.
    Cli,
    /// The backend itself (scheduled work).
    System,
    Anonymous,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::User(name) => write!(f, "user:{name}"),
            Actor::ApiToken(id) => write!(f, "api-token:{id}"),
            Actor::Agent(id) => write!(f, "agent:{id}"),
            Actor::Cli => f.write_str("cli"),
            Actor::System => f.write_str("system"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Actor, crate::UnknownName> {
        Ok(match s {
            "cli" => Actor::Cli,
            "system" => Actor::System,
            "anonymous" => Actor::Anonymous,
            _ => match s.split_once(':') {
                Some(("user", name)) => Actor::User(name.to_owned()),
                Some(("api-token", id)) => Actor::ApiToken(id.to_owned()),
                Some(("agent", id)) => Actor::Agent(id.to_owned()),
                _ => return Err(crate::UnknownName::new("audit actor", s)),
            },
        })
    }
}

/// What kind of event it is, for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Authentication,
    UserManagement,
    Configuration,
    ServiceOperation,
    FileOperation,
    SecurityEvent,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Authentication,
        Category::UserManagement,
        Category::Configuration,
        Category::ServiceOperation,
        Category::FileOperation,
        Category::SecurityEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Authentication => "authentication",
            Category::UserManagement => "user_management",
            Category::Configuration => "configuration",
            Category::ServiceOperation => "service_operation",
            Category::FileOperation => "file_operation",
            Category::SecurityEvent => "security_event",
        }
    }
}

macro_rules! actions {
    ($($variant:ident = $text:literal, $category:ident;)*) => {
        /// Every action the audit log records. Stored as the dotted text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($variant,)*
        }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $text,)*
                }
            }

            pub fn category(self) -> Category {
                match self {
                    $(Action::$variant => Category::$category,)*
                }
            }
        }

        impl std::str::FromStr for Action {
            type Err = crate::UnknownName;
            fn from_str(s: &str) -> Result<Action, crate::UnknownName> {
                match s {
                    $($text => Ok(Action::$variant),)*
                    other => Err(crate::UnknownName::new("audit action", other)),
                }
            }
        }
    };
}

actions! {
    AuthLogin = "auth.login", Authentication;
    AuthLogout = "auth.logout", Authentication;
    ApiTokenRejected = "auth.api_token", Authentication;
    AccessDenied = "access.denied", SecurityEvent;
    PasskeyCloneSuspected = "auth.passkey_clone_suspected", SecurityEvent;
    UserCreate = "user.create", UserManagement;
    UserDisable = "user.disable", UserManagement;
    UserEnable = "user.enable", UserManagement;
    UserDelete = "user.delete", UserManagement;
    UserUnlock = "user.unlock", UserManagement;
    PasswordChange = "user.password_change", Authentication;
    PasswordReset = "user.password_reset", UserManagement;
    SecondFactor = "auth.second_factor", Authentication;
    Reauthenticate = "auth.reauthenticate", Authentication;
    FactorEnroll = "user.factor_enroll", Authentication;
    FactorRemove = "user.factor_remove", Authentication;
    BackupCodesRegenerate = "user.backup_codes", Authentication;
    FactorReset = "user.factor_reset", UserManagement;
    RoleCreate = "role.create", UserManagement;
    RoleUpdate = "role.update", UserManagement;
    RoleDelete = "role.delete", UserManagement;
    RoleAssign = "role.assign", UserManagement;
    RoleUnassign = "role.unassign", UserManagement;
    SessionRevoke = "session.revoke", UserManagement;
    ApiTokenCreate = "api_token.create", UserManagement;
    ApiTokenRevoke = "api_token.revoke", UserManagement;
    EnrollmentTokenCreate = "enrollment_token.create", Configuration;
    EnrollmentTokenRevoke = "enrollment_token.revoke", Configuration;
    HostGroupCreate = "host_group.create", Configuration;
    HostGroupUpdate = "host_group.update", Configuration;
    HostGroupDelete = "host_group.delete", Configuration;
    HostEnroll = "host.enroll", Configuration;
    HostAssignGroup = "host.assign_group", Configuration;
    HostRevoke = "host.revoke", SecurityEvent;
    HostDelete = "host.delete", Configuration;
    AgentConnect = "agent.connect", ServiceOperation;
    AgentDisconnect = "agent.disconnect", ServiceOperation;
    AgentIdentityInUseTwice = "agent.identity_in_use_twice", SecurityEvent;
    CommandCreate = "command.create", ServiceOperation;
    CommandRefusedUnverified = "command.refused_unverified", SecurityEvent;
    CommandUnmatchedResult = "command.unmatched_result", SecurityEvent;
    PatchRunCreate = "patch_run.create", ServiceOperation;
    PatchRunApprove = "patch_run.approve", ServiceOperation;
    PatchRunCancel = "patch_run.cancel", ServiceOperation;
    PatchRunFinish = "patch_run.finish", ServiceOperation;
    PatchPolicyCreate = "patch_policy.create", Configuration;
    PatchPolicyUpdate = "patch_policy.update", Configuration;
    PatchPolicyDelete = "patch_policy.delete", Configuration;
    PatchRolloutStart = "patch_rollout.start", ServiceOperation;
    PatchRolloutCancel = "patch_rollout.cancel", ServiceOperation;
    AuditSuppressed = "audit.suppressed", SecurityEvent;
    AuditCheckpoint = "audit.checkpoint", Configuration;
    AuditPruned = "audit.pruned", Configuration;
    DataMigrated = "database.migrate_data", Configuration;
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by a check (permission, token, verification).
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Outcome, crate::UnknownName> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "denied" => Ok(Outcome::Denied),
            other => Err(crate::UnknownName::new("audit outcome", other)),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: Millis,
    pub actor: Actor,
    pub action: Action,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: Outcome,
    /// Free-form JSON details; never a secret.
    pub details: serde_json::Value,
}

impl NewAuditEvent {
    /// An event with no target, address or details yet.
    pub fn new(at: Millis, actor: Actor, action: Action, outcome: Outcome) -> NewAuditEvent {
        NewAuditEvent {
            at,
            actor,
            action,
            target: None,
            source_ip: None,
            user_agent: None,
            outcome,
            details: serde_json::json!({}),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the details; when both the present and the new details are
    /// objects, their keys are merged (the new ones win), so what
    /// [`crate::access::Caller::event`] recorded is kept.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        match (&mut self.details, details) {
            (serde_json::Value::Object(present), serde_json::Value::Object(new)) => {
                present.extend(new);
            }
            (slot, details) => *slot = details,
        }
        self
    }

    /// Where the request came from.
    pub fn from_client(mut self, source_ip: Option<String>, user_agent: Option<String>) -> Self {
        self.source_ip = source_ip;
        self.user_agent = user_agent;
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: Millis,
    pub actor: Actor,
    pub action: Action,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: Outcome,
    pub details: serde_json::Value,
    /// Hex SHA-256 chaining this row to the previous one.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_text() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(*action));
        }
        assert!("auth.nope".parse::<Action>().is_err());
    }

    #[test]
    fn actors_round_trip_through_their_text() {
        for actor in [
            Actor::User("alice".into()),
            Actor::ApiToken("0123".into()),
            Actor::Agent("h1".into()),
            Actor::Cli,
            Actor::System,
            Actor::Anonymous,
        ] {
            assert_eq!(actor.to_string().parse::<Actor>(), Ok(actor));
        }
        assert!("robot:x".parse::<Actor>().is_err());
    }
}
