//! A repository's package list (`primary.xml`, decompressed) and its index
//! (`repomd.xml`), which says where `primary` and `updateinfo` are.
//!
//! `repomd.xml`:
//!
//! ```xml
//! <repomd xmlns="http://linux.duke.edu/metadata/repo">
//!   <revision>1700000000</revision>
//!   <data type="primary">
//!     <checksum type="sha256">...</checksum>
//!     <open-checksum type="sha256">...</open-checksum>
//!     <location href="repodata/...-primary.xml.zst"/>
//!     <size>123</size>
//!     <open-size>456</open-size>
//!   </data>
//! </repomd>
//! ```
//!
//! `primary.xml`, one `<package type="rpm">` per package; only what the
//! fleet needs is kept (name, arch, EVR, source RPM, location, and the
//! obsoletes, which decide what `dnf upgrade` replaces):
//!
//! ```xml
//! <metadata xmlns="http://linux.duke.edu/metadata/common"
//!           xmlns:rpm="http://linux.duke.edu/metadata/rpm">
//!   <package type="rpm">
//!     <name>openssl</name>
//!     <arch>x86_64</arch>
//!     <version epoch="1" ver="3.0.7" rel="25.el9_3"/>
//!     <location href="Packages/o/openssl-3.0.7-25.el9_3.x86_64.rpm"/>
//!     <format>
//!       <rpm:sourcerpm>openssl-3.0.7-25.el9_3.src.rpm</rpm:sourcerpm>
//!       <rpm:provides><rpm:entry name="openssl" ver="3.0.7" .../></rpm:provides>
//!       <rpm:obsoletes><rpm:entry name="openssl11" flags="LT" epoch="0" ver="1.1"/></rpm:obsoletes>
//!     </format>
//!   </package>
//! </metadata>
//! ```
//!
//! Elements are matched by their place in the document, so the
//! `<rpm:entry>` versions of dependencies are never mistaken for the
//! package's own. As for updateinfo, malformed XML is an error, and a
//! package without a name, arch or version is left out with a reason.

use std::cmp::Ordering;

use super::version::{Evr, vercmp};
use super::xml::{Step, Walker, XmlError};

/// Largest `primary.xml` accepted (Fedora's full repository is ~250 MB).
pub const MAX_PRIMARY_SIZE: usize = 1 << 30;
/// Largest `repomd.xml` accepted (real ones are a few kB).
pub const MAX_REPOMD_SIZE: usize = 4 << 20;

/// A checksum as the metadata gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `sha256`, `sha512`, ...
    pub kind: String,
    /// Hex digits as written.
    pub value: String,
}

/// How a metadata file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

/// One `<data>` entry of `repomd.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoData {
    /// `primary`, `updateinfo`, `filelists`, `modules`, ...
    pub kind: String,
    /// Relative to the repository's base URL.
    pub href: String,
    /// Of the file as stored (compressed).
    pub checksum: Option<Checksum>,
    /// Of the file once decompressed.
    pub open_checksum: Option<Checksum>,
    pub size: Option<u64>,
    pub open_size: Option<u64>,
}

impl RepoData {
    pub fn compression(&self) -> Compression {
        let name = self.href.rsplit('/').next().unwrap_or("");
        if name.ends_with(".gz") {
            Compression::Gzip
        } else if name.ends_with(".zst") {
            Compression::Zstd
        } else if name.ends_with(".xz") {
            Compression::Xz
        } else if name.ends_with(".bz2") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }
}

/// The parsed `repomd.xml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoMd {
    pub revision: String,
    pub data: Vec<RepoData>,
}

impl RepoMd {
    /// The entry of the given type (the first, if listed twice).
    pub fn find(&self, kind: &str) -> Option<&RepoData> {
        self.data.iter().find(|d| d.kind == kind)
    }

    pub fn primary(&self) -> Option<&RepoData> {
        self.find("primary")
    }

    /// Absent from repositories that publish no advisories.
    pub fn updateinfo(&self) -> Option<&RepoData> {
        self.find("updateinfo")
    }
}

/// Why `repomd.xml` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoMdError {
    #[error("repomd.xml is larger than {MAX_REPOMD_SIZE} bytes")]
    TooLarge,
    #[error("repomd.xml: {0}")]
    Xml(#[from] XmlError),
    #[error("repomd.xml: the root element is <{0}>, not <repomd>")]
    NotRepoMd(String),
    #[error("repomd.xml: <data type={kind:?}> has no location")]
    NoLocation { kind: String },
    #[error("repomd.xml: a <data> element has no type")]
    NoType,
    #[error("repomd.xml: <data type={kind:?}>: {field} {value:?} is not a number")]
    BadSize {
        kind: String,
        field: &'static str,
        value: String,
    },
}

impl RepoMd {
    /// Parses `repomd.xml`. Unlike the package lists, every entry must be
    /// whole: the index is small, and a broken one is not worth guessing at.
    pub fn parse(input: &[u8]) -> Result<RepoMd, RepoMdError> {
        if input.len() > MAX_REPOMD_SIZE {
            return Err(RepoMdError::TooLarge);
        }
        const DATA: [&str; 2] = ["repomd", "data"];
        let mut walker = Walker::new(input);
        let mut repomd = RepoMd::default();
        let mut current: Option<RepoData> = None;
        // The `type` of the checksum element being read.
        let mut checksum_kind = String::new();
        loop {
            match walker.next_step()? {
                Step::End => return Ok(repomd),
                Step::Open(element) => {
                    if walker.path().len() == 1 && element.name != "repomd" {
                        return Err(RepoMdError::NotRepoMd(element.name));
                    }
                    if walker.at(&DATA) {
                        let kind = element.attribute("type").ok_or(RepoMdError::NoType)?;
                        current = Some(RepoData {
                            kind: kind.to_owned(),
                            href: String::new(),
                            checksum: None,
                            open_checksum: None,
                            size: None,
                            open_size: None,
                        });
                    } else if walker.at(&["repomd", "data", "location"])
                        && let Some(data) = current.as_mut()
                    {
                        data.href = element.attribute("href").unwrap_or("").to_owned();
                    } else if walker.at(&["repomd", "data", "checksum"])
                        || walker.at(&["repomd", "data", "open-checksum"])
                    {
                        checksum_kind = element.attribute("type").unwrap_or("").to_owned();
                    }
                }
                Step::Close { name, text } => {
                    let text = text.trim();
                    if walker.at(&["repomd", "revision"]) {
                        repomd.revision = text.to_owned();
                    } else if walker.at(&DATA) {
                        if let Some(data) = current.take() {
                            if data.href.is_empty() {
                                return Err(RepoMdError::NoLocation { kind: data.kind });
                            }
                            repomd.data.push(data);
                        }
                    } else if walker.path().len() == 3
                        && let Some(data) = current.as_mut()
                    {
                        let mut checksum = || Checksum {
                            kind: std::mem::take(&mut checksum_kind),
                            value: text.to_owned(),
                        };
                        match name.as_str() {
                            "checksum" => data.checksum = Some(checksum()),
                            "open-checksum" => data.open_checksum = Some(checksum()),
                            "size" => data.size = Some(size(&data.kind, "size", text)?),
                            "open-size" => {
                                data.open_size = Some(size(&data.kind, "open-size", text)?);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

fn size(kind: &str, field: &'static str, text: &str) -> Result<u64, RepoMdError> {
    text.parse().map_err(|_| RepoMdError::BadSize {
        kind: kind.to_owned(),
        field,
        value: text.to_owned(),
    })
}

/// One binary package of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPackage {
    pub name: String,
    pub arch: String,
    pub evr: Evr,
    /// The source RPM's file name; `None` for source packages and when
    /// absent.
    pub source_rpm: Option<String>,
    /// The package file, relative to the repository's base URL.
    pub location: Option<String>,
    /// The packages it replaces (`Obsoletes:`).
    pub obsoletes: Vec<Dependency>,
}

/// How a versioned dependency compares (`flags` of `<rpm:entry>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Comparison {
    fn parse(flags: &str) -> Option<Comparison> {
        Some(match flags {
            "LT" => Comparison::Lt,
            "LE" => Comparison::Le,
            "EQ" => Comparison::Eq,
            "GE" => Comparison::Ge,
            "GT" => Comparison::Gt,
            _ => return None,
        })
    }

    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Le => ordering != Ordering::Greater,
            Comparison::Eq => ordering == Ordering::Equal,
            Comparison::Ge => ordering != Ordering::Less,
            Comparison::Gt => ordering == Ordering::Greater,
        }
    }
}

/// One `<rpm:entry>` of a relation (`name`, or `name OP [epoch:]ver[-rel]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// `None` for an unversioned relation (any version).
    pub condition: Option<Condition>,
}

/// The version part of a [`Dependency`], as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub comparison: Comparison,
    pub epoch: u32,
    pub version: String,
    /// Empty when the relation names no release (then any release matches,
    /// as in rpm).
    pub release: String,
}

impl Dependency {
    /// Whether a package of this name and EVR satisfies the relation, by
    /// rpm's rule: a relation without a release ignores the package's.
    pub fn matches(&self, name: &str, evr: &Evr) -> bool {
        if self.name != name {
            return false;
        }
        let Some(condition) = &self.condition else {
            return true;
        };
        let ordering = evr
            .epoch()
            .cmp(&condition.epoch)
            .then_with(|| vercmp(evr.version(), &condition.version))
            .then_with(|| match evr.release() {
                Some(release) if !condition.release.is_empty() => {
                    vercmp(release, &condition.release)
                }
                _ => Ordering::Equal,
            });
        condition.comparison.accepts(ordering)
    }
}

/// An `<rpm:entry>` as a [`Dependency`]; `None` when it has no name or
/// unknown flags or epoch (a relation this crate cannot evaluate is left
/// out rather than guessed at).
fn dependency(element: &super::xml::Element) -> Option<Dependency> {
    let name = element.attribute("name").map(str::trim).unwrap_or("");
    if name.is_empty() {
        return None;
    }
    let condition = match element.attribute("flags") {
        None => None,
        Some(flags) => {
            let comparison = Comparison::parse(flags.trim())?;
            let epoch = match element.attribute("epoch").map(str::trim) {
                None | Some("") => 0,
                Some(text) => text.parse::<u32>().ok()?,
            };
            let version = element.attribute("ver").unwrap_or("").trim().to_owned();
            if version.is_empty() {
                return None;
            }
            let release = element.attribute("rel").unwrap_or("").trim().to_owned();
            Some(Condition {
                comparison,
                epoch,
                version,
                release,
            })
        }
    };
    Some(Dependency {
        name: name.to_owned(),
        condition,
    })
}

/// Why a `<package>` was left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageProblem {
    #[error("package number {index} has no {field}")]
    Missing { index: usize, field: &'static str },
    #[error("package {name}: epoch {epoch:?} is not a number")]
    BadEpoch { name: String, epoch: String },
}

/// Why `primary.xml` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrimaryError {
    #[error("primary.xml is larger than {MAX_PRIMARY_SIZE} bytes")]
    TooLarge,
    #[error("primary.xml: {0}")]
    Xml(#[from] XmlError),
    #[error("primary.xml: the root element is <{0}>, not <metadata>")]
    NotPrimary(String),
}

/// The packages that could be read, and what was wrong with the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Primary {
    pub packages: Vec<RepoPackage>,
    pub problems: Vec<PackageProblem>,
}

/// A package being read.
#[derive(Default)]
struct Partial {
    name: String,
    arch: String,
    /// `(epoch, ver, rel)` as written.
    version: Option<(String, String, String)>,
    source_rpm: Option<String>,
    location: Option<String>,
    obsoletes: Vec<Dependency>,
}

impl Partial {
    fn finish(self, index: usize) -> Result<RepoPackage, PackageProblem> {
        let missing = |field| PackageProblem::Missing { index, field };
        if self.name.is_empty() {
            return Err(missing("name"));
        }
        if self.arch.is_empty() {
            return Err(missing("arch"));
        }
        let Some((epoch, ver, rel)) = self.version.filter(|(_, ver, _)| !ver.is_empty()) else {
            return Err(missing("version"));
        };
        let epoch = match epoch.trim() {
            "" => 0,
            text => text.parse::<u32>().map_err(|_| PackageProblem::BadEpoch {
                name: self.name.clone(),
                epoch: text.to_owned(),
            })?,
        };
        Ok(RepoPackage {
            name: self.name,
            arch: self.arch,
            evr: Evr::new(epoch, ver, rel),
            source_rpm: self.source_rpm.filter(|s| !s.is_empty()),
            location: self.location.filter(|s| !s.is_empty()),
            obsoletes: self.obsoletes,
        })
    }
}

impl Primary {
    /// Parses the (decompressed) contents of `primary.xml`.
    pub fn parse(input: &[u8]) -> Result<Primary, PrimaryError> {
        if input.len() > MAX_PRIMARY_SIZE {
            return Err(PrimaryError::TooLarge);
        }
        const PACKAGE: [&str; 2] = ["metadata", "package"];
        const OBSOLETES: [&str; 5] = ["metadata", "package", "format", "obsoletes", "entry"];
        let mut walker = Walker::new(input);
        let mut primary = Primary::default();
        let mut current: Option<Partial> = None;
        let mut index = 0;
        loop {
            match walker.next_step()? {
                Step::End => return Ok(primary),
                Step::Open(element) => {
                    if walker.path().len() == 1 && element.name != "metadata" {
                        return Err(PrimaryError::NotPrimary(element.name));
                    }
                    if walker.at(&PACKAGE) {
                        // Only binary and source RPMs; other types are not
                        // packages this crate knows.
                        let rpm = element.attribute("type").is_none_or(|t| t == "rpm");
                        current = rpm.then(Partial::default);
                        index += 1;
                        continue;
                    }
                    let Some(package) = current.as_mut() else {
                        continue;
                    };
                    let get = |name| element.attribute(name).unwrap_or("").to_owned();
                    if walker.at(&["metadata", "package", "version"]) {
                        package.version = Some((get("epoch"), get("ver"), get("rel")));
                    } else if walker.at(&["metadata", "package", "location"]) {
                        package.location = Some(get("href"));
                    } else if walker.at(&OBSOLETES)
                        && let Some(obsoletes) = dependency(&element)
                    {
                        package.obsoletes.push(obsoletes);
                    }
                }
                Step::Close { text, .. } => {
                    if walker.at(&PACKAGE) {
                        if let Some(package) = current.take() {
                            match package.finish(index) {
                                Ok(package) => primary.packages.push(package),
                                Err(problem) => primary.problems.push(problem),
                            }
                        }
                        continue;
                    }
                    let Some(package) = current.as_mut() else {
                        continue;
                    };
                    let text = text.trim();
                    if walker.at(&["metadata", "package", "name"]) {
                        package.name = text.to_owned();
                    } else if walker.at(&["metadata", "package", "arch"]) {
                        package.arch = text.to_owned();
                    } else if walker.at(&["metadata", "package", "format", "sourcerpm"]) {
                        package.source_rpm = Some(text.to_owned());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1705000000</revision>
  <data type="primary">
    <checksum type="sha256">aaaa</checksum>
    <open-checksum type="sha256">bbbb</open-checksum>
    <location href="repodata/aaaa-primary.xml.zst"/>
    <timestamp>1705000000</timestamp>
    <size>1234</size>
    <open-size>56789</open-size>
  </data>
  <data type="updateinfo">
    <checksum type="sha512">cccc</checksum>
    <location href="repodata/cccc-updateinfo.xml.gz"/>
  </data>
</repomd>
"#;

    #[test]
    fn repomd_locates_primary_and_updateinfo() {
        let repomd = RepoMd::parse(REPOMD.as_bytes()).expect("parse");
        assert_eq!(repomd.revision, "1705000000");
        let primary = repomd.primary().expect("primary");
        assert_eq!(
            primary,
            &RepoData {
                kind: "primary".into(),
                href: "repodata/aaaa-primary.xml.zst".into(),
                checksum: Some(Checksum {
                    kind: "sha256".into(),
                    value: "aaaa".into()
                }),
                open_checksum: Some(Checksum {
                    kind: "sha256".into(),
                    value: "bbbb".into()
                }),
                size: Some(1234),
                open_size: Some(56789),
            }
        );
        assert_eq!(primary.compression(), Compression::Zstd);
        let updateinfo = repomd.updateinfo().expect("updateinfo");
        assert_eq!(updateinfo.compression(), Compression::Gzip);
        assert_eq!(
            updateinfo.checksum.as_ref().map(|c| c.kind.as_str()),
            Some("sha512")
        );
        assert_eq!(
            (updateinfo.size, updateinfo.open_checksum.clone()),
            (None, None)
        );
        assert!(repomd.find("filelists").is_none());
    }

    #[test]
    fn broken_repomd_is_refused() {
        assert_eq!(
            RepoMd::parse(b"<repomd><data type=\"primary\"></data></repomd>"),
            Err(RepoMdError::NoLocation {
                kind: "primary".into()
            })
        );
        assert_eq!(
            RepoMd::parse(b"<repomd><data><location href=\"x\"/></data></repomd>"),
            Err(RepoMdError::NoType)
        );
        assert_eq!(
            RepoMd::parse(
                b"<repomd><data type=\"primary\"><location href=\"x\"/><size>big</size></data></repomd>"
            ),
            Err(RepoMdError::BadSize {
                kind: "primary".into(),
                field: "size",
                value: "big".into()
            })
        );
        assert_eq!(
            RepoMd::parse(b"<metadata/>"),
            Err(RepoMdError::NotRepoMd("metadata".into()))
        );
        assert!(matches!(
            RepoMd::parse(b"<repomd><data type=\"primary\">"),
            Err(RepoMdError::Xml(_))
        ));
    }

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm">
  <name>openssl</name>
  <arch>x86_64</arch>
  <version epoch="1" ver="3.0.7" rel="25.el9_3"/>
  <checksum type="sha256" pkgid="YES">0000</checksum>
  <summary>Utilities from the general purpose cryptography library</summary>
  <description>OpenSSL &lt;3</description>
  <location href="Packages/o/openssl-3.0.7-25.el9_3.x86_64.rpm"/>
  <format>
    <rpm:license>ASL 2.0</rpm:license>
    <rpm:sourcerpm>openssl-3.0.7-25.el9_3.src.rpm</rpm:sourcerpm>
    <rpm:provides>
      <rpm:entry name="openssl" flags="EQ" epoch="1" ver="3.0.7" rel="25.el9_3"/>
      <rpm:entry name="name" flags="EQ" epoch="9" ver="9" rel="9"/>
    </rpm:provides>
    <rpm:requires>
      <rpm:entry name="libc.so.6()(64bit)"/>
    </rpm:requires>
    <rpm:obsoletes>
      <rpm:entry name="openssl11" flags="LT" epoch="1" ver="1.1.1" rel="5"/>
      <rpm:entry name="openssl-old"/>
      <rpm:entry name="openssl-libs-compat" flags="LE" ver="3.0"/>
      <rpm:entry name="weird" flags="XX" ver="1"/>
    </rpm:obsoletes>
  </format>
</package>
<package type="rpm">
  <name>tzdata</name>
  <arch>noarch</arch>
  <version epoch="0" ver="2024a" rel="1.el9"/>
  <format><rpm:sourcerpm>tzdata-2024a-1.el9.src.rpm</rpm:sourcerpm></format>
</package>
<package type="rpm">
  <name>broken</name>
  <version epoch="0" ver="1" rel="1"/>
</package>
<package type="rpm">
  <name>badepoch</name>
  <arch>noarch</arch>
  <version epoch="x" ver="1" rel="1"/>
</package>
</metadata>
"#;

    #[test]
    fn primary_lists_packages_and_leaves_out_broken_ones() {
        let primary = Primary::parse(PRIMARY.as_bytes()).expect("parse");
        let listed: Vec<String> = primary
            .packages
            .iter()
            .map(|p| {
                format!(
                    "{} {} {} {}",
                    p.name,
                    p.evr,
                    p.arch,
                    p.source_rpm.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                "openssl 1:3.0.7-25.el9_3 x86_64 openssl-3.0.7-25.el9_3.src.rpm",
                "tzdata 2024a-1.el9 noarch tzdata-2024a-1.el9.src.rpm",
            ]
        );
        assert_eq!(
            primary.packages[0].location.as_deref(),
            Some("Packages/o/openssl-3.0.7-25.el9_3.x86_64.rpm")
        );
        let problems: Vec<String> = primary.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "package number 3 has no arch",
                "package badepoch: epoch \"x\" is not a number"
            ]
        );
        assert!(primary.packages[1].obsoletes.is_empty());
        obsoletes_are_read_and_evaluated(&primary.packages[0]);
        assert_eq!(
            Primary::parse(b"<repomd/>"),
            Err(PrimaryError::NotPrimary("repomd".into()))
        );
        assert!(matches!(
            Primary::parse(b"<metadata><package>"),
            Err(PrimaryError::Xml(_))
        ));
    }

    fn obsoletes_are_read_and_evaluated(package: &RepoPackage) {
        let names: Vec<&str> = package.obsoletes.iter().map(|d| d.name.as_str()).collect();
        // The entry with unknown flags is left out.
        assert_eq!(names, ["openssl11", "openssl-old", "openssl-libs-compat"]);
        let [versioned, any, no_release] = &package.obsoletes[..] else {
            panic!("three obsoletes: {:?}", package.obsoletes);
        };
        let evr = |text: &str| Evr::parse(text).expect("evr");
        assert!(versioned.matches("openssl11", &evr("1:1.1.1-4")));
        assert!(!versioned.matches("openssl11", &evr("1:1.1.1-5")));
        assert!(!versioned.matches("openssl11", &evr("2:0-1")));
        assert!(!versioned.matches("openssl", &evr("0:1-1")));
        assert!(any.matches("openssl-old", &evr("99:9-9")));
        // No release in the relation: every release of 3.0 matches.
        assert!(no_release.matches("openssl-libs-compat", &evr("3.0-99")));
        assert!(!no_release.matches("openssl-libs-compat", &evr("3.0.1-1")));
    }
}
