//! RPM's package data: versions, the rpm database's headers, repository
//! metadata (`repomd.xml`, `primary.xml`, `updateinfo.xml`), what `dnf
//! upgrade` would do with them, and the rows read from `rpm -qa` and `dnf
//! repoquery`.

pub mod dnf;
pub mod header;
pub mod primary;
pub mod query;
pub mod updateinfo;
pub mod upgrade;
pub mod version;
mod xml;

pub use header::{HeaderError, InstalledRpm};
pub use primary::{Primary, PrimaryError, RepoMd, RepoMdError, RepoPackage};
pub use updateinfo::{Advisory, AdvisoryKind, UpdateInfo, UpdateInfoError};
pub use version::{Evr, EvrError, vercmp};
pub use xml::XmlError;
