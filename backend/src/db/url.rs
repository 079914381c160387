//! Where the database is: `sqlite://PATH` (or a plain path) or
//! `postgres://user:password@host:port/dbname?sslmode=...&sslrootcert=...`.
//!
//! PostgreSQL URLs take libpq's names. TLS goes through rustls (TLS 1.3):
//! - `sslmode=verify-full`: the server's chain must lead to a certificate in
//!   `sslrootcert` (a PEM file) and name the host. The default for any host
//!   that is not this machine.
//! - `sslmode=verify-ca`: the chain is checked, the name is not.
//! - `sslmode=require`: encrypted, the server not authenticated (libpq's
//!   meaning; logged as a warning at start).
//! - `sslmode=disable`: no TLS. The default for a Unix socket or a loopback
//!   address.
//!
//! `pool_size=N` (ours, default 16) bounds the connections one backend
//! process opens. Other parameters go to the driver, which refuses unknown
//! ones. A password in the URL never appears in a log or an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::DbError;

/// Connections per backend process when the URL does not say.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// A parsed database address.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(Box<PgOptions>),
}

#[derive(Clone)]
pub struct PgOptions {
    pub(super) config: postgres::Config,
    pub(super) tls: PgTls,
    pub(super) pool_size: u32,
    /// The URL with its password replaced, for messages.
    pub(super) redacted: String,
}

#[derive(Clone)]
pub(super) enum PgTls {
    Disable,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// libpq's `sslmode` values this backend supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DatabaseUrl {
    /// The default: `palisade.db` in the data directory.
    pub fn sqlite_in(data_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(data_dir.join("palisade.db"))
    }

    /// Parses `url`. A PostgreSQL URL's `sslrootcert` file is read now, so
    /// a bad path is refused at start.
    pub fn parse(url: &str) -> Result<DatabaseUrl, DbError> {
        let url = url.trim();
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(DbError::Url("sqlite: needs a file path, e.g. sqlite:///var/lib/palisade-backend/palisade.db".into()));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(rest)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return parse_postgres(url).map(|options| DatabaseUrl::Postgres(Box::new(options)));
        }
        if url.contains("://") {
            return Err(DbError::Url(format!(
                "{}: unsupported scheme (sqlite:// or postgres://)",
                redact(url)
            )));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(url)))
    }

    /// The address for messages, without a password.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(options) => options.redacted.clone(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }
}

/// `url` with the password of its user info replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{userinfo}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Result<String, DbError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| DbError::Url(format!("bad percent-escape in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DbError::Url(format!("{s:?} is not UTF-8 once decoded")))
}

fn parse_postgres(url: &str) -> Result<PgOptions, DbError> {
    let redacted = redact(url);
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut sslmode = None;
    let mut rootcert = None;
    let mut pool_size = DEFAULT_POOL_SIZE;
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                sslmode = Some(match percent_decode(value)?.as_str() {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(DbError::Url(format!(
                            "sslmode={other:?} is not supported (disable, require, verify-ca, verify-full) in {redacted}"
                        )));
                    }
                });
            }
            "sslrootcert" => rootcert = Some(PathBuf::from(percent_decode(value)?)),
            "pool_size" => {
                pool_size = percent_decode(value)?
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        DbError::Url(format!("pool_size must be 1 to 1000 in {redacted}"))
                    })?;
            }
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(DbError::Url(format!(
                    "{key}: client certificates are not supported yet; use a password or trust the address ({redacted})"
                )));
            }
            _ => passed.push(pair),
        }
    }
    let driver_url = if passed.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", passed.join("&"))
    };
    let config: postgres::Config = driver_url
        .parse()
        .map_err(|e| DbError::Url(format!("{redacted}: {e}")))?;
    let local = config.get_hosts().iter().all(|host| match host {
        postgres::config::Host::Unix(_) => true,
        postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    });
    let mode = match sslmode {
        Some(mode) => mode,
        None if local => SslMode::Disable,
        None => SslMode::VerifyFull,
    };
    let tls = match mode {
        SslMode::Disable => PgTls::Disable,
        mode => {
            let roots = match (&rootcert, mode) {
                (Some(path), _) => Some(load_roots(path)?),
                (None, SslMode::Require) => None,
                (None, _) => {
                    return Err(DbError::Url(format!(
                        "sslmode={} needs sslrootcert=<PEM file of the CA that signed the server's certificate> \
                         (or sslmode=require to encrypt without authenticating the server) in {redacted}",
                        match mode {
                            SslMode::VerifyCa => "verify-ca",
                            _ => "verify-full",
                        }
                    )));
                }
            };
            PgTls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
                client_config(mode, roots)?,
            ))
        }
    };
    Ok(PgOptions {
        config,
        tls,
        pool_size,
        redacted,
    })
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, DbError> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path)
        .map_err(|e| DbError::Url(format!("cannot read sslrootcert {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| DbError::Url(format!("sslrootcert {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| DbError::Url(format!("sslrootcert {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(DbError::Url(format!(
            "sslrootcert {} holds no certificate",
            path.display()
        )));
    }
    Ok(roots)
}

fn client_config(
    mode: SslMode,
    roots: Option<rustls::RootCertStore>,
) -> Result<rustls::ClientConfig, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| DbError::Url(format!("TLS 1.3: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::Require, None) => Arc::new(AnyServer { provider }),
        (mode, Some(roots)) => {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| DbError::Url(format!("sslrootcert: {e}")))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                // verify-ca, and require with a root file (libpq then checks
                // the chain too).
                Arc::new(ChainOnly { inner: webpki })
            }
        }
        (_, None) => {
            return Err(DbError::Url(
                "a TLS mode that verifies needs sslrootcert".into(),
            ));
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` without a root file: encrypted, the server not authenticated.
#[derive(Debug)]
struct AnyServer {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let url = DatabaseUrl::parse("postgres://palisade:s3cret@127.0.0.1:5432/palisade")
            .expect("parses");
        assert_eq!(
            url.redacted(),
            "postgres://palisade:***@127.0.0.1:5432/palisade"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        let err = DatabaseUrl::parse("postgres://u:s3cret@db.example/p?sslmode=bogus")
            .expect_err("refused");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn remote_hosts_must_verify_the_server() {
        let err = DatabaseUrl::parse("postgres://u@db.example/p").expect_err("refused");
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        assert!(DatabaseUrl::parse("postgres://u@db.example/p?sslmode=require").is_ok());
        assert!(DatabaseUrl::parse("postgres://u@localhost/p").is_ok());
        assert!(
            DatabaseUrl::parse(
                "postgres://u@db.example/p?sslmode=verify-full&sslrootcert=/nonexistent"
            )
            .is_err()
        );
    }

    #[test]
    fn sqlite_forms() {
        assert!(
            matches!(DatabaseUrl::parse("sqlite:///var/x.db"), Ok(DatabaseUrl::Sqlite(p)) if p == Path::new("/var/x.db"))
        );
        assert!(matches!(
            DatabaseUrl::parse("/var/x.db"),
            Ok(DatabaseUrl::Sqlite(_))
        ));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("postgres://u@localhost/p?pool_size=0").is_err());
        assert!(DatabaseUrl::parse("postgres://u@localhost/p?bogus_option=1").is_err());
    }
}
