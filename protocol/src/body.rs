//! What the proxy needs from a JSON request body, read in one borrowed
//! pass: the `model` (to route on the shared endpoint and to check it on a
//! product's), whether it asks for a stream, and everything that bounds
//! what it may spend (the `max_tokens` fields, `n`/`best_of`, how many
//! prompts a completions request carries).
//!
//! The body is read as the model server will read it, so the two cannot
//! disagree: a member given twice is refused (Python's `json` keeps the
//! last, a streaming reader the first), and the members that bound
//! spending must be numbers with a whole value (pydantic would read
//! `"200"` as 200, past a cap that only looked at numbers; `2e2` and
//! `200.0` it reads as 200, and so does the gateway, see
//! [`whole_number`]).
//!
//! A refusal says what OpenAI says: which member has the wrong type and
//! what it got (`Invalid type for 'max_tokens': expected an integer, but
//! got a string instead.`), or that the body is not JSON at all.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::prompt::{Bytes, PromptMember, PromptTally, tally_member};
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
    /// The endpoint whose request the members make (`messages`: chat,
    /// `prompt`: completions, `input`: embeddings), as vLLM's
    /// `/invocations` tells them apart.
    pub invoked: Option<Endpoint>,
    /// What the prompt holds ([`crate::prompt`]).
    pub prompt: PromptTally,
    /// A member that makes the server add to the prompt what the gateway
    /// cannot see to bound: context it stored (`previous_response_id`,
    /// `conversation`) or a template given with the request
    /// (`chat_template`, code that may render anything).
    pub unboundable: Option<&'static str>,
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
            invoked: None,
            prompt: PromptTally::default(),
            unboundable: None,
        }
    }
}

impl RequestFacts {
    /// The most completion tokens one generation of `endpoint` may ask
    /// for, read as the server reads its fields ([`Endpoint::bound_asked`]).
    pub fn max_tokens_for(&self, endpoint: Endpoint) -> Option<u64> {
        match endpoint {
            Endpoint::ChatCompletions => endpoint.bound_asked(&[self.max_completion_tokens, self.max_tokens]),
            Endpoint::Completions => endpoint.bound_asked(&[self.max_tokens]),
            Endpoint::Responses => endpoint.bound_asked(&[self.max_output_tokens]),
            Endpoint::Embeddings | Endpoint::Invocations | Endpoint::Other => None,
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

/// Why a body was refused, in OpenAI's words, the member at fault if one
/// is, and OpenAI's `code` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRefused {
    pub message: String,
    pub param: Option<Cow<'static, str>>,
    /// `invalid_json` (not JSON), `invalid_type` (a member's or the body's
    /// type), `integer_below_min_value`, `duplicate_member`.
    pub code: &'static str,
}

impl BodyRefused {
    fn syntax(detail: String) -> BodyRefused {
        BodyRefused {
            message: format!("We could not parse the JSON body of your request ({detail}); it must be a JSON object."),
            param: None,
            code: "invalid_json",
        }
    }

    fn wrong_type(member: Option<&'static str>, expected: &str, got: &str) -> BodyRefused {
        let what = member.map_or_else(|| "the request body".to_owned(), |m| format!("'{m}'"));
        BodyRefused {
            message: format!("Invalid type for {what}: expected {expected}, but got {got} instead."),
            param: member.map(Cow::Borrowed),
            code: "invalid_type",
        }
    }
}

/// A number's value as a count when it is whole and fits, as pydantic
/// reads `2.0` or `2e2` into an integer field; `None` for `1.5`, negative
/// numbers, infinities and values past `u64`.
pub fn whole_number(value: f64) -> Option<u64> {
    // 2^64 is exactly representable; anything at or past it does not fit.
    (value.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&value)).then_some(value as u64)
}

/// OpenAI's name for what a JSON value is.
fn kind_of(unexpected: &de::Unexpected<'_>) -> &'static str {
    match unexpected {
        de::Unexpected::Bool(_) => "a boolean",
        de::Unexpected::Unsigned(_) | de::Unexpected::Signed(_) => "an integer",
        de::Unexpected::Float(_) => "a decimal",
        de::Unexpected::Str(_) | de::Unexpected::Char(_) => "a string",
        de::Unexpected::Unit | de::Unexpected::Option => "null",
        de::Unexpected::Seq => "an array",
        de::Unexpected::Map => "an object",
        _ => "another type",
    }
}

/// Reads the facts of a JSON object body, checking the whole body is JSON.
pub fn inspect_json(body: &[u8]) -> Result<RequestFacts, BodyRefused> {
    // JSON is UTF-8 (RFC 8259); serde_json does not check the strings it skips.
    let text = std::str::from_utf8(body).map_err(|e| BodyRefused::syntax(format!("it is not UTF-8: {e}")))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut refusal = None;
    let facts = deserializer
        .deserialize_any(FactsVisitor { refusal: &mut refusal })
        .and_then(|facts| deserializer.end().map(|()| facts));
    facts.map_err(|e| match refusal {
        Some(refused) => refused,
        None => BodyRefused::syntax(e.to_string()),
    })
}

struct FactsVisitor<'r> {
    /// Set with OpenAI's words when the body is JSON but not what the
    /// gateway reads (the deserializer's own error only stops it).
    refusal: &'r mut Option<BodyRefused>,
}

impl FactsVisitor<'_> {
    fn not_an_object<T, E: de::Error>(self, got: de::Unexpected<'_>) -> Result<T, E> {
        *self.refusal = Some(BodyRefused::wrong_type(None, "an object", kind_of(&got)));
        Err(E::custom("the body is not a JSON object"))
    }
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
        let (mut messages, mut prompt, mut input) = (false, false, false);
        let refusal = self.refusal;
        while let Some(key) = map.next_key_seed(MemberName)? {
            if seen.contains(&key) {
                *refusal = Some(BodyRefused {
                    message: format!("The member '{key}' appears twice; send each member once."),
                    param: Some(Cow::Owned(key.clone().into_owned())),
                    code: "duplicate_member",
                });
                return Err(de::Error::custom("a member appears twice"));
            }
            match key.as_ref() {
                "model" => facts.model = map.next_value_seed(Member::new(refusal, "model", Want::Text))?.text(),
                "stream" => facts.stream = map.next_value_seed(Member::new(refusal, "stream", Want::Flag))?.flag(),
                "max_tokens" => {
                    facts.max_tokens = map
                        .next_value_seed(Member::new(refusal, "max_tokens", Want::Count))?
                        .count()
                }
                "max_completion_tokens" => {
                    facts.max_completion_tokens = map
                        .next_value_seed(Member::new(refusal, "max_completion_tokens", Want::Count))?
                        .count()
                }
                "max_output_tokens" => {
                    facts.max_output_tokens = map
                        .next_value_seed(Member::new(refusal, "max_output_tokens", Want::Count))?
                        .count()
                }
                "n" => n = map.next_value_seed(Member::new(refusal, "n", Want::Count))?.count(),
                "best_of" => {
                    best_of = map
                        .next_value_seed(Member::new(refusal, "best_of", Want::Count))?
                        .count()
                }
                "prompt" => {
                    prompt = true;
                    let (prompts, tally) = map.next_value_seed(PromptMember(&Bytes))?;
                    facts.prompts = prompts;
                    facts.prompt.add(tally);
                }
                "previous_response_id" | "conversation" | "chat_template" => {
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        facts.unboundable = UNBOUNDABLE.iter().copied().find(|m| *m == key);
                    }
                }
                "background" => {
                    facts.background = map
                        .next_value_seed(Member::new(refusal, "background", Want::Flag))?
                        .flag()
                }
                other => {
                    messages |= other == "messages";
                    input |= other == "input";
                    match tally_member(other, &mut map, &Bytes)? {
                        Some(tally) => facts.prompt.add(tally),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
            }
            seen.insert(key);
        }
        facts.choices = n.unwrap_or(1).max(best_of.unwrap_or(1)).max(1);
        facts.invoked = if messages {
            Some(Endpoint::ChatCompletions)
        } else if prompt {
            Some(Endpoint::Completions)
        } else if input {
            Some(Endpoint::Embeddings)
        } else {
            None
        };
        Ok(facts)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RequestFacts, A::Error> {
        self.not_an_object(de::Unexpected::Seq)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<RequestFacts, E> {
        self.not_an_object(de::Unexpected::Str(value))
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<RequestFacts, E> {
        self.not_an_object(de::Unexpected::Bool(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<RequestFacts, E> {
        self.not_an_object(de::Unexpected::Unsigned(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<RequestFacts, E> {
        self.not_an_object(de::Unexpected::Signed(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<RequestFacts, E> {
        self.not_an_object(de::Unexpected::Float(value))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RequestFacts, E> {
        self.not_an_object(de::Unexpected::Unit)
    }
}

/// The members [`RequestFacts::unboundable`] names.
const UNBOUNDABLE: [&str; 3] = ["previous_response_id", "conversation", "chat_template"];

/// What a known member must hold (`null` always stands for absent).
#[derive(Clone, Copy)]
enum Want {
    Text,
    Flag,
    /// A non-negative whole number.
    Count,
}

impl Want {
    fn expected(self) -> &'static str {
        match self {
            Want::Text => "a string",
            Want::Flag => "a boolean",
            Want::Count => "an integer",
        }
    }
}

/// A known member's value.
enum MemberValue {
    Absent,
    Text(String),
    Flag(bool),
    Count(u64),
}

impl MemberValue {
    fn text(self) -> Option<String> {
        match self {
            MemberValue::Text(text) => Some(text),
            _ => None,
        }
    }
    fn flag(self) -> bool {
        matches!(self, MemberValue::Flag(true))
    }
    fn count(self) -> Option<u64> {
        match self {
            MemberValue::Count(count) => Some(count),
            _ => None,
        }
    }
}

/// Reads one known member, refusing another type in OpenAI's words.
struct Member<'r> {
    name: &'static str,
    want: Want,
    refusal: &'r mut Option<BodyRefused>,
}

impl<'r> Member<'r> {
    fn new(refusal: &'r mut Option<BodyRefused>, name: &'static str, want: Want) -> Member<'r> {
        Member { name, want, refusal }
    }

    fn refuse<E: de::Error>(self, got: de::Unexpected<'_>) -> Result<MemberValue, E> {
        *self.refusal = Some(BodyRefused::wrong_type(
            Some(self.name),
            self.want.expected(),
            kind_of(&got),
        ));
        Err(E::custom("a member has the wrong type"))
    }

    fn count<E: de::Error>(self, value: Option<u64>, got: de::Unexpected<'_>) -> Result<MemberValue, E> {
        match (self.want, value) {
            (Want::Count, Some(count)) => Ok(MemberValue::Count(count)),
            _ => self.refuse(got),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = MemberValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<MemberValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = MemberValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` as {} or null", self.name, self.want.expected())
    }

    fn visit_unit<E: de::Error>(self) -> Result<MemberValue, E> {
        Ok(MemberValue::Absent)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<MemberValue, E> {
        match self.want {
            Want::Text => Ok(MemberValue::Text(value.to_owned())),
            _ => self.refuse(de::Unexpected::Str(value)),
        }
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<MemberValue, E> {
        match self.want {
            Want::Flag => Ok(MemberValue::Flag(value)),
            _ => self.refuse(de::Unexpected::Bool(value)),
        }
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<MemberValue, E> {
        self.count(Some(value), de::Unexpected::Unsigned(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<MemberValue, E> {
        if let (Want::Count, Err(_)) = (self.want, u64::try_from(value)) {
            *self.refusal = Some(BodyRefused {
                message: format!(
                    "Invalid '{}': integer below minimum value. Expected a value >= 0, but got {value} instead.",
                    self.name
                ),
                param: Some(Cow::Borrowed(self.name)),
                code: "integer_below_min_value",
            });
            return Err(E::custom("a count is negative"));
        }
        self.count(u64::try_from(value).ok(), de::Unexpected::Signed(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<MemberValue, E> {
        self.count(whole_number(value), de::Unexpected::Float(value))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<MemberValue, A::Error> {
        self.refuse(de::Unexpected::Seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<MemberValue, A::Error> {
        self.refuse(de::Unexpected::Map)
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

/// Whether a body starts like a JSON object or array: a server reads it as
/// JSON whatever its `Content-Type`, so it is checked as JSON.
pub fn looks_like_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
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
        for bad in [&b""[..], b"[1,2]", b"{\"model\":", b"\xff", b"{} {}", b"{\"a\":NaN}"] {
            assert!(inspect_json(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn spending_bounds_are_whole_numbers() {
        for (bad, param, message) in [
            (
                &br#"{"max_tokens":"200"}"#[..],
                "max_tokens",
                "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
            ),
            (
                br#"{"max_tokens":200.5}"#,
                "max_tokens",
                "Invalid type for 'max_tokens': expected an integer, but got a decimal instead.",
            ),
            (
                br#"{"max_tokens":-1}"#,
                "max_tokens",
                "Invalid 'max_tokens': integer below minimum value. Expected a value >= 0, but got -1 instead.",
            ),
            (
                br#"{"max_completion_tokens":true}"#,
                "max_completion_tokens",
                "Invalid type for 'max_completion_tokens': expected an integer, but got a boolean instead.",
            ),
            (
                br#"{"max_output_tokens":[1]}"#,
                "max_output_tokens",
                "Invalid type for 'max_output_tokens': expected an integer, but got an array instead.",
            ),
            (
                br#"{"n":"4"}"#,
                "n",
                "Invalid type for 'n': expected an integer, but got a string instead.",
            ),
            (
                br#"{"n":1e300}"#,
                "n",
                "Invalid type for 'n': expected an integer, but got a decimal instead.",
            ),
            (
                br#"{"best_of":1.5}"#,
                "best_of",
                "Invalid type for 'best_of': expected an integer, but got a decimal instead.",
            ),
            (
                br#"{"stream":"true"}"#,
                "stream",
                "Invalid type for 'stream': expected a boolean, but got a string instead.",
            ),
            (
                br#"{"background":1}"#,
                "background",
                "Invalid type for 'background': expected a boolean, but got an integer instead.",
            ),
            (
                br#"{"model":5}"#,
                "model",
                "Invalid type for 'model': expected a string, but got an integer instead.",
            ),
            (
                br#"{"model":{"a":1}}"#,
                "model",
                "Invalid type for 'model': expected a string, but got an object instead.",
            ),
        ] {
            let refused = inspect_json(bad).unwrap_err();
            let body = String::from_utf8_lossy(bad);
            assert_eq!(refused.param.as_deref(), Some(param), "{body}: {refused:?}");
            assert_eq!(refused.message, message, "{body}");
            assert_ne!(refused.code, "invalid_json", "{body}: valid JSON is not called invalid");
        }
        // Whole decimals are read as pydantic reads them.
        let facts = inspect_json(br#"{"n":2.0,"max_tokens":2e2,"best_of":1.0,"stream":null}"#).unwrap();
        assert_eq!((facts.choices, facts.max_tokens, facts.stream), (2, Some(200), false));
        assert_eq!(whole_number(18_446_744_073_709_551_616.0), None);
        assert_eq!(whole_number(f64::INFINITY), None);
        assert_eq!(whole_number(-0.0), Some(0));
    }

    #[test]
    fn refusals_say_what_the_body_is() {
        for (bad, message) in [
            (
                &b"[1,2]"[..],
                "Invalid type for the request body: expected an object, but got an array instead.",
            ),
            (
                b"\"x\"",
                "Invalid type for the request body: expected an object, but got a string instead.",
            ),
            (
                b"42",
                "Invalid type for the request body: expected an object, but got an integer instead.",
            ),
            (
                b"null",
                "Invalid type for the request body: expected an object, but got null instead.",
            ),
        ] {
            let refused = inspect_json(bad).unwrap_err();
            assert_eq!(
                (refused.message.as_str(), refused.code, refused.param.as_deref()),
                (message, "invalid_type", None)
            );
        }
        for syntax in [&b"{\"model\":"[..], b"{} {}", b"\xff", b""] {
            let refused = inspect_json(syntax).unwrap_err();
            assert_eq!(refused.code, "invalid_json", "{refused:?}");
            assert!(
                refused.message.starts_with("We could not parse the JSON body"),
                "{refused:?}"
            );
            assert!(
                !refused.message.contains("Inspect") && !refused.message.contains("struct"),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_member_given_twice_is_refused() {
        for (bad, member) in [
            (&br#"{"max_tokens":5,"max_tokens":5000}"#[..], "max_tokens"),
            (br#"{"max_tokens":5,"max_tok\u0065ns":5000}"#, "max_tokens"),
            (br#"{"model":"a","model":"b"}"#, "model"),
            (
                br#"{"stream_options":{},"stream_options":{"include_usage":false}}"#,
                "stream_options",
            ),
            (br#"{"messages":[],"messages":[]}"#, "messages"),
        ] {
            let refused = inspect_json(bad).unwrap_err();
            assert!(refused.message.contains("twice"), "{refused:?}");
            assert_eq!(refused.param.as_deref(), Some(member), "{refused:?}");
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
        assert_eq!(
            facts(br#"{"previous_response_id":"resp_1"}"#).unboundable,
            Some("previous_response_id")
        );
        assert_eq!(
            facts(br#"{"conversation":{"id":"c"}}"#).unboundable,
            Some("conversation")
        );
        assert_eq!(facts(br#"{"previous_response_id":null}"#).unboundable, None);
        assert_eq!(
            facts(br#"{"prompt":"a","messages":[]}"#).invoked,
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(facts(br#"{"prompt":"a"}"#).invoked, Some(Endpoint::Completions));
        assert_eq!(facts(br#"{"input":["a"]}"#).invoked, Some(Endpoint::Embeddings));
        assert_eq!(facts(br#"{"inputs":"a"}"#).invoked, None);
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
