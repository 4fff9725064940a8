//! The proxy's per-request work outside I/O: parse the key, hash it, hit
//! the key cache, route, match mapping rules and admit against local
//! limits; plus the strict limit check against the embedded store.
//!
//! `cargo bench -p maas-proxy --bench request_path`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use maas_proxy::limits::{Decision, HoldPolicy, LimitMode, Limiter};
use maas_proxy::record::usage::UsageSink;
use maas_proxy::request::credentials::{RequestCredentials, extract_key};
use maas_proxy::request::routing::Route;
use maas_proxy::state::ProxyState;
use maas_store::document::CatalogDocument;
use maas_store::model::{KeyHash, StreamUsage};
use maas_store::{Environment, NewAccount, NewApplication, NewKey, Store, StoreLocation, StoreOptions};
use time::OffsetDateTime;

const CATALOG: &str = r#"{
  "backends": [{"system_name": "sim", "urls": ["http://127.0.0.1:8000"]}],
  "products": [{"system_name": "granite", "backend": "sim", "path_prefix": "/granite", "models": ["granite"]}],
  "plans": [{"product": "granite", "system_name": "standard",
             "limits": [{"metric": "hits", "period": "minute", "value": 1000000000},
                        {"metric": "total_tokens", "period": "day", "value": 1000000000}]}]
}"#;

async fn seeded(mode: LimitMode, dir: &std::path::Path) -> (Arc<ProxyState>, String) {
    let store = Store::open(
        &StoreLocation::Embedded {
            data_dir: dir.to_owned(),
        },
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let document: CatalogDocument = serde_json::from_str(CATALOG).unwrap();
    store.apply(&document, &Default::default()).await.unwrap();
    let account = store
        .create_account(NewAccount {
            name: "Bench".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    let app = store
        .create_application(NewApplication {
            account_id: account.id,
            name: "bench".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap();
    let key = store.create_key(&app.id, NewKey::default()).await.unwrap();
    let sink = Arc::new(UsageSink::new(store.clone()));
    let limiter = Limiter::new(store.clone(), sink, mode, HoldPolicy::default());
    let state = Arc::new(ProxyState::new(store, Environment::Production, limiter, 8 << 20, false));
    state.reload_catalog().await.unwrap();
    (state, format!("Bearer {}", key.secret.expose()))
}

/// Everything `request_filter` does for a cached key, minus socket I/O.
async fn pure_path(state: &ProxyState, authorization: &str) -> bool {
    let catalog = state.catalog();
    let Route::Product { index, api_path } = catalog
        .routes
        .route(Some("localhost:8080"), "/granite/v1/chat/completions")
    else {
        return false;
    };
    let route = catalog.routes.product(index);
    let request = RequestCredentials {
        authorization: Some(authorization.as_bytes()),
        ..Default::default()
    };
    let secret = extract_key(&request, &route.product.credentials).unwrap().unwrap();
    let auth = state.lookup_key(KeyHash::of(&secret)).await.unwrap().unwrap();
    let deltas = route.rules.deltas("POST", api_path).unwrap();
    let now = OffsetDateTime::now_utc();
    matches!(
        state
            .limiter
            .admit(&auth.application.id, &auth.plan.limits, &deltas, None, now)
            .await
            .unwrap(),
        Decision::Admitted(_)
    )
}

fn request_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local_dir = tempfile::tempdir().unwrap();
    let strict_dir = tempfile::tempdir().unwrap();
    let local = LimitMode::Local {
        sync_interval: Duration::from_millis(100),
    };
    let (local_state, authorization) = runtime.block_on(seeded(local, local_dir.path()));
    let (strict_state, strict_authorization) = runtime.block_on(seeded(LimitMode::Strict, strict_dir.path()));
    // Warm the key caches and the local counters.
    assert!(runtime.block_on(pure_path(&local_state, &authorization)));
    assert!(runtime.block_on(pure_path(&strict_state, &strict_authorization)));

    let mut group = c.benchmark_group("request_path");
    group.bench_function("parse_key", |b| {
        let request = RequestCredentials {
            authorization: Some(authorization.as_bytes()),
            ..Default::default()
        };
        let settings = Default::default();
        b.iter(|| extract_key(std::hint::black_box(&request), &settings).unwrap())
    });
    group.bench_function("auth+cache_hit+route+rules+local_limits", |b| {
        b.to_async(&runtime).iter(|| pure_path(&local_state, &authorization))
    });
    group.bench_function("auth+cache_hit+route+rules+strict_limits_embedded", |b| {
        b.to_async(&runtime)
            .iter(|| pure_path(&strict_state, &strict_authorization))
    });
    group.finish();
}

/// The request body phase: read the facts, then add usage options and a
/// `max_tokens` cap in place; against reading the facts and making the same
/// edit through a `serde_json::Value` tree (parse, insert, serialize), as
/// the proxy did before, as the baseline.
fn request_body(c: &mut Criterion) {
    use maas_proxy::request::body::inspect_json;
    use maas_proxy::request::rewrite::{Endpoint, ForwardPolicy, rewrite_request};
    let body = |prompt_bytes: usize| {
        let content = "gateways meter every token exactly ".repeat(prompt_bytes / 35 + 1);
        serde_json::to_vec(&serde_json::json!({
            "model": "m", "stream": true, "max_tokens": 5000, "temperature": 0.2,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
        }))
        .unwrap()
    };
    let mut group = c.benchmark_group("request_body");
    for (label, bytes) in [("300B", body(200)), ("100KiB", body(100 * 1024))] {
        group.bench_function(format!("inspect+rewrite_in_place/{label}"), |b| {
            b.iter(|| {
                let facts = inspect_json(std::hint::black_box(&bytes)).unwrap();
                let policy = ForwardPolicy {
                    stream_usage: StreamUsage::Continuous,
                    max_tokens_cap: Some(1024),
                    default_model: None,
                    queue_priority: None,
                };
                let rewrite = rewrite_request(&bytes, Endpoint::ChatCompletions, &policy).unwrap();
                (facts, rewrite)
            })
        });
        group.bench_function(format!("tree_rewrite_baseline/{label}"), |b| {
            b.iter(|| {
                let facts = inspect_json(std::hint::black_box(&bytes)).unwrap();
                let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                value["stream_options"] = serde_json::json!({"include_usage": true, "continuous_usage_stats": true});
                value["max_tokens"] = 1024.into();
                (facts, serde_json::to_vec(&value).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request_path, request_body);
criterion_main!(benches);
