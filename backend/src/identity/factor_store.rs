//! Where second factors are kept: authenticator apps (TOTP), backup codes,
//! passkeys, pending two-step sign-ins and answered passkey challenges.
//! Plain reads and writes inside the caller's transaction; the rules
//! (who may, when, what is audited) are in `factors` and `passkeys`.

use crate::db::{Millis, Result, Row, Tx};
use crate::params;
use crate::secrets;

/// A user's authenticator app.
#[derive(Debug, Clone)]
pub struct TotpFactor {
    pub sealed_secret: Vec<u8>,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub last_step: Option<i64>,
}

pub fn totp_factor(tx: &mut Tx<'_>, user_id: i64) -> Result<Option<TotpFactor>> {
    tx.query_opt(
        "SELECT sealed_secret, created_at, confirmed_at, last_step FROM totp_factors WHERE user_id = $1",
        params![user_id],
        |row: &Row<'_>| {
            Ok(TotpFactor {
                sealed_secret: row.get(0)?,
                created_at: row.get(1)?,
                confirmed_at: row.get(2)?,
                last_step: row.get(3)?,
            })
        },
    )
}

/// Takes the user's row until the end of the transaction (PostgreSQL; a
/// SQLite write transaction holds the whole database): changes to one
/// user's factors that read "what else is left" serialize, so two removals
/// racing cannot both leave the other as the last factor.
pub fn lock_user(tx: &mut Tx<'_>, user_id: i64) -> Result<()> {
    let sql = format!("SELECT id FROM users WHERE id = $1{}", tx.for_update());
    tx.query_opt(&sql, params![user_id], |row: &Row<'_>| row.get::<i64>(0))?;
    Ok(())
}

/// Whether the user has a second factor: a confirmed authenticator app or
/// a passkey.
pub fn has_second_factor(tx: &mut Tx<'_>, user_id: i64) -> Result<bool> {
    Ok(
        totp_factor(tx, user_id)?.is_some_and(|f| f.confirmed_at.is_some())
            || count_passkeys(tx, user_id)? > 0,
    )
}

/// Starts (or restarts) an enrollment: an unconfirmed seed. Refused (false)
/// when a confirmed one exists: it is removed first, knowingly.
pub fn begin_totp(tx: &mut Tx<'_>, user_id: i64, sealed: &[u8], now: Millis) -> Result<bool> {
    if totp_factor(tx, user_id)?.is_some_and(|f| f.confirmed_at.is_some()) {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM totp_factors WHERE user_id = $1",
        params![user_id],
    )?;
    tx.execute(
        "INSERT INTO totp_factors (user_id, sealed_secret, created_at) VALUES ($1, $2, $3)",
        params![user_id, sealed, now],
    )?;
    Ok(true)
}

/// Records that the code of `step` was used; false when that step (or a
/// later one) was used already, so a code passes once even under a race.
pub fn use_step(
    tx: &mut Tx<'_>,
    user_id: i64,
    step: i64,
    confirm_at: Option<Millis>,
) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE totp_factors SET last_step = $2, confirmed_at = COALESCE(confirmed_at, $3)
         WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)",
        params![user_id, step, confirm_at],
    )? == 1)
}

pub fn replace_backup_codes(
    tx: &mut Tx<'_>,
    user_id: i64,
    codes: &[String],
    now: Millis,
) -> Result<()> {
    tx.execute(
        "DELETE FROM backup_codes WHERE user_id = $1",
        params![user_id],
    )?;
    for code in codes {
        tx.execute(
            "INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
            params![user_id, &secrets::hash_secret(code), now],
        )?;
    }
    Ok(())
}

/// Uses a backup code; false when it is not one of the user's unused ones.
pub fn use_backup_code(tx: &mut Tx<'_>, user_id: i64, code: &str, now: Millis) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE backup_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        params![user_id, &secrets::hash_secret(code), now],
    )? == 1)
}

pub fn unused_backup_codes(tx: &mut Tx<'_>, user_id: i64) -> Result<i64> {
    tx.query_one(
        "SELECT COUNT(*) FROM backup_codes WHERE user_id = $1 AND used_at IS NULL",
        params![user_id],
        |row: &Row<'_>| row.get(0),
    )
}

/// Removes every second factor of the user (authenticator app, passkeys,
/// backup codes). Returns whether there was one.
pub fn remove_factors(tx: &mut Tx<'_>, user_id: i64) -> Result<bool> {
    let totp = tx.execute(
        "DELETE FROM totp_factors WHERE user_id = $1",
        params![user_id],
    )?;
    let passkeys = tx.execute("DELETE FROM passkeys WHERE user_id = $1", params![user_id])?;
    tx.execute(
        "DELETE FROM backup_codes WHERE user_id = $1",
        params![user_id],
    )?;
    Ok(totp + passkeys > 0)
}

/// Removes the user's authenticator app; the backup codes go too when no
/// other factor is left. Returns whether there was one.
pub fn remove_totp(tx: &mut Tx<'_>, user_id: i64) -> Result<bool> {
    let removed = tx.execute(
        "DELETE FROM totp_factors WHERE user_id = $1",
        params![user_id],
    )?;
    forget_orphan_backup_codes(tx, user_id)?;
    Ok(removed > 0)
}

/// Backup codes stand in for a factor: without one they go.
fn forget_orphan_backup_codes(tx: &mut Tx<'_>, user_id: i64) -> Result<()> {
    if !has_second_factor(tx, user_id)? {
        tx.execute(
            "DELETE FROM backup_codes WHERE user_id = $1",
            params![user_id],
        )?;
    }
    Ok(())
}

/// A registered passkey (a WebAuthn credential).
#[derive(Debug, Clone, PartialEq)]
pub struct Passkey {
    pub id: String,
    pub user_id: i64,
    pub credential_id: Vec<u8>,
    /// The COSE key, as the authenticator gave it.
    pub public_key: Vec<u8>,
    pub algorithm: i64,
    pub sign_count: i64,
    pub name: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

const PASSKEY_COLUMNS: &str =
    "id, user_id, credential_id, public_key, algorithm, sign_count, name, created_at, last_used_at";

fn passkey_row(row: &Row<'_>) -> Result<Passkey> {
    Ok(Passkey {
        id: row.get(0)?,
        user_id: row.get(1)?,
        credential_id: row.get(2)?,
        public_key: row.get(3)?,
        algorithm: row.get(4)?,
        sign_count: row.get(5)?,
        name: row.get(6)?,
        created_at: row.get(7)?,
        last_used_at: row.get(8)?,
    })
}

/// The user's passkeys, oldest first.
pub fn passkeys_of(tx: &mut Tx<'_>, user_id: i64) -> Result<Vec<Passkey>> {
    tx.query(
        &format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        ),
        params![user_id],
        passkey_row,
    )
}

pub fn count_passkeys(tx: &mut Tx<'_>, user_id: i64) -> Result<i64> {
    tx.query_one(
        "SELECT COUNT(*) FROM passkeys WHERE user_id = $1",
        params![user_id],
        |row: &Row<'_>| row.get(0),
    )
}

pub fn passkey_by_credential(tx: &mut Tx<'_>, credential_id: &[u8]) -> Result<Option<Passkey>> {
    tx.query_opt(
        &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"),
        params![credential_id],
        passkey_row,
    )
}

/// Adds a passkey; false when that credential is registered already (to
/// anyone).
pub fn add_passkey(tx: &mut Tx<'_>, passkey: &Passkey) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO passkeys (id, user_id, credential_id, public_key, algorithm, sign_count, name, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (credential_id) DO NOTHING",
        params![
            &passkey.id,
            passkey.user_id,
            &passkey.credential_id,
            &passkey.public_key,
            passkey.algorithm,
            passkey.sign_count,
            &passkey.name,
            passkey.created_at
        ],
    )? == 1)
}

/// Records a use: the counter moves from `seen` to `count` only if nobody
/// moved it meanwhile (two racing uses of one assertion cannot both pass).
pub fn record_passkey_use(
    tx: &mut Tx<'_>,
    id: &str,
    seen: i64,
    count: i64,
    now: Millis,
) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE passkeys SET sign_count = $3, last_used_at = $4 WHERE id = $1 AND sign_count = $2",
        params![id, seen, count, now],
    )? == 1)
}

/// Removes one of the user's passkeys (and the backup codes when no factor
/// is left); false when the user has no such passkey.
pub fn remove_passkey(tx: &mut Tx<'_>, user_id: i64, id: &str) -> Result<bool> {
    let removed = tx.execute(
        "DELETE FROM passkeys WHERE user_id = $1 AND id = $2",
        params![user_id, id],
    )?;
    forget_orphan_backup_codes(tx, user_id)?;
    Ok(removed > 0)
}

/// Removes all the user's passkeys (and the backup codes when no factor is
/// left); returns how many there were.
pub fn remove_passkeys(tx: &mut Tx<'_>, user_id: i64) -> Result<u64> {
    let removed = tx.execute("DELETE FROM passkeys WHERE user_id = $1", params![user_id])?;
    forget_orphan_backup_codes(tx, user_id)?;
    Ok(removed)
}

/// Records that a passkey challenge was answered; false when it was
/// answered before (a replay).
pub fn use_passkey_challenge(
    tx: &mut Tx<'_>,
    challenge: &[u8],
    expires_at: Millis,
) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO passkey_challenges_used (challenge_hash, expires_at) VALUES ($1, $2)
         ON CONFLICT (challenge_hash) DO NOTHING",
        params![
            ring::digest::digest(&ring::digest::SHA256, challenge).as_ref(),
            expires_at
        ],
    )? == 1)
}

pub struct Challenge {
    pub user_id: i64,
    pub failures: i64,
}

pub fn challenge(tx: &mut Tx<'_>, id_hash: &[u8], now: Millis) -> Result<Option<Challenge>> {
    tx.query_opt(
        "SELECT user_id, failures FROM sign_in_challenges WHERE id_hash = $1 AND expires_at > $2",
        params![id_hash, now],
        |row: &Row<'_>| {
            Ok(Challenge {
                user_id: row.get(0)?,
                failures: row.get(1)?,
            })
        },
    )
}

/// Forgets pending sign-ins and answered passkey challenges that expired
/// (called by the throttle's sweep).
pub fn forget_expired_challenges(tx: &mut Tx<'_>, now: Millis) -> Result<u64> {
    let sign_ins = tx.execute(
        "DELETE FROM sign_in_challenges WHERE expires_at <= $1",
        params![now],
    )?;
    let answered = tx.execute(
        "DELETE FROM passkey_challenges_used WHERE expires_at <= $1",
        params![now],
    )?;
    Ok(sign_ins + answered)
}
