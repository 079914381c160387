//! Keeping the hosts' package indexes fresh: stale indexes show no pending
//! updates (apt and dnf only know what their last refresh fetched), so the
//! backend asks each connected host's control to refresh them
//! (`refresh_inventory`: `apt-get update`, `dnf makecache`) once they are
//! older than [`REFRESH_AFTER`]. Refreshing needs root and the network, so
//! it is control's duty; the collector then sees the new indexes and
//! reports the pending updates. Every patch run's dry run refreshes them
//! too.
//!
//! The sweep runs every [`SWEEP_EVERY`] on the hosts connected to this
//! backend. A host whose indexes are stale is asked at most once per
//! [`REFRESH_AFTER`] (whatever the answer: a host that cannot refresh is
//! not asked in a loop); the commands are the backend's own (`system`),
//! audited like any other.

use std::time::Duration;

use palisade_proto::msg::CommandAction;

use crate::audit::Actor;
use crate::commands::{self, CommandRequest, DEFAULT_EXPIRES_IN_SECS, Requester};
use crate::db::{Millis, Result, Tx, params};
use crate::state::AppState;

/// How old a host's indexes may get.
pub const REFRESH_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// How often connected hosts are checked.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// Of `host_ids`, those with an inventory whose indexes were refreshed
/// before `now - REFRESH_AFTER` (or never), and no `refresh_inventory`
/// command issued since then.
pub fn stale(tx: &mut Tx<'_>, host_ids: &[String], now: Millis) -> Result<Vec<String>> {
    let since = now.saturating_sub(millis(REFRESH_AFTER));
    let mut out = Vec::new();
    for host_id in host_ids {
        let due = tx.query_opt(
            "SELECT 1 FROM host_inventories i
             WHERE i.host_id = $1
               AND (i.lists_updated_at IS NULL OR i.lists_updated_at < $2)
               AND NOT EXISTS (
                   SELECT 1 FROM commands c
                   WHERE c.host_id = i.host_id AND c.type = 'refresh_inventory'
                     AND c.issued_at >= $2)",
            params![host_id.as_str(), since],
            |_| Ok(()),
        )?;
        if due.is_some() {
            out.push(host_id.clone());
        }
    }
    Ok(out)
}

/// One sweep: asks every connected host with stale indexes to refresh
/// them. Returns the hosts asked.
pub async fn sweep(state: &AppState, now: Millis) -> Result<Vec<String>> {
    let connected = state.registry.agent_ids();
    let due = state
        .db
        .read("stale package indexes", move |tx| {
            stale(tx, &connected, now)
        })
        .await?;
    let request = CommandRequest {
        action: CommandAction::RefreshInventory,
        expires_in_secs: DEFAULT_EXPIRES_IN_SECS,
    };
    for host_id in &due {
        let requester = Requester {
            actor: Actor::System,
            source_ip: None,
            user_agent: None,
            request_id: String::new(),
        };
        commands::issue(state, host_id, &request, requester, now).await?;
        tracing::info!(
            host_id,
            "asked the host to refresh its stale package indexes"
        );
    }
    Ok(due)
}

/// Sweeps forever, every [`SWEEP_EVERY`] (the first one a minute after
/// start, when agents have reconnected). Errors are logged and retried at
/// the next turn.
pub async fn run(state: AppState) {
    let start = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut every = tokio::time::interval_at(start, SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = sweep(&state, crate::now_millis()).await {
            tracing::warn!(error = %e, "the package index refresh sweep failed");
        }
    }
}
