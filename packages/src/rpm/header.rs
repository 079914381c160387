//! RPM headers as the rpm database stores them, and the installed package
//! each one describes.
//!
//! rpm keeps one header per installed package: in `rpmdb.sqlite` (table
//! `Packages`, column `blob`), and in the same form in the older Berkeley DB
//! and ndb backends. The blob is the header without its magic:
//!
//! ```text
//! be32 index count (il) | be32 data length (dl)
//! il × { be32 tag | be32 type | be32 offset | be32 count }
//! dl bytes of data store
//! ```
//!
//! An entry's offset points into the data store. Strings are NUL-terminated,
//! integers big-endian. Everything is bounds-checked: a header that does not
//! add up is refused with the reason, never read past.
//!
//! The database also holds `gpg-pubkey` pseudo packages (imported signing
//! keys): they have a name, version and release but no architecture; see
//! [`InstalledRpm::is_gpg_pubkey`].

use std::fmt;

use super::version::Evr;

/// Most index entries rpm accepts in a header (its `HEADER_TAGS_MAX`).
pub const MAX_ENTRIES: u32 = 0xffff;
/// Largest data store rpm accepts in a header (its `HEADER_DATA_MAX`).
pub const MAX_DATA: u32 = 256 << 20;

const ENTRY_SIZE: usize = 16;

/// A header tag: its number and the name rpm gives it (for errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub number: u32,
    pub name: &'static str,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.number)
    }
}

pub const NAME: Tag = Tag {
    number: 1000,
    name: "NAME",
};
pub const VERSION: Tag = Tag {
    number: 1001,
    name: "VERSION",
};
pub const RELEASE: Tag = Tag {
    number: 1002,
    name: "RELEASE",
};
pub const EPOCH: Tag = Tag {
    number: 1003,
    name: "EPOCH",
};
pub const INSTALLTIME: Tag = Tag {
    number: 1008,
    name: "INSTALLTIME",
};
pub const ARCH: Tag = Tag {
    number: 1022,
    name: "ARCH",
};
pub const SOURCERPM: Tag = Tag {
    number: 1044,
    name: "SOURCERPM",
};

/// rpm's data types (`rpmTagType`), those read here.
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// Why a header blob cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the header is {0} bytes, shorter than its 8-byte preamble")]
    TooShort(usize),
    #[error("the header has {0} index entries (at most {MAX_ENTRIES}, at least 1)")]
    BadEntryCount(u32),
    #[error("the header's data store is {0} bytes (at most {MAX_DATA})")]
    DataTooLarge(u32),
    #[error("the header is {actual} bytes, but its index and data add up to {expected}")]
    LengthMismatch { expected: u64, actual: usize },
    #[error("tag {0} is missing")]
    Missing(Tag),
    #[error("tag {tag} has type {found}, not {expected}")]
    WrongType {
        tag: Tag,
        found: u32,
        expected: &'static str,
    },
    #[error("tag {tag} has count {count}")]
    BadCount { tag: Tag, count: u32 },
    #[error("tag {tag} points outside the data store (offset {offset})")]
    OutOfBounds { tag: Tag, offset: u32 },
    #[error("tag {0} is a string without its terminating NUL")]
    Unterminated(Tag),
    #[error("tag {0} is not UTF-8")]
    NotUtf8(Tag),
    #[error("tag {0} is empty")]
    Empty(Tag),
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u32,
    kind: u32,
    offset: u32,
    count: u32,
}

/// A checked header: its index and data store, borrowed from the blob.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

impl<'a> Header<'a> {
    /// Checks the preamble and the sizes; entries are checked when read.
    pub fn parse(blob: &'a [u8]) -> Result<Header<'a>, HeaderError> {
        let (Some(entries), Some(data_len)) = (be32(blob, 0), be32(blob, 4)) else {
            return Err(HeaderError::TooShort(blob.len()));
        };
        if entries == 0 || entries > MAX_ENTRIES {
            return Err(HeaderError::BadEntryCount(entries));
        }
        if data_len > MAX_DATA {
            return Err(HeaderError::DataTooLarge(data_len));
        }
        let expected = 8 + u64::from(entries) * ENTRY_SIZE as u64 + u64::from(data_len);
        if expected != blob.len() as u64 {
            return Err(HeaderError::LengthMismatch {
                expected,
                actual: blob.len(),
            });
        }
        // The sizes add up to the blob's length, so these cannot fail.
        let index_end = 8 + entries as usize * ENTRY_SIZE;
        Ok(Header {
            index: &blob[8..index_end],
            data: &blob[index_end..],
        })
    }

    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.index.chunks_exact(ENTRY_SIZE).filter_map(|e| {
            Some(Entry {
                tag: be32(e, 0)?,
                kind: be32(e, 4)?,
                offset: be32(e, 8)?,
                count: be32(e, 12)?,
            })
        })
    }

    /// The first entry for `tag` (a tag appears once in a sane header).
    fn entry(&self, tag: Tag) -> Option<Entry> {
        self.entries().find(|e| e.tag == tag.number)
    }

    /// The string value of `tag`, `None` when the header has no such tag.
    /// For a string array or an i18n string (one per language), the first.
    pub fn string(&self, tag: Tag) -> Result<Option<&'a str>, HeaderError> {
        let Some(entry) = self.entry(tag) else {
            return Ok(None);
        };
        match entry.kind {
            TYPE_STRING if entry.count != 1 => {
                return Err(HeaderError::BadCount {
                    tag,
                    count: entry.count,
                });
            }
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING if entry.count >= 1 => {}
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING => {
                return Err(HeaderError::BadCount {
                    tag,
                    count: entry.count,
                });
            }
            found => {
                return Err(HeaderError::WrongType {
                    tag,
                    found,
                    expected: "a string",
                });
            }
        }
        let rest = usize::try_from(entry.offset)
            .ok()
            .and_then(|offset| self.data.get(offset..))
            .filter(|rest| !rest.is_empty())
            .ok_or(HeaderError::OutOfBounds {
                tag,
                offset: entry.offset,
            })?;
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(HeaderError::Unterminated(tag))?;
        std::str::from_utf8(&rest[..end])
            .map(Some)
            .map_err(|_| HeaderError::NotUtf8(tag))
    }

    /// The first value of the 32-bit integer `tag`, `None` when absent.
    pub fn int32(&self, tag: Tag) -> Result<Option<u32>, HeaderError> {
        let Some(entry) = self.entry(tag) else {
            return Ok(None);
        };
        if entry.kind != TYPE_INT32 {
            return Err(HeaderError::WrongType {
                tag,
                found: entry.kind,
                expected: "INT32",
            });
        }
        if entry.count == 0 {
            return Err(HeaderError::BadCount {
                tag,
                count: entry.count,
            });
        }
        usize::try_from(entry.offset)
            .ok()
            .and_then(|offset| be32(self.data, offset))
            .map(Some)
            .ok_or(HeaderError::OutOfBounds {
                tag,
                offset: entry.offset,
            })
    }

    /// A string tag that must be present and not empty.
    fn required(&self, tag: Tag) -> Result<&'a str, HeaderError> {
        match self.string(tag)? {
            None => Err(HeaderError::Missing(tag)),
            Some("") => Err(HeaderError::Empty(tag)),
            Some(text) => Ok(text),
        }
    }
}

/// One package of the rpm database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRpm {
    pub name: String,
    /// `None` when the package has no EPOCH tag (rpm then uses 0).
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    /// `x86_64`, `noarch`, ...; `None` for `gpg-pubkey` pseudo packages.
    pub arch: Option<String>,
    /// The source package's file name (`openssl-3.0.7-25.el9_3.src.rpm`);
    /// `None` for source packages themselves and for `gpg-pubkey` (whose
    /// header holds the literal text `(none)`, read as absent).
    pub source_rpm: Option<String>,
    /// When it was installed (seconds since the epoch), if recorded.
    pub install_time: Option<u32>,
}

impl InstalledRpm {
    /// Reads the package of one header blob of the rpm database.
    pub fn from_header_blob(blob: &[u8]) -> Result<InstalledRpm, HeaderError> {
        let header = Header::parse(blob)?;
        let optional = |tag| -> Result<Option<String>, HeaderError> {
            Ok(header
                .string(tag)?
                .filter(|s| !s.is_empty())
                .map(str::to_owned))
        };
        Ok(InstalledRpm {
            name: header.required(NAME)?.to_owned(),
            epoch: header.int32(EPOCH)?,
            version: header.required(VERSION)?.to_owned(),
            release: header.required(RELEASE)?.to_owned(),
            arch: optional(ARCH)?,
            source_rpm: optional(SOURCERPM)?.filter(|s| s != "(none)"),
            install_time: header.int32(INSTALLTIME)?,
        })
    }

    /// The epoch, version and release, for comparison.
    pub fn evr(&self) -> Evr {
        Evr::new(
            self.epoch.unwrap_or(0),
            self.version.clone(),
            self.release.clone(),
        )
    }

    /// An imported signing key, not a package: callers listing software
    /// skip these.
    pub fn is_gpg_pubkey(&self) -> bool {
        self.name == "gpg-pubkey" && self.arch.is_none()
    }

    /// The source package's name: the source RPM's file name without
    /// `-version-release.src.rpm`.
    pub fn source_name(&self) -> Option<&str> {
        let file = self.source_rpm.as_deref()?;
        let stem = file
            .strip_suffix(".src.rpm")
            .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
        let (rest, _release) = stem.rsplit_once('-')?;
        let (name, _version) = rest.rsplit_once('-')?;
        (!name.is_empty()).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header builder for the tests: (tag, type, count, data) entries,
    /// INT32 data aligned as rpm aligns it.
    fn blob(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, kind, count, bytes) in entries {
            if *kind == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            for word in [*tag, *kind, data.len() as u32, *count] {
                index.extend_from_slice(&word.to_be_bytes());
            }
            data.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&data);
        out
    }

    fn string(tag: Tag, text: &str) -> (u32, u32, u32, Vec<u8>) {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        (tag.number, TYPE_STRING, 1, bytes)
    }

    fn int32(tag: Tag, value: u32) -> (u32, u32, u32, Vec<u8>) {
        (tag.number, TYPE_INT32, 1, value.to_be_bytes().to_vec())
    }

    #[test]
    fn reads_a_package_and_a_signing_key() {
        let package = blob(&[
            string(NAME, "openssl"),
            string(VERSION, "3.0.7"),
            int32(EPOCH, 1),
            string(RELEASE, "25.el9_3"),
            string(ARCH, "x86_64"),
            int32(INSTALLTIME, 1_700_000_000),
            string(SOURCERPM, "openssl-3.0.7-25.el9_3.src.rpm"),
        ]);
        let rpm = InstalledRpm::from_header_blob(&package).expect("parse");
        assert_eq!(
            rpm,
            InstalledRpm {
                name: "openssl".into(),
                epoch: Some(1),
                version: "3.0.7".into(),
                release: "25.el9_3".into(),
                arch: Some("x86_64".into()),
                source_rpm: Some("openssl-3.0.7-25.el9_3.src.rpm".into()),
                install_time: Some(1_700_000_000),
            }
        );
        assert_eq!(rpm.evr().to_string(), "1:3.0.7-25.el9_3");
        assert_eq!(rpm.source_name(), Some("openssl"));
        assert!(!rpm.is_gpg_pubkey());

        let key = blob(&[
            string(NAME, "gpg-pubkey"),
            string(VERSION, "fd431d51"),
            string(RELEASE, "4ae0493b"),
            string(SOURCERPM, "(none)"),
        ]);
        let key = InstalledRpm::from_header_blob(&key).expect("parse");
        assert!(key.is_gpg_pubkey());
        assert_eq!((key.epoch, key.source_rpm.as_deref()), (None, None));
        assert_eq!(key.source_name(), None);
    }

    #[test]
    fn broken_headers_are_refused_with_the_reason() {
        let good = blob(&[
            string(NAME, "a"),
            string(VERSION, "1"),
            string(RELEASE, "1"),
        ]);
        let mut truncated = good.clone();
        truncated.pop();
        let mut huge_offset = good.clone();
        huge_offset[8 + 8..8 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut no_nul = good.clone();
        if let Some(last) = no_nul.last_mut() {
            *last = b'x';
        }
        let cases: Vec<(Vec<u8>, HeaderError)> = vec![
            (vec![0, 0, 0], HeaderError::TooShort(3)),
            (vec![0; 8], HeaderError::BadEntryCount(0)),
            (
                [0x00, 0x01, 0x00, 0x00, 0, 0, 0, 0].to_vec(),
                HeaderError::BadEntryCount(0x10000),
            ),
            (
                [0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff].to_vec(),
                HeaderError::DataTooLarge(0x7fff_ffff),
            ),
            (
                truncated.clone(),
                HeaderError::LengthMismatch {
                    expected: good.len() as u64,
                    actual: truncated.len(),
                },
            ),
            (
                huge_offset,
                HeaderError::OutOfBounds {
                    tag: NAME,
                    offset: u32::MAX,
                },
            ),
            (no_nul, HeaderError::Unterminated(RELEASE)),
            (
                blob(&[string(VERSION, "1"), string(RELEASE, "1")]),
                HeaderError::Missing(NAME),
            ),
            (
                blob(&[string(NAME, ""), string(VERSION, "1")]),
                HeaderError::Empty(NAME),
            ),
            (
                blob(&[
                    string(NAME, "a"),
                    string(VERSION, "1"),
                    string(RELEASE, "1"),
                    string(EPOCH, "1"),
                ]),
                HeaderError::WrongType {
                    tag: EPOCH,
                    found: TYPE_STRING,
                    expected: "INT32",
                },
            ),
            (
                blob(&[(NAME.number, TYPE_STRING, 1, vec![0xff, 0])]),
                HeaderError::NotUtf8(NAME),
            ),
            (
                blob(&[(NAME.number, TYPE_STRING, 2, b"a\0b\0".to_vec())]),
                HeaderError::BadCount {
                    tag: NAME,
                    count: 2,
                },
            ),
        ];
        for (input, error) in cases {
            assert_eq!(
                InstalledRpm::from_header_blob(&input),
                Err(error.clone()),
                "{error}"
            );
        }
        // The last INT32 cut short by the end of the data store.
        let mut short_epoch = blob(&[string(NAME, "a"), (EPOCH.number, TYPE_INT32, 1, vec![])]);
        short_epoch.extend_from_slice(&[0, 0]);
        short_epoch[7] += 2;
        let header = Header::parse(&short_epoch).expect("sizes add up");
        assert!(matches!(
            header.int32(EPOCH),
            Err(HeaderError::OutOfBounds { tag: EPOCH, .. })
        ));
    }
}
