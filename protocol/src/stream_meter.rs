//! Metering a server-sent-event response as it passes: every event is
//! parsed for `usage` (the last one seen wins: vLLM's continuous usage
//! grows chunk by chunk, the final usage-only chunk has the total, the
//! Responses API's `response.completed` carries `response.usage`), and
//! usage the client did not ask for is taken out of what it sees.
//!
//! Generated output the last usage does not cover yet (a stream cut before
//! its final usage, or a server that reports none) is estimated from every
//! kind of delta: text, reasoning, refusals, tool-call names and arguments
//! (chat and completions), and every `response.*.delta` event of the
//! Responses API. Servers stream one token per delta, so a delta counts one
//! token; a longer one (a tool call's arguments sent whole, several tokens
//! per step) counts one per [`BYTES_PER_TOKEN`] bytes. Such counts are
//! marked estimated.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::body::content_type_is;
use crate::json_member::remove_member;
use crate::metering::{RawUsage, TokenUsage};
use crate::rewrite::ClientUsage;
use crate::sse::{SseEvent, SseParser};

/// The byte-per-token ratio of the estimates (English text runs about four).
pub const BYTES_PER_TOKEN: usize = 4;
/// The longest delta still counted as one token: longer than common vocabulary entries.
const ONE_TOKEN_BYTES: usize = 16;

/// Tokens estimated for `bytes` of one generated delta.
pub fn delta_tokens(bytes: usize) -> u64 {
    match bytes {
        0 => 0,
        1..=ONE_TOKEN_BYTES => 1,
        _ => bytes.div_ceil(BYTES_PER_TOKEN) as u64,
    }
}

/// The length of a generated text member; any other type counts nothing
/// instead of failing the whole event (one odd member must not hide the
/// event's usage).
#[derive(Default, Clone, Copy)]
struct Generated(usize);

impl<'de> Deserialize<'de> for Generated {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Generated, D::Error> {
        deserializer.deserialize_any(GeneratedVisitor)
    }
}

struct GeneratedVisitor;

impl<'de> Visitor<'de> for GeneratedVisitor {
    type Value = Generated;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("generated text")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Generated, E> {
        Ok(Generated(text.len()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Generated, E> {
        Ok(Generated(0))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Generated, E> {
        Ok(Generated(0))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Generated, E> {
        Ok(Generated(0))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Generated, E> {
        Ok(Generated(0))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Generated, E> {
        Ok(Generated(0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Generated, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Generated(0))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Generated, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Generated(0))
    }
}

#[derive(Deserialize, Default)]
struct FunctionDelta {
    #[serde(default)]
    name: Generated,
    #[serde(default)]
    arguments: Generated,
}

impl FunctionDelta {
    fn bytes(&self) -> usize {
        self.name.0 + self.arguments.0
    }
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    function: Option<FunctionDelta>,
}

/// A chat chunk's `delta`: every member a model generates.
#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Generated,
    /// vLLM's and SGLang's reasoning parsers; `reasoning` elsewhere.
    #[serde(default)]
    reasoning_content: Generated,
    #[serde(default)]
    reasoning: Generated,
    #[serde(default)]
    refusal: Generated,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
    /// The deprecated single `function_call`.
    #[serde(default)]
    function_call: Option<FunctionDelta>,
}

impl Delta {
    fn bytes(&self) -> usize {
        let tools = self.tool_calls.iter().flatten().filter_map(|t| t.function.as_ref());
        self.content.0
            + self.reasoning_content.0
            + self.reasoning.0
            + self.refusal.0
            + tools.map(FunctionDelta::bytes).sum::<usize>()
            + self.function_call.as_ref().map_or(0, FunctionDelta::bytes)
    }
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// Completions' text.
    #[serde(default)]
    text: Generated,
}

#[derive(Deserialize)]
struct ResponseObject {
    usage: Option<RawUsage>,
}

/// The parts of a chunk the meter reads; everything else is skipped.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    response: Option<ResponseObject>,
    /// A Responses API event's type, and its output when it is a delta.
    #[serde(borrow, default, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    delta: Generated,
}

impl Chunk<'_> {
    /// Tokens this event generated, estimated per choice (or per Responses delta).
    fn generated_tokens(&self) -> u64 {
        let choices = self.choices.iter().flatten();
        let chat: u64 = choices
            .map(|c| delta_tokens(c.delta.as_ref().map_or(0, Delta::bytes) + c.text.0))
            .sum();
        let is_responses_delta = self
            .kind
            .as_deref()
            .is_some_and(|k| k.starts_with("response.") && k.ends_with(".delta"));
        chat + if is_responses_delta {
            delta_tokens(self.delta.0)
        } else {
            0
        }
    }
}

/// Whether a `Content-Type` is `text/event-stream`.
pub fn is_event_stream(value: &[u8]) -> bool {
    content_type_is(value, b"text/event-stream")
}

/// A stream's meter and filter.
#[derive(Debug)]
pub struct StreamMeter {
    parser: SseParser,
    client: ClientUsage,
    /// The last usage the upstream reported.
    pub usage: Option<TokenUsage>,
    /// Chunks that carried generated output.
    pub content_chunks: u64,
    /// Completion tokens estimated from deltas since the last usage.
    pub unreported: u64,
    /// `[DONE]` or `response.completed` was seen.
    pub completed: bool,
}

impl StreamMeter {
    /// `client` is what the client asked to see; with everything asked
    /// for (or for endpoints without `stream_options`), bytes pass untouched.
    pub fn new(client: ClientUsage) -> StreamMeter {
        StreamMeter {
            parser: SseParser::new(),
            client,
            usage: None,
            content_chunks: 0,
            unreported: 0,
            completed: false,
        }
    }

    /// Whether events are taken out or rewritten (else bytes pass as they are).
    pub fn filters(&self) -> bool {
        !(self.client.final_chunk && self.client.every_chunk)
    }

    /// Meters `chunk` and returns what the client gets. Without filtering
    /// the chunk itself is returned; with it, complete events only (an
    /// event split across chunks goes out when its end arrives).
    pub fn filter(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        let filters = self.filters();
        let mut out = filters.then(|| Vec::with_capacity(chunk.len()));
        let mut parser = std::mem::take(&mut self.parser);
        parser.push(chunk, |event| self.on_event(event, out.as_mut()));
        self.parser = parser;
        out
    }

    /// The end of the stream: an unterminated last event still counts.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let filters = self.filters();
        let mut out = filters.then(Vec::new);
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(|event| self.on_event(event, out.as_mut()));
        out
    }

    fn on_event(&mut self, event: &SseEvent<'_>, out: Option<&mut Vec<u8>>) {
        let Some(data) = event.data.as_deref() else {
            if let Some(out) = out {
                out.extend_from_slice(event.raw);
            }
            return;
        };
        if data == b"[DONE]" {
            self.completed = true;
            if let Some(out) = out {
                out.extend_from_slice(event.raw);
            }
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            // Not ours to judge: pass it on.
            if let Some(out) = out {
                out.extend_from_slice(event.raw);
            }
            return;
        };
        let generated = chunk.generated_tokens();
        if generated > 0 {
            self.content_chunks += 1;
            self.unreported = self.unreported.saturating_add(generated);
        }
        // Usage covers the deltas of its own event and every one before.
        if let Some(usage) = chunk.response.as_ref().and_then(|r| r.usage.as_ref()) {
            self.usage = Some(usage.tokens());
            self.unreported = 0;
            self.completed = true;
        }
        let usage_only = chunk.usage.is_some() && chunk.choices.as_ref().is_some_and(Vec::is_empty);
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.tokens());
            self.unreported = 0;
        }
        let Some(out) = out else { return };
        if usage_only {
            if self.client.final_chunk {
                out.extend_from_slice(event.raw);
            }
            return;
        }
        if chunk.usage.is_some()
            && !self.client.every_chunk
            && let Some(stripped) = remove_member(data, "usage")
        {
            if let Some(name) = event.name {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name);
                out.push(b'\n');
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&stripped);
            out.extend_from_slice(b"\n\n");
            return;
        }
        out.extend_from_slice(event.raw);
    }

    /// What to bill: the upstream's last usage plus what was generated
    /// after it, else the prompt's estimate plus the generated estimate;
    /// `true` when any of it is estimated. A stream that started was read
    /// by the model server, so even one cut before any output bills its
    /// prompt.
    pub fn tokens(&self, prompt_estimate: u64) -> (TokenUsage, bool) {
        let reported = self.usage.unwrap_or(TokenUsage {
            prompt_tokens: prompt_estimate,
            completion_tokens: 0,
            total_tokens: prompt_estimate,
        });
        let usage = TokenUsage {
            prompt_tokens: reported.prompt_tokens,
            completion_tokens: reported.completion_tokens.saturating_add(self.unreported),
            total_tokens: reported.total_tokens.saturating_add(self.unreported),
        };
        (usage, self.usage.is_none() || self.unreported > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTINUOUS: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5,\"completion_tokens\":0}}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a\"}}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":6,\"completion_tokens\":1}}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" b\"}}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2}}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(client: ClientUsage, stream: &str, chunk: usize) -> (StreamMeter, String) {
        let mut meter = StreamMeter::new(client);
        let mut seen = Vec::new();
        for piece in stream.as_bytes().chunks(chunk) {
            match meter.filter(piece) {
                Some(out) => seen.extend(out),
                None => seen.extend_from_slice(piece),
            }
        }
        if let Some(out) = meter.finish() {
            seen.extend(out);
        }
        (meter, String::from_utf8(seen).unwrap())
    }

    #[test]
    fn a_client_that_asked_for_nothing_sees_no_usage() {
        for chunk in [1, 7, 64, 4096] {
            let (meter, seen) = run(ClientUsage::default(), CONTINUOUS, chunk);
            assert_eq!(
                meter.tokens(0),
                (
                    TokenUsage {
                        prompt_tokens: 5,
                        completion_tokens: 2,
                        total_tokens: 7
                    },
                    false
                )
            );
            assert!(meter.completed);
            assert!(!seen.contains("usage"), "{seen}");
            assert_eq!(seen.matches("data: ").count(), 4, "role, a, b, [DONE]: {seen}");
            for line in seen.lines().filter(|l| l.starts_with("data: {")) {
                serde_json::from_str::<serde_json::Value>(&line[6..]).unwrap();
            }
        }
    }

    #[test]
    fn include_usage_keeps_the_final_chunk_only() {
        let client = ClientUsage {
            final_chunk: true,
            every_chunk: false,
        };
        let (_, seen) = run(client, CONTINUOUS, 10);
        assert_eq!(seen.matches("usage").count(), 1, "{seen}");
        assert!(seen.contains("\"choices\":[],\"usage\""));
    }

    #[test]
    fn everything_asked_passes_bytes_untouched() {
        let client = ClientUsage {
            final_chunk: true,
            every_chunk: true,
        };
        let mut meter = StreamMeter::new(client);
        assert_eq!(meter.filter(CONTINUOUS.as_bytes()), None);
        assert_eq!(meter.tokens(0).0.total_tokens, 7);
    }

    #[test]
    fn streams_without_usage_are_estimated() {
        let stream = "data: {\"choices\":[{\"text\":\" a\"}]}\n\ndata: {\"choices\":[{\"text\":\" b\"}]}\n\ndata: {\"choices\":[{\"text\":\"\"}]}\n\n";
        let (meter, seen) = run(ClientUsage::default(), stream, 5);
        assert_eq!(seen, stream, "nothing to strip");
        assert_eq!(
            meter.tokens(9),
            (
                TokenUsage {
                    prompt_tokens: 9,
                    completion_tokens: 2,
                    total_tokens: 11
                },
                true
            )
        );
        assert!(!meter.completed);
    }

    #[test]
    fn a_cut_stream_bills_the_last_usage_seen() {
        let cut = &CONTINUOUS[..CONTINUOUS.find(" b").unwrap()];
        let (meter, _) = run(ClientUsage::default(), cut, 3);
        assert_eq!(meter.tokens(0).0.completion_tokens, 1);
        assert!(!meter.completed);
    }

    #[test]
    fn responses_api_completed_event_carries_usage() {
        let stream = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":6,\"total_tokens\":10}}}\n\n";
        let client = ClientUsage {
            final_chunk: true,
            every_chunk: true,
        };
        let (meter, seen) = run(client, stream, 11);
        assert_eq!(seen, stream);
        assert_eq!(
            meter.tokens(0),
            (
                TokenUsage {
                    prompt_tokens: 4,
                    completion_tokens: 6,
                    total_tokens: 10
                },
                false
            )
        );
        assert!(meter.completed);
    }

    #[test]
    fn escaped_text_is_metered_and_stripped_like_any_other() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"line\\none \\\"q\\\"\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n";
        let (meter, seen) = run(ClientUsage::default(), stream, 7);
        assert!(!seen.contains("usage"), "{seen}");
        assert!(seen.contains(r#"line\none \"q\""#), "{seen}");
        assert_eq!(meter.content_chunks, 1);
        assert_eq!(meter.tokens(0).0.total_tokens, 4);
    }

    #[test]
    fn a_cut_responses_stream_is_estimated_from_its_deltas() {
        let delta =
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\" hi\"}\n\n";
        let stream = format!(
            "event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"usage\":null}}}}\n\n{delta}{delta}"
        );
        let all = ClientUsage {
            final_chunk: true,
            every_chunk: true,
        };
        let (meter, _) = run(all, &stream, 13);
        assert_eq!(
            meter.tokens(7),
            (
                TokenUsage {
                    prompt_tokens: 7,
                    completion_tokens: 2,
                    total_tokens: 9
                },
                true
            )
        );
        assert!(!meter.completed);
    }

    #[test]
    fn a_stream_cut_before_any_output_bills_its_prompt() {
        let created =
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n";
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        for stream in ["", created, role] {
            let (meter, _) = run(ClientUsage::default(), stream, 5);
            assert_eq!(meter.tokens(30).0.prompt_tokens, 30, "{stream}");
            assert_eq!(meter.tokens(30).0.completion_tokens, 0, "{stream}");
            assert!(meter.tokens(30).1, "an estimate");
        }
    }

    #[test]
    fn every_kind_of_delta_is_counted() {
        let events = [
            r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"hm"}}]}"#,
            r#"{"choices":[{"delta":{"refusal":"no"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"get","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a"}}]}}]}"#,
            r#"{"choices":[{"delta":{"function_call":{"arguments":"1"}}}]}"#,
            r#"{"choices":[{"text":"x"}]}"#,
            r#"{"type":"response.reasoning_text.delta","delta":"hm"}"#,
            r#"{"type":"response.reasoning_summary_text.delta","delta":"hm"}"#,
            r#"{"type":"response.function_call_arguments.delta","delta":"{"}"#,
            r#"{"type":"response.refusal.delta","delta":"no"}"#,
            r#"{"type":"response.output_text.delta","delta":"hi"}"#,
        ];
        for event in events {
            let stream = format!("data: {event}\n\n");
            let (meter, _) = run(ClientUsage::default(), &stream, 3);
            assert_eq!(meter.tokens(0).0.completion_tokens, 1, "{event}");
            assert_eq!(meter.content_chunks, 1, "{event}");
        }
        let quiet = [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"type":"response.output_text.done","text":"hi"}"#,
            r#"{"type":"response.in_progress","response":{"usage":null}}"#,
        ];
        for event in quiet {
            let (meter, _) = run(ClientUsage::default(), &format!("data: {event}\n\n"), 3);
            assert_eq!(meter.tokens(0).0.completion_tokens, 0, "{event}");
        }
    }

    #[test]
    fn long_deltas_and_several_choices_count_more() {
        let arguments = "x".repeat(400);
        let stream = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"function\":{{\"arguments\":\"{arguments}\"}}}}]}}}},{{\"index\":1,\"delta\":{{\"content\":\"a\"}}}}]}}\n\n"
        );
        let (meter, _) = run(ClientUsage::default(), &stream, 64);
        assert_eq!(meter.tokens(0).0.completion_tokens, 100 + 1);
    }

    #[test]
    fn output_after_the_last_usage_is_added_to_it() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning\":{\"odd\":true},\"content\":\"c\"}}]}\n\n",
        );
        let (meter, _) = run(ClientUsage::default(), stream, 9);
        assert_eq!(
            meter.tokens(99),
            (
                TokenUsage {
                    prompt_tokens: 5,
                    completion_tokens: 3,
                    total_tokens: 8
                },
                true
            )
        );
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_meters_and_shows_the_same(chunk in 1usize..300, final_chunk: bool, every_chunk: bool) {
            let client = ClientUsage { final_chunk, every_chunk };
            let (whole_meter, whole) = run(client, CONTINUOUS, CONTINUOUS.len());
            let (meter, seen) = run(client, CONTINUOUS, chunk);
            proptest::prop_assert_eq!(whole, seen);
            proptest::prop_assert_eq!(whole_meter.tokens(0), meter.tokens(0));
        }
    }
}
