//! Which system's packages the agent reads and manages.
//!
//! On a host that is `/`. Tests and image builds point the agent at another
//! root (a private dpkg/apt root, a `dnf --installroot` tree) by starting it
//! with [`PACKAGE_ROOT_ENV`]. It is taken only from the environment the
//! agent is started with, as root, and passed unchanged to the collector and
//! control by whoever spawns them ([`crate::spawn`]): never from a command,
//! the backend or the unprivileged platform, since control runs the package
//! manager as root on whatever tree it names.

use std::path::{Path, PathBuf};

/// The environment variable naming the package root (absent: `/`).
pub const PACKAGE_ROOT_ENV: &str = "PALISADE_PACKAGE_ROOT";

/// The package root this process was started with: [`PACKAGE_ROOT_ENV`]
/// when it is an absolute path, else `/`.
pub fn from_env() -> PathBuf {
    std::env::var_os(PACKAGE_ROOT_ENV)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `absolute` (a path as the package manager knows it) under `root`.
pub fn under(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

/// Whether `root` is the running system's own root.
pub fn is_system(root: &Path) -> bool {
    root == Path::new("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_placed_under_the_root() {
        assert_eq!(
            under(Path::new("/"), "/var/lib/dpkg"),
            Path::new("/var/lib/dpkg")
        );
        assert_eq!(
            under(Path::new("/srv/r"), "/var/lib/dpkg"),
            Path::new("/srv/r/var/lib/dpkg")
        );
        assert!(is_system(Path::new("/")));
        assert!(!is_system(Path::new("/srv/r")));
    }
}
