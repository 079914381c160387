//! Package inventories between the wire (`pb::PackageInventory`,
//! `pb::PackageDelta`) and the one inventory model both ends use
//! (`palisade_packages::inventory`). The collector converts to the wire,
//! the backend from it; both directions live here so they cannot drift.
//!
//! Decoding only converts: the bounds (sizes, string lengths, known enum
//! values) are checked by [`crate::msg`] before a report reaches this.

use palisade_packages::inventory::{Delta, Installed, Inventory, Manager, Status, Update};

use crate::pb;

/// A whole inventory or a change of one, as a package report carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Whole(Inventory),
    Delta(Delta),
}

pub fn manager_to_wire(manager: Manager) -> pb::PackageManager {
    match manager {
        Manager::Dpkg => pb::PackageManager::Dpkg,
        Manager::Rpm => pb::PackageManager::Rpm,
    }
}

pub fn status_to_wire(status: Status) -> pb::UpdateStatus {
    match status {
        Status::Pending => pb::UpdateStatus::Pending,
        Status::Held => pb::UpdateStatus::Held,
        Status::Deferred => pb::UpdateStatus::Deferred,
        Status::KeptBack => pb::UpdateStatus::KeptBack,
        Status::Excluded => pb::UpdateStatus::Excluded,
    }
}

pub fn installed_to_wire(p: &Installed) -> pb::InstalledPackage {
    pb::InstalledPackage {
        name: p.name.clone(),
        arch: p.arch.clone(),
        version: p.version.clone(),
        source: p.source.clone(),
        held: p.held,
    }
}

pub fn update_to_wire(u: &Update) -> pb::PackageUpdate {
    pb::PackageUpdate {
        name: u.name.clone(),
        arch: u.arch.clone(),
        installed: u.installed.clone(),
        candidate: u.candidate.clone(),
        security: u.security,
        status: status_to_wire(u.status) as i32,
        detail: u.detail.clone(),
        origins: u.origins.clone(),
        advisories: u.advisories.clone(),
        severity: u.severity.clone(),
        cves: u.cves.clone(),
    }
}

pub fn inventory_to_wire(inventory: &Inventory) -> pb::PackageInventory {
    pb::PackageInventory {
        manager: manager_to_wire(inventory.manager) as i32,
        installed: inventory
            .installed
            .values()
            .map(installed_to_wire)
            .collect(),
        updates: inventory.updates.values().map(update_to_wire).collect(),
    }
}

pub fn delta_to_wire(d: &Delta) -> pb::PackageDelta {
    pb::PackageDelta {
        base_sha256: d.base.to_vec(),
        result_sha256: d.result.to_vec(),
        installed_set: d.installed_set.iter().map(installed_to_wire).collect(),
        installed_removed: d
            .installed_removed
            .iter()
            .map(|(name, arch, version)| pb::PackageKey {
                name: name.clone(),
                arch: arch.clone(),
                version: version.clone(),
            })
            .collect(),
        updates_set: d.updates_set.iter().map(update_to_wire).collect(),
        updates_removed: d
            .updates_removed
            .iter()
            .map(|(name, arch)| pb::PackageKey {
                name: name.clone(),
                arch: arch.clone(),
                version: String::new(),
            })
            .collect(),
    }
}

pub fn change_to_wire(change: &Change) -> pb::package_report::Change {
    match change {
        Change::Whole(inventory) => pb::package_report::Change::Whole(inventory_to_wire(inventory)),
        Change::Delta(delta) => pb::package_report::Change::Delta(delta_to_wire(delta)),
    }
}

fn installed_from_wire(p: &pb::InstalledPackage) -> Installed {
    Installed {
        name: p.name.clone(),
        arch: p.arch.clone(),
        version: p.version.clone(),
        source: p.source.clone(),
        held: p.held,
    }
}

fn update_from_wire(u: &pb::PackageUpdate) -> Option<Update> {
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
}

/// The change a report carries, in the model's types; `None` for what the
/// decoder already refuses (no change, an unknown manager or status, a
/// digest of another length).
pub fn change_from_wire(change: Option<&pb::package_report::Change>) -> Option<Change> {
    Some(match change? {
        pb::package_report::Change::Whole(whole) => {
            let manager = match pb::PackageManager::try_from(whole.manager).ok()? {
                pb::PackageManager::Unspecified => return None,
                pb::PackageManager::Dpkg => Manager::Dpkg,
                pb::PackageManager::Rpm => Manager::Rpm,
            };
            let mut inventory = Inventory::empty(manager);
            for p in &whole.installed {
                inventory.insert_installed(installed_from_wire(p));
            }
            for u in &whole.updates {
                inventory.insert_update(update_from_wire(u)?);
            }
            Change::Whole(inventory)
        }
        pb::package_report::Change::Delta(d) => Change::Delta(Delta {
            base: d.base_sha256.as_slice().try_into().ok()?,
            result: d.result_sha256.as_slice().try_into().ok()?,
            installed_set: d.installed_set.iter().map(installed_from_wire).collect(),
            installed_removed: d
                .installed_removed
                .iter()
                .map(|k| (k.name.clone(), k.arch.clone(), k.version.clone()))
                .collect(),
            updates_set: d
                .updates_set
                .iter()
                .map(update_from_wire)
                .collect::<Option<_>>()?,
            updates_removed: d
                .updates_removed
                .iter()
                .map(|k| (k.name.clone(), k.arch.clone()))
                .collect(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Inventory {
        let mut i = Inventory::empty(Manager::Dpkg);
        for (name, version, held) in [("openssl", "3.0.11-1", false), ("bash", "5.2-2", true)] {
            i.insert_installed(Installed {
                name: name.into(),
                arch: "amd64".into(),
                version: version.into(),
                source: name.into(),
                held,
            });
        }
        i.insert_update(Update {
            name: "openssl".into(),
            arch: "amd64".into(),
            installed: "3.0.11-1".into(),
            candidate: "3.0.13-1".into(),
            security: true,
            status: Status::KeptBack,
            detail: "needs libssl3 3.0.13".into(),
            origins: vec!["Debian/bookworm-security".into()],
            advisories: vec!["DSA-1".into()],
            severity: "Important".into(),
            cves: vec!["CVE-2024-0001".into()],
        });
        i
    }

    #[test]
    fn inventories_and_changes_survive_the_wire() {
        let a = sample();
        let whole = Change::Whole(a.clone());
        assert_eq!(change_from_wire(Some(&change_to_wire(&whole))), Some(whole));
        let mut b = a.clone();
        b.installed.retain(|(name, _, _), _| name != "bash");
        b.updates.clear();
        let delta = Change::Delta(a.diff(&b));
        let back = change_from_wire(Some(&change_to_wire(&delta))).expect("decodes");
        assert_eq!(back, delta);
        let Change::Delta(d) = back else {
            unreachable!()
        };
        assert_eq!(a.apply(&d), Ok(b));
    }

    #[test]
    fn what_the_decoder_refuses_converts_to_nothing() {
        assert_eq!(change_from_wire(None), None);
        let mut whole = inventory_to_wire(&sample());
        whole.updates[0].status = 0;
        let whole = pb::package_report::Change::Whole(whole);
        assert_eq!(change_from_wire(Some(&whole)), None);
        let mut delta = delta_to_wire(&sample().diff(&Inventory::empty(Manager::Dpkg)));
        delta.base_sha256.pop();
        let delta = pb::package_report::Change::Delta(delta);
        assert_eq!(change_from_wire(Some(&delta)), None);
    }
}
