//! Metering a server-sent-event response as it passes: every event is
//! parsed for `usage` (the last one seen wins: vLLM's continuous usage
//! grows chunk by chunk, the final usage-only chunk has the total, the
//! Responses API's `response.completed` carries `response.usage`), and
//! usage the client did not ask for is taken out of what it sees.
//!
//! When a stream carries no usage at all, completion tokens are estimated
//! as one per chunk with generated content (vLLM and TGI send one token per
//! chunk); such counts are marked estimated.

use std::borrow::Cow;

use serde::Deserialize;

use crate::body::content_type_is;
use crate::json_member::remove_member;
use crate::metering::{RawUsage, TokenUsage};
use crate::rewrite::ClientUsage;
use crate::sse::{SseEvent, SseParser};

// `Cow`: text with escapes (`\n`, quotes) cannot be borrowed from the event.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
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
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    response: Option<ResponseObject>,
    /// A Responses API event's type, and its text when it is a delta.
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
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
    /// Chunks that carried generated content (the estimate's basis).
    pub content_chunks: u64,
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
        if let Some(usage) = chunk.response.as_ref().and_then(|r| r.usage.as_ref()) {
            self.usage = Some(usage.tokens());
            self.completed = true;
        }
        let has_content = chunk.choices.as_ref().is_some_and(|choices| {
            choices.iter().any(|c| {
                c.delta
                    .as_ref()
                    .and_then(|d| d.content.as_deref())
                    .is_some_and(|t| !t.is_empty())
                    || c.text.as_deref().is_some_and(|t| !t.is_empty())
            })
        }) || (chunk.kind.as_deref() == Some("response.output_text.delta")
            && chunk.delta.as_deref().is_some_and(|t| !t.is_empty()));
        if has_content {
            self.content_chunks += 1;
        }
        let usage_only = chunk.usage.is_some() && chunk.choices.as_ref().is_some_and(Vec::is_empty);
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.tokens());
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

    /// What to bill: the upstream's usage, else the estimate (`true`).
    pub fn tokens(&self, prompt_estimate: u64) -> (TokenUsage, bool) {
        match self.usage {
            Some(usage) => (usage, false),
            None => (
                TokenUsage {
                    prompt_tokens: prompt_estimate,
                    completion_tokens: self.content_chunks,
                    total_tokens: prompt_estimate + self.content_chunks,
                },
                true,
            ),
        }
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
