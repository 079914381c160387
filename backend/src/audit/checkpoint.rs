//! Signed checkpoints of the audit chain, and retention behind a signed
//! boundary.
//!
//! The hash chain shows that rows were edited, removed or reordered, unless
//! whoever did it recomputed every hash after the change. Checkpoints close
//! that gap: every [`AuditConfig::checkpoint_interval_secs`] the backend
//! signs the chain's head `(id, hash)` with an Ed25519 key kept outside the
//! database ([`AuditKey`]). Someone who can write the database but does not
//! hold the key can rewrite the chain, but the rewritten rows no longer
//! match the signed hashes; cut rows off its end, but a checkpoint then
//! names a row that is gone; delete the checkpoints, but the backend's own
//! copy ([`append_to_log`]) and any exported copy still hold them.
//!
//! Retention deletes the oldest rows only behind a `prune` checkpoint that
//! signs the last deleted row's hash: the first remaining row chains from
//! it, so the trail still verifies (`verify`).
//!
//! What remains open, and is said so by `audit verify`: rows appended after
//! the newest checkpoint are vouched for by the chain alone, so the newest
//! interval can be cut off by someone who holds the database.
//!
//! [`AuditConfig::checkpoint_interval_secs`]: crate::config::AuditConfig

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::chain::GENESIS_HASH;
use crate::db::{DbError, Lock, Millis, Result, Row, Tx};
use crate::params;
use crate::pki::PkiError;

/// Why a checkpoint exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The chain up to `audit_id` ends in `audit_hash`.
    Head,
    /// The rows up to `audit_id` were pruned; the next one chains from
    /// `audit_hash`.
    Prune,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Head => "head",
            Kind::Prune => "prune",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> std::result::Result<Kind, crate::UnknownName> {
        match s {
            "head" => Ok(Kind::Head),
            "prune" => Ok(Kind::Prune),
            _ => Err(crate::UnknownName::new("checkpoint kind", s)),
        }
    }
}

/// One signed statement about the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub id: i64,
    pub kind: Kind,
    pub audit_id: i64,
    pub audit_hash: String,
    pub at: Millis,
    /// Which key signed it: [`PublicKey::key_id`].
    pub key_id: String,
    /// Hex Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: every field but the row id and the key, in a form
    /// no two different checkpoints share.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "palisade audit checkpoint v1\nkind={}\naudit_id={}\naudit_hash={}\nat={}\n",
            self.kind.as_str(),
            self.audit_id,
            self.audit_hash,
            self.at
        )
        .into_bytes()
    }
}

/// The checkpoint signing key. Its file is PKCS#8, mode 0600, created on
/// first use; its directory 0700.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    /// Keys the digest of unknown sign-in names ([`AuditKey::name_digest`]).
    name_key: ring::hmac::Key,
    /// Seals secrets the backend must read back (TOTP seeds), so that the
    /// database alone does not yield them ([`AuditKey::seal`]).
    seal_key: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// Loads the key at `path`, creating it (and its directory) if missing.
    pub fn load_or_create(path: &Path) -> std::result::Result<AuditKey, PkiError> {
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| PkiError::Io {
                        action: "create",
                        path: dir.to_owned(),
                        source,
                    })?;
            }
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| PkiError::Random)?;
            crate::pki::write_file(path, pkcs8.as_ref(), 0o600)?;
            tracing::info!(path = %path.display(), "created the audit checkpoint key");
        }
        let bytes = std::fs::read(path).map_err(|source| PkiError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        AuditKey::from_pkcs8(&bytes).map_err(|reason| PkiError::Invalid {
            what: "audit checkpoint key",
            path: path.to_owned(),
            reason,
        })
    }

    /// A key that lives only in memory (tests, tools).
    pub fn ephemeral() -> std::result::Result<AuditKey, PkiError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| PkiError::Random)?;
        AuditKey::from_pkcs8(pkcs8.as_ref()).map_err(PkiError::Generate)
    }

    fn from_pkcs8(bytes: &[u8]) -> std::result::Result<AuditKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes).map_err(|e| e.to_string())?;
        // A second secret derived from the first, for a different purpose.
        let derived = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"palisade audit name digest v1\0".as_slice(), bytes].concat(),
        );
        let sealing = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"palisade factor seal v1\0".as_slice(), bytes].concat(),
        );
        let seal_key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, sealing.as_ref())
            .map_err(|_| "cannot derive the sealing key".to_owned())?;
        Ok(AuditKey {
            pair,
            name_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()),
            seal_key: ring::aead::LessSafeKey::new(seal_key),
        })
    }

    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// Signs a statement about the chain; `id` is the checkpoint's row id.
    pub fn sign(
        &self,
        id: i64,
        kind: Kind,
        audit_id: i64,
        audit_hash: &str,
        at: Millis,
    ) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            id,
            kind,
            audit_id,
            audit_hash: audit_hash.to_owned(),
            at,
            key_id: self.public().key_id(),
            signature: String::new(),
        };
        checkpoint.signature = hex::encode(self.pair.sign(&checkpoint.message()).as_ref());
        checkpoint
    }

    /// `plaintext` encrypted and authenticated (AES-256-GCM, random nonce
    /// first) under a key derived from the key file, bound to `context`
    /// (for example the owner's id): [`AuditKey::open`] with another
    /// context fails.
    pub fn seal(
        &self,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        ring::rand::SystemRandom::new().fill(&mut nonce)?;
        let mut out = plaintext.to_vec();
        self.seal_key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(context),
            &mut out,
        )?;
        Ok([nonce.as_slice(), &out].concat())
    }

    /// What [`AuditKey::seal`] sealed with the same `context`, or `None`
    /// when the bytes were altered, sealed under another key or context.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < ring::aead::NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .seal_key
            .open_in_place(nonce, ring::aead::Aad::from(context), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }

    /// A keyed digest of a sign-in name that matches no account: people
    /// type passwords into the name field, so the name itself is never
    /// stored, but repeated attempts with the same name still correlate.
    pub fn name_digest(&self, name: &str) -> String {
        let tag = ring::hmac::sign(&self.name_key, name.as_bytes());
        hex::encode(&tag.as_ref()[..16])
    }
}

/// A checkpoint key's public half: what verifies checkpoints, away from
/// the backend too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// 32 hex digits of SHA-256 of the key: names it in checkpoints.
    pub fn key_id(&self) -> String {
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, &self.0).as_ref()[..16])
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> std::result::Result<PublicKey, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes (64 hex digits)".to_owned())?;
        Ok(PublicKey(key))
    }

    /// Whether this key signed `checkpoint` as it stands.
    pub fn verifies(&self, checkpoint: &Checkpoint) -> bool {
        let Ok(signature) = hex::decode(&checkpoint.signature) else {
            return false;
        };
        checkpoint.key_id == self.key_id()
            && UnparsedPublicKey::new(&ED25519, self.0)
                .verify(&checkpoint.message(), &signature)
                .is_ok()
    }
}

const COLUMNS: &str = "id, kind, audit_id, audit_hash, at, key_id, signature";

fn from_row(row: &Row<'_>) -> Result<Checkpoint> {
    let kind: String = row.get(1)?;
    Ok(Checkpoint {
        id: row.get(0)?,
        kind: kind
            .parse()
            .map_err(|e: crate::UnknownName| DbError::Corrupt(e.to_string()))?,
        audit_id: row.get(2)?,
        audit_hash: row.get(3)?,
        at: row.get(4)?,
        key_id: row.get(5)?,
        signature: row.get(6)?,
    })
}

/// Every checkpoint, oldest first.
pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Checkpoint>> {
    tx.query(
        &format!("SELECT {COLUMNS} FROM audit_checkpoints ORDER BY id"),
        params![],
        from_row,
    )
}

/// The newest checkpoint, if any.
pub fn latest(tx: &mut Tx<'_>) -> Result<Option<Checkpoint>> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"),
        params![],
        from_row,
    )
}

/// Stores a checkpoint as it is (copying a database).
pub fn insert(tx: &mut Tx<'_>, c: &Checkpoint) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO audit_checkpoints ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        params![
            c.id,
            c.kind.as_str(),
            c.audit_id,
            &c.audit_hash,
            c.at,
            &c.key_id,
            &c.signature
        ],
    )?;
    Ok(())
}

fn next_id(tx: &mut Tx<'_>) -> Result<i64> {
    let max: Option<i64> =
        tx.query_one("SELECT MAX(id) FROM audit_checkpoints", params![], |row| {
            row.get(0)
        })?;
    Ok(max.unwrap_or(0) + 1)
}

fn head(tx: &mut Tx<'_>) -> Result<Option<(i64, String)>> {
    tx.query_opt(
        "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
        params![],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

/// Signs the chain's head if a row was appended since the last checkpoint.
/// Holds the chain's lock, so the head cannot move meanwhile.
pub fn sign_head(tx: &mut Tx<'_>, key: &AuditKey, now: Millis) -> Result<Option<Checkpoint>> {
    tx.lock(Lock::AuditChain)?;
    let Some((audit_id, hash)) = head(tx)? else {
        return Ok(None);
    };
    if latest(tx)?.is_some_and(|c| c.audit_id >= audit_id) {
        return Ok(None);
    }
    let checkpoint = key.sign(next_id(tx)?, Kind::Head, audit_id, &hash, now);
    insert(tx, &checkpoint)?;
    Ok(Some(checkpoint))
}

/// The signed boundary retention left, if any: `(last pruned id, its
/// hash)`. Not verified here: [`super::verify`] checks the signature.
pub fn boundary(tx: &mut Tx<'_>) -> Result<Option<Checkpoint>> {
    tx.query_opt(
        &format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE kind = 'prune' ORDER BY audit_id DESC LIMIT 1"
        ),
        params![],
        from_row,
    )
}

/// What one pruning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub boundary: Checkpoint,
    pub rows: u64,
}

/// Rows deleted per statement, so a first pruning of years of events does
/// not hold one huge transaction (PostgreSQL) or journal (SQLite).
const PRUNE_BATCH: i64 = 10_000;

/// Deletes the events older than `cutoff` behind a signed boundary. The
/// boundary is written first and every batch after it commits on its own:
/// an interrupted pruning leaves rows behind the boundary, which the
/// verification skips and the next pruning deletes. The head is never
/// pruned (the `audit.pruned` event that follows chains from it anyway).
pub fn prune(
    db: &crate::db::Db,
    key: &AuditKey,
    cutoff: Millis,
    now: Millis,
) -> Result<Option<Pruned>> {
    let boundary = db.write_blocking("audit prune: boundary", |tx| {
        tx.lock(Lock::AuditChain)?;
        let last_old: Option<(i64, String)> = tx.query_opt(
            "SELECT id, hash FROM audit_log WHERE at < $1 AND id < (SELECT MAX(id) FROM audit_log)
             ORDER BY id DESC LIMIT 1",
            params![cutoff],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let Some((audit_id, hash)) = last_old else {
            return Ok(None);
        };
        if boundary(tx)?.is_some_and(|b| b.audit_id >= audit_id) {
            return Ok(None);
        }
        let checkpoint = key.sign(next_id(tx)?, Kind::Prune, audit_id, &hash, now);
        insert(tx, &checkpoint)?;
        Ok(Some(checkpoint))
    })?;
    let Some(boundary) = boundary else {
        return Ok(None);
    };
    let mut rows = 0u64;
    loop {
        let up_to = boundary.audit_id;
        let deleted = db.write_blocking("audit prune: rows", move |tx| {
            let first: Option<i64> =
                tx.query_one("SELECT MIN(id) FROM audit_log", params![], |row| row.get(0))?;
            let Some(first) = first.filter(|f| *f <= up_to) else {
                return Ok(0);
            };
            let last = first.saturating_add(PRUNE_BATCH - 1).min(up_to);
            tx.execute(
                "DELETE FROM audit_log WHERE id >= $1 AND id <= $2",
                params![first, last],
            )
        })?;
        if deleted == 0 {
            break;
        }
        rows += deleted;
    }
    // Checkpoints of pruned rows vouch for nothing any more.
    let up_to = boundary.audit_id;
    db.write_blocking("audit prune: old checkpoints", move |tx| {
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE audit_id <= $1 AND kind = 'head'",
            params![up_to],
        )
    })?;
    Ok(Some(Pruned { boundary, rows }))
}

/// Appends checkpoints to the backend's own copy, one JSON object a line,
/// synced before returning.
pub fn append_to_log(path: &Path, checkpoints: &[Checkpoint]) -> std::io::Result<()> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut text = String::new();
    for c in checkpoints {
        text.push_str(&serde_json::to_string(c).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// Reads checkpoints written one JSON object a line (the backend's copy,
/// an export). Blank lines are skipped; anything else that is not a
/// checkpoint is an error naming its line.
pub fn parse_lines(text: &str) -> std::result::Result<Vec<Checkpoint>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| format!("line {}: not a checkpoint: {e}", n + 1))
        })
        .collect()
}

/// The hash the first row after `boundary` chains from (the genesis hash
/// without one).
pub fn chain_start(boundary: Option<&Checkpoint>) -> (i64, String) {
    boundary.map_or_else(
        || (0, GENESIS_HASH.to_owned()),
        |b| (b.audit_id, b.audit_hash.clone()),
    )
}

/// Signs the head every `interval` and prunes by `retention_days` once an
/// hour, for as long as the backend runs. Errors are logged and retried.
pub async fn run(state: crate::state::AppState) {
    let config = state.config.audit.clone();
    let log_path = state.config.audit_checkpoint_log();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(
        config.checkpoint_interval_secs,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<Millis> = None;
    loop {
        tick.tick().await;
        let now = crate::now_millis();
        if config.retention_days > 0 && last_prune.is_none_or(|at| now - at >= 3_600_000) {
            last_prune = Some(now);
            let cutoff = now - i64::from(config.retention_days) * 86_400_000;
            let (db, key) = (state.db.clone(), state.audit_key.clone());
            match tokio::task::spawn_blocking(move || prune(&db, &key, cutoff, now)).await {
                Ok(Ok(Some(pruned))) => {
                    tracing::info!(
                        rows = pruned.rows,
                        up_to = pruned.boundary.audit_id,
                        "audit retention"
                    );
                    if let Err(e) = append_to_log(&log_path, std::slice::from_ref(&pruned.boundary))
                    {
                        tracing::warn!(error = %e, "cannot keep a copy of the audit boundary");
                    }
                    let event = super::NewAuditEvent::new(
                        now,
                        super::Actor::System,
                        super::Action::AuditPruned,
                        super::Outcome::Success,
                    )
                    .details(serde_json::json!({
                        "rows": pruned.rows,
                        "up_to_id": pruned.boundary.audit_id,
                        "retention_days": config.retention_days,
                    }));
                    if let Err(e) = state
                        .db
                        .write("audit pruned", move |tx| {
                            super::store::append(tx, &event).map(|_| ())
                        })
                        .await
                    {
                        tracing::warn!(error = %e, "cannot audit the pruning");
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "audit retention failed"),
                Err(e) => tracing::warn!(error = %e, "audit retention task failed"),
            }
        }
        let key = state.audit_key.clone();
        match state
            .db
            .write("audit checkpoint", move |tx| sign_head(tx, &key, now))
            .await
        {
            Ok(Some(checkpoint)) => {
                tracing::debug!(audit_id = checkpoint.audit_id, "audit checkpoint");
                if let Err(e) = append_to_log(&log_path, std::slice::from_ref(&checkpoint)) {
                    tracing::warn!(error = %e, "cannot keep a copy of the audit checkpoint");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit checkpoint failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_every_field() {
        let key = AuditKey::ephemeral().expect("key");
        let public = key.public();
        let c = key.sign(3, Kind::Head, 41, &"ab".repeat(32), 1_700_000_000_000);
        assert!(public.verifies(&c));
        let mut changed = vec![c.clone(); 4];
        changed[0].audit_id += 1;
        changed[1].audit_hash = "cd".repeat(32);
        changed[2].at += 1;
        changed[3].kind = Kind::Prune;
        for c in &changed {
            assert!(!public.verifies(c), "{c:?}");
        }
        // Another key's signature does not pass, even under this key's id.
        let other = AuditKey::ephemeral().expect("key");
        let mut forged = other.sign(3, Kind::Head, 41, &"ab".repeat(32), 1_700_000_000_000);
        forged.key_id = public.key_id();
        assert!(!public.verifies(&forged));
        let mut garbage = c;
        garbage.signature = "zz".into();
        assert!(!public.verifies(&garbage));
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let key = AuditKey::ephemeral().expect("key");
        let sealed = key.seal(b"seed", b"user:7").expect("seal");
        assert_eq!(
            key.open(&sealed, b"user:7").as_deref(),
            Some(b"seed".as_slice())
        );
        assert_eq!(key.open(&sealed, b"user:8"), None);
        let other = AuditKey::ephemeral().expect("key");
        assert_eq!(other.open(&sealed, b"user:7"), None);
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(key.open(&altered, b"user:7"), None);
        assert_eq!(key.open(&sealed[..5], b"user:7"), None);
        // A fresh nonce each time: the same secret never seals the same.
        assert_ne!(key.seal(b"seed", b"user:7").expect("seal"), sealed);
    }

    #[test]
    fn the_key_is_created_private_and_loads_again() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit/checkpoint.key");
        let a = AuditKey::load_or_create(&path).expect("create");
        let b = AuditKey::load_or_create(&path).expect("load");
        assert_eq!(a.public(), b.public());
        assert_eq!(a.name_digest("hunter2"), b.name_digest("hunter2"));
        assert_ne!(a.name_digest("hunter2"), a.name_digest("hunter3"));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().expect("dir"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        std::fs::write(&path, b"not a key").expect("write");
        let err = AuditKey::load_or_create(&path).expect_err("garbage");
        assert!(err.to_string().contains("audit checkpoint key"), "{err}");
    }

    #[test]
    fn checkpoint_lines_round_trip_and_bad_lines_are_named() {
        let key = AuditKey::ephemeral().expect("key");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.jsonl");
        let a = key.sign(1, Kind::Head, 10, &"11".repeat(32), 5);
        let b = key.sign(2, Kind::Prune, 4, &"22".repeat(32), 6);
        append_to_log(&path, std::slice::from_ref(&a)).expect("append");
        append_to_log(&path, std::slice::from_ref(&b)).expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(parse_lines(&text).expect("parse"), vec![a, b]);
        let err = parse_lines(&format!("{text}\n{{\"id\":1}}\n")).expect_err("bad");
        assert!(err.starts_with("line 4:"), "{err}");
    }

    #[test]
    fn public_keys_parse_from_hex_only_at_their_length() {
        let key = AuditKey::ephemeral().expect("key").public();
        assert_eq!(PublicKey::from_hex(&key.to_hex()), Ok(key));
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex("xyz").is_err());
    }
}
