//! What a caller may do: the permissions they hold, each for all hosts or
//! for the hosts of some host groups. Deny by default: an empty `Grants`
//! allows nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::Permission;

/// The permissions of one caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Held for everything.
    global: BTreeSet<Permission>,
    /// Held for the hosts of these groups only (scopable permissions).
    scoped: BTreeMap<Permission, BTreeSet<String>>,
}

/// Which hosts a permission reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostScope {
    /// Every host, grouped or not.
    All,
    /// The hosts of these groups (never an ungrouped host).
    Groups(Vec<String>),
}

impl HostScope {
    /// Whether a host in `group` (None: ungrouped) is within.
    pub fn contains(&self, group: Option<&str>) -> bool {
        match self {
            HostScope::All => true,
            HostScope::Groups(groups) => group.is_some_and(|g| groups.iter().any(|x| x == g)),
        }
    }
}

impl Grants {
    /// Nothing at all.
    pub fn none() -> Grants {
        Grants::default()
    }

    /// Every permission, everywhere (the command line on the backend host).
    pub fn everything() -> Grants {
        Grants {
            global: Permission::ALL.iter().copied().collect(),
            scoped: BTreeMap::new(),
        }
    }

    /// Adds `permissions` for all hosts (`group` None) or for one group. A
    /// permission that cannot be scoped is not granted by a scoped role.
    pub fn add(&mut self, permissions: impl IntoIterator<Item = Permission>, group: Option<&str>) {
        for p in permissions {
            match group {
                None => {
                    self.global.insert(p);
                }
                Some(group) if p.is_scopable() => {
                    self.scoped.entry(p).or_default().insert(group.to_owned());
                }
                Some(_) => {}
            }
        }
    }

    /// Whether `p` is held for a host in `group` (None: an ungrouped host,
    /// or something that is not a host).
    pub fn allows(&self, p: Permission, group: Option<&str>) -> bool {
        self.global.contains(&p)
            || group.is_some_and(|g| self.scoped.get(&p).is_some_and(|groups| groups.contains(g)))
    }

    /// Whether `p` is held for everything.
    pub fn allows_globally(&self, p: Permission) -> bool {
        self.global.contains(&p)
    }

    /// Whether `p` is held anywhere (for all hosts or some group).
    pub fn allows_somewhere(&self, p: Permission) -> bool {
        self.global.contains(&p) || self.scoped.get(&p).is_some_and(|g| !g.is_empty())
    }

    /// The hosts `p` reaches; `None` when it reaches none.
    pub fn host_scope(&self, p: Permission) -> Option<HostScope> {
        if self.global.contains(&p) {
            return Some(HostScope::All);
        }
        let groups = self.scoped.get(&p)?;
        (!groups.is_empty()).then(|| HostScope::Groups(groups.iter().cloned().collect()))
    }

    /// Only what is in both (an API token: its own permissions, capped by
    /// its owner's).
    pub fn intersect(&self, other: &Grants) -> Grants {
        let global: BTreeSet<Permission> =
            self.global.intersection(&other.global).copied().collect();
        let mut scoped: BTreeMap<Permission, BTreeSet<String>> = BTreeMap::new();
        for p in Permission::ALL.iter().copied().filter(|p| p.is_scopable()) {
            let mine = self.groups_of(p);
            let theirs = other.groups_of(p);
            let both: BTreeSet<String> = match (mine, theirs) {
                (GroupSet::All, GroupSet::All) => continue,
                (GroupSet::All, GroupSet::Some(g)) | (GroupSet::Some(g), GroupSet::All) => g,
                (GroupSet::Some(a), GroupSet::Some(b)) => a.intersection(&b).cloned().collect(),
            };
            if !both.is_empty() {
                scoped.insert(p, both);
            }
        }
        Grants { global, scoped }
    }

    fn groups_of(&self, p: Permission) -> GroupSet {
        if self.global.contains(&p) {
            GroupSet::All
        } else {
            GroupSet::Some(self.scoped.get(&p).cloned().unwrap_or_default())
        }
    }

    /// Every permission held anywhere, in catalogue order.
    pub fn permissions(&self) -> Vec<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|p| self.allows_somewhere(*p))
            .collect()
    }

    /// Whether every permission `other` holds anywhere, this one holds at
    /// least as widely (a token may not carry more than its creator).
    pub fn covers(&self, other: &Grants) -> bool {
        Permission::ALL
            .iter()
            .all(|&p| match (self.groups_of(p), other.groups_of(p)) {
                (_, GroupSet::Some(theirs)) if theirs.is_empty() => true,
                (GroupSet::All, _) => true,
                (GroupSet::Some(_), GroupSet::All) => false,
                (GroupSet::Some(mine), GroupSet::Some(theirs)) => theirs.is_subset(&mine),
            })
    }
}

enum GroupSet {
    All,
    Some(BTreeSet<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = Grants::none();
        for p in Permission::ALL {
            assert!(!none.allows_somewhere(*p));
            assert!(!none.allows(*p, Some("a")));
        }
    }

    #[test]
    fn scoped_grants_reach_their_groups_only() {
        let mut g = Grants::none();
        g.add([HostsRead, ServicesRestart, UsersRead], Some("a"));
        assert!(g.allows(HostsRead, Some("a")));
        assert!(!g.allows(HostsRead, Some("b")));
        assert!(
            !g.allows(HostsRead, None),
            "an ungrouped host is not in a group"
        );
        assert!(
            !g.allows_somewhere(UsersRead),
            "a global-only permission is not granted by a scoped role"
        );
        assert_eq!(
            g.host_scope(HostsRead),
            Some(HostScope::Groups(vec!["a".into()]))
        );
        assert_eq!(g.host_scope(HostsDelete), None);
        g.add([HostsRead], None);
        assert_eq!(g.host_scope(HostsRead), Some(HostScope::All));
        assert!(g.allows(HostsRead, None));
    }

    #[test]
    fn intersection_and_cover() {
        let mut owner = Grants::none();
        owner.add([HostsRead, CommandsCreate], None);
        owner.add([ServicesRestart], Some("a"));
        let mut token = Grants::none();
        token.add([HostsRead, ServicesRestart, UsersCreate], None);
        let effective = token.intersect(&owner);
        assert!(effective.allows(HostsRead, None));
        assert!(effective.allows(ServicesRestart, Some("a")));
        assert!(!effective.allows(ServicesRestart, Some("b")));
        assert!(!effective.allows_somewhere(UsersCreate));
        assert!(
            !effective.allows_somewhere(CommandsCreate),
            "not asked for by the token"
        );
        assert!(owner.covers(&effective));
        assert!(
            !owner.covers(&token),
            "users:create, and services:restart everywhere"
        );
        let mut narrow = Grants::none();
        narrow.add([ServicesRestart], Some("a"));
        assert!(owner.covers(&narrow));
        assert!(Grants::everything().covers(&owner));
    }
}
