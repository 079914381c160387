//! What `dnf upgrade` would do, and what `dnf check-update` and
//! `dnf updateinfo list` list, computed from what dnf reads: the installed
//! packages, each enabled repository's `primary.xml` and `updateinfo.xml`,
//! the exclude patterns and the versionlock list. [`super::dnf`] turns the
//! files into these inputs.
//!
//! **Candidate** (dnf 4, libsolv): for each installed `name.arch`, the
//! highest EVR offered for that name in an architecture the machine can
//! install ([`compatible_arches`]) and compatible with the installed one:
//! the same, or either of them `noarch` (dnf lets a package switch between
//! `noarch` and an architecture). On an EVR tie, the installed arch wins,
//! then the machine's own. Among the repositories offering a name, only
//! those of the best (lowest) `priority` count, as dnf's
//! `upgrades_by_priority`. An update exists when the candidate is newer than
//! the installed version; for install-only packages (kernels, installed side
//! by side) newer than the newest installed one.
//!
//! **Held**: a package that `excludepkgs` (global or of its repository) or
//! the versionlock list hides is not offered. When the best version
//! without those rules would have been an update and no allowed version is,
//! the update is listed with [`UpdateState::Excluded`] or
//! [`UpdateState::Locked`]; when an older allowed version is still newer
//! than the installed one, that version is the pending update.
//!
//! **Obsoletes**: an allowed package whose `Obsoletes:` matches an
//! installed package's name and EVR replaces it (dnf check-update's
//! "Obsoleting Packages"); per installed package and obsoleting
//! `name.arch`, the highest EVR is kept.
//!
//! **Advisories**: an advisory applies to an installed package when it
//! lists the same name and arch at a newer EVR than the newest installed
//! (`dnf updateinfo list`). An update carries the advisories whose package
//! EVR is after the installed one and no later than the candidate; it is a
//! security update when one of them is of type `security`.
//!
//! Not modelled: dependencies (dnf skips an update whose requirements
//! cannot be met, with `best=False`), modular filtering, obsoletes matched
//! through an installed package's other provides, and `installonly_limit`
//! removals.

use std::collections::BTreeMap;

use super::header::InstalledRpm;
use super::primary::RepoPackage;
use super::updateinfo::{Advisory, AdvisoryKind};
use super::version::Evr;

/// dnf's default repository priority (lower numbers win).
pub const DEFAULT_PRIORITY: i64 = 99;

/// Names installed side by side rather than upgraded. dnf's own default
/// list names provides (`installonlypkg(kernel)`, ...); these are the
/// packages that carry them on Fedora and RHEL.
pub const DEFAULT_INSTALLONLY: &[&str] = &[
    "kernel",
    "kernel-core",
    "kernel-modules",
    "kernel-modules-extra",
    "kernel-devel",
];

/// One enabled repository, parsed.
#[derive(Debug, Clone, Default)]
pub struct Repository {
    pub id: String,
    /// `priority=`; [`DEFAULT_PRIORITY`] when not set.
    pub priority: i64,
    /// `excludepkgs=` (or `exclude=`) of this repository: globs.
    pub excludes: Vec<String>,
    pub packages: Vec<RepoPackage>,
    pub advisories: Vec<Advisory>,
}

/// One line of the versionlock list (python3-dnf-plugin-versionlock's
/// `versionlock.list`): `name-epoch:version-release.arch` with globs;
/// `!` in front excludes the versions it matches instead of locking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub pattern: String,
    pub exclude: bool,
}

impl Lock {
    /// The entries of a versionlock list; comments and blank lines are
    /// skipped.
    pub fn parse_list(text: &str) -> Vec<Lock> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| match line.strip_prefix('!') {
                Some(pattern) => Lock {
                    pattern: pattern.trim().to_owned(),
                    exclude: true,
                },
                None => Lock {
                    pattern: line.to_owned(),
                    exclude: false,
                },
            })
            .filter(|lock| !lock.pattern.is_empty())
            .collect()
    }

    /// The name part of the pattern (what `name-[epoch:]version-release`
    /// leaves once the last two `-` parts are cut), if it has one.
    pub fn name(&self) -> Option<&str> {
        let (rest, _release) = self.pattern.rsplit_once('-')?;
        let (name, _version) = rest.rsplit_once('-')?;
        (!name.is_empty()).then_some(name)
    }

    fn matches(&self, package: &RepoPackage) -> bool {
        let evr = &package.evr;
        let release = evr.release().unwrap_or("");
        let text = if self.pattern.contains(':') {
            format!(
                "{}-{}:{}-{}.{}",
                package.name,
                evr.epoch(),
                evr.version(),
                release,
                package.arch
            )
        } else {
            format!(
                "{}-{}-{}.{}",
                package.name,
                evr.version(),
                release,
                package.arch
            )
        };
        glob_matches(&self.pattern, &text)
    }
}

/// The machine's settings that change dnf's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The machine's architecture (`x86_64`, `aarch64`, `i686`, ...).
    pub arch: String,
    /// `excludepkgs=` of `[main]` in dnf.conf: globs, for every repository.
    pub excludes: Vec<String>,
    pub locks: Vec<Lock>,
    /// Names installed side by side ([`DEFAULT_INSTALLONLY`] and more).
    pub installonly: Vec<String>,
    /// `obsoletes=` of dnf.conf (on by default).
    pub obsoletes: bool,
}

impl Options {
    /// dnf's defaults on a machine of this architecture.
    pub fn new(arch: &str) -> Options {
        Options {
            arch: arch.to_owned(),
            excludes: Vec::new(),
            locks: Vec::new(),
            installonly: DEFAULT_INSTALLONLY
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            obsoletes: true,
        }
    }
}

/// The architectures whose packages a machine of `arch` installs, its own
/// first (dnf's arch map, for the architectures fleets run).
pub fn compatible_arches(arch: &str) -> Vec<&str> {
    let mut arches: Vec<&str> = match arch {
        "x86_64" | "amd64" => vec!["x86_64", "athlon", "i686", "i586", "i486", "i386"],
        "x86_64_v2" => vec![
            "x86_64_v2",
            "x86_64",
            "athlon",
            "i686",
            "i586",
            "i486",
            "i386",
        ],
        "i686" => vec!["i686", "i586", "i486", "i386"],
        "aarch64" | "arm64" => vec!["aarch64"],
        "ppc64le" => vec!["ppc64le"],
        "s390x" => vec!["s390x"],
        other => vec![other],
    };
    arches.push("noarch");
    arches
}

/// Everything dnf would read, parsed.
#[derive(Debug, Clone, Copy)]
pub struct System<'a> {
    pub installed: &'a [InstalledRpm],
    /// The enabled repositories.
    pub repositories: &'a [Repository],
    pub options: &'a Options,
}

/// Why an update is or is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateState {
    /// `dnf upgrade` installs it.
    Pending,
    /// An `excludepkgs` glob hides every newer version.
    Excluded { pattern: String },
    /// The versionlock list holds the package at its version.
    Locked { pattern: String },
}

/// An advisory as an update or an installed package sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryRef {
    pub id: String,
    pub kind: AdvisoryKind,
    pub severity: String,
    pub cves: Vec<String>,
}

impl AdvisoryRef {
    fn of(advisory: &Advisory) -> AdvisoryRef {
        AdvisoryRef {
            id: advisory.id.clone(),
            kind: advisory.kind,
            severity: advisory.severity.clone(),
            cves: advisory.cves().map(str::to_owned).collect(),
        }
    }
}

/// An installed `name.arch` with a newer version offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub name: String,
    /// The installed package's arch.
    pub arch: String,
    /// The installed version (the newest, for install-only packages).
    pub installed: Evr,
    pub candidate: Evr,
    /// Differs from `arch` when the package switches to or from `noarch`.
    pub candidate_arch: String,
    /// The ids of the repositories offering the candidate.
    pub repositories: Vec<String>,
    /// Installed beside the old version rather than replacing it.
    pub installonly: bool,
    /// Advisories fixed by versions after the installed one, up to the
    /// candidate; sorted by id.
    pub advisories: Vec<AdvisoryRef>,
    pub security: bool,
    pub state: UpdateState,
}

/// An offered package that replaces an installed one by `Obsoletes:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obsoletion {
    pub name: String,
    pub arch: String,
    pub evr: Evr,
    pub repositories: Vec<String>,
    pub obsoleted_name: String,
    pub obsoleted_arch: String,
    pub obsoleted_evr: Evr,
}

/// An advisory that applies to an installed package (a line of
/// `dnf updateinfo list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applicable {
    pub advisory: AdvisoryRef,
    pub name: String,
    pub evr: Evr,
    pub arch: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sorted by name, then arch.
    pub updates: Vec<Update>,
    /// Sorted by obsoleting name and arch, then the obsoleted name.
    pub obsoletions: Vec<Obsoletion>,
    /// Sorted by advisory id, then package name and arch.
    pub advisories: Vec<Applicable>,
}

impl Plan {
    /// The updates `dnf upgrade` installs.
    pub fn pending(&self) -> impl Iterator<Item = &Update> {
        self.updates
            .iter()
            .filter(|u| u.state == UpdateState::Pending)
    }

    /// Whether any pending update fixes a security advisory.
    pub fn has_security(&self) -> bool {
        self.pending().any(|u| u.security)
    }
}

/// Why dnf would not offer a package.
#[derive(Debug, Clone)]
enum Hidden {
    Excluded(String),
    Locked(String),
}

/// One offered package in a compatible architecture.
struct Offer<'a> {
    repository: usize,
    package: &'a RepoPackage,
    hidden: Option<Hidden>,
}

struct Universe<'a> {
    system: System<'a>,
    arches: Vec<&'a str>,
    /// Offers per package name.
    offers: BTreeMap<&'a str, Vec<Offer<'a>>>,
}

/// Computes what `dnf upgrade` would do.
pub fn plan(system: System<'_>) -> Plan {
    let universe = Universe::new(system);
    let installed = newest_installed(system.installed);
    let mut plan = Plan::default();
    for ((name, arch), evr) in &installed {
        if let Some(update) = universe.update(name, arch, evr) {
            plan.updates.push(update);
        }
    }
    if system.options.obsoletes {
        plan.obsoletions = universe.obsoletions(system.installed);
    }
    plan.advisories = applicable(system.repositories, &installed);
    plan
}

/// The newest installed EVR of every `name.arch` (signing keys and
/// packages without an arch are not software dnf upgrades).
fn newest_installed(installed: &[InstalledRpm]) -> BTreeMap<(&str, &str), Evr> {
    let mut newest: BTreeMap<(&str, &str), Evr> = BTreeMap::new();
    for package in installed {
        let Some(arch) = package.arch.as_deref() else {
            continue;
        };
        if package.is_gpg_pubkey() {
            continue;
        }
        let evr = package.evr();
        newest
            .entry((package.name.as_str(), arch))
            .and_modify(|known| {
                if evr > *known {
                    *known = evr.clone();
                }
            })
            .or_insert(evr);
    }
    newest
}

/// Whether a package of `offered` arch can replace one of `installed`.
fn arch_follows(installed: &str, offered: &str) -> bool {
    installed == offered || installed == "noarch" || offered == "noarch"
}

impl<'a> Universe<'a> {
    fn new(system: System<'a>) -> Universe<'a> {
        let arches = compatible_arches(&system.options.arch);
        let mut offers: BTreeMap<&str, Vec<Offer<'_>>> = BTreeMap::new();
        for (index, repository) in system.repositories.iter().enumerate() {
            for package in &repository.packages {
                if !arches.contains(&package.arch.as_str()) {
                    continue;
                }
                offers.entry(&package.name).or_default().push(Offer {
                    repository: index,
                    package,
                    hidden: hidden(system.options, repository, package),
                });
            }
        }
        Universe {
            system,
            arches,
            offers,
        }
    }

    /// The offers of `name` that dnf sees: only those of the repositories
    /// with the best priority among those offering the name (counting
    /// hidden offers or not).
    fn visible(&self, name: &str, with_hidden: bool) -> Vec<&Offer<'a>> {
        let Some(offers) = self.offers.get(name) else {
            return Vec::new();
        };
        let usable: Vec<&Offer<'_>> = offers
            .iter()
            .filter(|o| with_hidden || o.hidden.is_none())
            .collect();
        let priority = |o: &Offer<'_>| self.system.repositories[o.repository].priority;
        let Some(best) = usable.iter().map(|o| priority(o)).min() else {
            return Vec::new();
        };
        usable.into_iter().filter(|o| priority(o) == best).collect()
    }

    /// The best offer of `name` for an installed `arch`: highest EVR, then
    /// the installed arch, then the machine's order of arches.
    fn best<'o>(&self, offers: &[&'o Offer<'a>], arch: &str) -> Option<&'o Offer<'a>> {
        let rank = |o: &Offer<'_>| {
            let arch_rank = if o.package.arch == arch {
                0
            } else {
                1 + self
                    .arches
                    .iter()
                    .position(|a| *a == o.package.arch)
                    .unwrap_or(self.arches.len())
            };
            std::cmp::Reverse(arch_rank)
        };
        offers
            .iter()
            .copied()
            .filter(|o| arch_follows(arch, &o.package.arch))
            .max_by(|a, b| {
                a.package
                    .evr
                    .cmp(&b.package.evr)
                    .then_with(|| rank(a).cmp(&rank(b)))
            })
    }

    fn update(&self, name: &str, arch: &str, installed: &Evr) -> Option<Update> {
        let allowed = self.visible(name, false);
        let everything = self.visible(name, true);
        let (offer, offers, state) = match self.best(&allowed, arch) {
            Some(offer) if offer.package.evr > *installed => {
                (offer, &allowed, UpdateState::Pending)
            }
            _ => {
                let offer = self.best(&everything, arch)?;
                if offer.package.evr <= *installed {
                    return None;
                }
                let state = match &offer.hidden {
                    Some(Hidden::Excluded(pattern)) => UpdateState::Excluded {
                        pattern: pattern.clone(),
                    },
                    Some(Hidden::Locked(pattern)) => UpdateState::Locked {
                        pattern: pattern.clone(),
                    },
                    // The best allowed offer is no newer, so the best of
                    // all, being newer, is hidden.
                    None => return None,
                };
                (offer, &everything, state)
            }
        };
        let candidate = &offer.package;
        let repositories = self.repositories_of(offers, candidate);
        let advisories =
            self.advisories_between(name, &[arch, &candidate.arch], installed, &candidate.evr);
        let security = advisories.iter().any(|a| a.kind == AdvisoryKind::Security);
        Some(Update {
            name: name.to_owned(),
            arch: arch.to_owned(),
            installed: installed.clone(),
            candidate: candidate.evr.clone(),
            candidate_arch: candidate.arch.clone(),
            repositories,
            installonly: self.system.options.installonly.iter().any(|n| n == name),
            advisories,
            security,
            state,
        })
    }

    /// The ids of the repositories among `offers` carrying `package`'s
    /// arch and EVR, in the order given.
    fn repositories_of(&self, offers: &[&Offer<'_>], package: &RepoPackage) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for offer in offers {
            if offer.package.arch == package.arch && offer.package.evr == package.evr {
                let id = &self.system.repositories[offer.repository].id;
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }

    /// Advisories (of every repository, once per id) listing `name` in one
    /// of `arches` at an EVR in `(after, upto]`.
    fn advisories_between(
        &self,
        name: &str,
        arches: &[&str],
        after: &Evr,
        upto: &Evr,
    ) -> Vec<AdvisoryRef> {
        let mut found: BTreeMap<&str, AdvisoryRef> = BTreeMap::new();
        for advisory in self.system.repositories.iter().flat_map(|r| &r.advisories) {
            let fixes = advisory.packages.iter().any(|p| {
                p.name == name
                    && arches.contains(&p.arch.as_str())
                    && p.evr > *after
                    && p.evr <= *upto
            });
            if fixes {
                found
                    .entry(advisory.id.as_str())
                    .or_insert_with(|| AdvisoryRef::of(advisory));
            }
        }
        found.into_values().collect()
    }

    fn obsoletions(&self, installed: &[InstalledRpm]) -> Vec<Obsoletion> {
        let installed: Vec<(&InstalledRpm, &str, Evr)> = installed
            .iter()
            .filter(|p| !p.is_gpg_pubkey())
            .filter_map(|p| Some((p, p.arch.as_deref()?, p.evr())))
            .collect();
        let is_installed = |package: &RepoPackage| {
            installed.iter().any(|(p, arch, evr)| {
                p.name == package.name && *arch == package.arch && *evr == package.evr
            })
        };
        // (obsoleting name, arch, obsoleted name, arch, EVR) → the best.
        type Key<'k> = (&'k str, &'k str, &'k str, &'k str, String);
        let mut found: BTreeMap<Key<'_>, Obsoletion> = BTreeMap::new();
        for name in self.offers.keys() {
            let offers = self.visible(name, false);
            for offer in &offers {
                let package = offer.package;
                if package.obsoletes.is_empty() || is_installed(package) {
                    continue;
                }
                for (old, old_arch, old_evr) in &installed {
                    if old.name == package.name
                        || !package
                            .obsoletes
                            .iter()
                            .any(|d| d.matches(&old.name, old_evr))
                    {
                        continue;
                    }
                    let key = (
                        package.name.as_str(),
                        package.arch.as_str(),
                        old.name.as_str(),
                        *old_arch,
                        old_evr.to_string(),
                    );
                    let better = found.get(&key).is_none_or(|known| package.evr > known.evr);
                    if better {
                        let repositories = self.repositories_of(&offers, package);
                        found.insert(
                            key,
                            Obsoletion {
                                name: package.name.clone(),
                                arch: package.arch.clone(),
                                evr: package.evr.clone(),
                                repositories,
                                obsoleted_name: old.name.clone(),
                                obsoleted_arch: (*old_arch).to_owned(),
                                obsoleted_evr: old_evr.clone(),
                            },
                        );
                    }
                }
            }
        }
        found.into_values().collect()
    }
}

/// Why dnf would not see `package` of `repository`, if it would not.
fn hidden(options: &Options, repository: &Repository, package: &RepoPackage) -> Option<Hidden> {
    if let Some(pattern) = options
        .excludes
        .iter()
        .chain(&repository.excludes)
        .find(|pattern| exclude_matches(pattern, package))
    {
        return Some(Hidden::Excluded(pattern.clone()));
    }
    if let Some(lock) = options
        .locks
        .iter()
        .find(|l| l.exclude && l.matches(package))
    {
        return Some(Hidden::Excluded(format!("!{}", lock.pattern)));
    }
    // A locked name keeps only the versions its lock lines match.
    let mut locking = options
        .locks
        .iter()
        .filter(|l| !l.exclude && l.name().is_some_and(|n| glob_matches(n, &package.name)))
        .peekable();
    let first = locking.peek().map(|l| l.pattern.clone());
    if let Some(pattern) = first
        && !locking.any(|l| l.matches(package))
    {
        return Some(Hidden::Locked(pattern));
    }
    None
}

/// Whether an `excludepkgs` glob names `package`: dnf matches it against
/// the name and the usual NEVRA forms.
fn exclude_matches(pattern: &str, package: &RepoPackage) -> bool {
    let evr = &package.evr;
    let (name, arch) = (&package.name, &package.arch);
    let (version, release) = (evr.version(), evr.release().unwrap_or(""));
    glob_matches(pattern, name)
        || [
            format!("{name}.{arch}"),
            format!("{name}-{version}"),
            format!("{name}-{version}-{release}"),
            format!("{name}-{version}-{release}.{arch}"),
            format!("{name}-{}:{version}-{release}.{arch}", evr.epoch()),
        ]
        .iter()
        .any(|form| glob_matches(pattern, form))
}

/// `dnf updateinfo list`: advisories listing an installed `name.arch` at a
/// newer EVR than the newest installed; once per advisory id and package.
fn applicable(
    repositories: &[Repository],
    installed: &BTreeMap<(&str, &str), Evr>,
) -> Vec<Applicable> {
    let mut found: BTreeMap<(String, String, String, String), Applicable> = BTreeMap::new();
    for advisory in repositories.iter().flat_map(|r| &r.advisories) {
        for package in &advisory.packages {
            let newer = installed
                .get(&(package.name.as_str(), package.arch.as_str()))
                .is_some_and(|evr| package.evr > *evr);
            if newer {
                let key = (
                    advisory.id.clone(),
                    package.name.clone(),
                    package.arch.clone(),
                    package.evr.to_string(),
                );
                found.entry(key).or_insert_with(|| Applicable {
                    advisory: AdvisoryRef::of(advisory),
                    name: package.name.clone(),
                    evr: package.evr.clone(),
                    arch: package.arch.clone(),
                });
            }
        }
    }
    found.into_values().collect()
}

/// fnmatch(3) globs as dnf uses them: `*`, `?`, `[...]` (with ranges and
/// `!` or `^` to negate) and `\` to quote. Runs in time proportional to
/// the product of the lengths, whatever the pattern.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it now covers up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match single(&pattern, p, text[t]) {
                Token::Star => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                Token::Matched(next) => {
                    p = next;
                    t += 1;
                    continue;
                }
                Token::Failed => {}
            }
        }
        match star {
            Some((star_at, covered)) => {
                p = star_at + 1;
                t = covered + 1;
                star = Some((star_at, covered + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

enum Token {
    Star,
    /// The pattern element at the position matched; the next one starts
    /// at this index.
    Matched(usize),
    Failed,
}

/// Matches the pattern element at `p` against one character.
fn single(pattern: &[char], p: usize, c: char) -> Token {
    match pattern[p] {
        '*' => Token::Star,
        '?' => Token::Matched(p + 1),
        '\\' if p + 1 < pattern.len() => {
            if pattern[p + 1] == c {
                Token::Matched(p + 2)
            } else {
                Token::Failed
            }
        }
        '[' => match class(pattern, p, c) {
            Some((true, next)) => Token::Matched(next),
            Some((false, _)) => Token::Failed,
            // Not a class: a literal `[`.
            None if c == '[' => Token::Matched(p + 1),
            None => Token::Failed,
        },
        literal if literal == c => Token::Matched(p + 1),
        _ => Token::Failed,
    }
}

/// A `[...]` class starting at `open`: whether `c` is in it and where the
/// pattern continues; `None` when the class is not closed.
fn class(pattern: &[char], open: usize, c: char) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *pattern.get(i)?;
        if current == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|e| *e != ']') {
            let end = *pattern.get(i + 2)?;
            matched |= current <= c && c <= end;
            i += 3;
        } else {
            matched |= current == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpm::primary::{Comparison, Condition, Dependency};
    use crate::rpm::updateinfo::{AdvisoryPackage, Reference};

    fn evr(text: &str) -> Evr {
        Evr::parse(text).expect("evr")
    }

    fn offered(name: &str, text: &str, arch: &str) -> RepoPackage {
        RepoPackage {
            name: name.into(),
            arch: arch.into(),
            evr: evr(text),
            source_rpm: None,
            location: None,
            obsoletes: Vec::new(),
        }
    }

    fn installed(name: &str, text: &str, arch: &str) -> InstalledRpm {
        let evr = evr(text);
        InstalledRpm {
            name: name.into(),
            epoch: Some(evr.epoch()),
            version: evr.version().into(),
            release: evr.release().unwrap_or("").into(),
            arch: Some(arch.into()),
            source_rpm: None,
            install_time: None,
        }
    }

    fn repo(id: &str, packages: Vec<RepoPackage>) -> Repository {
        Repository {
            id: id.into(),
            priority: DEFAULT_PRIORITY,
            excludes: Vec::new(),
            packages,
            advisories: Vec::new(),
        }
    }

    fn advisory(id: &str, kind: AdvisoryKind, packages: &[(&str, &str, &str)]) -> Advisory {
        Advisory {
            id: id.into(),
            kind,
            kind_text: String::new(),
            severity: "Important".into(),
            title: String::new(),
            issued: String::new(),
            references: vec![Reference {
                kind: "cve".into(),
                id: format!("CVE-{id}"),
                href: String::new(),
                title: String::new(),
            }],
            packages: packages
                .iter()
                .map(|(name, text, arch)| AdvisoryPackage {
                    name: (*name).into(),
                    evr: evr(text),
                    arch: (*arch).into(),
                    src: None,
                    filename: None,
                })
                .collect(),
        }
    }

    fn run(installed: &[InstalledRpm], repositories: &[Repository], options: &Options) -> Plan {
        plan(System {
            installed,
            repositories,
            options,
        })
    }

    /// `name arch installed -> candidate.arch [repos] state`, one per update.
    fn summary(plan: &Plan) -> Vec<String> {
        plan.updates
            .iter()
            .map(|u| {
                format!(
                    "{} {} {} -> {}.{} {:?} {:?}",
                    u.name,
                    u.arch,
                    u.installed,
                    u.candidate,
                    u.candidate_arch,
                    u.repositories,
                    u.state
                )
            })
            .collect()
    }

    #[test]
    fn candidates_follow_dnf_rules() {
        let installed = [
            installed("plain", "1.0-1", "x86_64"),
            installed("epoch", "5.0-1", "noarch"),
            installed("tonoarch", "1.0-1", "x86_64"),
            installed("kernel", "6.1-1", "x86_64"),
            installed("kernel", "6.3-1", "x86_64"),
            installed("current", "2.0-1", "noarch"),
            installed("multi", "1.0-1", "i686"),
            installed("gpg-pubkey", "abc-def", "x86_64"),
        ];
        let mut gpg = installed[7].clone();
        gpg.arch = None;
        let installed = [&installed[..7], &[gpg]].concat();
        let main = repo(
            "main",
            vec![
                offered("plain", "1.1-1", "x86_64"),
                offered("plain", "1.2-1", "x86_64"),
                // Another architecture family is never a candidate.
                offered("plain", "9.0-1", "aarch64"),
                offered("epoch", "1:1.0-1", "noarch"),
                offered("tonoarch", "1.5-1", "noarch"),
                offered("kernel", "6.2-1", "x86_64"),
                offered("current", "2.0-1", "noarch"),
                offered("multi", "1.1-1", "x86_64"),
                offered("multi", "1.1-1", "i686"),
                offered("notinstalled", "1.0-1", "noarch"),
            ],
        );
        let extra = repo(
            "extra",
            vec![
                offered("plain", "1.2-1", "x86_64"),
                offered("kernel", "6.4-1", "x86_64"),
            ],
        );
        let plan = run(&installed, &[main, extra], &Options::new("x86_64"));
        assert_eq!(
            summary(&plan),
            [
                "epoch noarch 5.0-1 -> 1:1.0-1.noarch [\"main\"] Pending",
                "kernel x86_64 6.3-1 -> 6.4-1.x86_64 [\"extra\"] Pending",
                "multi i686 1.0-1 -> 1.1-1.i686 [\"main\"] Pending",
                "plain x86_64 1.0-1 -> 1.2-1.x86_64 [\"main\", \"extra\"] Pending",
                "tonoarch x86_64 1.0-1 -> 1.5-1.noarch [\"main\"] Pending",
            ]
        );
        assert!(plan.updates[1].installonly && !plan.updates[0].installonly);
        assert!(plan.obsoletions.is_empty() && plan.advisories.is_empty());
    }

    #[test]
    fn the_best_priority_hides_other_repositories() {
        let installed = [installed("plain", "1.0-1", "noarch")];
        let mut preferred = repo("preferred", vec![offered("plain", "1.1-1", "noarch")]);
        preferred.priority = 10;
        let other = repo("other", vec![offered("plain", "2.0-1", "noarch")]);
        let plan = run(
            &installed,
            &[other.clone(), preferred],
            &Options::new("x86_64"),
        );
        assert_eq!(
            summary(&plan),
            ["plain noarch 1.0-1 -> 1.1-1.noarch [\"preferred\"] Pending"]
        );
        // A priority that does not carry the name does not hide it.
        let unrelated = Repository {
            priority: 1,
            ..repo("unrelated", vec![offered("other", "1-1", "noarch")])
        };
        let plan = run(&installed, &[other, unrelated], &Options::new("x86_64"));
        assert_eq!(plan.updates[0].candidate, evr("2.0-1"));
    }

    #[test]
    fn excluded_and_locked_packages_are_held() {
        let installed = [
            installed("excluded", "1.0-1", "noarch"),
            installed("partly", "1.0-1", "noarch"),
            installed("locked", "1.0-1", "noarch"),
            installed("banned", "1.0-1", "noarch"),
        ];
        let mut main = repo(
            "main",
            vec![
                offered("excluded", "2.0-1", "noarch"),
                offered("partly", "1.5-1", "noarch"),
                offered("partly", "2.0-1", "noarch"),
                offered("locked", "1.1-1", "noarch"),
                offered("locked", "2.0-1", "noarch"),
                offered("banned", "2.0-1", "noarch"),
            ],
        );
        main.excludes = vec!["exclu*".into(), "partly-2.0".into()];
        let mut options = Options::new("x86_64");
        options.locks =
            Lock::parse_list("# versionlock.list\nlocked-0:1.1-1.*\n\n!banned-0:2.0-1.noarch\n");
        let plan = run(&installed, &[main], &options);
        assert_eq!(
            summary(&plan),
            [
                "banned noarch 1.0-1 -> 2.0-1.noarch [\"main\"] Excluded { pattern: \"!banned-0:2.0-1.noarch\" }",
                "excluded noarch 1.0-1 -> 2.0-1.noarch [\"main\"] Excluded { pattern: \"exclu*\" }",
                "locked noarch 1.0-1 -> 1.1-1.noarch [\"main\"] Pending",
                "partly noarch 1.0-1 -> 1.5-1.noarch [\"main\"] Pending",
            ]
        );
        // Locked at the installed version: the newer one is held.
        options.locks = Lock::parse_list("locked-0:1.0-1.*");
        let plan = run(
            &installed[2..3],
            &[repo("main", vec![offered("locked", "2.0-1", "noarch")])],
            &options,
        );
        assert_eq!(
            plan.updates[0].state,
            UpdateState::Locked {
                pattern: "locked-0:1.0-1.*".into()
            }
        );
        assert_eq!(plan.pending().count(), 0);
    }

    #[test]
    fn advisories_up_to_the_candidate_classify_the_update() {
        let installed = [
            installed("lib", "1.0-1", "x86_64"),
            installed("app", "1.0-1", "noarch"),
        ];
        let mut main = repo(
            "main",
            vec![
                offered("lib", "1.1-1", "x86_64"),
                offered("app", "1.1-1", "noarch"),
            ],
        );
        main.advisories = vec![
            advisory(
                "SEC-1",
                AdvisoryKind::Security,
                &[("lib", "1.1-1", "x86_64")],
            ),
            // Fixed only by a version not offered yet: applies, but is not
            // part of the update.
            advisory(
                "SEC-2",
                AdvisoryKind::Security,
                &[("app", "1.2-1", "noarch")],
            ),
            advisory("BUG-1", AdvisoryKind::Bugfix, &[("app", "1.1-1", "noarch")]),
            // Already installed: does not apply.
            advisory(
                "SEC-0",
                AdvisoryKind::Security,
                &[("lib", "1.0-1", "x86_64")],
            ),
            // Another arch: does not apply.
            advisory("SEC-3", AdvisoryKind::Security, &[("lib", "1.1-1", "i686")]),
        ];
        let plan = run(&installed, &[main.clone(), main], &Options::new("x86_64"));
        let security: Vec<(&str, bool, Vec<&str>)> = plan
            .updates
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.security,
                    u.advisories.iter().map(|a| a.id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            security,
            [("app", false, vec!["BUG-1"]), ("lib", true, vec!["SEC-1"])]
        );
        assert_eq!(plan.updates[1].advisories[0].cves, ["CVE-SEC-1"]);
        assert_eq!(plan.updates[1].advisories[0].severity, "Important");
        assert!(plan.has_security());
        let listed: Vec<String> = plan
            .advisories
            .iter()
            .map(|a| format!("{} {}-{}.{}", a.advisory.id, a.name, a.evr, a.arch))
            .collect();
        assert_eq!(
            listed,
            [
                "BUG-1 app-1.1-1.noarch",
                "SEC-1 lib-1.1-1.x86_64",
                "SEC-2 app-1.2-1.noarch"
            ]
        );
    }

    #[test]
    fn obsoleting_packages_replace_installed_ones() {
        let installed = [
            installed("old", "1.0-1", "noarch"),
            installed("kept", "3.0-1", "noarch"),
        ];
        let obsoleting = |name: &str, text: &str, target: &str, below: Option<&str>| RepoPackage {
            obsoletes: vec![Dependency {
                name: target.into(),
                condition: below.map(|version| Condition {
                    comparison: Comparison::Lt,
                    epoch: 0,
                    version: version.into(),
                    release: String::new(),
                }),
            }],
            ..offered(name, text, "noarch")
        };
        let main = repo(
            "main",
            vec![
                obsoleting("new", "1.0-1", "old", None),
                obsoleting("new", "2.0-1", "old", Some("2.0")),
                obsoleting("other", "1.0-1", "kept", Some("3.0")),
            ],
        );
        let plan = run(
            &installed,
            std::slice::from_ref(&main),
            &Options::new("x86_64"),
        );
        let listed: Vec<String> = plan
            .obsoletions
            .iter()
            .map(|o| {
                format!(
                    "{}-{}.{} {:?} replaces {}-{}.{}",
                    o.name,
                    o.evr,
                    o.arch,
                    o.repositories,
                    o.obsoleted_name,
                    o.obsoleted_evr,
                    o.obsoleted_arch
                )
            })
            .collect();
        assert_eq!(
            listed,
            ["new-2.0-1.noarch [\"main\"] replaces old-1.0-1.noarch"]
        );
        let mut options = Options::new("x86_64");
        options.obsoletes = false;
        assert!(run(&installed, &[main], &options).obsoletions.is_empty());
    }

    #[test]
    fn globs_match_as_fnmatch() {
        for (pattern, text, expected) in [
            ("kernel*", "kernel-core", true),
            ("kernel*", "xkernel", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("[]]", "]", true),
            ("[a", "[a", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*a*b*c", "xxaxxbxxc", true),
            ("*a*b*c", "xxaxxbxxcx", false),
            ("pal-*-1.*", "pal-plain-1.noarch", true),
        ] {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} {text}");
        }
        // Many stars over a long text finish quickly.
        let text = "a".repeat(5000);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn lock_names_and_arches() {
        let locks = Lock::parse_list("bash-0:5.1.8-6.el9.*\n!x\n");
        assert_eq!(locks[0].name(), Some("bash"));
        assert_eq!(
            locks[1],
            Lock {
                pattern: "x".into(),
                exclude: true
            }
        );
        assert_eq!(locks[1].name(), None);
        assert_eq!(compatible_arches("aarch64"), ["aarch64", "noarch"]);
        assert!(compatible_arches("x86_64").contains(&"i686"));
    }
}
