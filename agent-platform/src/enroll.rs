//! `palisade-agent enroll`: key pair generated here, CSR and token sent to
//! the backend over TLS 1.3 verified against the token's CA pin, certificate
//! and agent id received, identity sealed into the state directory, and the
//! agent id with the command-signing key pinned for control in
//! `<state_dir>/control/pin` (root's, when enrolling as root).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use palisade_proto::pb::{self, AgentIdentity, EnrollErrorCode};
use palisade_proto::token::EnrollmentToken;
use rustls_pki_types::ServerName;

use crate::identity::{IdentityError, IdentityStore};
use crate::tls::{PinnedCaVerifier, split_server};

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("server must be HOST:PORT, got {0:?}")]
    Server(String),
    #[error("this agent is already enrolled as {0} (use --force to enroll again)")]
    AlreadyEnrolled(String),
    #[error("cannot reach {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {server} failed: {source}")]
    Tls {
        server: String,
        source: std::io::Error,
    },
    #[error("enrollment request failed: {0}")]
    Http(String),
    #[error("the backend refused the enrollment ({code}): {message}")]
    Refused { code: &'static str, message: String },
    #[error("the backend answered with something that is not an enrollment response: {0}")]
    BadResponse(String),
    #[error("enrollment timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot create the key pair or request: {0}")]
    Key(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot pin the command-signing key for control: {0}")]
    ControlPin(#[from] palisade_agent_sys::control_pin::PinError),
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::TlsConfigError),
}

fn code_name(code: i32) -> &'static str {
    match EnrollErrorCode::try_from(code) {
        Ok(EnrollErrorCode::UnknownToken) => "unknown token",
        Ok(EnrollErrorCode::RevokedToken) => "revoked token",
        Ok(EnrollErrorCode::ExpiredToken) => "expired token",
        Ok(EnrollErrorCode::AddressNotAllowed) => "address not allowed",
        Ok(EnrollErrorCode::RateLimited) => "rate limited",
        Ok(EnrollErrorCode::MalformedRequest) => "malformed request",
        Ok(EnrollErrorCode::Internal) => "internal error",
        _ => "unspecified",
    }
}

/// Enrolls with `server` using `token`, then saves the identity in `store`.
pub async fn enroll(
    server: &str,
    token: &EnrollmentToken,
    hostname: &str,
    store: &IdentityStore,
    force: bool,
) -> Result<AgentIdentity, EnrollError> {
    if let Some(existing) = store.load()?
        && !force
    {
        return Err(EnrollError::AlreadyEnrolled(existing.agent_id));
    }
    let (host, port) =
        split_server(server).ok_or_else(|| EnrollError::Server(server.to_owned()))?;
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| EnrollError::Server(server.to_owned()))?;

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    let request = pb::EnrollRequest {
        token: token.credential(),
        csr_der: csr.der().to_vec(),
        hostname: hostname.to_owned(),
    };

    let verifier = Arc::new(PinnedCaVerifier::new(token.ca_pin));
    let tls = crate::tls::enrollment_config(verifier.clone())?;
    let (status, body) = tokio::time::timeout(
        TIMEOUT,
        post(server, &host, port, server_name, tls, request),
    )
    .await
    .map_err(|_| EnrollError::Timeout(TIMEOUT))??;

    if status != 200 {
        let err = palisade_proto::msg::decode_enroll_error(&body)
            .map_err(|_| EnrollError::BadResponse(format!("HTTP {status}")))?;
        return Err(EnrollError::Refused {
            code: code_name(err.code),
            message: err.message,
        });
    }
    let resp = palisade_proto::msg::decode_enroll_response(&body)
        .map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    check_certificate(&resp, &key)?;
    let anchor = verifier
        .matched_anchor()
        .ok_or_else(|| EnrollError::BadResponse("no pinned anchor after the handshake".into()))?;
    // Control takes the key and the agent id from this pin only, never from
    // the platform (see `palisade_agent_sys::control_pin`); written first, so
    // an enrollment that fails here leaves no identity behind.
    let command_signing_key: [u8; 32] = resp
        .command_signing_key
        .as_slice()
        .try_into()
        .map_err(|_| EnrollError::BadResponse("the command-signing key is not 32 bytes".into()))?;
    palisade_agent_sys::control_pin::write(
        store.state_dir(),
        &palisade_proto::msg::ControlPin {
            agent_id: resp.agent_id.clone(),
            command_signing_key,
        },
    )?;
    let identity = AgentIdentity {
        server: server.to_owned(),
        agent_id: resp.agent_id,
        certificate_der: resp.certificate_der,
        server_ca_der: anchor.to_vec(),
        private_key_der: key.serialize_der(),
        command_signing_key: resp.command_signing_key,
        agent_ca_der: resp.agent_ca_der,
    };
    store.save(&identity)?;
    Ok(identity)
}

/// The certificate we got must be for our key and name our agent id.
fn check_certificate(resp: &pb::EnrollResponse, key: &rcgen::KeyPair) -> Result<(), EnrollError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(&resp.certificate_der)
        .map_err(|e| EnrollError::BadResponse(format!("certificate: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(EnrollError::BadResponse(
            "the certificate is not for this agent's key".into(),
        ));
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if cn != Some(resp.agent_id.as_str()) {
        return Err(EnrollError::BadResponse(
            "the certificate does not name the agent id".into(),
        ));
    }
    Ok(())
}

async fn post(
    server: &str,
    host: &str,
    port: u16,
    server_name: ServerName<'static>,
    tls: rustls::ClientConfig,
    request: pb::EnrollRequest,
) -> Result<(u16, Bytes), EnrollError> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|source| EnrollError::Connect {
            server: server.to_owned(),
            source,
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(|source| EnrollError::Tls {
            server: server.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = palisade_proto::frame::encode_body(&request);
    let req = hyper::Request::post("/api/v1/enroll")
        .header(hyper::header::HOST, server)
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .header(
            hyper::header::USER_AGENT,
            concat!("palisade-agent/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| EnrollError::Http(format!("reading the response: {e}")))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}
