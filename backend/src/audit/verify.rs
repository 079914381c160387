//! `audit verify`: the chain checked against the signed checkpoints, those
//! in the database and any copy kept elsewhere (the backend's own log, an
//! export).
//!
//! What each kind of tampering looks like here:
//! - an edited, inserted, removed or reordered row: the chain breaks there;
//! - the whole chain rewritten with fresh hashes: a row no longer has the
//!   hash a checkpoint signed;
//! - rows cut off the end: a checkpoint names a row that is not there (rows
//!   after the newest checkpoint are only as safe as the chain: reported as
//!   the unsigned tail);
//! - the oldest rows deleted: the first row does not follow the signed
//!   retention boundary (or the genesis);
//! - a checkpoint forged or edited: its signature fails; one deleted from
//!   the database: a copy still holds it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::checkpoint::{self, Checkpoint, Kind, PublicKey};
use super::store;
use crate::db::{Result, Tx};

/// One thing that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Row `id` does not chain from the row before it.
    ChainBroken { id: i64 },
    /// The first row is not the one after the signed boundary (or row 1):
    /// rows were deleted from the start.
    StartMissing { first_id: i64, expected_id: i64 },
    /// Row `id`'s hash is not the one checkpoint `checkpoint` signed: the
    /// chain was rewritten.
    Rewritten { id: i64, checkpoint: i64 },
    /// Checkpoint `checkpoint` vouches for row `audit_id`, which is gone.
    Truncated {
        checkpoint: i64,
        audit_id: i64,
        last_id: Option<i64>,
    },
    /// A checkpoint whose signature does not verify with the key.
    BadSignature { checkpoint: i64, source: String },
    /// A checkpoint a copy holds is not in the database (or differs there).
    MissingCheckpoint { checkpoint: i64, source: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::ChainBroken { id } => write!(
                f,
                "row {id} does not chain from the row before it: a row at or before it was edited, inserted, removed or reordered"
            ),
            Problem::StartMissing {
                first_id,
                expected_id,
            } => write!(
                f,
                "the trail starts at row {first_id}, not {expected_id}: rows were deleted from its start without a signed retention boundary"
            ),
            Problem::Rewritten { id, checkpoint } => write!(
                f,
                "row {id} is not the row checkpoint {checkpoint} signed: the chain was rewritten"
            ),
            Problem::Truncated {
                checkpoint,
                audit_id,
                last_id,
            } => match last_id {
                Some(last) => write!(
                    f,
                    "checkpoint {checkpoint} vouches for row {audit_id} but the trail ends at row {last}: rows were cut off its end"
                ),
                None => write!(
                    f,
                    "checkpoint {checkpoint} vouches for row {audit_id} but the trail is empty"
                ),
            },
            Problem::BadSignature { checkpoint, source } => write!(
                f,
                "checkpoint {checkpoint} ({source}) is not signed by this key: forged or edited"
            ),
            Problem::MissingCheckpoint { checkpoint, source } => write!(
                f,
                "checkpoint {checkpoint} of {source} is missing from the database or differs there"
            ),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Rows checked (those behind the retention boundary are not).
    pub rows: u64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// The last row retention removed, vouched for by a signature.
    pub boundary: Option<i64>,
    /// Checkpoints whose signature verified, from every source.
    pub valid_checkpoints: u64,
    /// The newest row a valid checkpoint vouches for.
    pub signed_up_to: Option<i64>,
    /// Rows after `signed_up_to`: only the chain vouches for them.
    pub unsigned_tail: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.first_id, self.last_id) {
            (Some(first), Some(last)) => {
                writeln!(f, "{} rows checked, ids {first} to {last}", self.rows)?
            }
            _ => writeln!(f, "the trail holds no rows")?,
        }
        if let Some(b) = self.boundary {
            writeln!(f, "rows up to {b} were pruned behind a signed boundary")?;
        }
        writeln!(f, "{} valid checkpoints", self.valid_checkpoints)?;
        match self.signed_up_to {
            Some(id) => writeln!(
                f,
                "signed up to row {id}; {} newer rows are vouched for by the chain alone",
                self.unsigned_tail
            )?,
            None => writeln!(f, "no checkpoint vouches for this trail yet")?,
        }
        if self.problems.is_empty() {
            writeln!(f, "the audit trail verifies")
        } else {
            writeln!(f, "THE AUDIT TRAIL HAS BEEN TAMPERED WITH:")?;
            for p in &self.problems {
                writeln!(f, "- {p}")?;
            }
            Ok(())
        }
    }
}

/// Verifies the trail in `tx` (one snapshot) with `key`, against the
/// database's checkpoints and `copies` (`(source name, checkpoints)`).
pub fn verify(
    tx: &mut Tx<'_>,
    key: &PublicKey,
    copies: &[(String, Vec<Checkpoint>)],
) -> Result<Report> {
    let mut report = Report::default();
    let stored = checkpoint::list(tx)?;
    let by_id: HashMap<i64, &Checkpoint> = stored.iter().map(|c| (c.id, c)).collect();
    let mut valid: Vec<&Checkpoint> = Vec::new();
    for c in &stored {
        if key.verifies(c) {
            valid.push(c);
        } else {
            report.problems.push(Problem::BadSignature {
                checkpoint: c.id,
                source: "database".into(),
            });
        }
    }
    let mut from_copies: Vec<(&str, &Checkpoint)> = Vec::new();
    for (source, list) in copies {
        for c in list {
            if !key.verifies(c) {
                report.problems.push(Problem::BadSignature {
                    checkpoint: c.id,
                    source: source.clone(),
                });
            } else if by_id.get(&c.id).is_none_or(|s| *s != c) {
                from_copies.push((source, c));
                valid.push(c);
            } else {
                valid.push(c);
            }
        }
    }
    let boundary = valid
        .iter()
        .filter(|c| c.kind == Kind::Prune)
        .max_by_key(|c| c.audit_id)
        .copied();
    let (start_id, start_hash) = checkpoint::chain_start(boundary);
    report.boundary = boundary.map(|b| b.audit_id);
    // A head checkpoint behind the boundary was deleted with its rows.
    for (source, c) in from_copies {
        if !(c.kind == Kind::Head && c.audit_id <= start_id) {
            report.problems.push(Problem::MissingCheckpoint {
                checkpoint: c.id,
                source: source.to_owned(),
            });
        }
    }
    report.valid_checkpoints = valid.len() as u64;
    let mut expected: BTreeMap<i64, (&str, i64)> = BTreeMap::new();
    for c in valid
        .iter()
        .filter(|c| c.kind == Kind::Head && c.audit_id > start_id)
    {
        expected.insert(c.audit_id, (c.audit_hash.as_str(), c.id));
    }
    report.signed_up_to = valid.iter().map(|c| c.audit_id).max();

    let mut rewritten = Vec::new();
    let verifier = store::walk_chain(tx, start_id, start_hash, |row| {
        if let Some((hash, checkpoint)) = expected.get(&row.id)
            && *hash != row.hash
        {
            rewritten.push(Problem::Rewritten {
                id: row.id,
                checkpoint: *checkpoint,
            });
        }
    })?;
    report.rows = verifier.rows();
    report.first_id = verifier.first_id();
    report.last_id = verifier.last_id();
    if let Some(first) = report.first_id
        && first != start_id + 1
    {
        report.problems.push(Problem::StartMissing {
            first_id: first,
            expected_id: start_id + 1,
        });
    } else if let Some(id) = verifier.first_bad() {
        report.problems.push(Problem::ChainBroken { id });
    }
    report.problems.extend(rewritten);
    let last = report.last_id.unwrap_or(start_id);
    for (&audit_id, &(_, checkpoint)) in expected.range(last + 1..) {
        report.problems.push(Problem::Truncated {
            checkpoint,
            audit_id,
            last_id: report.last_id,
        });
    }
    report.unsigned_tail = match (report.last_id, report.signed_up_to) {
        (Some(last), Some(signed)) => u64::try_from(last - signed).unwrap_or(0),
        (Some(_), None) => report.rows,
        (None, _) => 0,
    };
    Ok(report)
}
