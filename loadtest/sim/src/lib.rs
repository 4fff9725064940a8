//! `maas-sim`: an OpenAI-compatible model-server simulator, for demos,
//! tests and load tests (like llm-d's inference simulator).
//!
//! - Serves `GET /v1/models`, `POST /v1/chat/completions`,
//!   `POST /v1/completions`, `POST /v1/embeddings`, `POST /v1/responses`,
//!   `GET /health`, `GET /version` and Prometheus `GET /metrics`.
//! - Chat answers in the shape asked ([`output`]): text, a JSON document
//!   (`response_format` `json_object`, or `json_schema` of that schema),
//!   or a call of one of the request's `tools` (`tool_choice` honoured,
//!   streamed as `tool_calls` deltas); `n` choices side by side.
//! - Streams server-sent events in vLLM's chunk shapes, honouring
//!   `stream_options.include_usage` and `continuous_usage_stats`; Responses
//!   API streams end with `response.completed` and its usage.
//! - A stream whose client hung up stops before its next token, and counts
//!   only what it sent ([`peer`]).
//! - Per model ([`SimModel`]): time to first token, inter-token latency
//!   (or a GPU server's scheduler: [`engine`], with vLLM's metrics),
//!   output length (from `max_tokens`, else drawn from a range), context
//!   length, and failure injection (error statuses, streams cut mid-way,
//!   slow headers).
//! - Counts what it served per application, named by the
//!   `x-maas-application-id` header the gateway adds upstream, at
//!   `GET /sim/usage` (`DELETE` resets): the truth the gateway's metering is
//!   compared with. Prompt tokens follow the rule in [`tokens`].
//! - Echoes the W3C `traceparent` it received as `x-sim-traceparent`.
//! - Deterministic: the same seed and the same sequence of requests give the
//!   same outputs and failures.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! maas_sim::serve(listener, maas_sim::SimConfig::default(), std::future::pending()).await
//! # }
//! ```

pub mod config;
pub mod engine;
pub mod kv_cache;
pub mod meter;
pub mod openai;
pub mod output;
pub mod peer;
pub mod responses;
mod routes;
mod stream;
pub mod tokens;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::routing::{get, post};

pub use config::{Failures, SimConfig, SimConfigError, SimModel, TokenRange};
pub use meter::{APPLICATION_HEADER, AppUsage};

/// Shared by every request.
pub struct SimState {
    pub config: SimConfig,
    models: HashMap<String, usize>,
    /// How each model counts prompt text, in the order of `config.models`.
    counters: Vec<tokens::TextCounter>,
    /// The GPU server of each model that has one, in the order of `config.models`.
    engines: Vec<Option<engine::Engine>>,
    pub meter: meter::Meter,
    sequence: AtomicU64,
}

impl SimState {
    /// Fails when a model's tokenizer cannot be read. Starts the engine
    /// of every model with a `server:` (so it needs a tokio runtime).
    pub fn new(config: SimConfig) -> Result<SimState, String> {
        let counters = config
            .models
            .iter()
            .enumerate()
            .map(|(i, model)| match &model.tokenizer {
                Some(path) => tokens::TextCounter::load(path).map_err(|e| format!("models[{i}].tokenizer: {e}")),
                None => Ok(tokens::TextCounter::Words),
            })
            .collect::<Result<_, _>>()?;
        let models = config
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let engines = config
            .models
            .iter()
            .map(|m| m.server.clone().map(engine::Engine::start))
            .collect();
        Ok(SimState {
            config,
            models,
            counters,
            engines,
            meter: meter::Meter::default(),
            sequence: AtomicU64::new(0),
        })
    }

    /// How `model` counts prompt text (words for a model it does not serve).
    fn counter(&self, model: &str) -> &tokens::TextCounter {
        static WORDS: tokens::TextCounter = tokens::TextCounter::Words;
        self.models.get(model).map_or(&WORDS, |&i| &self.counters[i])
    }

    fn model(&self, id: &str) -> Option<&SimModel> {
        self.models.get(id).map(|&i| &self.config.models[i])
    }

    /// The GPU server of model `id`, if it has one.
    fn engine(&self, id: &str) -> Option<&engine::Engine> {
        self.models.get(id).and_then(|&i| self.engines[i].as_ref())
    }
}

/// Largest request body the simulator reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The simulator's routes over `state`.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/models", get(routes::models))
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/responses", post(routes::responses))
        .route("/health", get(|| async {}))
        .route("/version", get(routes::version))
        .route("/metrics", get(routes::metrics))
        .route("/sim/usage", get(routes::usage).delete(routes::reset_usage))
        .fallback(routes::not_found)
        // Long-context prompts are large; vLLM takes them, so must we.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::map_response(echo_traceparent))
        .with_state(state)
}

/// Answers say which trace context reached the model server
/// (`x-sim-traceparent`), so tests see what a traced vLLM would continue.
async fn echo_traceparent(
    request_headers: axum::http::HeaderMap,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if let Some(value) = request_headers.get("traceparent") {
        response.headers_mut().insert("x-sim-traceparent", value.clone());
    }
    response
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(SimState::new(config).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?);
    let listener = peer::NoDelayListener(listener);
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<peer::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
