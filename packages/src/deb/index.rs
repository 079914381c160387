//! apt's `Packages` indexes (`/var/lib/apt/lists/*_Packages`): the binary
//! packages a repository offers, one deb822 paragraph each.
//!
//! Only what pending-update computation needs is kept: name, version,
//! architecture, source, the relationship fields (as written, parsed on
//! demand) and Ubuntu's `Phased-Update-Percentage`. A paragraph that cannot
//! be read is skipped and listed in [`Index::problems`], as in the status
//! file: one bad entry must not hide the others.

use super::control::{self, Paragraph};
use super::relation::Relations;
use super::status::split_source;
use super::version::{Version, VersionError};

/// Largest index accepted (Debian's main amd64 index is ~50 MB).
pub const MAX_SIZE: usize = 256 << 20;

/// One package version offered by an index.
#[derive(Debug, Clone, PartialEq)]
pub struct Available {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub source: String,
    pub source_version: Version,
    pub relations: Relations,
    /// Ubuntu's phased updates: the share of machines (0–100) that take
    /// this version now; `None` is everyone.
    pub phased_update_percentage: Option<u8>,
}

/// Why one paragraph of an index was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    #[error(transparent)]
    Syntax(#[from] control::SyntaxError),
    #[error("line {line}: no Package field")]
    NoName { line: usize },
    #[error("line {line}: package {name}: no Version field")]
    NoVersion { line: usize, name: String },
    #[error("line {line}: package {name}: {field}: {error}")]
    BadVersion {
        line: usize,
        name: String,
        field: &'static str,
        error: VersionError,
    },
    #[error("line {line}: package {name}: bad Source field {value:?}")]
    BadSource {
        line: usize,
        name: String,
        value: String,
    },
    #[error("line {line}: package {name}: Phased-Update-Percentage {value:?} is not 0-100")]
    BadPhasing {
        line: usize,
        name: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("the index is larger than {MAX_SIZE} bytes")]
    TooLarge,
}

/// A parsed `Packages` index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Index {
    pub packages: Vec<Available>,
    pub problems: Vec<IndexProblem>,
}

impl Index {
    pub fn parse(input: &[u8]) -> Result<Index, IndexError> {
        if input.len() > MAX_SIZE {
            return Err(IndexError::TooLarge);
        }
        let (packages, problems) = control::entries(input, entry);
        Ok(Index { packages, problems })
    }
}

fn entry(p: &Paragraph<'_>) -> Result<Available, IndexProblem> {
    let line = p.line;
    let name = match p.text("Package")? {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => return Err(IndexProblem::NoName { line }),
    };
    let parse_version = |field: &'static str, text: &str| {
        Version::parse(text.trim()).map_err(|error| IndexProblem::BadVersion {
            line,
            name: name.clone(),
            field,
            error,
        })
    };
    let version = match p.text("Version")? {
        Some(text) if !text.trim().is_empty() => parse_version("Version", text)?,
        _ => {
            return Err(IndexProblem::NoVersion { line, name });
        }
    };
    let (source, source_version) = match p.text("Source")? {
        None | Some("") => (name.clone(), version.clone()),
        Some(field) => match split_source(field) {
            Some((source, None)) => (source.to_owned(), version.clone()),
            Some((source, Some(text))) => (source.to_owned(), parse_version("Source", text)?),
            None => {
                return Err(IndexProblem::BadSource {
                    line,
                    name,
                    value: field.to_owned(),
                });
            }
        },
    };
    let phased_update_percentage = match p.text("Phased-Update-Percentage")? {
        None => None,
        Some(text) => match text.trim().parse::<u8>() {
            Ok(percent) if percent <= 100 => Some(percent),
            _ => {
                return Err(IndexProblem::BadPhasing {
                    line,
                    name,
                    value: text.to_owned(),
                });
            }
        },
    };
    Ok(Available {
        architecture: p.text("Architecture")?.unwrap_or("").trim().to_owned(),
        relations: Relations::of(p)?,
        name,
        version,
        source,
        source_version,
        phased_update_percentage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_source_relations_and_phasing() {
        let index = Index::parse(
            b"Package: openssl\nVersion: 3.0.15-1~deb12u1\nArchitecture: amd64\n\
Source: openssl\nDepends: libc6 (>= 2.34), libssl3 (>= 3.0.9)\nDescription: tools\n continued\n\n\
Package: libssl3\nSource: openssl (3.0.15-1~deb12u1)\nVersion: 3.0.15-1~deb12u1+b1\n\
Architecture: amd64\nBreaks: old (<< 2)\nPhased-Update-Percentage: 10\n\n\
Package: broken\nVersion: 1:\n\n\
Package: novers\n\n",
        )
        .unwrap();
        assert_eq!(index.packages.len(), 2);
        let openssl = &index.packages[0];
        assert_eq!(openssl.name, "openssl");
        assert_eq!(openssl.version.to_string(), "3.0.15-1~deb12u1");
        assert_eq!(openssl.relations.requirements().unwrap().len(), 2);
        assert_eq!(openssl.phased_update_percentage, None);
        let libssl = &index.packages[1];
        assert_eq!(libssl.source, "openssl");
        assert_eq!(libssl.source_version.to_string(), "3.0.15-1~deb12u1");
        assert_eq!(libssl.relations.exclusions().unwrap()[0].name, "old");
        assert_eq!(libssl.phased_update_percentage, Some(10));
        assert!(matches!(index.problems[0], IndexProblem::BadVersion { .. }));
        assert!(matches!(index.problems[1], IndexProblem::NoVersion { .. }));
    }

    #[test]
    fn bad_phasing_is_a_problem() {
        let index =
            Index::parse(b"Package: a\nVersion: 1\nPhased-Update-Percentage: 101\n").unwrap();
        assert!(index.packages.is_empty());
        assert!(matches!(index.problems[0], IndexProblem::BadPhasing { .. }));
    }
}
