//! The HTTP endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::SimState;
use crate::config::SimModel;
use crate::meter::{ANONYMOUS, APPLICATION_HEADER};
use crate::openai::{
    ChatRequest, Choice, CompletionRequest, EmbeddingRequest, GenerationOptions, Kind, ResponseMeta, ToolCall,
    base64_f32, error_body,
};
use crate::output::{Shape, shape_of};
use crate::peer::Peer;
use crate::responses::ResponsesRequest;
use crate::stream::{Generation, sse};
use crate::tokens::{Rng, fnv1a};

/// An error answered in OpenAI's shape.
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    fn param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        };
        (
            self.status,
            axum::Json(error_body(&self.message, kind, self.param, self.code)),
        )
            .into_response()
    }
}

type Answer = Result<Response, ApiError>;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

fn application(headers: &HeaderMap) -> String {
    headers
        .get(APPLICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(ANONYMOUS)
        .to_owned()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The model, a seeded generator for this request, and any injected
/// failure: what every generating endpoint does first.
async fn admit<'a>(
    state: &'a SimState,
    model: &str,
    app: &str,
    body: &Bytes,
    request_seed: Option<u64>,
) -> Result<(&'a SimModel, Rng), ApiError> {
    let Some(config) = state.model(model) else {
        let mut error = ApiError::new(StatusCode::NOT_FOUND, format!("The model `{model}` does not exist."));
        error.code = Some("model_not_found");
        return Err(error.param("model"));
    };
    let sequence = state.sequence.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng::new(
        state.config.seed ^ fnv1a(body) ^ request_seed.unwrap_or(0) ^ sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let failures = &config.failures;
    if failures.slow_headers_ms > 0 {
        tokio::time::sleep(Duration::from_millis(failures.slow_headers_ms)).await;
    }
    if failures.error_rate > 0.0 && rng.next_f64() < failures.error_rate {
        state.meter.injected_error(app, model);
        let status = StatusCode::from_u16(failures.error_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(ApiError::new(status, "injected failure (maas-sim failures.error_rate)"));
    }
    Ok((config, rng))
}

/// A generation request once its prompt is counted.
struct Ask {
    kind: Kind,
    endpoint: &'static str,
    options: GenerationOptions,
    /// Text tokens of the prompt.
    prompt_tokens: u32,
    /// Images of the prompt, each costing the model's `image_tokens`.
    images: u32,
    /// Most tokens the client accepts, if it said.
    requested: Option<u32>,
    /// What each choice is: text, a JSON document or a tool call.
    shape: Shape,
    /// The prompt's texts (messages), whose blocks a GPU server's prefix
    /// cache may hold.
    prompt_texts: Vec<String>,
}

/// A limit as Python's `or` reads it: 0 is no limit.
fn truthy(limit: Option<u32>) -> Option<u32> {
    limit.filter(|&n| n > 0)
}

/// Most choices one request may ask for.
const MAX_CHOICES: u32 = 128;

/// Plans the completion of `ask`: its length, its tokens, any reset.
fn plan(model: &SimModel, rng: &mut Rng, app: String, ask: &Ask) -> Result<Generation, ApiError> {
    let prompt_tokens = ask
        .prompt_tokens
        .saturating_add(ask.images.saturating_mul(model.image_tokens));
    let requested = ask.requested;
    if !model.continuous_usage_stats
        && ask
            .options
            .stream_options
            .is_some_and(|o| o.continuous_usage_stats.is_some())
    {
        return Err(
            bad_request("Unrecognized request argument supplied: stream_options.continuous_usage_stats")
                .param("stream_options"),
        );
    }
    let room = model.max_model_len.saturating_sub(prompt_tokens);
    if prompt_tokens > model.max_model_len || requested.is_some_and(|r| r > room) {
        return Err(bad_request(format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens \
                 ({prompt_tokens} in the messages, {} in the completion). Please reduce the length of the \
                 messages or completion.",
            model.max_model_len,
            prompt_tokens + requested.unwrap_or(0),
            requested.unwrap_or(0)
        ))
        .param("max_tokens"));
    }
    let choices: Vec<Choice> = (0..ask.options.n.unwrap_or(1))
        .map(|_| plan_choice(model, rng, ask, room))
        .collect();
    let longest = choices.iter().map(|c| c.tokens.len() as u32).max().unwrap_or(0);
    // A reset comes mid-stream: after the first token, before the last.
    let reset_rate = model.failures.reset_rate;
    let reset_after = (ask.options.stream && longest >= 2 && reset_rate > 0.0 && rng.next_f64() < reset_rate)
        .then(|| rng.between(1, longest - 1) as usize);
    Ok(Generation {
        meta: meta(ask.kind, &ask.options.model, rng),
        app,
        prompt_tokens,
        choices,
        options: ask.options.stream_options.unwrap_or_default(),
        reset_after,
        ttft: Duration::from_millis(model.ttft_ms),
        itl: Duration::from_millis(model.itl_ms),
        fragments: model.fragment_events.then(|| Rng::new(rng.next_u64())),
        stamp: model.stamp_events,
        sequence: None,
    })
}

/// One choice: its length drawn from the model's range, cut at the
/// client's limit and the context's room.
fn plan_choice(model: &SimModel, rng: &mut Rng, ask: &Ask, room: u32) -> Choice {
    let natural = rng.between(model.output_tokens.min, model.output_tokens.max).min(room);
    let cap = ask.requested.map_or(room, |r| r.min(room));
    let tool_call = match &ask.shape {
        Shape::ToolCall { name, .. } => Some(ToolCall {
            id: format!("chatcmpl-tool-{:016x}", rng.next_u64()),
            name: name.clone(),
        }),
        _ => None,
    };
    if ask.shape == Shape::Text {
        let count = natural.min(cap);
        let finish_reason = if ask.requested.is_some_and(|r| natural >= r) || count == room {
            "length"
        } else {
            "stop"
        };
        let tokens = crate::output::tokens(&Shape::Text, count, None, rng);
        return Choice {
            tokens,
            finish_reason,
            tool_call,
        };
    }
    // A document takes the tokens it needs, unless the limit cuts it.
    let mut tokens = crate::output::tokens(&ask.shape, natural.max(1), None, rng);
    let finish_reason = if tokens.len() > cap as usize {
        tokens.truncate(cap as usize);
        "length"
    } else if tool_call.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    Choice {
        tokens,
        finish_reason,
        tool_call,
    }
}

fn meta(kind: Kind, model: &str, rng: &mut Rng) -> ResponseMeta {
    ResponseMeta {
        kind,
        id: format!("{}{:016x}{:016x}", kind.id_prefix(), rng.next_u64(), rng.next_u64()),
        created: now_secs(),
        model: model.to_owned(),
    }
}

/// The client connection of a request, when served by [`crate::serve`].
type Connection = Option<Extension<ConnectInfo<Peer>>>;

async fn respond(
    state: Arc<SimState>,
    generation: Generation,
    stream: bool,
    endpoint: &'static str,
    peer: Option<Peer>,
) -> Response {
    state.meter.start(
        &generation.app,
        &generation.meta.model,
        endpoint,
        generation.prompt_tokens,
    );
    if stream {
        let body = Body::from_stream(sse(state, generation, peer));
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response()
    } else {
        axum::Json(generation.complete(state).await).into_response()
    }
}

fn choices(n: Option<u32>) -> Result<(), ApiError> {
    match n {
        Some(0) => Err(bad_request("n must be at least 1, got 0.").param("n")),
        Some(n) if n > MAX_CHOICES => Err(bad_request(format!("n must be at most {MAX_CHOICES}, got {n}.")).param("n")),
        _ => Ok(()),
    }
}

/// A `priority` other than 0 is refused unless the model's server
/// schedules by priority, as vLLM refuses it.
fn check_priority(state: &SimState, options: &crate::openai::GenerationOptions) -> Result<(), ApiError> {
    let priority = options.priority.unwrap_or(0);
    let by_priority = state
        .engine(&options.model)
        .is_some_and(|engine| engine.config().scheduling_policy == crate::engine::SchedulingPolicy::Priority);
    if priority != 0 && !by_priority {
        return Err(bad_request(format!(
            "Got priority {priority} but Priority scheduling is not enabled."
        ))
        .param("priority"));
    }
    Ok(())
}

/// What chat and completions share once the request is parsed.
async fn generate(state: Arc<SimState>, headers: &HeaderMap, body: &Bytes, ask: Ask, connection: Connection) -> Answer {
    choices(ask.options.n)?;
    check_priority(&state, &ask.options)?;
    let app = application(headers);
    let (model, mut rng) = admit(&state, &ask.options.model, &app, body, ask.options.seed).await?;
    let mut generation = plan(model, &mut rng, app, &ask)?;
    if let Some(engine) = state.engine(&ask.options.model) {
        generation.sequence = Some(queue(engine, &generation, &ask)?);
    }
    let peer = connection.map(|Extension(ConnectInfo(peer))| peer);
    Ok(respond(state.clone(), generation, ask.options.stream, ask.endpoint, peer).await)
}

/// Queues a planned generation in the model's GPU server: its prompt,
/// and as many tokens as its longest choice (every choice's KV cache).
fn queue(
    engine: &crate::engine::Engine,
    generation: &Generation,
    ask: &Ask,
) -> Result<crate::engine::Sequence, ApiError> {
    let generated = generation.completion_tokens();
    let blocks = crate::engine::block_hashes(ask.prompt_texts.iter().map(String::as_str), engine.config().block_size);
    if !engine.fits(&blocks, generation.prompt_tokens, generated) {
        return Err(bad_request(format!(
            "This request needs {} tokens of KV cache ({} in the prompt, {generated} to generate); the server \
             holds {}.",
            u64::from(generation.prompt_tokens) + u64::from(generated),
            generation.prompt_tokens,
            engine.config().kv_cache_tokens
        )));
    }
    let priority = ask.options.priority.unwrap_or(0);
    Ok(engine.submit(
        blocks,
        generation.prompt_tokens,
        generation.longest() as u32,
        generated,
        priority,
    ))
}

pub async fn chat(
    State(state): State<Arc<SimState>>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: ChatRequest = parse(&body)?;
    let shape = shape_of(
        request.tools.as_ref(),
        request.tool_choice.as_ref(),
        request.response_format.as_ref(),
        request.messages.last().map(|m| m.role.as_str()),
    )
    .map_err(|message| bad_request(message).param("tool_choice"))?;
    let ask = Ask {
        kind: Kind::Chat,
        endpoint: "chat",
        prompt_tokens: request.prompt_tokens_by(state.counter(&request.options.model)),
        images: request.images(),
        // As vLLM and SGLang read them: `max_completion_tokens or max_tokens`,
        // so a 0 falls through, and with both falsy the model generates
        // until it stops or the context ends.
        requested: truthy(request.max_completion_tokens).or(truthy(request.options.max_tokens)),
        prompt_texts: request
            .messages
            .iter()
            .map(|m| {
                m.content
                    .as_ref()
                    .map(crate::openai::MessageContent::text)
                    .unwrap_or_default()
            })
            .collect(),
        options: request.options,
        shape,
    };
    generate(state, &headers, &body, ask, connection).await
}

pub async fn completions(
    State(state): State<Arc<SimState>>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: CompletionRequest = parse(&body)?;
    let prompts = request.prompt.item_tokens_by(state.counter(&request.options.model));
    let [prompt_tokens] = prompts[..] else {
        return Err(bad_request("maas-sim completes one prompt per request").param("prompt"));
    };
    let ask = Ask {
        kind: Kind::Completion,
        endpoint: "completions",
        prompt_tokens,
        images: 0,
        // OpenAI's completions API defaults to 16 tokens.
        requested: Some(request.options.max_tokens.unwrap_or(16)),
        prompt_texts: request.prompt.texts(),
        options: request.options,
        shape: Shape::Text,
    };
    generate(state, &headers, &body, ask, connection).await
}

pub async fn responses(
    State(state): State<Arc<SimState>>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: ResponsesRequest = parse(&body)?;
    let ask = Ask {
        kind: Kind::Response,
        endpoint: "responses",
        prompt_tokens: request.prompt_tokens_by(state.counter(&request.model)),
        images: 0,
        requested: truthy(request.max_output_tokens),
        prompt_texts: request.prompt_texts(),
        options: GenerationOptions {
            model: request.model,
            max_tokens: request.max_output_tokens,
            stream: request.stream,
            stream_options: None,
            n: None,
            seed: None,
            priority: request.priority,
        },
        shape: Shape::Text,
    };
    generate(state, &headers, &body, ask, connection).await
}

pub async fn embeddings(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Answer {
    let request: EmbeddingRequest = parse(&body)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad_request(format!("unknown encoding_format `{other}`")).param("encoding_format"));
        }
    };
    let app = application(&headers);
    let (model, mut rng) = admit(&state, &request.model, &app, &body, None).await?;
    let dimensions = request
        .dimensions
        .unwrap_or(model.embedding_dimensions)
        .clamp(1, 65_536) as usize;
    let items = request.input.item_tokens_by(state.counter(&request.model));
    let prompt_tokens: u32 = items.iter().sum();
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, _)| {
            let vector: Vec<f32> = (0..dimensions).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
            let embedding = if base64 {
                json!(base64_f32(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    state.meter.start(&app, &request.model, "embeddings", prompt_tokens);
    state
        .meter
        .finish(&app, &request.model, 0, crate::meter::Ending::Complete);
    Ok(axum::Json(json!({
        "object": "list", "data": data, "model": request.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response())
}

pub async fn models(State(state): State<Arc<SimState>>) -> Response {
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": "maas-sim", "max_model_len": m.max_model_len}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn usage(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(json!({"applications": state.meter.applications()})).into_response()
}

pub async fn reset_usage(State(state): State<Arc<SimState>>) -> StatusCode {
    state.meter.reset();
    StatusCode::NO_CONTENT
}

pub async fn metrics(State(state): State<Arc<SimState>>) -> Response {
    let mut text = state.meter.render_prometheus();
    for model in &state.config.models {
        if let Some(engine) = state.engine(&model.id) {
            engine.stats().render(&crate::meter::escape_label(&model.id), &mut text);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn version() -> Response {
    axum::Json(json!({"version": concat!("maas-sim ", env!("CARGO_PKG_VERSION"))})).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint on maas-sim")
}
