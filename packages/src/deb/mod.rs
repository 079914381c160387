//! Debian's package data: versions, deb822 paragraphs, the dpkg database,
//! apt's indexes and preferences, and what an upgrade would do.

pub mod apt;
pub mod control;
pub mod index;
pub mod lists;
pub mod preferences;
pub mod relation;
pub mod release;
pub mod simulate;
pub mod status;
pub mod upgrade;
pub mod version;

pub use status::{InstalledPackage, PackageState, Selection, StatusFile};
pub use version::{Version, VersionError};
