//! The one uplink to the backend (QUIC, mutual TLS).
//!
//! One connection (QUIC, or WSS when UDP is blocked: see [`establish`] and
//! [`PathState`]), one ordered byte stream. The agent says hello; the
//! backend answers with the highest sequence it has stored, which the agent
//! acknowledges in its spool; then the agent streams spooled records in
//! order and deletes them as cumulative acks arrive. On any failure the
//! connection is dropped and re-established after an exponential backoff
//! with full jitter, so a backend restart does not cause a thundering herd.
//! Records not yet acknowledged are sent again on the next connection; the
//! backend stores them idempotently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use palisade_proto::frame;
use palisade_proto::msg::{Downlink, Uplink, decode_downlink};
use palisade_proto::{PROTOCOL_VERSION, pb};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::spool::Spool;
use crate::transport::{
    QuicLink, Target, TransportError, WssReader, WssWriter, connect_quic, connect_wss,
};

/// Records in flight (sent, not yet acknowledged) at most.
pub const WINDOW: u64 = 4096;
/// Records read from the spool per batch.
const BATCH: usize = 256;
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
    /// The package inventory the backend holds (for the collector).
    PackagesHeld(Option<[u8; 32]>),
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error(transparent)]
    Transport(#[from] TransportError),
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

/// When to try which path. Plain logic over `now`, so it is testable.
#[derive(Debug, Clone)]
pub struct PathPolicy {
    /// How long QUIC may take before WSS is raced against it.
    pub happy_eyeballs_delay: Duration,
    /// First QUIC re-probe while on WSS, doubled after each failure...
    pub probe_initial: Duration,
    /// ...up to this.
    pub probe_max: Duration,
    /// How long "UDP is broken" is remembered after WSS won a race.
    pub remember_broken: Duration,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            happy_eyeballs_delay: Duration::from_millis(300),
            probe_initial: Duration::from_secs(30),
            probe_max: Duration::from_secs(300),
            remember_broken: Duration::from_secs(300),
        }
    }
}

/// What the path selection remembers between connections.
#[derive(Debug, Clone)]
pub struct PathState {
    policy: PathPolicy,
    udp_broken_until: Option<Instant>,
    next_probe: Duration,
}

impl PathState {
    pub fn new(policy: PathPolicy) -> Self {
        let next_probe = policy.probe_initial;
        PathState {
            policy,
            udp_broken_until: None,
            next_probe,
        }
    }

    /// Whether to skip QUIC and go straight to WSS.
    pub fn udp_known_broken(&self, now: Instant) -> bool {
        self.udp_broken_until.is_some_and(|until| now < until)
    }

    /// WSS won a race (or QUIC failed): remember it for a while.
    pub fn quic_failed(&mut self, now: Instant) {
        self.udp_broken_until = Some(now + self.policy.remember_broken);
    }

    /// QUIC works: forget any breakage, reset the probe schedule.
    pub fn quic_works(&mut self) {
        self.udp_broken_until = None;
        self.next_probe = self.policy.probe_initial;
    }

    /// The wait before the next QUIC probe; each call doubles the next one, up to the cap.
    pub fn take_probe_delay(&mut self) -> Duration {
        let delay = self.next_probe;
        self.next_probe = (self.next_probe * 2).min(self.policy.probe_max);
        delay
    }
}

/// Everything the uplink needs to connect.
pub struct UplinkConfig {
    pub target: Target,
    pub policy: PathPolicy,
}

/// How long a connection must have lasted for the backoff to start over.
const STABLE: Duration = Duration::from_secs(30);
/// How long one QUIC re-probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

enum Link {
    Quic(QuicLink),
    Wss(WssReader, WssWriter),
}

/// Runs the uplink forever: QUIC first, WSS when UDP is blocked, back to QUIC
/// (make-before-break) when it works again.
pub async fn run(config: UplinkConfig, spool: Arc<Spool>, events: mpsc::Sender<UplinkEvent>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let mut paths = PathState::new(config.policy.clone());
    let mut endpoint: Option<quinn::Endpoint> = None;
    let mut ready: Option<Link> = None;
    loop {
        let started = Instant::now();
        let link = match ready.take() {
            Some(link) => Ok(link),
            None => establish(&config, &mut paths, &mut endpoint, &spool).await,
        };
        let result = match link {
            Ok(Link::Quic(link)) => run_quic(link, &spool, &events).await,
            Ok(Link::Wss(reader, writer)) => {
                let session = run_stream(writer, reader, &spool, &events, "wss");
                let probe = probe_quic(&config, &mut paths, &mut endpoint, &spool);
                tokio::select! {
                    r = session => r,
                    link = probe => {
                        // The new path is up before the old one is dropped;
                        // unacknowledged records are resent on it and the
                        // backend stores them once.
                        tracing::info!("QUIC works again: moving the uplink back from WSS");
                        ready = Some(Link::Quic(link));
                        let _ = events.send(UplinkEvent::Disconnected).await;
                        continue;
                    }
                }
            }
            Err(e) => Err(e),
        };
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

/// Happy eyeballs: QUIC, and WSS too if QUIC is not up after a short delay;
/// the first to connect wins (QUIC if both do).
async fn establish(
    config: &UplinkConfig,
    paths: &mut PathState,
    endpoint: &mut Option<quinn::Endpoint>,
    spool: &Spool,
) -> Result<Link, UplinkError> {
    let target = &config.target;
    let hello = hello_frame(spool);
    if paths.udp_known_broken(Instant::now()) {
        let (r, w) = connect_wss(target).await?;
        return Ok(Link::Wss(r, w));
    }
    let quic = connect_quic(target, endpoint, &hello);
    tokio::pin!(quic);
    let quic_error = tokio::select! {
        r = &mut quic => match r {
            Ok(link) => { paths.quic_works(); return Ok(Link::Quic(link)); }
            Err(e) => Some(e),
        },
        () = tokio::time::sleep(config.policy.happy_eyeballs_delay) => None,
    };
    let wss = connect_wss(target);
    tokio::pin!(wss);
    if let Some(e) = quic_error {
        tracing::info!(error = %e, "QUIC failed; trying WSS");
        paths.quic_failed(Instant::now());
        let (r, w) = wss.await?;
        return Ok(Link::Wss(r, w));
    }
    tokio::select! {
        biased;
        r = &mut quic => match r {
            Ok(link) => { paths.quic_works(); Ok(Link::Quic(link)) }
            Err(e) => {
                tracing::info!(error = %e, "QUIC failed; waiting for WSS");
                paths.quic_failed(Instant::now());
                let (r, w) = wss.await?;
                Ok(Link::Wss(r, w))
            }
        },
        r = &mut wss => match r {
            Ok((r, w)) => {
                tracing::info!("WSS connected before QUIC: UDP looks blocked");
                paths.quic_failed(Instant::now());
                Ok(Link::Wss(r, w))
            }
            Err(e) => {
                tracing::info!(error = %e, "WSS failed; waiting for QUIC");
                let link = quic.await?;
                paths.quic_works();
                Ok(Link::Quic(link))
            }
        },
    }
}

/// Probes QUIC on the schedule until it works; returns the new connection.
async fn probe_quic(
    config: &UplinkConfig,
    paths: &mut PathState,
    endpoint: &mut Option<quinn::Endpoint>,
    spool: &Spool,
) -> QuicLink {
    loop {
        let delay = paths.take_probe_delay();
        tokio::time::sleep(delay).await;
        match tokio::time::timeout(
            PROBE_TIMEOUT,
            connect_quic(&config.target, endpoint, &hello_frame(spool)),
        )
        .await
        {
            Ok(Ok(link)) => {
                paths.quic_works();
                return link;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "QUIC probe failed"),
            Err(_) => tracing::debug!("QUIC probe timed out"),
        }
    }
}

async fn run_quic(
    link: QuicLink,
    spool: &Spool,
    events: &mpsc::Sender<UplinkEvent>,
) -> Result<(), UplinkError> {
    let QuicLink {
        conn,
        send,
        recv,
        hello_sent,
    } = link;
    if hello_sent {
        tracing::debug!("hello sent as 0-RTT data and accepted");
    }
    let result = run_stream_after(send, recv, spool, events, "quic", hello_sent).await;
    conn.close(0u8.into(), b"agent reconnecting");
    result
}

/// How long the agent tolerates silence from the backend. It sends a
/// heartbeat every [`KEEP_ALIVE`] when idle, which the backend answers at
/// once; two missed answers mean the path is dead. QUIC's idle timer alone
/// would not notice when only our direction is blocked (a common UDP
/// filter): the backend's retransmissions keep reaching us and keep it alive.
const SILENCE: Duration = Duration::from_secs(12);

/// The agent's hello, as a complete frame (length prefix included).
pub fn hello_frame(spool: &Spool) -> bytes::Bytes {
    let hello: pb::UplinkFrame = Uplink::Hello(palisade_proto::msg::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        spool_dropped_total: spool.dropped_total(),
    })
    .into();
    frame::encode_frame(&hello)
}

/// The uplink protocol over one ordered stream (QUIC or WSS).
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
    run_stream_after(writer, reader, spool, events, transport, false).await
}

/// [`run_stream`], when the hello may already have been sent (0-RTT).
pub async fn run_stream_after<R, W>(
    writer: W,
    reader: R,
    spool: &Spool,
    events: &mpsc::Sender<UplinkEvent>,
    transport: &'static str,
    hello_sent: bool,
) -> Result<(), UplinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = FramedWrite::new(writer, frame::codec(frame::MAX_UPLINK_FRAME));
    let mut frames = FramedRead::new(reader, frame::codec(frame::MAX_UPLINK_FRAME));
    if !hello_sent {
        // The codec adds the length prefix; send the body only.
        let hello = hello_frame(spool);
        out.send(hello.slice(4..)).await?;
    }
    // Records follow the hello at once (pipelined), which saves a round trip
    // on every connect: the backend reads the hello first and answers with
    // HelloAck, then the records. Whatever it had stored already is simply
    // stored once more (idempotent) and acknowledged.
    let mut link = LinkState {
        transport,
        hello_acked: false,
        acked_up_to: 0,
    };
    let hello_deadline = Instant::now() + HELLO_TIMEOUT;
    let mut sent_up_to: u64 = 0;
    let mut heard = Instant::now();
    let mut heartbeat = tokio::time::interval(KEEP_ALIVE);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    loop {
        // Register interest in new records before looking, so none is missed.
        let appended = spool.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let mut sent_any = false;
        if !link.hello_acked && Instant::now() > hello_deadline {
            return Err(UplinkError::Timeout("waiting for the backend's hello"));
        }
        if sent_up_to.saturating_sub(link.acked_up_to) < WINDOW {
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
                link.on_frame(frame, spool, events).await?;
                heard = Instant::now();
            }
            if heard.elapsed() > SILENCE {
                return Err(UplinkError::Timeout("waiting for the backend (path dead?)"));
            }
            continue;
        }
        tokio::select! {
            frame = frames.next() => {
                link.on_frame(frame, spool, events).await?;
                heard = Instant::now();
            }
            () = &mut appended => {},
            _ = heartbeat.tick() => {
                if heard.elapsed() > SILENCE {
                    return Err(UplinkError::Timeout("waiting for the backend (path dead?)"));
                }
                let ping: pb::UplinkFrame = Uplink::Ping.into();
                out.send(frame::encode_body(&ping)).await?;
            }
        }
    }
}

/// What one stream has learned from the backend so far.
struct LinkState {
    transport: &'static str,
    hello_acked: bool,
    acked_up_to: u64,
}

impl LinkState {
    async fn on_frame(
        &mut self,
        frame: Option<Result<bytes::BytesMut, std::io::Error>>,
        spool: &Spool,
        events: &mpsc::Sender<UplinkEvent>,
    ) -> Result<(), UplinkError> {
        let frame = frame.ok_or(UplinkError::Closed)??;
        match decode_downlink(&frame)? {
            Downlink::HelloAck {
                stored_up_to_seq, ..
            } if !self.hello_acked => {
                self.hello_acked = true;
                spool.ack(stored_up_to_seq)?;
                self.acked_up_to = self.acked_up_to.max(stored_up_to_seq);
                tracing::info!(
                    transport = self.transport,
                    stored = stored_up_to_seq,
                    pending = spool.len().unwrap_or(0),
                    "uplink connected"
                );
                let _ = events
                    .send(UplinkEvent::Connected {
                        transport: self.transport,
                    })
                    .await;
            }
            Downlink::HelloAck { .. } => return Err(UplinkError::Unexpected("a second hello")),
            Downlink::Refused(reason) => return Err(UplinkError::Refused(reason)),
            _ if !self.hello_acked => {
                return Err(UplinkError::Unexpected("a message before the hello"));
            }
            Downlink::Ack { up_to_seq } => {
                if up_to_seq > self.acked_up_to {
                    spool.ack(up_to_seq)?;
                    self.acked_up_to = up_to_seq;
                }
            }
            Downlink::Command(command) => {
                // Passed on untouched: control verifies it; the platform cannot
                // forge or alter one, and does not try to judge it.
                let _ = events.send(UplinkEvent::Command(command)).await;
            }
            Downlink::PackagesHeld(held) => {
                let _ = events.send(UplinkEvent::PackagesHeld(held)).await;
            }
        }
        Ok(())
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
