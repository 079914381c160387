//! Work on stored metrics that runs in the background: rolling samples up,
//! retention, and (PostgreSQL) the daily partitions of `metric_samples`.
//!
//! Every step is idempotent and safe to run from two places at once: a
//! rollup is recomputed from what is stored, and the buckets to recompute
//! are claimed (deleted from `metric_rollups_dirty`) in the same statement
//! or transaction that reads the samples, so a sample committed later marks
//! its bucket dirty again instead of being missed.

use super::Resolution;
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

/// Aggregates of raw samples per claimed minute bucket `d`.
const MINUTE_AGGREGATE: &str = "SELECT d.host_id, 60000, d.bucket, COUNT(*),
       CAST(AVG(s.cpu_percent) AS DOUBLE PRECISION), MAX(s.cpu_percent),
       CAST(AVG(s.memory_total_bytes - s.memory_available_bytes) AS DOUBLE PRECISION),
       MAX(s.memory_total_bytes - s.memory_available_bytes), MAX(s.memory_total_bytes),
       CAST(AVG(s.swap_total_bytes - s.swap_free_bytes) AS DOUBLE PRECISION),
       CAST(AVG(s.load_1) AS DOUBLE PRECISION), MAX(s.load_1),
       CAST(AVG(s.process_count) AS DOUBLE PRECISION)
     FROM claimed d
     JOIN metric_samples s ON s.host_id = d.host_id AND s.collected_at >= d.bucket AND s.collected_at < d.bucket + 60000
     WHERE true
     GROUP BY d.host_id, d.bucket";

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
    match tx.dialect() {
        Dialect::Sqlite => roll_up_sqlite(tx),
        Dialect::Postgres => roll_up_postgres(tx),
    }
}

/// SQLite: the transaction holds the database's write lock, so reading the
/// dirty list, aggregating and clearing it cannot interleave with ingest.
fn roll_up_sqlite(tx: &mut Tx<'_>) -> Result<RollupReport> {
    let mut report = RollupReport::default();
    for (resolution, aggregate) in [
        (Resolution::Minute, MINUTE_AGGREGATE),
        (Resolution::Hour, HOUR_AGGREGATE),
    ] {
        let claimed = format!(
            "WITH claimed AS (SELECT host_id, bucket FROM metric_rollups_dirty WHERE resolution = {}) ",
            resolution.millis()
        );
        let changed = tx.execute(
            &format!(
                "{claimed}INSERT INTO metric_rollups ({ROLLUP_COLUMNS}) {aggregate} {ROLLUP_UPSERT}"
            ),
            params![],
        )?;
        if resolution == Resolution::Minute {
            tx.execute(
                "INSERT INTO metric_rollups_dirty (host_id, resolution, bucket)
                 SELECT DISTINCT host_id, 3600000, bucket - (bucket % 3600000) FROM metric_rollups_dirty
                 WHERE resolution = 60000
                 ON CONFLICT DO NOTHING",
                params![],
            )?;
            report.minute_buckets = changed;
        } else {
            report.hour_buckets = changed;
        }
        tx.execute(
            "DELETE FROM metric_rollups_dirty WHERE resolution = $1",
            params![resolution.millis()],
        )?;
    }
    Ok(report)
}

/// PostgreSQL: each statement claims its dirty buckets (`DELETE ...
/// RETURNING`) and aggregates them in one snapshot; an ingest that commits
/// meanwhile waits on the claimed row and then marks its bucket dirty anew.
fn roll_up_postgres(tx: &mut Tx<'_>) -> Result<RollupReport> {
    let minute = tx.execute(
        &format!(
            "WITH claimed AS (DELETE FROM metric_rollups_dirty WHERE resolution = 60000 RETURNING host_id, bucket),
                  hours AS (INSERT INTO metric_rollups_dirty (host_id, resolution, bucket)
                            SELECT DISTINCT host_id, 3600000, bucket - (bucket % 3600000) FROM claimed
                            ON CONFLICT DO NOTHING)
             INSERT INTO metric_rollups ({ROLLUP_COLUMNS}) {MINUTE_AGGREGATE} {ROLLUP_UPSERT}"
        ),
        params![],
    )?;
    let hour = tx.execute(
        &format!(
            "WITH claimed AS (DELETE FROM metric_rollups_dirty WHERE resolution = 3600000 RETURNING host_id, bucket)
             INSERT INTO metric_rollups ({ROLLUP_COLUMNS}) {HOUR_AGGREGATE} {ROLLUP_UPSERT}"
        ),
        params![],
    )?;
    Ok(RollupReport {
        minute_buckets: minute,
        hour_buckets: hour,
    })
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
        Dialect::Sqlite => loop {
            let oldest: Option<Millis> = db.read_blocking("metrics retention", |tx| {
                tx.query_one(
                    "SELECT MIN(collected_at) FROM metric_samples",
                    params![],
                    |row| row.get(0),
                )
            })?;
            let Some(oldest) = oldest.filter(|&o| o < raw_cutoff) else {
                break;
            };
            let upto = oldest.saturating_add(3_600_000).min(raw_cutoff);
            report.samples += db.write_blocking("metrics retention", |tx| {
                tx.execute(
                    "DELETE FROM metric_samples WHERE collected_at < $1",
                    params![upto],
                )
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
                let deleted = tx.execute(
                    "DELETE FROM metric_samples_default WHERE collected_at < $1",
                    params![raw_cutoff],
                )?;
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

/// The daily partitions of `metric_samples`: (table name, day number since
/// the epoch).
fn partitions(tx: &mut Tx<'_>) -> Result<Vec<(String, i64)>> {
    let names: Vec<String> = tx.query(
        "SELECT c.relname::text FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'metric_samples' AND p.relnamespace = to_regnamespace(current_schema())::oid",
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

/// `metric_samples_p20251124` → the day number of 2025-11-24.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("metric_samples_p")?;
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
        "metric_samples_p{:04}{:02}{:02}",
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
            "CREATE TABLE {name} (LIKE metric_samples INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             WITH moved AS (DELETE FROM metric_samples_default WHERE collected_at >= {from} AND collected_at < {to} RETURNING *)
             INSERT INTO {name} SELECT * FROM moved;
             ALTER TABLE metric_samples ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({to});"
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
        assert_eq!(name, "metric_samples_p20251124");
        assert_eq!(partition_day(&name), Some(day));
        assert_eq!(partition_day("metric_samples_default"), None);
        assert_eq!(partition_day("metric_samples_p2025112"), None);
        assert_eq!(partition_day("metric_samples_p20251340"), None);
    }
}
