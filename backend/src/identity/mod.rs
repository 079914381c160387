//! Who the people and programs using the backend are: local users and their
//! roles, browser sessions, API tokens.
//!
//! - this file: the model;
//! - [`store`]: the queries;
//! - [`auth`]: reading a request's credentials (session cookie, bearer
//!   token) into a caller, for pages ([`auth::UiUser`]) and the API
//!   ([`auth::ApiCaller`]);
//! - [`login`]: the sign-in and sign-out pages;
//! - [`cli`]: `user create`, `api-token create`.
//!
//! Invariants: no usable secret at rest (passwords argon2id, session ids and
//! API token secrets SHA-256 of 256 random bits); a disabled user has no
//! working session; one failed-login message whatever the reason.

use crate::db::Millis;

pub mod auth;
pub mod cli;
pub mod login;
pub mod store;

/// Built-in roles. Custom roles and the permission model come later; these
/// names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Viewer];

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
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Self, crate::UnknownName> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "viewer" => Ok(Role::Viewer),
            other => Err(crate::UnknownName::new("role", other)),
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

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
    pub source_ip: String,
    pub user_agent: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Public id, the part before the dot in `<id>.<secret>`.
    pub id: String,
    pub name: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// User names: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(valid_username("admin"));
        assert!(valid_username("ops.team-1@example"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username(&"x".repeat(65)));
    }
}
