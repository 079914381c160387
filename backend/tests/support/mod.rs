//! Harness for the end-to-end tests: real `palisade-backend` and
//! `palisade-agent` processes on free local ports, talked to over real TLS.
//!
//! Binaries come from the same target directory as this test. `cargo xtask
//! test` builds them all first; when a test runs alone and an agent binary is
//! missing, the harness builds the agent crates once.

#![allow(dead_code)]

pub mod patch_host;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Generous: CI machines are small and shared.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_palisade-backend"))
        .parent()
        .expect("binary has a directory")
        .to_owned()
}

pub fn backend_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_palisade-backend"))
}

/// The agent binary (and its children next to it), built once if missing.
pub fn agent_bin() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    BUILT.get_or_init(|| {
        let missing = [
            "palisade-agent",
            "palisade-agent-collector",
            "palisade-agent-monitor",
            "palisade-agent-control",
        ]
        .iter()
        .any(|b| !dir.join(b).exists());
        if missing {
            let mut cmd = Command::new(env!("CARGO"));
            if dir.ends_with("release") {
                cmd.arg("build").arg("--release");
            } else {
                cmd.arg("build");
            }
            let status = cmd
                .args([
                    "-p",
                    "palisade-agent",
                    "-p",
                    "palisade-agent-collector",
                    "-p",
                    "palisade-agent-monitor",
                    "-p",
                    "palisade-agent-control",
                ])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the agent binaries failed");
        }
    });
    dir.join("palisade-agent")
}

/// The database a test's backend runs on: SQLite in its data directory, or
/// a fresh database on the run's throwaway PostgreSQL cluster.
pub struct TestDb {
    pg: Option<palisade_testkit::pg::TestDatabase>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb { pg: None }
    }

    pub fn postgres() -> TestDb {
        let database = palisade_testkit::pg::database()
            .unwrap_or_else(|e| panic!("a PostgreSQL test database: {e}"));
        TestDb { pg: Some(database) }
    }

    /// The `--database` URL, or None for SQLite in the data directory.
    pub fn url(&self) -> Option<String> {
        self.pg.as_ref().map(|d| d.url())
    }
}

/// Makes `sqlite::<name>` and `postgres::<name>` tests of each async
/// function `<name>(TestDb)` listed.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::support::TestDb::sqlite()).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::support::TestDb::postgres()).await
            })*
        }
    };
}

/// A running backend. Killed when dropped.
pub struct Backend {
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    /// `--database`, when not SQLite in the data directory.
    pub database: Option<String>,
    /// `--config`, when the test wrote a configuration file.
    pub config: Option<PathBuf>,
    child: Option<Child>,
}

impl Backend {
    /// Starts a backend on a free port with its data in `data_dir`.
    pub fn start(data_dir: &Path) -> Backend {
        Self::start_on(data_dir, "127.0.0.1:0".parse().expect("addr"))
    }

    /// Starts a backend on `listen` (port 0: any free port).
    pub fn start_on(data_dir: &Path, listen: SocketAddr) -> Backend {
        Self::start_with(data_dir, &listen.to_string(), &[])
    }

    /// Starts a backend on `listen` with extra server-certificate names.
    pub fn start_with(data_dir: &Path, listen: &str, server_names: &[&str]) -> Backend {
        Self::start_db(data_dir, listen, server_names, &TestDb::sqlite())
    }

    /// Starts a backend on a free port and the database `db`.
    pub fn start_in(data_dir: &Path, db: &TestDb) -> Backend {
        Self::start_db(data_dir, "127.0.0.1:0", &[], db)
    }

    /// Starts a backend on `listen`, with extra server-certificate names, on
    /// the database `db`.
    pub fn start_db(data_dir: &Path, listen: &str, server_names: &[&str], db: &TestDb) -> Backend {
        Self::start_full(data_dir, listen, server_names, db, None)
    }

    /// Starts a backend on a free port, on SQLite in `data_dir`, with
    /// `config_toml` as its configuration file (written next to the data
    /// directory; the administrative commands read it too).
    pub fn start_configured(data_dir: &Path, config_toml: &str) -> Backend {
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, config_toml).expect("write the backend's config file");
        Self::start_full(
            data_dir,
            "127.0.0.1:0",
            &[],
            &TestDb::sqlite(),
            Some(config),
        )
    }

    fn start_full(
        data_dir: &Path,
        listen: &str,
        server_names: &[&str],
        db: &TestDb,
        config: Option<PathBuf>,
    ) -> Backend {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("backend.log"))
            .expect("log file");
        let database = db.url();
        let mut cmd = Command::new(backend_bin());
        if let Some(url) = &database {
            cmd.arg("--database").arg(url);
        }
        if let Some(config) = &config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .arg("--listen")
            .arg(listen)
            .args(server_names.iter().flat_map(|n| ["--server-name", n]))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("backend starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the backend never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "backend did not report its address; log: {}",
                read_log(&data_dir.with_extension("backend.log"))
            )
        });
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the backend: {line:?}"));
        Backend {
            data_dir: data_dir.to_owned(),
            addr,
            database,
            config,
            child: Some(child),
        }
    }

    /// Opens this backend's database from the test, to audit what it stored.
    pub async fn db(&self) -> palisade_backend::db::Db {
        let url = match &self.database {
            Some(url) => palisade_backend::db::DatabaseUrl::parse(url).expect("database url"),
            None => palisade_backend::db::DatabaseUrl::sqlite_in(&self.data_dir),
        };
        tokio::task::spawn_blocking(move || palisade_backend::db::Db::open(&url))
            .await
            .expect("open task")
            .expect("open the backend's database")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Runs an administrative command against this backend's data directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(backend_bin());
        if let Some(url) = &self.database {
            cmd.arg("--database").arg(url);
        }
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("cli runs")
    }

    /// Runs an administrative command that must succeed; returns its stdout, trimmed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "palisade-backend {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    pub fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create"];
        args.extend_from_slice(extra);
        self.cli_ok(&args)
    }

    pub fn api_token(&self) -> String {
        self.cli_ok(&["api-token", "create", "tests", "--role", "admin"])
    }

    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.data_dir.join("pki/ca.pem")
    }

    /// Stops the process: SIGKILL if `hard`, else SIGTERM and wait.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            signal(
                child.id(),
                if hard {
                    nix::sys::signal::Signal::SIGKILL
                } else {
                    nix::sys::signal::Signal::SIGTERM
                },
            );
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        read_log(&self.data_dir.with_extension("backend.log"))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- backend log (last 40 lines)\n{}", tail(&self.log(), 40));
        }
        self.stop(true);
    }
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Runs `palisade-agent enroll`.
pub fn enroll(server: &str, token: &str, state_dir: &Path) -> Output {
    Command::new(agent_bin())
        .args([
            "enroll",
            "--server",
            server,
            "--token",
            token,
            "--state-dir",
        ])
        .arg(state_dir)
        .output()
        .expect("agent enroll runs")
}

/// A running agent (`palisade-agent run`). Killed (with its children) when dropped.
pub struct Agent {
    pub state_dir: PathBuf,
    child: Option<Child>,
}

impl Agent {
    pub fn start(state_dir: &Path) -> Agent {
        Self::start_with(state_dir, "1s")
    }

    /// Starts the agent with the given metrics interval.
    pub fn start_with(state_dir: &Path, metrics_interval: &str) -> Agent {
        let mut cmd = Command::new(agent_bin());
        cmd.args([
            "run",
            "--metrics-interval",
            metrics_interval,
            "--health-interval",
            "1s",
            "--state-dir",
        ])
        .arg(state_dir);
        Self::spawn(cmd, state_dir)
    }

    /// Starts a prepared `palisade-agent run` command, logging next to `state_dir`.
    pub fn spawn(mut cmd: Command, state_dir: &Path) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.with_extension("agent.log"))
            .expect("log file");
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        Agent {
            state_dir: state_dir.to_owned(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            // The launcher (as root) and the three children.
            let mut kids = children_of(child.id());
            kids.extend(agent_children(child.id()));
            signal(
                child.id(),
                if hard {
                    nix::sys::signal::Signal::SIGKILL
                } else {
                    nix::sys::signal::Signal::SIGTERM
                },
            );
            let _ = child.wait();
            // The children exit when their socket closes; make sure of it.
            for (pid, _) in kids {
                wait_gone(pid);
            }
        }
    }

    pub fn log(&self) -> String {
        read_log(&self.state_dir.with_extension("agent.log"))
    }
}

/// The last `n` lines of a log, for failure reports.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log (last 60 lines)\n{}", tail(&self.log(), 60));
        }
        self.stop(true);
    }
}

/// Waits (bounded) until `pid` no longer exists, killing it at the deadline.
pub fn wait_gone(pid: u32) {
    let end = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > end {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent's three children (collector, monitor, control) with their
/// program names. Run as an ordinary user, the agent starts them itself;
/// run as root, its privileged launcher (a child of the agent also named
/// `palisade-agent`) starts them.
pub fn agent_children(agent_pid: u32) -> Vec<(u32, String)> {
    children_of(agent_pid)
        .into_iter()
        .flat_map(|(pid, name)| {
            if name == "palisade-agent" {
                children_of(pid)
            } else {
                vec![(pid, name)]
            }
        })
        .collect()
}

/// Direct children of `pid` with the file names of their programs, from /proc
/// (not `comm`, which the kernel cuts to 15 bytes: all three children would
/// read "palisade-agent-").
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // comm is in parentheses and may contain spaces; ppid is the second field after it.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid: Option<u32> = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            let argv0 = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let argv0 = argv0.split(|b| *b == 0).next().unwrap_or_default();
            let name = Path::new(std::str::from_utf8(argv0).unwrap_or_default())
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            out.push((child, name));
        }
    }
    out
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A minimal HTTPS client trusting only the backend's CA.
#[derive(Clone)]
pub struct Https {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    pub cookie: Arc<Mutex<Option<String>>>,
}

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Https {
    pub fn new(backend: &Backend) -> Https {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            rustls_pki_types::CertificateDer::pem_file_iter(backend.ca_pem()).expect("ca.pem")
        {
            roots.add(cert.expect("certificate")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            addr: backend.addr,
            tls: Arc::new(tls),
            cookie: Arc::new(Mutex::new(None)),
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("tcp connect");
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, tcp).await.expect("tls handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = self.cookie.lock().expect("lock").clone() {
            req = req.header("cookie", c);
        }
        let resp = sender
            .send_request(
                req.body(Full::new(bytes::Bytes::from(body)))
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if let Some(set) = headers.get("set-cookie").and_then(|v| v.to_str().ok())
            && let Some(pair) = set.split(';').next()
        {
            *self.cookie.lock().expect("lock") = Some(pair.to_owned());
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Response {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.request("GET", path, &headers, Vec::new()).await
    }

    /// Logs in through the form, keeping the session cookie.
    pub async fn login(&self, user: &str, password: &str) -> Response {
        let origin = format!("https://{}", self.addr);
        let body = format!("username={user}&password={}", urlencode(password));
        self.request(
            "POST",
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", &origin),
            ],
            body.into_bytes(),
        )
        .await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The hosts the API lists.
pub async fn hosts(client: &Https, token: &str) -> Vec<serde_json::Value> {
    let resp = client.get("/api/v1/hosts", Some(token)).await;
    assert_eq!(resp.status, 200, "GET /api/v1/hosts: {}", resp.text());
    resp.json()["hosts"].as_array().cloned().unwrap_or_default()
}

/// Median of measured values (NaN for none); benchmarks report medians.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Every record sequence the backend stored for the one host.
pub async fn stored_seqs(backend: &Backend) -> Vec<u64> {
    let db = backend.db().await;
    db.read("stored seqs", |tx| {
        let all = palisade_backend::hosts::store::HostQuery {
            limit: 10,
            ..Default::default()
        };
        let hosts = palisade_backend::hosts::store::list_page(tx, &all)?;
        assert_eq!(hosts.len(), 1);
        palisade_backend::hosts::store::record_seqs(tx, &hosts[0].0.id)
    })
    .await
    .expect("seqs")
}

/// Stops the agent and checks the no-loss invariant: what the backend stored
/// and what is still in the agent's spool together are exactly 1..next_seq,
/// and the backend's part has no gap.
pub async fn audit_no_loss(agent: &mut Agent, backend: &Backend) {
    agent.stop(false);
    let stored = stored_seqs(backend).await;
    let spool = palisade_agent::spool::Spool::open(&agent.state_dir).expect("open spool");
    let pending: Vec<u64> = spool
        .pending_after(0, usize::MAX)
        .expect("pending")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let next = spool.next_seq();
    let max_stored = stored.last().copied().unwrap_or(0);
    assert_eq!(
        stored,
        (1..=max_stored).collect::<Vec<_>>(),
        "the backend's records have a gap"
    );
    let all: std::collections::BTreeSet<u64> =
        stored.iter().chain(pending.iter()).copied().collect();
    assert_eq!(
        all,
        (1..next).collect::<std::collections::BTreeSet<_>>(),
        "a record was lost (stored {max_stored}, pending {pending:?}, next {next})"
    );
    assert!(
        max_stored > 10,
        "too few records to prove anything: {max_stored}"
    );
}
