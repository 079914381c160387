//! The store conformance suite: every query of every domain, run unchanged
//! against SQLite and PostgreSQL. Each test is one async function taking a
//! [`Ctx`]; `conformance!` makes a `sqlite::<name>` and a `postgres::<name>`
//! test of it. The PostgreSQL database is a fresh one on the run's
//! throwaway cluster (see `palisade-testkit`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use palisade_backend::audit::{Action, Actor, NewAuditEvent, Outcome};
use palisade_backend::db::{DatabaseUrl, Db, Dialect, Millis};
use palisade_backend::enrollment::EnrollmentToken;
use palisade_backend::hosts::NewHost;
use palisade_backend::hosts::ingest::AgentRecord;
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;

mod access;
mod audit;
mod audit_signed;
mod commands;
mod enrollment;
mod factors;
mod hosts;
mod identity;
mod metrics;
mod packages;
mod patching;
mod rollouts;
mod schema;

pub const T0: Millis = 1_700_000_000_000;
/// The id of the host group "web" every test database has.
pub const WEB_GROUP: &str = "00000000000000000000000000000web";
pub const HOUR: Millis = 60 * 60 * 1000;

/// One database of either dialect, and a way in around the backend (what
/// an attacker holding the database could do).
pub struct Ctx {
    pub db: Db,
    raw: Raw,
    pub url: String,
}

enum Raw {
    Sqlite(PathBuf, #[allow(dead_code)] tempfile::TempDir),
    Postgres(palisade_testkit::pg::TestDatabase),
}

impl Ctx {
    pub async fn sqlite() -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("palisade.db");
        let url = format!("sqlite://{}", path.display());
        let db = Db::open(&DatabaseUrl::parse(&url).unwrap()).unwrap();
        Ctx {
            db,
            raw: Raw::Sqlite(path, dir),
            url,
        }
        .with_web_group()
        .await
    }

    /// Every test database has the host group "web" (id [`WEB_GROUP`]).
    async fn with_web_group(self) -> Ctx {
        self.raw(&format!(
            "INSERT INTO host_groups (id, name, description, created_at) VALUES ('{WEB_GROUP}', 'web', '', {T0})"
        ));
        self
    }

    pub async fn postgres() -> Ctx {
        tokio::task::spawn_blocking(|| {
            let database = palisade_testkit::pg::database()
                .unwrap_or_else(|e| panic!("a PostgreSQL test database: {e}"));
            let url = database.url();
            let db = Db::open(&DatabaseUrl::parse(&url).unwrap()).unwrap();
            Ctx {
                db,
                raw: Raw::Postgres(database),
                url,
            }
        })
        .await
        .unwrap()
        .with_web_group()
        .await
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// Runs SQL straight on the database, past the backend.
    pub fn raw(&self, sql: &str) {
        self.try_raw(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn try_raw(&self, sql: &str) -> Result<(), String> {
        match &self.raw {
            Raw::Sqlite(path, _) => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Raw::Postgres(database) => database.execute(sql).map_err(|e| e.to_string()),
        }
    }

    /// The first column of the first row of `sql`, an integer.
    pub async fn count(&self, sql: &'static str) -> i64 {
        self.db
            .read("test count", move |tx| {
                tx.query_one(sql, &[], |row| row.get::<Option<i64>>(0))
            })
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// A database with the test enrollment token and host `host_id`.
    pub async fn with_host(self, host_id: &str) -> Ctx {
        let token = enrollment_token("0123456789abcdef", None);
        let host = new_host(host_id, "0123456789abcdef");
        self.db
            .write("test", move |tx| {
                palisade_backend::enrollment::store::create_token(tx, &token)?;
                palisade_backend::enrollment::store::enroll_host(tx, T0, &host)
            })
            .await
            .unwrap()
            .unwrap();
        self
    }

    /// Enrolls another host with the test token (which must exist).
    pub async fn add_host(&self, host_id: &str) {
        let host = new_host(host_id, "0123456789abcdef");
        self.db
            .write("test", move |tx| {
                palisade_backend::enrollment::store::enroll_host(tx, T0, &host)
            })
            .await
            .unwrap()
            .unwrap();
    }

    pub async fn store(
        &self,
        host_id: &str,
        at: Millis,
        records: Vec<Record>,
    ) -> palisade_backend::db::Result<u64> {
        let records: Vec<AgentRecord> = records.iter().map(AgentRecord::from).collect();
        let host = host_id.to_owned();
        self.db
            .write("test store records", move |tx| {
                palisade_backend::hosts::ingest::store_records(tx, &host, at, &records)
            })
            .await
    }
}

pub fn enrollment_token(id: &str, max_per_day: Option<u32>) -> EnrollmentToken {
    EnrollmentToken {
        id: id.into(),
        secret_hash: vec![7; 32],
        host_group_id: Some(WEB_GROUP.into()),
        cidrs: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        max_per_day,
        expires_at: Some(T0 + 30 * 24 * HOUR),
        created_at: T0,
        revoked_at: None,
    }
}

pub fn new_host(id: &str, token_id: &str) -> NewHost {
    NewHost {
        id: id.into(),
        hostname: format!("{id}.example"),
        host_group_id: Some(WEB_GROUP.into()),
        enrolled_at: T0,
        enrolled_from: "10.1.2.3".into(),
        token_id: token_id.into(),
        cert_sha256: "ab".repeat(32),
    }
}

pub fn facts(hostname: &str, kernel: &str) -> RecordBody {
    RecordBody::Facts(pb::HostFacts {
        hostname: hostname.into(),
        os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
        os_id: "debian".into(),
        os_version_id: "12".into(),
        kernel_release: kernel.into(),
        architecture: "x86_64".into(),
        cpu_count: 8,
        memory_total_bytes: 16 << 30,
        boot_time_unix: 1_699_000_000,
    })
}

pub fn metrics_body(collected_at: Millis, cpu: f64) -> pb::Metrics {
    pb::Metrics {
        collected_at_unix_ms: collected_at,
        cpu_percent: cpu,
        memory_total_bytes: 16 << 30,
        memory_available_bytes: 8 << 30,
        swap_total_bytes: 1 << 30,
        swap_free_bytes: 1 << 29,
        load_1: 0.5,
        load_5: 0.25,
        load_15: 0.125,
        filesystems: vec![pb::FilesystemUsage {
            mount_point: "/".into(),
            device: "/dev/sda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 100 << 30,
            used_bytes: 40 << 30,
            available_bytes: 55 << 30,
        }],
        network: vec![pb::NetworkCounters {
            interface: "eth0".into(),
            rx_bytes: 12345,
            tx_bytes: 678,
        }],
        uptime_seconds: 86_400,
        process_count: 142,
    }
}

pub fn metrics(collected_at: Millis, cpu: f64) -> RecordBody {
    RecordBody::Metrics(metrics_body(collected_at, cpu))
}

pub fn health(restarts: u32) -> RecordBody {
    RecordBody::AgentHealth(pb::AgentHealth {
        children: vec![pb::ChildHealth {
            role: "collector".into(),
            pid: 4242,
            healthy: true,
            restarts,
            sandbox: "seccomp, landlock".into(),
        }],
    })
}

pub fn rec(seq: u64, body: RecordBody) -> Record {
    Record {
        seq,
        created_at_unix_ms: T0 + i64::try_from(seq).unwrap(),
        body,
    }
}

pub fn audit_event(n: i64) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(
        T0 + n,
        Actor::User(format!("alice{n}")),
        Action::AuthLogin,
        Outcome::Success,
    )
    .from_client(Some("198.51.100.4".into()), None)
    .details(serde_json::json!({ "n": n, "note": "a \"quoted\" detail" }));
    if n % 2 == 0 {
        event = event.target(format!("host:{n}"));
    }
    event
}

/// Makes `sqlite::<name>` and `postgres::<name>` tests of each async
/// function `<name>(Ctx)` listed.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Ctx::sqlite().await).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Ctx::postgres().await).await
            })*
        }
    };
}
