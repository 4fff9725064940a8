//! The OpenAI wire format the simulator speaks: requests it accepts and
//! the JSON it answers with, in vLLM's shapes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::tokens::TextCounter;

/// Members read as vLLM's pydantic models read them: `null` for absent, a
/// whole decimal (`1.0`) for its integer, a negative `seed`.
pub mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    fn whole(number: &serde_json::Number) -> Option<i128> {
        if let Some(value) = number.as_i64() {
            return Some(i128::from(value));
        }
        if let Some(value) = number.as_u64() {
            return Some(i128::from(value));
        }
        let value = number.as_f64()?;
        (value.fract() == 0.0 && value.abs() < 1e30).then_some(value as i128)
    }

    /// A count: `null`, or a non-negative whole number.
    pub fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
        match Option::<serde_json::Number>::deserialize(deserializer)? {
            None => Ok(None),
            Some(number) => whole(&number)
                .and_then(|value| u32::try_from(value).ok())
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("expected a non-negative integer, got {number}"))),
        }
    }

    /// A flag: `null` is false.
    pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
    }

    /// A seed: any whole number, negative ones included.
    pub fn seed<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        match Option::<serde_json::Number>::deserialize(deserializer)? {
            None => Ok(None),
            Some(number) => whole(&number)
                .map(|value| Some(value as u64))
                .ok_or_else(|| D::Error::custom(format!("expected an integer seed, got {number}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default, deserialize_with = "lenient::flag")]
    pub include_usage: bool,
    /// vLLM's extension; `None` when the request does not name it.
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

impl StreamOptions {
    pub fn continuous(&self) -> bool {
        self.continuous_usage_stats == Some(true)
    }
}

/// Parameters the chat and completions endpoints share.
#[derive(Debug, Deserialize)]
pub struct GenerationOptions {
    pub model: String,
    #[serde(default, deserialize_with = "lenient::count")]
    pub max_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default, deserialize_with = "lenient::count")]
    pub n: Option<u32>,
    #[serde(default, deserialize_with = "lenient::seed")]
    pub seed: Option<u64>,
    /// vLLM's place in the queue under `--scheduling-policy priority`
    /// (lower runs sooner).
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub options: GenerationOptions,
    pub messages: Vec<ChatMessage>,
    #[serde(default, deserialize_with = "lenient::count")]
    pub max_completion_tokens: Option<u32>,
    /// Function tools the model may call ([`crate::output`]).
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of a message, its parts joined by spaces.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<serde::de::IgnoredAny>,
}

impl MessageContent {
    /// Image parts (`image_url`).
    pub fn images(&self) -> u32 {
        match self {
            MessageContent::Text(_) => 0,
            MessageContent::Parts(parts) => {
                parts
                    .iter()
                    .filter(|p| match p.kind.as_deref() {
                        // As vLLM reads a part without `type`: by its media key.
                        None => p.image_url.is_some(),
                        kind => kind == Some("image_url"),
                    })
                    .count() as u32
            }
        }
    }
}

impl ChatRequest {
    /// Images across the messages.
    pub fn images(&self) -> u32 {
        self.messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .map(MessageContent::images)
            .sum()
    }

    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens_by(&TextCounter::Words)
    }

    /// Prompt tokens as `counter` counts text.
    pub fn prompt_tokens_by(&self, counter: &TextCounter) -> u32 {
        let texts: Vec<String> = self
            .messages
            .iter()
            .map(|m| m.content.as_ref().map(MessageContent::text).unwrap_or_default())
            .collect();
        counter.chat(texts.iter().map(String::as_str))
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub options: GenerationOptions,
    pub prompt: PromptInput,
}

/// A prompt or embedding input: text(s) or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl PromptInput {
    /// Tokens of every item, one entry per item.
    pub fn item_tokens(&self) -> Vec<u32> {
        self.item_tokens_by(&TextCounter::Words)
    }

    /// The prompt as text: its texts, or its token ids as words.
    pub fn texts(&self) -> Vec<String> {
        let ids = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        match self {
            PromptInput::Text(text) => vec![text.clone()],
            PromptInput::Texts(texts) => texts.clone(),
            PromptInput::Tokens(list) => vec![ids(list)],
            PromptInput::TokenLists(lists) => lists.iter().map(|l| ids(l)).collect(),
        }
    }

    /// Tokens of every item, text counted by `counter`.
    pub fn item_tokens_by(&self, counter: &TextCounter) -> Vec<u32> {
        match self {
            PromptInput::Text(text) => vec![counter.count(text)],
            PromptInput::Texts(texts) => texts.iter().map(|t| counter.count(t)).collect(),
            PromptInput::Tokens(ids) => vec![ids.len() as u32],
            PromptInput::TokenLists(lists) => lists.iter().map(|l| l.len() as u32).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: PromptInput,
    pub dimensions: Option<u32>,
    pub encoding_format: Option<String>,
}

/// `{"error": {...}}` as OpenAI sends it.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

pub fn usage(prompt: u32, completion: u32) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The generating endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
    /// The Responses API ([`crate::responses`]).
    Response,
}

impl Kind {
    /// The start of a response id: `chatcmpl-…`, `cmpl-…`, `resp_…`.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl-",
            Kind::Completion => "cmpl-",
            Kind::Response => "resp_",
        }
    }

    pub fn object(self, streamed: bool) -> &'static str {
        match (self, streamed) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
            (Kind::Response, _) => "response",
        }
    }
}

/// Identity of one response, shared by all its chunks.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// One generated choice: its tokens, why it ended, and the tool it calls
/// (its tokens are then the call's arguments).
#[derive(Debug, Clone)]
pub struct Choice {
    pub tokens: Vec<Cow<'static, str>>,
    pub finish_reason: &'static str,
    pub tool_call: Option<ToolCall>,
}

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
}

impl Choice {
    pub fn text(&self) -> String {
        self.tokens.concat()
    }
}

impl ResponseMeta {
    /// The whole answer: every choice, the usage of them all.
    pub fn complete(&self, choices: &[Choice], prompt: u32, completion: u32) -> Value {
        if self.kind == Kind::Response {
            let first = &choices[0];
            return crate::responses::response_object(
                self,
                Some((&first.text(), first.finish_reason, prompt, completion)),
            );
        }
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, choice)| match self.kind {
                Kind::Chat => {
                    let message = match &choice.tool_call {
                        Some(call) => json!({
                            "role": "assistant", "content": null, "refusal": null,
                            "tool_calls": [{"id": call.id, "type": "function",
                                            "function": {"name": call.name, "arguments": choice.text()}}],
                        }),
                        None => json!({"role": "assistant", "content": choice.text(), "refusal": null}),
                    };
                    json!({"index": index, "message": message, "logprobs": null, "finish_reason": choice.finish_reason})
                }
                _ => json!({"index": index, "text": choice.text(), "logprobs": null, "finish_reason": choice.finish_reason}),
            })
            .collect();
        json!({
            "id": self.id, "object": self.kind.object(false), "created": self.created, "model": self.model,
            "choices": choices, "usage": usage(prompt, completion),
        })
    }

    /// One streamed chunk of choice `index` carrying `piece`: the role on a
    /// chat's opening chunk, a tool call's id and name with its first
    /// piece of arguments, the finish reason on the last.
    pub fn chunk(&self, index: usize, choice: &Choice, piece: Option<&str>, step: ChunkStep) -> Value {
        let finish_reason = (step == ChunkStep::Finish).then_some(choice.finish_reason);
        let body = match self.kind {
            Kind::Chat => {
                let delta = match (step, &choice.tool_call, piece) {
                    (ChunkStep::Opening, _, _) => json!({"role": "assistant", "content": ""}),
                    (ChunkStep::Finish, Some(_), _) => json!({}),
                    (ChunkStep::Finish, None, _) => json!({"content": ""}),
                    (ChunkStep::FirstPiece, Some(call), piece) => json!({"tool_calls": [{
                        "index": 0, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": piece.unwrap_or("")}}]}),
                    (_, Some(_), piece) => {
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece.unwrap_or("")}}]})
                    }
                    (_, None, piece) => json!({"content": piece.unwrap_or("")}),
                };
                json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
            }
            Kind::Completion | Kind::Response => {
                json!({"index": index, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason})
            }
        };
        json!({
            "id": self.id, "object": self.kind.object(true), "created": self.created, "model": self.model,
            "choices": [body],
        })
    }

    /// The usage-only chunk sent last when `include_usage` is set.
    pub fn usage_chunk(&self, prompt: u32, completion: u32) -> Value {
        json!({
            "id": self.id, "object": self.kind.object(true), "created": self.created, "model": self.model,
            "choices": [], "usage": usage(prompt, completion),
        })
    }
}

/// Where a chunk stands in its choice's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStep {
    /// A chat's opening chunk: the role, no token.
    Opening,
    FirstPiece,
    Piece,
    /// The last chunk: the finish reason, no token.
    Finish,
}

/// Standard base64 of little-endian f32s, as OpenAI's `encoding_format: base64`.
pub fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[]), "");
        assert_eq!(base64_f32(&[1.0, 1.0, 1.0]).len(), 16);
    }

    #[test]
    fn prompts_count_by_the_rule() {
        let chat: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]
        }))
        .unwrap();
        assert_eq!(chat.prompt_tokens(), (2 + 3) + (2 + 3) + 3);
        let completion: CompletionRequest =
            serde_json::from_value(json!({"model": "m", "prompt": [[1, 2, 3], [4]]})).unwrap();
        assert_eq!(completion.prompt.item_tokens(), [3, 1]);
    }
}
