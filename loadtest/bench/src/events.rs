//! What a response says about itself, read incrementally: SSE events split
//! across reads, classified as they complete. Pure, so it is unit-tested
//! and costs the load generator little.

use serde_json::Value;

/// One complete event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub kind: EventKind,
    /// `sim_emitted_ns` of `maas sim` with `stamp_events`: when the
    /// simulator sent it (Unix nanoseconds).
    pub emitted_ns: Option<u64>,
    /// `usage.completion_tokens`, where the event carries usage.
    pub completion_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Generated text (`delta.content`, `text`, `response.output_text.delta`).
    Token,
    /// `data: [DONE]`.
    Done,
    /// Anything else: the role chunk, a usage-only chunk, a comment.
    Other,
}

/// Joins the bytes of an SSE body into events (`\n\n` or `\r\n\r\n` ends one).
#[derive(Default)]
pub struct EventSplitter {
    pending: Vec<u8>,
}

impl EventSplitter {
    /// Feeds one read; returns the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some((end, separator)) = find_boundary(&self.pending[start..]) {
            events.push(classify(&self.pending[start..start + end]));
            start += end + separator;
        }
        self.pending.drain(..start);
        events
    }
}

fn find_boundary(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2));
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The kind, stamp and usage of one event's text.
pub fn classify(event: &[u8]) -> StreamEvent {
    let mut data = Vec::new();
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    let other = StreamEvent {
        kind: EventKind::Other,
        emitted_ns: None,
        completion_tokens: None,
    };
    if data == b"[DONE]" {
        return StreamEvent {
            kind: EventKind::Done,
            ..other
        };
    }
    let Ok(json) = serde_json::from_slice::<Value>(&data) else {
        return other;
    };
    let has_text = |value: &Value| value.as_str().is_some_and(|text| !text.is_empty());
    let choice = &json["choices"][0];
    let token = has_text(&choice["delta"]["content"])
        || has_text(&choice["text"])
        || (json["type"] == "response.output_text.delta" && has_text(&json["delta"]));
    let usage = if json["usage"].is_object() {
        &json["usage"]
    } else {
        &json["response"]["usage"]
    };
    StreamEvent {
        kind: if token { EventKind::Token } else { EventKind::Other },
        emitted_ns: json["sim_emitted_ns"].as_u64(),
        completion_tokens: usage["completion_tokens"]
            .as_u64()
            .or_else(|| usage["output_tokens"].as_u64()),
    }
}

/// `usage.completion_tokens` (or `output_tokens`) of a whole JSON answer.
pub fn completion_tokens_of(body: &[u8]) -> Option<u64> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let usage = &json["usage"];
    usage["completion_tokens"]
        .as_u64()
        .or_else(|| usage["output_tokens"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_are_joined() {
        let body =
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"sim_emitted_ns\":5}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\" hi\"}}],\"sim_emitted_ns\":7}\r\n\r\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
data: [DONE]\n\n";
        for piece in 1..body.len() {
            let mut splitter = EventSplitter::default();
            let mut events = Vec::new();
            for chunk in body.chunks(piece) {
                events.extend(splitter.push(chunk));
            }
            let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
            assert_eq!(
                kinds,
                [EventKind::Other, EventKind::Token, EventKind::Other, EventKind::Done],
                "{piece}"
            );
            assert_eq!(events[0].emitted_ns, Some(5));
            assert_eq!(events[1].emitted_ns, Some(7));
            assert_eq!(events[2].completion_tokens, Some(1));
        }
    }

    #[test]
    fn completions_and_responses_events_count_as_tokens() {
        assert_eq!(
            classify(b"data: {\"choices\":[{\"text\":\" a\"}]}").kind,
            EventKind::Token
        );
        let delta =
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}";
        assert_eq!(classify(delta).kind, EventKind::Token);
        let completed =
            classify(b"data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"output_tokens\":9}}}");
        assert_eq!(
            (completed.kind, completed.completion_tokens),
            (EventKind::Other, Some(9))
        );
        assert_eq!(classify(b": keep-alive").kind, EventKind::Other);
        assert_eq!(classify(b"data: {not json").kind, EventKind::Other);
    }

    #[test]
    fn usage_of_a_whole_answer() {
        assert_eq!(completion_tokens_of(br#"{"usage":{"completion_tokens":16}}"#), Some(16));
        assert_eq!(completion_tokens_of(b"{}"), None);
        assert_eq!(completion_tokens_of(b"oops"), None);
    }
}
