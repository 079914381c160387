//! Storage benchmarks on both dialects (not criterion: whole scenarios with
//! CPU accounting).
//!
//! - **Metric ingest**: batches of 512 metric records of one host (as the
//!   uplink stores them: one transaction per batch, `hosts::ingest::
//!   store_records`) for 100 hosts. Reported per CPU second of the backend
//!   process (the figure "per backend core"), per wall second, and, for
//!   PostgreSQL, per CPU second of backend and database server together.
//! - **Host list**: 10,000 hosts with facts and a latest sample; the median
//!   time of `GET /hosts` (the page, rendered) and `GET /api/v1/hosts` (the
//!   JSON) through the real router, in process, bodies read whole.
//! - **Patch history** (`patch_history`): 90 days of weekly patch runs on
//!   1,000 hosts; the median and 95th percentile of the fleet's history
//!   page, one host's history and one run's record, as store queries and
//!   through the router (see `store/patch_history.rs`).
//!
//! Run: `cargo bench -p palisade-backend --bench store`
//! (`PALISADE_BENCH_SAMPLES` sets the number of samples ingested per
//! dialect, default 300,000; `PALISADE_BENCH_PARTS`, a comma list of
//! `ingest` (or `ingest-sqlite`, `ingest-postgres`), `hosts`, `audit`,
//! `patch_history`, runs only those). PostgreSQL runs on a throwaway cluster started by the
//! bench (fsync off, like every test cluster: the figure measures the
//! backend's work, not the disk).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, header};
use palisade_backend::config::Config;
use palisade_backend::db::{DatabaseUrl, Db};
use palisade_backend::enrollment::EnrollmentToken;
use palisade_backend::hosts::NewHost;
use palisade_backend::hosts::ingest::AgentRecord;
use palisade_backend::identity::{ApiToken, NewSession, NewUser};
use palisade_backend::state::AppState;
use palisade_backend::uplink::registry::Registry;
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;
use tower::ServiceExt;

#[path = "store/patch_history.rs"]
mod patch_history;

const HOSTS_INGEST: usize = 100;
const BATCH: usize = 512;
const HOSTS_LIST: usize = 10_000;
const LIST_RUNS: usize = 31;

fn cpu_seconds_self() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

/// CPU seconds used so far by every process of the PostgreSQL cluster whose
/// postmaster has pid `postmaster` (the postmaster and its children).
fn cpu_seconds_of_cluster(postmaster: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ppid: u32 = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        if pid == postmaster || ppid == postmaster {
            let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
            total += (utime + stime) / ticks;
        }
    }
    total
}

fn metrics(collected_at: i64, cpu: f64) -> pb::Metrics {
    pb::Metrics {
        collected_at_unix_ms: collected_at,
        cpu_percent: cpu,
        memory_total_bytes: 16 << 30,
        memory_available_bytes: 9 << 30,
        swap_total_bytes: 2 << 30,
        swap_free_bytes: 1 << 30,
        load_1: 0.42,
        load_5: 0.37,
        load_15: 0.31,
        filesystems: vec![
            pb::FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                used_bytes: 41 << 30,
                available_bytes: 54 << 30,
            },
            pb::FilesystemUsage {
                mount_point: "/var".into(),
                device: "/dev/vda2".into(),
                fs_type: "xfs".into(),
                total_bytes: 200 << 30,
                used_bytes: 12 << 30,
                available_bytes: 188 << 30,
            },
        ],
        network: vec![pb::NetworkCounters {
            interface: "eth0".into(),
            rx_bytes: 1_234_567_890,
            tx_bytes: 987_654_321,
        }],
        uptime_seconds: 1_234_567,
        process_count: 211,
    }
}

fn host_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn enroll_hosts(db: &Db, count: usize, t0: i64) {
    let group = db
        .write_blocking("bench group", |tx| {
            palisade_backend::hosts::groups::create(tx, "bench", "", t0)
        })
        .expect("group");
    let token = EnrollmentToken {
        id: "benchbenchbench0".into(),
        secret_hash: vec![0; 32],
        host_group_id: Some(group.clone()),
        cidrs: Vec::new(),
        max_per_day: None,
        expires_at: None,
        created_at: t0,
        revoked_at: None,
    };
    db.write_blocking("bench token", |tx| {
        palisade_backend::enrollment::store::create_token(tx, &token)
    })
    .expect("token");
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        db.write_blocking("bench hosts", |tx| {
            for &n in chunk {
                let host = NewHost {
                    id: host_id(n),
                    hostname: format!("host-{n:05}.bench.example"),
                    host_group_id: Some(group.clone()),
                    enrolled_at: t0,
                    enrolled_from: "10.0.0.1".into(),
                    token_id: "benchbenchbench0".into(),
                    cert_sha256: "ab".repeat(32),
                };
                palisade_backend::hosts::store::insert(tx, &host)?;
            }
            Ok(())
        })
        .expect("hosts");
    }
}

struct Ingest {
    samples: usize,
    wall: f64,
    backend_cpu: f64,
    server_cpu: Option<f64>,
}

async fn ingest(db: &Db, samples: usize, writers: usize, postmaster: Option<u32>) -> Ingest {
    let t0 = 1_750_000_000_000i64;
    tokio::task::block_in_place(|| enroll_hosts(db, HOSTS_INGEST, t0));
    let batches = samples / BATCH;
    // Build every batch first: the timed part is the backend's work.
    let mut work: Vec<(String, Vec<Record>)> = (0..batches)
        .map(|b| {
            let host = b % HOSTS_INGEST;
            let round = b / HOSTS_INGEST;
            let records = (0..BATCH)
                .map(|i| {
                    let k = (round * BATCH + i) as i64;
                    Record {
                        seq: k as u64 + 1,
                        created_at_unix_ms: t0 + k * 10_000,
                        body: RecordBody::Metrics(metrics(t0 + k * 10_000, (k % 100) as f64)),
                    }
                })
                .collect();
            (host_id(host), records)
        })
        .collect();
    if postmaster.is_some() {
        // Partitions for the days the samples cover, as the background job
        // makes them ahead of time.
        let last = t0 + (samples as i64 / HOSTS_INGEST as i64 + BATCH as i64) * 10_000;
        tokio::task::block_in_place(|| {
            db.write_blocking("bench partitions", |tx| {
                palisade_backend::metrics::maintenance::ensure_partitions_between(tx, t0, last)
            })
        })
        .expect("partitions");
    }
    let server_before = postmaster.map(cpu_seconds_of_cluster);
    let cpu_before = cpu_seconds_self();
    let started = Instant::now();
    // Oldest batches first, as agents send them (`pop` takes from the end).
    work.reverse();
    let queue = Arc::new(std::sync::Mutex::new(std::mem::take(&mut work)));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (db, queue) = (db.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some((host, records)) = next else { break };
                db.write("store records", move |tx| {
                    let records: Vec<AgentRecord> = records.iter().map(AgentRecord::from).collect();
                    palisade_backend::hosts::ingest::store_records(tx, &host, t0, &records)
                })
                .await
                .expect("store");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let wall = started.elapsed().as_secs_f64();
    let backend_cpu = cpu_seconds_self() - cpu_before;
    let server_cpu = postmaster
        .zip(server_before)
        .map(|(pm, before)| cpu_seconds_of_cluster(pm) - before);
    Ingest {
        samples: batches * BATCH,
        wall,
        backend_cpu,
        server_cpu,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// 10,000 hosts with facts and a latest sample.
fn seed_list(db: &Db, existing: usize, t0: i64) {
    db.write_blocking("bench hosts", |tx| {
        for n in existing..HOSTS_LIST {
            let host = NewHost {
                id: host_id(n),
                hostname: format!("host-{n:05}.bench.example"),
                host_group_id: None,
                enrolled_at: t0,
                enrolled_from: "10.0.0.1".into(),
                token_id: "benchbenchbench0".into(),
                cert_sha256: "ab".repeat(32),
            };
            palisade_backend::hosts::store::insert(tx, &host)?;
        }
        Ok(())
    })
    .expect("hosts");
    for chunk in (0..HOSTS_LIST).collect::<Vec<_>>().chunks(500) {
        db.write_blocking("bench latest", |tx| {
            for &n in chunk {
                let records = [
                    Record {
                        seq: 1_000_000,
                        created_at_unix_ms: t0,
                        body: RecordBody::Facts(pb::HostFacts {
                            hostname: format!("host-{n:05}.bench.example"),
                            os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                            os_id: "debian".into(),
                            os_version_id: "12".into(),
                            kernel_release: "6.1.0-28-amd64".into(),
                            architecture: "x86_64".into(),
                            cpu_count: 4,
                            memory_total_bytes: 16 << 30,
                            boot_time_unix: 1_700_000_000,
                        }),
                    },
                    Record {
                        seq: 1_000_001,
                        created_at_unix_ms: t0 + 10_000_000_000,
                        body: RecordBody::Metrics(metrics(t0 + 10_000_000_000, 12.5)),
                    },
                ];
                let records: Vec<AgentRecord> = records.iter().map(AgentRecord::from).collect();
                palisade_backend::hosts::ingest::store_records(tx, &host_id(n), t0, &records)?;
            }
            Ok(())
        })
        .expect("latest");
    }
}

/// The real router over `db`, with an admin session (cookie [`COOKIE`]) and
/// an admin API token ([`BEARER`]) made the way the backend makes them.
fn bench_app(db: &Db, pki_dir: &std::path::Path) -> axum::Router {
    let pki =
        Arc::new(palisade_backend::pki::Pki::load_or_create(pki_dir, &[], None).expect("pki"));
    let state = AppState::new(
        db.clone(),
        Arc::new(Registry::new()),
        pki,
        Arc::new(Config::default()),
        Arc::new(palisade_backend::audit::checkpoint::AuditKey::ephemeral().expect("audit key")),
    );
    let app = palisade_backend::web::router(state)
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    // A session and an API token, made the way the backend makes them.
    let cookie = COOKIE;
    let now = palisade_backend::now_millis();
    tokio::task::block_in_place(|| {
        db.write_blocking("bench auth", |tx| {
            let user = palisade_backend::identity::store::create_user(
                tx,
                &NewUser {
                    username: "bench".into(),
                    password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
                    created_at: now,
                },
            )?;
            palisade_backend::access::roles::assign(tx, user.id, "admin", None, now)?;
            palisade_backend::identity::store::create_session(
                tx,
                &NewSession {
                    id_hash: palisade_backend::secrets::hash_secret(cookie),
                    user_id: user.id,
                    created_at: now,
                    expires_at: now + 3_600_000,
                    source_ip: "127.0.0.1".into(),
                    user_agent: "bench".into(),
                },
            )?;
            palisade_backend::identity::store::create_api_token(
                tx,
                &ApiToken {
                    id: "0123456789abcdef".into(),
                    name: "bench".into(),
                    secret_hash: palisade_backend::secrets::hash_secret(
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    ),
                    created_at: now,
                    revoked_at: None,
                    user_id: None,
                    role_id: Some("admin".into()),
                    permissions: Vec::new(),
                    host_group_id: None,
                    expires_at: None,
                    last_used_at: None,
                    last_used_ip: None,
                },
            )
        })
    })
    .expect("auth");
    app
}

const COOKIE: &str = "bench-session-cookie-value-0123456789abcdef";
const BEARER: &str = "Bearer 0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Runs `request` through `app`; milliseconds until the whole body was read,
/// and its length.
async fn timed(app: &axum::Router, request: Request<Body>) -> (f64, usize) {
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.expect("router");
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (started.elapsed().as_secs_f64() * 1000.0, body.len())
}

fn api_get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "bench")
        .header(header::AUTHORIZATION, BEARER)
        .body(Body::empty())
        .expect("request")
}

fn page_get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "bench")
        .header(header::COOKIE, format!("__Host-palisade_session={COOKIE}"))
        .body(Body::empty())
        .expect("request")
}

/// Median milliseconds of `GET /hosts` (the first page, 100 hosts),
/// `GET /api/v1/hosts` (the first page, 200 hosts) and `GET /api/v1/hosts?
/// limit=1000` with 10,000 hosts.
async fn host_list(db: &Db, app: &axum::Router) -> (f64, f64, f64, usize) {
    let t0 = 1_750_000_000_000i64;
    // The ingest part used 100 hosts of the same numbering: add the rest.
    let existing: i64 = db
        .read("count", |tx| {
            tx.query_one("SELECT COUNT(*) FROM hosts", &[], |r| r.get(0))
        })
        .await
        .expect("count");
    let existing = existing as usize;
    tokio::task::block_in_place(|| seed_list(db, existing, t0));
    let mut page = Vec::new();
    let mut api = Vec::new();
    let mut api_max = Vec::new();
    let mut api_bytes = 0;
    for _ in 0..LIST_RUNS {
        page.push(timed(app, page_get("/hosts")).await.0);
        let (ms, bytes) = timed(app, api_get("/api/v1/hosts")).await;
        api.push(ms);
        api_bytes = bytes;
        api_max.push(timed(app, api_get("/api/v1/hosts?limit=1000")).await.0);
    }
    (median(page), median(api), median(api_max), api_bytes)
}

/// Appends `rows` audit events after the chain's tail, 10,000 per
/// transaction, chained exactly as `audit::store::append` chains them: a
/// realistic mix over 90 days (sign-ins of 200 users, agents of 1,000 hosts
/// connecting, commands, a few failures and denials).
fn seed_audit(db: &Db, rows: usize, t0: i64) {
    use palisade_backend::audit::chain::{self, StoredRow};
    let (mut id, mut prev) = db
        .read_blocking("audit tail", |tx| {
            tx.query_opt(
                "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
                &[],
                |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
            )
        })
        .expect("tail")
        .unwrap_or((0, chain::GENESIS_HASH.to_owned()));
    let step = AUDIT_SPAN_MS / rows.max(1) as i64;
    let mut n = 0usize;
    while n < rows {
        let batch = (rows - n).min(10_000);
        let mut chunk = Vec::with_capacity(batch);
        for _ in 0..batch {
            id += 1;
            let k = n as u64;
            let (actor, action, target, outcome) = match k % 20 {
                0..=7 => (
                    format!("user:user-{}", k % 200),
                    "auth.login",
                    None,
                    if k % 100 == 3 { "failure" } else { "success" },
                ),
                8..=13 => (
                    format!("agent:{}", host_id((k % 1000) as usize)),
                    if k.is_multiple_of(2) {
                        "agent.connect"
                    } else {
                        "agent.disconnect"
                    },
                    Some(host_id((k % 1000) as usize)),
                    "success",
                ),
                14..=17 => (
                    format!("user:user-{}", k % 200),
                    "command.create",
                    Some(host_id((k % 997) as usize)),
                    if k % 50 == 17 { "denied" } else { "success" },
                ),
                _ => (
                    format!("api-token:{:016x}", k % 40),
                    "access.denied",
                    Some("/api/v1/users".to_owned()),
                    "denied",
                ),
            };
            let mut row = StoredRow {
                id,
                at: t0 + n as i64 * step,
                actor,
                action: action.to_owned(),
                target,
                source_ip: Some(format!("10.0.{}.{}", (k / 256) % 256, k % 256)),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) bench".to_owned()),
                outcome: outcome.to_owned(),
                details: "{}".to_owned(),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            row.hash = chain::hash(&row.prev_hash, &row.canonical());
            prev = row.hash.clone();
            chunk.push(row);
            n += 1;
        }
        db.write_blocking("audit seed", |tx| {
            for row in &chunk {
                palisade_backend::audit::store::insert_stored(tx, row)?;
            }
            Ok(())
        })
        .expect("audit rows");
    }
}

/// 90 days of audit events.
const AUDIT_SPAN_MS: i64 = 90 * 86_400_000;

/// Median milliseconds of audit searches over a seeded trail, and a whole
/// export's time and size.
async fn audit_queries(db: &Db, app: &axum::Router, rows: usize) -> Vec<(String, f64, usize)> {
    let t0 = 1_750_000_000_000i64;
    tokio::task::block_in_place(|| seed_audit(db, rows, t0));
    let day = |d: i64| {
        time::OffsetDateTime::from_unix_timestamp((t0 + d * 86_400_000) / 1000)
            .expect("time")
            .date()
            .to_string()
    };
    let host = host_id(42);
    let mid = rows as i64 / 2;
    let searches = [
        ("latest page", "/api/v1/audit".to_owned()),
        (
            "outcome=failure",
            "/api/v1/audit?outcome=failure".to_owned(),
        ),
        ("user=user-7", "/api/v1/audit?user=user-7".to_owned()),
        ("host=<id>", format!("/api/v1/audit?host={host}")),
        (
            "action=auth.login",
            "/api/v1/audit?action=auth.login".to_owned(),
        ),
        (
            "category=security_event, one day 60 days back",
            format!(
                "/api/v1/audit?category=security_event&from={}&to={}",
                day(30),
                day(30)
            ),
        ),
        (
            "user + outcome + 10 days",
            format!(
                "/api/v1/audit?user=user-3&outcome=failure&from={}&to={}",
                day(10),
                day(20)
            ),
        ),
        (
            "page deep in the trail",
            format!("/api/v1/audit?before_id={mid}"),
        ),
        ("UI page, user filter", "/audit?user=user-7".to_owned()),
    ];
    let mut out = Vec::new();
    for (name, uri) in searches {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..LIST_RUNS {
            let request = if uri.starts_with("/api/") {
                api_get(&uri)
            } else {
                page_get(&uri)
            };
            let (ms, b) = timed(app, request).await;
            times.push(ms);
            bytes = b;
        }
        out.push((name.to_owned(), median(times), bytes));
    }
    for format in ["csv", "json"] {
        let (ms, bytes) = timed(app, api_get(&format!("/api/v1/audit?format={format}"))).await;
        out.push((format!("export of every row as {format} (once)"), ms, bytes));
    }
    out
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let samples: usize = std::env::var("PALISADE_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let parts = std::env::var("PALISADE_BENCH_PARTS")
        .unwrap_or_else(|_| "ingest,hosts,audit,patch_history".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    let ingest_into = |dialect: &str| part("ingest") || part(&format!("ingest-{dialect}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Db::open(&DatabaseUrl::Sqlite(dir.path().join("bench.db"))).expect("sqlite");
    let cluster = palisade_testkit::pg::Cluster::start(&dir.path().join("pg")).expect("postgres");
    let postmaster: u32 = std::fs::read_to_string(cluster.dir().join("data/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .expect("postmaster pid");
    let pg_url = cluster.url("postgres");
    let postgres = Db::open(&DatabaseUrl::parse(&pg_url).expect("url")).expect("postgres");

    if ingest_into("sqlite") || ingest_into("postgres") {
        println!(
            "metric ingest: {samples} samples per dialect, batches of {BATCH}, {HOSTS_INGEST} hosts"
        );
    }
    for (name, db, writers, pm) in [
        ("sqlite", &sqlite, 1, None),
        ("postgres", &postgres, 2, Some(postmaster)),
    ] {
        if !ingest_into(name) {
            continue;
        }
        let r = rt.block_on(ingest(db, samples, writers, pm));
        print!(
            "  {name:<9} {} samples in {:.2} s wall ({:.0}/s), backend CPU {:.2} s: {:.0} samples per backend CPU second",
            r.samples,
            r.wall,
            r.samples as f64 / r.wall,
            r.backend_cpu,
            r.samples as f64 / r.backend_cpu
        );
        if let Some(server) = r.server_cpu {
            print!(
                "; database server CPU {server:.2} s: {:.0} samples per CPU second of backend and server together",
                r.samples as f64 / (r.backend_cpu + server)
            );
        }
        println!();
    }
    let audit_rows: usize = std::env::var("PALISADE_BENCH_AUDIT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut apps = Vec::new();
    for (name, db) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        let _guard = rt.enter();
        apps.push((
            name,
            db,
            bench_app(db, &dir.path().join(format!("pki-{name}"))),
        ));
    }
    if part("hosts") {
        println!("host list with {HOSTS_LIST} hosts, median of {LIST_RUNS}:");
    }
    for (name, db, app) in apps.iter().filter(|_| part("hosts")) {
        let (page, api, api_max, bytes) = rt.block_on(host_list(db, app));
        println!(
            "  {name:<9} GET /hosts {page:.1} ms, GET /api/v1/hosts {api:.1} ms ({bytes} bytes of JSON), \
             GET /api/v1/hosts?limit=1000 {api_max:.1} ms"
        );
    }
    if part("audit") {
        println!("audit trail of {audit_rows} events over 90 days, median of {LIST_RUNS}:");
    }
    for (name, db, app) in apps.iter().filter(|_| part("audit")) {
        for (what, ms, bytes) in rt.block_on(audit_queries(db, app, audit_rows)) {
            println!("  {name:<9} {what}: {ms:.1} ms ({bytes} bytes)");
        }
    }
    if part("patch_history") {
        println!(
            "patch history: weekly runs on {} hosts over {} days, median and p95 of several calls:",
            patch_history::HOSTS,
            patch_history::SPAN / 86_400_000
        );
    }
    for (name, db, app) in apps.iter().filter(|_| part("patch_history")) {
        let seeded = patch_history::seed(db, palisade_backend::now_millis());
        println!(
            "  {name:<9} seeded in {:.1} s: {} runs {:?}, {} commands, {} package changes (plans and records), \
             {} output pieces ({} bytes) in command_outputs, {} bytes of output in results",
            seeded.seconds,
            seeded.runs,
            seeded.by_state,
            seeded.commands,
            seeded.changes,
            seeded.output_pieces,
            seeded.output_bytes,
            seeded.result_output_bytes
        );
        for figure in patch_history::queries(db, app, &rt, &seeded) {
            println!(
                "  {name:<9} {}: median {:.2} ms, p95 {:.2} ms ({})",
                figure.what, figure.median, figure.p95, figure.size
            );
        }
    }
    drop(apps);
    drop(postgres);
    std::thread::sleep(Duration::from_millis(200));
    drop(cluster);
}
