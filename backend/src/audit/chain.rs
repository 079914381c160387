//! The audit log's hash chain, independent of any database.
//!
//! `hash(row) = hex(SHA-256(prev_hash_hex || canonical_json(row)))`, where the
//! canonical JSON lists the row's fields in a fixed order with the layout
//! version `v`, and `details` is hashed as the exact text stored (so
//! verification never depends on re-serializing parsed JSON). The id is
//! part of the hash and ids run 1, 2, 3...: rows cannot be reordered,
//! removed or inserted without breaking the chain at that point.

use ring::digest;
use serde::Serialize;

use crate::db::Millis;

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of [`CanonicalRow`]'s layout, hashed with every row so the
/// serialization can change later without ambiguity.
pub const CANONICAL_VERSION: u32 = 1;

/// The fields of a row in their hashed order. JSON of a struct with string
/// escaping is unambiguous: no field can run into the next.
#[derive(Debug, Serialize)]
pub struct CanonicalRow<'a> {
    pub v: u32,
    pub id: i64,
    pub at: Millis,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub outcome: &'a str,
    pub details: &'a str,
}

/// Hex SHA-256 of `prev_hash` followed by the canonical JSON of `row`.
pub fn hash(prev_hash: &str, row: &CanonicalRow<'_>) -> String {
    // Serializing a struct of strings and integers cannot fail; were it to,
    // an empty body still yields a hash that will not verify.
    let canonical = serde_json::to_vec(row).unwrap_or_default();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&canonical);
    hex::encode(ctx.finish())
}

/// One row as stored, in the text form that was hashed.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredRow {
    pub fn canonical(&self) -> CanonicalRow<'_> {
        CanonicalRow {
            v: CANONICAL_VERSION,
            id: self.id,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            target: self.target.as_deref(),
            source_ip: self.source_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            outcome: &self.outcome,
            details: &self.details,
        }
    }
}

/// Checks rows fed in id order; remembers the first one that breaks.
#[derive(Debug)]
pub struct Verifier {
    expected_id: i64,
    expected_prev: String,
    first_bad: Option<i64>,
    rows: u64,
    first_id: Option<i64>,
    last_id: Option<i64>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier for a chain that starts at the genesis.
    pub fn new() -> Verifier {
        Self::starting_after(0, GENESIS_HASH.to_owned())
    }

    /// A verifier for a chain whose rows before `id + 1` are gone (pruned
    /// behind a checkpoint that vouches for `hash` at `id`).
    pub fn starting_after(id: i64, hash: String) -> Verifier {
        Verifier {
            expected_id: id.saturating_add(1),
            expected_prev: hash,
            first_bad: None,
            rows: 0,
            first_id: None,
            last_id: None,
        }
    }

    /// Feeds the next row. Returns false once the chain is broken (later
    /// rows need not be fed).
    pub fn feed(&mut self, row: &StoredRow) -> bool {
        self.rows += 1;
        self.first_id.get_or_insert(row.id);
        self.last_id = Some(row.id);
        if self.first_bad.is_some() {
            return false;
        }
        // A gap in the ids means a row was removed; the first row after the
        // gap is the first one that no longer chains.
        let ok = row.id == self.expected_id
            && row.prev_hash == self.expected_prev
            && hash(&row.prev_hash, &row.canonical()) == row.hash;
        if !ok {
            self.first_bad = Some(row.id);
            return false;
        }
        self.expected_prev.clone_from(&row.hash);
        self.expected_id = row.id.saturating_add(1);
        true
    }

    /// Marks the row `id` unreadable (a column lost its type): tampered.
    pub fn unreadable(&mut self, id: i64) {
        if self.first_bad.is_none() {
            self.first_bad = Some(id);
        }
    }

    /// The first bad row's id, if any.
    pub fn first_bad(&self) -> Option<i64> {
        self.first_bad
    }

    /// The last verified row: its id and hash (the chain's head).
    pub fn head(&self) -> (i64, &str) {
        (self.expected_id - 1, &self.expected_prev)
    }

    /// Rows fed, broken or not.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The id of the first row fed.
    pub fn first_id(&self) -> Option<i64> {
        self.first_id
    }

    /// The id of the last row fed.
    pub fn last_id(&self) -> Option<i64> {
        self.last_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, prev: &str, actor: &str) -> StoredRow {
        let mut r = StoredRow {
            id,
            at: 1_700_000_000_000 + id,
            actor: actor.into(),
            action: "auth.login".into(),
            target: None,
            source_ip: Some("192.0.2.1".into()),
            user_agent: None,
            outcome: "success".into(),
            details: "{}".into(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        r.hash = hash(prev, &r.canonical());
        r
    }

    fn chain(n: i64) -> Vec<StoredRow> {
        let mut rows = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for id in 1..=n {
            let r = row(id, &prev, "user:alice");
            prev = r.hash.clone();
            rows.push(r);
        }
        rows
    }

    fn verify(rows: &[StoredRow]) -> Option<i64> {
        let mut v = Verifier::new();
        for r in rows {
            v.feed(r);
        }
        v.first_bad()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), None);
        assert_eq!(verify(&[]), None);
    }

    #[test]
    fn edits_removals_and_reorders_break_the_chain() {
        let mut edited = chain(5);
        edited[2].actor = "user:mallory".into();
        assert_eq!(verify(&edited), Some(3));

        let mut removed = chain(5);
        removed.remove(2);
        assert_eq!(verify(&removed), Some(4));

        let mut swapped = chain(5);
        swapped.swap(1, 2);
        assert_eq!(verify(&swapped), Some(3));

        // Rehashed consistently: the next link still breaks.
        let mut rehashed = chain(5);
        rehashed[1].actor = "user:mallory".into();
        rehashed[1].hash = hash(&rehashed[1].prev_hash.clone(), &rehashed[1].canonical());
        assert_eq!(verify(&rehashed), Some(3));
    }

    #[test]
    fn the_documented_formula_is_what_is_computed() {
        // An independent recomputation so the format cannot drift silently.
        let r = row(1, GENESIS_HASH, "user:alice");
        let canonical = format!(
            r#"{{"v":1,"id":1,"at":{},"actor":"user:alice","action":"auth.login","target":null,"source_ip":"192.0.2.1","user_agent":null,"outcome":"success","details":"{{}}"}}"#,
            1_700_000_000_001i64
        );
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(GENESIS_HASH.as_bytes());
        ctx.update(canonical.as_bytes());
        assert_eq!(r.hash, hex::encode(ctx.finish()));
    }
}
