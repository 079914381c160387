//! dnf's state as a whole, from the bytes of the files dnf reads: the
//! installed packages (read from the rpm database by the caller, see
//! [`InstalledRpm::from_header_blob`]), `/etc/dnf/dnf.conf`, the `.repo`
//! files of `/etc/yum.repos.d`, each enabled repository's cached metadata
//! (`repomd.xml` and the files it names) and the versionlock list. Reading
//! them is the caller's; pairing and parsing them is here, so that every
//! caller gets the same answer ([`super::upgrade`] computes the plan).
//!
//! Metadata compressed with gzip or not at all is read. zstd (createrepo_c's
//! default since 1.0, Fedora's repositories), xz and bzip2 are not: the
//! caller may pass such a file decompressed, under its name without the
//! suffix; otherwise that repository gets a problem. (A pure-Rust zstd
//! decoder, ruzstd, would fit; it is left out until it can be tested
//! against a createrepo_c that writes zstd, which Debian's 0.17 cannot.)
//! A repository whose metadata cannot be used is left out and listed in
//! [`DnfState::problems`], as dnf does with `skip_if_unavailable=True`.

use std::io::Read;

use super::header::InstalledRpm;
use super::primary::{self, Compression, Primary, PrimaryError, RepoMd, RepoMdError};
use super::updateinfo::{self, UpdateInfo, UpdateInfoError};
use super::upgrade::{self, DEFAULT_PRIORITY, Lock, Options, Plan, Repository, System};

pub use crate::NamedFile;

/// One repository's cached metadata: `repomd.xml` and the files it names
/// (named as its `<location href>` says, or by the last part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoMetadata {
    pub id: String,
    pub repomd: Vec<u8>,
    pub files: Vec<NamedFile>,
}

/// A line of a configuration file dnf would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub problem: &'static str,
}

/// Something that could not be used; the rest still is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoProblem {
    #[error("repository file {0}")]
    Config(ConfigError),
    #[error("repository {id}: no metadata was given")]
    NoMetadata { id: String },
    #[error("repository {id}: {error}")]
    RepoMd { id: String, error: RepoMdError },
    #[error("repository {id}: repomd.xml lists no primary")]
    NoPrimary { id: String },
    #[error("repository {id}: {href} is missing")]
    MissingFile { id: String, href: String },
    #[error("repository {id}: {href} is {compression:?}-compressed; only gzip and plain are read")]
    Compressed {
        id: String,
        href: String,
        compression: Compression,
    },
    #[error("repository {id}: {href}: cannot decompress: {reason}")]
    Decompress {
        id: String,
        href: String,
        reason: String,
    },
    #[error("repository {id}: {error}")]
    Primary { id: String, error: PrimaryError },
    #[error("repository {id}: {error}")]
    UpdateInfo { id: String, error: UpdateInfoError },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnfError {
    #[error("dnf.conf: {0}")]
    Config(ConfigError),
}

/// One `[section]` of an INI file as libdnf reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// `key=value` in file order; a key given twice is listed twice.
    pub options: Vec<(String, String)>,
}

impl Section {
    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every item of every value given for the keys (lists are separated
    /// by commas or whitespace, and each occurrence adds to the list).
    pub fn list(&self, keys: &[&str]) -> Vec<String> {
        self.options
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .flat_map(|(_, v)| v.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A boolean as libdnf reads one; `None` when absent or not one.
    pub fn flag(&self, key: &str) -> Option<bool> {
        match self.get(key)?.to_ascii_lowercase().as_str() {
            "1" | "yes" | "true" | "on" => Some(true),
            "0" | "no" | "false" | "off" => Some(false),
            _ => None,
        }
    }
}

/// Largest configuration file accepted (real ones are a few kB).
pub const MAX_CONFIG_SIZE: usize = 1 << 20;

/// Parses an INI file: `[section]`, `key=value` (spaces around `=` are
/// dropped), `#` and `;` comments, and lines starting with whitespace that
/// continue the previous value.
pub fn parse_ini(name: &str, bytes: &[u8]) -> Result<Vec<Section>, ConfigError> {
    let error = |line, problem| ConfigError {
        file: name.to_owned(),
        line,
        problem,
    };
    if bytes.len() > MAX_CONFIG_SIZE {
        return Err(error(0, "the file is larger than 1 MiB"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| error(0, "the file is not UTF-8"))?;
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let last = sections
                .last_mut()
                .and_then(|s| s.options.last_mut())
                .ok_or_else(|| error(number, "a continuation line follows no option"))?;
            last.1.push(' ');
            last.1.push_str(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| error(number, "a section header is not [name]"))?;
            sections.push(Section {
                name: name.to_owned(),
                options: Vec::new(),
            });
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            error(
                number,
                "a line is neither a section, an option nor a comment",
            )
        })?;
        let section = sections
            .last_mut()
            .ok_or_else(|| error(number, "an option comes before any section"))?;
        section
            .options
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(sections)
}

/// dnf's inputs, parsed.
#[derive(Debug, Clone)]
pub struct DnfState {
    pub installed: Vec<InstalledRpm>,
    /// The enabled repositories whose metadata could be read.
    pub repositories: Vec<Repository>,
    /// From dnf.conf and the versionlock list; the architecture is the
    /// plan's argument.
    pub excludes: Vec<String>,
    pub installonly: Vec<String>,
    pub obsoletes: bool,
    pub locks: Vec<Lock>,
    pub problems: Vec<RepoProblem>,
}

impl DnfState {
    /// `dnf_conf` is `/etc/dnf/dnf.conf` (empty when absent); `repo_files`
    /// the files of the repository directory (only `*.repo` are read, as
    /// dnf does); `metadata` the cached metadata of the repositories by id;
    /// `versionlock` the plugin's list, when it is enabled.
    pub fn from_files(
        installed: Vec<InstalledRpm>,
        dnf_conf: &[u8],
        repo_files: &[NamedFile],
        metadata: &[RepoMetadata],
        versionlock: Option<&[u8]>,
    ) -> Result<DnfState, DnfError> {
        let conf = parse_ini("dnf.conf", dnf_conf).map_err(DnfError::Config)?;
        let main = conf.iter().filter(|s| s.name == "main");
        let mut excludes = Vec::new();
        let mut installonly: Vec<String> = upgrade::DEFAULT_INSTALLONLY
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut obsoletes = true;
        for section in main {
            excludes.extend(section.list(&["excludepkgs", "exclude"]));
            installonly.extend(section.list(&["installonlypkgs"]));
            obsoletes = section.flag("obsoletes").unwrap_or(obsoletes);
        }
        let mut problems = Vec::new();
        // Repositories may be defined in dnf.conf itself, then in the files.
        let mut definitions: Vec<Section> = conf.into_iter().filter(|s| s.name != "main").collect();
        for file in repo_files.iter().filter(|f| f.name.ends_with(".repo")) {
            match parse_ini(&file.name, &file.contents) {
                Ok(sections) => definitions.extend(sections),
                Err(error) => problems.push(RepoProblem::Config(error)),
            }
        }
        let mut repositories = Vec::new();
        for definition in definitions {
            if definition.flag("enabled") == Some(false)
                || repositories
                    .iter()
                    .any(|r: &Repository| r.id == definition.name)
            {
                continue;
            }
            let id = definition.name.clone();
            let Some(meta) = metadata.iter().find(|m| m.id == id) else {
                problems.push(RepoProblem::NoMetadata { id });
                continue;
            };
            match read_metadata(meta) {
                Ok((primary, updateinfo)) => repositories.push(Repository {
                    priority: definition
                        .get("priority")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(DEFAULT_PRIORITY),
                    excludes: definition.list(&["excludepkgs", "exclude"]),
                    packages: primary.packages,
                    advisories: updateinfo.map(|u| u.advisories).unwrap_or_default(),
                    id,
                }),
                Err(problem) => problems.push(problem),
            }
        }
        let locks = versionlock
            .map(|bytes| Lock::parse_list(&String::from_utf8_lossy(bytes)))
            .unwrap_or_default();
        Ok(DnfState {
            installed,
            repositories,
            excludes,
            installonly,
            obsoletes,
            locks,
            problems,
        })
    }

    /// The options of this configuration on a machine of `arch`.
    pub fn options(&self, arch: &str) -> Options {
        Options {
            arch: arch.to_owned(),
            excludes: self.excludes.clone(),
            locks: self.locks.clone(),
            installonly: self.installonly.clone(),
            obsoletes: self.obsoletes,
        }
    }

    /// What `dnf upgrade` would do on a machine of `arch`.
    pub fn plan(&self, arch: &str) -> Plan {
        upgrade::plan(System {
            installed: &self.installed,
            repositories: &self.repositories,
            options: &self.options(arch),
        })
    }
}

/// The repository's primary and (when listed) updateinfo.
fn read_metadata(meta: &RepoMetadata) -> Result<(Primary, Option<UpdateInfo>), RepoProblem> {
    let id = || meta.id.clone();
    let repomd =
        RepoMd::parse(&meta.repomd).map_err(|error| RepoProblem::RepoMd { id: id(), error })?;
    let primary_data = repomd
        .primary()
        .ok_or_else(|| RepoProblem::NoPrimary { id: id() })?;
    let bytes = file(meta, primary_data, primary::MAX_PRIMARY_SIZE)?;
    let primary =
        Primary::parse(&bytes).map_err(|error| RepoProblem::Primary { id: id(), error })?;
    let updateinfo = match repomd.updateinfo() {
        None => None,
        Some(data) => {
            let bytes = file(meta, data, updateinfo::MAX_SIZE)?;
            Some(
                UpdateInfo::parse(&bytes)
                    .map_err(|error| RepoProblem::UpdateInfo { id: id(), error })?,
            )
        }
    };
    Ok((primary, updateinfo))
}

/// The decompressed contents of the file `data` names, at most `limit`
/// bytes whatever the input claims. A file named like it without the
/// compression suffix is taken as already decompressed by the caller
/// (the way to read zstd, xz or bzip2 metadata today).
fn file(
    meta: &RepoMetadata,
    data: &primary::RepoData,
    limit: usize,
) -> Result<Vec<u8>, RepoProblem> {
    let href = &data.href;
    let find = |name: &str| {
        let base = name.rsplit('/').next().unwrap_or(name);
        meta.files
            .iter()
            .find(|f| f.name == name)
            .or_else(|| meta.files.iter().find(|f| f.name == base))
    };
    let too_large = || RepoProblem::Decompress {
        id: meta.id.clone(),
        href: href.clone(),
        reason: format!("more than {limit} bytes"),
    };
    let compression = data.compression();
    let plain = match compression {
        Compression::None => find(href),
        _ => href.rsplit_once('.').and_then(|(stem, _suffix)| find(stem)),
    };
    if let Some(plain) = plain {
        if plain.contents.len() > limit {
            return Err(too_large());
        }
        return Ok(plain.contents.clone());
    }
    if compression != Compression::Gzip {
        if compression != Compression::None {
            return Err(RepoProblem::Compressed {
                id: meta.id.clone(),
                href: href.clone(),
                compression,
            });
        }
        return Err(RepoProblem::MissingFile {
            id: meta.id.clone(),
            href: href.clone(),
        });
    }
    let stored = find(href).ok_or_else(|| RepoProblem::MissingFile {
        id: meta.id.clone(),
        href: href.clone(),
    })?;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(stored.contents.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| RepoProblem::Decompress {
            id: meta.id.clone(),
            href: href.clone(),
            reason: error.to_string(),
        })?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn repomd(primary: &str, updateinfo: Option<&str>) -> Vec<u8> {
        let data = |kind: &str, href: &str| {
            format!("<data type=\"{kind}\"><location href=\"{href}\"/></data>")
        };
        let mut text = String::from("<repomd>");
        text.push_str(&data("primary", primary));
        if let Some(href) = updateinfo {
            text.push_str(&data("updateinfo", href));
        }
        text.push_str("</repomd>");
        text.into_bytes()
    }

    const PRIMARY: &str = r#"<metadata><package type="rpm"><name>pal</name><arch>noarch</arch>
        <version epoch="0" ver="2.0" rel="1"/></package>
        <package type="rpm"><name>skip</name><arch>noarch</arch>
        <version epoch="0" ver="2.0" rel="1"/></package></metadata>"#;
    const UPDATEINFO: &str = r#"<updates><update type="security"><id>SEC-1</id>
        <severity>Low</severity><pkglist><collection>
        <package name="pal" version="2.0" release="1" arch="noarch"/>
        </collection></pkglist></update></updates>"#;

    fn installed(name: &str) -> InstalledRpm {
        InstalledRpm {
            name: name.into(),
            epoch: None,
            version: "1.0".into(),
            release: "1".into(),
            arch: Some("noarch".into()),
            source_rpm: None,
            install_time: None,
        }
    }

    #[test]
    fn ini_files_read_as_libdnf_reads_them() {
        let sections = parse_ini(
            "a.repo",
            b"# comment\n[main]\nexcludepkgs = a*, b\n  c\n; other\nexclude=d\n[x]\nenabled=No\n",
        )
        .expect("parses");
        assert_eq!(
            sections[0].list(&["excludepkgs", "exclude"]),
            ["a*", "b", "c", "d"]
        );
        assert_eq!(sections[1].flag("enabled"), Some(false));
        assert_eq!(sections[1].get("missing"), None);
        for (bad, line) in [
            (&b"key=value\n"[..], 1),
            (b"[main]\njunk\n", 2),
            (b"[]\n", 1),
            (b"  continued\n", 1),
        ] {
            assert_eq!(parse_ini("bad", bad).map_err(|e| e.line), Err(line));
        }
        assert!(parse_ini("bad", b"\xff").is_err());
    }

    #[test]
    fn state_reads_configuration_and_metadata() {
        let conf = b"[main]\nexcludepkgs=skip\ninstallonlypkgs=pal-kmod\nobsoletes=0\n";
        let repos = [
            NamedFile {
                name: "pal.repo".into(),
                contents: b"[pal]\nbaseurl=file:///x\npriority=5\n[off]\nenabled=0\n[nometa]\n"
                    .to_vec(),
            },
            NamedFile {
                name: "broken.repo".into(),
                contents: b"junk".to_vec(),
            },
            NamedFile {
                name: "ignored.repo.bak".into(),
                contents: b"junk".to_vec(),
            },
            NamedFile {
                name: "zstd.repo".into(),
                contents: b"[zstd]\n[unzstd]\npriority=1\n".to_vec(),
            },
        ];
        let metadata = [
            RepoMetadata {
                id: "pal".into(),
                repomd: repomd(
                    "repodata/p-primary.xml.gz",
                    Some("repodata/u-updateinfo.xml"),
                ),
                files: vec![
                    NamedFile {
                        name: "p-primary.xml.gz".into(),
                        contents: gzip(PRIMARY.as_bytes()),
                    },
                    NamedFile {
                        name: "repodata/u-updateinfo.xml".into(),
                        contents: UPDATEINFO.as_bytes().to_vec(),
                    },
                ],
            },
            RepoMetadata {
                id: "zstd".into(),
                repomd: repomd("repodata/p-primary.xml.zst", None),
                files: Vec::new(),
            },
            // Decompressed by the caller: read as it is.
            RepoMetadata {
                id: "unzstd".into(),
                repomd: repomd("repodata/p-primary.xml.zst", None),
                files: vec![NamedFile {
                    name: "p-primary.xml".into(),
                    contents: PRIMARY.as_bytes().to_vec(),
                }],
            },
        ];
        let state = DnfState::from_files(
            vec![installed("pal"), installed("skip")],
            conf,
            &repos,
            &metadata,
            None,
        )
        .expect("state");
        let problems: Vec<String> = state.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "repository file broken.repo, line 1: a line is neither a section, an option nor a comment",
                "repository nometa: no metadata was given",
                "repository zstd: repodata/p-primary.xml.zst is Zstd-compressed; only gzip and plain are read",
            ]
        );
        let read: Vec<(&str, i64, usize)> = state
            .repositories
            .iter()
            .map(|r| (r.id.as_str(), r.priority, r.packages.len()))
            .collect();
        assert_eq!(read, [("pal", 5, 2), ("unzstd", 1, 2)]);
        assert!(state.installonly.contains(&"pal-kmod".to_owned()));
        assert!(!state.obsoletes);
        let plan = state.plan("x86_64");
        let updates: Vec<(&str, bool, &UpdateState)> = plan
            .updates
            .iter()
            .map(|u| (u.name.as_str(), u.security, &u.state))
            .collect();
        use super::upgrade::UpdateState;
        assert_eq!(
            updates,
            [
                ("pal", true, &UpdateState::Pending),
                (
                    "skip",
                    false,
                    &UpdateState::Excluded {
                        pattern: "skip".into()
                    }
                ),
            ]
        );
        // A versionlock list holds pal at its version.
        let locked = DnfState::from_files(
            vec![installed("pal")],
            b"",
            &repos[..1],
            &metadata[..1],
            Some(b"pal-0:1.0-1.*\n"),
        )
        .expect("state");
        assert_eq!(locked.plan("x86_64").pending().count(), 0);
        assert!(DnfState::from_files(Vec::new(), b"junk", &[], &[], None).is_err());
    }

    #[test]
    fn broken_metadata_is_a_problem_not_an_error() {
        let repos = [NamedFile {
            name: "r.repo".into(),
            contents: b"[r]\n".to_vec(),
        }];
        let cases: [(&[u8], Vec<NamedFile>, &str); 4] = [
            (b"<oops", Vec::new(), "repository r: repomd.xml: "),
            (
                b"<repomd/>",
                Vec::new(),
                "repository r: repomd.xml lists no primary",
            ),
            (
                &repomd("p.xml.gz", None),
                Vec::new(),
                "repository r: p.xml.gz is missing",
            ),
            (
                &repomd("p.xml.gz", None),
                vec![NamedFile {
                    name: "p.xml.gz".into(),
                    contents: b"not gzip".to_vec(),
                }],
                "repository r: p.xml.gz: cannot decompress",
            ),
        ];
        for (repomd, files, expected) in cases {
            let metadata = [RepoMetadata {
                id: "r".into(),
                repomd: repomd.to_vec(),
                files,
            }];
            let state =
                DnfState::from_files(Vec::new(), b"", &repos, &metadata, None).expect("state");
            assert!(state.repositories.is_empty());
            assert_eq!(state.problems.len(), 1);
            let problem = state.problems[0].to_string();
            assert!(problem.starts_with(expected), "{problem}");
        }
    }
}
