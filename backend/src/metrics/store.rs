//! Metric queries: batched ingest, the latest sample, series for charts.

use std::collections::BTreeSet;

use super::{Filesystem, NetworkCounters, Resolution, Rollup, Sample};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Dialect, Millis, Result, Row, Tx, counter};
use crate::params;

/// The columns of a sample, in the order [`sample_at`] reads them, for both
/// `metric_samples` and `host_latest_metrics`.
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

/// Stores a batch of one host's samples; a sample already stored (same
/// host, time and sequence) is left as it is. Also moves the host's latest
/// sample and marks the touched 1-minute buckets for the rollup job.
/// Returns how many samples were new.
pub fn insert_samples(tx: &mut Tx<'_>, host_id: &str, samples: &[&Sample]) -> Result<u64> {
    if samples.is_empty() {
        return Ok(0);
    }
    let rows = samples
        .iter()
        .map(|s| SampleRow::of(s))
        .collect::<Result<Vec<_>>>()?;
    let inserted = match tx.dialect() {
        Dialect::Sqlite => insert_sqlite(tx, host_id, &rows)?,
        Dialect::Postgres => insert_postgres(tx, host_id, &rows)?,
    };
    // The newest of the batch replaces the host's latest if it is newer.
    if let Some(newest) = rows.iter().max_by_key(|r| (r.collected_at, r.seq)) {
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
    let minute = Resolution::Minute.millis();
    let buckets: BTreeSet<Millis> = rows
        .iter()
        .map(|r| r.collected_at - r.collected_at.rem_euclid(minute))
        .collect();
    for bucket in buckets {
        tx.execute(
            "INSERT INTO metric_rollups_dirty (host_id, resolution, bucket) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            params![host_id, minute, bucket],
        )?;
    }
    Ok(inserted)
}

fn insert_sqlite(tx: &mut Tx<'_>, host_id: &str, rows: &[SampleRow]) -> Result<u64> {
    let Some(conn) = tx.sqlite() else {
        return Err(DbError::database(
            "insert samples",
            "not a SQLite transaction",
        ));
    };
    let sql = format!(
        "INSERT INTO metric_samples ({INSERT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT DO NOTHING"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| DbError::database("insert samples", e))?;
    let mut inserted = 0u64;
    for r in rows {
        inserted += stmt
            .execute(rusqlite::params![
                host_id,
                r.collected_at,
                r.seq,
                r.cpu_percent,
                r.memory_total_bytes,
                r.memory_available_bytes,
                r.swap_total_bytes,
                r.swap_free_bytes,
                r.load_1,
                r.load_5,
                r.load_15,
                r.uptime_seconds,
                r.process_count,
                r.filesystems,
                r.network,
            ])
            .map_err(|e| DbError::database("insert samples", e))? as u64;
    }
    Ok(inserted)
}

/// One statement for the whole batch: the columns travel as arrays and
/// `UNNEST` turns them back into rows.
fn insert_postgres(tx: &mut Tx<'_>, host_id: &str, rows: &[SampleRow]) -> Result<u64> {
    let collected: Vec<i64> = rows.iter().map(|r| r.collected_at).collect();
    let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let cpu: Vec<f64> = rows.iter().map(|r| r.cpu_percent).collect();
    let mem_total: Vec<i64> = rows.iter().map(|r| r.memory_total_bytes).collect();
    let mem_avail: Vec<i64> = rows.iter().map(|r| r.memory_available_bytes).collect();
    let swap_total: Vec<i64> = rows.iter().map(|r| r.swap_total_bytes).collect();
    let swap_free: Vec<i64> = rows.iter().map(|r| r.swap_free_bytes).collect();
    let load_1: Vec<f64> = rows.iter().map(|r| r.load_1).collect();
    let load_5: Vec<f64> = rows.iter().map(|r| r.load_5).collect();
    let load_15: Vec<f64> = rows.iter().map(|r| r.load_15).collect();
    let uptime: Vec<i64> = rows.iter().map(|r| r.uptime_seconds).collect();
    let procs: Vec<i64> = rows.iter().map(|r| r.process_count).collect();
    let filesystems: Vec<&str> = rows.iter().map(|r| r.filesystems.as_str()).collect();
    let network: Vec<&str> = rows.iter().map(|r| r.network.as_str()).collect();
    tx.pg_execute(
        &format!(
            "INSERT INTO metric_samples ({INSERT_COLUMNS})
             SELECT $1, * FROM UNNEST($2::int8[], $3::int8[], $4::float8[], $5::int8[], $6::int8[], $7::int8[],
                                      $8::int8[], $9::float8[], $10::float8[], $11::float8[], $12::int8[], $13::int8[],
                                      $14::text[], $15::text[])
             ON CONFLICT DO NOTHING"
        ),
        &[
            &host_id,
            &collected,
            &seq,
            &cpu,
            &mem_total,
            &mem_avail,
            &swap_total,
            &swap_free,
            &load_1,
            &load_5,
            &load_15,
            &uptime,
            &procs,
            &filesystems,
            &network,
        ],
    )
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
    tx.query(
        &format!(
            "SELECT {SAMPLE_COLUMNS} FROM metric_samples
             WHERE host_id = $1 AND collected_at >= $2 AND collected_at < $3
             ORDER BY collected_at, seq LIMIT $4"
        ),
        params![host_id, from, to, limit],
        sample,
    )
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
    tx.query(
        "SELECT seq FROM metric_samples WHERE host_id = $1 ORDER BY seq",
        params![host_id],
        |row| row.get(0),
    )
}

/// Removes every sample and rollup of a host (the host is being deleted).
pub fn delete_host(tx: &mut Tx<'_>, host_id: &str) -> Result<()> {
    for table in [
        "metric_samples",
        "metric_rollups",
        "metric_rollups_dirty",
        "host_latest_metrics",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE host_id = $1"),
            params![host_id],
        )?;
    }
    Ok(())
}
