//! The durable spool: every record is written here, with its sequence
//! number, before it is sent, and deleted only when the backend has
//! acknowledged storing it.
//!
//! `<state_dir>/spool.redb` has two tables: `records` (seq → protobuf
//! `Record`) and `meta` (`next_seq`). Each append is one redb transaction
//! committed with `Durability::Immediate` (fsync), so a record that
//! [`Spool::append`] returned survives kill -9 and power loss. Sequence
//! numbers start at 1 and never repeat, also across restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;

const RECORDS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";

#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {reason}")]
pub struct SpoolError {
    path: PathBuf,
    reason: String,
}

pub struct Spool {
    db: redb::Database,
    path: PathBuf,
    next_seq: Mutex<u64>,
    appended: Notify,
}

impl Spool {
    /// Opens (creating if needed) the spool in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Spool, SpoolError> {
        let path = state_dir.join("spool.redb");
        let err = |e: redb::Error| SpoolError {
            path: path.clone(),
            reason: e.to_string(),
        };
        let db = redb::Database::create(&path).map_err(|e| err(e.into()))?;
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        let next = {
            // Create both tables so readers never meet a missing table.
            let records = txn.open_table(RECORDS).map_err(|e| err(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let stored = meta
                .get(NEXT_SEQ)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value());
            let last = records
                .last()
                .map_err(|e| err(e.into()))?
                .map(|(k, _)| k.value());
            let next = stored.unwrap_or(1).max(last.map_or(1, |l| l + 1));
            meta.insert(NEXT_SEQ, next).map_err(|e| err(e.into()))?;
            next
        };
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(Spool {
            db,
            path,
            next_seq: Mutex::new(next),
            appended: Notify::new(),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> SpoolError {
        SpoolError {
            path: self.path.clone(),
            reason: e.into().to_string(),
        }
    }

    fn lock_next(&self) -> std::sync::MutexGuard<'_, u64> {
        // The guarded value is a plain integer that is only replaced after a
        // successful commit, so a poisoned lock still holds a valid value.
        self.next_seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Assigns the next sequence number to `body`, stores the record durably,
    /// wakes the sender, and returns the sequence number.
    pub fn append(&self, body: RecordBody, created_at_unix_ms: i64) -> Result<u64, SpoolError> {
        let mut next = self.lock_next();
        let seq = *next;
        let record: pb::Record = Record {
            seq,
            created_at_unix_ms,
            body,
        }
        .into();
        let bytes = record.encode_to_vec();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            records
                .insert(seq, bytes.as_slice())
                .map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(NEXT_SEQ, seq + 1).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        *next = seq + 1;
        drop(next);
        self.appended.notify_waiters();
        Ok(seq)
    }

    /// Up to `limit` spooled records with a sequence number above `after`,
    /// in order, as encoded `pb::Record` bytes.
    pub fn pending_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let Some(start) = after.checked_add(1) else {
            return Ok(out);
        };
        for item in records.range(start..).map_err(|e| self.err(e))?.take(limit) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.value(), Bytes::copy_from_slice(v.value())));
        }
        Ok(out)
    }

    /// Deletes every record with a sequence number up to `up_to` (the backend
    /// stored them). Also makes sure future sequence numbers are above it.
    pub fn ack(&self, up_to: u64) -> Result<(), SpoolError> {
        let mut next = self.lock_next();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            records
                .retain_in(..=up_to, |_, _| false)
                .map_err(|e| self.err(e))?;
            if up_to >= *next {
                // The backend has seen numbers we have not issued (a restored
                // or reset state dir): never reuse them, or new records would
                // be dropped as duplicates.
                let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
                meta.insert(NEXT_SEQ, up_to + 1).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        if up_to >= *next {
            *next = up_to + 1;
        }
        Ok(())
    }

    /// Number of records waiting for an acknowledgement.
    pub fn len(&self) -> Result<u64, SpoolError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        records.len().map_err(|e| self.err(e))
    }

    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        *self.lock_next()
    }

    /// Resolves after the next append (register before checking for work).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> RecordBody {
        RecordBody::Metrics(pb::Metrics {
            memory_total_bytes: 10,
            ..Default::default()
        })
    }

    #[test]
    fn sequence_survives_reopen_and_ack_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let spool = Spool::open(dir.path()).expect("open");
            assert_eq!(spool.append(metrics(), 1).expect("append"), 1);
            assert_eq!(spool.append(metrics(), 2).expect("append"), 2);
            assert_eq!(spool.append(metrics(), 3).expect("append"), 3);
            spool.ack(2).expect("ack");
        }
        let spool = Spool::open(dir.path()).expect("reopen");
        let pending = spool.pending_after(0, 10).expect("pending");
        assert_eq!(pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3]);
        let rec = palisade_proto::msg::decode_record(&pending[0].1).expect("decodes");
        assert_eq!(rec.seq, 3);
        assert_eq!(
            spool.append(metrics(), 4).expect("append"),
            4,
            "numbers never repeat"
        );
        spool.ack(4).expect("ack");
        assert!(spool.is_empty().expect("len"));
        drop(spool);
        let spool = Spool::open(dir.path()).expect("reopen empty");
        assert_eq!(
            spool.next_seq(),
            5,
            "next_seq persists even when the spool is empty"
        );
    }

    #[test]
    fn ack_beyond_issued_moves_next_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool.ack(41).expect("ack");
        assert_eq!(spool.append(metrics(), 1).expect("append"), 42);
    }

    #[test]
    fn pending_after_respects_limit_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        for i in 0..10 {
            spool.append(metrics(), i).expect("append");
        }
        let got: Vec<u64> = spool
            .pending_after(3, 4)
            .expect("pending")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(got, vec![4, 5, 6, 7]);
        assert!(
            spool
                .pending_after(u64::MAX, 4)
                .expect("pending")
                .is_empty()
        );
    }
}
