//! What the proxy needs from a JSON request body, read in one borrowed
//! pass: the `model` (to route on the shared endpoint and to check it on a
//! product's), whether it asks for a stream, and everything that bounds
//! what it may spend (the `max_tokens` fields, `n`/`best_of`, how many
//! prompts a completions request carries).
//!
//! The body is read as the model server will read it, so the two cannot
//! disagree: a member given twice is refused (Python's `json` keeps the
//! last, a streaming reader the first), and the members that bound
//! spending must be plain integers (pydantic would read `"200"` or `2e2`
//! as 200, past a cap that only looked at numbers).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::rewrite::Endpoint;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// Completions generated per prompt: `n`, or `best_of` when larger.
    pub choices: u64,
    /// Prompts of a completions request: `prompt` as a list of texts or of
    /// token lists is one generation per entry.
    pub prompts: u64,
    /// The Responses API's `background: true`: generated after the answer,
    /// where the gateway cannot meter it.
    pub background: bool,
}

impl Default for RequestFacts {
    fn default() -> Self {
        RequestFacts {
            model: None,
            stream: false,
            max_tokens: None,
            max_completion_tokens: None,
            max_output_tokens: None,
            choices: 1,
            prompts: 1,
            background: false,
        }
    }
}

impl RequestFacts {
    /// The most completion tokens one generation of `endpoint` may ask
    /// for: the largest of the fields the upstream may honour (vLLM reads
    /// `max_completion_tokens or max_tokens`, so a `0` in the first lets
    /// the second through).
    pub fn max_tokens_for(&self, endpoint: Endpoint) -> Option<u64> {
        match endpoint {
            Endpoint::ChatCompletions => match (self.max_completion_tokens, self.max_tokens) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            Endpoint::Completions => self.max_tokens,
            Endpoint::Responses => self.max_output_tokens,
            Endpoint::Embeddings | Endpoint::Other => None,
        }
    }

    /// How many generations one request of `endpoint` runs: each may
    /// spend up to the `max_tokens` cap.
    pub fn generations(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::ChatCompletions => self.choices,
            Endpoint::Completions => self.choices.saturating_mul(self.prompts),
            _ => 1,
        }
    }
}

/// Why a body was refused, and the member at fault if one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRefused {
    pub message: String,
    pub param: Option<&'static str>,
}

/// Reads the facts of a JSON object body, checking the whole body is JSON.
pub fn inspect_json(body: &[u8]) -> Result<RequestFacts, BodyRefused> {
    // JSON is UTF-8 (RFC 8259); serde_json does not check the strings it skips.
    let text = std::str::from_utf8(body).map_err(|e| BodyRefused {
        message: format!("the body is not UTF-8: {e}"),
        param: None,
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut param = None;
    let facts = deserializer
        .deserialize_map(FactsVisitor { param: &mut param })
        .and_then(|facts| deserializer.end().map(|()| facts));
    facts.map_err(|e| BodyRefused {
        message: e.to_string(),
        param,
    })
}

struct FactsVisitor<'p> {
    /// The member being read when an error is raised.
    param: &'p mut Option<&'static str>,
}

impl<'de> Visitor<'de> for FactsVisitor<'_> {
    type Value = RequestFacts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestFacts, A::Error> {
        let mut facts = RequestFacts::default();
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        let (mut n, mut best_of) = (None, None);
        while let Some(key) = map.next_key_seed(MemberName)? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format!(
                    "the member `{key}` appears twice; send each member once"
                )));
            }
            *self.param = KNOWN.iter().copied().find(|k| *k == key);
            match key.as_ref() {
                "model" => facts.model = map.next_value::<Option<String>>()?,
                "stream" => facts.stream = map.next_value::<Option<bool>>()?.unwrap_or(false),
                "max_tokens" => facts.max_tokens = map.next_value_seed(Count("max_tokens"))?,
                "max_completion_tokens" => {
                    facts.max_completion_tokens = map.next_value_seed(Count("max_completion_tokens"))?
                }
                "max_output_tokens" => facts.max_output_tokens = map.next_value_seed(Count("max_output_tokens"))?,
                "n" => n = map.next_value_seed(Count("n"))?,
                "best_of" => best_of = map.next_value_seed(Count("best_of"))?,
                "prompt" => facts.prompts = map.next_value_seed(PromptCount)?,
                "background" => facts.background = map.next_value::<Option<bool>>()?.unwrap_or(false),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            *self.param = None;
            seen.insert(key);
        }
        facts.choices = n.unwrap_or(1).max(best_of.unwrap_or(1)).max(1);
        Ok(facts)
    }
}

/// A member's name, borrowed from the body unless it has escapes.
struct MemberName;

impl<'de> DeserializeSeed<'de> for MemberName {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberName {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(name.to_owned()))
    }
}

/// The members whose errors name them as OpenAI's `param`.
const KNOWN: [&str; 9] = [
    "model",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "best_of",
    "prompt",
    "background",
];

/// A count: a non-negative integer or `null` (absent), nothing else.
struct Count(&'static str);

impl<'de> DeserializeSeed<'de> for Count {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` as a non-negative integer or null", self.0)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<u64>, E> {
        Ok(Some(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<u64>, E> {
        u64::try_from(value)
            .map(Some)
            .map_err(|_| E::custom(format!("`{}` must be a non-negative integer, not {value}", self.0)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
}

/// How many generations `prompt` asks for: one for a text or a list of
/// token ids, one per entry of a list of texts or of token lists.
struct PromptCount;

impl<'de> DeserializeSeed<'de> for PromptCount {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptCount {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`prompt` as a string, a list of strings, or a list of token lists")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(1)
    }

    // Any other shape is one prompt at most; the model server judges it.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let (mut entries, mut numbers) = (0u64, 0u64);
        while let Some(is_number) = seq.next_element_seed(IsNumber)? {
            entries += 1;
            numbers += u64::from(is_number);
        }
        // A list of token ids is one prompt; anything else, one per entry.
        Ok(if numbers == entries { 1 } else { entries })
    }
}

/// Skips a value, saying whether it was a number.
struct IsNumber;

impl<'de> DeserializeSeed<'de> for IsNumber {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsNumber {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
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
        assert_eq!(facts.model.as_deref(), Some("café"));
        assert_eq!(facts.max_tokens_for(Endpoint::ChatCompletions), None);
        let facts = inspect_json(br#"{"max_tokens":9,"max_completion_tokens":7,"max_output_tokens":null}"#).unwrap();
        assert_eq!(facts.max_tokens_for(Endpoint::ChatCompletions), Some(9), "the larger");
        assert_eq!(facts.max_tokens_for(Endpoint::Completions), Some(9));
        assert_eq!(facts.max_tokens_for(Endpoint::Responses), None, "null: absent");
        assert_eq!(facts.max_tokens_for(Endpoint::Embeddings), None);
        assert_eq!(inspect_json(b"{}").unwrap(), RequestFacts::default());
        assert_eq!(
            inspect_json(br#"{"model":null,"stream":null}"#).unwrap(),
            RequestFacts::default()
        );
    }

    #[test]
    fn rejects_what_is_not_a_json_object() {
        for bad in [
            &b""[..],
            b"[1,2]",
            b"{\"model\":",
            b"{\"model\":5}",
            b"\xff",
            b"{} {}",
            b"{\"a\":NaN}",
        ] {
            assert!(inspect_json(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn spending_bounds_are_plain_integers() {
        for (bad, param) in [
            (&br#"{"max_tokens":"200"}"#[..], "max_tokens"),
            (br#"{"max_tokens":2e2}"#, "max_tokens"),
            (br#"{"max_tokens":200.0}"#, "max_tokens"),
            (br#"{"max_tokens":-1}"#, "max_tokens"),
            (br#"{"max_completion_tokens":true}"#, "max_completion_tokens"),
            (br#"{"max_output_tokens":[1]}"#, "max_output_tokens"),
            (br#"{"n":"4"}"#, "n"),
            (br#"{"best_of":1.5}"#, "best_of"),
            (br#"{"stream":"true"}"#, "stream"),
            (br#"{"background":"yes"}"#, "background"),
        ] {
            let refused = inspect_json(bad).unwrap_err();
            assert_eq!(
                refused.param,
                Some(param),
                "{}: {refused:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_member_given_twice_is_refused() {
        for bad in [
            &br#"{"max_tokens":5,"max_tokens":5000}"#[..],
            br#"{"max_tokens":5,"max_tok\u0065ns":5000}"#,
            br#"{"model":"a","model":"b"}"#,
            br#"{"stream_options":{},"stream_options":{"include_usage":false}}"#,
            br#"{"messages":[],"messages":[]}"#,
        ] {
            let refused = inspect_json(bad).unwrap_err();
            assert!(refused.message.contains("twice"), "{refused:?}");
        }
        // Nested objects are the model server's business.
        assert!(inspect_json(br#"{"messages":[{"a":1},{"a":2}],"x":{"a":1,"b":2}}"#).is_ok());
    }

    #[test]
    fn counts_generations() {
        let facts = |body: &[u8]| inspect_json(body).unwrap();
        assert_eq!(facts(br#"{"n":4}"#).generations(Endpoint::ChatCompletions), 4);
        assert_eq!(facts(br#"{"n":0}"#).generations(Endpoint::ChatCompletions), 1);
        assert_eq!(facts(br#"{"n":2,"best_of":5}"#).generations(Endpoint::Completions), 5);
        assert_eq!(facts(br#"{"prompt":"hi"}"#).generations(Endpoint::Completions), 1);
        assert_eq!(facts(br#"{"prompt":[1,2,3]}"#).generations(Endpoint::Completions), 1);
        assert_eq!(
            facts(br#"{"prompt":["a","b","c"],"n":2}"#).generations(Endpoint::Completions),
            6
        );
        assert_eq!(
            facts(br#"{"prompt":[[1,2],[3]]}"#).generations(Endpoint::Completions),
            2
        );
        assert_eq!(facts(br#"{"prompt":[]}"#).generations(Endpoint::Completions), 1);
        assert_eq!(
            facts(br#"{"prompt":["a","b"],"n":3}"#).generations(Endpoint::Responses),
            1
        );
        assert_eq!(facts(br#"{"prompt":{"a":[1]}}"#).generations(Endpoint::Completions), 1);
        assert!(facts(br#"{"background":true}"#).background);
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
