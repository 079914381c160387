//! Package-manager data, parsed and compared without I/O.
//!
//! The collector reads the package databases directly (it may not run the
//! package manager: no exec, read-only), and the backend compares versions
//! across the fleet ("which hosts run openssl older than X"). Both need the
//! package manager's own rules, exactly: a version that sorts differently
//! from dpkg's answer is a wrong "pending update". This crate holds those
//! rules once, as pure functions over bytes and strings:
//!
//! - [`deb::version`]: Debian versions (`epoch:upstream-revision`) and
//!   dpkg's ordering;
//! - [`deb::control`]: deb822 paragraphs (the dpkg status file, apt's
//!   `Packages` and `Release` indexes);
//! - [`deb::status`]: installed packages from the dpkg status file;
//! - [`deb::release`], [`deb::index`], [`deb::lists`],
//!   [`deb::preferences`], [`deb::relation`]: apt's Release files,
//!   `Packages` indexes, list directory, pins and relationship fields;
//! - [`deb::upgrade`] and [`deb::apt`]: what `apt-get dist-upgrade` would
//!   do (candidates by apt's priorities, holds, phasing, kept back,
//!   removed, new), with each update's security classification;
//! - [`rpm::version`]: RPM versions (`epoch:version-release`) and rpm's
//!   ordering (`rpmvercmp`);
//! - [`rpm::header`]: installed packages from the header blobs of the rpm
//!   database (`rpmdb.sqlite`'s `Packages` table);
//! - [`rpm::primary`]: a repository's index (`repomd.xml`) and package
//!   list (`primary.xml`);
//! - [`rpm::updateinfo`]: a repository's advisories (`updateinfo.xml`);
//! - [`rpm::query`]: the rows agent control asks `rpm -qa` and `dnf
//!   repoquery` to print (name, architecture, version), framed apart from
//!   their messages;
//! - [`rpm::upgrade`] and [`rpm::dnf`]: what `dnf upgrade` would do and
//!   `dnf check-update` lists (candidates across repositories by priority,
//!   arch rules, install-only packages, excludes, versionlock, obsoletes),
//!   with each update's advisories and security classification;
//! - [`reboot`]: whether the running kernel is the newest installed of its
//!   flavour, and which deleted files a process still maps;
//! - [`restart`]: which unit a process belongs to (its cgroup), and the
//!   services to restart because they still map files an upgrade replaced;
//! - [`inventory`]: a host's packages and updates in one shape for apt and
//!   dnf hosts, and the deltas the agent uploads instead of the whole.
//!
//! Invariants: nothing here reads files, spawns processes or panics on any
//! input; every parser of untrusted bytes has a fuzz target in `fuzz/`;
//! ordering matches `dpkg --compare-versions` and rpm's `rpmvercmp`, and
//! the upgrade plans match `apt-get -s dist-upgrade` and
//! `dnf check-update` (tested against dpkg,
//! apt, rpm and dnf themselves).

/// One file as read by the caller: its name (not its path) and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    pub name: String,
    pub contents: Vec<u8>,
}

pub mod deb;
pub mod inventory;
pub mod reboot;
pub mod restart;
pub mod rpm;
