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
//! only changes ([`Delta`]). Invariants:
//! - the rows of a host always make the inventory whose digest is stored
//!   with them: a whole inventory replaces them, a change is applied only to
//!   the inventory its base digest names and only if the result has the
//!   digest it announces, in one transaction;
//! - a refused change stores nothing and marks the host `needs_full`, so the
//!   agent is asked for the whole inventory;
//! - an older record never replaces what a newer one stored (record `seq`).

use palisade_packages::inventory::{Delta, Installed, Inventory, Manager, Status, Update};
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

/// A whole inventory or a change, as a record carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Whole(Inventory),
    Delta(Delta),
}

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
    let installed = |p: &pb::InstalledPackage| Installed {
        name: p.name.clone(),
        arch: p.arch.clone(),
        version: p.version.clone(),
        source: p.source.clone(),
        held: p.held,
    };
    let update = |u: &pb::PackageUpdate| -> Option<Update> {
        let status = match pb::UpdateStatus::try_from(u.status).ok()? {
            pb::UpdateStatus::Unspecified => return None,
            pb::UpdateStatus::Pending => Status::Pending,
            pb::UpdateStatus::Held => Status::Held,
            pb::UpdateStatus::Deferred => Status::Deferred,
            pb::UpdateStatus::KeptBack => Status::KeptBack,
            pb::UpdateStatus::Excluded => Status::Excluded,
        };
        Some(Update {
            name: u.name.clone(),
            arch: u.arch.clone(),
            installed: u.installed.clone(),
            candidate: u.candidate.clone(),
            security: u.security,
            status,
            detail: u.detail.clone(),
            origins: u.origins.clone(),
            advisories: u.advisories.clone(),
            severity: u.severity.clone(),
            cves: u.cves.clone(),
        })
    };
    let change = match r.change.as_ref()? {
        pb::package_report::Change::Whole(whole) => {
            let manager = match pb::PackageManager::try_from(whole.manager).ok()? {
                pb::PackageManager::Unspecified => return None,
                pb::PackageManager::Dpkg => Manager::Dpkg,
                pb::PackageManager::Rpm => Manager::Rpm,
            };
            let mut inventory = Inventory::empty(manager);
            for p in &whole.installed {
                inventory.insert_installed(installed(p));
            }
            for u in &whole.updates {
                inventory.insert_update(update(u)?);
            }
            Change::Whole(inventory)
        }
        pb::package_report::Change::Delta(d) => Change::Delta(Delta {
            base: d.base_sha256.as_slice().try_into().ok()?,
            result: d.result_sha256.as_slice().try_into().ok()?,
            installed_set: d.installed_set.iter().map(installed).collect(),
            installed_removed: d
                .installed_removed
                .iter()
                .map(|k| (k.name.clone(), k.arch.clone(), k.version.clone()))
                .collect(),
            updates_set: d.updates_set.iter().map(update).collect::<Option<_>>()?,
            updates_removed: d
                .updates_removed
                .iter()
                .map(|k| (k.name.clone(), k.arch.clone()))
                .collect(),
        }),
    };
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
