//! The MaaS data plane: a Pingora proxy in front of OpenAI-compatible model
//! servers. Per request, in order: normalise the path ([`request_path`];
//! bodies are read as the model server reads them, [`body`]), authenticate
//! the key ([`credentials`],
//! cached in [`state`]), route by host, path prefix or model
//! ([`routing`]), match mapping rules ([`mapping`]), check plan limits
//! ([`limits`]), proxy to a healthy replica ([`upstream`]), meter the
//! response ([`metering`]) and record usage ([`usage`]), metrics
//! ([`metrics`]) and one access-log line ([`access_log`]).
//!
//! When the store fails, [`breaker`] stops requests from waiting for it,
//! [`outage`] admits them on local counters and [`usage`] keeps their usage,
//! on disk in the [`spool`], until it answers.
//!
//! Pingora appears only in [`service`] (the `ProxyHttp` dispatcher), the
//! request phase it calls (`admission`, with `request_body` reading the
//! body and `reply` writing refusals), [`server`] (wiring), [`edge`]
//! (Pingora's own refusals as OpenAI errors) and [`metrics`]' `/metrics`
//! endpoint. The protocol and policy logic (paths, bodies, keys, routing,
//! mapping, limits, metering, streams, usage, the spool) is independent of
//! Pingora and unit-tested alone.

pub mod access_log;
mod admission;
mod billing;
pub mod body;
pub mod breaker;
pub mod cors;
pub mod credentials;
pub mod decoding;
pub mod edge;
pub mod error;
#[cfg(test)]
mod flaky_store;
pub mod json_member;
pub mod limits;
mod local_limits;
pub mod mapping;
pub mod metering;
pub mod metrics;
pub mod models_api;
pub mod outage;
pub mod overhead;
pub mod prompt;
pub mod ratelimit;
mod reply;
mod request_body;
pub mod request_ctx;
pub mod request_id;
pub mod request_path;
pub mod rewrite;
pub mod routing;
pub mod server;
pub mod service;
pub mod spend;
pub mod spool;
pub mod sse;
pub mod state;
pub mod stream_meter;
pub mod tokenizer;
pub mod upstream;
pub mod usage;

/// An embedded store for unit tests, in a directory removed when the
/// second value drops.
#[cfg(test)]
pub(crate) async fn test_store() -> (maas_store::Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let location = maas_store::StoreLocation::Embedded {
        data_dir: dir.path().to_owned(),
    };
    let store = maas_store::Store::open(&location, maas_store::StoreOptions::default())
        .await
        .unwrap();
    (store, dir)
}

pub use limits::{HoldPolicy, LimitMode};
pub use server::{Proxy, ProxyOptions};
