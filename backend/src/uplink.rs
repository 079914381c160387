//! The agent uplink, backend side.
//!
//! [`serve_agent`] is the protocol over one ordered byte stream, whatever
//! carries it (a QUIC bidirectional stream now, a WebSocket next): read the
//! agent's hello, answer with what is stored, then store records in batches
//! and acknowledge each batch cumulatively *after* it is durably stored.
//! [`quic_server_config`] and [`run_quic`] are the QUIC edge.
//!
//! Agents are identified only by their client certificate: its CN is the
//! agent id, and its SHA-256 must be the one recorded at enrollment, so a
//! certificate from another CA key or an older enrollment is refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use palisade_proto::frame::{self, encode_body};
use palisade_proto::msg::{Downlink, Uplink, decode_uplink};
use palisade_proto::{PROTOCOL_VERSION, UPLINK_ALPN, pb};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::pki::Pki;
use crate::registry::Transport;
use crate::state::AppState;

/// Most records stored in one transaction (and acknowledged by one ack).
pub const MAX_BATCH: usize = 512;
/// How long the agent has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC idle timeout: a dead path is noticed within seconds, so no host
/// shows online on a half-open connection (agents send keep-alives every 5 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("agent certificate missing or unreadable")]
    NoIdentity,
    #[error("agent {0} is not enrolled or its certificate does not match the enrollment")]
    UnknownAgent(String),
    #[error("agent {0} has been revoked")]
    Revoked(String),
    #[error("agent spoke protocol version {0}, this backend speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("agent sent {0} before hello")]
    NoHello(&'static str),
    #[error("agent did not say hello in time")]
    HelloTimeout,
    #[error("bad frame from agent: {0}")]
    Decode(#[from] palisade_proto::DecodeError),
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    #[error("store error: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("connection error: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

/// Checks a presented client certificate chain against the enrollment records
/// and returns the agent id.
pub async fn authenticate(
    state: &AppState,
    chain: &[CertificateDer<'_>],
) -> Result<String, UplinkError> {
    let leaf = chain.first().ok_or(UplinkError::NoIdentity)?;
    let agent_id = crate::pki::agent_id_of(leaf).ok_or(UplinkError::NoIdentity)?;
    let host = state.store.host(&agent_id).await?;
    let Some(host) = host else {
        return Err(UplinkError::UnknownAgent(agent_id));
    };
    if host.cert_sha256 != crate::pki::sha256_hex(leaf) {
        return Err(UplinkError::UnknownAgent(agent_id));
    }
    if host.revoked_at.is_some() {
        return Err(UplinkError::Revoked(agent_id));
    }
    Ok(agent_id)
}

/// Runs the uplink protocol for one authenticated agent over one stream.
/// Returns when the agent closes the stream or on the first error.
pub async fn serve_agent<R, W>(
    state: &AppState,
    agent_id: &str,
    transport: Transport,
    remote: SocketAddr,
    zero_rtt: bool,
    reader: R,
    writer: W,
) -> Result<(), UplinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FramedRead::new(reader, frame::codec(frame::MAX_UPLINK_FRAME));
    let mut out = FramedWrite::new(writer, frame::codec(frame::MAX_UPLINK_FRAME));

    let first = tokio::time::timeout(HELLO_TIMEOUT, frames.next())
        .await
        .map_err(|_| UplinkError::HelloTimeout)?;
    let Some(first) = first else { return Ok(()) };
    let hello = match decode_uplink(&first?)? {
        Uplink::Hello(h) => h,
        Uplink::Record(_) | Uplink::Ping => return Err(UplinkError::NoHello("a record")),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let refusal: pb::DownlinkFrame = Downlink::Refused(format!(
            "protocol version {} is not supported (this backend speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        ))
        .into();
        out.send(encode_body(&refusal)).await?;
        return Err(UplinkError::Version(hello.protocol_version));
    }

    let now = crate::now_millis();
    let stored = state
        .store
        .host(agent_id)
        .await?
        .map(|h| h.stored_up_to_seq)
        .unwrap_or(0);
    let ack: pb::DownlinkFrame = Downlink::HelloAck {
        protocol_version: PROTOCOL_VERSION,
        stored_up_to_seq: stored,
        server_time_unix_ms: now,
    }
    .into();
    out.send(encode_body(&ack)).await?;
    state
        .store
        .host_seen(agent_id, now, transport.as_str())
        .await?;
    state
        .store
        .set_spool_dropped(agent_id, hello.spool_dropped_total)
        .await?;
    let (conn_id, mut commands) = state
        .registry
        .connected_with_commands(agent_id, transport, remote, now);
    if zero_rtt {
        state.registry.set_zero_rtt(agent_id, conn_id);
    }
    tracing::info!(agent_id, transport = transport.as_str(), %remote, agent_version = %hello.agent_version, stored, "agent connected");
    crate::commands::deliver_pending(state, agent_id, now).await;

    let result = record_loop(
        state,
        agent_id,
        transport,
        &mut frames,
        &mut out,
        &mut commands,
    )
    .await;
    state.registry.disconnected(agent_id, conn_id);
    tracing::info!(
        agent_id,
        transport = transport.as_str(),
        "agent disconnected"
    );
    result
}

async fn record_loop<R, W>(
    state: &AppState,
    agent_id: &str,
    transport: Transport,
    frames: &mut FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    out: &mut FramedWrite<W, tokio_util::codec::LengthDelimitedCodec>,
    commands: &mut tokio::sync::mpsc::Receiver<pb::SignedCommand>,
) -> Result<(), UplinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for one frame (delivering commands meanwhile), then take
        // whatever else is already buffered, so a busy agent gets one
        // transaction and one ack per batch.
        let first = tokio::select! {
            frame = frames.next() => frame,
            Some(command) = commands.recv() => {
                let frame: pb::DownlinkFrame = Downlink::Command(command).into();
                out.send(encode_body(&frame)).await?;
                continue;
            }
        };
        let Some(first) = first else {
            return Ok(());
        };
        batch.push(first?);
        while batch.len() < MAX_BATCH {
            match frames.next().now_or_never() {
                Some(Some(f)) => batch.push(f?),
                Some(None) | None => break,
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        for bytes in batch.drain(..) {
            match decode_uplink(&bytes)? {
                Uplink::Record(r) => records.push(r),
                // Answered by the ack below (even with nothing new stored).
                Uplink::Ping => {}
                Uplink::Hello(_) => return Err(UplinkError::NoHello("a second hello")),
            }
        }
        let now = crate::now_millis();
        let up_to = state.store.store_records(agent_id, now, &records).await?;
        state
            .store
            .host_seen(agent_id, now, transport.as_str())
            .await?;
        let ack: pb::DownlinkFrame = Downlink::Ack { up_to_seq: up_to }.into();
        out.send(encode_body(&ack)).await?;
    }
}

/// The QUIC server configuration: TLS 1.3, our ALPN, client certificates
/// required and verified against the agent CA.
pub fn quic_server_config(pki: &Pki) -> anyhow::Result<quinn::ServerConfig> {
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
pub async fn run_quic(state: AppState, endpoint: quinn::Endpoint) {
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
