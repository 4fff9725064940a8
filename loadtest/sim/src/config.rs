//! What the simulator serves: models with their timing, output lengths
//! and failure injection, and the seed that makes runs repeatable.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Same seed and same sequence of requests → same outputs and failures.
    pub seed: u64,
    pub models: Vec<SimModel>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            models: vec![
                SimModel::named("tinyllama-1.1b-chat"),
                SimModel::named("granite-3.1-8b-instruct"),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimModel {
    /// The model id clients send as `model`.
    pub id: String,
    /// Time to first token.
    pub ttft_ms: u64,
    /// Time between tokens.
    pub itl_ms: u64,
    /// Length a completion would have without `max_tokens`, drawn uniformly.
    pub output_tokens: TokenRange,
    /// Prompt plus `max_tokens` beyond this is refused with 400, as vLLM does.
    pub max_model_len: u32,
    /// Length of embedding vectors unless the request asks for `dimensions`.
    pub embedding_dimensions: u32,
    /// Send each streamed event in 1–4 pieces of random size, flushed
    /// separately, so a client must join events split across reads.
    pub fragment_events: bool,
    /// Put the emission time on the opening chunk and every token chunk, as
    /// `sim_emitted_ns` (Unix nanoseconds): load tests measure what a
    /// gateway adds per chunk, and to the request, from it.
    pub stamp_events: bool,
    /// Accept vLLM's `stream_options.continuous_usage_stats`; `false`
    /// answers 400 to a request naming it, as OpenAI's API and servers that
    /// refuse unknown fields do.
    pub continuous_usage_stats: bool,
    /// Prompt tokens one image of a chat message costs, as a vision model
    /// counts its patches (0: the model reads no images).
    pub image_tokens: u32,
    /// A Hugging Face `tokenizer.json` that counts prompt text (else one
    /// token per word).
    pub tokenizer: Option<String>,
    pub failures: Failures,
    /// A GPU server's scheduler instead of fixed `ttft_ms` and `itl_ms`:
    /// running places, a KV cache, a prefix cache and a waiting queue
    /// ([`crate::engine`]).
    pub server: Option<crate::engine::ServerModel>,
}

impl SimModel {
    pub fn named(id: &str) -> SimModel {
        SimModel {
            id: id.to_owned(),
            ..SimModel::default()
        }
    }
}

impl Default for SimModel {
    fn default() -> Self {
        SimModel {
            id: String::new(),
            ttft_ms: 100,
            itl_ms: 20,
            output_tokens: TokenRange { min: 16, max: 128 },
            max_model_len: 8192,
            embedding_dimensions: 384,
            fragment_events: false,
            stamp_events: false,
            continuous_usage_stats: true,
            image_tokens: 0,
            tokenizer: None,
            failures: Failures::default(),
            server: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRange {
    pub min: u32,
    pub max: u32,
}

/// Injected failures, each drawn per request from the seeded generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failures {
    /// Share of requests answered with `error_status` instead (0 to 1).
    pub error_rate: f64,
    pub error_status: u16,
    /// Share of streams cut off (connection reset) after a random number of
    /// tokens, at least one and fewer than all.
    pub reset_rate: f64,
    /// Delay before the response headers.
    pub slow_headers_ms: u64,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            error_rate: 0.0,
            error_status: 503,
            reset_rate: 0.0,
            slow_headers_ms: 0,
        }
    }
}

/// A problem with a simulator configuration, by field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SimConfigError {
    pub path: String,
    pub message: String,
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), Vec<SimConfigError>> {
        let mut errors = Vec::new();
        let mut push = |path: String, message: &str| {
            errors.push(SimConfigError {
                path,
                message: message.into(),
            })
        };
        if self.models.is_empty() {
            push("models".into(), "list at least one model");
        }
        for (i, model) in self.models.iter().enumerate() {
            let at = format!("models[{i}]");
            if model.id.is_empty() || model.id.chars().any(char::is_whitespace) {
                push(format!("{at}.id"), "a model id is non-empty and has no spaces");
            }
            if self.models[..i].iter().any(|m| m.id == model.id) {
                push(format!("{at}.id"), "listed twice");
            }
            if model.output_tokens.min == 0 || model.output_tokens.min > model.output_tokens.max {
                push(format!("{at}.output_tokens"), "needs 1 <= min <= max");
            }
            if model.max_model_len == 0 {
                push(format!("{at}.max_model_len"), "must be at least 1");
            }
            if !(1..=65_536).contains(&model.embedding_dimensions) {
                push(format!("{at}.embedding_dimensions"), "must be between 1 and 65536");
            }
            if let Some(server) = &model.server {
                for (field, message) in server.problems() {
                    push(format!("{at}.server.{field}"), message);
                }
            }
            let f = &model.failures;
            for (field, rate) in [("error_rate", f.error_rate), ("reset_rate", f.reset_rate)] {
                if !(0.0..=1.0).contains(&rate) {
                    push(format!("{at}.failures.{field}"), "must be between 0 and 1");
                }
            }
            if !(400..=599).contains(&f.error_status) {
                push(
                    format!("{at}.failures.error_status"),
                    "must be an HTTP error status (400-599)",
                );
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
