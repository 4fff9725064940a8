//! OpenTelemetry's GenAI semantic conventions for each request a model
//! server answered: the four histograms (`gen_ai.client.token.usage`,
//! `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`,
//! `gen_ai.server.time_per_output_token`), kept as Prometheus histograms
//! beside the gateway's own series (`gen_ai_*` on `/metrics`) and exported
//! over OTLP under their dotted names ([`crate::record::otlp`]); and the
//! request's span, when its trace is sampled.

use std::sync::LazyLock;
use std::sync::Mutex;
use std::time::Duration;

use maas_protocol::trace_context::TraceContext;
use prometheus::HistogramVec;

use crate::record::metrics::METRICS;
use crate::response::metering::TokenUsage;

/// Bucket bounds the conventions advise.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];

/// The attributes every GenAI series carries, as Prometheus labels.
const LABELS: [&str; 4] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
];

/// One instrument: its Prometheus family and its OpenTelemetry name, unit
/// and description (what [`crate::record::otlp`] exports).
pub struct Instrument {
    pub prometheus: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

pub const INSTRUMENTS: [Instrument; 4] = [
    Instrument {
        prometheus: "gen_ai_client_token_usage",
        name: "gen_ai.client.token.usage",
        unit: "{token}",
        description: "Tokens used per request, by type (input, output)",
    },
    Instrument {
        prometheus: "gen_ai_server_request_duration_seconds",
        name: "gen_ai.server.request.duration",
        unit: "s",
        description: "Time from the request's arrival to its last byte",
    },
    Instrument {
        prometheus: "gen_ai_server_time_to_first_token_seconds",
        name: "gen_ai.server.time_to_first_token",
        unit: "s",
        description: "Time from the request's arrival to the first output token of a stream",
    },
    Instrument {
        prometheus: "gen_ai_server_time_per_output_token_seconds",
        name: "gen_ai.server.time_per_output_token",
        unit: "s",
        description: "Time between output tokens of a stream after the first",
    },
];

/// A Prometheus label's OpenTelemetry attribute name.
pub fn attribute_name(label: &str) -> &str {
    match label {
        "gen_ai_operation_name" => "gen_ai.operation.name",
        "gen_ai_provider_name" => "gen_ai.provider.name",
        "gen_ai_request_model" => "gen_ai.request.model",
        "gen_ai_response_model" => "gen_ai.response.model",
        "gen_ai_token_type" => "gen_ai.token.type",
        "error_type" => "error.type",
        other => other,
    }
}

pub struct GenAiMetrics {
    token_usage: HistogramVec,
    request_duration: HistogramVec,
    time_to_first_token: HistogramVec,
    time_per_output_token: HistogramVec,
}

pub static GENAI: LazyLock<GenAiMetrics> = LazyLock::new(|| {
    let register = |index: usize, buckets: &[f64], extra: Option<&'static str>| {
        let instrument = &INSTRUMENTS[index];
        let mut labels = LABELS.to_vec();
        labels.extend(extra);
        let histogram = HistogramVec::new(
            prometheus::HistogramOpts::new(instrument.prometheus, instrument.description).buckets(buckets.to_vec()),
            &labels,
        )
        .expect("metric definitions are static");
        METRICS
            .registry
            .register(Box::new(histogram.clone()))
            .expect("metric names are unique");
        histogram
    };
    GenAiMetrics {
        token_usage: register(0, &TOKEN_BUCKETS, Some("gen_ai_token_type")),
        request_duration: register(1, &DURATION_BUCKETS, Some("error_type")),
        time_to_first_token: register(2, &TTFT_BUCKETS, None),
        time_per_output_token: register(3, &TPOT_BUCKETS, None),
    }
});

/// The four histograms as they stand, for export: collected alone, not
/// with the whole registry's every series.
pub fn families() -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector;
    let metrics = &*GENAI;
    [
        &metrics.token_usage,
        &metrics.request_duration,
        &metrics.time_to_first_token,
        &metrics.time_per_output_token,
    ]
    .into_iter()
    .flat_map(|histogram| histogram.collect())
    .collect()
}

/// What the GenAI instruments and span record of one request.
#[derive(Debug, Clone)]
pub struct GenAiCall<'a> {
    /// `chat`, `text_completion` or `embeddings`.
    pub operation: &'static str,
    /// The backend that served it.
    pub provider: &'a str,
    /// The model asked for; the gateway sends it as asked, so the model
    /// that answered is the same.
    pub model: &'a str,
    pub usage: TokenUsage,
    pub status: u16,
    pub duration: Duration,
    /// Streams: when the first output token passed.
    pub first_token_after: Option<Duration>,
}

impl GenAiCall<'_> {
    /// The mean time between a stream's output tokens after the first.
    pub fn time_per_output_token(&self) -> Option<Duration> {
        let first = self.first_token_after?;
        let later_tokens = self.usage.completion_tokens.checked_sub(1).filter(|n| *n > 0)?;
        Some(self.duration.saturating_sub(first) / u32::try_from(later_tokens).unwrap_or(u32::MAX))
    }

    /// `error.type`: the status of an answer that is not a success.
    fn error_type(&self) -> String {
        if self.status >= 400 {
            self.status.to_string()
        } else {
            String::new()
        }
    }
}

/// Records a call in the four histograms.
pub fn record(call: &GenAiCall<'_>) {
    let labels = [call.operation, call.provider, call.model, call.model];
    let with = |extra| [labels[0], labels[1], labels[2], labels[3], extra];
    let metrics = &*GENAI;
    for (kind, tokens) in [
        ("input", call.usage.prompt_tokens),
        ("output", call.usage.completion_tokens),
    ] {
        if tokens > 0 {
            metrics
                .token_usage
                .with_label_values(&with(kind))
                .observe(tokens as f64);
        }
    }
    metrics
        .request_duration
        .with_label_values(&with(call.error_type().as_str()))
        .observe(call.duration.as_secs_f64());
    if let Some(first) = call.first_token_after {
        metrics
            .time_to_first_token
            .with_label_values(&labels)
            .observe(first.as_secs_f64());
    }
    if let Some(per_token) = call.time_per_output_token() {
        metrics
            .time_per_output_token
            .with_label_values(&labels)
            .observe(per_token.as_secs_f64());
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Text(String),
    Int(i64),
}

/// A finished span, waiting for export.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub context: TraceContext,
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttributeValue)>,
    pub error: bool,
}

/// What a request's span says besides the GenAI call.
#[derive(Debug, Clone, Default)]
pub struct SpanFacts<'a> {
    pub product: &'a str,
    pub application_id: &'a str,
    pub plan: &'a str,
    /// `admitted`, or why the gateway refused it.
    pub decision: &'a str,
    /// Time until the model server's response headers.
    pub upstream: Option<Duration>,
    pub request_id: &'a str,
}

/// The span of a request: named `{operation} {model}` as the conventions
/// say (the gateway's own refusals, which reached no model, `{operation}`
/// or `gateway`), with the usage, the plan's decision and the upstream time.
pub fn span_of(
    context: TraceContext,
    call: &GenAiCall<'_>,
    facts: &SpanFacts<'_>,
    start_unix_nanos: u64,
) -> SpanRecord {
    use AttributeValue::{Int, Text};
    let name = match (call.operation, call.model) {
        ("", _) => "gateway".to_owned(),
        (operation, "") => operation.to_owned(),
        (operation, model) => format!("{operation} {model}"),
    };
    let mut attributes = vec![
        ("gen_ai.operation.name", Text(call.operation.to_owned())),
        ("gen_ai.provider.name", Text(call.provider.to_owned())),
        ("gen_ai.request.model", Text(call.model.to_owned())),
        ("gen_ai.response.model", Text(call.model.to_owned())),
        ("gen_ai.usage.input_tokens", Int(call.usage.prompt_tokens as i64)),
        ("gen_ai.usage.output_tokens", Int(call.usage.completion_tokens as i64)),
        ("http.response.status_code", Int(i64::from(call.status))),
        ("maas.product", Text(facts.product.to_owned())),
        ("maas.application.id", Text(facts.application_id.to_owned())),
        ("maas.plan", Text(facts.plan.to_owned())),
        ("maas.decision", Text(facts.decision.to_owned())),
        ("maas.request_id", Text(facts.request_id.to_owned())),
    ];
    if let Some(upstream) = facts.upstream {
        attributes.push(("maas.upstream.duration_ms", Int(upstream.as_millis() as i64)));
    }
    if call.status >= 400 {
        attributes.push(("error.type", Text(call.status.to_string())));
    }
    attributes.retain(|(_, value)| !matches!(value, Text(text) if text.is_empty()));
    SpanRecord {
        context,
        name,
        start_unix_nanos,
        end_unix_nanos: start_unix_nanos + call.duration.as_nanos() as u64,
        attributes,
        error: call.status >= 500,
    }
}

/// The most spans waiting for export; beyond, new ones are dropped and
/// counted (`maas_spans_dropped_total`), never blocking a request.
const MAX_QUEUED_SPANS: usize = 8192;

/// Spans finished and not yet exported.
pub static SPANS: LazyLock<Mutex<Vec<SpanRecord>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Queues a finished span for export.
pub fn queue_span(span: SpanRecord) {
    let mut spans = SPANS.lock().unwrap_or_else(|e| e.into_inner());
    if spans.len() >= MAX_QUEUED_SPANS {
        drop(spans);
        METRICS.spans_dropped.inc();
        return;
    }
    spans.push(span);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(stream: bool) -> GenAiCall<'static> {
        GenAiCall {
            operation: "chat",
            provider: "vllm",
            model: "granite",
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 11,
                total_tokens: 21,
            },
            status: 200,
            duration: Duration::from_millis(1_100),
            first_token_after: stream.then_some(Duration::from_millis(100)),
        }
    }

    #[test]
    fn output_tokens_after_the_first_share_the_time_after_it() {
        assert_eq!(call(true).time_per_output_token(), Some(Duration::from_millis(100)));
        assert_eq!(call(false).time_per_output_token(), None);
        let mut one = call(true);
        one.usage.completion_tokens = 1;
        assert_eq!(one.time_per_output_token(), None);
    }

    #[test]
    fn labels_become_the_conventions_attributes() {
        assert_eq!(attribute_name("gen_ai_operation_name"), "gen_ai.operation.name");
        assert_eq!(attribute_name("gen_ai_provider_name"), "gen_ai.provider.name");
        assert_eq!(attribute_name("gen_ai_request_model"), "gen_ai.request.model");
        assert_eq!(attribute_name("gen_ai_response_model"), "gen_ai.response.model");
        assert_eq!(attribute_name("gen_ai_token_type"), "gen_ai.token.type");
        assert_eq!(attribute_name("error_type"), "error.type");
    }

    #[test]
    fn spans_are_named_and_attributed_as_the_conventions_say() {
        let context = TraceContext::start(None, 1.0, [5; 24]);
        let facts = SpanFacts {
            product: "granite",
            application_id: "app_1",
            plan: "gold",
            decision: "admitted",
            upstream: Some(Duration::from_millis(40)),
            request_id: "req_1",
        };
        let span = span_of(context, &call(true), &facts, 1_000);
        assert_eq!(span.name, "chat granite");
        assert_eq!(span.end_unix_nanos, 1_000 + 1_100_000_000);
        let attribute = |name: &str| span.attributes.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(attribute("gen_ai.usage.input_tokens"), Some(AttributeValue::Int(10)));
        assert_eq!(attribute("gen_ai.usage.output_tokens"), Some(AttributeValue::Int(11)));
        assert_eq!(
            attribute("maas.decision"),
            Some(AttributeValue::Text("admitted".into()))
        );
        assert_eq!(attribute("maas.upstream.duration_ms"), Some(AttributeValue::Int(40)));
        assert_eq!(attribute("error.type"), None);
        let mut refused = call(false);
        refused.status = 429;
        refused.model = "";
        let span = span_of(context, &refused, &SpanFacts::default(), 0);
        assert_eq!(span.name, "chat");
        assert_eq!(
            attribute_of(&span, "error.type"),
            Some(AttributeValue::Text("429".into()))
        );
        assert!(!span.error, "a refusal is not the gateway's failure");
        assert_eq!(
            attribute_of(&span, "gen_ai.request.model"),
            None,
            "empty values are left out"
        );
    }

    fn attribute_of(span: &SpanRecord, name: &str) -> Option<AttributeValue> {
        span.attributes.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }
}
