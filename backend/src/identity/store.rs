//! Queries of users, sessions and API tokens.

use super::{ApiToken, NewSession, NewUser, Session, User};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::params;

const USER_COLUMNS: &str = "users.id, users.username, users.password_hash, users.created_at, users.disabled, \
     users.external_provider, users.external_subject, users.must_change_password, users.password_changed_at";

/// Reads the [`USER_COLUMNS`] starting at column `at`.
fn user_from_row(row: &Row<'_>, at: usize) -> Result<User> {
    let provider: Option<String> = row.get(at + 5)?;
    let subject: Option<String> = row.get(at + 6)?;
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        password_hash: row.get(at + 2)?,
        created_at: row.get(at + 3)?,
        disabled: row.get(at + 4)?,
        external: provider.zip(subject),
        must_change_password: row.get(at + 7)?,
        password_changed_at: row.get(at + 8)?,
    })
}

pub fn create_user(tx: &mut Tx<'_>, user: &NewUser) -> Result<User> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
            params![&user.username, &user.password_hash, user.created_at],
            |row| row.get(0),
        )
        .map_err(|e| match e {
            DbError::Conflict { .. } => DbError::Conflict {
                what: format!("user {:?}", user.username),
            },
            e => e,
        })?;
    Ok(User {
        id,
        username: user.username.clone(),
        password_hash: user.password_hash.clone(),
        created_at: user.created_at,
        disabled: false,
        external: None,
        must_change_password: false,
        password_changed_at: None,
    })
}

pub fn user_by_name(tx: &mut Tx<'_>, username: &str) -> Result<Option<User>> {
    tx.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"),
        params![username],
        |row| user_from_row(row, 0),
    )
}

pub fn user_by_id(tx: &mut Tx<'_>, id: i64) -> Result<Option<User>> {
    tx.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
        params![id],
        |row| user_from_row(row, 0),
    )
}

pub fn list_users(tx: &mut Tx<'_>) -> Result<Vec<User>> {
    tx.query(
        &format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"),
        params![],
        |row| user_from_row(row, 0),
    )
}

/// Disables or enables a user; disabling ends their sessions. False when
/// there is no such user.
pub fn set_disabled(tx: &mut Tx<'_>, id: i64, disabled: bool) -> Result<bool> {
    let changed = tx.execute(
        "UPDATE users SET disabled = $2 WHERE id = $1",
        params![id, disabled],
    )?;
    if disabled {
        tx.execute("DELETE FROM sessions WHERE user_id = $1", params![id])?;
    }
    Ok(changed > 0)
}

/// Deletes a user; their sessions, role assignments and API tokens go with
/// them. The audit trail keeps their name. False when there is no such user.
pub fn delete_user(tx: &mut Tx<'_>, id: i64) -> Result<bool> {
    Ok(tx.execute("DELETE FROM users WHERE id = $1", params![id])? > 0)
}

/// How many enabled users hold the admin role for everything.
pub fn enabled_global_admins(tx: &mut Tx<'_>) -> Result<u64> {
    tx.query_one(
        "SELECT COUNT(DISTINCT users.id) FROM users JOIN role_assignments a ON a.user_id = users.id
         WHERE a.role_id = 'admin' AND a.host_group_id IS NULL AND NOT users.disabled",
        params![],
        |row| row.get(0),
    )
}

/// Sets a user's password. `chosen_by_user`: they chose it (else someone
/// else set it, and they must choose their own at the next sign-in). The
/// old hash goes to the history, which keeps at most `keep` entries.
pub fn set_password(
    tx: &mut Tx<'_>,
    user_id: i64,
    password_hash: &str,
    chosen_by_user: bool,
    keep: u32,
    now: Millis,
) -> Result<bool> {
    let old: Option<String> = tx.query_opt(
        "SELECT password_hash FROM users WHERE id = $1",
        params![user_id],
        |row| row.get(0),
    )?;
    let Some(old) = old else {
        return Ok(false);
    };
    if keep > 0 {
        tx.execute(
            "INSERT INTO password_history (user_id, password_hash, changed_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, changed_at) DO NOTHING",
            params![user_id, &old, now],
        )?;
        tx.execute(
            "DELETE FROM password_history WHERE user_id = $1 AND changed_at NOT IN
             (SELECT changed_at FROM password_history WHERE user_id = $1 ORDER BY changed_at DESC LIMIT $2)",
            params![user_id, keep as i64],
        )?;
    } else {
        tx.execute(
            "DELETE FROM password_history WHERE user_id = $1",
            params![user_id],
        )?;
    }
    tx.execute(
        "UPDATE users SET password_hash = $2, must_change_password = $3, password_changed_at = $4 WHERE id = $1",
        params![user_id, password_hash, !chosen_by_user, now],
    )?;
    Ok(true)
}

/// The hashes of a user's earlier passwords, newest first.
pub fn password_history(tx: &mut Tx<'_>, user_id: i64) -> Result<Vec<String>> {
    tx.query(
        "SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY changed_at DESC",
        params![user_id],
        |row| row.get(0),
    )
}

/// Makes the user choose a new password at the next sign-in (a password
/// someone else set: a new account, a reset).
pub fn require_password_change(tx: &mut Tx<'_>, user_id: i64, required: bool) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE users SET must_change_password = $2 WHERE id = $1",
        params![user_id, required],
    )? > 0)
}

/// Ends every session of a user but `keep` (the one changing the password).
pub fn end_sessions(tx: &mut Tx<'_>, user_id: i64, keep: Option<&[u8]>) -> Result<u64> {
    match keep {
        Some(keep) => tx.execute(
            "DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2",
            params![user_id, keep],
        ),
        None => tx.execute("DELETE FROM sessions WHERE user_id = $1", params![user_id]),
    }
}

pub fn create_session(tx: &mut Tx<'_>, session: &NewSession) -> Result<()> {
    tx.execute(
        "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, user_agent,
                               authenticated_at)
         VALUES ($1, $2, $3, $3, $4, $5, $6, $3)",
        params![
            &session.id_hash,
            session.user_id,
            session.created_at,
            session.expires_at,
            &session.source_ip,
            &session.user_agent
        ],
    )?;
    Ok(())
}

/// When session `id_hash` last proved its user, with the session locked
/// until the end of the transaction (PostgreSQL; SQLite's write lock holds
/// it anyway); `None` when it has ended (signed out, a reset). A privilege
/// change reads it first and is refused without it, so a change that races
/// with a reset cannot outlive it.
pub fn session_proof(tx: &mut Tx<'_>, id_hash: &[u8]) -> Result<Option<Millis>> {
    let sql = format!(
        "SELECT authenticated_at FROM sessions WHERE id_hash = $1{}",
        tx.for_update()
    );
    tx.query_opt(&sql, params![id_hash], |row: &Row<'_>| row.get(0))
}

/// Replaces session `old` by `new` (a new id at a privilege change); the
/// new one last proved its user at `authenticated_at` (carried over, or now
/// for a re-authentication).
pub fn replace_session(
    tx: &mut Tx<'_>,
    old: &[u8],
    new: &NewSession,
    authenticated_at: Millis,
) -> Result<()> {
    delete_session(tx, old)?;
    create_session(tx, new)?;
    tx.execute(
        "UPDATE sessions SET authenticated_at = $2 WHERE id_hash = $1",
        params![&new.id_hash, authenticated_at],
    )?;
    Ok(())
}

const SESSION_COLUMNS: &str = "sessions.id_hash, sessions.user_id, sessions.created_at, sessions.last_seen_at, \
                               sessions.expires_at, sessions.source_ip, sessions.user_agent, sessions.authenticated_at";

fn session_from_row(row: &Row<'_>) -> Result<Session> {
    Ok(Session {
        id_hash: row.get(0)?,
        user_id: row.get(1)?,
        created_at: row.get(2)?,
        last_seen_at: row.get(3)?,
        expires_at: row.get(4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
        authenticated_at: row.get(7)?,
    })
}

/// The session and its user, if the session exists, has not expired at
/// `now` and its user is not disabled.
pub fn session(tx: &mut Tx<'_>, id_hash: &[u8], now: Millis) -> Result<Option<(Session, User)>> {
    tx.query_opt(
        &format!(
            "SELECT {SESSION_COLUMNS}, {USER_COLUMNS}
             FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.id_hash = $1 AND sessions.expires_at > $2 AND NOT users.disabled"
        ),
        params![id_hash, now],
        |row| Ok((session_from_row(row)?, user_from_row(row, 8)?)),
    )
}

/// Marks activity and moves the idle expiry. An expired session stays
/// expired: touching it (a request that raced with the expiry) must not
/// bring it back.
pub fn touch_session(
    tx: &mut Tx<'_>,
    id_hash: &[u8],
    now: Millis,
    expires_at: Millis,
) -> Result<()> {
    tx.execute(
        "UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE id_hash = $1 AND expires_at > $2",
        params![id_hash, now, expires_at],
    )?;
    Ok(())
}

pub fn delete_session(tx: &mut Tx<'_>, id_hash: &[u8]) -> Result<()> {
    tx.execute("DELETE FROM sessions WHERE id_hash = $1", params![id_hash])?;
    Ok(())
}

pub fn create_api_token(tx: &mut Tx<'_>, token: &ApiToken) -> Result<()> {
    let permissions = to_json("token permissions", &token.permissions)?;
    tx.execute(
        "INSERT INTO api_tokens (id, name, secret_hash, created_at, revoked_at, user_id, role_id, permissions,
                                 host_group_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        params![
            &token.id,
            &token.name,
            &token.secret_hash,
            token.created_at,
            token.revoked_at,
            token.user_id,
            &token.role_id,
            &permissions,
            &token.host_group_id,
            token.expires_at
        ],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("api token {:?}", token.id),
        },
        e => e,
    })?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, name, secret_hash, created_at, revoked_at, user_id, role_id, permissions, host_group_id, \
     expires_at, last_used_at, last_used_ip";

fn token_from_row(row: &Row<'_>) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: row.get(2)?,
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
        user_id: row.get(5)?,
        role_id: row.get(6)?,
        permissions: json(row, 7)?,
        host_group_id: row.get(8)?,
        expires_at: row.get(9)?,
        last_used_at: row.get(10)?,
        last_used_ip: row.get(11)?,
    })
}

pub fn api_token(tx: &mut Tx<'_>, id: &str) -> Result<Option<ApiToken>> {
    tx.query_opt(
        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"),
        params![id],
        token_from_row,
    )
}

/// API tokens of `user_id`, or every token when `None`; newest first.
pub fn api_tokens(tx: &mut Tx<'_>, user_id: Option<i64>) -> Result<Vec<ApiToken>> {
    tx.query(
        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ($1 OR user_id = $2) ORDER BY created_at DESC, id"),
        params![user_id.is_none(), user_id.unwrap_or(0)],
        token_from_row,
    )
}

/// Revokes a token (the first revocation time is kept). False when there
/// is no such token.
pub fn revoke_api_token(tx: &mut Tx<'_>, id: &str, now: Millis) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        params![id, now],
    )? > 0)
}

/// Records that a token was used, and from where.
pub fn token_used(tx: &mut Tx<'_>, id: &str, now: Millis, ip: Option<&str>) -> Result<()> {
    tx.execute(
        "UPDATE api_tokens SET last_used_at = $2, last_used_ip = $3 WHERE id = $1",
        params![id, now, ip],
    )?;
    Ok(())
}

/// Every session of `user_id` (or of everyone), newest first.
pub fn sessions(
    tx: &mut Tx<'_>,
    user_id: Option<i64>,
    now: Millis,
) -> Result<Vec<(Session, User)>> {
    tx.query(
        &format!(
            "SELECT {SESSION_COLUMNS}, {USER_COLUMNS}
             FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.expires_at > $3 AND ($1 OR sessions.user_id = $2)
             ORDER BY sessions.last_seen_at DESC"
        ),
        params![user_id.is_none(), user_id.unwrap_or(0), now],
        |row| Ok((session_from_row(row)?, user_from_row(row, 8)?)),
    )
}
