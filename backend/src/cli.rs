//! The `palisade-backend` command line: `serve` and the administrative
//! commands. Administrative commands work directly on the data directory
//! (SQLite allows them while the server runs) and are audited with actor `cli`.
//! Secrets are printed once, on stdout alone, so scripts can capture them;
//! everything else goes to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::store::{ApiToken, EnrollmentToken, Millis, NewAuditEvent, NewUser, Role, Store};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-backend",
    version,
    about = "Palisade backend: fleet data, web UI, API and the agents' uplink"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "PALISADE_BACKEND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (database, PKI); overrides the config file.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the backend: QUIC (UDP) and HTTPS (TCP) on one port number.
    Serve(ServeArgs),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Local user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens for automation.
    #[command(subcommand, name = "api-token")]
    ApiToken(ApiTokenCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port for both QUIC and HTTPS (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Extra name or address for the generated server certificate (repeatable).
    #[arg(long = "server-name")]
    pub server_names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an enrollment token and print it (the only time it is shown).
    Create {
        /// Host group new hosts join.
        #[arg(long)]
        group: Option<String>,
        /// Source network allowed to enroll (repeatable; default: any).
        #[arg(long = "cidr")]
        cidrs: Vec<ipnet::IpNet>,
        /// Enrollments allowed per 24 hours.
        #[arg(long)]
        max_per_day: Option<u32>,
        /// Lifetime, e.g. 30m, 12h, 7d, 2w (default: no expiry).
        #[arg(long, value_parser = parse_duration_ms)]
        expires: Option<Millis>,
    },
    /// List enrollment tokens (never their secrets).
    List,
    /// Revoke an enrollment token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local account and print its generated password once.
    Create {
        name: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Create an API token and print it once.
    Create { name: String },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Admin, Role::Operator, Role::Auditor, Role::Viewer]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Parses `30s`, `15m`, `12h`, `7d`, `2w` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit (s, m, h, d, w)"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let unit_ms: i64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => return Err(format!("unknown unit {other:?} in {s:?} (s, m, h, d, w)")),
    };
    if n <= 0 {
        return Err(format!("{s:?} must be positive"));
    }
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn format_time(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Loads the configuration with the command-line overrides applied.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Command::Serve(args) = &cli.command {
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        config
            .tls
            .server_names
            .extend(args.server_names.iter().cloned());
    }
    config.validate()?;
    Ok(config)
}

async fn audit(
    store: &Arc<dyn Store>,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .append_audit(NewAuditEvent {
            at: crate::now_millis(),
            actor: "cli".into(),
            action: action.into(),
            target,
            source_ip: None,
            user_agent: None,
            outcome: "success".into(),
            details,
        })
        .await
        .context("cannot write the audit log")?;
    Ok(())
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    if let Command::Serve(_) = cli.command {
        return crate::server::serve(config).await;
    }
    let (store, pki) = crate::server::open(&config)?;
    let now = crate::now_millis();
    match cli.command {
        Command::Serve(_) => unreachable_serve(),
        Command::Token(TokenCommand::Create {
            group,
            cidrs,
            max_per_day,
            expires,
        }) => {
            let parts =
                crate::secrets::TokenParts::generate().context("cannot generate a token")?;
            let token = EnrollmentToken {
                id: parts.id.clone(),
                secret_hash: crate::secrets::hash_secret(&parts.secret),
                host_group: group.clone(),
                cidrs: cidrs.clone(),
                max_per_day,
                expires_at: expires.map(|d| now.saturating_add(d)),
                created_at: now,
                revoked_at: None,
            };
            store.create_enrollment_token(token.clone()).await?;
            audit(
                &store,
                "enrollment_token.create",
                Some(parts.id.clone()),
                serde_json::json!({
                    "group": group,
                    "cidrs": cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "max_per_day": max_per_day,
                    "expires_at": token.expires_at,
                }),
            )
            .await?;
            let full = palisade_proto::token::EnrollmentToken {
                id: parts.id.clone(),
                secret: parts.secret,
                ca_pin: pki.ca_pin(),
            };
            eprintln!(
                "enrollment token {} created; it is shown only now:",
                parts.id
            );
            println!("{full}");
        }
        Command::Token(TokenCommand::List) => {
            let tokens = store.list_enrollment_tokens().await?;
            println!(
                "{:<18} {:<10} {:<12} {:<22} {:<22} NETWORKS",
                "ID", "STATE", "MAX/DAY", "CREATED", "EXPIRES"
            );
            for t in tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                let nets = if t.cidrs.is_empty() {
                    "any".to_owned()
                } else {
                    t.cidrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "{:<18} {:<10} {:<12} {:<22} {:<22} {}",
                    t.id,
                    state,
                    t.max_per_day
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "-".into()),
                    format_time(t.created_at),
                    t.expires_at
                        .map(format_time)
                        .unwrap_or_else(|| "never".into()),
                    nets
                );
            }
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            if !store.revoke_enrollment_token(&id, now).await? {
                bail!("no enrollment token with id {id:?}");
            }
            audit(
                &store,
                "enrollment_token.revoke",
                Some(id.clone()),
                serde_json::json!({}),
            )
            .await?;
            eprintln!("enrollment token {id} revoked");
        }
        Command::User(UserCommand::Create { name, role }) => {
            if !valid_username(&name) {
                bail!("invalid user name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'");
            }
            let password =
                crate::secrets::generate_password().context("cannot generate a password")?;
            let hash =
                crate::secrets::hash_password(&password).context("cannot hash the password")?;
            store
                .create_user(NewUser {
                    username: name.clone(),
                    password_hash: hash,
                    role,
                    created_at: now,
                })
                .await?;
            audit(
                &store,
                "user.create",
                Some(name.clone()),
                serde_json::json!({ "role": role.as_str() }),
            )
            .await?;
            eprintln!(
                "user {name} ({}) created; the password is shown only now:",
                role.as_str()
            );
            println!("{password}");
        }
        Command::ApiToken(ApiTokenCommand::Create { name }) => {
            let parts =
                crate::secrets::TokenParts::generate().context("cannot generate a token")?;
            store
                .create_api_token(ApiToken {
                    id: parts.id.clone(),
                    name: name.clone(),
                    secret_hash: crate::secrets::hash_secret(&parts.secret),
                    created_at: now,
                    revoked_at: None,
                })
                .await?;
            audit(
                &store,
                "api_token.create",
                Some(parts.id.clone()),
                serde_json::json!({ "name": name }),
            )
            .await?;
            eprintln!(
                "API token {} ({name}) created; it is shown only now:",
                parts.id
            );
            println!("{parts}");
        }
    }
    Ok(())
}

fn unreachable_serve() {
    // `serve` returned above; kept as a function so the match stays exhaustive
    // without a panic path.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1w"), Ok(604_800_000));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("0d").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
    }

    #[test]
    fn usernames() {
        assert!(valid_username("admin"));
        assert!(valid_username("ops.team-1@example"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username(&"x".repeat(65)));
    }
}
