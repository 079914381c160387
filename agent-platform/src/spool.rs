//! The durable spool: every record is written here, with its sequence
//! number, before it is sent, and deleted only when the backend has
//! acknowledged storing it.
//!
//! # Layout
//!
//! `<state_dir>/spool.redb` has two tables: `records` (seq → encoded
//! `pb::Record`) and `meta` (`next_seq`, `stored_bytes`, `dropped_total`).
//! The counters in `meta` are written in the same transaction as the records
//! they describe, so they can never disagree with the data after a crash.
//! `stored_bytes` is recomputed from the records when a spool written by an
//! older version lacks it.
//!
//! # Group commit
//!
//! Every change (append or ack) goes through one queue. The first caller that
//! finds no commit in progress becomes the *leader*: it takes everything
//! queued, applies it in one redb write transaction, commits it with one
//! fsync, hands every caller its result and wakes them. Callers that arrive
//! while a commit is running wait and are served by the next one. So one
//! caller pays one fsync per record, sixteen concurrent callers share one,
//! and [`Spool::append_batch`] puts many records behind a single fsync. The
//! sender's reads ([`Spool::pending_after`]) are MVCC read transactions and
//! never wait for a commit; its acks join the same queue as the appends and
//! are not fsynced on their own (see below), so they hold the write lock for
//! well under a millisecond.
//!
//! # Bound
//!
//! The spool holds at most [`SpoolConfig::max_bytes`] (default 256 MiB) of
//! records, counted as encoded length plus [`RECORD_OVERHEAD`] each. A
//! commit that would exceed it deletes the oldest records, in the same
//! transaction, until it fits, and adds their number to the persistent
//! `dropped_total`, which the agent reports to the backend in every hello.
//! A single record larger than the bound is refused
//! ([`SpoolError::TooLarge`]). The redb file is larger than the records it
//! holds (B-tree pages, copy-on-write free space) and is not shrunk.
//!
//! # Durability
//!
//! redb commits a transaction atomically: data, counters and `next_seq`
//! together or not at all. A commit that hands out sequence numbers (any
//! append) or moves `next_seq` past an ack uses `Durability::Immediate`:
//! redb writes it and fsyncs the file (one fsync, checksummed commit slot)
//! before `commit` returns, and only then do readers see it. A commit that
//! only deletes acknowledged records uses `Durability::None`; the next
//! durable commit, or a clean close, persists it too. Therefore, after kill -9
//! or power loss (given a disk that honours fsync):
//! - every record whose sequence number an append returned is still there
//!   unless acknowledged, and no returned sequence number is ever reused;
//! - the sender only ever reads committed records, and every commit that
//!   creates records is durable, so nothing is sent that a crash could take
//!   back and renumber;
//! - acks since the last durable commit may be undone: those records come
//!   back and would be resent, which the backend ignores (it stores
//!   idempotently on (agent, seq)); in practice the hello exchange re-acks
//!   them first;
//! - a crash during a commit loses that whole transaction and nothing else:
//!   its callers never got their sequence numbers, and the counters roll back
//!   with the data;
//! - the directory entry of a newly created spool file is fsynced too;
//! - after an unclean stop redb repairs the file on open (it walks the trees
//!   and verifies their checksums), which takes longer than a clean open.
//!
//! Sequence numbers start at 1, are assigned in commit order, never repeat
//! (`next_seq` is persisted with the records and moved past any sequence the
//! backend acknowledged), and a batch gets consecutive numbers.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;

#[cfg(test)]
mod model;

const RECORDS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const STORED_BYTES: &str = "stored_bytes";
const DROPPED_TOTAL: &str = "dropped_total";

/// The default bound on spooled bytes: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The smallest bound accepted: 64 KiB.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;
/// Bytes counted per record on top of its encoded length: the 8-byte key and
/// redb's per-entry offsets.
pub const RECORD_OVERHEAD: u64 = 16;
/// redb's page cache. The spool is written at its tail and read from its
/// head, so a small cache serves it; redb's default (1 GiB) would let the
/// agent's memory grow with the spool.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The bytes a record of `encoded_len` bytes counts against the bound.
pub fn record_cost(encoded_len: usize) -> u64 {
    (encoded_len as u64).saturating_add(RECORD_OVERHEAD)
}

/// How the spool is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The most record bytes (see [`record_cost`]) kept; the oldest records
    /// are dropped beyond it. At least [`MIN_MAX_BYTES`].
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Parses a byte size for `--spool-max-bytes`: a number of bytes with an
/// optional unit `K`/`KiB`, `M`/`MiB`, `G`/`GiB` (powers of 1024), e.g.
/// `268435456`, `256MiB`, `1G`.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number of bytes"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (B, KiB, MiB, GiB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < MIN_MAX_BYTES {
        return Err(format!(
            "{s:?} is too small (at least {MIN_MAX_BYTES} bytes)"
        ));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {reason}")]
    Storage { path: PathBuf, reason: String },
    #[error(
        "spool {path}: a record of {size} bytes is larger than the whole spool ({max_bytes} bytes); refused"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        max_bytes: u64,
    },
    #[error("spool {path}: sequence numbers are exhausted")]
    SequenceExhausted { path: PathBuf },
    #[error("spool {path}: a bound of {max_bytes} bytes is too small (at least {MIN_MAX_BYTES})")]
    BoundTooSmall { path: PathBuf, max_bytes: u64 },
}

/// The spool's counters, as of the last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Records waiting for an acknowledgement.
    pub records: u64,
    /// Their size as counted against the bound (see [`record_cost`]).
    pub stored_bytes: u64,
    /// Records dropped by the bound since the spool was created.
    pub dropped_total: u64,
}

/// One change waiting for the group commit.
enum Op {
    /// Records encoded as `pb::Record` without their `seq` (see [`encode_unnumbered`]).
    Append(Vec<Vec<u8>>),
    Ack(u64),
}

enum Outcome {
    Appended(Range<u64>),
    Acked,
}

/// The state shared by the callers, behind one mutex that is never held
/// during I/O.
struct Queue {
    /// Changes not yet taken by a leader, with their tickets.
    waiting: Vec<(u64, Op)>,
    /// A leader is committing.
    committing: bool,
    next_ticket: u64,
    /// Results for callers that have not picked them up yet.
    done: HashMap<u64, Result<Outcome, SpoolError>>,
    /// The counters as of the last successful commit.
    stats: SpoolStats,
    /// Write transactions committed since open (for tests and diagnostics).
    commits: u64,
}

pub struct Spool {
    db: redb::Database,
    path: PathBuf,
    max_bytes: u64,
    queue: Mutex<Queue>,
    committed: Condvar,
    appended: Notify,
}

/// Encodes `pb::Record { seq: 0, created_at_unix_ms, body }`. Protobuf
/// encodes fields in tag order and omits a zero `seq`, so prefixing these
/// bytes with the encoded `seq` field (tag 1) gives exactly the encoding of
/// the numbered record; the expensive part runs in the caller's thread, not
/// the committing one.
fn encode_unnumbered(body: RecordBody, created_at_unix_ms: i64) -> Vec<u8> {
    pb::Record::from(Record {
        seq: 0,
        created_at_unix_ms,
        body,
    })
    .encode_to_vec()
}

/// The encoded `seq` field (tag 1, varint) that precedes an unnumbered record.
fn seq_field_len(seq: u64) -> usize {
    1 + prost::encoding::encoded_len_varint(seq)
}

fn write_numbered(seq: u64, unnumbered: &[u8], out: &mut Vec<u8>) {
    out.clear();
    prost::encoding::encode_key(1, prost::encoding::WireType::Varint, out);
    prost::encoding::encode_varint(seq, out);
    out.extend_from_slice(unnumbered);
}

fn storage(path: &Path, e: impl Into<redb::Error>) -> SpoolError {
    SpoolError::Storage {
        path: path.to_owned(),
        reason: e.into().to_string(),
    }
}

/// Makes the directory entry of a newly created file durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (creating if needed) the spool in `state_dir` with the default bound.
    pub fn open(state_dir: &Path) -> Result<Spool, SpoolError> {
        Spool::open_with(state_dir, SpoolConfig::default())
    }

    /// Opens (creating if needed) the spool in `state_dir`. If it holds more
    /// than `config.max_bytes`, the oldest records are dropped (and counted)
    /// now.
    pub fn open_with(state_dir: &Path, config: SpoolConfig) -> Result<Spool, SpoolError> {
        let path = state_dir.join("spool.redb");
        check_config(&path, config)?;
        let existed = path.exists();
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| storage(&path, e))?;
        if !existed {
            sync_dir(state_dir).map_err(|e| SpoolError::Storage {
                path: path.clone(),
                reason: format!("cannot sync the directory {}: {e}", state_dir.display()),
            })?;
        }
        Spool::from_db(db, path, config)
    }

    /// Opens a spool on any redb storage backend (tests simulate power loss
    /// with one).
    #[cfg(test)]
    fn open_on(
        backend: impl redb::StorageBackend,
        label: &Path,
        config: SpoolConfig,
    ) -> Result<Spool, SpoolError> {
        check_config(label, config)?;
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| storage(label, e))?;
        Spool::from_db(db, label.to_owned(), config)
    }

    fn from_db(
        db: redb::Database,
        path: PathBuf,
        config: SpoolConfig,
    ) -> Result<Spool, SpoolError> {
        let err = |e: redb::Error| storage(&path, e);
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        let stats = {
            // Create both tables so readers never meet a missing table.
            let mut records = txn.open_table(RECORDS).map_err(|e| err(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let get = |meta: &redb::Table<'_, &str, u64>, key| {
                meta.get(key)
                    .map(|v| v.map(|v| v.value()))
                    .map_err(|e| err(e.into()))
            };
            let stored_next = get(&meta, NEXT_SEQ)?;
            let stored_bytes = get(&meta, STORED_BYTES)?;
            let dropped_total = get(&meta, DROPPED_TOTAL)?.unwrap_or(0);
            let last = records
                .last()
                .map_err(|e| err(e.into()))?
                .map(|(k, _)| k.value());
            let next_seq = stored_next
                .unwrap_or(1)
                .max(last.map_or(1, |l| l.saturating_add(1)));
            let stored_bytes = match stored_bytes {
                Some(b) => b,
                // Written by a version without the counter: count once.
                None => {
                    let mut total = 0u64;
                    for item in records.iter().map_err(|e| err(e.into()))? {
                        let (_, v) = item.map_err(|e| err(e.into()))?;
                        total = total.saturating_add(record_cost(v.value().len()));
                    }
                    total
                }
            };
            let mut stats = SpoolStats {
                next_seq,
                records: records.len().map_err(|e| err(e.into()))?,
                stored_bytes,
                dropped_total,
            };
            // The bound may have been lowered since the last run.
            enforce_bound(&mut records, &mut stats, config.max_bytes).map_err(err)?;
            write_meta(&mut meta, &stats).map_err(err)?;
            stats
        };
        txn.commit().map_err(|e| err(e.into()))?;
        if stats.dropped_total > 0 {
            tracing::warn!(
                dropped_total = stats.dropped_total,
                max_bytes = config.max_bytes,
                "the spool has dropped records because it was full"
            );
        }
        Ok(Spool {
            db,
            path,
            max_bytes: config.max_bytes,
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                committing: false,
                next_ticket: 0,
                done: HashMap::new(),
                stats,
                commits: 0,
            }),
            committed: Condvar::new(),
            appended: Notify::new(),
        })
    }

    /// Closes the database cleanly (dropping the spool does the same but
    /// cannot report an error).
    pub fn close(self) -> Result<(), SpoolError> {
        let path = self.path;
        self.db.close().map_err(|e| storage(&path, e))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Only whole values are stored under the lock, and a leader that
        // unwinds hands out errors (see `LeaderGuard`), so the state of a
        // poisoned lock is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Assigns the next sequence number to `body`, stores the record durably,
    /// wakes the sender, and returns the sequence number. Concurrent callers
    /// share one fsync. Blocks for the commit.
    pub fn append(&self, body: RecordBody, created_at_unix_ms: i64) -> Result<u64, SpoolError> {
        let records = vec![encode_unnumbered(body, created_at_unix_ms)];
        match self.submit(Op::Append(records))? {
            Outcome::Appended(range) => Ok(range.start),
            Outcome::Acked => unreachable_outcome(&self.path),
        }
    }

    /// Stores `records` (body, creation time) durably in one transaction with
    /// one fsync: all of them or, on error, none. Returns their sequence
    /// numbers, which are consecutive. Blocks for the commit.
    pub fn append_batch(
        &self,
        records: impl IntoIterator<Item = (RecordBody, i64)>,
    ) -> Result<Range<u64>, SpoolError> {
        let records: Vec<Vec<u8>> = records
            .into_iter()
            .map(|(body, at)| encode_unnumbered(body, at))
            .collect();
        match self.submit(Op::Append(records))? {
            Outcome::Appended(range) => Ok(range),
            Outcome::Acked => unreachable_outcome(&self.path),
        }
    }

    /// Deletes every record with a sequence number up to `up_to` (the backend
    /// stored them). Also makes sure future sequence numbers are above it
    /// (that part is durable when it returns). The deletion is made durable
    /// by the next append's commit: a crash before it may bring the records
    /// back, to be acked again. Shares the commit with concurrent appends.
    pub fn ack(&self, up_to: u64) -> Result<(), SpoolError> {
        self.submit(Op::Ack(up_to)).map(|_| ())
    }

    /// Queues `op` and returns its result once it is committed, committing
    /// it (and whatever else is queued) itself if no commit is running.
    fn submit(&self, op: Op) -> Result<Outcome, SpoolError> {
        let mut q = self.lock();
        let ticket = q.next_ticket;
        q.next_ticket = q.next_ticket.wrapping_add(1);
        q.waiting.push((ticket, op));
        loop {
            if let Some(result) = q.done.remove(&ticket) {
                return result;
            }
            if !q.committing {
                q.committing = true;
                let batch = std::mem::take(&mut q.waiting);
                let before = q.stats;
                drop(q);
                let mut guard = LeaderGuard {
                    spool: self,
                    tickets: batch.iter().map(|(t, _)| *t).collect(),
                    finished: false,
                };
                let committed = self.commit_batch(before, batch);
                guard.finished = true;
                q = self.lock();
                q.committing = false;
                let any_appended = match committed {
                    Ok((results, stats)) => {
                        q.stats = stats;
                        q.commits += 1;
                        let any = results
                            .iter()
                            .any(|(_, r)| matches!(r, Ok(Outcome::Appended(r)) if !r.is_empty()));
                        q.done.extend(results);
                        any
                    }
                    Err(e) => {
                        for t in &guard.tickets {
                            q.done.insert(*t, Err(e.clone()));
                        }
                        false
                    }
                };
                drop(guard);
                self.committed.notify_all();
                if any_appended {
                    self.appended.notify_waiters();
                }
                continue;
            }
            q = self.committed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Applies `batch` in one write transaction on top of `before` and
    /// commits it. `Err` means nothing was committed.
    #[allow(clippy::type_complexity)]
    fn commit_batch(
        &self,
        before: SpoolStats,
        batch: Vec<(u64, Op)>,
    ) -> Result<(Vec<(u64, Result<Outcome, SpoolError>)>, SpoolStats), SpoolError> {
        let err = |e: redb::Error| storage(&self.path, e);
        let mut stats = before;
        let mut results = Vec::with_capacity(batch.len());
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| err(e.into()))?;
            let mut buf = Vec::new();
            for (ticket, op) in batch {
                let result = match op {
                    Op::Append(encoded) => {
                        self.append_in(&mut records, &mut stats, &encoded, &mut buf)?
                    }
                    Op::Ack(up_to) => {
                        let mut freed = 0u64;
                        let mut removed = 0u64;
                        records
                            .retain_in(..=up_to, |_, v| {
                                freed = freed.saturating_add(record_cost(v.len()));
                                removed += 1;
                                false
                            })
                            .map_err(|e| err(e.into()))?;
                        stats.stored_bytes = stats.stored_bytes.saturating_sub(freed);
                        stats.records = stats.records.saturating_sub(removed);
                        if up_to >= stats.next_seq {
                            // The backend has seen numbers we have not issued
                            // (a restored or reset state dir): never reuse
                            // them, or new records would be dropped as
                            // duplicates.
                            stats.next_seq = up_to.saturating_add(1);
                        }
                        Ok(Outcome::Acked)
                    }
                };
                results.push((ticket, result));
            }
            enforce_bound(&mut records, &mut stats, self.max_bytes).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            write_meta(&mut meta, &stats).map_err(err)?;
        }
        // A commit that hands out (or skips) sequence numbers is fsynced
        // before anyone learns them. One that only deletes acknowledged
        // records is not: losing it to a crash means resending records the
        // backend already has, which it ignores; the next durable commit (or
        // a clean close) makes it durable too. So the sender never waits for
        // an fsync of its own.
        if stats.next_seq == before.next_seq {
            // redb refuses `None` only with persistent savepoints or in a
            // multi-process mode, neither of which the spool uses; if it ever
            // did, the commit simply stays `Immediate` (the default).
            if let Err(e) = txn.set_durability(redb::Durability::None) {
                tracing::debug!(error = %e, "spool: acks are committed durably");
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        if stats.dropped_total > before.dropped_total {
            tracing::warn!(
                dropped = stats.dropped_total - before.dropped_total,
                dropped_total = stats.dropped_total,
                max_bytes = self.max_bytes,
                "the spool is full: dropped the oldest records"
            );
        }
        Ok((results, stats))
    }

    /// Inserts one append operation's records. The outer `Err` is a storage
    /// failure (the transaction is abandoned); the inner one refuses only
    /// this operation, before anything of it was written.
    fn append_in(
        &self,
        records: &mut redb::Table<'_, u64, &[u8]>,
        stats: &mut SpoolStats,
        encoded: &[Vec<u8>],
        buf: &mut Vec<u8>,
    ) -> Result<Result<Outcome, SpoolError>, SpoolError> {
        let first = stats.next_seq;
        let Some(end) = first
            .checked_add(encoded.len() as u64)
            .filter(|&end| end < u64::MAX)
        else {
            return Ok(Err(SpoolError::SequenceExhausted {
                path: self.path.clone(),
            }));
        };
        let mut added = 0u64;
        for (seq, unnumbered) in (first..end).zip(encoded) {
            let cost = record_cost(seq_field_len(seq) + unnumbered.len());
            if cost > self.max_bytes {
                return Ok(Err(SpoolError::TooLarge {
                    path: self.path.clone(),
                    size: cost,
                    max_bytes: self.max_bytes,
                }));
            }
            added = added.saturating_add(cost);
        }
        for (seq, unnumbered) in (first..end).zip(encoded) {
            write_numbered(seq, unnumbered, buf);
            records
                .insert(seq, buf.as_slice())
                .map_err(|e| storage(&self.path, e))?;
        }
        stats.next_seq = end;
        stats.records = stats.records.saturating_add(encoded.len() as u64);
        stats.stored_bytes = stats.stored_bytes.saturating_add(added);
        Ok(Ok(Outcome::Appended(first..end)))
    }

    /// Up to `limit` spooled records with a sequence number above `after`,
    /// in order, as encoded `pb::Record` bytes. Never waits for a commit.
    pub fn pending_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let err = |e: redb::Error| storage(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let records = txn.open_table(RECORDS).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        let Some(start) = after.checked_add(1) else {
            return Ok(out);
        };
        for item in records
            .range(start..)
            .map_err(|e| err(e.into()))?
            .take(limit)
        {
            let (k, v) = item.map_err(|e| err(e.into()))?;
            out.push((k.value(), Bytes::copy_from_slice(v.value())));
        }
        Ok(out)
    }

    /// Number of records waiting for an acknowledgement.
    pub fn len(&self) -> Result<u64, SpoolError> {
        Ok(self.stats().records)
    }

    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.stats().next_seq
    }

    /// Records dropped by the bound since the spool was created (persistent).
    pub fn dropped_total(&self) -> u64 {
        self.stats().dropped_total
    }

    /// The counters as of the last commit.
    pub fn stats(&self) -> SpoolStats {
        self.lock().stats
    }

    /// The bound this spool was opened with.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Write transactions committed since open; fewer than the operations
    /// submitted when commits were shared.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Resolves after the next append (register before checking for work).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }
}

fn check_config(path: &Path, config: SpoolConfig) -> Result<(), SpoolError> {
    if config.max_bytes < MIN_MAX_BYTES {
        return Err(SpoolError::BoundTooSmall {
            path: path.to_owned(),
            max_bytes: config.max_bytes,
        });
    }
    Ok(())
}

fn unreachable_outcome<T>(path: &Path) -> Result<T, SpoolError> {
    Err(SpoolError::Storage {
        path: path.to_owned(),
        reason: "internal error: an operation got another operation's result".to_owned(),
    })
}

/// Deletes the oldest records until `stats.stored_bytes` fits `max_bytes`,
/// counting them in `dropped_total`.
fn enforce_bound(
    records: &mut redb::Table<'_, u64, &[u8]>,
    stats: &mut SpoolStats,
    max_bytes: u64,
) -> Result<(), redb::Error> {
    while stats.stored_bytes > max_bytes {
        let Some((_, v)) = records.pop_first()? else {
            // Nothing left to drop: the counter was off; it is zero now.
            stats.stored_bytes = 0;
            stats.records = 0;
            break;
        };
        stats.stored_bytes = stats
            .stored_bytes
            .saturating_sub(record_cost(v.value().len()));
        stats.records = stats.records.saturating_sub(1);
        stats.dropped_total = stats.dropped_total.saturating_add(1);
    }
    Ok(())
}

fn write_meta(
    meta: &mut redb::Table<'_, &str, u64>,
    stats: &SpoolStats,
) -> Result<(), redb::Error> {
    meta.insert(NEXT_SEQ, stats.next_seq)?;
    meta.insert(STORED_BYTES, stats.stored_bytes)?;
    meta.insert(DROPPED_TOTAL, stats.dropped_total)?;
    Ok(())
}

/// Makes sure the callers of a leader's batch get an answer even if the
/// leader unwinds mid-commit (nothing was committed then).
struct LeaderGuard<'a> {
    spool: &'a Spool,
    tickets: Vec<u64>,
    finished: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut q = self.spool.lock();
        q.committing = false;
        for t in &self.tickets {
            q.done.insert(
                *t,
                Err(SpoolError::Storage {
                    path: self.spool.path.clone(),
                    reason: "the commit was interrupted".to_owned(),
                }),
            );
        }
        drop(q);
        self.spool.committed.notify_all();
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

    fn output(len: usize) -> RecordBody {
        RecordBody::CommandResult(pb::CommandResult {
            output: "x".repeat(len),
            ..Default::default()
        })
    }

    #[test]
    fn numbered_encoding_is_the_canonical_encoding() {
        for seq in [1, 127, 128, 300, 1 << 40, u64::MAX - 1] {
            for (body, at) in [(metrics(), 0), (output(1000), -5), (output(0), 1 << 50)] {
                let canonical = pb::Record::from(Record {
                    seq,
                    created_at_unix_ms: at,
                    body: body.clone(),
                })
                .encode_to_vec();
                let mut ours = Vec::new();
                write_numbered(seq, &encode_unnumbered(body, at), &mut ours);
                assert_eq!(ours, canonical, "seq {seq}");
                assert_eq!(
                    seq_field_len(seq) + encode_unnumbered(metrics(), at).len(),
                    {
                        let mut b = Vec::new();
                        write_numbered(seq, &encode_unnumbered(metrics(), at), &mut b);
                        b.len()
                    }
                );
            }
        }
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
        spool.ack(u64::MAX).expect("an absurd ack does not panic");
        assert!(matches!(
            spool.append(metrics(), 1),
            Err(SpoolError::SequenceExhausted { .. })
        ));
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

    #[test]
    fn a_batch_gets_consecutive_numbers_in_one_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool.append(metrics(), 0).expect("append");
        let commits = spool.commits();
        let range = spool
            .append_batch((0..100).map(|i| (output(10), i)))
            .expect("batch");
        assert_eq!(range, 2..102);
        assert_eq!(spool.commits(), commits + 1);
        assert_eq!(spool.len().expect("len"), 101);
        assert_eq!(spool.append_batch([]).expect("empty batch"), 102..102);
    }

    #[test]
    fn concurrent_appends_share_commits_and_lose_nothing() {
        const THREADS: u64 = 16;
        const EACH: u64 = 40;
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let mut seqs: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        (0..EACH)
                            .map(|i| spool.append(output(1000), i as i64).expect("append"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("appender"))
                .collect()
        });
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=THREADS * EACH).collect::<Vec<_>>());
        assert!(
            spool.commits() < THREADS * EACH,
            "{} commits for {} appends: none was shared",
            spool.commits(),
            THREADS * EACH
        );
        let stored: Vec<u64> = spool
            .pending_after(0, usize::MAX)
            .expect("pending")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(stored, seqs);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_them_persistently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SpoolConfig {
            max_bytes: MIN_MAX_BYTES,
        };
        let spool = Spool::open_with(dir.path(), config).expect("open");
        for i in 0..200 {
            spool.append(output(1000), i).expect("append");
        }
        let stats = spool.stats();
        assert!(stats.stored_bytes <= MIN_MAX_BYTES, "{stats:?}");
        assert!(stats.dropped_total > 100, "{stats:?}");
        assert_eq!(stats.records + stats.dropped_total, 200);
        let first = spool.pending_after(0, 1).expect("pending")[0].0;
        assert_eq!(first, stats.dropped_total + 1, "the oldest went first");
        drop(spool);
        let spool = Spool::open_with(dir.path(), config).expect("reopen");
        assert_eq!(spool.stats(), stats, "the counters persist");
    }

    #[test]
    fn a_record_larger_than_the_bound_is_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SpoolConfig {
            max_bytes: MIN_MAX_BYTES,
        };
        let spool = Spool::open_with(dir.path(), config).expect("open");
        spool.append(metrics(), 0).expect("append");
        let before = spool.stats();
        let e = spool
            .append_batch([(metrics(), 1), (output(MIN_MAX_BYTES as usize), 2)])
            .expect_err("too large");
        assert!(matches!(e, SpoolError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("larger than the whole spool"), "{e}");
        assert_eq!(spool.stats(), before, "nothing of the batch was stored");
        assert_eq!(spool.append(metrics(), 3).expect("append"), 2);
    }

    #[test]
    fn a_lower_bound_at_open_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool
            .append_batch((0..300).map(|i| (output(1000), i)))
            .expect("batch");
        drop(spool);
        let spool = Spool::open_with(
            dir.path(),
            SpoolConfig {
                max_bytes: MIN_MAX_BYTES,
            },
        )
        .expect("reopen smaller");
        let stats = spool.stats();
        assert!(stats.stored_bytes <= MIN_MAX_BYTES);
        assert_eq!(stats.records + stats.dropped_total, 300);
        assert_eq!(stats.next_seq, 301);
    }

    #[test]
    fn a_spool_without_the_byte_counter_is_recounted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool
            .append_batch((0..10).map(|i| (output(100), i)))
            .expect("batch");
        let stats = spool.stats();
        let db = spool.db;
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .remove(STORED_BYTES)
            .expect("remove");
        txn.commit().expect("commit");
        drop(db);
        let spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.stats(), stats);
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_byte_size("268435456"), Ok(DEFAULT_MAX_BYTES));
        assert_eq!(parse_byte_size("256MiB"), Ok(DEFAULT_MAX_BYTES));
        assert_eq!(parse_byte_size("256M"), Ok(DEFAULT_MAX_BYTES));
        assert_eq!(parse_byte_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("64KiB"), Ok(MIN_MAX_BYTES));
        assert!(parse_byte_size("1KiB").is_err(), "too small");
        assert!(parse_byte_size("12 parsecs").is_err());
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999999999999G").is_err());
        assert!(parse_byte_size("20000000000G").is_err(), "overflows");
        assert!(Spool::open_with(Path::new("/nonexistent"), SpoolConfig { max_bytes: 1 }).is_err());
    }
}
