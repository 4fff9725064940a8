//! The catalog: what operators declare (backends, products, plans).
//!
//! Catalog objects are keyed by `system_name` and written as a whole; the
//! same types are read from `catalog.yaml`, stored as JSON and exported back,
//! so every field that has a default is skipped on output when it holds it.

use std::collections::BTreeMap;

pub use maas_protocol::prompt::PromptCosts;
pub use maas_protocol::rewrite::StreamUsage;
use serde::{Deserialize, Serialize};

use super::admission::{Priority, QueuePolicy, Saturation};
use super::money::Money;
use super::token_access::{AuthMethod, TokenPlanRule};
use crate::period::Period;

/// The metric every request counts; methods are its children (3scale).
pub const HITS: &str = "hits";
/// Token metrics, counted from responses rather than from mapping rules.
pub const PROMPT_TOKENS: &str = "prompt_tokens";
pub const COMPLETION_TOKENS: &str = "completion_tokens";
pub const TOTAL_TOKENS: &str = "total_tokens";
/// Metrics every product has whether or not it declares them.
pub const BUILTIN_METRICS: [&str; 4] = [HITS, PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS];
/// Builtin metrics a mapping rule may not increment.
pub const TOKEN_METRICS: [&str; 3] = [PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS];

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
fn yes() -> bool {
    true
}
fn is_true(value: &bool) -> bool {
    *value
}

/// A model server: one or more replicas of the same OpenAI-compatible API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Backend {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub system_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Base URLs of the replicas, e.g. `http://vllm.ns.svc:8000`.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub urls: Vec<String>,
    #[serde(default = "default_health_path")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^/"))]
    pub health_path: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeouts: Timeouts,
    /// Name of the environment variable holding the backend's own API key
    /// (vLLM `--api-key`, a KServe token); the client's key never goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// How a request picks one of the replicas.
    #[serde(default, skip_serializing_if = "is_default")]
    pub balance: Balance,
    /// Requests whose prompts start alike go to the same replica (whose
    /// prefix cache holds that start), unless it has more than its share
    /// of requests in flight; then `balance` picks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub prefix_affinity: bool,
    /// Probe `health_path` of every replica; without it, replicas are
    /// skipped only after connect errors (passive ejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// When every replica is this loaded, requests wait in the gateway
    /// ([`Saturation`]); without it they all go to the replicas at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturation: Option<Saturation>,
    /// The replicas run vLLM with `--scheduling-policy priority`: every
    /// request carries its plan's priority as vLLM's `priority`
    /// ([`Priority::queue_priority`]), so the replicas' own queues serve
    /// plans in the gateway's order too.
    #[serde(default, skip_serializing_if = "is_default")]
    pub priority_scheduling: bool,
}

/// `health_check:` of a backend: each proxy sends `GET {health_path}` to
/// every replica every `interval_ms`; a replica is down after
/// `unhealthy_after` failures in a row (no answer within `timeout_ms`, or
/// not 2xx) and up again after `healthy_after` successes. A down replica
/// gets no request while another is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    #[cfg_attr(feature = "openapi", schema(minimum = 100))]
    pub interval_ms: u64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub timeout_ms: u64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub unhealthy_after: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub healthy_after: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval_ms: 2_000,
            timeout_ms: 1_000,
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// `balance:` of a backend: how the proxy picks a replica for a request
/// (replicas it ejected after connect errors are skipped either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each replica in turn.
    #[default]
    RoundRobin,
    /// The replica with the fewest requests in flight from this proxy
    /// (ties in turn): a replica slowed by long streams gets fewer.
    LeastRequests,
    /// The replica with the least load its own `/metrics` reports (vLLM's
    /// waiting requests and KV-cache use, scraped every 200 ms) plus this
    /// proxy's requests in flight; `least_requests` while any replica's
    /// metrics are missing or older than a second.
    LoadAware,
}

fn default_health_path() -> String {
    "/health".to_owned()
}

/// Upstream timeouts in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub connect_ms: u64,
    /// Longest silence while waiting for the next response bytes.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub read_ms: u64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub write_ms: u64,
    /// Pooled connections idle longer than this are closed before reuse;
    /// below vLLM's 5 s keep-alive so a stale connection is never picked.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub pool_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 3_000,
            read_ms: 120_000,
            write_ms: 30_000,
            pool_idle_ms: 4_000,
        }
    }
}

/// A published API: one model endpoint with its metrics, rules and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Product {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub system_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Public path prefix of the product's own endpoint, e.g. `/granite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Public host names of the product's own endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Model ids served, as clients name them in the JSON body's `model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// `system_name` of the backend serving this product.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub backend: String,
    /// Path on the backend the product's paths are appended to.
    #[serde(default = "root_path", skip_serializing_if = "is_root_path")]
    pub backend_path: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub credentials: CredentialSettings,
    /// The credentials it takes: API keys, the identity provider's access
    /// tokens, or both ([`AuthMethod`]); API keys alone by default.
    #[serde(
        default = "super::token_access::api_key_only",
        skip_serializing_if = "super::token_access::is_api_key_only"
    )]
    pub auth: Vec<AuthMethod>,
    /// The plan a token caller is on, by its groups ([`TokenPlanRule`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_plans: Vec<TokenPlanRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub metering: MeteringPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mapping_rules: Vec<MappingRule>,
    /// How prompts to each model are counted (keys are `models` entries);
    /// a model without an entry takes [`ModelSettings::default`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_settings: BTreeMap<String, ModelSettings>,
    /// The product's API documentation; an OpenAI-compatible one is
    /// generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<serde_json::Value>,
    /// How long and how many of its requests may wait while its backend
    /// is saturated ([`QueuePolicy`]; its defaults when absent).
    #[serde(default, skip_serializing_if = "is_default")]
    pub queue: QueuePolicy,
}

fn root_path() -> String {
    "/".to_owned()
}
fn is_root_path(path: &str) -> bool {
    path == "/"
}

impl Product {
    /// Methods in force: the declared ones, or the OpenAI-compatible set
    /// when the product declares neither methods nor mapping rules.
    pub fn effective_methods(&self) -> Vec<Method> {
        if self.uses_openai_defaults() {
            openai_default_methods()
        } else {
            self.methods.clone()
        }
    }

    /// How prompts to `model` are counted: its own settings, else the defaults.
    pub fn settings_of(&self, model: Option<&str>) -> &ModelSettings {
        static DEFAULT: std::sync::LazyLock<ModelSettings> = std::sync::LazyLock::new(ModelSettings::default);
        model.and_then(|m| self.model_settings.get(m)).unwrap_or(&DEFAULT)
    }

    /// Mapping rules in force (see [`Product::effective_methods`]).
    pub fn effective_mapping_rules(&self) -> Vec<MappingRule> {
        if self.uses_openai_defaults() {
            openai_default_rules()
        } else {
            self.mapping_rules.clone()
        }
    }

    fn uses_openai_defaults(&self) -> bool {
        self.methods.is_empty() && self.mapping_rules.is_empty()
    }

    /// Whether `name` is a metric or method a limit or rule may refer to.
    pub fn knows_metric(&self, name: &str) -> bool {
        BUILTIN_METRICS.contains(&name)
            || self.metrics.iter().any(|m| m.system_name == name)
            || self.effective_methods().iter().any(|m| m.system_name == name)
    }

    pub fn accepts(&self, method: AuthMethod) -> bool {
        self.auth.contains(&method)
    }

    /// Display name, falling back to the system name.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.system_name
        } else {
            &self.name
        }
    }
}

const OPENAI_ENDPOINTS: [(&str, &str, HttpMethod, &str); 5] = [
    ("v1-models", "List Models", HttpMethod::Get, "/v1/models"),
    (
        "v1-chat-completions",
        "Chat Completions",
        HttpMethod::Post,
        "/v1/chat/completions",
    ),
    ("v1-completions", "Completions", HttpMethod::Post, "/v1/completions"),
    ("v1-embeddings", "Embeddings", HttpMethod::Post, "/v1/embeddings"),
    ("v1-responses", "Responses", HttpMethod::Post, "/v1/responses"),
];

fn openai_default_methods() -> Vec<Method> {
    OPENAI_ENDPOINTS
        .iter()
        .map(|(name, friendly, _, _)| Method {
            system_name: (*name).to_owned(),
            friendly_name: (*friendly).to_owned(),
            description: String::new(),
        })
        .collect()
}

fn openai_default_rules() -> Vec<MappingRule> {
    OPENAI_ENDPOINTS
        .iter()
        .map(|(name, _, method, pattern)| MappingRule {
            http_method: *method,
            pattern: (*pattern).to_owned(),
            metric: (*name).to_owned(),
            increment: 1,
            last: false,
            unmetered: false,
        })
        .collect()
}

/// Where the proxy looks for the API key (the walkthrough's "credentials location").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CredentialSettings {
    pub locations: Vec<CredentialLocation>,
    /// Header read by the `header` location.
    pub header_name: String,
    /// Query parameter read by the `query` location.
    pub query_param: String,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        CredentialSettings {
            locations: vec![CredentialLocation::Bearer, CredentialLocation::Basic],
            header_name: "api-key".to_owned(),
            query_param: "user_key".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialLocation {
    /// `Authorization: Bearer <key>`
    Bearer,
    /// HTTP Basic with the key as user or password.
    Basic,
    /// A header of its own (`header_name`).
    Header,
    /// A query parameter (`query_param`).
    Query,
}

/// CORS policy answered by the proxy itself (preflights never reach upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<String>,
    pub allow_headers: Vec<String>,
    pub allow_methods: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u32,
}

impl Default for CorsPolicy {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        CorsPolicy {
            allow_origins: strings(&["*"]),
            allow_headers: strings(&["Authorization", "Content-Type", "Accept"]),
            allow_methods: strings(&["GET", "POST", "OPTIONS"]),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age_secs: 600,
        }
    }
}

/// A countable quantity besides the builtins (hits and the token metrics).
/// How the gateway gets token counts for streams from this product's
/// model server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct MeteringPolicy {
    pub stream_usage: StreamUsage,
}

/// How the prompts of one model are counted before it answers, so a
/// request's hold is never below what the model will count: exactly with
/// the model's tokenizer, else by a bound no byte-level tokenizer exceeds
/// (a token per byte of text, plus the template's tokens per message), and
/// for inputs that are not text, a bound per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// The model's `tokenizer.json` (Hugging Face format) on the proxy's
    /// file system; read when a cheap bound would not fit a budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Most tokens one image costs.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub image_tokens: u64,
    /// Most tokens one audio input costs.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub audio_tokens: u64,
    /// Most tokens one video or file costs.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub video_tokens: u64,
    /// Most tokens the chat template adds per message (role markers,
    /// separators).
    pub message_tokens: u64,
    /// Most tokens the template adds once a request: the start of the
    /// text, the generation prompt, a default system prompt (Llama 3.1's
    /// dates take about 30).
    pub template_tokens: u64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        let costs = PromptCosts::default();
        ModelSettings {
            tokenizer: None,
            image_tokens: costs.image_tokens,
            audio_tokens: costs.audio_tokens,
            video_tokens: costs.video_tokens,
            message_tokens: costs.message_tokens,
            template_tokens: costs.template_tokens,
        }
    }
}

impl ModelSettings {
    /// What these settings say a prompt's template and media cost
    /// ([`PromptCosts`]: the bound of a request's prompt).
    pub fn prompt_costs(&self) -> PromptCosts {
        PromptCosts {
            image_tokens: self.image_tokens,
            audio_tokens: self.audio_tokens,
            video_tokens: self.video_tokens,
            message_tokens: self.message_tokens,
            template_tokens: self.template_tokens,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Metric {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub system_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub friendly_name: String,
    #[serde(default = "default_unit")]
    pub unit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn default_unit() -> String {
    "hit".to_owned()
}

/// A child of `hits`: incrementing a method also increments hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Method {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub system_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub friendly_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// HTTP method + path pattern → metric or method increment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    pub http_method: HttpMethod,
    /// Path with `{param}` segments and an optional trailing `$` anchor.
    pub pattern: String,
    /// A method, `hits` or a custom metric.
    pub metric: String,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub increment: u64,
    /// Stop matching further rules when this one matches.
    #[serde(default, skip_serializing_if = "is_default")]
    pub last: bool,
    /// Requests this rule matches may reach the model server on a path the
    /// gateway cannot meter (anything but the OpenAI inference endpoints):
    /// no cap, no hold, no usage. Without it such requests are refused.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unmetered: bool,
}

fn one() -> u64 {
    1
}
fn is_one(value: &u64) -> bool {
    *value == 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
    /// Matches every method.
    Any,
}

/// What a subscriber gets: limits, caps and prices of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// `system_name` of the product this plan belongs to.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub product: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$"))]
    pub system_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Shown to developers in the portal.
    #[serde(default, skip_serializing_if = "is_default")]
    pub published: bool,
    /// Preselected when a developer subscribes to the product.
    #[serde(default, skip_serializing_if = "is_default")]
    pub default: bool,
    /// New applications wait in `pending` until an admin approves them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub approval_required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<UsageLimit>,
    /// Cap on `max_tokens` of any single request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_tokens: Option<u32>,
    /// Lower `max_tokens` to the remaining token quota instead of letting a
    /// request overrun it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub clamp_max_tokens: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_concurrent_requests: Option<u32>,
    /// Served first (`high`) or last (`low`) while the backend is saturated.
    #[serde(default, skip_serializing_if = "is_default")]
    pub priority: Priority,
    #[serde(default = "default_currency")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$"))]
    pub currency: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub price_per_1k_prompt_tokens: Money,
    #[serde(default, skip_serializing_if = "is_default")]
    pub price_per_1k_completion_tokens: Money,
    /// Prices of particular models of the product, in place of the two
    /// above (a large model costing more than a small one on one plan).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_prices: BTreeMap<String, super::budget::ModelPrice>,
}

fn default_currency() -> String {
    "USD".to_owned()
}

impl Plan {
    /// Whether some limit counts tokens: requests then hold what they may spend.
    pub fn limits_tokens(&self) -> bool {
        self.limits.iter().any(|l| TOKEN_METRICS.contains(&l.metric.as_str()))
    }

    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.system_name
        } else {
            &self.name
        }
    }
}

/// At most `value` of `metric` per `period`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageLimit {
    pub metric: String,
    pub period: Period,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub value: u64,
}
