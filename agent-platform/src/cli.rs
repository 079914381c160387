//! The `palisade-agent` command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use palisade_proto::msg::{Role, ToChild};
use tokio::sync::{mpsc, watch};

use crate::identity::IdentityStore;
use crate::spool::Spool;
use crate::supervisor::{HealthBoard, SupervisorConfig};
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
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is too short (at least 100ms)"));
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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll(args) => enroll(args).await,
        Command::Run(args) => run_agent(args).await,
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

async fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    let dir = state_dir(&args.state)?;
    let store = IdentityStore::open(&dir).context("cannot open the identity store")?;
    let Some(identity) = store.load().context("cannot load the identity")? else {
        bail!(
            "this agent is not enrolled: run `palisade-agent enroll --server HOST:PORT --token TOKEN` first"
        );
    };
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        tracing::warn!(
            "running as root WITHOUT privilege separation: the sandbox is not implemented yet"
        );
    } else {
        tracing::warn!(%uid, "running as an ordinary user: the agent is NOT sandboxed (development mode)");
    }
    let libexec = match args.libexec {
        Some(d) => d,
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

    let spool = Arc::new(Spool::open(&dir).context("cannot open the spool")?);
    let (host, port) = crate::tls::split_server(&identity.server)
        .with_context(|| format!("stored server {:?} is not HOST:PORT", identity.server))?;
    let tls = crate::tls::uplink_config(
        &identity.server_ca_der,
        &identity.certificate_der,
        &identity.private_key_der,
        palisade_proto::UPLINK_ALPN,
    )
    .context("cannot build the TLS configuration from the stored identity")?;
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
    let uplink = UplinkConfig {
        server: identity.server.clone(),
        server_name: host,
        port,
        tls,
    };
    tokio::spawn(crate::uplink::run(uplink, spool.clone(), events_tx));
    // Fresh facts at every connect; commands to control.
    tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            match (event, &to_collector, &to_control) {
                (UplinkEvent::Connected { .. }, Some(tx), _) => {
                    let _ = tx.send(ToChild::CollectFacts).await;
                }
                (UplinkEvent::Command(command), _, Some(tx)) => {
                    let _ = tx.send(ToChild::Execute(command)).await;
                }
                _ => {}
            }
        }
    });

    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
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
        assert!(parse_duration("50ms").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
