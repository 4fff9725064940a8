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
            let first = describe(source, &index, &error);
            let mut errors = vec![first];
            for (path, message) in further_errors::<T>(text) {
                if errors.iter().any(|e| e.field == path) {
                    continue;
                }
                errors.push(ConfigError {
                    source: source.to_owned(),
                    line: index.line_of(&path).filter(|_| !path.is_empty()),
                    field: path,
                    message,
                });
            }
            errors.sort_by_key(|e| e.line.unwrap_or(0));
            Err(ConfigErrors(errors))
        }
    }
}

/// The error serde stopped at, with its line.
fn describe(
    source: &str,
    index: &LocationIndex,
    error: &serde_path_to_error::Error<serde_yaml_ng::Error>,
) -> ConfigError {
    let path = error.path().to_string();
    let inner = error.inner();
    let message = clean_message(&path, &inner.to_string());
    let field = if path == "." { String::new() } else { path };
    let line = index
        .line_of(&field)
        .filter(|_| !field.is_empty())
        .or_else(|| inner.location().map(|l| l.line()));
    ConfigError {
        source: source.to_owned(),
        line,
        field,
        message,
    }
}

fn clean_message(path: &str, message: &str) -> String {
    let mut message = message.to_owned();
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    // serde_yaml_ng starts its message with its own (shorter) path.
    if let Some((head, rest)) = message.split_once(": ")
        && path.starts_with(head)
    {
        message = rest.to_owned();
    }
    message
}

/// Every type error of the document, not only the first: after each one
/// the offending node is taken out (its field falls back to its default, a
/// list item goes) and the document is read again. Paths are given in the
/// file's numbering, whatever items were taken out before.
fn further_errors<T: DeserializeOwned>(text: &str) -> Vec<(String, String)> {
    let Ok(mut value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return Vec::new();
    };
    let mut removed: Vec<(String, usize)> = Vec::new();
    let mut found: Vec<(String, String)> = Vec::new();
    for _ in 0..64 {
        // Read from text as the first pass does: serde_yaml_ng is more
        // lenient with plain scalars there than from a `Value`.
        let Ok(text) = serde_yaml_ng::to_string(&value) else {
            break;
        };
        let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
        let error = match serde_path_to_error::deserialize::<_, T>(deserializer) {
            Ok(_) => break,
            Err(error) => error,
        };
        let current = error.path().to_string();
        let current = if current == "." { String::new() } else { current };
        let path = in_file_numbering(&current, &removed);
        let message = clean_message(&current, &error.inner().to_string());
        // Taking a required field out leaves its object without it: that
        // is the field's error again, not a new one.
        let echo = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|field| found.iter().any(|(p, _)| *p == format!("{path}.{field}")));
        if !echo {
            found.push((path, message));
        }
        if !take_out(&mut value, &current, &mut removed) {
            break;
        }
    }
    found
}

/// The segments of `a.b[2].c`: keys and list indexes.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(Segment::Key(rest[..open].to_owned()));
            }
            rest = &rest[open..];
            while let Some(inner) = rest.strip_prefix('[') {
                let Some(close) = inner.find(']') else { break };
                match inner[..close].parse() {
                    Ok(i) => out.push(Segment::Index(i)),
                    Err(_) => out.push(Segment::Key(inner[..close].to_owned())),
                }
                rest = &inner[close + 1..];
            }
        } else {
            out.push(Segment::Key(rest.to_owned()));
        }
    }
    out
}

enum Segment {
    Key(String),
    Index(usize),
}

/// Removes the node at `path` (in the current numbering) from `value`,
/// remembering removed list items; false when there is nothing to remove.
fn take_out(value: &mut serde_yaml_ng::Value, path: &str, removed: &mut Vec<(String, usize)>) -> bool {
    let segments = segments(path);
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match segment {
            Segment::Key(key) => node.get_mut(key.as_str()),
            Segment::Index(i) => node.get_mut(*i),
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match (last, node) {
        (Segment::Key(key), serde_yaml_ng::Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        (Segment::Index(i), serde_yaml_ng::Value::Sequence(items)) if *i < items.len() => {
            items.remove(*i);
            let list = path[..path.rfind('[').unwrap_or(0)].to_owned();
            removed.push((list, *i));
            true
        }
        _ => false,
    }
}

/// `path` in the current numbering, back in the file's: every list item
/// taken out before shifted the items after it down by one.
fn in_file_numbering(path: &str, removed: &[(String, usize)]) -> String {
    let mut path = path.to_owned();
    for (list, index) in removed.iter().rev() {
        let prefix = format!("{list}[");
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        let Some(close) = rest.find(']') else { continue };
        let Ok(current) = rest[..close].parse::<usize>() else {
            continue;
        };
        if current >= *index {
            path = format!("{prefix}{}{}", current + 1, &rest[close..]);
        }
    }
    path
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
