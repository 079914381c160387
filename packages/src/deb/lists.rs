//! The files of apt's list directory (`/var/lib/apt/lists`): which
//! `Packages` index belongs to which `Release` file, component, host and
//! architecture, read from the names apt gives them.
//!
//! apt names a file after its URI: the scheme and credentials dropped, `_`
//! escaped as `%5f`, then `/` replaced by `_`:
//! `deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages`
//! belongs to `deb.debian.org_debian_dists_bookworm_InRelease`. A flat
//! repository (`deb file:/srv/repo ./`) has `_srv_repo_._Packages` beside
//! `_srv_repo_._Release`. The Release file of an index is the one whose name
//! without its `_InRelease`/`_Release` ending is the longest prefix of the
//! index's name; `InRelease` is preferred when both are there.

/// How an index is stored (`Acquire::GzipIndexes` keeps them compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Lz4,
    Zstd,
}

/// One `Packages` index and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The index's file name.
    pub packages: String,
    pub compression: Compression,
    /// The Release (or InRelease) file's name, when there is one.
    pub release: Option<String>,
    /// `main`, `updates/main`; empty for a flat repository.
    pub component: String,
    /// `amd64`, `all`; empty for a flat repository.
    pub architecture: String,
    /// The host the repository is served from; empty for `file:` and
    /// `cdrom:` repositories.
    pub host: String,
}

/// Pairs every `Packages` index among `names` with its Release file.
/// Names that are neither are ignored (`lock`, `partial`, translations).
pub fn entries<S: AsRef<str>>(names: &[S]) -> Vec<ListEntry> {
    let releases: Vec<(&str, &str)> = names
        .iter()
        .map(AsRef::as_ref)
        .filter_map(|name| {
            name.strip_suffix("_InRelease")
                .or_else(|| name.strip_suffix("_Release"))
                .map(|base| (base, name))
        })
        .collect();
    let mut entries: Vec<ListEntry> = names
        .iter()
        .map(AsRef::as_ref)
        .filter_map(|name| {
            let (stem, compression) = index_stem(name)?;
            let release = releases
                .iter()
                .filter(|(base, _)| {
                    // A flat repository's index sits beside its Release file.
                    stem == *base
                        || (stem.starts_with(base)
                            && stem.as_bytes().get(base.len()) == Some(&b'_'))
                })
                .max_by_key(|(base, release)| (base.len(), release.ends_with("_InRelease")))
                .copied();
            let (component, architecture) = match release {
                Some((base, _)) if stem.len() > base.len() => {
                    split_component(&stem[base.len() + 1..])
                }
                _ => (String::new(), String::new()),
            };
            let base = release.map_or(stem, |(base, _)| base);
            Some(ListEntry {
                packages: name.to_owned(),
                compression,
                release: release.map(|(_, release)| release.to_owned()),
                component,
                architecture,
                host: host_of(base),
            })
        })
        .collect();
    entries.sort_by(|a, b| a.packages.cmp(&b.packages));
    entries
}

/// The name without `_Packages[.ext]`, and the compression the extension
/// says.
fn index_stem(name: &str) -> Option<(&str, Compression)> {
    let (rest, compression) = [
        (".gz", Compression::Gzip),
        (".xz", Compression::Xz),
        (".lz4", Compression::Lz4),
        (".zst", Compression::Zstd),
    ]
    .iter()
    .find_map(|(ext, c)| name.strip_suffix(ext).map(|rest| (rest, *c)))
    .unwrap_or((name, Compression::None));
    let stem = rest.strip_suffix("Packages")?;
    // `_Packages` after a directory, or a flat repository's `Packages`.
    Some((stem.strip_suffix('_').unwrap_or(stem), compression))
}

/// `main_binary-amd64` → (`main`, `amd64`); `updates_main_binary-all` →
/// (`updates/main`, `all`); a flat repository's `.` → empty.
fn split_component(rest: &str) -> (String, String) {
    match rest.rsplit_once("_binary-") {
        Some((component, arch)) => (unescape(component), arch.to_owned()),
        None => (String::new(), String::new()),
    }
}

fn unescape(part: &str) -> String {
    part.replace('_', "/")
        .replace("%5f", "_")
        .replace("%5F", "_")
}

/// The first part of the name is the host, unless the URI had none
/// (`file:/srv/repo` → `_srv_repo`).
fn host_of(base: &str) -> String {
    if base.starts_with('_') {
        return String::new();
    }
    let host = base.split('_').next().unwrap_or("");
    // `host:port` is kept as apt shows it in `apt-cache policy`.
    host.replace("%5f", "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_lists_are_paired_with_their_release() {
        let names = [
            "deb.debian.org_debian_dists_bookworm_InRelease",
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
            "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en",
            "deb.debian.org_debian-security_dists_bookworm-security_InRelease",
            "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages.lz4",
            "security.debian.org_dists_stable_updates_Release",
            "security.debian.org_dists_stable_updates_updates_main_binary-all_Packages",
            "_srv_repo_._Release",
            "_srv_repo_._Packages",
            "lock",
        ];
        let entries = entries(&names);
        assert_eq!(entries.len(), 4);
        let by_name = |needle: &str| {
            entries
                .iter()
                .find(|e| e.packages.contains(needle))
                .unwrap()
        };
        let local = by_name("_srv_repo");
        assert_eq!(local.release.as_deref(), Some("_srv_repo_._Release"));
        assert_eq!(local.host, "");
        assert_eq!(local.component, "");
        let main = by_name("debian_dists_bookworm_main");
        assert_eq!(
            main.release.as_deref(),
            Some("deb.debian.org_debian_dists_bookworm_InRelease")
        );
        assert_eq!(
            (main.component.as_str(), main.architecture.as_str()),
            ("main", "amd64")
        );
        assert_eq!(main.host, "deb.debian.org");
        assert_eq!(main.compression, Compression::None);
        let security = by_name("bookworm-security");
        assert_eq!(security.compression, Compression::Lz4);
        assert!(
            security
                .release
                .as_deref()
                .unwrap()
                .contains("bookworm-security")
        );
        let old = by_name("security.debian.org");
        assert_eq!(
            old.release.as_deref(),
            Some("security.debian.org_dists_stable_updates_Release"),
            "the longest Release prefix wins"
        );
        assert_eq!(old.component, "updates/main");
        assert_eq!(old.architecture, "all");
    }

    #[test]
    fn an_index_without_release_is_kept() {
        let entries = entries(&["example.org_repo_Packages"]);
        assert_eq!(entries[0].release, None);
        assert_eq!(entries[0].host, "example.org");
    }
}
