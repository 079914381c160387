//! The `palisade-agent` command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use palisade_agent_sys::sandbox::platform::{self, Started};
use palisade_agent_sys::sandbox::selftest;
use palisade_proto::msg::{Role, ToChild};
use tokio::sync::{mpsc, watch};

use crate::identity::IdentityStore;
use crate::spool::Spool;
use crate::supervisor::{HealthBoard, Spawner, SupervisorConfig};
use crate::uplink::{UplinkConfig, UplinkEvent};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-agent",
    version,
    about = "Palisade agent: reports this server to a Palisade backend"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this host with a backend, using a token from `palisade-backend token create`.
    Enroll(EnrollArgs),
    /// Run the agent (the platform and its three children).
    Run(RunArgs),
    /// Test only: apply the platform's sandbox as `run` does, then run one
    /// hostile probe under it and print `probe NAME: OUTCOME`.
    #[command(hide = true)]
    Selftest(SelftestArgs),
}

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// exec, socket-inet, listen, write-outside, ptrace, module, read-shadow,
    /// setuid-root, resolve or panic.
    pub probe: String,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Directory of the child binaries (default: next to this program).
    #[arg(long, env = "PALISADE_AGENT_LIBEXEC")]
    pub libexec: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StateDirArg {
    /// Where the agent keeps its identity and spool
    /// (default: /var/lib/palisade-agent as root, else ~/.local/state/palisade-agent).
    #[arg(long, env = "PALISADE_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The backend, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// The enrollment token (`<id>.<secret>.<ca-pin>`).
    #[arg(long, env = "PALISADE_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Replace an existing enrollment.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Interval between metric samples, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub metrics_interval: Duration,
    /// Interval between health checks of the children.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Directory of the child binaries (default: next to this program).
    #[arg(long, env = "PALISADE_AGENT_LIBEXEC")]
    pub libexec: Option<PathBuf>,
    /// The most the spool holds while the backend is out of reach, e.g.
    /// 256MiB, 1GiB (at least 64KiB); beyond it the oldest records are
    /// dropped and counted.
    #[arg(long, env = "PALISADE_AGENT_SPOOL_MAX_BYTES", default_value = "256MiB", value_parser = crate::spool::parse_byte_size)]
    pub spool_max_bytes: u64,
    #[command(flatten)]
    pub uplink: UplinkArgs,
}

/// How the uplink chooses between QUIC and WSS.
#[derive(Debug, Args)]
pub struct UplinkArgs {
    /// How long QUIC may take before WSS is tried in parallel.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub happy_eyeballs_delay: Duration,
    /// First QUIC re-probe while connected over WSS (doubles after each failure).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub quic_probe_initial: Duration,
    /// Longest wait between QUIC re-probes.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub quic_probe_max: Duration,
}

/// The uplink configuration from the stored identity, the flags and
/// `HTTPS_PROXY`/`NO_PROXY` (used for WSS only: QUIC does not go through
/// HTTP proxies).
fn uplink_config(
    identity: &palisade_proto::pb::AgentIdentity,
    args: &UplinkArgs,
) -> anyhow::Result<UplinkConfig> {
    let (host, port) = crate::tls::split_server(&identity.server)
        .with_context(|| format!("stored server {:?} is not HOST:PORT", identity.server))?;
    let tls_for = |alpn: &[u8]| {
        crate::tls::uplink_config(
            &identity.server_ca_der,
            &identity.certificate_der,
            &identity.private_key_der,
            alpn,
        )
        .context("cannot build the TLS configuration from the stored identity")
    };
    let quic = crate::transport::quic_client_config(tls_for(palisade_proto::UPLINK_ALPN)?)
        .map_err(|e| anyhow::anyhow!("cannot build the QUIC configuration: {e}"))?;
    let wss_tls = Arc::new(tls_for(b"http/1.1")?);
    let proxy = crate::transport::Proxy::from_env(&host).context("HTTPS_PROXY")?;
    if let Some(p) = &proxy {
        tracing::info!(proxy = %format!("{}:{}", p.host, p.port), "WSS goes through an HTTP proxy");
    }
    Ok(UplinkConfig {
        target: crate::transport::Target {
            server: identity.server.clone(),
            host,
            port,
            quic,
            wss_tls,
            proxy,
        },
        policy: crate::uplink::PathPolicy {
            happy_eyeballs_delay: args.happy_eyeballs_delay,
            probe_initial: args.quic_probe_initial,
            probe_max: args.quic_probe_max.max(args.quic_probe_initial),
            ..Default::default()
        },
    })
}

/// Parses `500ms`, `10s`, `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit (ms, s, m)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        other => return Err(format!("unknown unit {other:?} in {s:?} (ms, s, m)")),
    };
    if d < Duration::from_millis(10) {
        return Err(format!("{s:?} is too short (at least 10ms)"));
    }
    Ok(d)
}

fn state_dir(arg: &StateDirArg) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &arg.state_dir {
        return Ok(dir.clone());
    }
    if palisade_agent_sys::identity::is_root() {
        return Ok(PathBuf::from("/var/lib/palisade-agent"));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .context("cannot find a state directory: set --state-dir")?;
    Ok(base.join("palisade-agent"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// What `main` did before the async runtime existed.
pub enum Prepared {
    /// Nothing to do before the runtime (`enroll`).
    Nothing,
    /// `run`: the platform's start (see [`prepare`]).
    Run(PlatformStart),
    /// The command is complete (`selftest`): exit with this code.
    Exit(std::process::ExitCode),
}

/// The platform's start, before its runtime.
pub struct PlatformStart {
    started: Started,
    /// The state directory as given (for messages).
    state_dir: PathBuf,
    libexec: PathBuf,
}

/// The part of a command that must run while the process has one thread,
/// before `main` builds the async runtime: for `run` (and `selftest`) as
/// root, forking the privileged launcher, handing the state directory to
/// the platform's user, dropping every privilege and applying the platform's
/// sandbox (`palisade_agent_sys::sandbox::platform::start`). As an ordinary
/// user it changes nothing.
pub fn prepare(cli: &Cli) -> anyhow::Result<Prepared> {
    match &cli.command {
        Command::Enroll(_) => Ok(Prepared::Nothing),
        Command::Run(args) => Ok(Prepared::Run(start_platform(
            &args.state,
            args.libexec.as_deref(),
        )?)),
        Command::Selftest(args) => {
            let probe = selftest::Probe::parse(&args.probe)
                .with_context(|| format!("unknown probe {:?}", args.probe))?;
            let start = start_platform(&args.state, args.libexec.as_deref())?;
            if let Started::Sandboxed { description, .. } = &start.started {
                tracing::info!(sandbox = %description, "platform sandboxed");
            }
            Ok(Prepared::Exit(selftest::run(probe)))
        }
    }
}

fn start_platform(
    state: &StateDirArg,
    libexec: Option<&std::path::Path>,
) -> anyhow::Result<PlatformStart> {
    let state_dir = state_dir(state)?;
    let libexec = match libexec {
        Some(d) => d.to_owned(),
        None => std::env::current_exe()
            .context("cannot find this program's path")?
            .parent()
            .map(PathBuf::from)
            .context("this program has no directory")?,
    };
    for role in Role::ALL {
        let program = crate::supervisor::child_program(&libexec, role);
        if !program.exists() {
            bail!(
                "child program {} is missing (set --libexec)",
                program.display()
            );
        }
    }
    let started = platform::start(platform::Start {
        state_dir: &state_dir,
        libexec: &libexec,
    })
    .context("cannot start the platform in its sandbox")?;
    Ok(PlatformStart {
        started,
        state_dir,
        libexec,
    })
}

pub async fn run(cli: Cli, prepared: Prepared) -> anyhow::Result<()> {
    match (cli.command, prepared) {
        (Command::Enroll(args), _) => enroll(args).await,
        (Command::Run(args), Prepared::Run(start)) => run_agent(args, start).await,
        (Command::Run(_), _) => bail!("`run` was not prepared before the runtime started"),
        (Command::Selftest(_), _) => Ok(()),
    }
}

async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let token: palisade_proto::token::EnrollmentToken =
        args.token.parse().context("invalid enrollment token")?;
    let dir = state_dir(&args.state)?;
    let store = IdentityStore::open(&dir).context("cannot open the identity store")?;
    let identity = crate::enroll::enroll(&args.server, &token, &hostname(), &store, args.force)
        .await
        .context("enrollment failed")?;
    eprintln!(
        "enrolled with {} as agent {}; identity saved in {}",
        identity.server,
        identity.agent_id,
        dir.display()
    );
    println!("{}", identity.agent_id);
    Ok(())
}

async fn run_agent(args: RunArgs, start: PlatformStart) -> anyhow::Result<()> {
    let PlatformStart {
        started,
        state_dir,
        libexec,
    } = start;
    // `dir` is how this process reaches its state: sandboxed, its working
    // directory (a directory above it may be closed to its user).
    let (dir, spawner) = match started {
        Started::Sandboxed {
            launcher,
            description,
            state_dir: absolute,
            work_dir,
        } => {
            tracing::info!(sandbox = %description, launcher_pid = launcher.pid(), state_dir = %absolute.display(), "platform sandboxed; children start through the privileged launcher");
            let launcher = launcher.start().context("cannot talk to the launcher")?;
            (work_dir, Spawner::Launcher(launcher))
        }
        Started::Unsandboxed { description } => {
            tracing::warn!(
                sandbox = %description,
                "running as an ordinary user: the agent is NOT sandboxed (development mode); run it as root (under systemd) for privilege separation"
            );
            (
                state_dir.clone(),
                Spawner::Direct {
                    libexec: libexec.clone(),
                    state_dir: state_dir.clone(),
                },
            )
        }
    };
    let store = IdentityStore::open(&dir).context("cannot open the identity store")?;
    let Some(identity) = store.load().context("cannot load the identity")? else {
        bail!(
            "this agent is not enrolled: run `palisade-agent enroll --server HOST:PORT --token TOKEN` first"
        );
    };

    let spool_config = crate::spool::SpoolConfig {
        max_bytes: args.spool_max_bytes,
    };
    let spool = Arc::new(Spool::open_with(&dir, spool_config).context("cannot open the spool")?);
    let uplink = uplink_config(&identity, &args.uplink)?;
    tracing::info!(agent_id = %identity.agent_id, server = %identity.server, state_dir = %dir.display(), "agent starting");

    let config = SupervisorConfig {
        libexec,
        metrics_interval: args.metrics_interval,
        health_interval: args.health_interval,
    };
    let board = HealthBoard::default();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut to_collector = None;
    let mut to_control = None;
    let mut tasks = Vec::new();
    for role in Role::ALL {
        let (tx, rx) = mpsc::channel(16);
        match role {
            Role::Collector => to_collector = Some(tx),
            Role::Control => to_control = Some(tx),
            Role::Monitor => {}
        }
        tasks.push(tokio::spawn(crate::supervisor::supervise(
            role,
            config.clone(),
            spawner.clone(),
            spool.clone(),
            board.clone(),
            rx,
            shutdown_rx.clone(),
        )));
    }
    tokio::spawn(crate::supervisor::report_health(
        board.clone(),
        spool.clone(),
        Duration::from_secs(300),
    ));

    let (events_tx, mut events_rx) = mpsc::channel(16);
    tokio::spawn(crate::uplink::run(uplink, spool.clone(), events_tx));
    // Fresh facts at every connect and the backend's package digest to the
    // collector; commands to control.
    tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            match (event, &to_collector, &to_control) {
                (UplinkEvent::Connected { .. }, Some(tx), _) => {
                    let _ = tx.send(ToChild::CollectFacts).await;
                }
                (UplinkEvent::PackagesHeld(held), Some(tx), _) => {
                    // Not waited for either: a held digest that is dropped
                    // comes again at the next connection.
                    if let Err(e) = tx.try_send(ToChild::PackagesHeld(held)) {
                        tracing::warn!(error = %e, "the backend's package digest is left for the next connection");
                    }
                }
                (UplinkEvent::Command(command), _, Some(tx)) => {
                    // Never wait here (the uplink waits for this loop): with
                    // control's queue full, the command is dropped and the
                    // backend delivers it again at the next connection.
                    let queued = tx.try_send(ToChild::Execute(command));
                    if let Err(e) = queued {
                        tracing::warn!(error = %e, "a command for control is left for redelivery");
                    }
                }
                _ => {}
            }
        }
    });

    let launcher_lost = tokio::select! {
        () = shutdown_signal() => false,
        () = spawner.lost() => true,
    };
    tracing::info!("stopping");
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    if launcher_lost {
        bail!(
            "the privileged launcher exited, so no child can be restarted; stopping for the service manager to restart the agent"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5ms").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
