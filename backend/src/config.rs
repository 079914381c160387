//! Backend configuration: a TOML file (`deny_unknown_fields`), overridden by
//! command-line flags, validated at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The whole configuration, as the file spells it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, the PKI and everything else the backend keeps live.
    pub data_dir: PathBuf,
    /// One address and port: QUIC on UDP, HTTPS (UI, API, enrollment, WSS) on TCP.
    pub listen: SocketAddr,
    pub tls: TlsConfig,
    pub web: WebConfig,
    pub database: DatabaseConfig,
    pub metrics: MetricsConfig,
    pub audit: AuditConfig,
    pub sign_in: SignInConfig,
    pub passwords: PasswordConfig,
    pub mfa: MfaConfig,
    pub passkeys: PasskeyConfig,
}

/// Passkeys (WebAuthn; see `identity::passkeys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeyConfig {
    /// The relying party id: the domain passkeys are bound to, the one
    /// users type to reach the UI (not an address). Default: the first DNS
    /// name of `[tls] server_names`, else `localhost`.
    pub rp_id: Option<String>,
    /// The origins the UI is served from (`https://name[:port]`). Default:
    /// `https://<rp_id>` and `https://<rp_id>:<listen port>`.
    pub origins: Vec<String>,
    /// A passkey that verified its user (PIN, biometrics) signs in without
    /// the password. Off: passkeys are only a second factor.
    pub passwordless: bool,
}

impl Config {
    /// Who this backend is to passkeys: the relying party id and the origins
    /// its pages are served from (see [`PasskeyConfig`]).
    pub fn relying_party(&self) -> crate::identity::webauthn::RelyingParty {
        let id = self.passkeys.rp_id.clone().unwrap_or_else(|| {
            self.tls
                .server_names
                .iter()
                .find(|name| is_domain_name(name))
                .cloned()
                .unwrap_or_else(|| "localhost".to_owned())
        });
        let origins = if self.passkeys.origins.is_empty() {
            vec![
                format!("https://{id}"),
                format!("https://{id}:{}", self.listen.port()),
            ]
        } else {
            self.passkeys.origins.clone()
        };
        crate::identity::webauthn::RelyingParty { id, origins }
    }
}

/// `https://host[:port]`, nothing after (an origin as browsers write it).
fn is_https_origin(origin: &str) -> bool {
    origin.strip_prefix("https://").is_some_and(|rest| {
        !rest.is_empty() && !rest.contains(['/', '@', '?', '#']) && !rest.ends_with(':')
    })
}

/// A DNS name (what a relying party id must be), not an address.
fn is_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Default for PasskeyConfig {
    fn default() -> Self {
        PasskeyConfig {
            rp_id: None,
            origins: Vec::new(),
            passwordless: true,
        }
    }
}

/// Second factors and re-authentication (see `identity::factors`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// Every user must enroll a second factor: until they do, their session
    /// reaches only the enrollment pages.
    pub required: bool,
    /// Users holding one of these roles (by name, anywhere) must enroll.
    pub required_roles: Vec<String>,
    /// Dangerous operations need the password (and second factor) given
    /// within this many seconds in the session.
    pub reauth_window_secs: u64,
    /// The name authenticator apps show next to the account.
    pub issuer: String,
    /// Wrong codes one pending two-step sign-in may take before it ends.
    pub max_code_failures: u32,
    /// Seconds a pending two-step sign-in stays valid.
    pub challenge_secs: u64,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            required: false,
            required_roles: Vec::new(),
            reauth_window_secs: 300,
            issuer: "Palisade".to_owned(),
            max_code_failures: 5,
            challenge_secs: 300,
        }
    }
}

/// The password policy (see `identity::password`). The defaults follow NIST
/// SP 800-63B: length and a blocklist, no composition rules, no expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Fewest characters.
    pub min_length: usize,
    /// Refuse common passwords, ones containing the user name, repeated
    /// characters and simple sequences.
    pub blocklist: bool,
    /// Kinds of characters required (0 to 4: lower case, upper case,
    /// digits, symbols).
    pub require_classes: u8,
    /// A new password may not be one of the last this many (0: no rule).
    pub history: u32,
    /// Days after which a password must be changed (0: never).
    pub max_age_days: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            min_length: 12,
            blocklist: true,
            require_classes: 0,
            history: 0,
            max_age_days: 0,
        }
    }
}

/// Throttling and lockout of password sign-in, per account and per source
/// address, and the bound on concurrent password hashing. A name that
/// matches no account is throttled exactly like one that does, so the
/// answers never tell whether an account exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInConfig {
    /// Failed attempts on one account answered without delay.
    pub account_free_failures: u32,
    /// Failed attempts on one account that lock it for `lockout_secs`.
    pub account_lockout_failures: u32,
    /// Failed attempts from one address (an IPv6 /64) answered without delay.
    pub address_free_failures: u32,
    /// Failed attempts from one address that lock it out.
    pub address_lockout_failures: u32,
    /// How long a lock lasts, seconds.
    pub lockout_secs: u64,
    /// The longest delay between attempts before the lock, seconds (delays
    /// double from one second after the free failures).
    pub max_delay_secs: u64,
    /// Failures older than this are forgotten, seconds.
    pub failure_window_secs: u64,
    /// Password verifications running at once (each takes ~19 MiB and a
    /// core for a few dozen milliseconds); more wait, then get "busy".
    pub max_concurrent_hashes: usize,
    /// How long an attempt waits for a verification slot before it is
    /// told the server is busy, milliseconds.
    pub hash_queue_wait_ms: u64,
}

impl Default for SignInConfig {
    fn default() -> Self {
        SignInConfig {
            account_free_failures: 5,
            account_lockout_failures: 10,
            address_free_failures: 20,
            address_lockout_failures: 100,
            lockout_secs: 15 * 60,
            max_delay_secs: 60,
            failure_window_secs: 3600,
            max_concurrent_hashes: 4,
            hash_queue_wait_ms: 10_000,
        }
    }
}

/// The audit trail's retention and tamper evidence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events older than this many days are pruned behind a signed
    /// boundary; 0 keeps every event.
    pub retention_days: u32,
    /// The Ed25519 key that signs checkpoints of the chain (PKCS#8),
    /// created on first start. Default: `<data_dir>/audit/checkpoint.key`.
    /// Keep it where whoever can write the database cannot: then a
    /// rewritten chain no longer matches the signed checkpoints.
    pub checkpoint_key: Option<PathBuf>,
    /// How often the chain's head is signed, seconds: rows newer than the
    /// last checkpoint can be cut off without a trace, so keep it short.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 0,
            checkpoint_key: None,
            checkpoint_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=/path/ca.pem`,
    /// or `sqlite:///path/palisade.db`. Unset: SQLite in the data directory.
    /// Keep a password out of the file with `--database` or
    /// `PALISADE_DATABASE_URL`, or use a `.pgpass`-style trust setup.
    pub url: Option<String>,
}

/// How long metrics are kept, in days.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Every sample as collected (feeds the one-hour charts).
    pub raw_retention_days: u32,
    /// 1-minute rollups (the 24-hour charts).
    pub minute_retention_days: u32,
    /// 1-hour rollups (the 7- and 90-day charts).
    pub hour_retention_days: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            raw_retention_days: 8,
            minute_retention_days: 35,
            hour_retention_days: 400,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Names and addresses the generated server certificate is valid for
    /// (in addition to localhost, 127.0.0.1, ::1 and this machine's hostname).
    pub server_names: Vec<String>,
    /// An operator-supplied server certificate chain (PEM, leaf first, ending
    /// with the CA agents should pin) and its key. Both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Idle timeout of a browser session, seconds.
    pub session_idle_timeout_secs: u64,
    /// Absolute lifetime of a browser session, seconds.
    pub session_max_lifetime_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/palisade-backend"),
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: TlsConfig::default(),
            web: WebConfig::default(),
            database: DatabaseConfig::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            sign_in: SignInConfig::default(),
            passwords: PasswordConfig::default(),
            mfa: MfaConfig::default(),
            passkeys: PasskeyConfig::default(),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            session_idle_timeout_secs: 30 * 60,
            session_max_lifetime_secs: 12 * 3600,
        }
    }
}

impl Config {
    /// Loads `path` if given, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Parses the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert_file",
                message: "tls.cert_file and tls.key_file go together".into(),
            });
        }
        if self.web.session_idle_timeout_secs == 0 || self.web.session_max_lifetime_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "web.session_idle_timeout_secs",
                message: "session timeouts must be positive".into(),
            });
        }
        let m = &self.metrics;
        if m.raw_retention_days == 0 || m.minute_retention_days == 0 || m.hour_retention_days == 0 {
            return Err(ConfigError::Invalid {
                key: "metrics.raw_retention_days",
                message: "retention periods must be at least one day".into(),
            });
        }
        if m.hour_retention_days < 90 {
            return Err(ConfigError::Invalid {
                key: "metrics.hour_retention_days",
                message: "must be at least 90: the host page charts 90 days from hourly rollups"
                    .into(),
            });
        }
        if let Some(url) = &self.database.url {
            crate::db::DatabaseUrl::parse(url).map_err(|e| ConfigError::Invalid {
                key: "database.url",
                message: e.to_string(),
            })?;
        }
        if !(1..=3600).contains(&self.audit.checkpoint_interval_secs) {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_interval_secs",
                message: "must be 1 to 3600".into(),
            });
        }
        let si = &self.sign_in;
        if si.account_lockout_failures <= si.account_free_failures
            || si.address_lockout_failures <= si.address_free_failures
        {
            return Err(ConfigError::Invalid {
                key: "sign_in.account_lockout_failures",
                message: "a lockout needs more failures than the free ones".into(),
            });
        }
        if si.max_concurrent_hashes == 0 || si.lockout_secs == 0 || si.failure_window_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "sign_in.max_concurrent_hashes",
                message:
                    "max_concurrent_hashes, lockout_secs and failure_window_secs must be positive"
                        .into(),
            });
        }
        let pw = &self.passwords;
        if !(8..=crate::identity::password::MAX_LENGTH).contains(&pw.min_length)
            || pw.require_classes > 4
            || pw.history > 24
        {
            return Err(ConfigError::Invalid {
                key: "passwords.min_length",
                message: "min_length is 8 to 256, require_classes 0 to 4, history 0 to 24".into(),
            });
        }
        let mfa = &self.mfa;
        if !(10..=86_400).contains(&mfa.reauth_window_secs)
            || !(30..=3_600).contains(&mfa.challenge_secs)
            || !(1..=20).contains(&mfa.max_code_failures)
            || mfa.issuer.trim().is_empty()
            || mfa.issuer.contains(':')
        {
            return Err(ConfigError::Invalid {
                key: "mfa",
                message: "reauth_window_secs is 10 to 86400, challenge_secs 30 to 3600, \
                          max_code_failures 1 to 20, issuer non-empty without ':'"
                    .into(),
            });
        }
        if let Some(rp_id) = &self.passkeys.rp_id
            && !is_domain_name(rp_id)
        {
            return Err(ConfigError::Invalid {
                key: "passkeys.rp_id",
                message: format!("{rp_id:?} is not a domain name"),
            });
        }
        if let Some(bad) = self.passkeys.origins.iter().find(|o| !is_https_origin(o)) {
            return Err(ConfigError::Invalid {
                key: "passkeys.origins",
                message: format!("{bad:?} is not an https:// origin"),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                message: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// The database: `[database] url`, else SQLite in the data directory.
    pub fn database_url(&self) -> Result<crate::db::DatabaseUrl, ConfigError> {
        match &self.database.url {
            Some(url) => crate::db::DatabaseUrl::parse(url).map_err(|e| ConfigError::Invalid {
                key: "database.url",
                message: e.to_string(),
            }),
            None => Ok(crate::db::DatabaseUrl::sqlite_in(&self.data_dir)),
        }
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }

    /// The audit checkpoint key's file.
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit
            .checkpoint_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit/checkpoint.key"))
    }

    /// Where the backend keeps its own copy of the checkpoints it signed.
    pub fn audit_checkpoint_log(&self) -> PathBuf {
        self.data_dir.join("audit/checkpoints.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err =
            Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").expect_err("unknown key");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn file_values_are_read() {
        let c = Config::parse("data_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9\"\n[tls]\nserver_names = [\"a.example\"]\n")
            .expect("valid config");
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.tls.server_names, vec!["a.example".to_owned()]);
        c.validate().expect("valid");
    }

    #[test]
    fn half_a_certificate_is_refused() {
        let c = Config::parse("[tls]\ncert_file = \"/x.pem\"\n").expect("parses");
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "tls.cert_file",
                ..
            })
        ));
    }

    #[test]
    fn the_relying_party_follows_the_server_names_and_origins_are_checked() {
        let c = Config::parse(
            "listen = \"0.0.0.0:8443\"\n[tls]\nserver_names = [\"10.0.0.5\", \"palisade.example.com\"]\n",
        )
        .expect("valid config");
        let rp = c.relying_party();
        assert_eq!(
            rp.id, "palisade.example.com",
            "an address is no relying party"
        );
        assert_eq!(
            rp.origins,
            [
                "https://palisade.example.com",
                "https://palisade.example.com:8443"
            ]
        );
        assert_eq!(Config::default().relying_party().id, "localhost");
        for bad in [
            "http://palisade.example.com",
            "https://palisade.example.com/",
            "https://user@palisade.example.com",
            "https://",
        ] {
            let mut c = Config::default();
            c.passkeys.origins = vec![bad.to_owned()];
            assert!(c.validate().is_err(), "{bad} accepted");
        }
        let mut c = Config::default();
        c.passkeys.rp_id = Some("10.0.0.5".to_owned());
        assert!(c.validate().is_err(), "an address as rp_id accepted");
        c.passkeys.rp_id = Some("palisade.example.com".to_owned());
        c.passkeys.origins = vec!["https://palisade.example.com:9443".to_owned()];
        c.validate().expect("valid passkey settings");
    }
}
