//! Who the people and programs using the backend are: local users and their
//! roles, browser sessions, API tokens.
//!
//! - this file: the model;
//! - [`store`]: the queries;
//! - [`auth`]: reading a request's credentials (session cookie, bearer
//!   token); [`crate::access::authorize`] turns them into a caller;
//! - [`login`]: the sign-in and sign-out pages;
//! - [`cli`]: `user create`, `api-token create`.
//! - [`password`], [`throttle`]: the password policy, sign-in throttling;
//! - [`factors`], [`totp`], [`passkeys`], [`webauthn`], [`factor_store`]:
//!   second factors (authenticator app, backup codes, passkeys) and the
//!   two-step sign-in; [`reauth`]: proving it is you again.
//!
//! What a user may do is in [`crate::access`] (roles and their assignments).
//!
//! Invariants: no usable secret at rest (passwords argon2id, session ids and
//! API token secrets SHA-256 of 256 random bits); a disabled user has no
//! working session; one failed-login message whatever the reason.

use crate::db::Millis;

pub mod account_http;
pub mod auth;
pub mod cli;
pub mod factor_store;
pub mod factors;
pub mod login;
pub mod passkeys;
pub mod password;
pub mod reauth;
pub mod store;
pub mod throttle;
pub mod totp;

#[cfg(test)]
mod factor_tests;
#[cfg(test)]
mod passkey_tests;
#[cfg(test)]
mod sign_in_tests;
pub mod tokens_http;
pub mod users_http;
pub mod webauthn;
#[cfg(test)]
mod webauthn_tests;

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: Millis,
    pub disabled: bool,
    /// For a user of a single sign-on provider (later): the provider and
    /// the user's subject there.
    pub external: Option<(String, String)>,
    /// Someone else set the password: the user must choose their own
    /// before anything else.
    pub must_change_password: bool,
    /// When the password was last set (None: at creation).
    pub password_changed_at: Option<Millis>,
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
    /// When the user last proved who they are in this session (sign-in,
    /// re-authentication): dangerous operations need it to be recent.
    pub authenticated_at: Millis,
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
    /// The user who made it; its grants never exceed theirs. None for a
    /// token made on the command line of the backend's machine.
    pub user_id: Option<i64>,
    /// A role whose permissions the token carries.
    pub role_id: Option<String>,
    /// Permissions the token carries besides its role's.
    pub permissions: Vec<String>,
    /// The token reaches only this host group's hosts (and nothing global).
    pub host_group_id: Option<String>,
    pub expires_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    pub last_used_ip: Option<String>,
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
