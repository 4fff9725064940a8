//! The MaaS data plane: a Pingora proxy in front of OpenAI-compatible model
//! servers. The folders follow a request (docs/ARCHITECTURE.md, "The
//! request path"):
//!
//! - [`phases`]: where Pingora calls in. The `ProxyHttp` dispatcher and the
//!   request phase, which runs the stages below in order and answers
//!   refusals; the only place besides [`server`] (wiring) and
//!   [`record::metrics`]' `/metrics` endpoint that knows Pingora.
//! - [`identity`]: access tokens of the company identity provider, for
//!   products that take them instead of API keys.
//! - [`request`]: the path's normal form, the key, the product, mapping
//!   rules, the body's facts and the body sent upstream.
//! - [`limits`]: plan limits (strict or local), token holds, what a request
//!   may spend, the rate-limit headers, and admission while the store does
//!   not answer (circuit breaker, local counters).
//! - [`upstream`]: replicas, round robin, passive ejection.
//! - [`response`]: metering JSON answers and event streams as they pass.
//! - [`record`]: billing and settlement, usage batches (spooled to disk
//!   while the store is away), metrics and the access log.
//!
//! [`state`] holds what every request reads (the served catalog and the
//! key cache, kept current by the store's change feed); [`error`] the
//! OpenAI-shaped errors. Everything outside [`phases`] and [`server`] is
//! independent of Pingora and unit-tested alone.

pub mod error;
#[cfg(test)]
mod flaky_store;
pub mod identity;
pub mod limits;
pub mod phases;
pub mod record;
pub mod request;
pub mod response;
pub mod server;
pub mod state;
pub mod upstream;

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

/// An application of account `Acme` on a one-product catalog (product
/// `granite`, plan `standard`, backend `sim`) written to `store`; its id.
#[cfg(test)]
pub(crate) async fn test_application(store: &maas_store::Store) -> String {
    let document: maas_store::document::CatalogDocument = serde_json::from_str(
        r#"{"backends": [{"system_name": "sim", "urls": ["http://127.0.0.1:8000"]}],
            "products": [{"system_name": "granite", "backend": "sim", "models": ["granite"]}],
            "plans": [{"product": "granite", "system_name": "standard"}]}"#,
    )
    .unwrap();
    store.apply(&document, &Default::default()).await.unwrap();
    let account = store
        .create_account(maas_store::NewAccount {
            name: "Acme".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    let app = store
        .create_application(maas_store::NewApplication {
            account_id: account.id,
            name: "app".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap();
    app.id
}

pub use limits::{HoldPolicy, LimitMode};
pub use server::{Proxy, ProxyOptions};
