//! Debian versions: `[epoch:]upstream[-revision]` and dpkg's ordering.
//!
//! The rules are those of deb-version(7) as dpkg implements them:
//!
//! - the epoch is the part before the first `:` (digits, 0 when absent);
//! - the revision is the part after the last `-` (empty when absent, and
//!   then equal to a revision of `0`);
//! - upstream and revision are compared in alternating runs: a run of
//!   non-digits character by character, where `~` sorts before anything
//!   (even the end of the string), letters before the other characters;
//!   then a run of digits, numerically (of any length: no overflow).
//!
//! Parsing refuses what dpkg refuses to install (an empty version, an epoch
//! that is not a number, an empty upstream part or revision, whitespace,
//! characters outside the allowed sets). An upstream part that does not
//! start with a digit is accepted: dpkg only warns about it, and such
//! versions exist in the wild.

use std::cmp::Ordering;
use std::fmt;

/// Longest version accepted (dpkg has no limit; real ones are < 100 bytes).
pub const MAX_LEN: usize = 256;

/// A parsed Debian version. Equality is dpkg's: `1.0` equals `1.0-0` and
/// `0:1.0`, so there is no `Hash` (it could not agree with `Eq`).
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u32,
    upstream: String,
    revision: String,
}

/// Why a string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the version is empty")]
    Empty,
    #[error("the version is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("the version contains whitespace")]
    Whitespace,
    #[error("the epoch {0:?} is not a number below 2^31")]
    BadEpoch(String),
    #[error("the upstream version is empty")]
    EmptyUpstream,
    #[error("the revision is empty (the version ends with '-')")]
    EmptyRevision,
    #[error("the upstream version contains {0:?} (allowed: letters, digits and . + ~ - :)")]
    BadUpstreamChar(char),
    #[error("the revision contains {0:?} (allowed: letters, digits and . + ~)")]
    BadRevisionChar(char),
}

impl Version {
    /// Parses `text` (surrounding whitespace is ignored, as dpkg does).
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(VersionError::TooLong);
        }
        if text.chars().any(char::is_whitespace) {
            return Err(VersionError::Whitespace);
        }
        let (epoch, rest) = match text.split_once(':') {
            Some((epoch, rest)) => {
                let valid = !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit());
                let value = epoch.parse::<u32>().ok().filter(|e| *e <= i32::MAX as u32);
                match value {
                    Some(value) if valid => (value, rest),
                    _ => return Err(VersionError::BadEpoch(epoch.to_owned())),
                }
            }
            None => (0, text),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err(VersionError::EmptyRevision),
            Some((upstream, revision)) => (upstream, revision),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream);
        }
        if let Some(c) = upstream
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".-+~:".contains(*c)))
        {
            return Err(VersionError::BadUpstreamChar(c));
        }
        if let Some(c) = revision
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".+~".contains(*c)))
        {
            return Err(VersionError::BadRevisionChar(c));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Empty when the version has none.
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

impl fmt::Display for Version {
    /// The version as dpkg writes it: the epoch only when it is not 0, or
    /// when the upstream part has a colon (without the epoch, that colon
    /// would read as one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 || self.upstream.contains(':') {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Version, VersionError> {
        Version::parse(s)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(&self.upstream, &other.upstream))
            .then_with(|| compare_part(&self.revision, &other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The weight of a character in a non-digit run; `None` is the end of the
/// string.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's comparison of one part (upstream or revision).
pub fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // A run of non-digits, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // A run of digits, as numbers of any length: skip leading zeros,
        // then the longer run is larger, else the first differing digit.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let (start_a, start_b) = (i, j);
        while a.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let (digits_a, digits_b) = (&a[start_a..i], &b[start_b..j]);
        let by_length = digits_a.len().cmp(&digits_b.len());
        if by_length != Ordering::Equal {
            return by_length;
        }
        let by_digits = digits_a.cmp(digits_b);
        if by_digits != Ordering::Equal {
            return by_digits;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parts_are_split_at_the_first_colon_and_the_last_hyphen() {
        let x = v("2:1.2-3-4ubuntu1");
        assert_eq!(
            (x.epoch(), x.upstream(), x.revision()),
            (2, "1.2-3", "4ubuntu1")
        );
        let y = v("1:2:3");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (1, "2:3", ""));
        assert_eq!(v(" 1.0 ").to_string(), "1.0");
        assert_eq!(v("0:1.0-1").to_string(), "1.0-1");
        assert_eq!(v("3:1.0").to_string(), "3:1.0");
        // Found by the fuzz target: without the epoch this would print as
        // a different version.
        assert_eq!(v("0:31.0:1-2").to_string(), "0:31.0:1-2");
    }

    #[test]
    fn what_dpkg_refuses_is_refused() {
        for (text, error) in [
            ("", VersionError::Empty),
            ("   ", VersionError::Empty),
            ("1.0 1", VersionError::Whitespace),
            (":1.0", VersionError::BadEpoch(String::new())),
            ("a:1.0", VersionError::BadEpoch("a".into())),
            ("-1:1.0", VersionError::BadEpoch("-1".into())),
            (
                "99999999999:1.0",
                VersionError::BadEpoch("99999999999".into()),
            ),
            ("1.0-", VersionError::EmptyRevision),
            ("-1", VersionError::EmptyUpstream),
            ("1:", VersionError::EmptyUpstream),
            ("1.0_1", VersionError::BadUpstreamChar('_')),
            ("1.0-1_2", VersionError::BadRevisionChar('_')),
            ("1.0-1:2", VersionError::BadEpoch("1.0-1".into())),
            ("1.0é", VersionError::BadUpstreamChar('é')),
        ] {
            assert_eq!(Version::parse(text).err(), Some(error), "{text:?}");
        }
        assert_eq!(
            Version::parse(&"1".repeat(MAX_LEN + 1)).err(),
            Some(VersionError::TooLong)
        );
        // dpkg only warns about these.
        assert_eq!(v("a1.0").upstream(), "a1.0");
    }

    #[test]
    fn ordering_follows_dpkg() {
        // Each pair: the first sorts strictly before the second.
        for (lower, higher) in [
            ("1.0", "1.1"),
            ("1.0", "1:0.1"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("1.0+", "1.0.1"),
            ("1.9", "1.10"),
            ("1.0-1", "1.0-2"),
            ("1.0-9", "1.0-10"),
            ("1.0-1", "1.0.1-1"),
            ("2.30-2", "2.30-2+deb12u1"),
            ("3.0.11-1~deb12u2", "3.0.11-1"),
            ("1.2.3", "1.2.3-0.1"),
            ("9", "18446744073709551616000"),
            ("1a", "1b"),
            ("1Z", "1a"),
        ] {
            assert!(v(lower) < v(higher), "{lower} < {higher}");
            assert!(v(higher) > v(lower), "{higher} > {lower}");
        }
        for (a, b) in [
            ("1.0", "1.0-0"),
            ("1.0", "0:1.0"),
            ("1.01", "1.1"),
            ("1.0-00", "1.0"),
        ] {
            assert_eq!(v(a).cmp(&v(b)), Ordering::Equal, "{a} = {b}");
            assert_eq!(v(a), v(b));
        }
    }
}
