//! The agent uplink, backend side.
//!
//! - this file: [`serve_agent`], the protocol over one ordered byte stream,
//!   whatever carries it: read the agent's hello, answer with what is
//!   stored, then store records in batches and acknowledge each batch
//!   cumulatively *after* it is durably stored; [`authenticate`];
//! - [`quic`]: the QUIC endpoint (the primary transport);
//! - [`wss`]: the same protocol over WebSocket on the HTTPS port;
//! - [`registry`]: which agents are connected to this backend right now.
//!
//! Generated protobuf types stop here: records become
//! [`crate::hosts::ingest::AgentRecord`]s before anything is stored.
//!
//! Agents are identified only by their client certificate: its CN is the
//! agent id, and its SHA-256 must be the one recorded at enrollment, so a
//! certificate from another CA key or an older enrollment is refused.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use palisade_proto::frame::{self, encode_body};
use palisade_proto::msg::{Downlink, Uplink, decode_uplink};
use palisade_proto::{PROTOCOL_VERSION, pb};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::hosts::ingest::AgentRecord;
use crate::state::AppState;

pub mod quic;
pub mod registry;
pub mod wss;

pub use registry::Transport;

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
    #[error("a newer connection of agent {0} took this one's place")]
    Replaced(String),
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
    #[error("database error: {0}")]
    Db(#[from] crate::db::DbError),
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
    let lookup = agent_id.clone();
    let host = state
        .db
        .read("authenticate agent", move |tx| {
            crate::hosts::store::get(tx, &lookup)
        })
        .await?;
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
    let id = agent_id.to_owned();
    let dropped = hello.spool_dropped_total;
    // The hello's own bookkeeping in one transaction: the connection is
    // seen, the spool's drop counter is recorded, the stored sequence read.
    let connected = NewAuditEvent::new(
        now,
        Actor::Agent(agent_id.to_owned()),
        Action::AgentConnect,
        Outcome::Success,
    )
    .target(agent_id)
    .from_client(Some(remote.ip().to_string()), None)
    .details(serde_json::json!({
        "transport": transport.as_str(),
        "zero_rtt": zero_rtt,
        "agent_version": hello.agent_version,
    }));
    let stored = state
        .db
        .write("agent hello", move |tx| {
            crate::hosts::store::seen(tx, &id, now, transport)?;
            crate::hosts::store::set_spool_dropped(tx, &id, dropped)?;
            crate::audit::store::append(tx, &connected)?;
            let stored = crate::hosts::store::get(tx, &id)?.map_or(0, |h| h.stored_up_to_seq);
            Ok((stored, crate::packages::store::digest_held(tx, &id)?))
        })
        .await?;
    let (stored, packages_held) = stored;
    let ack: pb::DownlinkFrame = Downlink::HelloAck {
        protocol_version: PROTOCOL_VERSION,
        stored_up_to_seq: stored,
        server_time_unix_ms: now,
    }
    .into();
    out.send(encode_body(&ack)).await?;
    // The collector answers with nothing, a change or the whole inventory.
    let held: pb::DownlinkFrame = Downlink::PackagesHeld(held_digest(packages_held)).into();
    out.send(encode_body(&held)).await?;
    let (conn_id, mut commands, close, replaced) =
        state.registry.take_over(agent_id, transport, remote, now);
    if let Some(old) = replaced.filter(|r| r.duplicate) {
        report_duplicate(state, agent_id, transport, remote, &old, now).await;
    }
    if zero_rtt {
        state.registry.set_zero_rtt(agent_id, conn_id);
    }
    tracing::info!(agent_id, transport = transport.as_str(), %remote, agent_version = %hello.agent_version, stored, "agent connected");
    crate::commands::deliver_pending(state, agent_id, now).await;

    let result = record_loop(
        state,
        agent_id,
        conn_id,
        transport,
        &mut frames,
        &mut out,
        &mut commands,
        &close,
    )
    .await;
    state.registry.disconnected(agent_id, conn_id);
    tracing::info!(
        agent_id,
        transport = transport.as_str(),
        "agent disconnected"
    );
    let event = NewAuditEvent::new(
        crate::now_millis(),
        Actor::Agent(agent_id.to_owned()),
        Action::AgentDisconnect,
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
    )
    .target(agent_id)
    .from_client(Some(remote.ip().to_string()), None)
    .details(serde_json::json!({
        "transport": transport.as_str(),
        "error": result.as_ref().err().map(ToString::to_string),
    }));
    if let Err(e) = state
        .db
        .write("audit agent disconnect", move |tx| {
            crate::audit::store::append(tx, &event).map(|_| ())
        })
        .await
    {
        tracing::warn!(agent_id, error = %e, "could not audit an agent's disconnection");
    }
    result
}

/// A stored digest as the wire carries it (one of another length, which
/// only corruption makes, counts as none: the agent sends the whole).
fn held_digest(stored: Option<Vec<u8>>) -> Option<[u8; 32]> {
    stored.and_then(|d| d.as_slice().try_into().ok())
}

/// Reports that `agent_id`'s identity is in use from two places at once
/// (see [`registry`]): a security event, at most once per
/// [`registry::REPORT_EVERY`] per host.
async fn report_duplicate(
    state: &AppState,
    agent_id: &str,
    transport: Transport,
    remote: SocketAddr,
    old: &registry::Replaced,
    now: crate::db::Millis,
) {
    tracing::warn!(agent_id, %remote, old_remote = %old.remote, "agent identity in use from two places at once");
    if !state.registry.report_duplicate(agent_id, now) {
        return;
    }
    let event = NewAuditEvent::new(
        now,
        Actor::Agent(agent_id.to_owned()),
        Action::AgentIdentityInUseTwice,
        Outcome::Denied,
    )
    .target(agent_id)
    .from_client(Some(remote.ip().to_string()), None)
    .details(serde_json::json!({
        "reason": "a connection with this agent's identity was still live when another one opened: the identity (its key and certificate) may have been copied; the older connection was closed",
        "new_remote": remote.to_string(),
        "new_transport": transport.as_str(),
        "old_remote": old.remote.to_string(),
        "old_transport": old.transport.as_str(),
        "old_connected_at": old.connected_at,
        "old_last_frame_at": old.last_frame_at,
    }));
    if let Err(e) = state
        .db
        .write("audit duplicate agent identity", move |tx| {
            crate::audit::store::append(tx, &event).map(|_| ())
        })
        .await
    {
        tracing::warn!(agent_id, error = %e, "could not audit a duplicate agent identity");
    }
}

#[allow(clippy::too_many_arguments)]
async fn record_loop<R, W>(
    state: &AppState,
    agent_id: &str,
    conn_id: u64,
    transport: Transport,
    frames: &mut FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    out: &mut FramedWrite<W, tokio_util::codec::LengthDelimitedCodec>,
    commands: &mut tokio::sync::mpsc::Receiver<pb::SignedCommand>,
    close: &tokio::sync::Notify,
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
            () = close.notified() => {
                let replaced = state
                    .registry
                    .get(agent_id)
                    .is_some_and(|c| c.conn_id != conn_id);
                return Err(if replaced {
                    UplinkError::Replaced(agent_id.to_owned())
                } else {
                    UplinkError::Revoked(agent_id.to_owned())
                });
            }
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
        state
            .registry
            .frame_received(agent_id, conn_id, crate::now_millis());
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
                Uplink::Record(r) => records.push(AgentRecord::from(&r)),
                // Answered by the ack below (even with nothing new stored).
                Uplink::Ping => {}
                Uplink::Hello(_) => return Err(UplinkError::NoHello("a second hello")),
            }
        }
        let now = crate::now_millis();
        let id = agent_id.to_owned();
        let (up_to, wants_whole) = state
            .db
            .write("store records", move |tx| {
                let up_to = crate::hosts::ingest::store_records(tx, &id, now, &records)?;
                crate::hosts::store::seen(tx, &id, now, transport)?;
                // A package report that left nothing to build on (a refused
                // change): ask for the whole inventory now, not at the next
                // connection.
                let packages = records
                    .iter()
                    .any(|r| matches!(r.data, crate::hosts::ingest::RecordData::Packages(..)));
                let wants_whole =
                    packages && crate::packages::store::digest_held(tx, &id)?.is_none();
                Ok((up_to, wants_whole))
            })
            .await?;
        let ack: pb::DownlinkFrame = Downlink::Ack { up_to_seq: up_to }.into();
        out.send(encode_body(&ack)).await?;
        // A dry run that came back for a run needing no approval: its
        // upgrade is signed and issued now that the plan is committed.
        crate::patching::start_approved(state, agent_id, now).await;
        if wants_whole {
            let held: pb::DownlinkFrame = Downlink::PackagesHeld(None).into();
            out.send(encode_body(&held)).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use palisade_packages::inventory::{Installed, Inventory, Manager};
    use palisade_proto::msg::{Hello, Record, RecordBody, decode_downlink};

    use super::*;
    use crate::web::testing::{T0, enroll, state};

    fn inventory(version: &str) -> Inventory {
        let mut i = Inventory::empty(Manager::Dpkg);
        i.insert_installed(Installed {
            name: "openssl".into(),
            arch: "amd64".into(),
            version: version.into(),
            source: "openssl".into(),
            held: false,
        });
        i
    }

    fn packages(seq: u64, change: &palisade_proto::packages::Change) -> Uplink {
        Uplink::Record(Record {
            seq,
            created_at_unix_ms: T0,
            body: RecordBody::Packages(pb::PackageReport {
                collected_at_unix_ms: T0,
                change: Some(palisade_proto::packages::change_to_wire(change)),
                ..Default::default()
            }),
        })
    }

    /// One connection of an agent: sends `frames` after its hello and
    /// returns everything the backend answered until the agent hung up.
    async fn connect(state: &AppState, frames: Vec<Uplink>) -> Vec<Downlink> {
        let (agent, backend) = tokio::io::duplex(1 << 20);
        let (backend_read, backend_write) = tokio::io::split(backend);
        let (agent_read, agent_write) = tokio::io::split(agent);
        let server = serve_agent(
            state,
            "agent-1",
            Transport::Quic,
            "192.0.2.1:4433".parse().expect("address"),
            false,
            backend_read,
            backend_write,
        );
        let client = async move {
            let mut out = FramedWrite::new(agent_write, frame::codec(frame::MAX_UPLINK_FRAME));
            let mut input = FramedRead::new(agent_read, frame::codec(frame::MAX_UPLINK_FRAME));
            let hello = Uplink::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "test".into(),
                spool_dropped_total: 0,
            });
            let count = frames.len();
            let last = frames
                .iter()
                .map(|f| match f {
                    Uplink::Record(r) => r.seq,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            for f in std::iter::once(hello).chain(frames) {
                out.send(encode_body(&pb::UplinkFrame::from(f)))
                    .await
                    .expect("send");
            }
            // The hello's two answers, then one ack per record at most (and
            // a PackagesHeld after a refused change): read until the last
            // record is acknowledged.
            let mut answers = Vec::new();
            loop {
                let bytes = input.next().await.expect("an answer").expect("a frame");
                let answer = decode_downlink(&bytes).expect("decodes");
                let done = matches!(answer, Downlink::Ack { up_to_seq } if up_to_seq == last);
                answers.push(answer);
                if done || (count == 0 && answers.len() == 2) {
                    break;
                }
            }
            // Anything sent right behind the last ack.
            while let Ok(Some(Ok(bytes))) =
                tokio::time::timeout(Duration::from_millis(200), input.next()).await
            {
                answers.push(decode_downlink(&bytes).expect("decodes"));
            }
            // Shutting the write side down is the agent hanging up (a
            // split half dropped alone would not close the stream).
            tokio::io::AsyncWriteExt::shutdown(out.get_mut())
                .await
                .expect("hang up");
            answers
        };
        let (served, answers) = tokio::join!(server, client);
        served.expect("the connection ends cleanly");
        answers
    }

    #[tokio::test]
    async fn the_backend_says_which_inventory_it_holds_and_asks_again_after_a_refused_change() {
        let state = state();
        enroll(&state, "agent-1", "web-1", T0).await;
        let (a, b, c) = (
            inventory("3.0.11-1"),
            inventory("3.0.13-1"),
            inventory("3.0.14-1"),
        );

        // Nothing held yet: the hello is followed by "none".
        let answers = connect(&state, Vec::new()).await;
        assert!(
            matches!(answers[0], Downlink::HelloAck { .. }),
            "{answers:?}"
        );
        assert_eq!(answers[1], Downlink::PackagesHeld(None));

        // The whole inventory, then a change: stored, nothing asked.
        let change = palisade_proto::packages::Change::Delta(a.diff(&b));
        let whole = palisade_proto::packages::Change::Whole(a.clone());
        let answers = connect(&state, vec![packages(1, &whole), packages(2, &change)]).await;
        assert_eq!(
            answers
                .iter()
                .filter(|a| matches!(a, Downlink::PackagesHeld(_)))
                .collect::<Vec<_>>(),
            [&Downlink::PackagesHeld(None)],
            "only the hello's answer (it held nothing then): {answers:?}"
        );
        // The next connection is told the digest of b.
        let answers = connect(&state, Vec::new()).await;
        assert_eq!(answers[1], Downlink::PackagesHeld(Some(b.digest())));

        // A change made against c (a lost change): refused, and the backend
        // asks for the whole right after the ack, on the same connection.
        let lost = palisade_proto::packages::Change::Delta(c.diff(&a));
        let answers = connect(&state, vec![packages(3, &lost)]).await;
        let ack = answers
            .iter()
            .position(|a| *a == Downlink::Ack { up_to_seq: 3 })
            .expect("acked");
        assert_eq!(
            answers.get(ack + 1),
            Some(&Downlink::PackagesHeld(None)),
            "{answers:?}"
        );
        let answers = connect(&state, Vec::new()).await;
        assert_eq!(
            answers[1],
            Downlink::PackagesHeld(None),
            "still wanted at the next hello"
        );
    }
}
