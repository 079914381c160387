//! The QUIC edge of the uplink: the endpoint's configuration (TLS 1.3, our
//! ALPN, client certificates required), accepting connections, 0-RTT.

use std::sync::Arc;

use palisade_proto::UPLINK_ALPN;
use rustls_pki_types::CertificateDer;

use super::{IDLE_TIMEOUT, Transport, UplinkError, authenticate, serve_agent};
use crate::pki::Pki;
use crate::state::AppState;

/// The QUIC server configuration: TLS 1.3, our ALPN, client certificates
/// required and verified against the agent CA.
pub fn server_config(pki: &Pki) -> anyhow::Result<quinn::ServerConfig> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki.agent_ca_der().clone())
        .context("agent CA certificate")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("client certificate verifier")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain().to_vec(), pki.server_key())
        .context("server certificate")?;
    tls.alpn_protocols = vec![UPLINK_ALPN.to_vec()];
    // 0-RTT resumption (QUIC requires exactly this value to enable it). The
    // backend acts on nothing a client sends before the handshake completes:
    // see `quic_connection`.
    tls.max_early_data_size = u32::MAX;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).context("QUIC TLS config")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // No server keep-alive: only the agent pings. If the server pinged too,
    // an agent whose outgoing UDP is dropped would keep receiving packets and
    // never notice its path is dead; this way both sides time out after
    // IDLE_TIMEOUT of one-way silence.
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().context("idle timeout")?));
    transport.max_concurrent_uni_streams(0u8.into());
    transport.max_concurrent_bidi_streams(4u8.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts QUIC connections until the endpoint is closed.
pub async fn run(state: AppState, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            if let Err(e) = quic_connection(&state, incoming).await {
                match e {
                    UplinkError::Connection(
                        quinn::ConnectionError::TimedOut
                        | quinn::ConnectionError::ApplicationClosed(_)
                        | quinn::ConnectionError::LocallyClosed,
                    ) => tracing::info!(%remote, error = %e, "agent connection ended"),
                    e => tracing::warn!(%remote, error = %e, "agent connection failed"),
                }
            }
        });
    }
}

async fn quic_connection(state: &AppState, incoming: quinn::Incoming) -> Result<(), UplinkError> {
    let remote = incoming.remote_address();
    // Accept 0-RTT, but wait for the handshake to complete before touching
    // anything the client sent: early data can be replayed by an attacker,
    // and only the idempotent hello is allowed in it (the agent sends
    // nothing else before it has our reply).
    let (conn, send, recv) = match incoming.accept()?.into_0rtt() {
        Ok((conn, handshake_done)) => {
            // Take the stream as soon as it exists, only to learn whether it
            // was opened in 0-RTT (quinn knows that only while handshaking);
            // nothing is read from it before the handshake completes.
            let (send, recv) = conn.accept_bi().await?;
            // For a server this resolves when the handshake completes.
            handshake_done.await;
            if let Some(reason) = conn.close_reason() {
                return Err(UplinkError::Connection(reason));
            }
            (conn, send, recv)
        }
        Err(connecting) => {
            let conn = connecting.await?;
            let (send, recv) = conn.accept_bi().await?;
            (conn, send, recv)
        }
    };
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(UplinkError::NoIdentity)?;
    let agent_id = match authenticate(state, &chain).await {
        Ok(id) => id,
        Err(e) => {
            conn.close(1u8.into(), b"not enrolled");
            return Err(e);
        }
    };
    // A stream opened in 0-RTT means the server accepted the client's early data.
    if recv.is_0rtt() {
        tracing::info!(agent_id, %remote, "0-RTT resumption accepted");
        state
            .registry
            .zero_rtt_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let zero_rtt = recv.is_0rtt();
    let result = serve_agent(
        state,
        &agent_id,
        Transport::Quic,
        remote,
        zero_rtt,
        recv,
        send,
    )
    .await;
    match &result {
        Ok(()) => conn.close(0u8.into(), b"bye"),
        Err(e) => {
            tracing::warn!(agent_id, error = %e, "closing agent connection");
            conn.close(2u8.into(), b"protocol error");
        }
    }
    result
}
