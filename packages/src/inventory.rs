//! A host's package inventory in one shape for apt and dnf hosts, and the
//! changes between two inventories.
//!
//! The agent uploads an inventory once, then only [`Delta`]s: a
//! 2,000-package host whose packages did not change sends nothing. Each
//! delta names the digest of the inventory it applies to and of the one it
//! makes; a receiver whose copy has another digest (a lost or reordered
//! delta, a backend restored from a backup) refuses it with
//! [`DeltaError`] and asks for the whole inventory again. The digest is
//! SHA-256 over a canonical encoding (every field, length-prefixed, in key
//! order), so both sides compute it alike.

use std::collections::BTreeMap;

use ring::digest;

use crate::deb::upgrade::{Plan as AptPlan, UpdateState as AptState};
use crate::deb::{StatusFile, Version as DebVersion};
use crate::rpm::upgrade::{Plan as DnfPlan, UpdateState as DnfState};
use crate::rpm::{Evr, InstalledRpm};

/// Which package database the inventory was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Dpkg,
    Rpm,
}

impl Manager {
    /// `dpkg` or `rpm`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Dpkg => "dpkg",
            Manager::Rpm => "rpm",
        }
    }

    pub fn from_name(name: &str) -> Option<Manager> {
        match name {
            "dpkg" => Some(Manager::Dpkg),
            "rpm" => Some(Manager::Rpm),
            _ => None,
        }
    }

    /// Orders two versions as this package manager does; `None` when one of
    /// them is not a version of its syntax.
    pub fn compare_versions(self, a: &str, b: &str) -> Option<std::cmp::Ordering> {
        match self {
            Manager::Dpkg => {
                let (a, b) = (DebVersion::parse(a).ok()?, DebVersion::parse(b).ok()?);
                Some(a.cmp(&b))
            }
            Manager::Rpm => {
                let (a, b) = (Evr::parse(a).ok()?, Evr::parse(b).ok()?);
                Some(a.cmp(&b))
            }
        }
    }
}

/// An installed package. Its key is name, architecture and version: RPM
/// hosts keep several kernels of one name side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub arch: String,
    pub version: String,
    /// The source package (Debian `Source`, RPM source package name).
    pub source: String,
    /// Held (`apt-mark hold`, dnf versionlock).
    pub held: bool,
}

/// Why an update is not installed by the next upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Held,
    /// Phased (apt): offered to a share of machines first.
    Deferred,
    /// Its dependencies cannot be met now (apt).
    KeptBack,
    /// Hidden by an exclude pattern (dnf).
    Excluded,
}

impl Status {
    /// `pending`, `held`, `deferred`, `kept_back` or `excluded`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Held => "held",
            Status::Deferred => "deferred",
            Status::KeptBack => "kept_back",
            Status::Excluded => "excluded",
        }
    }

    pub fn from_name(name: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Held,
            Status::Deferred,
            Status::KeptBack,
            Status::Excluded,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// An update the package manager offers for an installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub name: String,
    pub arch: String,
    pub installed: String,
    pub candidate: String,
    pub security: bool,
    pub status: Status,
    /// Why it is held back, in words; empty when pending.
    pub detail: String,
    /// Where the candidate comes from: `Origin/Suite` for apt, the
    /// repository ids for dnf.
    pub origins: Vec<String>,
    /// dnf advisories fixed by the update (ids), their highest severity and
    /// their CVE ids.
    pub advisories: Vec<String>,
    pub severity: String,
    pub cves: Vec<String>,
}

type InstalledKey = (String, String, String);
type UpdateKey = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub manager: Manager,
    pub installed: BTreeMap<InstalledKey, Installed>,
    pub updates: BTreeMap<UpdateKey, Update>,
}

/// SHA-256 of an inventory's canonical encoding.
pub type Digest = [u8; 32];

/// What changed between two inventories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub base: Digest,
    pub result: Digest,
    /// Installed packages added or changed (a new version is a new key).
    pub installed_set: Vec<Installed>,
    pub installed_removed: Vec<InstalledKey>,
    pub updates_set: Vec<Update>,
    pub updates_removed: Vec<UpdateKey>,
}

impl Delta {
    /// Nothing changed: nothing to send.
    pub fn is_empty(&self) -> bool {
        self.installed_set.is_empty()
            && self.installed_removed.is_empty()
            && self.updates_set.is_empty()
            && self.updates_removed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta applies to another inventory than the one held (send the whole inventory)")]
    WrongBase,
    #[error("the delta does not produce the inventory it announces (send the whole inventory)")]
    WrongResult,
}

impl Inventory {
    pub fn empty(manager: Manager) -> Inventory {
        Inventory {
            manager,
            installed: BTreeMap::new(),
            updates: BTreeMap::new(),
        }
    }

    /// A Debian host's inventory: the installed packages of the dpkg status
    /// file and the updates of the dist-upgrade plan.
    pub fn from_apt(status: &StatusFile, plan: &AptPlan) -> Inventory {
        let mut inventory = Inventory::empty(Manager::Dpkg);
        for package in status.installed() {
            let Some(version) = &package.version else {
                continue;
            };
            inventory.insert_installed(Installed {
                name: package.name.clone(),
                arch: package.architecture.clone(),
                version: version.to_string(),
                source: package.source.clone(),
                held: package.is_held(),
            });
        }
        for update in &plan.updates {
            let (status, detail) = match &update.state {
                AptState::Pending => (Status::Pending, String::new()),
                AptState::Held => (Status::Held, String::new()),
                AptState::Deferred { percentage } => (
                    Status::Deferred,
                    format!("phased: offered to {percentage}% of machines"),
                ),
                AptState::KeptBack { reason } => (Status::KeptBack, reason.clone()),
            };
            let mut origins: Vec<String> = update
                .origins
                .iter()
                .map(|o| format!("{}/{}", o.origin, o.suite))
                .collect();
            origins.dedup();
            inventory.insert_update(Update {
                name: update.name.clone(),
                arch: update.architecture.clone(),
                installed: update.installed.to_string(),
                candidate: update.candidate.to_string(),
                security: update.security,
                status,
                detail,
                origins,
                advisories: Vec::new(),
                severity: String::new(),
                cves: Vec::new(),
            });
        }
        inventory
    }

    /// An RPM host's inventory: the rpm database's packages (not the
    /// `gpg-pubkey` entries) and the updates of the dnf plan.
    pub fn from_dnf(installed: &[InstalledRpm], plan: &DnfPlan) -> Inventory {
        let mut inventory = Inventory::empty(Manager::Rpm);
        for package in installed.iter().filter(|p| !p.is_gpg_pubkey()) {
            inventory.insert_installed(Installed {
                name: package.name.clone(),
                arch: package.arch.clone().unwrap_or_default(),
                version: package.evr().to_string(),
                source: package.source_name().unwrap_or(&package.name).to_owned(),
                held: false,
            });
        }
        for update in &plan.updates {
            let (status, detail) = match &update.state {
                DnfState::Pending => (Status::Pending, String::new()),
                DnfState::Excluded { pattern } => {
                    (Status::Excluded, format!("excluded by {pattern}"))
                }
                DnfState::Locked { pattern } => {
                    (Status::Held, format!("version-locked by {pattern}"))
                }
            };
            let severity = ["Critical", "Important", "Moderate", "Low"]
                .into_iter()
                .find(|s| {
                    update
                        .advisories
                        .iter()
                        .any(|a| a.severity.eq_ignore_ascii_case(s))
                })
                .unwrap_or_default()
                .to_owned();
            let mut cves: Vec<String> = update
                .advisories
                .iter()
                .flat_map(|a| a.cves.iter().cloned())
                .collect();
            cves.sort();
            cves.dedup();
            inventory.insert_update(Update {
                name: update.name.clone(),
                arch: update.arch.clone(),
                installed: update.installed.to_string(),
                candidate: update.candidate.to_string(),
                security: update.security,
                status,
                detail,
                origins: update.repositories.clone(),
                advisories: update.advisories.iter().map(|a| a.id.clone()).collect(),
                severity,
                cves,
            });
        }
        inventory
    }

    /// Adds (or replaces) an installed package.
    pub fn insert_installed(&mut self, package: Installed) {
        let key = (
            package.name.clone(),
            package.arch.clone(),
            package.version.clone(),
        );
        self.installed.insert(key, package);
    }

    /// Adds (or replaces) the update of a package.
    pub fn insert_update(&mut self, update: Update) {
        self.updates
            .insert((update.name.clone(), update.arch.clone()), update);
    }

    /// SHA-256 over every field, length-prefixed, in key order.
    pub fn digest(&self) -> Digest {
        let mut context = digest::Context::new(&digest::SHA256);
        let mut text = |s: &str| {
            context.update(&(s.len() as u64).to_be_bytes());
            context.update(s.as_bytes());
        };
        text(self.manager.as_str());
        for p in self.installed.values() {
            for field in [&p.name, &p.arch, &p.version, &p.source] {
                text(field);
            }
            text(if p.held { "held" } else { "" });
        }
        text("updates");
        for u in self.updates.values() {
            for field in [
                &u.name,
                &u.arch,
                &u.installed,
                &u.candidate,
                &u.detail,
                &u.severity,
            ] {
                text(field);
            }
            text(if u.security { "security" } else { "" });
            text(&format!("{:?}", u.status));
            for list in [&u.origins, &u.advisories, &u.cves] {
                text(&list.len().to_string());
                for item in list {
                    text(item);
                }
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    /// What turns `self` into `newer`.
    pub fn diff(&self, newer: &Inventory) -> Delta {
        let (installed_set, installed_removed) = changes(&self.installed, &newer.installed);
        let (updates_set, updates_removed) = changes(&self.updates, &newer.updates);
        Delta {
            base: self.digest(),
            result: newer.digest(),
            installed_set,
            installed_removed,
            updates_set,
            updates_removed,
        }
    }

    /// `self` changed by `delta`, checked against both digests.
    pub fn apply(&self, delta: &Delta) -> Result<Inventory, DeltaError> {
        if self.digest() != delta.base {
            return Err(DeltaError::WrongBase);
        }
        let mut next = self.clone();
        for key in &delta.installed_removed {
            next.installed.remove(key);
        }
        for package in &delta.installed_set {
            next.insert_installed(package.clone());
        }
        for key in &delta.updates_removed {
            next.updates.remove(key);
        }
        for update in &delta.updates_set {
            next.insert_update(update.clone());
        }
        if next.digest() != delta.result {
            return Err(DeltaError::WrongResult);
        }
        Ok(next)
    }
}

/// The entries of `new` that `old` lacks or holds differently, and the keys
/// of `old` that `new` lacks.
fn changes<K: Ord + Clone, V: Clone + PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<V>, Vec<K>) {
    let set = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(_, v)| v.clone())
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(k))
        .cloned()
        .collect();
    (set, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn installed(name: &str, version: &str) -> Installed {
        Installed {
            name: name.into(),
            arch: "amd64".into(),
            version: version.into(),
            source: name.into(),
            held: false,
        }
    }

    fn update(name: &str, candidate: &str, security: bool) -> Update {
        Update {
            name: name.into(),
            arch: "amd64".into(),
            installed: "1".into(),
            candidate: candidate.into(),
            security,
            status: Status::Pending,
            detail: String::new(),
            origins: vec!["Debian/bookworm-security".into()],
            advisories: Vec::new(),
            severity: String::new(),
            cves: Vec::new(),
        }
    }

    fn inventory(installed_: &[(&str, &str)], updates: &[(&str, &str, bool)]) -> Inventory {
        let mut inventory = Inventory::empty(Manager::Dpkg);
        for (name, version) in installed_ {
            inventory.insert_installed(installed(name, version));
        }
        for (name, candidate, security) in updates {
            inventory.insert_update(update(name, candidate, *security));
        }
        inventory
    }

    #[test]
    fn an_unchanged_inventory_sends_nothing() {
        let a = inventory(
            &[("openssl", "3.0.15-1"), ("bash", "5.2")],
            &[("openssl", "3.0.16-1", true)],
        );
        let delta = a.diff(&a.clone());
        assert!(delta.is_empty());
        assert_eq!(a.apply(&delta).unwrap(), a);
    }

    #[test]
    fn an_upgrade_is_one_removal_one_addition_and_a_resolved_update() {
        let before = inventory(
            &[("openssl", "3.0.15-1"), ("bash", "5.2")],
            &[("openssl", "3.0.16-1", true)],
        );
        let after = inventory(&[("openssl", "3.0.16-1"), ("bash", "5.2")], &[]);
        let delta = before.diff(&after);
        assert_eq!(delta.installed_set, [installed("openssl", "3.0.16-1")]);
        assert_eq!(delta.installed_removed.len(), 1);
        assert_eq!(
            delta.updates_removed,
            [("openssl".to_owned(), "amd64".to_owned())]
        );
        assert_eq!(before.apply(&delta).unwrap(), after);
    }

    #[test]
    fn a_delta_for_another_inventory_is_refused() {
        let a = inventory(&[("a", "1")], &[]);
        let b = inventory(&[("a", "2")], &[]);
        let c = inventory(&[("a", "1"), ("c", "1")], &[]);
        let delta = a.diff(&b);
        assert_eq!(c.apply(&delta), Err(DeltaError::WrongBase));
        let mut forged = delta.clone();
        forged.installed_set.clear();
        assert_eq!(a.apply(&forged), Err(DeltaError::WrongResult));
    }

    #[test]
    fn the_digest_sees_every_field() {
        let a = inventory(&[("a", "1")], &[("a", "2", false)]);
        let mut b = a.clone();
        b.updates.values_mut().for_each(|u| u.security = true);
        assert_ne!(a.digest(), b.digest());
        let mut c = a.clone();
        c.installed.values_mut().for_each(|p| p.held = true);
        assert_ne!(a.digest(), c.digest());
        // Field boundaries are part of the encoding.
        let d = inventory(&[("ab", "1")], &[]);
        let e = inventory(&[("a", "b1")], &[]);
        assert_ne!(d.digest(), e.digest());
    }

    fn arbitrary() -> impl Strategy<Value = Inventory> {
        let package = ("[a-d]{1,2}", "[0-3]", any::<bool>());
        let upgrade = ("[a-d]{1,2}", "[4-6]", any::<bool>());
        (
            proptest::collection::vec(package, 0..8),
            proptest::collection::vec(upgrade, 0..5),
        )
            .prop_map(|(packages, updates)| {
                let mut inventory = Inventory::empty(Manager::Rpm);
                for (name, version, held) in packages {
                    inventory.insert_installed(Installed {
                        held,
                        ..installed(&name, &version)
                    });
                }
                for (name, candidate, security) in updates {
                    inventory.insert_update(update(&name, &candidate, security));
                }
                inventory
            })
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_newer_inventory(a in arbitrary(), b in arbitrary()) {
            let delta = a.diff(&b);
            prop_assert_eq!(a.apply(&delta).unwrap(), b.clone());
            prop_assert_eq!(delta.is_empty(), a == b);
        }
    }
}
