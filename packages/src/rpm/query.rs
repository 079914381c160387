//! The rows control asks `rpm -qa` and `dnf repoquery` to print: one
//! package a line as name, architecture and `[epoch:]version-release`.
//!
//! Both programs write their messages (warnings, "Unable to detect release
//! version") to the same pipe as their rows, so a row is framed: it starts
//! with [`ROW_START`] and ends with [`ROW_END`], tab-separated. A line that
//! does not start a row is a message and is returned as such; a line that
//! starts one but is not exactly a whole row (a message written into the
//! middle of it, a field missing, a version that does not parse) is an
//! error, never a guess.
//!
//! Versions are normalised through [`Evr`]'s `Display`, so they are spelled
//! as the inventory spells them (an explicit epoch 0 is not shown).

use super::version::{Evr, EvrError};

/// The first field of every row.
pub const ROW_START: &str = "palisade-row";
/// The last field of every row.
pub const ROW_END: &str = "end-row";

/// `rpm --queryformat` for one row per installed package (the epoch only
/// when the header has one; [`parse`] drops an explicit 0).
pub const RPM_QUERY_FORMAT: &str =
    "palisade-row\t%{NAME}\t%{ARCH}\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\tend-row\n";

/// `dnf repoquery --queryformat` for the same rows (dnf adds the newline).
pub const DNF_QUERY_FORMAT: &str = "palisade-row\t%{name}\t%{arch}\t%{evr}\tend-row";

/// Most rows accepted (a real database holds a few thousand packages).
pub const MAX_ROWS: usize = 200_000;

/// One package of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    /// `x86_64`, `noarch`, ...; `(none)` for `gpg-pubkey` entries.
    pub arch: String,
    /// As the inventory prints it: `[epoch:]version-release`.
    pub evr: String,
}

impl Row {
    /// An imported signing key, not a package (the inventory leaves these
    /// out, so changes to them are not reported either).
    pub fn is_gpg_pubkey(&self) -> bool {
        self.name == "gpg-pubkey"
    }
}

/// What the output held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pub rows: Vec<Row>,
    /// The lines that were not rows (the programs' own messages).
    pub messages: Vec<String>,
}

/// Why the output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("line {line}: a package row with {fields} fields instead of 5: {text:?}")]
    FieldCount {
        line: usize,
        fields: usize,
        text: String,
    },
    #[error("line {line}: a package row that does not end with {ROW_END:?}: {text:?}")]
    Unterminated { line: usize, text: String },
    #[error("line {line}: a package row with an empty {what}")]
    Empty { line: usize, what: &'static str },
    #[error("line {line}: the {what} {text:?} contains whitespace or a control character")]
    BadName {
        line: usize,
        what: &'static str,
        text: String,
    },
    #[error("line {line}: the version {text:?}: {error}")]
    BadVersion {
        line: usize,
        text: String,
        error: EvrError,
    },
    #[error("more than {MAX_ROWS} package rows")]
    TooMany,
}

/// Reads the output of `rpm -qa --queryformat` [`RPM_QUERY_FORMAT`] or
/// `dnf repoquery --queryformat` [`DNF_QUERY_FORMAT`].
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let mut query = Query::default();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.first() != Some(&ROW_START) {
            if !line.trim().is_empty() {
                query.messages.push(line.to_owned());
            }
            continue;
        }
        let shown = || line.chars().take(200).collect::<String>();
        if fields.last() != Some(&ROW_END) {
            return Err(QueryError::Unterminated {
                line: line_no,
                text: shown(),
            });
        }
        let [_, name, arch, evr, _] = fields[..] else {
            return Err(QueryError::FieldCount {
                line: line_no,
                fields: fields.len(),
                text: shown(),
            });
        };
        for (what, value) in [("name", name), ("architecture", arch)] {
            if value.is_empty() {
                return Err(QueryError::Empty {
                    line: line_no,
                    what,
                });
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(QueryError::BadName {
                    line: line_no,
                    what,
                    text: value.chars().take(200).collect(),
                });
            }
        }
        let evr = Evr::parse(evr).map_err(|error| QueryError::BadVersion {
            line: line_no,
            text: evr.chars().take(200).collect(),
            error,
        })?;
        if query.rows.len() == MAX_ROWS {
            return Err(QueryError::TooMany);
        }
        query.rows.push(Row {
            name: name.to_owned(),
            arch: arch.to_owned(),
            evr: evr.to_string(),
        });
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, arch: &str, evr: &str) -> Row {
        Row {
            name: name.into(),
            arch: arch.into(),
            evr: evr.into(),
        }
    }

    #[test]
    fn rows_are_read_and_messages_kept_apart() {
        let out = "Unable to detect release version (use '--releasever' to specify release version)\n\
                   palisade-row\tpal-a\tnoarch\t1.0-1\tend-row\n\
                   palisade-row\tbash\tx86_64\t5.2.26-3.fc40\tend-row\n\
                   palisade-row\tgpg-pubkey\t(none)\t5a03b4dd-5fb6bb38\tend-row\n";
        let query = parse(out).expect("parses");
        assert_eq!(
            query.rows,
            [
                row("pal-a", "noarch", "1.0-1"),
                row("bash", "x86_64", "5.2.26-3.fc40"),
                row("gpg-pubkey", "(none)", "5a03b4dd-5fb6bb38"),
            ]
        );
        assert!(query.rows[2].is_gpg_pubkey());
        assert_eq!(query.messages.len(), 1);
    }

    #[test]
    fn versions_are_spelled_as_the_inventory_spells_them() {
        let out = "palisade-row\ta\tnoarch\t0:1.0-1\tend-row\n\
                   palisade-row\tb\tnoarch\t2:1.0-1\tend-row\n";
        let query = parse(out).expect("parses");
        assert_eq!(query.rows[0].evr, "1.0-1");
        assert_eq!(query.rows[1].evr, "2:1.0-1");
    }

    #[test]
    fn a_broken_row_is_an_error_naming_its_line() {
        for (out, want) in [
            // A message written into the middle of a row.
            (
                "palisade-row\tpal-a\tnoarch\t1.0warning: x\n-1\tend-row\n",
                "line 1",
            ),
            ("x\npalisade-row\tpal-a\tnoarch\tend-row\n", "line 2"),
            ("palisade-row\t\tnoarch\t1.0-1\tend-row\n", "empty name"),
            ("palisade-row\ta b\tnoarch\t1.0-1\tend-row\n", "whitespace"),
            ("palisade-row\ta\tnoarch\tx:1.0-1\tend-row\n", "epoch"),
            ("palisade-row\ta\tnoarch\t1-0\textra\tend-row\n", "6 fields"),
        ] {
            let error = parse(out).expect_err(out).to_string();
            assert!(error.contains(want), "{out:?}: {error}");
        }
    }
}
