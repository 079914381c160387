//! apt's preferences (`/etc/apt/preferences`, `/etc/apt/preferences.d/*`):
//! pins that raise or lower the priority of package versions, as
//! apt_preferences(5) describes them.
//!
//! ```text
//! Package: nginx nginx-*
//! Pin: release o=nginx,a=stable
//! Pin-Priority: 900
//! ```
//!
//! `Package: *` makes a general pin (it applies to every version of the
//! package files it matches); anything else is a specific pin for the named
//! packages (names may be globs or `/regular expressions/`). `Pin:` is one
//! of `version <pattern>`, `release <key=pattern,...>` (keys `a` archive,
//! `n` codename, `v` version, `o` origin, `l` label, `c` component, `b`
//! architecture; a value without a key is a version) or `origin <host>`.

use regex::Regex;

use super::control::{self, SyntaxError};

/// Largest preferences file accepted.
pub const MAX_SIZE: usize = 1 << 20;

/// Text matched as apt does: a glob (`*`, `?`, `[...]`), a `/regex/`, or
/// plain text compared exactly.
#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    Regex(Regex),
}

impl Pattern {
    fn new(text: &str) -> Result<Pattern, PreferencesError> {
        let bad = |_| PreferencesError::BadPattern(text.to_owned());
        if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
            let inner = &text[1..text.len() - 1];
            return regex::RegexBuilder::new(inner)
                .size_limit(1 << 20)
                .build()
                .map(Pattern::Regex)
                .map_err(bad);
        }
        if text.contains(['*', '?', '[']) {
            let mut expression = String::from("^");
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '*' => expression.push_str(".*"),
                    '?' => expression.push('.'),
                    '[' => {
                        expression.push('[');
                        for c in chars.by_ref() {
                            if c == ']' {
                                break;
                            }
                            if c == '\\' || c == '[' {
                                expression.push('\\');
                            }
                            expression.push(c);
                        }
                        expression.push(']');
                    }
                    c => expression.push_str(&regex::escape(&c.to_string())),
                }
            }
            expression.push('$');
            return regex::RegexBuilder::new(&expression)
                .size_limit(1 << 20)
                .build()
                .map(Pattern::Regex)
                .map_err(bad);
        }
        Ok(Pattern::Exact(text.to_owned()))
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == text,
            Pattern::Regex(regex) => regex.is_match(text),
        }
    }
}

/// What a pin selects.
#[derive(Debug, Clone)]
pub enum PinTarget {
    /// `Pin: version 1.2*`
    Version(Pattern),
    /// `Pin: release a=stable,o=Debian`: every condition must hold.
    Release(Vec<(ReleaseKey, Pattern)>),
    /// `Pin: origin deb.example.org`: the host the package file came from
    /// (empty for local `file:` repositories).
    Origin(Pattern),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseKey {
    Archive,
    Codename,
    Version,
    Origin,
    Label,
    Component,
    Architecture,
}

/// Which packages a pin applies to.
#[derive(Debug, Clone)]
pub enum PinPackages {
    /// `Package: *`: a general pin.
    All,
    /// A specific pin: any of these names or patterns.
    Named(Vec<Pattern>),
}

impl PinPackages {
    pub fn includes(&self, name: &str) -> bool {
        match self {
            PinPackages::All => true,
            PinPackages::Named(patterns) => patterns.iter().any(|p| p.matches(name)),
        }
    }
}

/// One pin record.
#[derive(Debug, Clone)]
pub struct Pin {
    pub packages: PinPackages,
    pub target: PinTarget,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferencesError {
    #[error("the preferences file is larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("line {line}: a record without {field}")]
    Missing { line: usize, field: &'static str },
    #[error("line {line}: Pin {value:?} is not 'version ...', 'release ...' or 'origin ...'")]
    BadPin { line: usize, value: String },
    #[error("line {line}: Pin-Priority {value:?} is not a whole number")]
    BadPriority { line: usize, value: String },
    #[error("bad pattern {0:?}")]
    BadPattern(String),
}

/// Parses one preferences file. A record that cannot be read is an error
/// (apt refuses such a file too, rather than ignore a pin the operator
/// meant).
pub fn parse(input: &[u8]) -> Result<Vec<Pin>, PreferencesError> {
    if input.len() > MAX_SIZE {
        return Err(PreferencesError::TooLarge);
    }
    let mut pins = Vec::new();
    for paragraph in control::paragraphs(input) {
        let paragraph = paragraph?;
        let line = paragraph.line;
        // A record of only Explanation fields is a comment block.
        let Some(packages) = paragraph.text("Package")? else {
            if paragraph.get("Pin").is_none() && paragraph.get("Pin-Priority").is_none() {
                continue;
            }
            return Err(PreferencesError::Missing {
                line,
                field: "Package",
            });
        };
        let pin = paragraph
            .text("Pin")?
            .ok_or(PreferencesError::Missing { line, field: "Pin" })?;
        let priority = paragraph
            .text("Pin-Priority")?
            .ok_or(PreferencesError::Missing {
                line,
                field: "Pin-Priority",
            })?;
        let priority =
            priority
                .trim()
                .parse::<i32>()
                .map_err(|_| PreferencesError::BadPriority {
                    line,
                    value: priority.to_owned(),
                })?;
        let packages = match packages.trim() {
            "*" => PinPackages::All,
            names => PinPackages::Named(
                names
                    .split_ascii_whitespace()
                    .map(Pattern::new)
                    .collect::<Result<_, _>>()?,
            ),
        };
        pins.push(Pin {
            packages,
            target: target(line, pin.trim())?,
            priority,
        });
    }
    Ok(pins)
}

fn target(line: usize, pin: &str) -> Result<PinTarget, PreferencesError> {
    let bad = || PreferencesError::BadPin {
        line,
        value: pin.to_owned(),
    };
    let (kind, rest) = pin.split_once(char::is_whitespace).ok_or_else(bad)?;
    let rest = rest.trim();
    match kind {
        "version" => Ok(PinTarget::Version(Pattern::new(rest)?)),
        "origin" => Ok(PinTarget::Origin(Pattern::new(rest.trim_matches('"'))?)),
        "release" => {
            let mut conditions = Vec::new();
            for part in rest.split(',') {
                let part = part.trim();
                let (key, value) = match part.split_once('=') {
                    None => (ReleaseKey::Version, part),
                    Some((key, value)) => {
                        let key = match key.trim() {
                            "a" => ReleaseKey::Archive,
                            "n" => ReleaseKey::Codename,
                            "v" => ReleaseKey::Version,
                            "o" => ReleaseKey::Origin,
                            "l" => ReleaseKey::Label,
                            "c" => ReleaseKey::Component,
                            "b" => ReleaseKey::Architecture,
                            _ => return Err(bad()),
                        };
                        (key, value.trim())
                    }
                };
                conditions.push((key, Pattern::new(value)?));
            }
            Ok(PinTarget::Release(conditions))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_general_and_kinds_of_pin() {
        let pins = parse(
            b"Explanation: keep nginx from upstream\nPackage: nginx nginx-* /^lib.*ssl/\n\
Pin: release o=nginx,a=stable\nPin-Priority: 900\n\n\
Package: *\nPin: release n=bookworm-backports\nPin-Priority: -10\n\n\
Package: kernel\nPin: version 6.1.*\nPin-Priority: 1001\n\n\
Package: x\nPin: origin \"deb.example.org\"\nPin-Priority: 50\n",
        )
        .unwrap();
        assert_eq!(pins.len(), 4);
        assert!(pins[0].packages.includes("nginx"));
        assert!(pins[0].packages.includes("nginx-common"));
        assert!(pins[0].packages.includes("libssl3"));
        assert!(!pins[0].packages.includes("apache2"));
        let PinTarget::Release(conditions) = &pins[0].target else {
            panic!("a release pin");
        };
        assert_eq!(conditions[0].0, ReleaseKey::Origin);
        assert!(conditions[1].1.matches("stable"));
        assert!(matches!(pins[1].packages, PinPackages::All));
        assert_eq!(pins[1].priority, -10);
        let PinTarget::Version(version) = &pins[2].target else {
            panic!("a version pin");
        };
        assert!(version.matches("6.1.112-1"));
        assert!(!version.matches("6.10.1-1"));
        let PinTarget::Origin(origin) = &pins[3].target else {
            panic!("an origin pin");
        };
        assert!(origin.matches("deb.example.org"));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(matches!(
            parse(b"Package: a\nPin: release a=x\n"),
            Err(PreferencesError::Missing {
                field: "Pin-Priority",
                ..
            })
        ));
        assert!(matches!(
            parse(b"Package: a\nPin: sometimes\nPin-Priority: 1\n"),
            Err(PreferencesError::BadPin { .. })
        ));
        assert!(matches!(
            parse(b"Package: a\nPin: release q=x\nPin-Priority: 1\n"),
            Err(PreferencesError::BadPin { .. })
        ));
        assert!(matches!(
            parse(b"Package: a\nPin: version 1\nPin-Priority: high\n"),
            Err(PreferencesError::BadPriority { .. })
        ));
        assert!(matches!(
            parse(b"Package: /(/\nPin: version 1\nPin-Priority: 1\n"),
            Err(PreferencesError::BadPattern(_))
        ));
        assert!(parse(b"Explanation: nothing here\n").unwrap().is_empty());
    }
}
