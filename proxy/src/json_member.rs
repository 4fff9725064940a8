//! Byte surgery on a JSON object: find a top-level member by name and cut
//! it out, leaving every other byte as it was (no re-serialization, so key
//! order, spacing and number formats are preserved). Used to strip `usage`
//! fields the client did not ask for from stream chunks.

use std::ops::Range;

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index just past the string starting at `i` (which is `"`).
fn skip_string(bytes: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
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

/// Spans of the top-level members: `(key with quotes, key start..value end)`.
fn members(bytes: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
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
        spans.push((key.clone(), key.start..value_end));
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
    let index = spans
        .iter()
        .position(|(key, _)| &json[key.start + 1..key.end - 1] == name.as_bytes())?;
    let cut = if index + 1 < spans.len() {
        // The member and the comma after it, up to the next key.
        spans[index].1.start..spans[index + 1].1.start
    } else if index > 0 {
        // The comma before it, from the end of the previous value.
        spans[index - 1].1.end..spans[index].1.end
    } else {
        spans[index].1.clone()
    };
    let mut out = Vec::with_capacity(json.len() - cut.len());
    out.extend_from_slice(&json[..cut.start]);
    out.extend_from_slice(&json[cut.end..]);
    Some(out)
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

    proptest::proptest! {
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
