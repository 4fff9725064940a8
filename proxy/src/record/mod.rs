//! What a finished request leaves behind: what it is billed and its
//! settlement ([`billing`]), usage batched to the store ([`usage`]) or to
//! disk while the store is away ([`spool`]), keys' last use by the minute
//! ([`key_use`]), Prometheus metrics ([`metrics`]) with OpenTelemetry's
//! GenAI histograms and spans ([`genai`]) exported over OTLP ([`otlp`]),
//! the gateway's own time ([`overhead`]) and one JSON access-log line
//! ([`access_log`]).

pub mod access_log;
mod billing;
pub mod genai;
pub mod key_use;
pub mod metrics;
pub mod otlp;
pub mod overhead;
pub mod spool;
pub mod usage;
