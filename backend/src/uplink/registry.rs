//! Agents connected to this backend right now.
//!
//! A host is "online" while its agent holds a live connection to this
//! backend. Connections are known only in memory: when the backend restarts,
//! every host is offline until its agent reconnects, which is the truth.
//! (With several replicas this moves into the shared database.)

use std::collections::HashMap;
use std::sync::Mutex;

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
    /// revoked).
    pub close: Arc<Notify>,
}

/// Commands queued per connection at most.
const COMMAND_QUEUE: usize = 64;

#[derive(Default)]
pub struct Registry {
    /// QUIC connections whose 0-RTT data the backend accepted (since start).
    pub zero_rtt_accepted: std::sync::atomic::AtomicU64,
    inner: Mutex<HashMap<String, Connection>>,
    next_id: std::sync::atomic::AtomicU64,
}

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
        };
        self.lock().insert(agent_id.to_owned(), conn);
        (conn_id, rx, close)
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
}
