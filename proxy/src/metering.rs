//! What a response cost: the `usage` object of OpenAI-style JSON bodies
//! (chat, completions, embeddings, and the Responses API's
//! `input_tokens`/`output_tokens`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<RawUsage>,
}

/// A `usage` object as servers write it: chat/completions/embeddings names,
/// or the Responses API's `input_tokens`/`output_tokens`.
#[derive(Deserialize)]
pub(crate) struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl RawUsage {
    pub(crate) fn tokens(&self) -> TokenUsage {
        let prompt = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let completion = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self.total_tokens.unwrap_or(prompt.saturating_add(completion)),
        }
    }
}

/// The usage of a complete JSON response body; `None` when it has none
/// or is not JSON.
pub fn usage_of_json(body: &[u8]) -> Option<TokenUsage> {
    let parsed: WithUsage = serde_json::from_slice(body).ok()?;
    parsed.usage.as_ref().map(RawUsage::tokens)
}

/// A response body collected up to a cap for metering; beyond the cap it
/// is passed through unmetered rather than held in memory.
#[derive(Debug, Default)]
pub struct BodyCollector {
    buffer: Vec<u8>,
    overflowed: bool,
}

impl BodyCollector {
    pub const CAP: usize = 16 * 1024 * 1024;

    pub fn push(&mut self, chunk: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.buffer.len() + chunk.len() > Self::CAP {
            self.overflowed = true;
            self.buffer = Vec::new();
            return;
        }
        self.buffer.extend_from_slice(chunk);
    }

    pub fn usage(&self) -> Option<TokenUsage> {
        if self.overflowed {
            return None;
        }
        usage_of_json(&self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_usage_shape() {
        let chat = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(
            usage_of_json(chat),
            Some(TokenUsage {
                prompt_tokens: 12,
                completion_tokens: 30,
                total_tokens: 42
            })
        );
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(usage_of_json(embeddings).unwrap().total_tokens, 8);
        assert_eq!(usage_of_json(embeddings).unwrap().completion_tokens, 0);
        let responses = br#"{"output":[],"usage":{"input_tokens":5,"output_tokens":7}}"#;
        assert_eq!(usage_of_json(responses).unwrap().total_tokens, 12);
        assert_eq!(usage_of_json(br#"{"choices":[]}"#), None);
        assert_eq!(usage_of_json(b"not json"), None);
        assert_eq!(usage_of_json(br#"{"usage":null}"#), None);
    }

    #[test]
    fn collector_gives_up_past_its_cap() {
        let mut collector = BodyCollector::default();
        collector.push(br#"{"usage":{"prompt_tokens":1,"#);
        collector.push(br#""completion_tokens":2}}"#);
        assert_eq!(collector.usage().unwrap().total_tokens, 3);
        collector.push(&vec![b' '; BodyCollector::CAP]);
        assert_eq!(collector.usage(), None);
    }
}
