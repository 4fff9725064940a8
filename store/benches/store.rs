//! Latency of the store calls on the proxy's path, on both backends:
//! `lookup_key` (a key-cache miss) and `check_and_record` (strict limits).
//!
//! `cargo bench -p maas-store --bench store` (Redis from
//! `MAAS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use maas_store::backend::StoreBackend;
use maas_store::backend::embedded::EmbeddedBackend;
use maas_store::backend::redis::RedisBackend;
use maas_store::document::CatalogDocument;
use maas_store::model::{KeyHash, UsageLimit};
use maas_store::period::Period;
use maas_store::{NewAccount, NewApplication, NewKey, Store, StoreOptions, SystemClock};

const CATALOG: &str = r#"{
  "backends": [{"system_name": "sim", "urls": ["http://127.0.0.1:8000"]}],
  "products": [{"system_name": "granite", "backend": "sim", "models": ["granite"]}],
  "plans": [{"product": "granite", "system_name": "standard",
             "limits": [{"metric": "hits", "period": "minute", "value": 1000000000}]}]
}"#;

/// A store with one application and key; returns the key's hash and the app id.
async fn seeded(backend: Arc<dyn StoreBackend>) -> (Store, KeyHash, String) {
    let store = Store::with_backend(backend, StoreOptions::default());
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
    (store, key.secret.hash(), app.id)
}

fn bench_backend(
    c: &mut Criterion,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    store: Store,
    hash: KeyHash,
    app: String,
) {
    let mut group = c.benchmark_group(name);
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("lookup_key", |b| {
        b.to_async(runtime)
            .iter(|| async { store.lookup_key(&hash).await.unwrap().unwrap() })
    });
    group.bench_function("lookup_key_unknown", |b| {
        let unknown = KeyHash::of("sk-maas-not-a-key");
        b.to_async(runtime)
            .iter(|| async { assert!(store.lookup_key(&unknown).await.unwrap().is_none()) })
    });
    let limits = [UsageLimit {
        metric: "hits".into(),
        period: Period::Minute,
        value: 1_000_000_000,
    }];
    group.bench_function("check_and_record", |b| {
        b.to_async(runtime).iter(|| async {
            let now = store.clock().now();
            store
                .check_and_record(&app, &limits, &[("hits", 1), ("v1-chat-completions", 1)], now)
                .await
                .unwrap()
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (store, hash, app) = runtime.block_on(async {
        let backend = EmbeddedBackend::open(dir.path(), Arc::new(SystemClock)).unwrap();
        seeded(Arc::new(backend)).await
    });
    bench_backend(c, "embedded", &runtime, store, hash, app);

    let url = std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "maasbench-{}",
        maas_store::ids::hex(&maas_store::ids::random_bytes::<4>())
    );
    let backend = runtime
        .block_on(RedisBackend::connect(&url, &prefix, &Default::default()))
        .unwrap_or_else(|e| {
            panic!("the Redis benchmark needs redis-server at {url} (apt-get install redis-server): {e}")
        });
    let backend = Arc::new(backend);
    let (store, hash, app) = runtime.block_on(seeded(backend.clone()));
    bench_backend(c, "redis", &runtime, store, hash, app);
    runtime.block_on(backend.destroy_all_data()).unwrap();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
