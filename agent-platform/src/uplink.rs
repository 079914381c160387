//! The one uplink to the backend (QUIC, mutual TLS).
//!
//! One connection, one bidirectional stream. The agent says hello; the
//! backend answers with the highest sequence it has stored, which the agent
//! acknowledges in its spool; then the agent streams spooled records in
//! order and deletes them as cumulative acks arrive. On any failure the
//! connection is dropped and re-established after an exponential backoff
//! with full jitter, so a backend restart does not cause a thundering herd.
//! Records not yet acknowledged are sent again on the next connection; the
//! backend stores them idempotently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use palisade_proto::frame::{self, encode_body};
use palisade_proto::msg::{Downlink, Uplink, decode_downlink};
use palisade_proto::{PROTOCOL_VERSION, pb};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::spool::Spool;

/// Records in flight (sent, not yet acknowledged) at most.
pub const WINDOW: u64 = 4096;
/// Records read from the spool per batch.
const BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC keep-alive and idle timeout (see the backend's values).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the uplink tells the rest of the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum UplinkEvent {
    /// Connected and the hello exchange is done (collect fresh facts now).
    Connected {
        transport: &'static str,
    },
    Disconnected,
    /// A signed command for control.
    Command(palisade_proto::pb::SignedCommand),
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame from the backend: {0}")]
    Decode(#[from] palisade_proto::DecodeError),
    #[error("the backend refused: {0}")]
    Refused(String),
    #[error("the backend closed the stream")]
    Closed,
    #[error("unexpected message from the backend: {0}")]
    Unexpected(&'static str),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, base * 2^n))`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay, given a uniform random value in [0, 1).
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(20)));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniform random value in [0, 1) from the system RNG (0.5 if it fails).
pub fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Everything the uplink needs to connect.
pub struct UplinkConfig {
    /// `host:port` of the backend.
    pub server: String,
    pub server_name: String,
    pub port: u16,
    pub tls: rustls::ClientConfig,
}

/// How long a connection must have lasted for the backoff to start over.
const STABLE: Duration = Duration::from_secs(30);

/// Runs the uplink forever.
pub async fn run(config: UplinkConfig, spool: Arc<Spool>, events: mpsc::Sender<UplinkEvent>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let client = match quic_client_config(config.tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the QUIC client configuration; the uplink is down");
            return;
        }
    };
    let mut endpoint: Option<quinn::Endpoint> = None;
    loop {
        let started = Instant::now();
        let result = connect_once(&config, &client, &mut endpoint, &spool, &events).await;
        let _ = events.send(UplinkEvent::Disconnected).await;
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        let delay = backoff.next_delay(unit_random());
        match result {
            Ok(()) => tracing::info!(?delay, "uplink closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, ?delay, "uplink failed; reconnecting"),
        }
        tokio::time::sleep(delay).await;
    }
}

fn quic_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, String> {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .map_err(|e: quinn::VarIntBoundsExceeded| e.to_string())?,
    ));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

async fn resolve(config: &UplinkConfig) -> Result<SocketAddr, UplinkError> {
    let mut addrs = tokio::net::lookup_host((config.server_name.as_str(), config.port))
        .await
        .map_err(|_| UplinkError::Resolve(config.server.clone()))?;
    addrs
        .next()
        .ok_or_else(|| UplinkError::Resolve(config.server.clone()))
}

async fn connect_once(
    config: &UplinkConfig,
    client: &quinn::ClientConfig,
    endpoint: &mut Option<quinn::Endpoint>,
    spool: &Spool,
    events: &mpsc::Sender<UplinkEvent>,
) -> Result<(), UplinkError> {
    let addr = resolve(config).await?;
    let ep = match endpoint {
        Some(ep) if ep.local_addr().is_ok_and(|l| l.is_ipv4() == addr.is_ipv4()) => ep.clone(),
        _ => {
            let bind: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let ep = quinn::Endpoint::client(bind)?;
            *endpoint = Some(ep.clone());
            ep
        }
    };
    let connecting = ep.connect_with(client.clone(), addr, &config.server_name)?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| UplinkError::Timeout("connecting"))??;
    let (send, recv) = conn.open_bi().await?;
    let result = run_stream(send, recv, spool, events, "quic").await;
    conn.close(0u8.into(), b"agent reconnecting");
    result
}

/// The uplink protocol over one ordered stream (QUIC now, WSS next).
pub async fn run_stream<R, W>(
    writer: W,
    reader: R,
    spool: &Spool,
    events: &mpsc::Sender<UplinkEvent>,
    transport: &'static str,
) -> Result<(), UplinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = FramedWrite::new(writer, frame::codec(frame::MAX_UPLINK_FRAME));
    let mut frames = FramedRead::new(reader, frame::codec(frame::MAX_UPLINK_FRAME));
    let hello: pb::UplinkFrame = Uplink::Hello(palisade_proto::msg::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    })
    .into();
    out.send(encode_body(&hello)).await?;
    let first = tokio::time::timeout(HELLO_TIMEOUT, frames.next())
        .await
        .map_err(|_| UplinkError::Timeout("waiting for the backend's hello"))?
        .ok_or(UplinkError::Closed)??;
    let stored = match decode_downlink(&first)? {
        Downlink::HelloAck {
            stored_up_to_seq, ..
        } => stored_up_to_seq,
        Downlink::Refused(reason) => return Err(UplinkError::Refused(reason)),
        Downlink::Ack { .. } => return Err(UplinkError::Unexpected("an ack before the hello")),
        Downlink::Command(_) => return Err(UplinkError::Unexpected("a command before the hello")),
    };
    spool.ack(stored)?;
    tracing::info!(
        transport,
        stored,
        pending = spool.len().unwrap_or(0),
        "uplink connected"
    );
    let _ = events.send(UplinkEvent::Connected { transport }).await;

    let mut sent_up_to = stored;
    let mut acked_up_to = stored;
    loop {
        // Register interest in new records before looking, so none is missed.
        let appended = spool.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let mut sent_any = false;
        if sent_up_to.saturating_sub(acked_up_to) < WINDOW {
            let batch = spool.pending_after(sent_up_to, BATCH)?;
            for (seq, bytes) in &batch {
                // The spool holds encoded `pb::Record`s; a frame is an
                // `UplinkFrame` whose field 2 is that record, so wrap it
                // without decoding: tag (field 2, length-delimited) + length.
                out.feed(wrap_record(bytes)).await?;
                sent_up_to = *seq;
                sent_any = true;
            }
            if sent_any {
                SinkExt::<bytes::Bytes>::flush(&mut out).await?;
            }
        }
        if sent_any {
            // More may be waiting; still take acks that already arrived.
            while let Some(frame) = futures_util::FutureExt::now_or_never(frames.next()) {
                acked_up_to = handle_downlink(frame, spool, events, acked_up_to).await?;
            }
            continue;
        }
        tokio::select! {
            frame = frames.next() => acked_up_to = handle_downlink(frame, spool, events, acked_up_to).await?,
            () = &mut appended => {},
        }
    }
}

async fn handle_downlink(
    frame: Option<Result<bytes::BytesMut, std::io::Error>>,
    spool: &Spool,
    events: &mpsc::Sender<UplinkEvent>,
    acked_up_to: u64,
) -> Result<u64, UplinkError> {
    let frame = frame.ok_or(UplinkError::Closed)??;
    match decode_downlink(&frame)? {
        Downlink::Ack { up_to_seq } => {
            if up_to_seq > acked_up_to {
                spool.ack(up_to_seq)?;
            }
            Ok(up_to_seq.max(acked_up_to))
        }
        Downlink::Refused(reason) => Err(UplinkError::Refused(reason)),
        Downlink::HelloAck { .. } => Err(UplinkError::Unexpected("a second hello")),
        Downlink::Command(command) => {
            // Passed on untouched: control verifies it; the platform cannot
            // forge or alter one, and does not try to judge it.
            let _ = events.send(UplinkEvent::Command(command)).await;
            Ok(acked_up_to)
        }
    }
}

/// Encodes `UplinkFrame { record: <record_bytes> }` from an already encoded
/// `pb::Record`.
pub fn wrap_record(record_bytes: &[u8]) -> bytes::Bytes {
    let mut buf = bytes::BytesMut::with_capacity(record_bytes.len() + 11);
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(record_bytes.len() as u64, &mut buf);
    buf.extend_from_slice(record_bytes);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::msg::{Record, RecordBody, decode_uplink};
    use prost::Message;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let ceilings: Vec<Duration> = (0..12).map(|_| b.next_delay(0.999_999)).collect();
        assert!(ceilings[0] < Duration::from_millis(100));
        assert!(
            ceilings[3] > Duration::from_millis(700) && ceilings[3] < Duration::from_millis(800)
        );
        assert!(ceilings[11] <= Duration::from_secs(30) && ceilings[11] > Duration::from_secs(29));
        assert_eq!(
            b.next_delay(0.0),
            Duration::ZERO,
            "full jitter reaches zero"
        );
        b.reset();
        assert!(b.next_delay(0.999_999) < Duration::from_millis(100));
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..1000 {
            let r = unit_random();
            assert!((0.0..1.0).contains(&r));
        }
    }

    #[test]
    fn wrapped_record_decodes_as_an_uplink_frame() {
        let rec = Record {
            seq: 5,
            created_at_unix_ms: 9,
            body: RecordBody::Metrics(pb::Metrics::default()),
        };
        let bytes = pb::Record::from(rec.clone()).encode_to_vec();
        assert_eq!(decode_uplink(&wrap_record(&bytes)), Ok(Uplink::Record(rec)));
    }
}
