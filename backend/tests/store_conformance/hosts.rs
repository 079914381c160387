//! Hosts and storing what agents send.

use palisade_backend::db::DbError;
use palisade_backend::hosts::{AgentHealth, ChildHealth, store};
use palisade_backend::metrics::{Filesystem, NetworkCounters};
use palisade_backend::uplink::Transport;
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;

use crate::{Ctx, T0, conformance, facts, health, metrics, rec};

conformance!(
    hosts_are_listed_with_their_latest_sample_and_seen,
    host_lists_are_pages_in_hostname_order_with_a_filter,
    records_are_applied_once_and_stored_up_to_is_the_maximum,
    an_older_facts_or_health_record_does_not_overwrite_a_newer_one,
    unreported_facts_are_null,
    records_of_an_unknown_host_are_refused,
    the_agents_spool_drop_count_is_stored_on_the_host,
    out_of_range_values_are_clamped_or_refused,
);

async fn hosts_are_listed_with_their_latest_sample_and_seen(ctx: Ctx) {
    let ctx = ctx.with_host("h2").await;
    ctx.add_host("h1").await;
    ctx.store(
        "h2",
        T0,
        vec![rec(1, metrics(T0 + 5, 7.5)), rec(2, metrics(T0 + 4, 9.5))],
    )
    .await
    .unwrap();
    let all = store::HostQuery {
        limit: 100,
        ..store::HostQuery::default()
    };
    let listed = ctx
        .db
        .read("t", move |tx| store::list_page(tx, &all))
        .await
        .unwrap();
    let ids: Vec<&str> = listed.iter().map(|(h, _)| h.id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"], "by hostname");
    assert!(listed[0].1.is_none());
    assert_eq!(
        listed[1].1.as_ref().map(|m| (m.seq, m.cpu_percent)),
        Some((1, 7.5)),
        "the newest by time"
    );

    ctx.db
        .write("t", |tx| store::seen(tx, "h1", T0 + 5, Transport::Quic))
        .await
        .unwrap();
    ctx.db
        .write("t", |tx| store::seen(tx, "h1", T0 + 9, Transport::Wss))
        .await
        .unwrap();
    let (h1, latest) = ctx
        .db
        .read("t", |tx| store::get_with_latest(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (h1.last_seen, h1.last_transport),
        (Some(T0 + 9), Some(Transport::Wss))
    );
    assert!(latest.is_none());
    assert!(
        ctx.db
            .read("t", |tx| store::get(tx, "nope"))
            .await
            .unwrap()
            .is_none()
    );
    let unknown = ctx
        .db
        .write("t", |tx| store::seen(tx, "nope", T0, Transport::Quic))
        .await;
    assert!(
        matches!(unknown, Err(DbError::NotFound { .. })),
        "{unknown:?}"
    );
}

async fn records_are_applied_once_and_stored_up_to_is_the_maximum(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let batch = vec![
        rec(1, facts("h1.internal", "6.1.0-18-amd64")),
        rec(2, metrics(T0 + 10_000, 12.5)),
        rec(3, health(0)),
    ];
    assert_eq!(ctx.store("h1", T0 + 100, batch.clone()).await.unwrap(), 3);

    let (host, latest) = ctx
        .db
        .read("t", |tx| store::get_with_latest(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.hostname, "h1.internal");
    assert_eq!(
        host.os_pretty_name.as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(host.os_id.as_deref(), Some("debian"));
    assert_eq!(host.os_version_id.as_deref(), Some("12"));
    assert_eq!(host.kernel_release.as_deref(), Some("6.1.0-18-amd64"));
    assert_eq!(host.architecture.as_deref(), Some("x86_64"));
    assert_eq!(host.cpu_count, Some(8));
    assert_eq!(host.memory_total_bytes, Some(16 << 30));
    assert_eq!(host.stored_up_to_seq, 3);
    assert_eq!(
        host.agent_health,
        Some(AgentHealth {
            children: vec![ChildHealth {
                role: "collector".into(),
                pid: 4242,
                healthy: true,
                restarts: 0,
                sandbox: "seccomp, landlock".into(),
            }]
        })
    );
    let m = latest.unwrap();
    assert_eq!(
        (m.seq, m.collected_at, m.cpu_percent),
        (2, T0 + 10_000, 12.5)
    );
    assert_eq!(
        (m.memory_total_bytes, m.memory_available_bytes),
        (16 << 30, 8 << 30)
    );
    assert_eq!((m.swap_total_bytes, m.swap_free_bytes), (1 << 30, 1 << 29));
    assert_eq!((m.load_1, m.load_5, m.load_15), (0.5, 0.25, 0.125));
    assert_eq!((m.uptime_seconds, m.process_count), (86_400, 142));
    assert_eq!(
        m.filesystems,
        [Filesystem {
            mount_point: "/".into(),
            device: "/dev/sda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 100 << 30,
            used_bytes: 40 << 30,
            available_bytes: 55 << 30,
        }]
    );
    assert_eq!(
        m.network,
        [NetworkCounters {
            interface: "eth0".into(),
            rx_bytes: 12345,
            tx_bytes: 678
        }]
    );

    // The same batch again (a resend after a lost ack) changes nothing.
    assert_eq!(ctx.store("h1", T0 + 200, batch).await.unwrap(), 3);
    let seqs = |ctx: &Ctx| {
        let db = ctx.db.clone();
        async move {
            db.read("t", |tx| store::record_seqs(tx, "h1"))
                .await
                .unwrap()
        }
    };
    assert_eq!(seqs(&ctx).await, [1, 2, 3]);
    assert_eq!(
        ctx.count("SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks")
            .await,
        1
    );
    assert_eq!(
        ctx.count("SELECT MAX(received_at) FROM host_records").await,
        T0 + 100
    );

    // A resent record with a different body is still the stored one.
    assert_eq!(
        ctx.store("h1", T0 + 300, vec![rec(2, metrics(T0 + 10_000, 99.0))])
            .await
            .unwrap(),
        3
    );
    let latest = ctx
        .db
        .read("t", |tx| palisade_backend::metrics::store::latest(tx, "h1"))
        .await
        .unwrap();
    assert_eq!(latest.map(|m| m.cpu_percent), Some(12.5));

    // A lower, new seq is stored without lowering stored_up_to.
    let newer = vec![
        rec(10, metrics(T0 + 20_000, 50.0)),
        rec(5, metrics(T0 + 15_000, 30.0)),
    ];
    assert_eq!(ctx.store("h1", T0 + 400, newer).await.unwrap(), 10);
    assert_eq!(
        ctx.store("h1", T0 + 500, vec![rec(7, health(1))])
            .await
            .unwrap(),
        10
    );
    assert_eq!(seqs(&ctx).await, [1, 2, 3, 5, 7, 10]);
    // An empty batch reports the current position.
    assert_eq!(ctx.store("h1", T0 + 600, Vec::new()).await.unwrap(), 10);
}

async fn an_older_facts_or_health_record_does_not_overwrite_a_newer_one(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    ctx.store(
        "h1",
        T0,
        vec![rec(5, facts("new-name", "6.5")), rec(6, health(3))],
    )
    .await
    .unwrap();
    ctx.store(
        "h1",
        T0,
        vec![rec(4, facts("old-name", "5.10")), rec(2, health(1))],
    )
    .await
    .unwrap();
    let host = ctx
        .db
        .read("t", |tx| store::get(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.hostname, "new-name");
    assert_eq!(host.kernel_release.as_deref(), Some("6.5"));
    assert_eq!(host.agent_health.unwrap().children[0].restarts, 3);
    let seqs = ctx
        .db
        .read("t", |tx| store::record_seqs(tx, "h1"))
        .await
        .unwrap();
    assert_eq!(seqs, [2, 4, 5, 6]);
}

async fn unreported_facts_are_null(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let sparse = RecordBody::Facts(pb::HostFacts {
        hostname: "h1".into(),
        ..pb::HostFacts::default()
    });
    ctx.store("h1", T0, vec![rec(1, sparse)]).await.unwrap();
    let host = ctx
        .db
        .read("t", |tx| store::get(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.hostname, "h1");
    assert!(host.os_pretty_name.is_none() && host.os_id.is_none() && host.kernel_release.is_none());
    assert!(host.cpu_count.is_none() && host.memory_total_bytes.is_none());
}

async fn records_of_an_unknown_host_are_refused(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let err = ctx
        .store("stranger", T0, vec![rec(1, metrics(T0, 1.0))])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stranger"), "{err}");
    assert_eq!(ctx.count("SELECT COUNT(*) FROM host_records").await, 0);
    assert_eq!(
        ctx.count("SELECT CAST(COALESCE(SUM(samples), 0) AS BIGINT) FROM metric_chunks")
            .await,
        0
    );
    assert!(ctx.store("stranger", T0, Vec::new()).await.is_err());
}

async fn the_agents_spool_drop_count_is_stored_on_the_host(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let dropped = |ctx: &Ctx| {
        let db = ctx.db.clone();
        async move {
            db.read("t", |tx| store::get(tx, "h1"))
                .await
                .unwrap()
                .unwrap()
                .spool_dropped_total
        }
    };
    assert_eq!(dropped(&ctx).await, 0);
    ctx.db
        .write("t", |tx| store::set_spool_dropped(tx, "h1", 42))
        .await
        .unwrap();
    assert_eq!(dropped(&ctx).await, 42);
    ctx.db
        .write("t", |tx| store::set_spool_dropped(tx, "h1", u64::MAX))
        .await
        .unwrap();
    assert_eq!(
        dropped(&ctx).await,
        i64::MAX as u64,
        "clamped to the storable range"
    );
    let err = ctx
        .db
        .write("t", |tx| store::set_spool_dropped(tx, "stranger", 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stranger"), "{err}");
}

async fn out_of_range_values_are_clamped_or_refused(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    // Counters above i64::MAX are clamped.
    let mut huge = crate::metrics_body(T0, 1.0);
    huge.uptime_seconds = u64::MAX;
    huge.memory_total_bytes = u64::MAX;
    huge.memory_available_bytes = u64::MAX;
    ctx.store("h1", T0, vec![rec(1, RecordBody::Metrics(huge))])
        .await
        .unwrap();
    let m = ctx
        .db
        .read("t", |tx| palisade_backend::metrics::store::latest(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.uptime_seconds, i64::MAX as u64);
    assert_eq!(m.memory_total_bytes, i64::MAX as u64);

    // A sequence above i64::MAX refuses the whole batch.
    let batch = vec![
        rec(2, health(0)),
        Record {
            seq: u64::MAX,
            created_at_unix_ms: T0,
            body: health(1),
        },
    ];
    assert!(ctx.store("h1", T0, batch).await.is_err());
    let seqs = ctx
        .db
        .read("t", |tx| store::record_seqs(tx, "h1"))
        .await
        .unwrap();
    assert_eq!(seqs, [1]);
    let host = ctx
        .db
        .read("t", |tx| store::get(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.stored_up_to_seq, 1);
}

async fn host_lists_are_pages_in_hostname_order_with_a_filter(ctx: Ctx) {
    let ctx = ctx.with_host("h-00").await;
    for n in 1..25 {
        ctx.add_host(&format!("h-{n:02}")).await;
    }
    // Two hosts share a hostname: the id breaks the tie.
    ctx.raw("UPDATE hosts SET hostname = 'h-05.example' WHERE id = 'h-06'");
    let page = |after: Option<(String, String)>, limit: u32, name: Option<&str>| {
        let db = ctx.db.clone();
        let query = store::HostQuery {
            after,
            groups: None,
            limit,
            name_contains: name.map(str::to_owned),
        };
        async move {
            db.read("t", move |tx| store::list_page(tx, &query))
                .await
                .unwrap()
                .into_iter()
                .map(|(h, _)| (h.hostname, h.id))
                .collect::<Vec<_>>()
        }
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let got = page(after.clone(), 7, None).await;
        if got.is_empty() {
            break;
        }
        after = got.last().cloned();
        all.extend(got);
    }
    assert_eq!(all.len(), 25, "every host once");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "in (hostname, id) order");
    assert_eq!(all[5], ("h-05.example".to_owned(), "h-05".to_owned()));
    assert_eq!(all[6], ("h-05.example".to_owned(), "h-06".to_owned()));

    // The filter is a case-insensitive substring; LIKE's wildcards are literal.
    let ones: Vec<String> = page(None, 100, Some("H-1"))
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ones, (10..20).map(|n| format!("h-{n}")).collect::<Vec<_>>());
    assert!(
        page(None, 100, Some("h_0")).await.is_empty(),
        "_ is not a wildcard"
    );
    assert!(
        page(None, 100, Some("%")).await.is_empty(),
        "% is not a wildcard"
    );
    let count = |name: Option<&'static str>| {
        let db = ctx.db.clone();
        async move {
            db.read("t", move |tx| store::count(tx, name, None))
                .await
                .unwrap()
        }
    };
    assert_eq!(count(None).await, 25);
    assert_eq!(count(Some("-1")).await, 10);
    assert_eq!(count(Some("%")).await, 0);
}
