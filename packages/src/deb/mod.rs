//! Debian's package data: versions, deb822 paragraphs, the dpkg database.

pub mod control;
pub mod status;
pub mod version;

pub use status::{InstalledPackage, PackageState, Selection, StatusFile};
pub use version::{Version, VersionError};
