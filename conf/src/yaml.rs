//! YAML loading that remembers where every field is, so errors found after
//! parsing (validation) still point at a line.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};
use serde::de::DeserializeOwned;

use crate::error::{ConfigError, ConfigErrors};

/// Line of every node of a YAML document, by field path (`a.b[2].c`).
/// A mapping entry's line is its key's line.
#[derive(Debug, Default, Clone)]
pub struct LocationIndex {
    lines: HashMap<String, usize>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl LocationIndex {
    /// Indexes `text`; a syntax error is returned with its line.
    pub fn build(text: &str) -> Result<LocationIndex, (usize, String)> {
        let mut index = LocationIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| (e.marker().line(), e.info().to_owned()))?;
            let line = span.start.line();
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key: key @ None }) = stack.last_mut() {
                        let child = join(path, &value);
                        index.lines.entry(child).or_insert(line);
                        *key = Some(value.into_owned());
                    } else {
                        index.value_at(&mut stack, line);
                    }
                }
                Event::Alias(_) => index.value_at(&mut stack, line),
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = index.value_path(&stack, line);
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, index: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    advance(&mut stack);
                }
                _ => {}
            }
        }
        Ok(index)
    }

    /// Records the line of the value about to start and returns its path.
    fn value_path(&mut self, stack: &[Frame], line: usize) -> String {
        let path = match stack.last() {
            None => String::new(),
            Some(Frame::Map { path, key }) => join(path, key.as_deref().unwrap_or("?")),
            Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
        };
        self.lines.entry(path.clone()).or_insert(line);
        path
    }

    fn value_at(&mut self, stack: &mut [Frame], line: usize) {
        self.value_path(stack, line);
        advance(stack);
    }

    /// Line of `path`, or of its closest indexed parent.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// Whether the document has any content at all.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A value finished: a mapping now expects its next key, a sequence its next item.
fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, .. }) => *key = None,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

/// A parsed document and where its fields are.
pub struct Located<T> {
    pub value: T,
    pub index: LocationIndex,
}

/// Parses `text` (read from `source`) into `T`, rejecting unknown fields
/// (the types say `deny_unknown_fields`). An empty document is `T::default()`.
pub fn parse<T: DeserializeOwned + Default>(source: &str, text: &str) -> Result<Located<T>, ConfigErrors> {
    let index = LocationIndex::build(text).map_err(|(line, message)| ConfigError {
        source: source.to_owned(),
        line: Some(line),
        field: String::new(),
        message: format!("invalid YAML: {message}"),
    })?;
    if index.is_empty() {
        return Ok(Located {
            value: T::default(),
            index,
        });
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(deserializer) {
        Ok(value) => Ok(Located { value, index }),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.inner();
            let mut message = inner.to_string();
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            // serde_yaml_ng starts its message with its own (shorter) path.
            if let Some((head, rest)) = message.split_once(": ")
                && path.starts_with(head)
            {
                message = rest.to_owned();
            }
            let field = if path == "." { String::new() } else { path };
            let line = index
                .line_of(&field)
                .filter(|_| !field.is_empty())
                .or_else(|| inner.location().map(|l| l.line()));
            Err(ConfigError {
                source: source.to_owned(),
                line,
                field,
                message,
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
proxy:
  listen: 0.0.0.0:8080
products:
  - system_name: a
    rules:
      - pattern: /x
  - system_name: b
    models: [m1, m2]
";

    #[test]
    fn every_path_has_its_line() {
        let index = LocationIndex::build(DOC).unwrap();
        assert_eq!(index.line_of("proxy"), Some(1));
        assert_eq!(index.line_of("proxy.listen"), Some(2));
        assert_eq!(index.line_of("products[0]"), Some(4));
        assert_eq!(index.line_of("products[0].rules[0].pattern"), Some(6));
        assert_eq!(index.line_of("products[1].system_name"), Some(7));
        assert_eq!(index.line_of("products[1].models[1]"), Some(8));
        assert_eq!(
            index.line_of("products[1].missing"),
            Some(7),
            "falls back to the parent"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (line, _) = LocationIndex::build("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(line >= 2, "line {line}");
    }

    #[test]
    fn empty_documents_are_empty() {
        assert!(LocationIndex::build("# nothing here\n").unwrap().is_empty());
        assert!(!LocationIndex::build("a: 1").unwrap().is_empty());
    }
}
