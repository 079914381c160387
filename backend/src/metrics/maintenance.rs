//! Work on stored metrics that runs in the background: rolling samples up,
//! retention, and (PostgreSQL) the daily partitions of `metric_chunks`.
//!
//! Every step is idempotent and safe to run from two places at once: a
//! rollup is recomputed from what is stored, and the buckets to recompute
//! are claimed (deleted from `metric_rollups_dirty`) in the same statement
//! or transaction that reads the samples, so a sample committed later marks
//! its bucket dirty again instead of being missed.

use std::collections::BTreeMap;

use crate::config::MetricsConfig;
use crate::db::{Db, Dialect, Lock, Millis, Result, Tx};
use crate::params;

const DAY_MS: Millis = 86_400_000;
/// Days of partitions created ahead of today (an agent clock a little fast
/// still lands in a partition).
const PARTITIONS_AHEAD: i64 = 3;

const ROLLUP_COLUMNS: &str = "host_id, resolution, bucket, samples, cpu_avg, cpu_max, memory_used_avg, \
     memory_used_max, memory_total, swap_used_avg, load_1_avg, load_1_max, process_count_avg";

const ROLLUP_UPSERT: &str = "ON CONFLICT (host_id, resolution, bucket) DO UPDATE SET
     samples = excluded.samples, cpu_avg = excluded.cpu_avg, cpu_max = excluded.cpu_max,
     memory_used_avg = excluded.memory_used_avg, memory_used_max = excluded.memory_used_max,
     memory_total = excluded.memory_total, swap_used_avg = excluded.swap_used_avg,
     load_1_avg = excluded.load_1_avg, load_1_max = excluded.load_1_max,
     process_count_avg = excluded.process_count_avg";

/// Aggregates of minute rollups per claimed hour bucket `d`, weighted by
/// their sample counts.
const HOUR_AGGREGATE: &str = "SELECT d.host_id, 3600000, d.bucket, CAST(SUM(r.samples) AS BIGINT),
       SUM(r.cpu_avg * r.samples) / SUM(r.samples), MAX(r.cpu_max),
       SUM(r.memory_used_avg * r.samples) / SUM(r.samples), MAX(r.memory_used_max), MAX(r.memory_total),
       SUM(r.swap_used_avg * r.samples) / SUM(r.samples),
       SUM(r.load_1_avg * r.samples) / SUM(r.samples), MAX(r.load_1_max),
       SUM(r.process_count_avg * r.samples) / SUM(r.samples)
     FROM claimed d
     JOIN metric_rollups r ON r.host_id = d.host_id AND r.resolution = 60000
                           AND r.bucket >= d.bucket AND r.bucket < d.bucket + 3600000
     WHERE true
     GROUP BY d.host_id, d.bucket";

/// What one rollup pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollupReport {
    pub minute_buckets: u64,
    pub hour_buckets: u64,
}

/// Recomputes every dirty bucket: minutes from samples, then hours from
/// minutes.
pub fn roll_up(tx: &mut Tx<'_>) -> Result<RollupReport> {
    // Claim the dirty minutes (per host and hour, from `since` on) and mark
    // their hours dirty.
    let claimed: Vec<(String, Millis, Millis)> = match tx.dialect() {
        // SQLite: the transaction holds the database's write lock, so
        // reading the dirty list, aggregating and clearing it cannot
        // interleave with ingest.
        Dialect::Sqlite => {
            let claimed = tx.query(
                "SELECT host_id, hour, since FROM metric_minutes_dirty",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            tx.execute(
                "INSERT INTO metric_rollups_dirty (host_id, resolution, bucket)
                 SELECT host_id, 3600000, hour FROM metric_minutes_dirty WHERE true
                 ON CONFLICT DO NOTHING",
                params![],
            )?;
            tx.execute("DELETE FROM metric_minutes_dirty", params![])?;
            claimed
        }
        // PostgreSQL: the claim is a `DELETE ... RETURNING`; an ingest that
        // commits meanwhile waits on the claimed row and then marks its
        // hour dirty anew, so its samples are rolled up by the next pass.
        Dialect::Postgres => tx.query(
            "WITH claimed AS (DELETE FROM metric_minutes_dirty RETURNING host_id, hour, since),
                  hours AS (INSERT INTO metric_rollups_dirty (host_id, resolution, bucket)
                            SELECT DISTINCT host_id, 3600000, hour FROM claimed
                            ON CONFLICT DO NOTHING)
             SELECT host_id, hour, since FROM claimed",
            params![],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?,
    };
    let minute_buckets = roll_up_minutes(tx, claimed)?;
    let claimed = match tx.dialect() {
        Dialect::Sqlite => {
            "WITH claimed AS (SELECT host_id, bucket FROM metric_rollups_dirty WHERE resolution = 3600000) "
        }
        Dialect::Postgres => {
            "WITH claimed AS (DELETE FROM metric_rollups_dirty WHERE resolution = 3600000 RETURNING host_id, bucket) "
        }
    };
    let hour_buckets = tx.execute(
        &format!("{claimed}INSERT INTO metric_rollups ({ROLLUP_COLUMNS}) {HOUR_AGGREGATE} {ROLLUP_UPSERT}"),
        params![],
    )?;
    if tx.dialect() == Dialect::Sqlite {
        tx.execute(
            "DELETE FROM metric_rollups_dirty WHERE resolution = 3600000",
            params![],
        )?;
    }
    Ok(RollupReport {
        minute_buckets,
        hour_buckets,
    })
}

/// Sums of one minute bucket's samples.
#[derive(Default)]
struct MinuteSums {
    samples: u64,
    cpu_sum: f64,
    cpu_max: f64,
    memory_used_sum: f64,
    memory_used_max: i128,
    memory_total_max: u64,
    swap_used_sum: f64,
    load_1_sum: f64,
    load_1_max: f64,
    process_count_sum: f64,
}

impl MinuteSums {
    fn add(&mut self, s: &super::Sample) {
        // Used memory as the old SQL computed it: total minus available,
        // which a confused kernel report could make negative.
        let memory_used = i128::from(s.memory_total_bytes) - i128::from(s.memory_available_bytes);
        let swap_used = i128::from(s.swap_total_bytes) - i128::from(s.swap_free_bytes);
        if self.samples == 0 {
            self.cpu_max = s.cpu_percent;
            self.memory_used_max = memory_used;
            self.load_1_max = s.load_1;
        }
        self.samples += 1;
        self.cpu_sum += s.cpu_percent;
        self.cpu_max = self.cpu_max.max(s.cpu_percent);
        self.memory_used_sum += memory_used as f64;
        self.memory_used_max = self.memory_used_max.max(memory_used);
        self.memory_total_max = self.memory_total_max.max(s.memory_total_bytes);
        self.swap_used_sum += swap_used as f64;
        self.load_1_sum += s.load_1;
        self.load_1_max = self.load_1_max.max(s.load_1);
        self.process_count_sum += f64::from(s.process_count);
    }
}

/// Recomputes the minute buckets of each claimed hour from its `since` on,
/// from the samples stored in them (a bucket without samples is left
/// alone). Returns how many were written.
fn roll_up_minutes(tx: &mut Tx<'_>, claimed: Vec<(String, Millis, Millis)>) -> Result<u64> {
    let mut by_host: BTreeMap<String, BTreeMap<Millis, Millis>> = BTreeMap::new();
    for (host, hour, since) in claimed {
        // Whole minutes: the bucket `since` falls in is recomputed entirely.
        let since = since - since.rem_euclid(60_000);
        by_host.entry(host).or_default().insert(hour, since);
    }
    let mut written = 0;
    for (host, dirty) in by_host {
        let mut sums: BTreeMap<Millis, MinuteSums> = BTreeMap::new();
        for sample in super::store::samples_since(tx, &host, &dirty)? {
            let bucket = sample.collected_at - sample.collected_at.rem_euclid(60_000);
            sums.entry(bucket).or_default().add(&sample);
        }
        for (bucket, m) in sums {
            let n = m.samples as f64;
            written += tx.execute(
                &format!(
                    "INSERT INTO metric_rollups ({ROLLUP_COLUMNS})
                     VALUES ($1, 60000, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) {ROLLUP_UPSERT}"
                ),
                params![
                    &host,
                    bucket,
                    crate::db::counter(m.samples),
                    m.cpu_sum / n,
                    m.cpu_max,
                    m.memory_used_sum / n,
                    i64::try_from(m.memory_used_max).unwrap_or(if m.memory_used_max < 0 { i64::MIN } else { i64::MAX }),
                    crate::db::counter(m.memory_total_max),
                    m.swap_used_sum / n,
                    m.load_1_sum / n,
                    m.load_1_max,
                    m.process_count_sum / n,
                ],
            )?;
        }
    }
    Ok(written)
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub samples: u64,
    pub partitions_dropped: u64,
    pub rollups: u64,
}

fn days(n: u32) -> Millis {
    Millis::from(n) * DAY_MS
}

/// Deletes what is older than the configured retention. SQLite deletes
/// samples an hour of data at a time (short write transactions, so ingest
/// is never held up long); PostgreSQL drops whole daily partitions.
pub fn apply_retention(db: &Db, now: Millis, config: &MetricsConfig) -> Result<RetentionReport> {
    let mut report = RetentionReport::default();
    let raw_cutoff = now.saturating_sub(days(config.raw_retention_days));
    match db.dialect() {
        // A chunk never spans an hour, so every chunk that starts before
        // the cutoff's hour ends before the cutoff: retention is exact to
        // the hour (at most an hour more is kept).
        Dialect::Sqlite => loop {
            let cutoff_hour = raw_cutoff - raw_cutoff.rem_euclid(3_600_000);
            let oldest: Option<Millis> = db.read_blocking("metrics retention", |tx| {
                tx.query_one(
                    "SELECT MIN(first_at) FROM metric_chunks",
                    params![],
                    |row| row.get(0),
                )
            })?;
            let Some(oldest) = oldest.filter(|&o| o < cutoff_hour) else {
                break;
            };
            let upto = oldest.saturating_add(3_600_000).min(cutoff_hour);
            report.samples += db.write_blocking("metrics retention", |tx| {
                let samples: Option<i64> = tx.query_one(
                    "SELECT SUM(samples) FROM metric_chunks WHERE first_at < $1",
                    params![upto],
                    |row| row.get(0),
                )?;
                tx.execute(
                    "DELETE FROM metric_chunks WHERE first_at < $1",
                    params![upto],
                )?;
                Ok(u64::try_from(samples.unwrap_or(0)).unwrap_or(0))
            })?;
        },
        Dialect::Postgres => {
            let (dropped, deleted) = db.write_blocking("metrics retention", |tx| {
                tx.lock(Lock::Partitions)?;
                let mut dropped = 0;
                for (name, day) in partitions(tx)? {
                    if (day + 1) * DAY_MS <= raw_cutoff {
                        tx.batch(&format!("DROP TABLE {name}"))?;
                        dropped += 1;
                    }
                }
                let deleted: Option<i64> = tx.query_one(
                    "WITH gone AS (DELETE FROM metric_chunks_default WHERE last_at < $1 RETURNING samples)
                     SELECT CAST(SUM(samples) AS BIGINT) FROM gone",
                    params![raw_cutoff],
                    |row| row.get(0),
                )?;
                let deleted = u64::try_from(deleted.unwrap_or(0)).unwrap_or(0);
                Ok((dropped, deleted))
            })?;
            report.partitions_dropped = dropped;
            report.samples = deleted;
        }
    }
    let minute_cutoff = now.saturating_sub(days(config.minute_retention_days));
    let hour_cutoff = now.saturating_sub(days(config.hour_retention_days));
    report.rollups = db.write_blocking("metrics retention", |tx| {
        let minutes = tx.execute(
            "DELETE FROM metric_rollups WHERE resolution = 60000 AND bucket < $1",
            params![minute_cutoff],
        )?;
        let hours = tx.execute(
            "DELETE FROM metric_rollups WHERE resolution = 3600000 AND bucket < $1",
            params![hour_cutoff],
        )?;
        Ok(minutes + hours)
    })?;
    Ok(report)
}

/// The daily partitions of `metric_chunks`: (table name, day number since
/// the epoch).
fn partitions(tx: &mut Tx<'_>) -> Result<Vec<(String, i64)>> {
    let names: Vec<String> = tx.query(
        "SELECT c.relname::text FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'metric_chunks' AND p.relnamespace = to_regnamespace(current_schema())::oid",
        params![],
        |row| row.get(0),
    )?;
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let day = partition_day(&name)?;
            Some((name, day))
        })
        .collect())
}

/// `metric_chunks_p20251124` → the day number of 2025-11-24.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("metric_chunks_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..].parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(i64::from(
        date.to_julian_day()
            - time::Date::from_calendar_date(1970, time::Month::January, 1)
                .ok()?
                .to_julian_day(),
    ))
}

/// The partition name of day number `day`.
fn partition_name(day: i64) -> Option<String> {
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?;
    let date =
        time::Date::from_julian_day(epoch.to_julian_day() + i32::try_from(day).ok()?).ok()?;
    Some(format!(
        "metric_chunks_p{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// PostgreSQL: creates the partitions of yesterday through
/// [`PARTITIONS_AHEAD`] days ahead that do not exist yet. Rows the default
/// partition already holds for such a day (an agent clock far ahead) move
/// into the new partition in the same transaction.
pub fn ensure_partitions(tx: &mut Tx<'_>, now: Millis) -> Result<u64> {
    let today = now.div_euclid(DAY_MS);
    ensure_days(tx, today - 1, today + PARTITIONS_AHEAD)
}

/// PostgreSQL: the partitions of every day from `first` to `last` (times),
/// for a copy of older data.
pub fn ensure_partitions_between(tx: &mut Tx<'_>, first: Millis, last: Millis) -> Result<u64> {
    ensure_days(tx, first.div_euclid(DAY_MS), last.div_euclid(DAY_MS))
}

fn ensure_days(tx: &mut Tx<'_>, first_day: i64, last_day: i64) -> Result<u64> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(0);
    }
    tx.lock(Lock::Partitions)?;
    let existing: std::collections::BTreeSet<i64> =
        partitions(tx)?.into_iter().map(|(_, day)| day).collect();
    let mut created = 0;
    for day in first_day..=last_day {
        if existing.contains(&day) {
            continue;
        }
        let Some(name) = partition_name(day) else {
            continue;
        };
        let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
        tx.batch(&format!(
            "CREATE TABLE {name} (LIKE metric_chunks INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             WITH moved AS (DELETE FROM metric_chunks_default WHERE first_at >= {from} AND first_at < {to} RETURNING *)
             INSERT INTO {name} SELECT * FROM moved;
             ALTER TABLE metric_chunks ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({to});"
        ))?;
        created += 1;
    }
    Ok(created)
}

/// Runs the metric jobs forever: partitions and rollups every minute,
/// retention every hour. Errors are logged and retried at the next turn.
pub async fn run(db: Db, config: MetricsConfig) {
    let mut minute = tokio::time::interval(std::time::Duration::from_secs(60));
    minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention: Option<Millis> = None;
    loop {
        minute.tick().await;
        let now = crate::now_millis();
        if let Err(e) = db
            .write("metric partitions", move |tx| ensure_partitions(tx, now))
            .await
        {
            tracing::warn!(error = %e, "creating metric partitions failed");
        }
        match db.write("metric rollups", roll_up).await {
            Ok(report) => tracing::debug!(?report, "metric rollups"),
            Err(e) => tracing::warn!(error = %e, "metric rollups failed"),
        }
        if last_retention.is_none_or(|at| now - at >= 3_600_000) {
            last_retention = Some(now);
            let (db, config) = (db.clone(), config.clone());
            match tokio::task::spawn_blocking(move || apply_retention(&db, now, &config)).await {
                Ok(Ok(report)) => tracing::info!(?report, "metric retention"),
                Ok(Err(e)) => tracing::warn!(error = %e, "metric retention failed"),
                Err(e) => tracing::warn!(error = %e, "metric retention task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let day = 1_764_000_000_000 / DAY_MS;
        let name = partition_name(day).expect("a name");
        assert_eq!(name, "metric_chunks_p20251124");
        assert_eq!(partition_day(&name), Some(day));
        assert_eq!(partition_day("metric_chunks_default"), None);
        assert_eq!(partition_day("metric_chunks_p2025112"), None);
        assert_eq!(partition_day("metric_chunks_p20251340"), None);
    }
}
