//! Queries of users, sessions and API tokens.

use super::{ApiToken, NewSession, NewUser, Role, Session, User};
use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::params;

const USER_COLUMNS: &str =
    "users.id, users.username, users.password_hash, users.role, users.created_at, users.disabled";

/// Reads the [`USER_COLUMNS`] starting at column `at`.
fn user_from_row(row: &Row<'_>, at: usize) -> Result<User> {
    let role: String = row.get(at + 3)?;
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        password_hash: row.get(at + 2)?,
        role: role
            .parse::<Role>()
            .map_err(|e| DbError::Corrupt(e.to_string()))?,
        created_at: row.get(at + 4)?,
        disabled: row.get(at + 5)?,
    })
}

pub fn create_user(tx: &mut Tx<'_>, user: &NewUser) -> Result<User> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            params![&user.username, &user.password_hash, user.role.as_str(), user.created_at],
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
        role: user.role,
        created_at: user.created_at,
        disabled: false,
    })
}

pub fn user_by_name(tx: &mut Tx<'_>, username: &str) -> Result<Option<User>> {
    tx.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"),
        params![username],
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

pub fn create_session(tx: &mut Tx<'_>, session: &NewSession) -> Result<()> {
    tx.execute(
        "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, user_agent)
         VALUES ($1, $2, $3, $3, $4, $5, $6)",
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

const SESSION_COLUMNS: &str = "sessions.id_hash, sessions.user_id, sessions.created_at, sessions.last_seen_at, \
                               sessions.expires_at, sessions.source_ip, sessions.user_agent";

fn session_from_row(row: &Row<'_>) -> Result<Session> {
    Ok(Session {
        id_hash: row.get(0)?,
        user_id: row.get(1)?,
        created_at: row.get(2)?,
        last_seen_at: row.get(3)?,
        expires_at: row.get(4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
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
        |row| Ok((session_from_row(row)?, user_from_row(row, 7)?)),
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
    tx.execute(
        "INSERT INTO api_tokens (id, name, secret_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)",
        params![&token.id, &token.name, &token.secret_hash, token.created_at, token.revoked_at],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("api token {:?}", token.id),
        },
        e => e,
    })?;
    Ok(())
}

pub fn api_token(tx: &mut Tx<'_>, id: &str) -> Result<Option<ApiToken>> {
    tx.query_opt(
        "SELECT id, name, secret_hash, created_at, revoked_at FROM api_tokens WHERE id = $1",
        params![id],
        |row| {
            Ok(ApiToken {
                id: row.get(0)?,
                name: row.get(1)?,
                secret_hash: row.get(2)?,
                created_at: row.get(3)?,
                revoked_at: row.get(4)?,
            })
        },
    )
}
