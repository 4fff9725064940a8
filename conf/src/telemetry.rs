//! `telemetry:` in maas.yaml: OpenTelemetry export of the GenAI metrics
//! and request spans (OTLP/HTTP), and how many requests are traced.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL (`/v1/metrics` and `/v1/traces`
    /// are appended); none: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of what is exported.
    pub service_name: String,
    /// How often the GenAI histograms are exported.
    pub metrics_interval_ms: u64,
    /// Share of new traces the gateway records a span of (0 to 1); a
    /// client's `traceparent` decides for its own trace. 0: tracing off,
    /// nothing done per request.
    pub trace_sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            service_name: "maas-gateway".into(),
            metrics_interval_ms: 10_000,
            trace_sample_ratio: 0.0,
        }
    }
}

impl TelemetrySettings {
    /// Whether requests are traced: a collector to send spans to and a
    /// ratio above 0.
    pub fn traces(&self) -> bool {
        self.otlp_endpoint.is_some() && self.trace_sample_ratio > 0.0
    }

    pub(crate) fn validate(&self, push: &mut impl FnMut(&str, String)) {
        if let Some(url) = &self.otlp_endpoint
            && !crate::is_http_url(url)
        {
            push("telemetry.otlp_endpoint", format!("`{url}` is not an http(s) URL"));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            push("telemetry.trace_sample_ratio", "must be from 0 to 1".into());
        }
        if !(100..=3_600_000).contains(&self.metrics_interval_ms) {
            push("telemetry.metrics_interval_ms", "must be from 100 to 3600000".into());
        }
        if self.service_name.trim().is_empty() {
            push("telemetry.service_name", "must not be empty".into());
        }
    }
}
