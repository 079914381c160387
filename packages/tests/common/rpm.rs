//! Running rpm, rpmbuild and dnf on private roots without ever opening the
//! host's rpm database: `HOME` is always a private directory whose
//! `.rpmmacros` sets `%_dbpath`. Commands that act on a root (`rpm --root`,
//! `dnf --installroot`) get `%_dbpath /var/lib/rpm`, inside that root; the
//! others (`rpmbuild`, `rpm -qp`, which open a database too) get a private
//! database of their own, since `/var/lib/rpm` would be the host's.
//!
//! The sandbox lives in [`palisade_testkit::rpm`]; reading the database
//! back is this crate's.

use std::path::Path;

use palisade_packages::rpm::InstalledRpm;
#[allow(unused_imports)] // each test file uses part of it
pub use palisade_testkit::rpm::{Sandbox, arch_spec, check, spec};

/// Every header blob of an rpm database.
pub fn read_rpmdb(root: &Path) -> Vec<InstalledRpm> {
    let db = rusqlite::Connection::open_with_flags(
        root.join("var/lib/rpm/rpmdb.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open rpmdb.sqlite");
    let mut statement = db
        .prepare("SELECT blob FROM Packages ORDER BY hnum")
        .expect("prepare");
    let blobs: Vec<Vec<u8>> = statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    blobs
        .iter()
        .map(|blob| InstalledRpm::from_header_blob(blob).expect("header parses"))
        .collect()
}
