//! OTLP/HTTP export with JSON bodies (the OpenTelemetry protocol's JSON
//! encoding: ids in hex, 64-bit integers as strings): the GenAI
//! histograms ([`crate::record::genai`]) every `metrics_interval`, with
//! cumulative temporality from the proxy's start, and the sampled spans
//! every second. The documents are built by pure functions
//! ([`metrics_document`], [`traces_document`]); the task only sends them.
//! A collector that does not answer loses that round's spans (counted in
//! `maas_spans_dropped_total`), never a request's time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::proto::MetricFamily;
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::record::genai::{AttributeValue, INSTRUMENTS, SPANS, SpanRecord, attribute_name};
use crate::record::metrics::METRICS;

/// Where and how often telemetry is exported.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's OTLP/HTTP base URL, e.g. `http://collector:4318`.
    pub endpoint: String,
    pub service_name: String,
    pub metrics_interval: Duration,
}

/// Spans are sent this often, at most this many at once.
const SPAN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_SPANS_PER_EXPORT: usize = 2048;

pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn resource(service_name: &str) -> Value {
    json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": service_name}},
        {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
    ]})
}

fn scope() -> Value {
    json!({"name": "maas-proxy", "version": env!("CARGO_PKG_VERSION")})
}

/// An `ExportMetricsServiceRequest` of the GenAI families among `families`.
pub fn metrics_document(families: &[MetricFamily], service_name: &str, start_nanos: u64, now_nanos: u64) -> Value {
    let metrics: Vec<Value> = INSTRUMENTS
        .iter()
        .filter_map(|instrument| {
            let family = families.iter().find(|f| f.name() == instrument.prometheus)?;
            let points: Vec<Value> = family
                .get_metric()
                .iter()
                .map(|metric| {
                    let histogram = metric.get_histogram();
                    let mut previous = 0;
                    let mut counts: Vec<String> = histogram
                        .get_bucket()
                        .iter()
                        .map(|bucket| {
                            let count = bucket.cumulative_count() - previous;
                            previous = bucket.cumulative_count();
                            count.to_string()
                        })
                        .collect();
                    counts.push((histogram.get_sample_count() - previous).to_string());
                    let bounds: Vec<f64> = histogram.get_bucket().iter().map(|b| b.upper_bound()).collect();
                    let attributes: Vec<Value> = metric
                        .get_label()
                        .iter()
                        .filter(|label| !label.value().is_empty())
                        .map(|label| {
                            json!({"key": attribute_name(label.name()), "value": {"stringValue": label.value()}})
                        })
                        .collect();
                    json!({
                        "attributes": attributes,
                        "startTimeUnixNano": start_nanos.to_string(),
                        "timeUnixNano": now_nanos.to_string(),
                        "count": histogram.get_sample_count().to_string(),
                        "sum": histogram.get_sample_sum(),
                        "bucketCounts": counts,
                        "explicitBounds": bounds,
                    })
                })
                .collect();
            (!points.is_empty()).then(|| {
                json!({
                    "name": instrument.name,
                    "unit": instrument.unit,
                    "description": instrument.description,
                    // AGGREGATION_TEMPORALITY_CUMULATIVE
                    "histogram": {"aggregationTemporality": 2, "dataPoints": points},
                })
            })
        })
        .collect();
    json!({"resourceMetrics": [{
        "resource": resource(service_name),
        "scopeMetrics": [{"scope": scope(), "metrics": metrics}],
    }]})
}

/// An `ExportTraceServiceRequest` of `spans`, written straight into one
/// string: at a high sampling ratio this runs for every request, and a
/// tree of JSON values per span cost more than the request itself.
pub fn traces_body(spans: &[SpanRecord], service_name: &str) -> String {
    let mut out = String::with_capacity(256 + spans.len() * 1024);
    out.push_str("{\"resourceSpans\":[{\"resource\":");
    out.push_str(&resource(service_name).to_string());
    out.push_str(",\"scopeSpans\":[{\"scope\":");
    out.push_str(&scope().to_string());
    out.push_str(",\"spans\":[");
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_span(&mut out, span);
    }
    out.push_str("]}]}]}");
    out
}

fn write_span(out: &mut String, span: &SpanRecord) {
    use std::fmt::Write;
    out.push_str("{\"traceId\":\"");
    push_hex(out, &span.context.trace_id);
    out.push_str("\",\"spanId\":\"");
    push_hex(out, &span.context.span_id);
    out.push('"');
    if let Some(parent) = &span.context.parent_span_id {
        out.push_str(",\"parentSpanId\":\"");
        push_hex(out, parent);
        out.push('"');
    }
    out.push_str(",\"name\":");
    push_json_string(out, &span.name);
    // SPAN_KIND_SERVER
    let _ = write!(
        out,
        ",\"kind\":2,\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        span.start_unix_nanos, span.end_unix_nanos
    );
    for (i, (key, value)) in span.attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        push_json_string(out, key);
        match value {
            AttributeValue::Text(text) => {
                out.push_str(",\"value\":{\"stringValue\":");
                push_json_string(out, text);
                out.push_str("}}");
            }
            AttributeValue::Int(number) => {
                let _ = write!(out, ",\"value\":{{\"intValue\":\"{number}\"}}}}");
            }
        }
    }
    // STATUS_CODE_ERROR, else UNSET
    out.push_str(if span.error {
        "],\"status\":{\"code\":2}}"
    } else {
        "],\"status\":{}}"
    });
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped.
fn push_json_string(out: &mut String, text: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Starts the export loop on `runtime` (the control runtime).
pub fn spawn_exporter(settings: OtlpSettings, runtime: &Handle) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| format!("no HTTP client for OTLP export: {error}"))?;
    let start = unix_nanos(SystemTime::now());
    runtime.spawn(async move {
        let base = settings.endpoint.trim_end_matches('/').to_owned();
        let mut spans_tick = tokio::time::interval(SPAN_INTERVAL);
        let mut metrics_tick = tokio::time::interval(settings.metrics_interval);
        loop {
            tokio::select! {
                _ = spans_tick.tick() => export_spans(&client, &base, &settings.service_name).await,
                _ = metrics_tick.tick() => {
                    let document = metrics_document(
                        &crate::record::genai::families(),
                        &settings.service_name,
                        start,
                        unix_nanos(SystemTime::now()),
                    );
                    // Nothing answered yet: nothing to say.
                    let metrics = &document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
                    if metrics.as_array().is_some_and(|m| !m.is_empty()) {
                        send(&client, &format!("{base}/v1/metrics"), document.to_string(), "metrics").await;
                    }
                }
            }
        }
    });
    Ok(())
}

async fn export_spans(client: &reqwest::Client, base: &str, service_name: &str) {
    loop {
        let batch: Vec<SpanRecord> = {
            let mut queued = SPANS.lock().unwrap_or_else(|e| e.into_inner());
            let take = queued.len().min(MAX_SPANS_PER_EXPORT);
            queued.drain(..take).collect()
        };
        if batch.is_empty() {
            return;
        }
        let count = batch.len();
        let body = traces_body(&batch, service_name);
        if !send(client, &format!("{base}/v1/traces"), body, "traces").await {
            METRICS.spans_dropped.inc_by(count as u64);
            return;
        }
        if count < MAX_SPANS_PER_EXPORT {
            return;
        }
    }
}

/// POSTs one JSON document; whether the collector took it.
async fn send(client: &reqwest::Client, url: &str, body: String, what: &'static str) -> bool {
    let request = client.post(url).header("content-type", "application/json").body(body);
    let outcome = match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("{url} answered {}", response.status())),
        Err(error) => Err(format!("{url}: {error}")),
    };
    let label = if outcome.is_ok() { "ok" } else { "error" };
    METRICS.otlp_exports.with_label_values(&[what, label]).inc();
    if let Err(error) = outcome {
        tracing::warn!(%error, "OTLP export of {what} failed");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use maas_protocol::trace_context::TraceContext;

    use super::*;
    use crate::record::genai::{GenAiCall, SpanFacts, record, span_of};
    use crate::response::metering::TokenUsage;

    #[test]
    fn histograms_become_otlp_histograms_with_per_bucket_counts() {
        let call = GenAiCall {
            operation: "chat",
            provider: "otlp-test-backend",
            model: "otlp-test-model",
            usage: TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 100,
                total_tokens: 103,
            },
            status: 200,
            duration: Duration::from_millis(30),
            first_token_after: Some(Duration::from_millis(10)),
        };
        record(&call);
        record(&call);
        let document = metrics_document(&crate::record::genai::families(), "maas", 1, 2);
        let metrics = &document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        let usage = metrics
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "gen_ai.client.token.usage")
            .expect("token usage");
        assert_eq!(usage["unit"], "{token}");
        assert_eq!(usage["histogram"]["aggregationTemporality"], 2);
        let ours: Vec<&Value> = usage["histogram"]["dataPoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["attributes"].to_string().contains("otlp-test-model"))
            .collect();
        assert_eq!(ours.len(), 2, "input and output");
        let output = ours
            .iter()
            .find(|p| p["attributes"].to_string().contains("\"output\""))
            .unwrap();
        assert_eq!(output["count"], "2");
        assert_eq!(output["sum"], 200.0);
        let counts: Vec<u64> = output["bucketCounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), output["explicitBounds"].as_array().unwrap().len() + 1);
        assert_eq!(counts.iter().sum::<u64>(), 2);
        assert_eq!(counts[4], 2, "100 tokens fall in (64, 256]");
        assert!(output["attributes"].to_string().contains("\"gen_ai.token.type\""));
        assert_eq!(output["startTimeUnixNano"], "1");
    }

    #[test]
    fn spans_carry_hex_ids_and_their_parent() {
        let client = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::start(Some(client), 0.0, [0xab; 24]);
        let call = GenAiCall {
            operation: "embeddings",
            provider: "sim",
            model: "embed",
            usage: TokenUsage::default(),
            status: 503,
            duration: Duration::from_millis(5),
            first_token_after: None,
        };
        let mut span = span_of(context, &call, &SpanFacts::default(), 10);
        span.name = "quote \" back \\ bell \u{7} é".into();
        let document: Value = serde_json::from_str(&traces_body(&[span.clone(), span], "maas")).unwrap();
        assert_eq!(
            document["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let out = &document["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(out["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(out["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(out["spanId"], "abababababababab");
        assert_eq!(out["name"], "quote \" back \\ bell \u{7} é");
        assert_eq!(out["status"]["code"], 2);
        assert_eq!(out["endTimeUnixNano"], "5000010");
        assert!(out["attributes"].to_string().contains("{\"intValue\":\"0\"}"));
    }
}
