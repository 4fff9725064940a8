//! What the simulator served, per application (the truth tests compare the
//! gateway's metering with) and per model (Prometheus `/metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Header the gateway adds upstream naming the calling application.
pub const APPLICATION_HEADER: &str = "x-maas-application-id";
/// Application name used when the header is absent.
pub const ANONYMOUS: &str = "anonymous";

/// Counts for one application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppUsage {
    /// Requests accepted for generation or embedding (injected errors excluded).
    pub requests: u64,
    pub prompt_tokens: u64,
    /// Tokens put on the wire, including those of streams cut short.
    pub completion_tokens: u64,
    /// Streams the client hung up on before the end.
    pub aborted_streams: u64,
    /// Streams the simulator cut off on purpose (`reset_rate`).
    pub reset_streams: u64,
    /// Requests answered with an injected error status.
    pub injected_errors: u64,
}

#[derive(Debug, Clone, Default)]
struct ModelStats {
    requests: BTreeMap<&'static str, u64>,
    prompt_tokens: u64,
    generation_tokens: u64,
    aborted_streams: u64,
    reset_streams: u64,
    injected_errors: u64,
    running: i64,
}

/// A metric family: name, type, help and the value of one model's stats.
type Family = (&'static str, &'static str, &'static str, fn(&ModelStats) -> u64);

#[derive(Default)]
struct Tallies {
    apps: BTreeMap<String, AppUsage>,
    models: BTreeMap<String, ModelStats>,
}

/// How a request ended, for [`Meter::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Aborted,
    Reset,
}

#[derive(Default)]
pub struct Meter {
    tallies: Mutex<Tallies>,
}

impl Meter {
    fn with<T>(&self, f: impl FnOnce(&mut Tallies) -> T) -> T {
        f(&mut self.tallies.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A request was accepted: count it and its prompt.
    pub fn start(&self, app: &str, model: &str, endpoint: &'static str, prompt_tokens: u32) {
        self.with(|t| {
            let usage = t.apps.entry(app.to_owned()).or_default();
            usage.requests += 1;
            usage.prompt_tokens += u64::from(prompt_tokens);
            let stats = t.models.entry(model.to_owned()).or_default();
            *stats.requests.entry(endpoint).or_default() += 1;
            stats.prompt_tokens += u64::from(prompt_tokens);
            stats.running += 1;
        });
    }

    /// A request ended after putting `completion_tokens` on the wire.
    pub fn finish(&self, app: &str, model: &str, completion_tokens: u32, ending: Ending) {
        self.with(|t| {
            let usage = t.apps.entry(app.to_owned()).or_default();
            usage.completion_tokens += u64::from(completion_tokens);
            let stats = t.models.entry(model.to_owned()).or_default();
            stats.generation_tokens += u64::from(completion_tokens);
            stats.running -= 1;
            match ending {
                Ending::Complete => {}
                Ending::Aborted => {
                    usage.aborted_streams += 1;
                    stats.aborted_streams += 1;
                }
                Ending::Reset => {
                    usage.reset_streams += 1;
                    stats.reset_streams += 1;
                }
            }
        });
    }

    pub fn injected_error(&self, app: &str, model: &str) {
        self.with(|t| {
            t.apps.entry(app.to_owned()).or_default().injected_errors += 1;
            t.models.entry(model.to_owned()).or_default().injected_errors += 1;
        });
    }

    pub fn applications(&self) -> BTreeMap<String, AppUsage> {
        self.with(|t| t.apps.clone())
    }

    pub fn reset(&self) {
        self.with(|t| {
            t.apps.clear();
            for stats in t.models.values_mut() {
                let running = stats.running;
                *stats = ModelStats {
                    running,
                    ..ModelStats::default()
                };
            }
        });
    }

    /// Prometheus text exposition.
    pub fn render_prometheus(&self) -> String {
        self.with(|t| {
            let models: BTreeMap<String, &ModelStats> = t.models.iter().map(|(m, s)| (escape_label(m), s)).collect();
            let mut out = String::new();
            let families: [Family; 5] = [
                ("sim_prompt_tokens_total", "counter", "Prompt tokens processed", |s| {
                    s.prompt_tokens
                }),
                (
                    "sim_generation_tokens_total",
                    "counter",
                    "Tokens generated and sent",
                    |s| s.generation_tokens,
                ),
                (
                    "sim_aborted_streams_total",
                    "counter",
                    "Streams the client hung up on",
                    |s| s.aborted_streams,
                ),
                (
                    "sim_reset_streams_total",
                    "counter",
                    "Streams cut off on purpose",
                    |s| s.reset_streams,
                ),
                (
                    "sim_injected_errors_total",
                    "counter",
                    "Requests answered with an injected error",
                    |s| s.injected_errors,
                ),
            ];
            let _ = writeln!(
                out,
                "# HELP sim_requests_total Requests accepted, by model and endpoint"
            );
            let _ = writeln!(out, "# TYPE sim_requests_total counter");
            for (model, stats) in &models {
                for (endpoint, count) in &stats.requests {
                    let _ = writeln!(
                        out,
                        "sim_requests_total{{model=\"{model}\",endpoint=\"{endpoint}\"}} {count}"
                    );
                }
            }
            for (name, kind, help, value) in families {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (model, stats) in &models {
                    let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", value(stats));
                }
            }
            let _ = writeln!(
                out,
                "# HELP sim_requests_running Requests in progress\n# TYPE sim_requests_running gauge"
            );
            for (model, stats) in &models {
                let _ = writeln!(out, "sim_requests_running{{model=\"{model}\"}} {}", stats.running);
            }
            out
        })
    }
}

/// A label value with backslashes, quotes and newlines escaped.
pub(crate) fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
