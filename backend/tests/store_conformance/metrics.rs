//! Metric samples, rollups, retention and partitions.

use palisade_backend::config::MetricsConfig;
use palisade_backend::db::{Dialect, Millis};
use palisade_backend::metrics::{Resolution, Sample, maintenance, store};
use palisade_proto::msg::Record;

use crate::{Ctx, HOUR, T0, conformance, metrics, rec};

conformance!(
    between_is_half_open_ordered_and_limited,
    rollups_aggregate_minutes_and_hours_and_follow_late_samples,
    retention_removes_what_is_older_than_configured,
    a_trickle_fills_one_chunk_per_hour_and_resends_are_stored_once,
    samples_of_a_version_9_database_move_into_chunks,
);

const DAY: Millis = 24 * HOUR;

async fn between_is_half_open_ordered_and_limited(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let batch: Vec<Record> = [(1, 3000), (2, 1000), (3, 2000), (4, 4000), (5, 5000)]
        .into_iter()
        .map(|(seq, at)| rec(seq, metrics(T0 + at, seq as f64)))
        .collect();
    ctx.store("h1", T0, batch).await.unwrap();
    let between = |from: Millis, to: Millis, limit: u32| {
        let db = ctx.db.clone();
        async move {
            db.read("t", move |tx| store::between(tx, "h1", from, to, limit))
                .await
                .unwrap()
                .into_iter()
                .map(|m: Sample| m.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(between(T0 + 1000, T0 + 4000, 100).await, [2, 3, 1]);
    assert_eq!(between(T0 + 1000, T0 + 4000, 2).await, [2, 3]);
    assert!(between(T0, T0 + 1000, 100).await.is_empty());
    assert!(between(T0, T0 + 10_000, 0).await.is_empty());
    let nobody = ctx
        .db
        .read("t", |tx| store::between(tx, "nope", T0, T0 + 10_000, 10))
        .await
        .unwrap();
    assert!(nobody.is_empty());
    // Latest by collection time, not by sequence.
    let latest = ctx
        .db
        .read("t", |tx| store::latest(tx, "h1"))
        .await
        .unwrap();
    assert_eq!(latest.map(|m| m.seq), Some(5));
    assert!(
        ctx.db
            .read("t", |tx| store::latest(tx, "nope"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        ctx.db
            .read("t", |tx| store::seqs(tx, "nope"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn roll_up(ctx: &Ctx) -> maintenance::RollupReport {
    ctx.db.write("t", maintenance::roll_up).await.unwrap()
}

async fn rollups_aggregate_minutes_and_hours_and_follow_late_samples(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    // Aligned to an hour: two samples in minute 0, one in minute 1, one in
    // the next hour.
    let hour0 = T0 - T0 % HOUR;
    ctx.store(
        "h1",
        T0,
        vec![
            rec(1, metrics(hour0 + 1_000, 10.0)),
            rec(2, metrics(hour0 + 31_000, 30.0)),
            rec(3, metrics(hour0 + 61_000, 50.0)),
            rec(4, metrics(hour0 + HOUR + 5_000, 70.0)),
        ],
    )
    .await
    .unwrap();
    let report = roll_up(&ctx).await;
    assert_eq!((report.minute_buckets, report.hour_buckets), (3, 2));
    let minutes = ctx
        .db
        .read("t", move |tx| {
            store::rollups(tx, "h1", Resolution::Minute, hour0, hour0 + 2 * HOUR)
        })
        .await
        .unwrap();
    let summary: Vec<(Millis, u64, f64, f64)> = minutes
        .iter()
        .map(|r| (r.bucket - hour0, r.samples, r.cpu_avg, r.cpu_max))
        .collect();
    assert_eq!(
        summary,
        [
            (0, 2, 20.0, 30.0),
            (60_000, 1, 50.0, 50.0),
            (HOUR, 1, 70.0, 70.0)
        ]
    );
    assert_eq!(minutes[0].memory_used_avg, (8u64 << 30) as f64);
    assert_eq!(minutes[0].memory_total, 16 << 30);
    let hours = ctx
        .db
        .read("t", move |tx| {
            store::rollups(tx, "h1", Resolution::Hour, hour0, hour0 + 2 * HOUR)
        })
        .await
        .unwrap();
    let summary: Vec<(Millis, u64, f64, f64)> = hours
        .iter()
        .map(|r| (r.bucket - hour0, r.samples, r.cpu_avg, r.cpu_max))
        .collect();
    assert_eq!(
        summary,
        [(0, 3, 30.0, 50.0), (HOUR, 1, 70.0, 70.0)],
        "weighted by samples"
    );

    // Nothing dirty: a second pass changes nothing.
    assert_eq!(roll_up(&ctx).await, maintenance::RollupReport::default());
    // A late sample in minute 0 is rolled up at the next pass, hour too
    // (its hour's minutes are recomputed from minute 0 on: minutes 0 and 1).
    ctx.store("h1", T0 + 1, vec![rec(5, metrics(hour0 + 2_000, 80.0))])
        .await
        .unwrap();
    assert_eq!(
        roll_up(&ctx).await,
        maintenance::RollupReport {
            minute_buckets: 2,
            hour_buckets: 1
        }
    );
    let minute0 = ctx
        .db
        .read("t", move |tx| {
            store::rollups(tx, "h1", Resolution::Minute, hour0, hour0 + 1)
        })
        .await
        .unwrap();
    assert_eq!(
        (minute0[0].samples, minute0[0].cpu_avg, minute0[0].cpu_max),
        (3, 40.0, 80.0)
    );
    let hour = ctx
        .db
        .read("t", move |tx| {
            store::rollups(tx, "h1", Resolution::Hour, hour0, hour0 + 1)
        })
        .await
        .unwrap();
    assert_eq!((hour[0].samples, hour[0].cpu_avg), (4, 42.5));
}

async fn retention_removes_what_is_older_than_configured(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let now = T0 + 30 * DAY;
    if ctx.dialect() == Dialect::Postgres {
        // Partitions for the days the samples fall on, as the background
        // job would have made them on those days.
        ctx.db
            .write("t", move |tx| {
                maintenance::ensure_partitions_between(tx, now - 12 * DAY, now)
            })
            .await
            .unwrap();
    }
    let ages = [20 * DAY, 10 * DAY, 3 * DAY, HOUR];
    let batch: Vec<Record> = ages
        .iter()
        .enumerate()
        .map(|(i, age)| rec(i as u64 + 1, metrics(now - age, 1.0)))
        .collect();
    ctx.store("h1", now, batch).await.unwrap();
    roll_up(&ctx).await;
    assert_eq!(
        ctx.count("SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks")
            .await,
        4
    );
    if ctx.dialect() == Dialect::Postgres {
        // Samples go to their day's partition; only the one of 20 days ago
        // (no partition) is in the default one.
        assert_eq!(
            ctx.count(
                "SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks_default"
            )
            .await,
            1
        );
    }
    let config = MetricsConfig {
        raw_retention_days: 8,
        minute_retention_days: 15,
        hour_retention_days: 90,
    };
    let db = ctx.db.clone();
    let report =
        tokio::task::spawn_blocking(move || maintenance::apply_retention(&db, now, &config))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        ctx.count("SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks")
            .await,
        2,
        "{report:?}"
    );
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM metric_rollups WHERE resolution = 60000")
            .await,
        3,
        "the minute of 20 days ago is gone"
    );
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM metric_rollups WHERE resolution = 3600000")
            .await,
        4
    );
    if ctx.dialect() == Dialect::Postgres {
        assert!(report.partitions_dropped >= 1, "{report:?}");
        assert_eq!(
            ctx.count(
                "SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks_default"
            )
            .await,
            0
        );
    }
    let left = ctx.db.read("t", |tx| store::seqs(tx, "h1")).await.unwrap();
    assert_eq!(left, [3, 4]);
}

/// (chunks, samples) stored.
async fn chunk_counts(ctx: &Ctx) -> (i64, i64) {
    (
        ctx.count("SELECT COUNT(*) FROM metric_chunks").await,
        ctx.count("SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks")
            .await,
    )
}

async fn all_seqs(ctx: &Ctx) -> Vec<u64> {
    ctx.db.read("t", |tx| store::seqs(tx, "h1")).await.unwrap()
}

async fn a_trickle_fills_one_chunk_per_hour_and_resends_are_stored_once(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let hour = T0 - T0.rem_euclid(HOUR);
    // One sample per batch, as a quiet agent sends them: one chunk grows.
    for seq in 1..=30u64 {
        let at = hour + seq as Millis * 10_000;
        ctx.store("h1", at, vec![rec(seq, metrics(at, seq as f64))])
            .await
            .unwrap();
    }
    assert_eq!(chunk_counts(&ctx).await, (1, 30));

    // A resend overlapping what is stored (a reconnect), with new samples
    // behind it: only the new ones are added.
    let resend: Vec<Record> = (25..=40u64)
        .map(|seq| {
            let at = hour + seq as Millis * 10_000;
            rec(seq, metrics(at, seq as f64))
        })
        .collect();
    ctx.store("h1", hour, resend).await.unwrap();
    assert_eq!(chunk_counts(&ctx).await, (1, 40));
    assert_eq!(all_seqs(&ctx).await, (1..=40).collect::<Vec<_>>());

    // The next hour starts a chunk of its own; an older sample arriving
    // late gets its own chunk and is read back in time order.
    let next = hour + HOUR + 5_000;
    ctx.store(
        "h1",
        next,
        vec![rec(41, metrics(next, 1.0)), rec(42, metrics(next + 1, 1.0))],
    )
    .await
    .unwrap();
    let late = hour + 5_000;
    ctx.store("h1", next, vec![rec(7_000, metrics(late, 2.0))])
        .await
        .unwrap();
    assert_eq!(chunk_counts(&ctx).await, (3, 43));
    let first_hour = ctx
        .db
        .read("t", move |tx| {
            store::between(tx, "h1", hour, hour + HOUR, 1000)
        })
        .await
        .unwrap();
    assert_eq!(first_hour.len(), 41);
    assert_eq!(first_hour[0].seq, 7_000, "the late sample comes first");
    assert!(
        first_hour
            .windows(2)
            .all(|w| (w[0].collected_at, w[0].seq) < (w[1].collected_at, w[1].seq))
    );

    // A full chunk is not grown further.
    let big: Vec<Record> = (0..store::CHUNK_MAX_SAMPLES as u64 + 10)
        .map(|i| {
            let at = hour + 2 * HOUR + i as Millis;
            rec(10_000 + i, metrics(at, 3.0))
        })
        .collect();
    ctx.store("h1", hour, big).await.unwrap();
    let (chunks, samples) = chunk_counts(&ctx).await;
    assert_eq!(
        (chunks, samples),
        (5, 43 + store::CHUNK_MAX_SAMPLES as i64 + 10)
    );
    // Sending the whole history again adds nothing.
    let seqs_before = all_seqs(&ctx).await;
    let again: Vec<Record> = (1..=40u64)
        .map(|seq| {
            let at = hour + seq as Millis * 10_000;
            rec(seq, metrics(at, 99.0))
        })
        .collect();
    ctx.store("h1", hour, again).await.unwrap();
    assert_eq!(chunk_counts(&ctx).await, (chunks, samples));
    assert_eq!(all_seqs(&ctx).await, seqs_before);
    let stored = ctx
        .db
        .read("t", move |tx| {
            store::between(tx, "h1", hour, hour + 20_000, 10)
        })
        .await
        .unwrap();
    assert_eq!(
        stored.last().map(|s| s.cpu_percent),
        Some(1.0),
        "the first copy stays"
    );
}

/// A database of schema version 9 (one row per sample in `metric_samples`)
/// opened by this build: every sample ends up in chunks, unchanged, and the
/// old table is gone.
async fn samples_of_a_version_9_database_move_into_chunks(ctx: Ctx) {
    use palisade_backend::db::{DatabaseUrl, Db, migrate};
    let dialect = ctx.dialect();
    let dir = tempfile::tempdir().unwrap();
    let pg = (dialect == Dialect::Postgres).then(|| palisade_testkit::pg::database().unwrap());
    let url = match &pg {
        Some(database) => database.url(),
        None => format!("sqlite://{}", dir.path().join("v9.db").display()),
    };
    let url = DatabaseUrl::parse(&url).unwrap();
    let db = tokio::task::spawn_blocking(move || Db::connect(&url).unwrap())
        .await
        .unwrap();
    let hour = T0 - T0.rem_euclid(HOUR);
    // 3 hosts' worth of samples over two days, written as version 9 did.
    let written: Vec<(String, Millis, i64, f64)> = (0..3)
        .flat_map(|h| {
            (0..700i64).map(move |i| {
                (
                    format!("h{h}"),
                    hour + i * 250_000 + h,
                    i + 1,
                    i as f64 / 7.0,
                )
            })
        })
        .collect();
    let rows = written.clone();
    db.write("v9", move |tx| {
        tx.batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )?;
        for m in migrate::for_dialect(tx.dialect()).iter().filter(|m| m.version <= 9) {
            tx.batch(m.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)",
                palisade_backend::params![i64::from(m.version)],
            )?;
        }
        for (host, at, seq, cpu) in &rows {
            tx.execute(
                "INSERT INTO metric_samples (host_id, collected_at, seq, cpu_percent, memory_total_bytes,
                     memory_available_bytes, swap_total_bytes, swap_free_bytes, load_1, load_5, load_15,
                     uptime_seconds, process_count, filesystems, network)
                 VALUES ($1, $2, $3, $4, 100, 40, 10, 5, 0.5, 0.25, 0.125, $3, 12,
                     '[{\"mount_point\":\"/\",\"device\":\"/dev/sda1\",\"fs_type\":\"ext4\",\"total_bytes\":9,\"used_bytes\":4,\"available_bytes\":5}]',
                     '[{\"interface\":\"eth0\",\"rx_bytes\":7,\"tx_bytes\":8}]')",
                palisade_backend::params![host.as_str(), *at, *seq, *cpu],
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let migrated = db.clone();
    tokio::task::spawn_blocking(move || migrate::apply(&migrated))
        .await
        .unwrap()
        .unwrap();

    let exists: i64 = db
        .read("t", |tx| {
            let sql = match tx.dialect() {
                Dialect::Sqlite => {
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'metric_samples'"
                }
                Dialect::Postgres => {
                    "SELECT COUNT(*) FROM pg_class WHERE relname = 'metric_samples'"
                }
            };
            tx.query_one(sql, &[], |row| row.get(0))
        })
        .await
        .unwrap();
    assert_eq!(exists, 0, "the old table is gone");
    for h in 0..3 {
        let host = format!("h{h}");
        let want: Vec<_> = written.iter().filter(|w| w.0 == host).cloned().collect();
        let got = db
            .read("t", move |tx| {
                store::between(tx, &host, hour - HOUR, hour + 3 * 24 * HOUR, 10_000)
            })
            .await
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (s, (_, at, seq, cpu)) in got.iter().zip(&want) {
            assert_eq!(
                (s.collected_at, s.seq as i64, s.cpu_percent),
                (*at, *seq, *cpu)
            );
            assert_eq!(
                (s.memory_available_bytes, s.uptime_seconds, s.process_count),
                (40, *seq as u64, 12)
            );
            assert_eq!(s.filesystems[0].device, "/dev/sda1");
            assert_eq!(s.network[0].tx_bytes, 8);
        }
    }
    let chunks: i64 = db
        .read("t", |tx| {
            tx.query_one("SELECT COUNT(*) FROM metric_chunks", &[], |row| row.get(0))
        })
        .await
        .unwrap();
    // 700 samples 250 s apart span 49 hours: one chunk per host and hour.
    assert_eq!(chunks, 3 * 49);
    drop(pg);
}
