//! Metric queries: batched ingest, the latest sample, series for charts.

use std::collections::BTreeMap;

use super::{Filesystem, NetworkCounters, Resolution, Rollup, Sample};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx, counter};
use crate::params;

/// The columns of a sample, in the order [`sample_at`] reads them, for both
/// `host_latest_metrics` (and the old `metric_samples`, read once by migration 10).
pub const SAMPLE_COLUMNS: &str = "seq, collected_at, cpu_percent, memory_total_bytes, memory_available_bytes, \
     swap_total_bytes, swap_free_bytes, load_1, load_5, load_15, uptime_seconds, process_count, filesystems, network";

/// Number of columns in [`SAMPLE_COLUMNS`].
pub const SAMPLE_COLUMN_COUNT: usize = 14;

/// [`SAMPLE_COLUMNS`] with a table prefix, for joins.
pub fn sample_columns(prefix: &str) -> String {
    SAMPLE_COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a sample from columns `at..at + SAMPLE_COLUMN_COUNT`; `None` when
/// they are NULL (an outer join without a match).
pub fn sample_at(row: &Row<'_>, at: usize) -> Result<Option<Sample>> {
    let Some(seq) = row.get::<Option<u64>>(at)? else {
        return Ok(None);
    };
    let filesystems: Vec<Filesystem> = json(row, at + 12)?;
    let network: Vec<NetworkCounters> = json(row, at + 13)?;
    Ok(Some(Sample {
        seq,
        collected_at: row.get(at + 1)?,
        cpu_percent: row.get(at + 2)?,
        memory_total_bytes: row.get(at + 3)?,
        memory_available_bytes: row.get(at + 4)?,
        swap_total_bytes: row.get(at + 5)?,
        swap_free_bytes: row.get(at + 6)?,
        load_1: row.get(at + 7)?,
        load_5: row.get(at + 8)?,
        load_15: row.get(at + 9)?,
        uptime_seconds: row.get(at + 10)?,
        process_count: row.get(at + 11)?,
        filesystems,
        network,
    }))
}

fn sample(row: &Row<'_>) -> Result<Sample> {
    sample_at(row, 0)?.ok_or_else(|| DbError::Corrupt("a metric sample without a sequence".into()))
}

/// A sample in the types the columns take.
struct SampleRow {
    collected_at: i64,
    seq: i64,
    cpu_percent: f64,
    memory_total_bytes: i64,
    memory_available_bytes: i64,
    swap_total_bytes: i64,
    swap_free_bytes: i64,
    load_1: f64,
    load_5: f64,
    load_15: f64,
    uptime_seconds: i64,
    process_count: i64,
    filesystems: String,
    network: String,
}

impl SampleRow {
    fn of(s: &Sample) -> Result<SampleRow> {
        Ok(SampleRow {
            collected_at: s.collected_at,
            seq: crate::db::seq(s.seq)?,
            cpu_percent: s.cpu_percent,
            memory_total_bytes: counter(s.memory_total_bytes),
            memory_available_bytes: counter(s.memory_available_bytes),
            swap_total_bytes: counter(s.swap_total_bytes),
            swap_free_bytes: counter(s.swap_free_bytes),
            load_1: s.load_1,
            load_5: s.load_5,
            load_15: s.load_15,
            uptime_seconds: counter(s.uptime_seconds),
            process_count: i64::from(s.process_count),
            filesystems: to_json("filesystems", &s.filesystems)?,
            network: to_json("network counters", &s.network)?,
        })
    }
}

const INSERT_COLUMNS: &str = "host_id, collected_at, seq, cpu_percent, memory_total_bytes, memory_available_bytes, \
     swap_total_bytes, swap_free_bytes, load_1, load_5, load_15, uptime_seconds, process_count, filesystems, network";

/// A chunk takes new samples by being rewritten while it holds fewer than
/// this many; then a new chunk starts. (A trickle of one sample per batch
/// thus still ends up in dense chunks; a chunk rewrite stays small.)
pub const CHUNK_MAX_SAMPLES: usize = 512;

/// A run of at most this many new samples is appended to the hour's newest
/// chunk (a trickle); a longer run gets chunks of its own (appending means
/// decoding and re-encoding the chunk).
const APPEND_MAX_RUN: usize = 64;

const HOUR: Millis = 3_600_000;

/// The start of the UTC hour `at` is in: no chunk spans two.
fn hour_of(at: Millis) -> Millis {
    at - at.rem_euclid(HOUR)
}

/// `samples` (sorted by time) cut where the UTC hour changes: each run is
/// one chunk's worth of hour, never empty.
fn hour_runs<'a, 's>(samples: &'a [&'s Sample]) -> impl Iterator<Item = &'a [&'s Sample]> {
    samples.chunk_by(|a, b| hour_of(a.collected_at) == hour_of(b.collected_at))
}

fn corrupt(host_id: &str, e: super::chunk::ChunkError) -> DbError {
    DbError::Corrupt(format!("host {host_id}: {e}"))
}

/// A stored chunk's key, extent and (on demand) samples.
struct StoredChunk {
    first_at: Millis,
    first_seq: i64,
    last_at: Millis,
    last_seq: i64,
    samples: usize,
    data: Vec<u8>,
}

impl StoredChunk {
    fn covers(&self, at: Millis, seq: i64) -> bool {
        (self.first_at, self.first_seq) <= (at, seq) && (at, seq) <= (self.last_at, self.last_seq)
    }
}

/// Stores a batch of one host's samples; a sample already stored (same
/// host, time and sequence) is left as it is. Also moves the host's latest
/// sample and marks the touched 1-minute buckets for the rollup job.
/// Returns how many samples were new.
///
/// The samples go into chunks ([`super::chunk`]), per hour: a short run
/// (a trickle) is appended to the host's newest chunk of that hour while it
/// has room and the run is newer than its last sample; anything else goes
/// into new chunks of at most [`CHUNK_MAX_SAMPLES`]. Each touched hour is
/// marked in `metric_minutes_dirty` from its earliest new sample on.
pub fn insert_samples(tx: &mut Tx<'_>, host_id: &str, samples: &[&Sample]) -> Result<u64> {
    let mut batch: Vec<&Sample> = samples.to_vec();
    batch.sort_by_key(|s| (s.collected_at, s.seq));
    batch.dedup_by_key(|s| (s.collected_at, s.seq));
    for s in &batch {
        crate::db::seq(s.seq)?;
    }
    // Hour by hour: a batch with a far-off sample (a wrong clock) reads the
    // chunks of the hours it touches, not every chunk in between.
    let mut fresh: Vec<&Sample> = Vec::with_capacity(batch.len());
    for run in hour_runs(&batch) {
        let hour = hour_of(run[0].collected_at);
        fresh.extend(store_hour(tx, host_id, hour, run)?);
    }
    if fresh.is_empty() {
        return Ok(0);
    }

    // The newest of the batch replaces the host's latest if it is newer.
    if let Some(newest) = fresh.last() {
        let newest = SampleRow::of(newest)?;
        tx.execute(
            &format!(
                "INSERT INTO host_latest_metrics ({INSERT_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (host_id) DO UPDATE SET
                     collected_at = excluded.collected_at, seq = excluded.seq, cpu_percent = excluded.cpu_percent,
                     memory_total_bytes = excluded.memory_total_bytes,
                     memory_available_bytes = excluded.memory_available_bytes,
                     swap_total_bytes = excluded.swap_total_bytes, swap_free_bytes = excluded.swap_free_bytes,
                     load_1 = excluded.load_1, load_5 = excluded.load_5, load_15 = excluded.load_15,
                     uptime_seconds = excluded.uptime_seconds, process_count = excluded.process_count,
                     filesystems = excluded.filesystems, network = excluded.network
                 WHERE excluded.collected_at > host_latest_metrics.collected_at
                    OR (excluded.collected_at = host_latest_metrics.collected_at AND excluded.seq > host_latest_metrics.seq)"
            ),
            params![
                host_id,
                newest.collected_at,
                newest.seq,
                newest.cpu_percent,
                newest.memory_total_bytes,
                newest.memory_available_bytes,
                newest.swap_total_bytes,
                newest.swap_free_bytes,
                newest.load_1,
                newest.load_5,
                newest.load_15,
                newest.uptime_seconds,
                newest.process_count,
                &newest.filesystems,
                &newest.network,
            ],
        )?;
    }
    // Mark each touched hour's minutes from the earliest new sample on.
    let mut since: BTreeMap<Millis, Millis> = BTreeMap::new();
    for s in &fresh {
        since
            .entry(hour_of(s.collected_at))
            .or_insert(s.collected_at);
    }
    for (hour, since) in since {
        tx.execute(
            "INSERT INTO metric_minutes_dirty (host_id, hour, since) VALUES ($1, $2, $3)
             ON CONFLICT (host_id, hour) DO UPDATE SET since = CASE
                 WHEN excluded.since < metric_minutes_dirty.since THEN excluded.since
                 ELSE metric_minutes_dirty.since END",
            params![host_id, hour, since],
        )?;
    }
    Ok(fresh.len() as u64)
}

/// Stores the samples of `run` (sorted, all in `hour`) that the host's
/// chunks of that hour do not hold yet: a short run is appended to the
/// hour's newest chunk when it has room and the run is newer than its last
/// sample, anything else goes into new chunks. Returns the new samples.
fn store_hour<'s>(
    tx: &mut Tx<'_>,
    host_id: &str,
    hour: Millis,
    run: &[&'s Sample],
) -> Result<Vec<&'s Sample>> {
    let stored = tx.query(
        "SELECT first_at, first_seq, last_at, last_seq, samples, data FROM metric_chunks
         WHERE host_id = $1 AND first_at >= $2 AND first_at < $3",
        params![host_id, hour, hour + HOUR],
        |row| {
            Ok(StoredChunk {
                first_at: row.get(0)?,
                first_seq: row.get(1)?,
                last_at: row.get(2)?,
                last_seq: row.get(3)?,
                samples: usize::try_from(row.get::<u64>(4)?).unwrap_or(usize::MAX),
                data: row.get(5)?,
            })
        },
    )?;
    // A resend: drop what a chunk covering it already holds.
    let mut decoded: Vec<Option<Vec<Sample>>> = stored.iter().map(|_| None).collect();
    let mut fresh: Vec<&Sample> = Vec::with_capacity(run.len());
    for &s in run {
        let key = (s.collected_at, s.seq);
        let mut seen = false;
        for (i, chunk) in stored.iter().enumerate() {
            if !chunk.covers(s.collected_at, s.seq as i64) {
                continue;
            }
            if decoded[i].is_none() {
                decoded[i] = Some(decode_chunk(host_id, &chunk.data)?);
            }
            let held = decoded[i].as_deref().unwrap_or_default();
            if held
                .binary_search_by_key(&key, |h| (h.collected_at, h.seq))
                .is_ok()
            {
                seen = true;
                break;
            }
        }
        if !seen {
            fresh.push(s);
        }
    }
    let Some(first_new) = fresh.first() else {
        return Ok(fresh);
    };
    let mut rest: &[&Sample] = &fresh;
    let newest = stored
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| (c.last_at, c.last_seq));
    if let Some((i, chunk)) = newest {
        let room = CHUNK_MAX_SAMPLES.saturating_sub(chunk.samples);
        if (first_new.collected_at, first_new.seq as i64) > (chunk.last_at, chunk.last_seq)
            && room > 0
            && fresh.len() <= APPEND_MAX_RUN
        {
            let take = room.min(fresh.len());
            let mut all = match decoded[i].take() {
                Some(samples) => samples,
                None => decode_chunk(host_id, &chunk.data)?,
            };
            all.extend(fresh[..take].iter().map(|s| (*s).clone()));
            if let Some(tail) = all.last() {
                tx.execute(
                    "UPDATE metric_chunks SET last_at = $4, last_seq = $5, samples = $6, data = $7
                     WHERE host_id = $1 AND first_at = $2 AND first_seq = $3",
                    params![
                        host_id,
                        chunk.first_at,
                        chunk.first_seq,
                        tail.collected_at,
                        crate::db::seq(tail.seq)?,
                        all.len() as i64,
                        &super::chunk::encode(&all),
                    ],
                )?;
            }
            rest = &fresh[take..];
        }
    }
    for piece in rest.chunks(CHUNK_MAX_SAMPLES) {
        insert_chunk(tx, host_id, piece)?;
    }
    Ok(fresh)
}

fn decode_chunk(host_id: &str, data: &[u8]) -> Result<Vec<Sample>> {
    super::chunk::decode(data).map_err(|e| corrupt(host_id, e))
}

/// Stores `samples` (sorted, one hour, not empty) as a new chunk.
fn insert_chunk(tx: &mut Tx<'_>, host_id: &str, samples: &[&Sample]) -> Result<()> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok(());
    };
    let owned: Vec<Sample> = samples.iter().map(|s| (*s).clone()).collect();
    tx.execute(
        "INSERT INTO metric_chunks (host_id, first_at, first_seq, last_at, last_seq, samples, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        params![
            host_id,
            first.collected_at,
            crate::db::seq(first.seq)?,
            last.collected_at,
            crate::db::seq(last.seq)?,
            samples.len() as i64,
            &super::chunk::encode(&owned),
        ],
    )?;
    Ok(())
}

/// Migration 10: moves every row of the old one-row-per-sample table into
/// chunks, a host and a day at a time (the table is dropped by migration
/// 11). Runs inside the migration's transaction.
pub fn move_legacy_samples(tx: &mut Tx<'_>) -> Result<()> {
    let hosts: Vec<(String, Millis, Millis)> = tx.query(
        "SELECT host_id, MIN(collected_at), MAX(collected_at) FROM metric_samples GROUP BY host_id",
        params![],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    if let (Some(first), Some(last)) = (
        hosts.iter().map(|h| h.1).min(),
        hosts.iter().map(|h| h.2).max(),
    ) {
        super::maintenance::ensure_partitions_between(tx, first, last)?;
    }
    const DAY: Millis = 24 * HOUR;
    for (host_id, first, last) in hosts {
        let mut from = hour_of(first);
        while from <= last {
            let samples = tx.query(
                &format!(
                    "SELECT {SAMPLE_COLUMNS} FROM metric_samples
                     WHERE host_id = $1 AND collected_at >= $2 AND collected_at < $3
                     ORDER BY collected_at, seq"
                ),
                params![&host_id, from, from.saturating_add(DAY)],
                sample,
            )?;
            let refs: Vec<&Sample> = samples.iter().collect();
            for run in hour_runs(&refs) {
                for piece in run.chunks(CHUNK_MAX_SAMPLES) {
                    insert_chunk(tx, &host_id, piece)?;
                }
            }
            from = from.saturating_add(DAY);
        }
    }
    Ok(())
}

/// The samples of a host's chunks that may hold samples with
/// `from <= collected_at < to`, in stored order (not filtered, not sorted).
fn chunk_samples(tx: &mut Tx<'_>, host_id: &str, from: Millis, to: Millis) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let mut failed = None;
    tx.query_each(
        "SELECT data FROM metric_chunks
         WHERE host_id = $1 AND first_at >= $2 AND first_at < $3 AND last_at >= $4",
        params![host_id, hour_of(from), to, from],
        |row| {
            let data: Vec<u8> = row.get(0)?;
            match super::chunk::decode(&data) {
                Ok(samples) => out.extend(samples),
                Err(e) => failed = Some(e),
            }
            Ok(())
        },
    )?;
    if let Some(e) = failed {
        return Err(corrupt(host_id, e));
    }
    Ok(out)
}

/// The samples of `host_id` from each dirty hour's `since` to the end of
/// that hour (for the rollup job), oldest first.
pub(super) fn samples_since(
    tx: &mut Tx<'_>,
    host_id: &str,
    dirty: &BTreeMap<Millis, Millis>,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    // Consecutive hours are read with one query.
    let mut hours = dirty.keys().copied().peekable();
    while let Some(first) = hours.next() {
        let mut last = first;
        while hours.peek() == Some(&(last + HOUR)) {
            last += HOUR;
            hours.next();
        }
        for s in chunk_samples(tx, host_id, first, last + HOUR)? {
            let hour = hour_of(s.collected_at);
            if dirty
                .get(&hour)
                .is_some_and(|&since| s.collected_at >= since)
            {
                out.push(s);
            }
        }
    }
    out.sort_by_key(|s| (s.collected_at, s.seq));
    Ok(out)
}

/// The host's newest sample.
pub fn latest(tx: &mut Tx<'_>, host_id: &str) -> Result<Option<Sample>> {
    tx.query_opt(
        &format!("SELECT {SAMPLE_COLUMNS} FROM host_latest_metrics WHERE host_id = $1"),
        params![host_id],
        sample,
    )
}

/// Samples with `from <= collected_at < to`, oldest first, at most `limit`.
pub fn between(
    tx: &mut Tx<'_>,
    host_id: &str,
    from: Millis,
    to: Millis,
    limit: u32,
) -> Result<Vec<Sample>> {
    let mut samples = chunk_samples(tx, host_id, from, to)?;
    samples.retain(|s| s.collected_at >= from && s.collected_at < to);
    samples.sort_by_key(|s| (s.collected_at, s.seq));
    samples.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(samples)
}

/// Rollups of `resolution` with `from <= bucket < to`, oldest first.
pub fn rollups(
    tx: &mut Tx<'_>,
    host_id: &str,
    resolution: Resolution,
    from: Millis,
    to: Millis,
) -> Result<Vec<Rollup>> {
    tx.query(
        "SELECT bucket, samples, cpu_avg, cpu_max, memory_used_avg, memory_used_max, memory_total, swap_used_avg,
                load_1_avg, load_1_max, process_count_avg
         FROM metric_rollups WHERE host_id = $1 AND resolution = $2 AND bucket >= $3 AND bucket < $4
         ORDER BY bucket",
        params![host_id, resolution.millis(), from, to],
        |row| {
            Ok(Rollup {
                bucket: row.get(0)?,
                samples: row.get(1)?,
                cpu_avg: row.get(2)?,
                cpu_max: row.get(3)?,
                memory_used_avg: row.get(4)?,
                memory_used_max: row.get(5)?,
                memory_total: row.get(6)?,
                swap_used_avg: row.get(7)?,
                load_1_avg: row.get(8)?,
                load_1_max: row.get(9)?,
                process_count_avg: row.get(10)?,
            })
        },
    )
}

/// The record sequences of a host's stored samples, ascending.
pub fn seqs(tx: &mut Tx<'_>, host_id: &str) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let mut failed = None;
    tx.query_each(
        "SELECT data FROM metric_chunks WHERE host_id = $1",
        params![host_id],
        |row| {
            let data: Vec<u8> = row.get(0)?;
            match super::chunk::decode(&data) {
                Ok(samples) => seqs.extend(samples.iter().map(|s| s.seq)),
                Err(e) => failed = Some(e),
            }
            Ok(())
        },
    )?;
    if let Some(e) = failed {
        return Err(corrupt(host_id, e));
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Removes every sample and rollup of a host (the host is being deleted).
pub fn delete_host(tx: &mut Tx<'_>, host_id: &str) -> Result<()> {
    for table in [
        "metric_chunks",
        "metric_rollups",
        "metric_rollups_dirty",
        "metric_minutes_dirty",
        "host_latest_metrics",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE host_id = $1"),
            params![host_id],
        )?;
    }
    Ok(())
}
