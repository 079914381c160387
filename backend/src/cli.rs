//! The `palisade-backend` command line: `serve` and the administrative
//! commands. Administrative commands work directly on the database (SQLite
//! allows them while the server runs; PostgreSQL naturally does) and are
//! audited with actor `cli`, each change and its audit event in one
//! transaction (the code is in each domain's `cli` module). Secrets are
//! printed once, on stdout alone, so scripts can capture them; everything
//! else goes to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::db::Millis;

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
    /// The database, `postgres://...` or `sqlite://PATH`; overrides the
    /// config file's `[database] url`. Default: SQLite in the data directory.
    #[arg(
        long,
        global = true,
        env = "PALISADE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
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
    /// Enrolled hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// Roles and the permission catalogue.
    #[command(subcommand)]
    Role(RoleCommand),
    /// The audit trail's integrity.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Copy a whole database into an empty one (SQLite to PostgreSQL or
    /// back), then verify the copy. Stop the backend first.
    MigrateData(MigrateDataArgs),
}

#[derive(Debug, Args)]
pub struct MigrateDataArgs {
    /// The database to copy from (`sqlite://PATH` or `postgres://...`).
    #[arg(long)]
    pub from: String,
    /// The empty database to copy into.
    #[arg(long)]
    pub to: String,
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
        /// The role it holds: admin, operator, auditor, viewer or a custom one.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Hold the role only for the hosts of this host group.
        #[arg(long)]
        group: Option<String>,
        /// Let the user keep the generated password (for automation);
        /// otherwise they choose their own at the first sign-in.
        #[arg(long)]
        password_is_final: bool,
    },
    /// List users and their roles.
    List,
    /// Disable a user (their sessions end at once).
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// Delete a user (their sessions, roles and API tokens too).
    Delete { name: String },
    /// Lift a sign-in lock (too many failed attempts) on a user name.
    Unlock { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Create an API token and print it once.
    Create {
        name: String,
        /// A role whose permissions the token carries.
        #[arg(long)]
        role: Option<String>,
        /// A permission the token carries (repeatable; `role permissions` lists them).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// The token reaches only this host group's hosts.
        #[arg(long)]
        group: Option<String>,
        /// Lifetime, e.g. 30m, 12h, 7d, 2w (default: no expiry).
        #[arg(long, value_parser = parse_duration_ms)]
        expires: Option<Millis>,
    },
    /// List API tokens (never their secrets).
    List,
    /// Revoke an API token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Revoke a host: its agent's connection is refused from now on.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the chain against every signed checkpoint: those in the
    /// database, the backend's own copy and any exported copy given.
    /// Exits 1 when the trail was tampered with, 2 when it cannot verify.
    Verify {
        /// The checkpoint key's public half (hex), for verifying away from
        /// the backend. Default: derived from the key file.
        #[arg(long)]
        public_key: Option<String>,
        /// An exported copy of checkpoints (`audit checkpoints`, or
        /// `GET /api/v1/audit/checkpoints`); repeatable.
        #[arg(long = "checkpoints")]
        checkpoints: Vec<PathBuf>,
    },
    /// Print the signed checkpoints, one JSON object a line, for keeping
    /// away from this machine.
    Checkpoints,
    /// Print the checkpoint key's public half (hex).
    PublicKey,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// List roles and how many permissions each holds.
    List,
    /// List every permission of the catalogue.
    Permissions,
}

/// A duration the command line does not understand; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parses `30s`, `15m`, `12h`, `7d`, `2w` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<Millis, DurationError> {
    let s = s.trim();
    let refuse = |why: &str| DurationError(format!("{s:?} {why}"));
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| refuse("needs a unit (s, m, h, d, w)"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| refuse("does not start with a number"))?;
    let unit_ms: i64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(refuse("has an unknown unit (s, m, h, d, w)")),
    };
    if n <= 0 {
        return Err(refuse("must be positive"));
    }
    n.checked_mul(unit_ms).ok_or_else(|| refuse("is too long"))
}

/// Loads the configuration with the command-line overrides applied.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &cli.database {
        config.database.url = Some(url.clone());
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

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::MigrateData(args) = &cli.command {
        let (from, to) = (args.from.clone(), args.to.clone());
        let report = tokio::task::spawn_blocking(move || crate::db::copy::migrate_data(&from, &to))
            .await
            .context("the copy task failed")??;
        eprintln!("{report}");
        return Ok(());
    }
    let config = load_config(&cli)?;
    if let Command::Serve(_) = cli.command {
        return crate::server::serve(config).await;
    }
    let audit_config = config.clone();
    let (db, pki) = tokio::task::spawn_blocking(move || crate::server::open(&config))
        .await
        .context("opening the data directory")??;
    match cli.command {
        Command::Serve(_) | Command::MigrateData(_) => {
            // Handled above; the match stays exhaustive without a panic path.
        }
        Command::Token(TokenCommand::Create {
            group,
            cidrs,
            max_per_day,
            expires,
        }) => {
            let request = crate::enrollment::cli::NewToken {
                group,
                cidrs,
                max_per_day,
                expires_in: expires,
            };
            let (token, id) = crate::enrollment::cli::create(&db, &pki, request).await?;
            eprintln!("enrollment token {id} created; it is shown only now:");
            println!("{token}");
        }
        Command::Token(TokenCommand::List) => {
            print!("{}", crate::enrollment::cli::list(&db).await?);
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            crate::enrollment::cli::revoke(&db, &id).await?;
            eprintln!("enrollment token {id} revoked");
        }
        Command::User(UserCommand::Create {
            name,
            role,
            group,
            password_is_final,
        }) => {
            let password = crate::identity::cli::create_user(
                &db,
                &name,
                &role,
                group.as_deref(),
                password_is_final,
            )
            .await?;
            eprintln!("user {name} ({role}) created; the password is shown only now:");
            println!("{password}");
        }
        Command::User(UserCommand::List) => {
            print!("{}", crate::identity::cli::list_users(&db).await?)
        }
        Command::User(UserCommand::Disable { name }) => {
            crate::identity::cli::set_disabled(&db, &name, true).await?;
            eprintln!("user {name} disabled; their sessions have ended");
        }
        Command::User(UserCommand::Enable { name }) => {
            crate::identity::cli::set_disabled(&db, &name, false).await?;
            eprintln!("user {name} enabled");
        }
        Command::User(UserCommand::Unlock { name }) => {
            if crate::identity::cli::unlock_user(&db, &audit_config, &name).await? {
                eprintln!("sign-in of {name} unlocked");
            } else {
                eprintln!("{name} was not held back; nothing to lift");
            }
        }
        Command::User(UserCommand::Delete { name }) => {
            crate::identity::cli::delete_user(&db, &name).await?;
            eprintln!("user {name} deleted");
        }
        Command::ApiToken(ApiTokenCommand::Create {
            name,
            role,
            permissions,
            group,
            expires,
        }) => {
            let request = crate::identity::cli::NewApiToken {
                name: name.clone(),
                role,
                permissions,
                group,
                expires_in: expires,
            };
            let token = crate::identity::cli::create_api_token(&db, request).await?;
            let id = token.split('.').next().unwrap_or_default();
            eprintln!("API token {id} ({name}) created; it is shown only now:");
            println!("{token}");
        }
        Command::ApiToken(ApiTokenCommand::List) => {
            print!("{}", crate::identity::cli::list_api_tokens(&db).await?)
        }
        Command::ApiToken(ApiTokenCommand::Revoke { id }) => {
            crate::identity::cli::revoke_api_token(&db, &id).await?;
            eprintln!("API token {id} revoked");
        }
        Command::Host(HostCommand::Revoke { id }) => {
            crate::hosts::cli::revoke(&db, &id).await?;
            eprintln!("host {id} revoked; a running backend closes its connection within seconds");
        }
        Command::Role(RoleCommand::List) => print!("{}", crate::access::http::cli_list(&db).await?),
        Command::Role(RoleCommand::Permissions) => {
            print!("{}", crate::access::http::cli_permissions())
        }
        Command::Audit(AuditCommand::Verify {
            public_key,
            checkpoints,
        }) => {
            let report = match crate::audit::cli::verify(
                &db,
                &audit_config,
                public_key.as_deref(),
                &checkpoints,
            )
            .await
            {
                Ok(report) => report,
                // 2: could not verify; 1: verified and found tampering.
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2);
                }
            };
            print!("{report}");
            if !report.intact() {
                std::process::exit(1);
            }
        }
        Command::Audit(AuditCommand::Checkpoints) => {
            print!("{}", crate::audit::cli::checkpoints(&db).await?)
        }
        Command::Audit(AuditCommand::PublicKey) => {
            println!("{}", crate::audit::cli::public_key(&audit_config)?.to_hex())
        }
    }
    Ok(())
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
}
