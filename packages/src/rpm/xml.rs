//! A small walk over an XML document for the repository metadata readers:
//! elements open and close with their local name and attributes, and each
//! element's own text is handed over when it closes.
//!
//! Built on quick-xml's pull parser over the borrowed bytes. It is strict
//! where it matters for untrusted input: end tags must match, the document
//! must close every element it opens, the text must be UTF-8, and only the
//! five predefined entities and character references are expanded (a DTD's
//! entities are not, so there is no entity expansion to blow up).

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// Deepest nesting accepted (the metadata formats use fewer than 8 levels).
pub const MAX_DEPTH: usize = 64;

/// Malformed XML, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML at byte {position}: {problem}")]
pub struct XmlError {
    pub position: u64,
    pub problem: String,
}

/// An element as it opens: its local name (without a namespace prefix) and
/// its attributes (names as written, values unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

impl Element {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One step of the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An element opens; [`Walker::path`] now ends with it.
    Open(Element),
    /// The innermost element closes, with its own text (that of its
    /// children excluded); [`Walker::path`] still ends with it.
    Close { name: String, text: String },
    /// The document ended, every element closed.
    End,
}

pub struct Walker<'a> {
    reader: Reader<&'a [u8]>,
    /// The names of the open elements and the text each has so far.
    open: Vec<(String, String)>,
    /// The element of the last `Close`, popped on the next step.
    closing: bool,
    seen_root: bool,
}

impl<'a> Walker<'a> {
    pub fn new(input: &'a [u8]) -> Walker<'a> {
        let mut reader = Reader::from_reader(input);
        let config = reader.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        Walker {
            reader,
            open: Vec::new(),
            closing: false,
            seen_root: false,
        }
    }

    /// The local names of the open elements, outermost first.
    pub fn path(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.open.iter().map(|(name, _)| name.as_str())
    }

    /// Whether the open elements are exactly `names`.
    pub fn at(&self, names: &[&str]) -> bool {
        self.open.len() == names.len() && self.path().zip(names).all(|(a, b)| a == *b)
    }

    fn error(&self, problem: impl ToString) -> XmlError {
        XmlError {
            position: self.reader.buffer_position(),
            problem: problem.to_string(),
        }
    }

    fn text(&mut self, text: Cow<'_, str>) {
        if let Some((_, own)) = self.open.last_mut() {
            own.push_str(&text);
        }
    }

    fn element(&self, start: &BytesStart<'_>) -> Result<Element, XmlError> {
        let name = start.local_name().as_ref().to_owned();
        let mut attributes = Vec::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| self.error(e))?;
            let key = attribute.key.as_ref().to_owned();
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| self.error(e))?
                .into_owned();
            attributes.push((key, value));
        }
        Ok(Element { name, attributes })
    }

    /// The next element opening or closing, or the end of the document.
    pub fn next_step(&mut self) -> Result<Step, XmlError> {
        if self.closing {
            self.open.pop();
            self.closing = false;
        }
        loop {
            let event = self.reader.read_event().map_err(|e| self.error(e))?;
            match event {
                Event::Start(start) => {
                    if self.open.is_empty() && self.seen_root {
                        return Err(self.error("a second root element"));
                    }
                    if self.open.len() >= MAX_DEPTH {
                        return Err(self.error(format!("elements nested deeper than {MAX_DEPTH}")));
                    }
                    let element = self.element(&start)?;
                    self.seen_root = true;
                    self.open.push((element.name.clone(), String::new()));
                    return Ok(Step::Open(element));
                }
                Event::End(_) => {
                    let Some((name, text)) = self.open.last_mut() else {
                        return Err(self.error("an end tag with no element open"));
                    };
                    self.closing = true;
                    return Ok(Step::Close {
                        name: name.clone(),
                        text: std::mem::take(text),
                    });
                }
                Event::Text(text) => {
                    let text = text.xml10_content();
                    if self.open.is_empty() && !text.trim().is_empty() {
                        return Err(self.error("text outside the root element"));
                    }
                    self.text(text);
                }
                Event::CData(data) => {
                    let data = data.xml10_content();
                    self.text(data);
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => quick_xml::escape::resolve_predefined_entity(&reference)
                            .ok_or_else(|| self.error(format!("unknown entity &{};", &*reference)))?
                            .to_owned(),
                        Err(e) => return Err(self.error(e)),
                    };
                    self.text(Cow::Owned(resolved));
                }
                Event::Eof => {
                    if let Some((name, _)) = self.open.last() {
                        return Err(self.error(format!("the document ends inside <{name}>")));
                    }
                    if !self.seen_root {
                        return Err(self.error("no root element"));
                    }
                    return Ok(Step::End);
                }
                // `Empty` never comes: empty elements are expanded into a
                // start and an end.
                Event::Empty(_)
                | Event::Comment(_)
                | Event::Decl(_)
                | Event::PI(_)
                | Event::DocType(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(input: &str) -> Result<Vec<Step>, XmlError> {
        let mut walker = Walker::new(input.as_bytes());
        let mut steps = Vec::new();
        loop {
            match walker.next_step()? {
                Step::End => return Ok(steps),
                step => steps.push(step),
            }
        }
    }

    #[test]
    fn elements_attributes_and_text_with_entities() {
        let steps =
            walk("<?xml version=\"1.0\"?><a x=\"1 &amp; 2\"><b/>t&lt;&#x41;<![CDATA[<c>]]></a>")
                .expect("walk");
        assert_eq!(
            steps,
            [
                Step::Open(Element {
                    name: "a".into(),
                    attributes: vec![("x".into(), "1 & 2".into())],
                }),
                Step::Open(Element {
                    name: "b".into(),
                    attributes: vec![],
                }),
                Step::Close {
                    name: "b".into(),
                    text: String::new(),
                },
                Step::Close {
                    name: "a".into(),
                    text: "t<A<c>".into(),
                },
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_comments_and_a_doctype_are_accepted() {
        let steps =
            walk("\u{feff}<?xml version=\"1.0\"?>\n<!DOCTYPE a>\n<!-- c --><a/>\n").expect("walk");
        assert_eq!(steps.len(), 2, "{steps:?}");
    }

    #[test]
    fn malformed_documents_are_errors() {
        for input in [
            "",
            "<a>",
            "<a></b>",
            "<a></a><b></b>",
            "<a>&custom;</a>",
            "<a x=\"1\" x=\"2\"/>",
            "text",
            "</a>",
            "<a><b></a>",
        ] {
            assert!(walk(input).is_err(), "{input:?} was accepted");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        let error = walk(&deep).expect_err("too deep");
        assert!(error.problem.contains("deeper"), "{error}");
    }
}
