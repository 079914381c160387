//! RPM versions: `[epoch:]version[-release]` and rpm's ordering.
//!
//! The ordering is rpm 4.x's `rpmvercmp`, applied to the epoch (a number,
//! 0 when absent), then the version, then the release:
//!
//! - a string is cut into segments: runs of ASCII digits or runs of ASCII
//!   letters; every other byte only separates segments (`1.0` equals `1_0`);
//! - `~` sorts before everything, even the end of the string
//!   (`1.0~rc1 < 1.0`);
//! - `^` sorts after the end of the string but before anything else
//!   (`1.0 < 1.0^git1 < 1.0.1`);
//! - two numeric segments compare as numbers of any length (leading zeros
//!   ignored); two alphabetic segments compare bytewise; a numeric segment
//!   is newer than an alphabetic one;
//! - when every segment compared equal, the string with segments left over
//!   is newer.
//!
//! A release that is absent sorts before any release, even an empty one or
//! one starting with `~`, as in rpm 4.18's `rpmverCmp` (`1.0 < 1.0-~1`).
//! Packages always have a release; only a parsed text may lack one. (rpm's
//! dependency matching, where `= 1.0` also matches `1.0-1`, is a different
//! question and is not answered here.)

use std::cmp::Ordering;
use std::fmt;

/// Longest EVR text accepted by [`Evr::parse`] (real ones are < 100 bytes).
pub const MAX_LEN: usize = 512;

/// An RPM epoch, version and release. Equality is rpm's (`1.01` equals
/// `1.1`), so there is no `Hash` (it could not agree with `Eq`).
#[derive(Debug, Clone)]
pub struct Evr {
    epoch: u32,
    version: String,
    release: Option<String>,
}

/// Why a string is not an RPM `[epoch:]version[-release]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvrError {
    #[error("the version is empty")]
    Empty,
    #[error("the version is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("the version contains whitespace or a control character")]
    Whitespace,
    #[error("the epoch {0:?} is not a number below 2^32")]
    BadEpoch(String),
    #[error("the version part is empty")]
    EmptyVersion,
    #[error("the version part contains ':' (only the epoch ends with one)")]
    ColonInVersion,
}

impl Evr {
    /// An EVR from its parts as rpm stores them (header tags, repository
    /// metadata). Nothing is checked: the ordering is defined on any text.
    pub fn new(epoch: u32, version: impl Into<String>, release: impl Into<String>) -> Evr {
        Evr {
            epoch,
            version: version.into(),
            release: Some(release.into()),
        }
    }

    /// Parses `[epoch:]version[-release]` as rpm does: the epoch is a run
    /// of digits ended by `:` (an empty one is 0), the release is what
    /// follows the last `-` (`1.0-` has an empty release, `1.0` none).
    /// Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Evr, EvrError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(EvrError::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(EvrError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EvrError::Whitespace);
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (epoch, rest) = match text[digits..].strip_prefix(':') {
            Some(rest) => {
                let epoch = &text[..digits];
                let value = if epoch.is_empty() {
                    0
                } else {
                    epoch
                        .parse::<u32>()
                        .map_err(|_| EvrError::BadEpoch(epoch.to_owned()))?
                };
                (value, rest)
            }
            None => (0, text),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((version, release)) => (version, Some(release)),
            None => (rest, None),
        };
        if version.is_empty() {
            return Err(EvrError::EmptyVersion);
        }
        if version.contains(':') || release.is_some_and(|r| r.contains(':')) {
            return Err(EvrError::ColonInVersion);
        }
        Ok(Evr {
            epoch,
            version: version.to_owned(),
            release: release.map(str::to_owned),
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `None` when there is none (only possible for a parsed text).
    pub fn release(&self) -> Option<&str> {
        self.release.as_deref()
    }
}

impl fmt::Display for Evr {
    /// As rpm prints `%{EVR}`: the epoch only when it is not 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.version)?;
        if let Some(release) = &self.release {
            write!(f, "-{release}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Evr {
    type Err = EvrError;

    fn from_str(s: &str) -> Result<Evr, EvrError> {
        Evr::parse(s)
    }
}

impl Ord for Evr {
    fn cmp(&self, other: &Evr) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| vercmp(&self.version, &other.version))
            .then_with(|| match (&self.release, &other.release) {
                (Some(a), Some(b)) => vercmp(a, b),
                (a, b) => a.is_some().cmp(&b.is_some()),
            })
    }
}

impl PartialOrd for Evr {
    fn partial_cmp(&self, other: &Evr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Evr {
    fn eq(&self, other: &Evr) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Evr {}

/// A byte that starts or continues a segment, or is one of the two
/// separators that carry meaning.
fn is_significant(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'~' || b == b'^'
}

/// rpm's `rpmvercmp`: compares two version (or release) strings.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        while i < a.len() && !is_significant(a[i]) {
            i += 1;
        }
        while j < b.len() && !is_significant(b[j]) {
            j += 1;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        // `~` sorts before anything, the end included.
        if x == Some(b'~') || y == Some(b'~') {
            if x != Some(b'~') {
                return Ordering::Greater;
            }
            if y != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // `^` sorts after the end, before anything else.
        if x == Some(b'^') || y == Some(b'^') {
            match (x, y) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(b'^'), Some(b'^')) => {}
                (Some(b'^'), _) => return Ordering::Less,
                _ => return Ordering::Greater,
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(first), Some(_)) = (x, y) else {
            break;
        };
        // The segment of `a` decides its kind; `b`'s segment is the run of
        // that kind at its position (possibly empty).
        let numeric = first.is_ascii_digit();
        let in_segment = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let end_a = i + a[i..].iter().take_while(|c| in_segment(c)).count();
        let end_b = j + b[j..].iter().take_while(|c| in_segment(c)).count();
        if end_b == j {
            // Different kinds: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut seg_a, mut seg_b) = (&a[i..end_a], &b[j..end_b]);
        if numeric {
            while let [b'0', rest @ ..] = seg_a {
                seg_a = rest;
            }
            while let [b'0', rest @ ..] = seg_b {
                seg_b = rest;
            }
            let by_length = seg_a.len().cmp(&seg_b.len());
            if by_length != Ordering::Equal {
                return by_length;
            }
        }
        let by_bytes = seg_a.cmp(seg_b);
        if by_bytes != Ordering::Equal {
            return by_bytes;
        }
        i = end_a;
        j = end_b;
    }
    // Every segment compared equal: the one with something left is newer.
    match (i < a.len(), j < b.len()) {
        (false, false) => Ordering::Equal,
        (false, true) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evr(s: &str) -> Evr {
        Evr::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parts_are_split_at_the_epoch_colon_and_the_last_hyphen() {
        let x = evr("2:1.2.3-4.el9_3");
        assert_eq!(
            (x.epoch(), x.version(), x.release()),
            (2, "1.2.3", Some("4.el9_3"))
        );
        let y = evr("1.0");
        assert_eq!((y.epoch(), y.version(), y.release()), (0, "1.0", None));
        assert_eq!(evr("1.0-").release(), Some(""));
        assert_eq!(evr("1.0-").to_string(), "1.0-");
        let z = evr(":1.0-1");
        assert_eq!(z.epoch(), 0);
        assert_eq!(evr("0:1.0-1").to_string(), "1.0-1");
        assert_eq!(evr("7:1.0~rc1-2.fc40").to_string(), "7:1.0~rc1-2.fc40");
        assert_eq!(evr("1.0a-2-3").version(), "1.0a-2");
    }

    #[test]
    fn what_is_not_an_evr_is_refused() {
        for (text, error) in [
            ("", EvrError::Empty),
            (" ", EvrError::Empty),
            ("1.0 1", EvrError::Whitespace),
            ("1.0\u{1}", EvrError::Whitespace),
            ("99999999999:1.0", EvrError::BadEpoch("99999999999".into())),
            ("1:", EvrError::EmptyVersion),
            ("-1", EvrError::EmptyVersion),
            ("a:1.0", EvrError::ColonInVersion),
            ("1:2:3", EvrError::ColonInVersion),
        ] {
            assert_eq!(Evr::parse(text).err(), Some(error), "{text:?}");
        }
        assert_eq!(
            Evr::parse(&"1".repeat(MAX_LEN + 1)).err(),
            Some(EvrError::TooLong)
        );
    }

    #[test]
    fn vercmp_follows_rpm() {
        // Each pair: the first sorts strictly before the second.
        for (lower, higher) in [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0", "1.0^git1"),
            ("1.0^git1", "1.0.1"),
            ("1.0^", "1.0^1"),
            ("1.0~rc1", "1.0^"),
            ("a", "1"),
            ("1.a", "1.1"),
            ("1.0", "1.0a"),
            ("1.0", "1.0.0"),
            ("1.el9", "1.el9_3"),
            ("2.fc39", "2.fc40"),
            ("9", "18446744073709551616000"),
            ("A", "a"),
        ] {
            assert_eq!(vercmp(lower, higher), Ordering::Less, "{lower} < {higher}");
            assert_eq!(
                vercmp(higher, lower),
                Ordering::Greater,
                "{higher} > {lower}"
            );
        }
        for (a, b) in [
            ("1.01", "1.1"),
            ("1.0", "1_0"),
            ("1.0", "1..0"),
            ("1.0.", "1.0"),
            ("", ""),
            ("+", ""),
        ] {
            assert_eq!(vercmp(a, b), Ordering::Equal, "{a} = {b}");
        }
    }

    #[test]
    fn epoch_then_version_then_release() {
        assert!(evr("1:0.1-1") > evr("9.9-9"));
        assert!(evr("1.0-2") > evr("1.0-1"));
        assert!(evr("1.0") < evr("1.0-1"));
        // No release sorts before any release, even "~1" or "".
        assert!(evr("1.0") < evr("1.0-~1"));
        assert!(evr("1.0") < evr("1.0-"));
        assert!(evr("1.0-") > evr("1.0-~1"));
        assert_eq!(evr("0:1.01-1"), evr("1.1-1"));
        assert_eq!(evr("00:1.0-1"), evr("1.0-1"));
    }
}
