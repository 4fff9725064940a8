//! What the proxy needs from a JSON request body: the `model` (to route on
//! the shared endpoint) and whether it asks for a stream.

use std::borrow::Cow;

use serde::Deserialize;

use crate::rewrite::Endpoint;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

impl RequestFacts {
    /// The completion tokens the client allows `endpoint` to generate, read
    /// from the field the upstream honours (as [`crate::rewrite`] caps it).
    pub fn max_tokens_for(&self, endpoint: Endpoint) -> Option<u64> {
        match endpoint {
            Endpoint::ChatCompletions => self.max_completion_tokens.or(self.max_tokens),
            Endpoint::Completions => self.max_tokens,
            Endpoint::Responses => self.max_output_tokens,
            Endpoint::Embeddings | Endpoint::Other => None,
        }
    }
}

#[derive(Deserialize)]
struct Inspect<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, deserialize_with = "count")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    max_completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    max_output_tokens: Option<u64>,
}

/// A token count; any other JSON value (null, a string, a float) reads as
/// absent and is left for the upstream to judge.
fn count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(deserializer)?.as_u64())
}

/// Reads `model`, `stream` and the `max_tokens` fields of a JSON object
/// body, checking the whole body is JSON. A body that is not a JSON object
/// is an error whose text says where it broke.
pub fn inspect_json(body: &[u8]) -> Result<RequestFacts, String> {
    // JSON is UTF-8 (RFC 8259); serde_json does not check the strings it skips.
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let parsed: Inspect<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(RequestFacts {
        model: parsed.model.map(Cow::into_owned),
        stream: parsed.stream.unwrap_or(false),
        max_tokens: parsed.max_tokens,
        max_completion_tokens: parsed.max_completion_tokens,
        max_output_tokens: parsed.max_output_tokens,
    })
}

/// A `Content-Type` without its parameters (`; charset=…`).
fn essence(value: &[u8]) -> &[u8] {
    value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii()
}

/// Whether a `Content-Type` is `media_type`, parameters aside.
pub fn content_type_is(value: &[u8], media_type: &[u8]) -> bool {
    essence(value).eq_ignore_ascii_case(media_type)
}

/// Whether a `Content-Type` is JSON (`application/json`, `…+json`).
pub fn is_json_content_type(value: &[u8]) -> bool {
    let essence = essence(value);
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let facts =
            inspect_json(br#"{"messages":[{"role":"user","content":"hi \"there\""}],"model":"tiny","stream":true}"#)
                .unwrap();
        assert_eq!(facts.model.as_deref(), Some("tiny"));
        assert!(facts.stream);
        let facts = inspect_json(br#"{"model":"caf\u00e9"}"#).unwrap();
        assert_eq!(facts.max_tokens_for(Endpoint::ChatCompletions), None);
        let facts = inspect_json(br#"{"max_tokens":9,"max_completion_tokens":7,"max_output_tokens":"x"}"#).unwrap();
        assert_eq!(facts.max_tokens_for(Endpoint::ChatCompletions), Some(7));
        assert_eq!(facts.max_tokens_for(Endpoint::Completions), Some(9));
        assert_eq!(facts.max_tokens_for(Endpoint::Responses), None, "not a count: absent");
        assert_eq!(facts.max_tokens_for(Endpoint::Embeddings), None);
        let facts = inspect_json(br#"{"model":"caf\u00e9"}"#).unwrap();
        assert_eq!(facts.model.as_deref(), Some("café"));
        assert_eq!(inspect_json(b"{}").unwrap(), RequestFacts::default());
    }

    #[test]
    fn rejects_what_is_not_a_json_object() {
        for bad in [&b""[..], b"[1,2]", b"{\"model\":", b"{\"model\":5}", b"\xff"] {
            assert!(inspect_json(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn recognises_json_content_types() {
        assert!(is_json_content_type(b"application/json"));
        assert!(is_json_content_type(b"Application/JSON; charset=utf-8"));
        assert!(is_json_content_type(b"application/vnd.api+json"));
        assert!(!is_json_content_type(b"multipart/form-data; boundary=x"));
        assert!(!is_json_content_type(b"json"));
    }
}
