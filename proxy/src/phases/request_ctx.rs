//! What one request carries from phase to phase: what admission found
//! (catalog, product, key, body, limits' hold), where it goes upstream,
//! and what the response's filters meter, for `logging` to settle and log.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use maas_store::model::{AuthContext, Plan, SpendRates, UsageLimit};

use crate::record::overhead::GatewayTime;
use crate::request::rewrite::ClientUsage;
use crate::response::decoding::ContentDecoder;
use crate::response::metering::{TokenUsage, UsageScanner};
use crate::response::stream_meter::StreamMeter;
use crate::state::ServingCatalog;
use crate::upstream::Upstream;

/// Everything one request carries between phases.
pub struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) catalog: Option<Arc<ServingCatalog>>,
    pub(crate) product: Option<usize>,
    pub(crate) auth: Option<Arc<AuthContext>>,
    pub(crate) upstream: Option<Arc<Upstream>>,
    pub(crate) replica: usize,
    /// Counts this request at `replica` until the request ends.
    pub(crate) at_replica: Option<crate::upstream::InFlight>,
    pub(crate) attempts: u32,
    /// Path (and query) to send upstream.
    pub(crate) upstream_path: String,
    /// The whole request body, read before the peer is chosen.
    pub(crate) body: Option<Bytes>,
    /// The body was read as an OpenAI request: it goes upstream labelled
    /// JSON, so the model server reads it the way the gateway did.
    pub(crate) json_body: bool,
    pub(crate) model: Option<String>,
    /// Query parameter that carried the key, removed before forwarding.
    pub(crate) key_query_param: Option<String>,
    pub(crate) custom_key_header: Option<String>,
    pub(crate) extra_headers: Vec<(&'static str, String)>,
    /// `x-request-id` ([`crate::request::request_id`]), empty until `request_filter`.
    pub(crate) request_id: String,
    /// Reads `usage` from a JSON answer of any size as it passes.
    pub(crate) usage_scanner: Option<UsageScanner>,
    pub(crate) usage: Option<TokenUsage>,
    /// The most the request can cost ([`crate::limits::spend`]), on metered endpoints.
    pub(crate) ceiling: Option<TokenUsage>,
    /// The prompt's tokens billed when the model server reports none
    /// ([`crate::limits::spend::Spend::prompt_estimate`]).
    pub(crate) prompt_estimate: u64,
    pub(crate) rejected: Option<&'static str>,
    pub(crate) upstream_sent_at: Option<Instant>,
    pub(crate) upstream_headers_after: Option<Duration>,
    /// The gateway's own time in the response's filters ([`crate::record::overhead`]).
    pub(crate) gateway_time: GatewayTime,
    /// The client asked for `stream: true`.
    pub(crate) stream: bool,
    /// What the client asked to see of usage (everything, unless a stream
    /// request was rewritten to ask the upstream for more).
    pub(crate) client_usage: ClientUsage,
    pub(crate) stream_meter: Option<StreamMeter>,
    /// The billed tokens are an estimate (the upstream reported none).
    pub(crate) tokens_estimated: bool,
    /// Counted in the in-flight gauge (Pingora may skip `request_filter`).
    pub(crate) in_flight: bool,
    /// Counted in the streams-in-flight gauge.
    pub(crate) streaming: bool,
    /// Tokens held against the plan's token limits, settled in `logging`.
    pub(crate) hold: Option<String>,
    /// The hard spend budgets it was admitted against, as limits
    /// ([`maas_store::model::budget_limits`]); settled with the plan's.
    pub(crate) budget_limits: Vec<UsageLimit>,
    /// Its organization's hard budgets, as limits in the account's shard
    /// ([`maas_store::model::account_budget_limits`]), held first.
    pub(crate) account_limits: Vec<UsageLimit>,
    /// What a token of the requested model costs, in nanos.
    pub(crate) rates: SpendRates,
    /// The plan's limits admitted it (it counts as a hit).
    pub(crate) admitted: bool,
    /// Undoes a coding the upstream applied anyway, before metering.
    pub(crate) decoder: Option<ContentDecoder>,
    /// The trace it continues or starts, when tracing is on.
    pub(crate) trace: Option<maas_protocol::trace_context::TraceContext>,
    /// `gen_ai.operation.name` of its endpoint; empty for no model call.
    pub(crate) operation: &'static str,
    /// When a stream's first output token passed.
    pub(crate) first_token_after: Option<Duration>,
}

impl RequestCtx {
    /// A request's context when it arrives.
    pub(crate) fn new() -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            trace: None,
            operation: "",
            first_token_after: None,
            catalog: None,
            product: None,
            auth: None,
            upstream: None,
            replica: 0,
            at_replica: None,
            attempts: 0,
            upstream_path: String::new(),
            body: None,
            json_body: false,
            model: None,
            key_query_param: None,
            custom_key_header: None,
            extra_headers: Vec::new(),
            request_id: String::new(),
            usage_scanner: None,
            usage: None,
            ceiling: None,
            prompt_estimate: 0,
            hold: None,
            budget_limits: Vec::new(),
            account_limits: Vec::new(),
            rates: SpendRates::default(),
            admitted: false,
            decoder: None,
            rejected: None,
            upstream_sent_at: None,
            upstream_headers_after: None,
            gateway_time: GatewayTime::default(),
            in_flight: false,
            streaming: false,
            stream: false,
            client_usage: ClientUsage {
                final_chunk: true,
                every_chunk: true,
            },
            stream_meter: None,
            tokens_estimated: false,
        }
    }
}

/// Every limit a request is admitted and settled against: its plan's and
/// its spend budgets' (`budget`, usually none).
pub(crate) fn all_limits<'a>(plan: &'a Plan, budget: &'a [UsageLimit]) -> Cow<'a, [UsageLimit]> {
    if budget.is_empty() {
        Cow::Borrowed(&plan.limits)
    } else {
        Cow::Owned([plan.limits.as_slice(), budget].concat())
    }
}
