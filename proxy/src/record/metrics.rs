//! Prometheus metrics on `:9421/metrics` (as APIcast). The token counters
//! keep the names and labels of the reference LLM metrics policy.

use std::sync::LazyLock;

use async_trait::async_trait;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The reference policy's labels, and the model (only a catalog model's
/// name, so its values stay as few as the catalog's models).
const TOKEN_LABELS: [&str; 5] = [
    "service_id",
    "service_system_name",
    "application_id",
    "application_system_name",
    "model",
];
/// Kinds of upstream failure, each present (at 0) for every backend.
pub const UPSTREAM_ERROR_KINDS: [&str; 6] = [
    "connect",
    "tls",
    "upstream_unavailable",
    "upstream_failed",
    "upstream_timeout",
    "undecodable_encoding",
];
/// Store operations the proxy counts failures of, present from the start.
const STORE_OPERATIONS: [&str; 3] = ["lookup_key", "check_limits", "record_usage"];
/// What the proxy decides without the store, each present from the start.
pub const OUTAGE_DECISIONS: [&str; 3] = ["stale_key", "unverified_key", "local_admission"];
/// Latency buckets from 0.5 ms to 5 min: gateway overhead up to long generations.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
];

/// The gateway's own time is microseconds, not the model's seconds.
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0,
];

pub struct ProxyMetrics {
    pub registry: Registry,
    pub prompt_tokens: IntCounterVec,
    pub completion_tokens: IntCounterVec,
    pub total_tokens: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    /// The gateway's own time per request, the model server's excluded.
    pub gateway_overhead: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub in_flight: IntGauge,
    /// Event streams being sent to clients now.
    pub streams_in_flight: IntGauge,
    /// The catalog revision being served.
    pub catalog_revision: IntGauge,
    pub rejected: IntCounterVec,
    /// Time in the gateway's queue, by product, priority and outcome.
    pub queue_wait: HistogramVec,
    pub store_errors: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub estimated_tokens: IntCounterVec,
    pub unmetered_answers: IntCounterVec,
    pub prompts_tokenized: IntCounterVec,
    pub key_lookups: KeyLookups,
    /// Access tokens presented, by outcome (`accepted`, or why refused).
    pub access_tokens: IntCounterVec,
    /// Fetches of the issuer's signing keys, by outcome (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    /// OTLP exports, by signal (`metrics`, `traces`) and outcome.
    pub otlp_exports: IntCounterVec,
    /// Spans not exported: the queue was full, or the collector refused them.
    pub spans_dropped: IntCounter,
    pub changes_applied: IntCounterVec,
    /// The store's circuit breaker: 0 closed, 1 open, 2 half-open.
    pub store_breaker_state: IntGauge,
    pub store_breaker_transitions: IntCounterVec,
    /// What the proxy did without the store: `stale_key` (a known key
    /// served past its cache TTL), `unverified_key` (a key refused with
    /// 503), `local_admission` (limits checked on this replica's counters).
    pub outage_decisions: IntCounterVec,
    /// Store writes whose connection dropped after they were sent.
    pub uncertain_writes: IntCounterVec,
    /// Bytes of usage batches waiting on disk for the store.
    pub usage_spool_bytes: IntGauge,
    /// Batches the spool refused (full, or failing to write).
    pub usage_spool_full: IntCounter,
}

/// How presented keys were resolved; `store` is what a storm of made-up
/// keys would multiply, so it is watched on its own.
pub struct KeyLookups {
    /// Refused by the checksum, before any lookup.
    pub malformed: IntCounter,
    /// Answered from the key cache, a known-unknown key included.
    pub cached: IntCounter,
    /// Asked of the store.
    pub store: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are static");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

fn histogram(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    histogram_in(registry, name, help, &LATENCY_BUCKETS)
}

fn histogram_in(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    histogram_by(registry, name, help, buckets, &["product"])
}

fn histogram_by(registry: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .expect("metric definitions are static");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric names are unique");
    histogram
}

impl ProxyMetrics {
    fn new() -> ProxyMetrics {
        let registry = Registry::new();
        let in_flight = IntGauge::new("maas_requests_in_flight", "Requests being served now").expect("static");
        registry.register(Box::new(in_flight.clone())).expect("unique");
        let streams_in_flight =
            IntGauge::new("maas_streams_in_flight", "Event streams being sent to clients now").expect("static");
        registry.register(Box::new(streams_in_flight.clone())).expect("unique");
        let catalog_revision =
            IntGauge::new("maas_catalog_revision", "The catalog revision this proxy serves").expect("static");
        registry.register(Box::new(catalog_revision.clone())).expect("unique");
        let store_breaker_state = IntGauge::new(
            "maas_store_breaker_state",
            "The store's circuit breaker: 0 closed, 1 open (requests do not wait for the store), 2 half-open (probing)",
        )
        .expect("static");
        registry
            .register(Box::new(store_breaker_state.clone()))
            .expect("unique");
        let usage_spool_bytes = IntGauge::new(
            "maas_usage_spool_bytes",
            "Bytes of usage batches spooled to disk, waiting for the store",
        )
        .expect("static");
        registry.register(Box::new(usage_spool_bytes.clone())).expect("unique");
        let usage_spool_full = IntCounter::new(
            "maas_usage_spool_full_total",
            "Usage batches the spool refused because it was full (kept in memory only)",
        )
        .expect("static");
        registry.register(Box::new(usage_spool_full.clone())).expect("unique");
        ProxyMetrics {
            prompt_tokens: counter(
                &registry,
                "llm_prompt_tokens_count",
                "Prompt tokens metered",
                &TOKEN_LABELS,
            ),
            completion_tokens: counter(
                &registry,
                "llm_completion_tokens_count",
                "Completion tokens metered",
                &TOKEN_LABELS,
            ),
            total_tokens: counter(
                &registry,
                "llm_total_token_count",
                "Total tokens metered",
                &TOKEN_LABELS,
            ),
            requests: counter(
                &registry,
                "maas_requests_total",
                "Requests by product, model (a catalog model, else empty) and response status",
                &["product", "model", "status"],
            ),
            request_duration: histogram(
                &registry,
                "maas_request_duration_seconds",
                "Time from request to the end of the response",
            ),
            upstream_duration: histogram(
                &registry,
                "maas_upstream_duration_seconds",
                "Time from sending upstream to the upstream's response headers",
            ),
            gateway_overhead: histogram_in(
                &registry,
                "maas_gateway_overhead_seconds",
                "Time the gateway spent on a request apart from waiting on the model server: before sending \
                 upstream, and in the response's filters",
                &OVERHEAD_BUCKETS,
            ),
            time_to_first_token: histogram(
                &registry,
                "maas_time_to_first_token_seconds",
                "Streams: time from the request to the first generated text sent on",
            ),
            in_flight,
            streams_in_flight,
            catalog_revision,
            rejected: counter(
                &registry,
                "maas_rejected_total",
                "Requests the gateway refused, by reason",
                &["reason"],
            ),
            queue_wait: histogram_by(
                &registry,
                "maas_queue_wait_seconds",
                "Requests that met a saturated backend: time in the gateway's queue, by product, plan priority \
                 and outcome (released to a replica, timeout or full: refused with 429)",
                &LATENCY_BUCKETS,
                &["product", "priority", "outcome"],
            ),
            store_errors: counter(
                &registry,
                "maas_store_errors_total",
                "Failed store operations, by operation",
                &["operation"],
            ),
            upstream_errors: counter(
                &registry,
                "maas_upstream_errors_total",
                "Failed upstream attempts, by backend and kind",
                &["backend", "kind"],
            ),
            estimated_tokens: counter(
                &registry,
                "maas_estimated_tokens_total",
                "Tokens billed from an estimate because the upstream reported no usage",
                &["product"],
            ),
            unmetered_answers: counter(
                &registry,
                "maas_unmetered_answers_total",
                "Successful answers whose usage could not be read, billed at the request's ceiling",
                &["product"],
            ),
            prompts_tokenized: counter(
                &registry,
                "maas_prompts_tokenized_total",
                "Prompts whose cheap bound did not fit a budget, by outcome: counted with their model's \
                 tokenizer, or busy (every core tokenizing already: the bound stood)",
                &["product", "outcome"],
            ),
            key_lookups: {
                let outcomes = counter(
                    &registry,
                    "maas_key_lookups_total",
                    "Presented API keys by how they were resolved: malformed (checksum), cached, store",
                    &["outcome"],
                );
                KeyLookups {
                    malformed: outcomes.with_label_values(&["malformed"]),
                    cached: outcomes.with_label_values(&["cached"]),
                    store: outcomes.with_label_values(&["store"]),
                }
            },
            access_tokens: counter(
                &registry,
                "maas_access_tokens_total",
                "Access tokens presented instead of API keys, by outcome: accepted, or the reason refused",
                &["outcome"],
            ),
            jwks_fetches: counter(
                &registry,
                "maas_jwks_fetches_total",
                "Fetches of the token issuer's signing keys (JWKS), by outcome: ok, error",
                &["outcome"],
            ),
            otlp_exports: counter(
                &registry,
                "maas_otlp_exports_total",
                "OTLP/HTTP exports to the collector, by signal (metrics, traces) and outcome (ok, error)",
                &["signal", "outcome"],
            ),
            spans_dropped: {
                let dropped = IntCounter::new(
                    "maas_spans_dropped_total",
                    "Request spans not exported: the export queue was full or the collector refused them",
                )
                .expect("static");
                registry.register(Box::new(dropped.clone())).expect("unique");
                dropped
            },
            changes_applied: counter(
                &registry,
                "maas_store_changes_total",
                "Change-feed events applied to the proxy's caches, by kind (resync: events may have been missed)",
                &["kind"],
            ),
            store_breaker_state,
            store_breaker_transitions: counter(
                &registry,
                "maas_store_breaker_transitions_total",
                "Transitions of the store's circuit breaker, by the state entered",
                &["to"],
            ),
            outage_decisions: counter(
                &registry,
                "maas_outage_decisions_total",
                "Decisions made without the store: stale_key (a known key served past its cache TTL), \
                 unverified_key (refused with 503), local_admission (limits checked on this replica's counters)",
                &["decision"],
            ),
            uncertain_writes: counter(
                &registry,
                "maas_store_uncertain_writes_total",
                "Store writes whose connection dropped after they were sent, by operation: admit (the request's \
                 hits are counted again, they may count twice), settle (resent only if its hold is still there)",
                &["operation"],
            ),
            usage_spool_bytes,
            usage_spool_full,
            registry,
        }
    }

    /// Makes the families that count failures present at 0 for what this
    /// catalog serves, so dashboards show 0 rather than "No data" until
    /// the first failure.
    pub fn prepare_for(&self, products: &[&str], backends: &[&str]) {
        for operation in STORE_OPERATIONS {
            self.store_errors.with_label_values(&[operation]);
        }
        for to in ["open", "half_open", "closed"] {
            self.store_breaker_transitions.with_label_values(&[to]);
        }
        for decision in OUTAGE_DECISIONS {
            self.outage_decisions.with_label_values(&[decision]);
        }
        for operation in ["admit", "settle"] {
            self.uncertain_writes.with_label_values(&[operation]);
        }
        for backend in backends {
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[backend, kind]);
            }
        }
        for product in products {
            self.estimated_tokens.with_label_values(&[product]);
            self.unmetered_answers.with_label_values(&[product]);
            for outcome in ["counted", "busy"] {
                self.prompts_tokenized.with_label_values(&[product, outcome]);
            }
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        buffer
    }
}

/// Per-replica gauges of the serving catalog's backends, computed when
/// `/metrics` is read (the replicas change with each catalog revision):
/// whether each takes requests, this proxy's requests in flight there,
/// and for `load_aware` backends its last load reading and how old it is.
pub fn render_replicas(
    upstreams: &std::collections::HashMap<String, std::sync::Arc<crate::upstream::Upstream>>,
    out: &mut Vec<u8>,
) {
    use crate::upstream::ReplicaState;
    use std::io::Write;
    type Family = (&'static str, &'static str, fn(&ReplicaState) -> Option<f64>);
    let families: [Family; 6] = [
        (
            "maas_upstream_replica_up",
            "1 while the replica takes requests (not ejected after a connect error, not down by health checks)",
            |s| Some(f64::from(u8::from(s.up))),
        ),
        (
            "maas_upstream_replica_in_flight",
            "Requests this proxy has at the replica",
            |s| Some(f64::from(s.in_flight)),
        ),
        (
            "maas_upstream_replica_waiting",
            "Requests waiting at the replica, as its metrics last said (load_aware backends)",
            |s| s.reading.map(|r| f64::from(r.waiting)),
        ),
        (
            "maas_upstream_replica_kv_cache_usage",
            "KV-cache use of the replica, 0 to 1, as its metrics last said (load_aware backends)",
            |s| s.reading.map(|r| r.kv_usage),
        ),
        (
            "maas_upstream_replica_score",
            "The replica's load score for load_aware picks, lower picked first: 4 per request waiting, 8 for a \
             full KV cache, 1 per request of this proxy's in flight (while its metrics are fresh)",
            |s| s.reading.map(|r| crate::upstream::load::score(r, s.in_flight) as f64),
        ),
        (
            "maas_upstream_replica_metrics_age_seconds",
            "Age of the replica's last load reading (load_aware backends)",
            |s| s.reading_age_ms.map(|ms| ms as f64 / 1000.0),
        ),
    ];
    // One reading of every replica, so the families agree with each other.
    let mut states: Vec<(&str, &str, ReplicaState)> = upstreams
        .iter()
        .flat_map(|(backend, upstream)| {
            (0..upstream.replicas.len()).map(move |index| {
                let authority = upstream.replicas[index].authority.as_str();
                (backend.as_str(), authority, upstream.replica_state(index))
            })
        })
        .collect();
    states.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (backend, replica, state) in &states {
            if let Some(value) = value(state) {
                let _ = writeln!(out, "{name}{{backend=\"{backend}\",replica=\"{replica}\"}} {value}");
            }
        }
    }
}

/// The gateway queues' depths, by backend, product and priority, and
/// whether each replica counts as saturated (backends with `saturation:`).
pub fn render_queues(
    upstreams: &std::collections::HashMap<String, std::sync::Arc<crate::upstream::Upstream>>,
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    let mut queued: Vec<_> = upstreams
        .iter()
        .filter(|(_, u)| u.backend.saturation.is_some())
        .collect();
    queued.sort_by(|a, b| a.0.cmp(b.0));
    let name = "maas_queue_waiting";
    let _ = writeln!(
        out,
        "# HELP {name} Requests waiting in the gateway's queue for a saturated backend, by product and plan priority\n\
         # TYPE {name} gauge"
    );
    for (backend, upstream) in &queued {
        for (product, priority, count) in upstream.queue_depths() {
            let priority = priority.as_str();
            let _ = writeln!(
                out,
                "{name}{{backend=\"{backend}\",product=\"{product}\",priority=\"{priority}\"}} {count}"
            );
        }
    }
    let name = "maas_upstream_replica_saturated";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while the replica has no room by its backend's saturation thresholds\n# TYPE {name} gauge"
    );
    for (backend, upstream) in &queued {
        for (index, replica) in upstream.replicas.iter().enumerate() {
            let saturated = u8::from(!upstream.replica_has_room(index));
            let _ = writeln!(
                out,
                "{name}{{backend=\"{backend}\",replica=\"{}\"}} {saturated}",
                replica.authority
            );
        }
    }
}

/// The process's metrics: one proxy per process.
pub static METRICS: LazyLock<ProxyMetrics> = LazyLock::new(ProxyMetrics::new);

/// Serves `GET /metrics` and the probes: `/health` (liveness: the process
/// answers) and `/ready` (readiness: the catalog is loaded and its last
/// reload from the store succeeded).
pub struct MetricsApp {
    pub state: std::sync::Arc<crate::state::ProxyState>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, content_type, body) = match path {
            "/metrics" => {
                let mut text = METRICS.render();
                let catalog = self.state.catalog();
                render_replicas(&catalog.upstreams, &mut text);
                render_queues(&catalog.upstreams, &mut text);
                (200, "text/plain; version=0.0.4", text)
            }
            "/health" => (200, "text/plain", b"ok\n".to_vec()),
            "/ready" => match self.state.not_ready_because() {
                None => (200, "text/plain", b"ready\n".to_vec()),
                Some(reason) => (503, "text/plain", reason.into_bytes()),
            },
            _ => (404, "text/plain", b"not found: try /metrics\n".to_vec()),
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counters_render_with_their_labels() {
        METRICS
            .total_tokens
            .with_label_values(&["tinyllama", "tinyllama", "app-1", "demo-app", "tinyllama-1.1b-chat"])
            .inc_by(42);
        METRICS.prepare_for(&["tinyllama"], &["sim"]);
        let text = String::from_utf8(METRICS.render()).unwrap();
        assert!(
            text.contains(r#"llm_total_token_count{application_id="app-1",application_system_name="demo-app",model="tinyllama-1.1b-chat",service_id="tinyllama",service_system_name="tinyllama"} 42"#),
            "{text}"
        );
        for kind in UPSTREAM_ERROR_KINDS {
            assert!(
                text.contains(&format!(
                    r#"maas_upstream_errors_total{{backend="sim",kind="{kind}"}} 0"#
                )),
                "{text}"
            );
        }
    }
}
