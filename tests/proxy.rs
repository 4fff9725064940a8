//! The data plane end to end: real `maas proxy` processes in front of a
//! real `maas sim`, sharing a real Redis store.

// Each test binary uses its own part of the shared support.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

mod proxy {
    mod admin;
    mod auth;
    mod balancing;
    mod bench;
    mod budgets;
    mod exactness;
    pub mod gpus;
    pub mod harness;
    mod holds;
    mod k6;
    mod limits;
    mod observability;
    mod outage;
    mod portal;
    mod queueing;
    mod redis_ha;
    mod replica_faults;
    mod resilience;
    mod routing;
    mod sdk;
    mod shutdown;
    mod streaming;
    mod telemetry;
    mod tokens;
    mod upstream_tls;
}
