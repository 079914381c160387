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
    // A late sample in minute 0 is rolled up at the next pass, hour too.
    ctx.store("h1", T0 + 1, vec![rec(5, metrics(hour0 + 2_000, 80.0))])
        .await
        .unwrap();
    assert_eq!(
        roll_up(&ctx).await,
        maintenance::RollupReport {
            minute_buckets: 1,
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
    assert_eq!(ctx.count("SELECT COUNT(*) FROM metric_samples").await, 4);
    if ctx.dialect() == Dialect::Postgres {
        // Samples go to their day's partition; only the one of 20 days ago
        // (no partition) is in the default one.
        assert_eq!(
            ctx.count("SELECT COUNT(*) FROM metric_samples_default")
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
        ctx.count("SELECT COUNT(*) FROM metric_samples").await,
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
            ctx.count("SELECT COUNT(*) FROM metric_samples_default")
                .await,
            0
        );
    }
    let left = ctx.db.read("t", |tx| store::seqs(tx, "h1")).await.unwrap();
    assert_eq!(left, [3, 4]);
}
