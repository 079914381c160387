//! `palisade-backend audit ...`: verification and the checkpoints' export.

use std::path::PathBuf;

use anyhow::{Context, bail};

use super::checkpoint::{self, AuditKey, Checkpoint, PublicKey};
use super::verify::Report;
use crate::config::Config;
use crate::db::Db;

/// The public key: given, or the key file's (which is never created here:
/// verifying must not make a fresh key that vouches for nothing).
pub fn public_key(config: &Config) -> anyhow::Result<PublicKey> {
    let path = config.audit_key_path();
    if !path.exists() {
        bail!(
            "no audit checkpoint key at {}; the backend creates it on first start (or pass --public-key)",
            path.display()
        );
    }
    Ok(AuditKey::load_or_create(&path)?.public())
}

/// Reads a copy of checkpoints: one JSON object a line, or the API's
/// export (`{"checkpoints": [...]}`).
pub fn read_copy(path: &std::path::Path) -> anyhow::Result<Vec<Checkpoint>> {
    #[derive(serde::Deserialize)]
    struct Export {
        checkpoints: Vec<Checkpoint>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoints from {}", path.display()))?;
    if let Ok(export) = serde_json::from_str::<Export>(&text) {
        return Ok(export.checkpoints);
    }
    checkpoint::parse_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub async fn verify(
    db: &Db,
    config: &Config,
    public_key: Option<&str>,
    copies: &[PathBuf],
) -> anyhow::Result<Report> {
    let key = match public_key {
        Some(hex) => PublicKey::from_hex(hex).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?,
        None => self::public_key(config)?,
    };
    let mut sources = Vec::new();
    let own = config.audit_checkpoint_log();
    if own.exists() {
        sources.push((own.display().to_string(), read_copy(&own)?));
    }
    for path in copies {
        sources.push((path.display().to_string(), read_copy(path)?));
    }
    Ok(db
        .read("audit verify", move |tx| {
            super::verify::verify(tx, &key, &sources)
        })
        .await?)
}

/// Every checkpoint, one JSON object a line.
pub async fn checkpoints(db: &Db) -> anyhow::Result<String> {
    let list = db.read("audit checkpoints", checkpoint::list).await?;
    let mut out = String::new();
    for c in list {
        out.push_str(&serde_json::to_string(&c)?);
        out.push('\n');
    }
    Ok(out)
}
