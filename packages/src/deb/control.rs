//! deb822 paragraphs: the format of the dpkg status file and of apt's
//! `Packages` and `Release` indexes.
//!
//! A paragraph is a run of `Field: value` lines; a line starting with a
//! space or a tab continues the previous field; paragraphs are separated by
//! blank lines (lines of only spaces and tabs count as blank). Lines
//! starting with `#` are comments (deb822 allows them; dpkg never writes
//! them). Values are bytes: descriptions in old status files are not always
//! UTF-8, and only the fields a caller reads need to be text.
//!
//! Parsing is one pass, borrows from the input and allocates only the
//! field list of the current paragraph.

/// One field of a paragraph: its name and its value with the first line's
/// leading whitespace and the last line's trailing whitespace removed;
/// continuation lines are kept as they are (newlines included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// One paragraph: its fields in order and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    pub line: usize,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// The value of the first field named `name` (field names are
    /// case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value)
    }

    /// The value of `name` as text; `Err` when it is not UTF-8.
    pub fn text(&self, name: &str) -> Result<Option<&'a str>, SyntaxError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => std::str::from_utf8(value)
                .map(Some)
                .map_err(|_| SyntaxError {
                    line: self.line,
                    problem: Problem::NotUtf8(name.to_owned()),
                }),
        }
    }
}

/// What is wrong with a paragraph, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct SyntaxError {
    pub line: usize,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("a continuation line before any field")]
    ContinuationFirst,
    #[error("a line without ':' (expected 'Field: value')")]
    NoColon,
    #[error("an empty field name")]
    EmptyName,
    #[error("a field name with a space or a control character")]
    BadName,
    #[error("field {0} is not UTF-8")]
    NotUtf8(String),
}

/// The paragraphs of `input`, in order. A malformed paragraph is an error
/// at its line; the iterator then goes on with the next paragraph, so a
/// caller can skip one bad entry without losing the rest.
pub fn paragraphs(input: &[u8]) -> Paragraphs<'_> {
    Paragraphs {
        input,
        pos: 0,
        line: 0,
    }
}

/// Reads every paragraph of `input` with `entry`: what it accepts, and
/// what was wrong with the rest (a syntax error or `entry`'s own error),
/// so that one bad entry never hides the others.
pub fn entries<T, E: From<SyntaxError>>(
    input: &[u8],
    entry: impl Fn(&Paragraph<'_>) -> Result<T, E>,
) -> (Vec<T>, Vec<E>) {
    let mut accepted = Vec::new();
    let mut problems = Vec::new();
    for paragraph in paragraphs(input) {
        match paragraph.map_err(E::from).and_then(|p| entry(&p)) {
            Ok(value) => accepted.push(value),
            Err(problem) => problems.push(problem),
        }
    }
    (accepted, problems)
}

/// Iterator returned by [`paragraphs`].
pub struct Paragraphs<'a> {
    input: &'a [u8],
    pos: usize,
    /// Lines consumed so far.
    line: usize,
}

impl<'a> Paragraphs<'a> {
    /// The next line without its newline, or `None` at the end.
    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.input.len() {
            return None;
        }
        let rest = &self.input[self.pos..];
        let (line, used) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.pos += used;
        self.line += 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Skips to the next blank line (after an error).
    fn skip_paragraph(&mut self) {
        while let Some(line) = self.next_line() {
            if is_blank(line) {
                return;
            }
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| *b == b' ' || *b == b'\t')
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut fields: Vec<Field<'a>> = Vec::new();
        let mut start_line = 0;
        // Where the current field's value starts in `input` (to extend it
        // over continuation lines without copying).
        let mut value_start = 0;
        loop {
            let line_start = self.pos;
            let Some(line) = self.next_line() else {
                break;
            };
            if is_blank(line) {
                if fields.is_empty() {
                    continue;
                }
                break;
            }
            if line.first() == Some(&b'#') {
                continue;
            }
            if start_line == 0 {
                start_line = self.line;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                let Some(last) = fields.last_mut() else {
                    let line = self.line;
                    self.skip_paragraph();
                    return Some(Err(SyntaxError {
                        line,
                        problem: Problem::ContinuationFirst,
                    }));
                };
                let end = line_start + line.len();
                last.value = self.input[value_start..end].trim_ascii();
                continue;
            }
            let error = |problem| {
                Some(Err(SyntaxError {
                    line: self.line,
                    problem,
                }))
            };
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                let e = error(Problem::NoColon);
                self.skip_paragraph();
                return e;
            };
            let name = &line[..colon];
            if name.is_empty() {
                let e = error(Problem::EmptyName);
                self.skip_paragraph();
                return e;
            }
            if name.iter().any(|b| *b <= b' ' || *b == 0x7f) {
                let e = error(Problem::BadName);
                self.skip_paragraph();
                return e;
            }
            value_start = line_start + colon + 1;
            fields.push(Field {
                name,
                value: line[colon + 1..].trim_ascii(),
            });
        }
        if fields.is_empty() {
            return None;
        }
        Some(Ok(Paragraph {
            line: start_line,
            fields,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Vec<Result<Paragraph<'_>, SyntaxError>> {
        paragraphs(input.as_bytes()).collect()
    }

    #[test]
    fn fields_continuations_and_paragraphs() {
        let input = "Package: a\nDescription: short\n long line\n .\n more\nVersion:1.0  \n\n\n \t\nPackage: b\r\nStatus: install ok installed\r\n";
        let ps = all(input);
        assert_eq!(ps.len(), 2);
        let a = ps[0].as_ref().expect("a");
        assert_eq!(a.line, 1);
        assert_eq!(a.get("package"), Some(&b"a"[..]));
        assert_eq!(
            a.get("Description"),
            Some(&b"short\n long line\n .\n more"[..])
        );
        assert_eq!(a.text("VERSION"), Ok(Some("1.0")));
        assert_eq!(a.get("Missing"), None);
        let b = ps[1].as_ref().expect("b");
        assert_eq!(b.line, 10);
        assert_eq!(b.text("Status"), Ok(Some("install ok installed")));
    }

    #[test]
    fn a_bad_paragraph_is_an_error_at_its_line_and_the_rest_survives() {
        let ps = all(
            "Package: a\nno colon here\nVersion: 1\n\n continued\n\nPackage: c\n: x\n\nPackage: d\n",
        );
        assert_eq!(
            ps[0].as_ref().err(),
            Some(&SyntaxError {
                line: 2,
                problem: Problem::NoColon
            })
        );
        assert_eq!(
            ps[1].as_ref().err(),
            Some(&SyntaxError {
                line: 5,
                problem: Problem::ContinuationFirst
            })
        );
        assert_eq!(
            ps[2].as_ref().err(),
            Some(&SyntaxError {
                line: 8,
                problem: Problem::EmptyName
            })
        );
        assert_eq!(
            ps[3].as_ref().ok().and_then(|p| p.get("Package")),
            Some(&b"d"[..])
        );
        assert_eq!(ps.len(), 4);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_and_reported_only_when_read_as_text() {
        let input = b"Package: a\nDescription: caf\xe9\n";
        let p = paragraphs(input).next().expect("one").expect("ok");
        assert_eq!(p.get("Description"), Some(&b"caf\xe9"[..]));
        assert_eq!(
            p.text("Description").err().map(|e| e.problem),
            Some(Problem::NotUtf8("Description".into()))
        );
        assert_eq!(p.text("Package"), Ok(Some("a")));
    }

    #[test]
    fn comments_and_empty_input() {
        assert!(all("").is_empty());
        assert!(all("\n\n  \n").is_empty());
        let ps = all("# a comment\nPackage: a\n# inside\nVersion: 1\n");
        let p = ps[0].as_ref().expect("ok");
        assert_eq!(p.fields.len(), 2);
        assert_eq!(p.line, 2);
    }
}
