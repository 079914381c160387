//! Each host's package inventory: installed packages, the updates its
//! package manager offers (security first), held packages, whether it needs
//! a reboot; and the fleet's view across hosts.
//!
//! - this file: the model of what a host reported beyond the inventory
//!   itself ([`Reboot`], [`Report`]) and what applying a change did;
//! - [`store`]: storing a whole inventory, applying a change, reading a
//!   host's inventory and searching the fleet's packages;
//! - [`api`]: `GET /api/v1/hosts/{id}/packages`, `GET /api/v1/packages`.
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
