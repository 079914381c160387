//! A throwaway PostgreSQL cluster for tests and the demo.
//!
//! [`Cluster::start`] runs Debian's server binaries (`/usr/lib/postgresql/
//! <version>/bin`): `initdb` into a directory, then `pg_ctl start` on a free
//! loopback port with the socket in the same directory, TLS on (a CA and a
//! server certificate for `localhost`/`127.0.0.1` made here, the CA's PEM at
//! [`Cluster::ca_file`]), and durability off (`fsync=off`: nothing here
//! needs to survive a power cut). As root, the cluster runs as the
//! `postgres` user (the server refuses root). [`Cluster::stop`] (or drop)
//! stops it.
//!
//! Tests call [`database`]: a fresh database on the run's shared cluster
//! when `cargo xtask test` started one (it exports [`ENV_ADMIN_URL`] and
//! [`ENV_CA_FILE`]), else on a cluster of the test's own; dropped with the
//! guard.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The superuser URL of the run's shared cluster (set by `cargo xtask test`).
pub const ENV_ADMIN_URL: &str = "PALISADE_TEST_PG_ADMIN_URL";
/// The CA certificate (PEM) the shared cluster's server certificate chains to.
pub const ENV_CA_FILE: &str = "PALISADE_TEST_PG_CA_FILE";

/// Why a cluster could not be had.
#[derive(Debug)]
pub struct PgError(pub String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

fn err(message: impl Into<String>) -> PgError {
    PgError(message.into())
}

/// The server's message of a driver error (its `Display` says only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// The directory of the newest installed PostgreSQL server's binaries.
pub fn bin_dir() -> Result<PathBuf, PgError> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| err(format!("no PostgreSQL server in {} ({e}); install the Debian package `postgresql` (cargo xtask test does)", root.display())))?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        err("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; install `postgresql`")
    })
}

/// Whether the server binaries are installed.
pub fn available() -> bool {
    bin_dir().is_ok()
}

/// A running cluster. Stopped when dropped (unless [`Cluster::keep`]).
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The user to run server programs as (root cannot).
    run_as: Option<(u32, u32)>,
    stopped: bool,
}

fn free_port() -> Result<u16, PgError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("no free port: {e}")))
}

fn postgres_user() -> Result<(u32, u32), PgError> {
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| err(format!("looking up the postgres user: {e}")))?
        .ok_or_else(|| {
            err("running as root, and there is no `postgres` user to run the server as")
        })?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), PgError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| err(format!("chown {}: {e}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)
            .map_err(|e| err(format!("{}: {e}", path.display())))?
            .flatten()
        {
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

impl Cluster {
    /// Creates and starts a cluster in `dir` (created; must not hold one).
    pub fn start(dir: &Path) -> Result<Cluster, PgError> {
        let bin = bin_dir()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        write_tls_files(&dir)?;
        let data = dir.join("data");
        if let Some((uid, gid)) = run_as {
            chown_tree(&dir, uid, gid)?;
            // The server user must reach the directory through its parents.
            let mut parent = dir.parent();
            while let Some(p) = parent {
                if let Ok(meta) = std::fs::metadata(p) {
                    let mode = meta.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(
                            p,
                            std::fs::Permissions::from_mode(mode | 0o001),
                        );
                    }
                }
                parent = p.parent();
            }
        }
        let mut cluster = Cluster {
            dir: dir.clone(),
            bin,
            port: free_port()?,
            run_as,
            stopped: true,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300 -c ssl=on -c ssl_cert_file={dir}/server.crt \
             -c ssl_key_file={dir}/server.key -c ssl_min_protocol_version=TLSv1.3",
            port = cluster.port,
            dir = path_str(&dir)?,
        );
        let log = dir.join("postgres.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        cluster.stopped = false;
        Ok(cluster)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), PgError> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            // std clears the supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .output()
            .map_err(|e| err(format!("running {program}: {e}")))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            return Err(err(format!(
                "{program} failed ({}): {}{}\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The superuser's URL for database `db` (no TLS).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The superuser's URL for the `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// What `cargo xtask test` exports so tests use this cluster.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            (ENV_ADMIN_URL, self.admin_url()),
            (ENV_CA_FILE, self.ca_file().display().to_string()),
        ]
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) -> Result<(), PgError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-m",
                "fast",
                "-w",
                "-t",
                "30",
                "stop",
            ],
        )
    }

    /// Leaves the server running when this handle is dropped.
    pub fn keep(mut self) {
        self.stopped = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the test PostgreSQL cluster: {e}");
        }
    }
}

fn path_str(path: &Path) -> Result<&str, PgError> {
    path.to_str()
        .ok_or_else(|| err(format!("{} is not UTF-8", path.display())))
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`.
fn write_tls_files(dir: &Path) -> Result<(), PgError> {
    let tls = |e: rcgen::Error| err(format!("making the test cluster's certificates: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade test PostgreSQL CA");
    let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
    let ca = ca_params.self_signed(&ca_key).map_err(tls)?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(tls)?;
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).map_err(tls)?;
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;
    let write = |name: &str, text: String, mode: u32| -> Result<(), PgError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| err(format!("chmod {}: {e}", path.display())))
    };
    write("ca.crt", ca.pem(), 0o644)?;
    write("server.crt", cert.pem(), 0o644)?;
    write("server.key", key.serialize_pem(), 0o600)?;
    Ok(())
}

/// Runs `f` on a thread of its own: the synchronous PostgreSQL client runs
/// a small async runtime inside, which must not be created or dropped on a
/// thread that is already running one (an async test).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A database of its own for one test, dropped with this guard.
pub struct TestDatabase {
    name: String,
    admin_url: String,
    port: u16,
    ca_file: PathBuf,
    /// The test's own cluster, when the run has no shared one.
    _cluster: Option<(Cluster, tempfile::TempDir)>,
}

impl TestDatabase {
    /// The database's URL (loopback, no TLS).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
            self.port, self.name
        )
    }

    /// The same database over TLS, verifying the server's certificate.
    pub fn tls_url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.name,
            self.ca_file.display()
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL as the superuser on this database (for tests that play an
    /// attacker holding the database, or inspect it).
    pub fn execute(&self, sql: &str) -> Result<(), PgError> {
        let url = self.url();
        off_runtime(|| {
            let mut client = postgres::Client::connect(&url, postgres::NoTls)
                .map_err(|e| err(format!("connecting to {}: {e}", self.name)))?;
            client
                .batch_execute(sql)
                .map_err(|e| err(format!("{sql}: {}", pg_message(&e))))
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (&self.admin_url, &self.name);
        off_runtime(|| {
            if let Ok(mut admin) = postgres::Client::connect(admin_url, postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}

/// A fresh, empty database: on the run's shared cluster when there is one
/// ([`ENV_ADMIN_URL`]), else on a cluster started for this test.
pub fn database() -> Result<TestDatabase, PgError> {
    off_runtime(database_here)
}

fn database_here() -> Result<TestDatabase, PgError> {
    let (admin_url, ca_file, own) = match (std::env::var(ENV_ADMIN_URL), std::env::var(ENV_CA_FILE))
    {
        (Ok(url), Ok(ca)) => (url, PathBuf::from(ca), None),
        _ => {
            let dir = tempfile::Builder::new()
                .prefix("palisade-pg-")
                .tempdir()
                .map_err(|e| err(format!("temp dir: {e}")))?;
            let cluster = Cluster::start(dir.path())?;
            (cluster.admin_url(), cluster.ca_file(), Some((cluster, dir)))
        }
    };
    let config: postgres::Config = admin_url
        .parse()
        .map_err(|e| err(format!("{ENV_ADMIN_URL}: {e}")))?;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
        .map_err(|e| err(format!("connecting to the test cluster: {e}")))?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| err(format!("creating database {name}: {}", pg_message(&e))))?;
    Ok(TestDatabase {
        name,
        admin_url,
        port,
        ca_file,
        _cluster: own,
    })
}
