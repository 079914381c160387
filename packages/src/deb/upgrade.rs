//! What `apt-get dist-upgrade` would do, computed from the files apt
//! itself reads: the dpkg status file, the `Packages` indexes with their
//! Release files, and the pins of apt_preferences(5).
//!
//! **Priorities** (apt_preferences(5), apt ≥ 1.1): a version's priority is
//! that of the first specific pin (`Package: name`) matching it; otherwise
//! the highest priority among the package files carrying it, where a file's
//! priority is that of the first general pin (`Package: *`) matching it,
//! else 990 for the target release, 1 for `NotAutomatic` (100 with
//! `ButAutomaticUpgrades`), else 500. The installed version is also in the
//! status file, at 100.
//!
//! **Candidate**: among the versions with a priority above 0, the one with
//! the highest priority, the higher version on a tie; a version below the
//! installed one only with a priority of 1000 or more.
//!
//! **Plan**: every installed package whose candidate differs from the
//! installed version is upgraded, unless it is held (`Held`), phased
//! (`Deferred`: Ubuntu gives it to a share of machines over days), or its
//! new version cannot be installed: a dependency no version in the plan
//! satisfies, or a Breaks/Conflicts with a package that stays (`KeptBack`).
//! Dependencies on packages not installed are satisfied by installing
//! their candidates (`new_installs`), as dist-upgrade does. An installed
//! package that stays and that the upgrades would break (a dependency no
//! longer satisfied, or its Breaks/Conflicts now matching) is removed
//! (`removals`), as dist-upgrade's resolver does; when that package is
//! essential, protected or held, the upgrade that breaks it is kept back
//! instead. apt's resolver weighs such choices by scores (priorities,
//! reverse dependencies); this model takes the common outcome, which the
//! tests check against apt.
//!
//! **Security**: an update is a security update when any version after
//! the installed one, up to and including the candidate, comes from a
//! security archive ([`Release::is_security`]): a security fix masked by a
//! newer non-security version still counts, as in unattended-upgrades.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::index::{Available, Index};
use super::preferences::{Pin, PinPackages, PinTarget, ReleaseKey};
use super::relation::Relation;
use super::release::Release;
use super::status::{InstalledPackage, StatusFile};
use super::version::Version;

/// One `Packages` index with where it came from.
#[derive(Debug, Clone, Default)]
pub struct PackageFile {
    /// The Release file's fields (default when the repository has none).
    pub release: Release,
    pub component: String,
    pub architecture: String,
    /// The host it is served from; empty for local repositories.
    pub host: String,
    pub index: Index,
}

/// Everything apt would read.
#[derive(Debug, Clone, Copy)]
pub struct System<'a> {
    pub status: &'a StatusFile,
    pub files: &'a [PackageFile],
    /// The pins of every preferences file, in the order apt reads them.
    pub pins: &'a [Pin],
    pub options: &'a Options,
}

/// The host's settings that change apt's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `dpkg --print-architecture`: `all` packages count as this one.
    pub native_architecture: String,
    /// `APT::Default-Release`, matched against archive and codename.
    pub default_release: Option<String>,
    /// Whether apt defers phased updates here: it does when the machine
    /// has an id (`/etc/machine-id`) and neither
    /// `APT::Get::Always-Include-Phased-Updates` nor
    /// `Update-Manager::Always-Include-Phased-Updates` is set.
    pub phasing: bool,
}

/// Where a version is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub origin: String,
    pub label: String,
    pub suite: String,
    pub codename: String,
    pub component: String,
    pub host: String,
    pub security: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateState {
    /// dist-upgrade installs it.
    Pending,
    /// Held (`apt-mark hold`): left as it is.
    Held,
    /// Phased: this machine may not get it yet (the percentage offered).
    Deferred { percentage: u8 },
    /// The new version cannot be installed now; the reason in words.
    KeptBack { reason: String },
}

/// One installed package with a different candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub name: String,
    pub architecture: String,
    pub installed: Version,
    pub candidate: Version,
    /// The candidate's package files.
    pub origins: Vec<Origin>,
    pub security: bool,
    pub state: UpdateState,
}

impl Update {
    /// A pin of 1000 or more chose an older version.
    pub fn is_downgrade(&self) -> bool {
        self.candidate < self.installed
    }
}

/// A package that is not installed and that an upgrade needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInstall {
    pub name: String,
    pub architecture: String,
    pub version: Version,
    pub origins: Vec<Origin>,
}

/// An installed package the upgrade would remove.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub name: String,
    pub architecture: String,
    pub version: Version,
    /// Why, in words.
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Sorted by name, then architecture.
    pub updates: Vec<Update>,
    pub new_installs: Vec<NewInstall>,
    pub removals: Vec<Removal>,
}

impl Plan {
    /// The updates dist-upgrade would install now.
    pub fn pending(&self) -> impl Iterator<Item = &Update> {
        self.updates
            .iter()
            .filter(|u| u.state == UpdateState::Pending)
    }
}

/// A package is a name and an architecture (`all` counted as native).
type Key = (String, String);

/// One version of a package and the files that carry it.
struct Candidate<'a> {
    version: &'a Version,
    /// The index entry (`None` for an installed version no index has).
    entry: Option<&'a Available>,
    files: Vec<usize>,
    installed: bool,
}

struct Universe<'a> {
    system: System<'a>,
    /// Versions per package, highest first.
    versions: HashMap<Key, Vec<Candidate<'a>>>,
    installed: HashMap<Key, &'a InstalledPackage>,
    /// The index of the candidate in `versions`, for the packages that are
    /// installed or provide something; others are chosen when a dependency
    /// asks for them ([`Universe::candidate_of`]): most of an index never
    /// matters to a host.
    candidates: BTreeMap<Key, usize>,
    /// Virtual package name → who provides it, by the installed version or
    /// by the candidate.
    provided: HashMap<String, Vec<Provider>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProvidedBy {
    Installed,
    Candidate,
}

struct Provider {
    key: Key,
    by: ProvidedBy,
    /// `Provides: name (= version)`.
    version: Option<Version>,
}

/// Computes what dist-upgrade would do.
pub fn plan(system: System<'_>) -> Plan {
    let universe = Universe::new(system);
    let candidates = &universe.candidates;
    let mut updates: BTreeMap<Key, Update> = BTreeMap::new();
    for (key, package) in &universe.installed {
        let Some(installed) = &package.version else {
            continue;
        };
        let Some(&i) = candidates.get(key) else {
            continue;
        };
        let candidate = &universe.versions[key][i];
        if candidate.version == installed {
            continue;
        }
        let state = if package.is_held() {
            UpdateState::Held
        } else if let Some(percentage) = candidate
            .entry
            .and_then(|e| e.phased_update_percentage)
            .filter(|p| *p < 100 && system.options.phasing)
        {
            UpdateState::Deferred { percentage }
        } else {
            UpdateState::Pending
        };
        let security = universe.versions[key].iter().any(|c| {
            c.version > installed
                && c.version <= candidate.version
                && c.files
                    .iter()
                    .any(|&f| system.files[f].release.is_security())
        });
        updates.insert(
            key.clone(),
            Update {
                name: key.0.clone(),
                architecture: package.architecture.clone(),
                installed: installed.clone(),
                candidate: candidate.version.clone(),
                origins: universe.origins(&candidate.files),
                security,
                state,
            },
        );
    }
    let (new_installs, removals) = universe.resolve(&mut updates);
    Plan {
        updates: updates.into_values().collect(),
        new_installs,
        removals,
    }
}

impl<'a> Universe<'a> {
    fn new(system: System<'a>) -> Universe<'a> {
        let native = system.options.native_architecture.as_str();
        let key_of = |name: &str, arch: &str| -> Key {
            let arch = if arch == "all" || arch.is_empty() {
                native
            } else {
                arch
            };
            (name.to_owned(), arch.to_owned())
        };
        let installed: HashMap<Key, &InstalledPackage> = system
            .status
            .installed()
            .map(|p| (key_of(&p.name, &p.architecture), p))
            .collect();
        let mut versions: HashMap<Key, Vec<Candidate<'a>>> = HashMap::new();
        for (f, file) in system.files.iter().enumerate() {
            for entry in &file.index.packages {
                let key = key_of(&entry.name, &entry.architecture);
                let foreign = key.1 != native && !installed.contains_key(&key);
                if foreign {
                    continue;
                }
                let list = versions.entry(key).or_default();
                match list.iter_mut().find(|c| c.version == &entry.version) {
                    Some(same) => {
                        if !same.files.contains(&f) {
                            same.files.push(f);
                        }
                    }
                    None => list.push(Candidate {
                        version: &entry.version,
                        entry: Some(entry),
                        files: vec![f],
                        installed: false,
                    }),
                }
            }
        }
        for (key, package) in &installed {
            let Some(version) = &package.version else {
                continue;
            };
            let list = versions.entry(key.clone()).or_default();
            match list.iter_mut().find(|c| c.version == version) {
                Some(same) => same.installed = true,
                None => list.push(Candidate {
                    version,
                    entry: None,
                    files: Vec::new(),
                    installed: true,
                }),
            }
        }
        for list in versions.values_mut() {
            list.sort_by(|a, b| b.version.cmp(a.version));
        }
        let mut universe = Universe {
            system,
            versions,
            installed,
            candidates: BTreeMap::new(),
            provided: HashMap::new(),
        };
        let candidates: BTreeMap<Key, usize> = universe
            .versions
            .iter()
            .filter(|(key, list)| {
                universe.installed.contains_key(*key)
                    || list
                        .iter()
                        .any(|c| c.entry.is_some_and(|e| !e.relations.provides.is_empty()))
            })
            .filter_map(|(key, list)| universe.candidate(key, list).map(|i| (key.clone(), i)))
            .collect();
        let mut provided: HashMap<String, Vec<Provider>> = HashMap::new();
        let mut add = |key: &Key, by: ProvidedBy, relations: &super::relation::Relations| {
            // An unreadable Provides provides nothing.
            for p in relations.provided().unwrap_or_default() {
                provided.entry(p.name).or_default().push(Provider {
                    key: key.clone(),
                    by,
                    version: p.constraint.map(|(_, v)| v),
                });
            }
        };
        for (key, package) in &universe.installed {
            add(key, ProvidedBy::Installed, &package.relations);
        }
        for (key, &i) in &candidates {
            if let Some(entry) = universe.versions[key][i].entry {
                add(key, ProvidedBy::Candidate, &entry.relations);
            }
        }
        universe.candidates = candidates;
        universe.provided = provided;
        universe
    }

    /// The priority of one version of `name`.
    fn priority(&self, name: &str, candidate: &Candidate<'_>) -> i32 {
        let pins = self.system.pins;
        let specific = pins.iter().find(|pin| {
            matches!(pin.packages, PinPackages::Named(_))
                && pin.packages.includes(name)
                && self.pin_matches_version(pin, candidate)
        });
        if let Some(pin) = specific {
            return pin.priority;
        }
        let files = candidate
            .files
            .iter()
            .map(|&f| self.file_priority(f, candidate));
        let status = candidate.installed.then_some(100);
        files.chain(status).max().unwrap_or(0)
    }

    fn pin_matches_version(&self, pin: &Pin, candidate: &Candidate<'_>) -> bool {
        match &pin.target {
            PinTarget::Version(pattern) => pattern.matches(&candidate.version.to_string()),
            _ => candidate
                .files
                .iter()
                .any(|&f| self.pin_matches_file(pin, f)),
        }
    }

    fn pin_matches_file(&self, pin: &Pin, f: usize) -> bool {
        let file = &self.system.files[f];
        match &pin.target {
            PinTarget::Version(_) => false,
            PinTarget::Origin(host) => host.matches(&file.host),
            PinTarget::Release(conditions) => conditions.iter().all(|(key, pattern)| {
                let release = &file.release;
                let value = match key {
                    ReleaseKey::Archive => &release.suite,
                    ReleaseKey::Codename => &release.codename,
                    ReleaseKey::Version => &release.version,
                    ReleaseKey::Origin => &release.origin,
                    ReleaseKey::Label => &release.label,
                    ReleaseKey::Component => &file.component,
                    ReleaseKey::Architecture => &file.architecture,
                };
                pattern.matches(value)
            }),
        }
    }

    fn file_priority(&self, f: usize, candidate: &Candidate<'_>) -> i32 {
        let general = self.system.pins.iter().find(|pin| {
            matches!(pin.packages, PinPackages::All)
                && match pin.target {
                    PinTarget::Version(_) => self.pin_matches_version(pin, candidate),
                    _ => self.pin_matches_file(pin, f),
                }
        });
        if let Some(pin) = general {
            return pin.priority;
        }
        let release = &self.system.files[f].release;
        let target = self
            .system
            .options
            .default_release
            .as_deref()
            .is_some_and(|t| t == release.suite || t == release.codename);
        if target {
            990
        } else if release.not_automatic && release.but_automatic_upgrades {
            100
        } else if release.not_automatic {
            1
        } else {
            500
        }
    }

    /// The index of the candidate of `key` in its versions, if any.
    fn candidate_of(&self, key: &Key) -> Option<usize> {
        match self.candidates.get(key) {
            Some(&i) => Some(i),
            None => self.candidate(key, self.versions.get(key)?),
        }
    }

    /// The index of the candidate version in `versions`, if any.
    fn candidate(&self, key: &Key, versions: &[Candidate<'_>]) -> Option<usize> {
        let installed = self.installed.get(key).and_then(|p| p.version.as_ref());
        let mut best: Option<(usize, i32)> = None;
        for (i, candidate) in versions.iter().enumerate() {
            let priority = self.priority(&key.0, candidate);
            if priority <= 0 {
                continue;
            }
            if installed.is_some_and(|v| candidate.version < v) && priority < 1000 {
                continue;
            }
            if best.is_none_or(|(_, max)| priority > max) {
                best = Some((i, priority));
            }
        }
        best.map(|(i, _)| i)
    }

    fn origins(&self, files: &[usize]) -> Vec<Origin> {
        files
            .iter()
            .map(|&f| {
                let file = &self.system.files[f];
                Origin {
                    origin: file.release.origin.clone(),
                    label: file.release.label.clone(),
                    suite: file.release.suite.clone(),
                    codename: file.release.codename.clone(),
                    component: file.component.clone(),
                    host: file.host.clone(),
                    security: file.release.is_security(),
                }
            })
            .collect()
    }

    /// Keeps back the pending updates that cannot be installed and removes
    /// the packages they break, until what is left is consistent; returns
    /// the packages to install with them and those to remove.
    fn resolve(&self, updates: &mut BTreeMap<Key, Update>) -> (Vec<NewInstall>, Vec<Removal>) {
        let mut removed: BTreeMap<Key, String> = BTreeMap::new();
        loop {
            let mut state = State {
                universe: self,
                upgraded: updates
                    .iter()
                    .filter(|(_, u)| u.state == UpdateState::Pending)
                    .map(|(k, _)| k.clone())
                    .collect(),
                new: BTreeMap::new(),
                removed: removed.keys().cloned().collect(),
                visiting: HashSet::new(),
                root: None,
            };
            let mut kept: Vec<(Key, String)> = Vec::new();
            let pending: Vec<Key> = state.upgraded.iter().cloned().collect();
            for key in &pending {
                state.root = Some(key.clone());
                if let Err(reason) = state.installable(key) {
                    kept.push((key.clone(), reason));
                }
            }
            let mut broken: Vec<(Key, String)> = Vec::new();
            if kept.is_empty() {
                // Installed packages that stay must keep their dependencies.
                let excluded = state.exclusions_of_changes();
                for (key, package) in &self.installed {
                    if state.upgraded.contains(key) || state.removed.contains(key) {
                        continue;
                    }
                    if let Err((culprit, reason)) = state.still_satisfied(package, &excluded) {
                        // A new package is there for the upgrade that
                        // pulled it in: that upgrade is kept back.
                        let culprit = match state.new.get(&culprit) {
                            Some((_, root)) => root.clone(),
                            None => culprit,
                        };
                        if package.essential || package.is_held() {
                            kept.push((culprit, reason));
                        } else {
                            broken.push((key.clone(), reason));
                        }
                    }
                }
            }
            if kept.is_empty() && broken.is_empty() {
                let new_installs = state
                    .new
                    .into_iter()
                    .map(|(key, (i, _))| {
                        let candidate = &self.versions[&key][i];
                        NewInstall {
                            name: key.0,
                            architecture: candidate
                                .entry
                                .map_or_else(|| key.1.clone(), |e| e.architecture.clone()),
                            version: candidate.version.clone(),
                            origins: self.origins(&candidate.files),
                        }
                    })
                    .collect();
                let removals = removed
                    .into_iter()
                    .filter_map(|(key, reason)| {
                        let package = self.installed.get(&key)?;
                        Some(Removal {
                            name: key.0,
                            architecture: package.architecture.clone(),
                            version: package.version.clone()?,
                            reason,
                        })
                    })
                    .collect();
                return (new_installs, removals);
            }
            let mut progress = !broken.is_empty();
            for (key, reason) in kept {
                if let Some(update) = updates.get_mut(&key) {
                    progress |= update.state == UpdateState::Pending;
                    update.state = UpdateState::KeptBack { reason };
                }
            }
            removed.extend(broken);
            if !progress {
                // Cannot happen by construction (every culprit is a pending
                // update); should it, keeping everything back ends the loop
                // with the most conservative answer instead of spinning.
                for update in updates.values_mut() {
                    if update.state == UpdateState::Pending {
                        update.state = UpdateState::KeptBack {
                            reason: "the upgrade could not be settled".to_owned(),
                        };
                    }
                }
            }
        }
    }
}

/// The system as the plan would leave it.
struct State<'u, 'a> {
    universe: &'u Universe<'a>,
    upgraded: std::collections::BTreeSet<Key>,
    /// Packages to install, with their candidate index and the pending
    /// update that needs them.
    new: BTreeMap<Key, (usize, Key)>,
    /// Installed packages to remove.
    removed: std::collections::BTreeSet<Key>,
    visiting: HashSet<Key>,
    /// The pending update being checked.
    root: Option<Key>,
}

impl State<'_, '_> {
    /// The version of a package after the plan, and its index entry.
    fn version_after(&self, key: &Key) -> Option<(&Version, Option<&Available>)> {
        let u = self.universe;
        if self.upgraded.contains(key) {
            let c = &u.versions[key][u.candidates[key]];
            return Some((c.version, c.entry));
        }
        if let Some(&(i, _)) = self.new.get(key) {
            let c = &u.versions[key][i];
            return Some((c.version, c.entry));
        }
        if self.removed.contains(key) {
            return None;
        }
        let package = u.installed.get(key)?;
        let version = package.version.as_ref()?;
        let entry = u.versions.get(key).and_then(|list| {
            list.iter()
                .find(|c| c.version == version)
                .and_then(|c| c.entry)
        });
        Some((version, entry))
    }

    fn key(&self, relation: &Relation) -> Key {
        let arch = match relation.arch.as_deref() {
            Some(arch) if arch != "any" && arch != "native" => arch,
            _ => &self.universe.system.options.native_architecture,
        };
        (relation.name.clone(), arch.to_owned())
    }

    /// Whether a relation is satisfied after the plan, by the package
    /// itself or by a package providing it.
    fn satisfied(&self, relation: &Relation) -> bool {
        let key = self.key(relation);
        if self
            .version_after(&key)
            .is_some_and(|(v, _)| relation.accepts(v))
        {
            return true;
        }
        let Some(providers) = self.universe.provided.get(&relation.name) else {
            return false;
        };
        providers.iter().any(|provider| {
            let present = match provider.by {
                ProvidedBy::Installed => {
                    !self.upgraded.contains(&provider.key)
                        && !self.new.contains_key(&provider.key)
                        && !self.removed.contains(&provider.key)
                }
                ProvidedBy::Candidate => {
                    self.upgraded.contains(&provider.key) || self.new.contains_key(&provider.key)
                }
            };
            present
                && match (&relation.constraint, &provider.version) {
                    (None, _) => true,
                    (Some(_), Some(version)) => relation.accepts(version),
                    (Some(_), None) => false,
                }
        })
    }

    /// Whether the candidate of `key` (upgraded or new) can be installed:
    /// its dependencies satisfiable, no conflict with what stays.
    fn installable(&mut self, key: &Key) -> Result<(), String> {
        if !self.visiting.insert(key.clone()) {
            // Checked already, or being checked further up (a cycle).
            return Ok(());
        }
        let result = self.check(key);
        if result.is_err() {
            self.visiting.remove(key);
        }
        result
    }

    fn check(&mut self, key: &Key) -> Result<(), String> {
        let Some((version, entry)) = self.version_after(key) else {
            return Err(format!("{} has no installable version", key.0));
        };
        let version = version.clone();
        let Some(entry) = entry else {
            return Ok(());
        };
        let requirements = entry
            .relations
            .requirements()
            .map_err(|e| format!("{} {version}: unreadable dependencies: {e}", key.0))?;
        let exclusions = entry
            .relations
            .exclusions()
            .map_err(|e| format!("{} {version}: unreadable Breaks/Conflicts: {e}", key.0))?;
        for group in &requirements {
            if group.iter().any(|r| self.satisfied(r)) {
                continue;
            }
            if !self.install_one_of(group) {
                let wanted: Vec<String> = group.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{} {version} depends on {}, which cannot be installed",
                    key.0,
                    wanted.join(" | ")
                ));
            }
        }
        // Against what the plan changes; what stays is checked once the
        // plan is known (`still_satisfied`): dist-upgrade removes it.
        for relation in &exclusions {
            let other = self.key(relation);
            let changed = self.upgraded.contains(&other) || self.new.contains_key(&other);
            if other.0 == key.0 || !changed {
                continue;
            }
            if let Some((v, _)) = self.version_after(&other)
                && relation.accepts(v)
            {
                return Err(format!(
                    "{} {version} breaks or conflicts with {} {v}",
                    key.0, other.0
                ));
            }
        }
        Ok(())
    }

    /// Installs the first alternative whose candidate fits and is itself
    /// installable; undoes the attempt when it is not.
    fn install_one_of(&mut self, group: &[Relation]) -> bool {
        for relation in group {
            let key = self.key(relation);
            if self.universe.installed.contains_key(&key) || self.new.contains_key(&key) {
                continue;
            }
            let Some(i) = self.universe.candidate_of(&key) else {
                continue;
            };
            let candidate = &self.universe.versions[&key][i];
            if !relation.accepts(candidate.version) {
                continue;
            }
            let root = self.root.clone().unwrap_or_else(|| key.clone());
            self.new.insert(key.clone(), (i, root));
            if self.installable(&key).is_ok() {
                return true;
            }
            self.new.remove(&key);
        }
        false
    }

    /// The Breaks and Conflicts of what the plan installs, by the name they
    /// exclude.
    fn exclusions_of_changes(&self) -> HashMap<String, Vec<(Key, Relation)>> {
        let mut excluded: HashMap<String, Vec<(Key, Relation)>> = HashMap::new();
        for other in self.upgraded.iter().chain(self.new.keys()) {
            let Some((_, Some(entry))) = self.version_after(other) else {
                continue;
            };
            for relation in entry.relations.exclusions().unwrap_or_default() {
                excluded
                    .entry(relation.name.clone())
                    .or_default()
                    .push((other.clone(), relation));
            }
        }
        excluded
    }

    /// An installed package that stays must keep its dependencies and not
    /// conflict with what the plan installs; when an upgrade breaks it, that
    /// upgrade is the culprit.
    fn still_satisfied(
        &self,
        package: &InstalledPackage,
        excluded: &HashMap<String, Vec<(Key, Relation)>>,
    ) -> Result<(), (Key, String)> {
        let version = package.version.as_ref();
        for (other, relation) in excluded.get(&package.name).into_iter().flatten() {
            if version.is_some_and(|v| relation.accepts(v)) {
                let other_version = self
                    .version_after(other)
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default();
                let reason = format!(
                    "{} {other_version} breaks or conflicts with {}",
                    other.0, package.name
                );
                return Err((other.clone(), reason));
            }
        }
        for relation in package.relations.exclusions().unwrap_or_default() {
            let other = self.key(&relation);
            if !self.upgraded.contains(&other) {
                continue;
            }
            if let Some((v, _)) = self.version_after(&other)
                && relation.accepts(v)
            {
                let reason = format!(
                    "{} stays and breaks or conflicts with {} {v}",
                    package.name, other.0
                );
                return Err((other, reason));
            }
        }
        let Ok(requirements) = package.relations.requirements() else {
            return Ok(());
        };
        for group in &requirements {
            if group.iter().any(|r| self.satisfied(r)) {
                continue;
            }
            let culprit = group
                .iter()
                .map(|r| self.key(r))
                .find(|k| self.upgraded.contains(k));
            if let Some(culprit) = culprit {
                let wanted: Vec<String> = group.iter().map(ToString::to_string).collect();
                return Err((
                    culprit,
                    format!(
                        "{} stays and needs {}, which the upgrade would no longer satisfy",
                        package.name,
                        wanted.join(" | ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::preferences;

    fn file(suite: &str, label: &str, packages: &str) -> PackageFile {
        PackageFile {
            release: Release {
                origin: "Test".into(),
                label: label.into(),
                suite: suite.into(),
                codename: suite.into(),
                ..Release::default()
            },
            component: "main".into(),
            architecture: "amd64".into(),
            host: "deb.example.org".into(),
            index: Index::parse(packages.as_bytes()).unwrap(),
        }
    }

    fn status(entries: &str) -> StatusFile {
        StatusFile::parse(entries.as_bytes()).unwrap()
    }

    fn options() -> Options {
        Options {
            native_architecture: "amd64".into(),
            default_release: None,
            phasing: true,
        }
    }

    fn run(status: &StatusFile, files: &[PackageFile], prefs: &str, options: &Options) -> Plan {
        let pins = preferences::parse(prefs.as_bytes()).unwrap();
        plan(System {
            status,
            files,
            pins: &pins,
            options,
        })
    }

    fn installed(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: all\n{extra}\n"
        )
    }

    fn offered(name: &str, version: &str, extra: &str) -> String {
        format!("Package: {name}\nVersion: {version}\nArchitecture: all\n{extra}\n")
    }

    #[test]
    fn versioned_provides_satisfy_versioned_dependencies() {
        let status =
            status(&(installed("app", "1", "") + &installed("impl", "1", "Provides: api (= 2)\n")));
        let files = [file(
            "stable",
            "Test",
            &(offered("app", "2", "Depends: api (>= 2)\n")
                + &offered("other", "2", "Depends: api (>= 3)\n")),
        )];
        let plan = run(&status, &files, "", &options());
        assert_eq!(plan.pending().count(), 1);
        let status_with_other = StatusFile::parse(
            (installed("other", "1", "") + &installed("impl", "1", "Provides: api (= 2)\n"))
                .as_bytes(),
        )
        .unwrap();
        let plan = run(&status_with_other, &files, "", &options());
        assert!(matches!(
            plan.updates[0].state,
            UpdateState::KeptBack { .. }
        ));
    }

    #[test]
    fn general_pins_default_release_and_phasing() {
        let status = status(&(installed("a", "1", "") + &installed("b", "1", "")));
        let files = [
            file(
                "stable",
                "Test",
                &(offered("a", "2", "") + &offered("b", "2", "Phased-Update-Percentage: 30\n")),
            ),
            file("testing", "Test", &offered("a", "3", "")),
        ];
        // Both at 500: the higher version wins.
        let plan = run(&status, &files, "", &options());
        assert_eq!(plan.updates[0].candidate.to_string(), "3");
        assert_eq!(
            plan.updates[1].state,
            UpdateState::Deferred { percentage: 30 }
        );
        // A general pin lowers testing below the installed version's 100.
        let plan = run(
            &status,
            &files,
            "Package: *\nPin: release a=testing\nPin-Priority: 50\n",
            &options(),
        );
        assert_eq!(plan.updates[0].candidate.to_string(), "2");
        // The target release wins over a higher version elsewhere.
        let stable = Options {
            default_release: Some("stable".into()),
            phasing: false,
            ..options()
        };
        let plan = run(&status, &files, "", &stable);
        assert_eq!(plan.updates[0].candidate.to_string(), "2");
        assert_eq!(
            plan.updates[1].state,
            UpdateState::Pending,
            "no phasing here"
        );
    }

    #[test]
    fn dependency_cycles_and_breaks_between_upgrades() {
        let status = status(&(installed("x", "1", "") + &installed("y", "1", "")));
        let files = [file(
            "stable",
            "Test",
            &(offered("x", "2", "Depends: y (>= 2)\n") + &offered("y", "2", "Depends: x (>= 2)\n")),
        )];
        let plan = run(&status, &files, "", &options());
        assert_eq!(plan.pending().count(), 2, "{:?}", plan.updates);
        let files = [file(
            "stable",
            "Test",
            &(offered("x", "2", "Breaks: y (>= 2)\n") + &offered("y", "2", "")),
        )];
        let plan = run(&status, &files, "", &options());
        assert!(
            plan.updates
                .iter()
                .any(|u| matches!(u.state, UpdateState::KeptBack { .. })),
            "{:?}",
            plan.updates
        );
    }

    #[test]
    fn essential_packages_are_not_removed() {
        let status = status(
            &(installed("core", "1", "")
                + &installed("init", "1", "Essential: yes\nDepends: core (<< 2)\n")),
        );
        let files = [file("stable", "Test", &offered("core", "2", ""))];
        let plan = run(&status, &files, "", &options());
        assert!(plan.removals.is_empty());
        assert!(matches!(
            plan.updates[0].state,
            UpdateState::KeptBack { .. }
        ));
    }

    #[test]
    fn a_new_package_that_breaks_an_essential_one_keeps_its_upgrade_back() {
        // Found by fuzzing: the culprit was the new package, which is no
        // update, and the plan never settled.
        let status = status(&(installed("a", "1", "") + &installed("e", "1", "Essential: yes\n")));
        let files = [file(
            "stable",
            "Test",
            &(offered("a", "2", "Depends: d\n") + &offered("d", "1", "Conflicts: e\n")),
        )];
        let plan = run(&status, &files, "", &options());
        assert!(plan.new_installs.is_empty());
        assert!(matches!(
            plan.updates[0].state,
            UpdateState::KeptBack { .. }
        ));
    }
}
