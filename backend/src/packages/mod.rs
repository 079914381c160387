//! Each host's package inventory: installed packages, the updates its
//! package manager offers (security first), held packages, whether it needs
//! a reboot; and the fleet's view across hosts.
//!
//! - this file: the model of what a host reported beyond the inventory
//!   itself ([`Reboot`], [`Report`]) and what applying a change did;
//! - [`store`]: storing a whole inventory, applying a change, reading a
//!   host's inventory, searching the fleet's packages, and every host's
//!   update counts in one query ([`store::fleet`]);
//! - [`api`]: `GET /api/v1/hosts/{id}/packages`, `GET /api/v1/packages`,
//!   `GET /api/v1/packages/summary` and the fleet page `/packages`
//!   ("Updates").
//!
//! The fleet view ([`FleetHost`], [`group_summaries`]) is computed here,
//! once for both dialects, from the per-host counts the store returns: a
//! host that never reported an inventory has no counts (it is not "0
//! updates"), and a host whose package indexes were refreshed longer ago
//! than [`STALE_INDEXES_AFTER`] is flagged, because updates read from stale
//! indexes are missing the newest ones.
//!
//! The inventory model is `palisade_packages::inventory` (the agent's and
//! the backend's one shape). An agent uploads a whole inventory once, then
//! only changes ([`palisade_packages::inventory::Delta`]). Invariants:
//! - the rows of a host always make the inventory whose digest is stored
//!   with them: a whole inventory replaces them, a change is applied only to
//!   the inventory its base digest names and only if the result has the
//!   digest it announces, in one transaction;
//! - a refused change stores nothing and marks the host `needs_full`, so the
//!   agent is asked for the whole inventory (`PackagesHeld` with no digest,
//!   sent by the uplink after the batch and at every hello);
//! - a change whose result is the inventory already held is taken as it is
//!   (nothing to apply): the agent may send one again after a reconnect,
//!   before it learns that the pending one was stored;
//! - an older record never replaces what a newer one stored (record `seq`).

use palisade_packages::inventory::Inventory;
use palisade_proto::pb;

use palisade_packages::inventory::Manager;

use crate::db::Millis;

pub mod api;
pub mod store;

/// Whether a host needs a reboot, and why (in words: "newer kernel
/// 6.1.0-20-amd64 installed", "/run/reboot-required").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reboot {
    pub required: bool,
    pub reasons: Vec<String>,
}

/// What an inventory report carries besides the packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The agent's clock when it read the package databases.
    pub collected_at: Millis,
    /// When the package manager's indexes were last refreshed, if known:
    /// updates read from stale indexes are stale too, and the UI says so.
    pub lists_updated_at: Option<Millis>,
    pub reboot: Reboot,
}

/// A whole inventory or a change, as a record carries it (the one type of
/// `palisade_proto::packages`, which also converts it from the wire).
pub use palisade_proto::packages::Change;

/// What storing an inventory record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The host's inventory is now the reported one.
    Stored,
    /// A newer record had already been stored: nothing changed.
    Older,
    /// A change against another inventory than the one held (or one that
    /// does not produce what it announces): nothing changed, the host is
    /// marked as needing its whole inventory.
    NeedsWhole,
}

/// A host's inventory as stored, with what came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInventory {
    pub inventory: Inventory,
    pub report: Report,
    /// The record that last changed it.
    pub seq: u64,
    /// A change was refused: the agent must send the whole inventory.
    pub needs_full: bool,
}

/// A package report as the uplink received it, in domain types: the change
/// and what came with it. `None` for what the decoder already refuses (an
/// unknown manager or status, a digest of another length): the record is
/// then kept in the ledger and applied to nothing.
pub fn from_wire(r: &pb::PackageReport) -> Option<(Change, Report)> {
    let change = palisade_proto::packages::change_from_wire(r.change.as_ref())?;
    let report = Report {
        collected_at: r.collected_at_unix_ms,
        lists_updated_at: (r.lists_updated_at_unix_ms != 0).then_some(r.lists_updated_at_unix_ms),
        reboot: Reboot {
            required: r.reboot_required,
            reasons: r.reboot_reasons.clone(),
        },
    };
    Some((change, report))
}

/// Indexes refreshed longer ago than this are stale: the updates read from
/// them miss whatever was published since.
pub const STALE_INDEXES_AFTER: Millis = 7 * 24 * 60 * 60 * 1000;

/// A host in the fleet view, with its update counts when it reported an
/// inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHost {
    pub host_id: String,
    pub hostname: String,
    pub host_group_id: Option<String>,
    /// The group's name.
    pub host_group: Option<String>,
    /// `None`: the host has not reported an inventory.
    pub counts: Option<UpdateCounts>,
}

/// What a host's inventory says about its updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateCounts {
    pub manager: Manager,
    pub collected_at: Millis,
    pub lists_updated_at: Option<Millis>,
    pub reboot_required: bool,
    /// Updates the next upgrade installs (status `pending`).
    pub pending: u64,
    /// Pending updates that are security updates.
    pub pending_security: u64,
    pub held: u64,
    pub kept_back: u64,
    pub deferred: u64,
}

impl UpdateCounts {
    /// The indexes are known to be older than [`STALE_INDEXES_AFTER`] at
    /// `now` (unknown: not flagged).
    pub fn stale_indexes(&self, now: Millis) -> bool {
        self.lists_updated_at
            .is_some_and(|at| now.saturating_sub(at) > STALE_INDEXES_AFTER)
    }
}

impl FleetHost {
    /// Pending security updates (0 without an inventory).
    pub fn pending_security(&self) -> u64 {
        self.counts.as_ref().map_or(0, |c| c.pending_security)
    }
}

/// Most pending security updates first, then most pending updates, hosts
/// without an inventory after those with one, then by hostname.
pub fn sort_security_first(hosts: &mut [FleetHost]) {
    hosts.sort_by(|a, b| {
        let key = |h: &FleetHost| {
            let counts = h.counts.as_ref();
            (
                std::cmp::Reverse(counts.map_or(0, |c| c.pending_security)),
                std::cmp::Reverse(counts.map_or(0, |c| c.pending)),
                counts.is_none(),
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| (&a.hostname, &a.host_id).cmp(&(&b.hostname, &b.host_id)))
    });
}

/// One host group's row of the fleet view (`host_group_id` None: hosts in
/// no group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSummary {
    pub host_group_id: Option<String>,
    pub host_group: Option<String>,
    pub hosts: u64,
    pub hosts_without_inventory: u64,
    pub hosts_needing_security_updates: u64,
    pub pending_security_updates: u64,
    pub hosts_needing_reboot: u64,
    pub hosts_with_stale_indexes: u64,
}

/// The counts per host group of `hosts`, by group name (hosts in no group
/// last).
pub fn group_summaries(hosts: &[FleetHost], now: Millis) -> Vec<GroupSummary> {
    let mut groups: std::collections::BTreeMap<(bool, Option<&str>, Option<&str>), GroupSummary> =
        std::collections::BTreeMap::new();
    for host in hosts {
        let key = (
            host.host_group_id.is_none(),
            host.host_group.as_deref(),
            host.host_group_id.as_deref(),
        );
        let group = groups.entry(key).or_insert_with(|| GroupSummary {
            host_group_id: host.host_group_id.clone(),
            host_group: host.host_group.clone(),
            ..GroupSummary::default()
        });
        group.hosts += 1;
        let Some(counts) = &host.counts else {
            group.hosts_without_inventory += 1;
            continue;
        };
        group.hosts_needing_security_updates += u64::from(counts.pending_security > 0);
        group.pending_security_updates += counts.pending_security;
        group.hosts_needing_reboot += u64::from(counts.reboot_required);
        group.hosts_with_stale_indexes += u64::from(counts.stale_indexes(now));
    }
    groups.into_values().collect()
}
