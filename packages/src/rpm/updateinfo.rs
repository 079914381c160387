//! Advisories from a repository's `updateinfo.xml` (decompressed).
//!
//! The format (Red Hat, Fedora, SUSE, Rocky and Alma all write it):
//!
//! ```xml
//! <updates>
//!   <update type="security" status="final" from="...">
//!     <id>RHSA-2024:0001</id>
//!     <title>Important: openssl security update</title>
//!     <issued date="2024-01-02 00:00:00"/>
//!     <severity>Important</severity>
//!     <references>
//!       <reference type="cve" id="CVE-2023-5678" href="..." title="..."/>
//!     </references>
//!     <pkglist><collection>
//!       <package name="openssl" epoch="1" version="3.0.7" release="25.el9_3"
//!                arch="x86_64" src="openssl-3.0.7-25.el9_3.src.rpm">
//!         <filename>openssl-3.0.7-25.el9_3.x86_64.rpm</filename>
//!       </package>
//!     </collection></pkglist>
//!   </update>
//! </updates>
//! ```
//!
//! Malformed XML is an error for the whole document. A well-formed update
//! without an id, or a package without a name, version, release or arch or
//! with a bad epoch, is left out and listed in [`UpdateInfo::problems`]: one
//! bad entry must not hide the other advisories.

use super::version::Evr;
use super::xml::{Step, Walker, XmlError};

/// Largest `updateinfo.xml` accepted (Fedora's, the largest, is ~60 MB).
pub const MAX_SIZE: usize = 512 << 20;

/// The `type` of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryKind {
    Security,
    Bugfix,
    Enhancement,
    NewPackage,
    /// `other`, or a type this crate does not know.
    Other,
}

impl AdvisoryKind {
    fn parse(text: &str) -> AdvisoryKind {
        match text {
            "security" => AdvisoryKind::Security,
            "bugfix" => AdvisoryKind::Bugfix,
            "enhancement" => AdvisoryKind::Enhancement,
            "newpackage" => AdvisoryKind::NewPackage,
            _ => AdvisoryKind::Other,
        }
    }
}

/// A `<reference>`: a CVE, a bug tracker entry, the vendor's page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `cve`, `bugzilla`, `self`, ...
    pub kind: String,
    /// `CVE-2023-5678`, a bug number; empty when absent.
    pub id: String,
    pub href: String,
    pub title: String,
}

/// A package an advisory ships: installing this EVR (or newer) fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryPackage {
    pub name: String,
    pub evr: Evr,
    pub arch: String,
    /// The source RPM's file name, when given.
    pub src: Option<String>,
    /// The binary RPM's file name, when given.
    pub filename: Option<String>,
}

/// One `<update>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    pub id: String,
    pub kind: AdvisoryKind,
    /// The `type` attribute as written.
    pub kind_text: String,
    /// `Critical`, `Important`, `Moderate`, `Low`, ...; empty when absent.
    pub severity: String,
    pub title: String,
    /// The `date` of `<issued>` as written (a date, or seconds since the
    /// epoch in some repositories); empty when absent.
    pub issued: String,
    pub references: Vec<Reference>,
    pub packages: Vec<AdvisoryPackage>,
}

impl Advisory {
    /// The ids of the CVE references.
    pub fn cves(&self) -> impl Iterator<Item = &str> {
        self.references
            .iter()
            .filter(|r| r.kind == "cve" && !r.id.is_empty())
            .map(|r| r.id.as_str())
    }
}

/// Why an update or one of its packages was left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvisoryProblem {
    #[error("update number {index} has no id")]
    NoId { index: usize },
    #[error("advisory {advisory}: a package has no {attribute} attribute")]
    PackageMissing {
        advisory: String,
        attribute: &'static str,
    },
    #[error("advisory {advisory}: package {package}: epoch {epoch:?} is not a number")]
    BadEpoch {
        advisory: String,
        package: String,
        epoch: String,
    },
}

/// Why the document cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateInfoError {
    #[error("updateinfo.xml is larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error("updateinfo.xml: {0}")]
    Xml(#[from] XmlError),
    #[error("updateinfo.xml: the root element is <{0}>, not <updates>")]
    NotUpdateInfo(String),
}

/// The advisories that could be read, and what was wrong with the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateInfo {
    pub advisories: Vec<Advisory>,
    pub problems: Vec<AdvisoryProblem>,
}

/// An update being read: the id is checked when it closes.
#[derive(Default)]
struct Partial {
    id: String,
    kind_text: String,
    severity: String,
    title: String,
    issued: String,
    references: Vec<Reference>,
    packages: Vec<AdvisoryPackage>,
    /// Packages left out, reported once the id is known.
    bad_packages: Vec<PackageFault>,
    /// Whether the last `<package>` was kept (its `<filename>` is then the
    /// last package's).
    last_package_kept: bool,
}

enum PackageFault {
    Missing(&'static str),
    BadEpoch { package: String, epoch: String },
}

/// A `<package>` element's attributes as an [`AdvisoryPackage`].
fn package(element: &super::xml::Element) -> Result<AdvisoryPackage, PackageFault> {
    let required = |name: &'static str| match element.attribute(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(PackageFault::Missing(name)),
    };
    let name = required("name")?;
    let version = required("version")?;
    let release = required("release")?;
    let arch = required("arch")?;
    let epoch = match element.attribute("epoch").map(str::trim) {
        None | Some("") => 0,
        Some(text) => text.parse::<u32>().map_err(|_| PackageFault::BadEpoch {
            package: name.clone(),
            epoch: text.to_owned(),
        })?,
    };
    let owned = |name: &str| {
        element
            .attribute(name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(AdvisoryPackage {
        evr: Evr::new(epoch, version, release),
        name,
        arch,
        src: owned("src"),
        filename: None,
    })
}

impl UpdateInfo {
    /// Parses the (decompressed) contents of `updateinfo.xml`.
    pub fn parse(input: &[u8]) -> Result<UpdateInfo, UpdateInfoError> {
        if input.len() > MAX_SIZE {
            return Err(UpdateInfoError::TooLarge);
        }
        let mut walker = Walker::new(input);
        let mut info = UpdateInfo::default();
        let mut current: Option<Partial> = None;
        let mut index = 0;
        const UPDATE: [&str; 2] = ["updates", "update"];
        const PACKAGE: [&str; 5] = ["updates", "update", "pkglist", "collection", "package"];
        const FILENAME: [&str; 6] = [
            "updates",
            "update",
            "pkglist",
            "collection",
            "package",
            "filename",
        ];
        loop {
            match walker.next_step()? {
                Step::End => return Ok(info),
                Step::Open(element) => {
                    if walker.path().len() == 1 && element.name != "updates" {
                        return Err(UpdateInfoError::NotUpdateInfo(element.name));
                    }
                    if walker.at(&UPDATE) {
                        current = Some(Partial {
                            kind_text: element.attribute("type").unwrap_or("").to_owned(),
                            ..Partial::default()
                        });
                        continue;
                    }
                    let Some(update) = current.as_mut() else {
                        continue;
                    };
                    if walker.at(&["updates", "update", "issued"]) {
                        update.issued = element.attribute("date").unwrap_or("").to_owned();
                    } else if walker.at(&["updates", "update", "references", "reference"]) {
                        let get = |name| element.attribute(name).unwrap_or("").to_owned();
                        update.references.push(Reference {
                            kind: get("type"),
                            id: get("id"),
                            href: get("href"),
                            title: get("title"),
                        });
                    } else if walker.at(&PACKAGE) {
                        update.last_package_kept = match package(&element) {
                            Ok(package) => {
                                update.packages.push(package);
                                true
                            }
                            Err(fault) => {
                                update.bad_packages.push(fault);
                                false
                            }
                        };
                    }
                }
                Step::Close { text, .. } => {
                    if walker.at(&UPDATE) {
                        index += 1;
                        if let Some(update) = current.take() {
                            update.finish(index, &mut info);
                        }
                        continue;
                    }
                    let Some(update) = current.as_mut() else {
                        continue;
                    };
                    let text = text.trim();
                    if walker.at(&["updates", "update", "id"]) {
                        update.id = text.to_owned();
                    } else if walker.at(&["updates", "update", "title"]) {
                        update.title = text.to_owned();
                    } else if walker.at(&["updates", "update", "severity"]) {
                        update.severity = text.to_owned();
                    } else if walker.at(&FILENAME)
                        && update.last_package_kept
                        && let Some(package) = update.packages.last_mut()
                    {
                        // The filename of the package read last, if kept.
                        package.filename = Some(text.to_owned());
                    }
                }
            }
        }
    }

    /// The security advisories.
    pub fn security(&self) -> impl Iterator<Item = &Advisory> {
        self.advisories
            .iter()
            .filter(|a| a.kind == AdvisoryKind::Security)
    }
}

impl Partial {
    fn finish(self, index: usize, info: &mut UpdateInfo) {
        if self.id.is_empty() {
            info.problems.push(AdvisoryProblem::NoId { index });
            return;
        }
        for fault in self.bad_packages {
            info.problems.push(match fault {
                PackageFault::Missing(attribute) => AdvisoryProblem::PackageMissing {
                    advisory: self.id.clone(),
                    attribute,
                },
                PackageFault::BadEpoch { package, epoch } => AdvisoryProblem::BadEpoch {
                    advisory: self.id.clone(),
                    package,
                    epoch,
                },
            });
        }
        info.advisories.push(Advisory {
            kind: AdvisoryKind::parse(&self.kind_text),
            kind_text: self.kind_text,
            id: self.id,
            severity: self.severity,
            title: self.title,
            issued: self.issued,
            references: self.references,
            packages: self.packages,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="release-engineering@redhat.com" status="final" type="security" version="2">
    <id>RHSA-2024:0310</id>
    <title>Important: openssl security update</title>
    <issued date="2024-01-17 00:00:00"/>
    <updated date="2024-01-17 00:00:00"/>
    <rights>Copyright 2024 Red Hat Inc</rights>
    <release>Red Hat Enterprise Linux 9</release>
    <severity>Important</severity>
    <summary>An update for openssl is now available.</summary>
    <description>OpenSSL is a toolkit &amp; library.</description>
    <references>
      <reference href="https://access.redhat.com/errata/RHSA-2024:0310" id="RHSA-2024:0310" title="RHSA-2024:0310" type="self"/>
      <reference href="https://bugzilla.redhat.com/2248616" id="2248616" title="CVE-2023-5678 openssl" type="bugzilla"/>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2023-5678" id="CVE-2023-5678" title="CVE-2023-5678" type="cve"/>
    </references>
    <pkglist>
      <collection short="rhel-9-for-x86_64-baseos-rpms">
        <name>rhel-9-for-x86_64-baseos-rpms</name>
        <package name="openssl" version="3.0.7" release="25.el9_3" epoch="1" arch="x86_64" src="openssl-3.0.7-25.el9_3.src.rpm">
          <filename>openssl-3.0.7-25.el9_3.x86_64.rpm</filename>
          <sum type="sha256">0000</sum>
        </package>
        <package name="openssl-libs" version="3.0.7" release="25.el9_3" epoch="1" arch="i686">
          <filename>openssl-libs-3.0.7-25.el9_3.i686.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update type="bugfix" status="stable">
    <id>FEDORA-2024-0123456789</id>
    <title>tzdata-2024a-1.fc40</title>
    <issued date="1707000000"/>
    <pkglist><collection>
      <package name="tzdata" version="2024a" release="1.fc40" arch="noarch"/>
    </collection></pkglist>
  </update>
</updates>
"#;

    #[test]
    fn reads_advisories_references_and_packages() {
        let info = UpdateInfo::parse(UPDATEINFO.as_bytes()).expect("parse");
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        let [rhsa, fedora] = &info.advisories[..] else {
            panic!("{:?}", info.advisories);
        };
        assert_eq!(rhsa.id, "RHSA-2024:0310");
        assert_eq!(rhsa.kind, AdvisoryKind::Security);
        assert_eq!(rhsa.severity, "Important");
        assert_eq!(rhsa.title, "Important: openssl security update");
        assert_eq!(rhsa.issued, "2024-01-17 00:00:00");
        assert_eq!(rhsa.cves().collect::<Vec<_>>(), ["CVE-2023-5678"]);
        assert_eq!(rhsa.references.len(), 3);
        assert_eq!(rhsa.references[1].kind, "bugzilla");
        assert_eq!(rhsa.references[1].id, "2248616");
        let names: Vec<String> = rhsa
            .packages
            .iter()
            .map(|p| format!("{}-{}.{}", p.name, p.evr, p.arch))
            .collect();
        assert_eq!(
            names,
            [
                "openssl-1:3.0.7-25.el9_3.x86_64",
                "openssl-libs-1:3.0.7-25.el9_3.i686"
            ]
        );
        assert_eq!(
            rhsa.packages[0].filename.as_deref(),
            Some("openssl-3.0.7-25.el9_3.x86_64.rpm")
        );
        assert_eq!(rhsa.packages[1].src, None);
        assert_eq!(fedora.kind, AdvisoryKind::Bugfix);
        assert_eq!(
            (fedora.severity.as_str(), fedora.issued.as_str()),
            ("", "1707000000")
        );
        assert_eq!(fedora.packages[0].evr, Evr::new(0, "2024a", "1.fc40"));
        assert_eq!(info.security().count(), 1);
    }

    #[test]
    fn bad_entries_are_left_out_with_a_reason() {
        let input = r#"<updates>
  <update type="security"><title>no id</title></update>
  <update type="enhancement"><id>A-1</id>
    <pkglist><collection>
      <package name="x" release="1" arch="noarch"/>
      <package name="y" version="1" release="1" arch="noarch" epoch="one"/>
      <package name="z" version="1" release="1" arch="noarch"/>
    </collection></pkglist>
  </update>
  <update type="weird"><id>B-1</id></update>
</updates>"#;
        let info = UpdateInfo::parse(input.as_bytes()).expect("parse");
        let problems: Vec<String> = info.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "update number 1 has no id",
                "advisory A-1: a package has no version attribute",
                "advisory A-1: package y: epoch \"one\" is not a number",
            ]
        );
        let ids: Vec<(&str, AdvisoryKind, usize)> = info
            .advisories
            .iter()
            .map(|a| (a.id.as_str(), a.kind, a.packages.len()))
            .collect();
        assert_eq!(
            ids,
            [
                ("A-1", AdvisoryKind::Enhancement, 1),
                ("B-1", AdvisoryKind::Other, 0)
            ]
        );
    }

    #[test]
    fn malformed_or_foreign_documents_are_errors() {
        assert!(matches!(
            UpdateInfo::parse(b"<updates><update></updates>"),
            Err(UpdateInfoError::Xml(_))
        ));
        assert_eq!(
            UpdateInfo::parse(b"<metadata/>"),
            Err(UpdateInfoError::NotUpdateInfo("metadata".into()))
        );
        assert_eq!(
            UpdateInfo::parse(&vec![b' '; MAX_SIZE + 1]),
            Err(UpdateInfoError::TooLarge)
        );
        // An empty list of updates is a valid document.
        assert_eq!(UpdateInfo::parse(b"<updates/>"), Ok(UpdateInfo::default()));
    }
}
