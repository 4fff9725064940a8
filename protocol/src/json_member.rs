//! Byte surgery on a JSON object: find a top-level member by name, cut it
//! out or set it, leaving every other byte as it was (no re-serialization,
//! so key order, spacing, escapes and number formats are preserved, and a
//! megabyte prompt is copied, not parsed into a tree). Used to strip `usage`
//! fields the client did not ask for from stream chunks and to add usage
//! options and `max_tokens` caps to request bodies.

use std::ops::Range;

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index just past the string starting at `i` (which is `"`); prompts
/// are long strings, so it jumps between quotes and backslashes.
fn skip_string(bytes: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < bytes.len() {
        i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        match bytes[i] {
            b'\\' => i += 2,
            _ => return Some(i + 1),
        }
    }
    None
}

/// The index just past the JSON value starting at `i`.
fn skip_value(bytes: &[u8], i: usize) -> Option<usize> {
    match *bytes.get(i)? {
        b'"' => skip_string(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < bytes.len() {
                match bytes[j] {
                    b'"' => {
                        j = skip_string(bytes, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < bytes.len() && !matches!(bytes[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// One top-level member: its key (with quotes), the whole member (key
/// start to value end) and its value.
#[derive(Debug, Clone)]
struct Member {
    key: Range<usize>,
    whole: Range<usize>,
    value: Range<usize>,
}

/// The top-level members in order.
fn members(bytes: &[u8]) -> Option<Vec<Member>> {
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(bytes, i + 1);
    let mut spans = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        return Some(spans);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(bytes, i)?;
        let key = i..key_end;
        let colon = skip_ws(bytes, key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, colon + 1);
        let value_end = skip_value(bytes, value_start)?;
        spans.push(Member {
            key: key.clone(),
            whole: key.start..value_end,
            value: value_start..value_end,
        });
        i = skip_ws(bytes, value_end);
        match bytes.get(i)? {
            b',' => i = skip_ws(bytes, i + 1),
            b'}' => return Some(spans),
            _ => return None,
        }
    }
}

/// `json` without its top-level member `name`; `None` when there is no
/// such member (or `json` is not an object this scanner understands).
pub fn remove_member(json: &[u8], name: &str) -> Option<Vec<u8>> {
    let spans = members(json)?;
    let index = spans.iter().position(|m| is_named(json, m, name))?;
    let cut = if index + 1 < spans.len() {
        // The member and the comma after it, up to the next key.
        spans[index].whole.start..spans[index + 1].whole.start
    } else if index > 0 {
        // The comma before it, from the end of the previous value.
        spans[index - 1].whole.end..spans[index].whole.end
    } else {
        spans[index].whole.clone()
    };
    let mut out = Vec::with_capacity(json.len() - cut.len());
    out.extend_from_slice(&json[..cut.start]);
    out.extend_from_slice(&json[cut.end..]);
    Some(out)
}

/// Keys compare by their decoded text, as the upstream's JSON parser reads
/// them: `"max_tok\u0065ns"` is `max_tokens`, or a client could slip a
/// field past the rewriter.
fn is_named(json: &[u8], member: &Member, name: &str) -> bool {
    let raw = &json[member.key.start + 1..member.key.end - 1];
    if raw.contains(&b'\\') {
        serde_json::from_slice::<String>(&json[member.key.clone()]).is_ok_and(|key| key == name)
    } else {
        raw == name.as_bytes()
    }
}

/// A top-level object scanned once, to read members and then rewrite it.
pub struct JsonObject<'a> {
    json: &'a [u8],
    members: Vec<Member>,
}

impl<'a> JsonObject<'a> {
    /// `None` when `json` is not an object this scanner understands (callers
    /// validate JSON first; the scanner only finds spans).
    pub fn scan(json: &'a [u8]) -> Option<JsonObject<'a>> {
        Some(JsonObject {
            json,
            members: members(json)?,
        })
    }

    /// The raw value of member `name` (the last one, as JSON parsers keep).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.members
            .iter()
            .rev()
            .find(|m| is_named(self.json, m, name))
            .map(|m| &self.json[m.value.clone()])
    }

    /// The object with each `(name, raw JSON value)` set: an existing
    /// member's value is replaced in place, a new member goes first.
    pub fn with(&self, edits: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let json = self.json;
        let mut replacements: Vec<(Range<usize>, &[u8])> = Vec::new();
        let mut added: Vec<u8> = Vec::new();
        for (name, value) in edits {
            match self.members.iter().rev().find(|m| is_named(json, m, name)) {
                Some(member) => replacements.push((member.value.clone(), value)),
                None => {
                    added.push(b'"');
                    added.extend_from_slice(name.as_bytes());
                    added.extend_from_slice(b"\":");
                    added.extend_from_slice(value);
                    added.push(b',');
                }
            }
        }
        if self.members.is_empty() {
            added.pop();
        }
        replacements.sort_by_key(|(range, _)| range.start);
        let open = skip_ws(json, 0) + 1;
        let mut out = Vec::with_capacity(json.len() + added.len() + 64);
        out.extend_from_slice(&json[..open]);
        out.extend_from_slice(&added);
        let mut at = open;
        for (range, value) in replacements {
            out.extend_from_slice(&json[at..range.start]);
            out.extend_from_slice(value);
            at = range.end;
        }
        out.extend_from_slice(&json[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(json: &str) -> Option<String> {
        remove_member(json.as_bytes(), "usage").map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn removes_the_member_wherever_it_is() {
        assert_eq!(
            strip(r#"{"a":1,"usage":{"x":[1,{"y":"}"}]},"b":2}"#).unwrap(),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(strip(r#"{"a":1, "usage": null}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(
            strip(r#"{"usage":{"t":1},"a":"x\"usage\""}"#).unwrap(),
            r#"{"a":"x\"usage\""}"#
        );
        assert_eq!(strip(r#" { "usage" : 5 } "#).unwrap(), r#" {  } "#);
        assert_eq!(strip(r#"{"a":{"usage":1}}"#), None, "only top-level members");
        assert_eq!(strip(r#"{"a":1}"#), None);
        assert_eq!(strip("[1]"), None);
        assert_eq!(strip(r#"{"a":1,"usage":"#), None);
    }

    #[test]
    fn vllm_chunks_stay_valid_json() {
        let chunk = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" hi"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":5,"total_tokens":6,"completion_tokens":1}}"#;
        let stripped = strip(chunk).unwrap();
        let value: serde_json::Value = serde_json::from_str(&stripped).unwrap();
        assert!(value.get("usage").is_none());
        assert_eq!(value["choices"][0]["delta"]["content"], " hi");
    }

    fn edit(json: &str, edits: &[(&str, &str)]) -> String {
        let edits: Vec<(&str, Vec<u8>)> = edits.iter().map(|(n, v)| (*n, v.as_bytes().to_vec())).collect();
        String::from_utf8(JsonObject::scan(json.as_bytes()).unwrap().with(&edits)).unwrap()
    }

    #[test]
    fn sets_members_in_place_or_first() {
        assert_eq!(
            edit(r#"{"model":"m", "max_tokens": 900,"x":1}"#, &[("max_tokens", "50")]),
            r#"{"model":"m", "max_tokens": 50,"x":1}"#
        );
        assert_eq!(
            edit(r#" {"a":1}"#, &[("s", r#"{"u":true}"#), ("a", "2")]),
            r#" {"s":{"u":true},"a":2}"#
        );
        assert_eq!(edit("{ }", &[("a", "1"), ("b", "2")]), r#"{"a":1,"b":2 }"#);
        // Duplicates: JSON parsers keep the last, so the last is edited.
        assert_eq!(edit(r#"{"a":1,"a":2}"#, &[("a", "3")]), r#"{"a":1,"a":3}"#);
        let object = JsonObject::scan(br#"{"a":"x\"}","b":[1,{"c":2}]}"#).unwrap();
        assert_eq!(object.get("b"), Some(&br#"[1,{"c":2}]"#[..]));
        assert_eq!(object.get("c"), None, "top level only");
        assert_eq!(
            edit(r#"{"max_tok\u0065ns":9000}"#, &[("max_tokens", "5")]),
            r#"{"max_tok\u0065ns":5}"#,
            "escaped keys are the members they spell"
        );
    }

    proptest::proptest! {
        #[test]
        fn edits_keep_json_valid_and_set_the_value(
            keys in proptest::collection::btree_set("[a-f]{1,3}", 0..5),
            name in "[a-f]{1,3}",
            value in 0u32..1000,
        ) {
            let json = format!(
                "{{{}}}",
                keys.iter().map(|k| format!("\"{k}\": [\"{k}\", {{\"n\": 1}}]")).collect::<Vec<_>>().join(" , ")
            );
            let out = JsonObject::scan(json.as_bytes()).unwrap().with(&[(name.as_str(), value.to_string().into_bytes())]);
            let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(&parsed[name.as_str()], &serde_json::json!(value));
            let expected = keys.len() + usize::from(!keys.contains(&name));
            proptest::prop_assert_eq!(parsed.as_object().unwrap().len(), expected);
        }

        #[test]
        fn never_panics_and_keeps_json_valid(input in "[{}\\[\\]\",:a-z0-9 \\\\]{0,60}") {
            if let Some(out) = remove_member(input.as_bytes(), "usage")
                && serde_json::from_str::<serde_json::Value>(&input).is_ok()
            {
                let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
                proptest::prop_assert!(parsed.get("usage").is_none());
            }
        }

        #[test]
        fn removes_usage_from_any_object(
            keys in proptest::collection::btree_set("[a-t]{1,6}", 0..5),
            position in 0usize..6,
        ) {
            let mut members: Vec<String> = keys.iter().map(|k| format!("\"{k}\":[1,\"{k}\"]")).collect();
            let position = position.min(members.len());
            members.insert(position, "\"usage\":{\"total_tokens\":3}".into());
            let json = format!("{{{}}}", members.join(","));
            let out = remove_member(json.as_bytes(), "usage").unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(parsed.as_object().unwrap().len(), keys.len());
        }
    }
}
