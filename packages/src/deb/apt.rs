//! apt's state as a whole, from the bytes of the files apt reads: the dpkg
//! status file, the list directory (`Packages` indexes and their Release
//! files) and the preferences files. Reading them from disk is the
//! caller's (the collector reads them read-only from its sandbox); pairing
//! and parsing them is here, so that every caller gets the same answer.

use std::borrow::Cow;

use super::index::{self, Index, IndexError};
use super::lists::{self, Compression};
use super::preferences::{self, Pin, PreferencesError};
use super::release::{Release, ReleaseError};
use super::status::{StatusError, StatusFile};
use super::upgrade::{self, Options, PackageFile, Plan, System};

pub use crate::NamedFile;

/// Something in the list directory that could not be used; the rest still
/// is (a stale mirror's broken index must not hide every other update).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListProblem {
    #[error(
        "{name}: stored {compression:?}-compressed; only uncompressed, gzip and lz4 indexes are read"
    )]
    Compressed {
        name: String,
        compression: Compression,
    },
    #[error("{name}: cannot decompress: {reason}")]
    Decompress { name: String, reason: String },
    #[error("{name}: {error}")]
    Release { name: String, error: ReleaseError },
    #[error("{name}: {error}")]
    Index { name: String, error: IndexError },
    #[error("{name}: its Release file {release} is missing")]
    MissingRelease { name: String, release: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AptError {
    #[error("the dpkg status file: {0}")]
    Status(#[from] StatusError),
    #[error("preferences file {name}: {error}")]
    Preferences {
        name: String,
        error: PreferencesError,
    },
}

/// apt's inputs, parsed.
#[derive(Debug, Clone, Default)]
pub struct AptState {
    pub status: StatusFile,
    pub files: Vec<PackageFile>,
    pub pins: Vec<Pin>,
    pub problems: Vec<ListProblem>,
}

impl AptState {
    /// `lists` are the files of `/var/lib/apt/lists` (others are ignored);
    /// `preferences` are `/etc/apt/preferences` and then the files of
    /// `/etc/apt/preferences.d` in the order apt reads them (sorted by
    /// name, only names of letters, digits, `_-.` ending in `.pref` or
    /// without a dot).
    pub fn from_files(
        status: &[u8],
        lists: &[NamedFile],
        preferences: &[NamedFile],
    ) -> Result<AptState, AptError> {
        let status = StatusFile::parse(status)?;
        let mut pins = Vec::new();
        for file in preferences {
            pins.extend(preferences::parse(&file.contents).map_err(|error| {
                AptError::Preferences {
                    name: file.name.clone(),
                    error,
                }
            })?);
        }
        let names: Vec<&str> = lists.iter().map(|f| f.name.as_str()).collect();
        let contents = |name: &str| lists.iter().find(|f| f.name == name).map(|f| &f.contents);
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for entry in lists::entries(&names) {
            let release = match &entry.release {
                None => Release::default(),
                Some(release_name) => {
                    let Some(bytes) = contents(release_name) else {
                        problems.push(ListProblem::MissingRelease {
                            name: entry.packages,
                            release: release_name.clone(),
                        });
                        continue;
                    };
                    match Release::parse(bytes) {
                        Ok(release) => release,
                        Err(error) => {
                            problems.push(ListProblem::Release {
                                name: release_name.clone(),
                                error,
                            });
                            continue;
                        }
                    }
                }
            };
            let Some(stored) = contents(&entry.packages) else {
                continue;
            };
            let bytes = match decompress(&entry.packages, entry.compression, stored) {
                Ok(bytes) => bytes,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let index = match Index::parse(&bytes) {
                Ok(index) => index,
                Err(error) => {
                    problems.push(ListProblem::Index {
                        name: entry.packages,
                        error,
                    });
                    continue;
                }
            };
            drop(bytes);
            files.push(PackageFile {
                release,
                component: entry.component,
                architecture: entry.architecture,
                host: entry.host,
                index,
            });
        }
        Ok(AptState {
            status,
            files,
            pins,
            problems,
        })
    }

    /// What dist-upgrade would do on this system.
    pub fn plan(&self, options: &Options) -> Plan {
        upgrade::plan(System {
            status: &self.status,
            files: &self.files,
            pins: &self.pins,
            options,
        })
    }
}

/// The index's text: as stored, or decompressed (apt keeps indexes
/// compressed under `Acquire::GzipIndexes`, as Debian's container images
/// do: lz4 by default, gzip on older apt). At most [`index::MAX_SIZE`]
/// bytes come out, whatever the input claims.
fn decompress<'a>(
    name: &str,
    compression: Compression,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, ListProblem> {
    use std::io::Read;
    let limit = index::MAX_SIZE as u64 + 1;
    let mut out = Vec::new();
    let read = match compression {
        Compression::None => return Ok(Cow::Borrowed(stored)),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(stored)
            .take(limit)
            .read_to_end(&mut out),
        Compression::Lz4 => lz4_flex::frame::FrameDecoder::new(stored)
            .take(limit)
            .read_to_end(&mut out),
        Compression::Xz | Compression::Zstd => {
            return Err(ListProblem::Compressed {
                name: name.to_owned(),
                compression,
            });
        }
    };
    read.map_err(|error| ListProblem::Decompress {
        name: name.to_owned(),
        reason: error.to_string(),
    })?;
    if out.len() as u64 >= limit {
        return Err(ListProblem::Decompress {
            name: name.to_owned(),
            reason: format!("more than {} bytes", index::MAX_SIZE),
        });
    }
    Ok(Cow::Owned(out))
}

/// Whether apt reads a file of `/etc/apt/preferences.d` (apt ignores
/// names with other characters and other extensions, such as editor
/// backups).
pub fn is_preferences_name(name: &str) -> bool {
    let valid_chars = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    valid_chars && (name.ends_with(".pref") || !name.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_names_apt_reads() {
        assert!(is_preferences_name("nginx"));
        assert!(is_preferences_name("nginx.pref"));
        assert!(!is_preferences_name("nginx.pref~"));
        assert!(!is_preferences_name("nginx.bak"));
        assert!(!is_preferences_name("a b"));
    }
}
