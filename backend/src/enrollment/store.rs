//! Enrollment token queries and the enrollment transaction.

use super::{EnrollRefusal, EnrollmentToken, token_check};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::hosts::{Host, NewHost};
use crate::params;

/// The rolling window of an enrollment token's daily limit.
const DAY_MS: Millis = 24 * 60 * 60 * 1000;

const TOKEN_COLUMNS: &str =
    "id, secret_hash, host_group_id, cidrs, max_per_day, expires_at, created_at, revoked_at";

fn token_from_row(row: &Row<'_>) -> Result<EnrollmentToken> {
    let cidrs: Vec<String> = json(row, 3)?;
    let cidrs = cidrs
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .map_err(|e| DbError::Corrupt(format!("enrollment token network {c:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EnrollmentToken {
        id: row.get(0)?,
        secret_hash: row.get(1)?,
        host_group_id: row.get(2)?,
        cidrs,
        max_per_day: row.get(4)?,
        expires_at: row.get(5)?,
        created_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

pub fn create_token(tx: &mut Tx<'_>, token: &EnrollmentToken) -> Result<()> {
    let cidrs: Vec<String> = token.cidrs.iter().map(ToString::to_string).collect();
    let cidrs = to_json("token networks", &cidrs)?;
    tx.execute(
        "INSERT INTO enrollment_tokens (id, secret_hash, host_group_id, cidrs, max_per_day, expires_at, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![
            &token.id,
            &token.secret_hash,
            &token.host_group_id,
            &cidrs,
            token.max_per_day,
            token.expires_at,
            token.created_at,
            token.revoked_at
        ],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("enrollment token {:?}", token.id),
        },
        e => e,
    })?;
    Ok(())
}

pub fn token(tx: &mut Tx<'_>, id: &str) -> Result<Option<EnrollmentToken>> {
    tx.query_opt(
        &format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = $1"),
        params![id],
        token_from_row,
    )
}

pub fn list_tokens(tx: &mut Tx<'_>) -> Result<Vec<EnrollmentToken>> {
    tx.query(
        &format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at, id"),
        params![],
        token_from_row,
    )
}

/// Returns false when no such token exists. The first revocation time is
/// kept; revoking again still reports that the token exists.
pub fn revoke_token(tx: &mut Tx<'_>, id: &str, now: Millis) -> Result<bool> {
    let changed = tx.execute(
        "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        params![id, now],
    )?;
    Ok(changed > 0)
}

/// Loads token `host.token_id` with its row locked, counts its enrollments
/// in the 24 hours before `now`, checks it, and if it passes creates the host
/// and records the use. An unknown token is `Ok(Err(UnknownToken))`.
pub fn enroll_host(
    tx: &mut Tx<'_>,
    now: Millis,
    host: &NewHost,
) -> Result<std::result::Result<Host, EnrollRefusal>> {
    // Locked (PostgreSQL) or under the write lock (SQLite) before the count
    // is read, so two enrollments cannot both see "one use left".
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = $1{}",
        tx.for_update()
    );
    let Some(token) = tx.query_opt(&sql, params![&host.token_id], token_from_row)? else {
        return Ok(Err(EnrollRefusal::UnknownToken));
    };
    let recent_uses: i64 = tx.query_one(
        "SELECT COUNT(*) FROM enrollment_uses WHERE token_id = $1 AND used_at > $2 AND used_at <= $3",
        params![&host.token_id, now.saturating_sub(DAY_MS), now],
        |row| row.get(0),
    )?;
    let recent_uses = u32::try_from(recent_uses).unwrap_or(u32::MAX);
    if let Err(refusal) = token_check(&token, recent_uses, now) {
        return Ok(Err(refusal));
    }
    crate::hosts::store::insert(tx, host)?;
    tx.execute(
        "INSERT INTO enrollment_uses (token_id, host_id, used_at) VALUES ($1, $2, $3)",
        params![&host.token_id, &host.id, now],
    )?;
    let created = crate::hosts::store::get(tx, &host.id)?.ok_or_else(|| DbError::NotFound {
        what: format!("host {:?} after insert", host.id),
    })?;
    Ok(Ok(created))
}
