//! Package relationship fields (`Depends`, `Pre-Depends`, `Breaks`,
//! `Conflicts`, `Provides`), as deb-control(5) writes them:
//! `libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, foo:any`.
//!
//! A field is a comma-separated list of groups; a group is a `|`-separated
//! list of alternatives, any one of which satisfies it. Architecture
//! restrictions (`[amd64]`) and build profiles (`<!nocheck>`) only occur in
//! source packages' build relations; they are accepted and dropped, since
//! binary package indexes never carry them.

use std::fmt;

use super::version::{Version, VersionError};

/// The longest relation field accepted (the longest in Debian is a few
/// kilobytes).
pub const MAX_LEN: usize = 64 << 10;

/// `<<`, `<=`, `=`, `>=`, `>>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Less,
    LessEqual,
    Equal,
    GreaterEqual,
    Greater,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "<<" => Op::Less,
            // `<` and `>` are obsolete spellings of `<=` and `>=`.
            "<=" | "<" => Op::LessEqual,
            "=" => Op::Equal,
            ">=" | ">" => Op::GreaterEqual,
            ">>" => Op::Greater,
            _ => return None,
        })
    }

    /// Whether `version` satisfies `op wanted`.
    pub fn holds(self, version: &Version, wanted: &Version) -> bool {
        let order = version.cmp(wanted);
        match self {
            Op::Less => order.is_lt(),
            Op::LessEqual => order.is_le(),
            Op::Equal => order.is_eq(),
            Op::GreaterEqual => order.is_ge(),
            Op::Greater => order.is_gt(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Less => "<<",
            Op::LessEqual => "<=",
            Op::Equal => "=",
            Op::GreaterEqual => ">=",
            Op::Greater => ">>",
        })
    }
}

/// One alternative: a package name, an optional architecture qualifier
/// (`:any`, `:native`, `:amd64`) and an optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub arch: Option<String>,
    pub constraint: Option<(Op, Version)>,
}

impl Relation {
    /// Whether a package of this name at `version` satisfies the relation
    /// (the name is the caller's to match).
    pub fn accepts(&self, version: &Version) -> bool {
        match &self.constraint {
            None => true,
            Some((op, wanted)) => op.holds(version, wanted),
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(arch) = &self.arch {
            write!(f, ":{arch}")?;
        }
        if let Some((op, version)) = &self.constraint {
            write!(f, " ({op} {version})")?;
        }
        Ok(())
    }
}

/// A group of alternatives; any one satisfies it.
pub type Group = Vec<Relation>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    #[error("the field is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("an empty alternative in {0:?}")]
    Empty(String),
    #[error("a bad package name {0:?}")]
    BadName(String),
    #[error("a bad version constraint {0:?} (expected '(op version)')")]
    BadConstraint(String),
    #[error("a bad version in {text:?}: {error}")]
    BadVersion { text: String, error: VersionError },
}

/// Parses a relationship field. An empty field is an empty list.
pub fn parse(field: &str) -> Result<Vec<Group>, RelationError> {
    if field.len() > MAX_LEN {
        return Err(RelationError::TooLong);
    }
    let field = field.trim();
    if field.is_empty() {
        return Ok(Vec::new());
    }
    field
        .split(',')
        .map(|group| group.split('|').map(alternative).collect())
        .collect()
}

fn alternative(text: &str) -> Result<Relation, RelationError> {
    // Drop `[arch ...]` and `<profile ...>` restrictions.
    let mut kept = String::with_capacity(text.len());
    let mut in_square = false;
    let mut in_angle = false;
    let mut in_paren = false;
    for c in text.chars() {
        match c {
            '[' if !in_paren && !in_angle => in_square = true,
            ']' if in_square => in_square = false,
            '<' if !in_paren && !in_square => in_angle = true,
            '>' if in_angle => in_angle = false,
            _ if in_square || in_angle => {}
            _ => {
                match c {
                    '(' => in_paren = true,
                    ')' => in_paren = false,
                    _ => {}
                }
                kept.push(c);
            }
        }
    }
    let kept = kept.trim();
    if kept.is_empty() {
        return Err(RelationError::Empty(text.trim().to_owned()));
    }
    let (head, constraint) = match kept.split_once('(') {
        None => (kept, None),
        Some((head, rest)) => {
            let inner = rest
                .trim_end()
                .strip_suffix(')')
                .ok_or_else(|| RelationError::BadConstraint(kept.to_owned()))?;
            (head.trim_end(), Some(constraint_of(inner)?))
        }
    };
    let (name, arch) = match head.split_once(':') {
        None => (head, None),
        Some((name, arch)) => (name, Some(arch)),
    };
    if !valid_name(name) || arch.is_some_and(|a| !valid_name(a)) {
        return Err(RelationError::BadName(head.to_owned()));
    }
    Ok(Relation {
        name: name.to_owned(),
        arch: arch.map(str::to_owned),
        constraint,
    })
}

fn constraint_of(inner: &str) -> Result<(Op, Version), RelationError> {
    let inner = inner.trim();
    let split = inner
        .find(|c: char| !matches!(c, '<' | '>' | '='))
        .ok_or_else(|| RelationError::BadConstraint(inner.to_owned()))?;
    let (op, version) = inner.split_at(split);
    let op = Op::parse(op).ok_or_else(|| RelationError::BadConstraint(inner.to_owned()))?;
    let version = version.trim();
    let version = Version::parse(version).map_err(|error| RelationError::BadVersion {
        text: inner.to_owned(),
        error,
    })?;
    Ok((op, version))
}

/// Package names: lowercase letters, digits, `+ - .`; architecture names
/// are the same plus `-`. Upper case is accepted (old indexes carry it).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'))
}

/// The relationship fields of one binary package, as written (parsed when
/// needed: most entries of an index are never looked at).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    pub depends: String,
    pub pre_depends: String,
    pub breaks: String,
    pub conflicts: String,
    pub provides: String,
}

impl Relations {
    /// Reads the fields from a paragraph; a field that is not UTF-8 is an
    /// error.
    pub fn of(
        paragraph: &super::control::Paragraph<'_>,
    ) -> Result<Relations, super::control::SyntaxError> {
        let field = |name: &str| -> Result<String, super::control::SyntaxError> {
            Ok(paragraph.text(name)?.unwrap_or("").to_owned())
        };
        Ok(Relations {
            depends: field("Depends")?,
            pre_depends: field("Pre-Depends")?,
            breaks: field("Breaks")?,
            conflicts: field("Conflicts")?,
            provides: field("Provides")?,
        })
    }

    /// `Pre-Depends` and `Depends` together: what must be installed for the
    /// package to be configured.
    pub fn requirements(&self) -> Result<Vec<Group>, RelationError> {
        let mut groups = parse(&self.pre_depends)?;
        groups.extend(parse(&self.depends)?);
        Ok(groups)
    }

    /// `Breaks` and `Conflicts` together, each a single alternative.
    pub fn exclusions(&self) -> Result<Vec<Relation>, RelationError> {
        let mut excluded: Vec<Relation> = parse(&self.breaks)?.into_iter().flatten().collect();
        excluded.extend(parse(&self.conflicts)?.into_iter().flatten());
        Ok(excluded)
    }

    /// The virtual packages provided, each a single alternative
    /// (`Provides: mail-transport-agent, libfoo-abi (= 2)`).
    pub fn provided(&self) -> Result<Vec<Relation>, RelationError> {
        Ok(parse(&self.provides)?.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn groups_alternatives_constraints_and_qualifiers() {
        let groups =
            parse("libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, perl:any, python3 (<<3.12)")
                .unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0][0].name, "libc6");
        assert_eq!(groups[0][0].constraint, Some((Op::GreaterEqual, v("2.36"))));
        assert_eq!(groups[1].len(), 2);
        assert_eq!(groups[1][1].name, "debconf-2.0");
        assert_eq!(groups[1][1].constraint, None);
        assert_eq!(groups[2][0].arch.as_deref(), Some("any"));
        assert_eq!(groups[3][0].constraint, Some((Op::Less, v("3.12"))));
        assert_eq!(groups[1][0].to_string(), "debconf (>= 0.5)");
    }

    #[test]
    fn restrictions_are_dropped() {
        let groups = parse("foo [amd64] <!nocheck>, bar (= 1.0) [!i386] <stage1>").unwrap();
        assert_eq!(groups[0][0].name, "foo");
        assert_eq!(groups[1][0].constraint, Some((Op::Equal, v("1.0"))));
    }

    #[test]
    fn constraints_hold_as_dpkg_says() {
        let rel = &parse("foo (>> 1.0)").unwrap()[0][0];
        assert!(rel.accepts(&v("1.0-1")));
        assert!(!rel.accepts(&v("1.0")));
        assert!(!rel.accepts(&v("1.0~rc1")));
        let rel = &parse("foo (< 2)").unwrap()[0][0];
        assert!(rel.accepts(&v("2")), "'<' is the obsolete '<='");
    }

    #[test]
    fn bad_fields_are_errors() {
        assert!(parse("").unwrap().is_empty());
        assert!(matches!(parse("foo,,bar"), Err(RelationError::Empty(_))));
        assert!(matches!(
            parse("foo (>= 1"),
            Err(RelationError::BadConstraint(_))
        ));
        assert!(matches!(
            parse("foo (~ 1)"),
            Err(RelationError::BadConstraint(_))
        ));
        assert!(matches!(
            parse("foo (>= 1 2)"),
            Err(RelationError::BadVersion { .. })
        ));
        assert!(matches!(parse("fo o"), Err(RelationError::BadName(_))));
        assert!(matches!(parse("foo:"), Err(RelationError::BadName(_))));
    }
}
