//! The backend's keys and certificates, kept under `<data_dir>/pki/`.
//!
//! - `ca.pem` / `ca.key`: the Palisade CA. It issues the agents' client
//!   certificates (clientAuth only) and, unless the operator supplies one, the
//!   server certificate (serverAuth only). Enrollment tokens pin the CA that
//!   anchors the server chain (SHA-256 of its SubjectPublicKeyInfo).
//! - `server.pem` / `server.key`: the generated server certificate; reissued
//!   by the same CA when the wanted names change (the pin stays the same).
//! - `signing.key`: the Ed25519 key that signs commands to agents (PKCS#8).
//!
//! Private keys are written with mode 0600, atomically (temp file + rename),
//! and never logged.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {what} in {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("random number generator failed")]
    Random,
}

/// Why a certificate signing request was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CsrError {
    #[error("the certificate signing request is malformed or its signature is invalid")]
    Malformed,
    #[error(
        "the certificate signing request uses an unsupported key type (use ECDSA P-256 or Ed25519)"
    )]
    UnsupportedKey,
    #[error("could not sign the certificate: {0}")]
    Sign(String),
}

/// How long an agent certificate is valid. Renewal over the uplink comes with
/// a later issue; until then a year keeps agents running.
pub const AGENT_CERT_DAYS: i64 = 365;

/// The backend's PKI, loaded from the data directory.
pub struct Pki {
    ca_cert_der: CertificateDer<'static>,
    ca_key: KeyPair,
    /// Server chain: leaf first, ending with the pinned anchor.
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
    /// SHA-256 of the SPKI of the last certificate of `server_chain`.
    ca_pin: [u8; 32],
    signing_key: Ed25519KeyPair,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_pin", &hex::encode(self.ca_pin))
            .finish_non_exhaustive()
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn gen_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// Writes `bytes` to `path` atomically with `mode`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(io("read", path))
}

fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let bytes = read_file(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| PkiError::Invalid {
        what: "certificate PEM",
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(PkiError::Invalid {
            what: "certificate PEM",
            path: path.to_owned(),
            reason: "no certificate".into(),
        });
    }
    Ok(certs)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Positive and non-zero as DER integers must be.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // Allow a little clock skew between backend and agents.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// The names a generated server certificate covers.
pub fn default_server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(h) = nix::unistd::gethostname()
        && let Some(h) = h.to_str()
        && !h.is_empty()
    {
        names.push(h.to_owned());
    }
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

fn san_for(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name.to_owned().try_into().map_err(gen_err)?;
    Ok(SanType::DnsName(dns))
}

/// The SAN strings of a certificate, for comparing with the wanted names.
fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl Pki {
    /// Loads the PKI from `dir`, creating what is missing. `server_names` are
    /// the names the generated server certificate must cover; `supplied` is an
    /// operator's (chain PEM, key PEM) that replaces the generated one.
    pub fn load_or_create(
        dir: &Path,
        server_names: &[String],
        supplied: Option<(&Path, &Path)>,
    ) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", dir))?;

        let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_path.exists() || !ca_key_path.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Palisade CA");
            dn.push(DnType::OrganizationName, "Palisade");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.serial_number = Some(random_serial()?);
            validity(&mut params, 20 * 365);
            let cert = params.self_signed(&key).map_err(gen_err)?;
            write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&ca_path, cert.pem().as_bytes(), 0o644)?;
        }
        let ca_cert_der = pem_certs(&ca_path)?.remove(0);
        let ca_key_pem =
            String::from_utf8(read_file(&ca_key_path)?).map_err(|e| PkiError::Invalid {
                what: "CA key",
                path: ca_key_path.clone(),
                reason: e.to_string(),
            })?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::Invalid {
            what: "CA key",
            path: ca_key_path.clone(),
            reason: e.to_string(),
        })?;

        let (server_chain, server_key_der) = match supplied {
            Some((chain_path, key_path)) => {
                use rustls_pki_types::pem::PemObject;
                let chain = pem_certs(chain_path)?;
                let key = PrivateKeyDer::from_pem_slice(&read_file(key_path)?).map_err(|e| {
                    PkiError::Invalid {
                        what: "server key PEM",
                        path: key_path.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                (chain, key.secret_der().to_vec())
            }
            None => Self::server_cert(dir, &ca_cert_der, &ca_key, server_names)?,
        };
        let anchor = server_chain.last().ok_or_else(|| PkiError::Invalid {
            what: "server chain",
            path: dir.to_owned(),
            reason: "empty".into(),
        })?;
        let ca_pin = palisade_proto::token::spki_pin(anchor).map_err(|e| PkiError::Invalid {
            what: "server chain anchor",
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;

        let signing_path = dir.join("signing.key");
        if !signing_path.exists() {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| PkiError::Random)?;
            write_file(&signing_path, pkcs8.as_ref(), 0o600)?;
        }
        let signing_key = Ed25519KeyPair::from_pkcs8(&read_file(&signing_path)?).map_err(|e| {
            PkiError::Invalid {
                what: "command-signing key",
                path: signing_path.clone(),
                reason: e.to_string(),
            }
        })?;

        Ok(Pki {
            ca_cert_der,
            ca_key,
            server_chain,
            server_key_der,
            ca_pin,
            signing_key,
        })
    }

    /// Loads the generated server certificate, (re)issuing it when missing or
    /// when its names differ from `wanted`.
    fn server_cert(
        dir: &Path,
        ca_cert_der: &CertificateDer<'static>,
        ca_key: &KeyPair,
        wanted: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), PkiError> {
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        let wanted = default_server_names(wanted);
        if cert_path.exists() && key_path.exists() {
            let chain = pem_certs(&cert_path)?;
            let mut have = cert_names(&chain[0]);
            let mut want = wanted.clone();
            have.sort();
            want.sort();
            if have == want {
                use rustls_pki_types::pem::PemObject;
                let key = PrivateKeyDer::from_pem_slice(&read_file(&key_path)?).map_err(|e| {
                    PkiError::Invalid {
                        what: "server key PEM",
                        path: key_path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                return Ok((chain, key.secret_der().to_vec()));
            }
            tracing::info!(names = ?wanted, "server names changed: reissuing the server certificate");
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params.subject_alt_names = wanted
            .iter()
            .map(|n| san_for(n))
            .collect::<Result<_, _>>()?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Palisade backend");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial()?);
        validity(&mut params, 2 * 365);
        let issuer = Issuer::from_ca_cert_der(ca_cert_der, ca_key).map_err(gen_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        let ca_pem = pem_of(ca_cert_der);
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(
            &cert_path,
            format!("{}{}", cert.pem(), ca_pem).as_bytes(),
            0o644,
        )?;
        Ok((
            vec![cert.der().clone(), ca_cert_der.clone()],
            key.serialize_der(),
        ))
    }

    /// The pin enrollment tokens carry.
    pub fn ca_pin(&self) -> [u8; 32] {
        self.ca_pin
    }

    /// The CA that issues (and verifies) agent certificates.
    pub fn agent_ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    pub fn server_chain(&self) -> &[CertificateDer<'static>] {
        &self.server_chain
    }

    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()))
    }

    /// The command-signing public key (Ed25519, 32 bytes).
    pub fn signing_public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.signing_key.public_key().as_ref());
        out
    }

    /// Signs `message` with the command-signing key.
    pub fn sign_command(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.signing_key.sign(message).as_ref());
        out
    }

    /// Issues a client certificate for `agent_id` to the key in `csr_der`.
    /// The subject comes from us, never from the request: CN = agent id,
    /// clientAuth only. Returns the certificate (DER).
    pub fn issue_agent_cert(&self, agent_id: &str, csr_der: &[u8]) -> Result<Vec<u8>, CsrError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| match e {
                    rcgen::Error::UnsupportedSignatureAlgorithm => CsrError::UnsupportedKey,
                    _ => CsrError::Malformed,
                })?;
        let alg = csr.public_key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256 && alg != &rcgen::PKCS_ED25519 {
            return Err(CsrError::UnsupportedKey);
        }
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial().map_err(|e| CsrError::Sign(e.to_string()))?);
        validity(&mut params, AGENT_CERT_DAYS);
        let issuer = Issuer::from_ca_cert_der(&self.ca_cert_der, &self.ca_key)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The agent id (CN) of a client certificate we issued, if it has one.
pub fn agent_id_of(cert_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// Hex SHA-256 of a DER blob (certificate fingerprints).
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_pki() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Pki::load_or_create(dir.path(), &[], None).expect("create");
        let b = Pki::load_or_create(dir.path(), &[], None).expect("reload");
        assert_eq!(a.ca_pin(), b.ca_pin());
        assert_eq!(a.signing_public_key(), b.signing_public_key());
        assert_eq!(
            a.server_chain()[0],
            b.server_chain()[0],
            "unchanged names keep the certificate"
        );
        for key in ["ca.key", "server.key", "signing.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .expect("key exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} must be private");
        }
        // New names: new server certificate, same CA pin.
        let c =
            Pki::load_or_create(dir.path(), &["backend.example".into()], None).expect("reissue");
        assert_eq!(c.ca_pin(), a.ca_pin());
        assert_ne!(c.server_chain()[0], a.server_chain()[0]);
        assert!(cert_names(&c.server_chain()[0]).contains(&"backend.example".to_owned()));
    }

    #[test]
    fn issues_agent_certs_with_our_subject_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &[], None).expect("create");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut req = CertificateParams::new(vec!["evil.example".to_owned()]).expect("params");
        req.distinguished_name
            .push(DnType::CommonName, "someone-else");
        req.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let csr = req.serialize_request(&key).expect("csr");
        let cert = pki
            .issue_agent_cert("agent-123", csr.der())
            .expect("issued");
        assert_eq!(agent_id_of(&cert).as_deref(), Some("agent-123"));
        assert!(
            cert_names(&cert).is_empty(),
            "requested SANs must be ignored"
        );
        use x509_parser::prelude::*;
        let (_, parsed) = X509Certificate::from_der(&cert).expect("parses");
        assert!(!parsed.is_ca(), "requested CA flag must be ignored");
    }

    #[test]
    fn garbage_csr_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &[], None).expect("create");
        assert_eq!(
            pki.issue_agent_cert("a", b"garbage"),
            Err(CsrError::Malformed)
        );
    }
}
