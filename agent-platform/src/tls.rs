//! TLS client configurations of the agent (TLS 1.3 only, ring provider).
//!
//! - Enrollment: the agent has no CA yet, only the pin from the token. The
//!   [`PinnedCaVerifier`] looks in the server's chain for a certificate whose
//!   SubjectPublicKeyInfo hashes to the pin, and then verifies the chain and
//!   the server name with that certificate as the only trust anchor. A
//!   backend with another CA is refused before any byte of the request is
//!   sent: the agent never trusts on first use.
//! - Uplink: the anchor saved at enrollment is the only root, and the agent
//!   authenticates with its own certificate.

use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// The provider used everywhere in the agent.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a server chain against the CA pinned by an enrollment token.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// The anchor that matched, kept so enrollment can store it.
    matched: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCaVerifier {
    pub fn new(pin: [u8; 32]) -> Self {
        PinnedCaVerifier {
            pin,
            provider: provider(),
            matched: Mutex::new(None),
        }
    }

    /// The CA certificate that matched the pin in the last successful handshake.
    pub fn matched_anchor(&self) -> Option<CertificateDer<'static>> {
        self.matched.lock().ok().and_then(|m| m.clone())
    }
}

/// The message an operator sees when the backend is not the one the token names.
pub const PIN_MISMATCH: &str =
    "the backend's certificate chain does not match the CA pin in the enrollment token";

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchor = intermediates
            .iter()
            .find(|c| palisade_proto::token::spki_pin(c).is_ok_and(|p| p == self.pin))
            .ok_or_else(|| rustls::Error::General(PIN_MISMATCH.into()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|_| rustls::Error::General(PIN_MISMATCH.into()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if let Ok(mut m) = self.matched.lock() {
            *m = Some(anchor.clone().into_owned());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration allows TLS 1.3 only; this is never reached.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("stored CA certificate is invalid: {0}")]
    Anchor(String),
}

/// Client config for enrollment: pinned CA, no client certificate, HTTP/1.1.
pub fn enrollment_config(
    verifier: Arc<PinnedCaVerifier>,
) -> Result<rustls::ClientConfig, TlsConfigError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Client config for the uplink: the stored anchor as the only root, our
/// certificate and key for mutual TLS, and `alpn`.
pub fn uplink_config(
    server_ca_der: &[u8],
    cert_der: &[u8],
    key_pkcs8_der: &[u8],
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_ca_der.to_vec()))
        .map_err(|e| TlsConfigError::Anchor(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![CertificateDer::from(cert_der.to_vec())], key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Splits `host:port` (or `[v6]:port`) into a server name and port.
pub fn split_server(server: &str) -> Option<(String, u16)> {
    let (host, port) = server.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            split_server("example.org:8443"),
            Some(("example.org".into(), 8443))
        );
        assert_eq!(split_server("[::1]:443"), Some(("::1".into(), 443)));
        assert_eq!(split_server("127.0.0.1:1"), Some(("127.0.0.1".into(), 1)));
        assert_eq!(split_server("example.org"), None);
        assert_eq!(split_server(":443"), None);
        assert_eq!(split_server("h:0"), None);
        assert_eq!(split_server("h:99999"), None);
    }
}
