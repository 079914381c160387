//! Agents connected to this backend right now.
//!
//! A host is "online" while its agent holds a live connection to this
//! backend. Connections are known only in memory: when the backend restarts,
//! every host is offline until its agent reconnects, which is the truth.
//! (With several replicas this moves into the shared database.)
//!
//! One live connection per host: a new connection of an agent closes the
//! older one ([`Registry::take_over`]). A real agent opens a new connection
//! only after it gave the old one up, so the old one is normally silent by
//! then; when it was still sending ([`LIVE`]) from another address, or
//! live takeovers keep alternating ([`FLAPPING`] within [`FLAP_WINDOW`]),
//! the identity is in use from two places at once — a copied agent
//! identity — which the uplink reports as a security event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use palisade_proto::pb;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::db::Millis;

/// How an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Wss,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Wss => "wss",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Transport, crate::UnknownName> {
        match s {
            "quic" => Ok(Transport::Quic),
            "wss" => Ok(Transport::Wss),
            other => Err(crate::UnknownName::new("transport", other)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub transport: Transport,
    pub connected_at: Millis,
    pub remote: std::net::SocketAddr,
    /// Distinguishes this connection from an older one of the same agent.
    pub conn_id: u64,
    /// Whether this QUIC connection resumed with 0-RTT.
    pub zero_rtt: bool,
    /// Commands to deliver on this connection.
    pub commands: mpsc::Sender<pb::SignedCommand>,
    /// Notified to make the connection's task close it (the host was
    /// revoked, or a newer connection took its place: the registry then
    /// holds another `conn_id`).
    pub close: Arc<Notify>,
    /// When the agent last sent a frame on this connection.
    pub last_frame: Arc<AtomicI64>,
}

/// A connection was still sending within this many milliseconds of being
/// replaced: it was live, not a path its agent had given up.
pub const LIVE: Millis = 8_000;
/// Live takeovers of one identity within [`FLAP_WINDOW`] that mean two
/// holders, whatever their addresses (two copies behind one NAT).
pub const FLAPPING: usize = 3;
pub const FLAP_WINDOW: Millis = 60_000;

/// What a new connection replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub transport: Transport,
    pub remote: std::net::SocketAddr,
    pub connected_at: Millis,
    pub last_frame_at: Millis,
    /// The identity looks in use from two places at once.
    pub duplicate: bool,
}

/// Commands queued per connection at most.
const COMMAND_QUEUE: usize = 64;

#[derive(Default)]
pub struct Registry {
    /// QUIC connections whose 0-RTT data the backend accepted (since start).
    pub zero_rtt_accepted: std::sync::atomic::AtomicU64,
    inner: Mutex<HashMap<String, Connection>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Per agent, when live connections of it were taken over lately.
    takeovers: Mutex<HashMap<String, Vec<Millis>>>,
    /// Per agent, when a duplicate identity was last reported.
    reported: Mutex<HashMap<String, Millis>>,
}

/// A duplicate identity is reported at most once per agent this often.
pub const REPORT_EVERY: Millis = 10 * 60_000;

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new connection of `agent_id`, replacing any older one, and
    /// returns its id (pass it to [`Registry::disconnected`]).
    pub fn connected(
        &self,
        agent_id: &str,
        transport: Transport,
        remote: std::net::SocketAddr,
        now: Millis,
    ) -> u64 {
        self.connected_with_commands(agent_id, transport, remote, now)
            .0
    }

    /// Like [`Registry::connected`], and returns the receiving end of the
    /// connection's command queue: [`Registry::send_command`] delivers into it.
    pub fn connected_with_commands(
        &self,
        agent_id: &str,
        transport: Transport,
        remote: std::net::SocketAddr,
        now: Millis,
    ) -> (u64, mpsc::Receiver<pb::SignedCommand>, Arc<Notify>) {
        let (conn_id, rx, close, _) = self.take_over(agent_id, transport, remote, now);
        (conn_id, rx, close)
    }

    /// Records a new connection of `agent_id` and closes the older one, if
    /// any, saying what it replaced (and whether that looks like a second
    /// holder of the identity).
    pub fn take_over(
        &self,
        agent_id: &str,
        transport: Transport,
        remote: std::net::SocketAddr,
        now: Millis,
    ) -> (
        u64,
        mpsc::Receiver<pb::SignedCommand>,
        Arc<Notify>,
        Option<Replaced>,
    ) {
        let conn_id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let close = Arc::new(Notify::new());
        let conn = Connection {
            transport,
            connected_at: now,
            remote,
            conn_id,
            zero_rtt: false,
            commands: tx,
            close: close.clone(),
            last_frame: Arc::new(AtomicI64::new(now)),
        };
        let old = self.lock().insert(agent_id.to_owned(), conn);
        let replaced = old.map(|old| {
            old.close.notify_one();
            let last_frame_at = old.last_frame.load(Ordering::SeqCst);
            let live = now.saturating_sub(last_frame_at) <= LIVE;
            let flapping = live && self.note_takeover(agent_id, now) >= FLAPPING;
            Replaced {
                transport: old.transport,
                remote: old.remote,
                connected_at: old.connected_at,
                last_frame_at,
                duplicate: live && (old.remote.ip() != remote.ip() || flapping),
            }
        });
        (conn_id, rx, close, replaced)
    }

    /// Counts a live takeover of `agent_id` at `now`; returns how many
    /// happened within [`FLAP_WINDOW`].
    fn note_takeover(&self, agent_id: &str, now: Millis) -> usize {
        let mut map = self.takeovers.lock().unwrap_or_else(|p| p.into_inner());
        // Forget agents with no recent takeover, so the map stays small.
        map.retain(|_, times| times.last().is_some_and(|&t| now - t <= FLAP_WINDOW));
        let times = map.entry(agent_id.to_owned()).or_default();
        times.retain(|&t| now - t <= FLAP_WINDOW);
        times.push(now);
        times.len()
    }

    /// Whether a duplicate of `agent_id` seen at `now` should be reported
    /// (once per [`REPORT_EVERY`]); counts it as reported if so.
    pub fn report_duplicate(&self, agent_id: &str, now: Millis) -> bool {
        let mut map = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, &mut at| now - at < REPORT_EVERY);
        if map.contains_key(agent_id) {
            return false;
        }
        map.insert(agent_id.to_owned(), now);
        true
    }

    /// Notes that the agent sent a frame on connection `conn_id` at `now`.
    pub fn frame_received(&self, agent_id: &str, conn_id: u64, now: Millis) {
        if let Some(c) = self.lock().get(agent_id).filter(|c| c.conn_id == conn_id) {
            c.last_frame.store(now, Ordering::SeqCst);
        }
    }

    /// Marks the connection `conn_id` of `agent_id` as resumed with 0-RTT.
    pub fn set_zero_rtt(&self, agent_id: &str, conn_id: u64) {
        if let Some(c) = self
            .lock()
            .get_mut(agent_id)
            .filter(|c| c.conn_id == conn_id)
        {
            c.zero_rtt = true;
        }
    }

    /// Queues a signed command on the agent's live connection. False when the
    /// agent is not connected or its queue is full (the command stays pending
    /// in the store and is delivered at the next connection).
    pub fn send_command(&self, agent_id: &str, command: pb::SignedCommand) -> bool {
        let sender = self.lock().get(agent_id).map(|c| c.commands.clone());
        sender.is_some_and(|tx| tx.try_send(command).is_ok())
    }

    /// Tells the live connection of `agent_id` to close (its task closes it
    /// at once). False when the agent is not connected.
    pub fn close(&self, agent_id: &str) -> bool {
        match self.lock().get(agent_id) {
            Some(conn) => {
                // A stored permit: the task sees it even if it is not waiting yet.
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Forgets the connection `conn_id` of `agent_id`, unless a newer one took its place.
    pub fn disconnected(&self, agent_id: &str, conn_id: u64) {
        let mut map = self.lock();
        if map.get(agent_id).is_some_and(|c| c.conn_id == conn_id) {
            map.remove(agent_id);
        }
    }

    /// The agents connected now.
    pub fn agent_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The live connection of `agent_id`, if any.
    pub fn get(&self, agent_id: &str) -> Option<Connection> {
        self.lock().get(agent_id).cloned()
    }

    pub fn online_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_connection_survives_older_disconnect() {
        let r = Registry::new();
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let old = r.connected("a", Transport::Quic, addr, 1);
        let new = r.connected("a", Transport::Wss, addr, 2);
        r.disconnected("a", old);
        assert_eq!(r.get("a").map(|c| c.conn_id), Some(new));
        r.disconnected("a", new);
        assert!(r.get("a").is_none());
    }

    #[test]
    fn a_new_connection_closes_the_older_one() {
        let r = Registry::new();
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let (_, _, old_close, none) = r.take_over("a", Transport::Quic, addr, 1_000);
        assert!(none.is_none());
        let (_, _, _, replaced) = r.take_over("a", Transport::Wss, addr, 60_000);
        let replaced = replaced.expect("replaced the older one");
        // The older connection's task is told to close (a stored permit).
        assert!(futures_util::FutureExt::now_or_never(old_close.notified()).is_some());
        // Silent for a minute: a path its agent gave up, not a duplicate.
        assert!(!replaced.duplicate);
        assert_eq!(r.online_count(), 1);
    }

    #[test]
    fn a_live_connection_taken_over_from_elsewhere_is_a_duplicate() {
        let r = Registry::new();
        let here: std::net::SocketAddr = "10.0.0.1:1000".parse().expect("addr");
        let there: std::net::SocketAddr = "10.0.0.2:1000".parse().expect("addr");
        let (first, _, _, _) = r.take_over("a", Transport::Quic, here, 0);
        r.frame_received("a", first, 10_000);
        let (_, _, _, replaced) = r.take_over("a", Transport::Quic, there, 12_000);
        assert!(replaced.expect("replaced").duplicate, "live, other address");
        // Same address, live: a reconnect... until takeovers keep alternating.
        let r = Registry::new();
        let mut now = 0;
        let mut verdicts = Vec::new();
        for _ in 0..4 {
            let (id, _, _, replaced) = r.take_over("b", Transport::Quic, here, now);
            verdicts.extend(replaced.map(|x| x.duplicate));
            now += 2_000;
            r.frame_received("b", id, now);
            now += 1_000;
        }
        assert_eq!(verdicts, [false, false, true]);
    }
}
