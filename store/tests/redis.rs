//! The conformance suite against a real redis-server.
//!
//! Uses `MAAS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); every
//! test works under a fresh key prefix and deletes it afterwards.

use std::sync::Arc;

use maas_store::backend::redis::{RedisBackend, hash_tag};
use maas_store::conformance::Fixture;
use maas_store::ids::random_bytes;
use maas_store::{Store, StoreOptions};

fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct RedisFixture {
    prefix: String,
}

impl RedisFixture {
    fn new() -> Self {
        RedisFixture {
            prefix: format!("maastest-{}", maas_store::ids::hex(&random_bytes::<6>())),
        }
    }

    async fn connect(&self) -> RedisBackend {
        RedisBackend::connect(&redis_url(), &self.prefix, &Default::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need a running redis-server at {} ({e}). Install it with \
                 `apt-get install redis-server` and start it with `redis-server --daemonize yes`, \
                 or point MAAS_TEST_REDIS_URL at one.",
                    redis_url()
                )
            })
    }
}

impl Fixture for RedisFixture {
    async fn open(&self, options: StoreOptions) -> Store {
        Store::with_backend(Arc::new(self.connect().await), options)
    }

    async fn cleanup(&self) {
        self.connect().await.destroy_all_data().await.expect("cleanup");
    }
}

maas_store::conformance_suite!(RedisFixture::new());

/// Every key one write batch touches must hash to one cluster slot, and
/// every counter of one application to another: prove it on the live keys.
#[tokio::test]
async fn key_layout_is_cluster_safe() {
    let fixture = RedisFixture::new();
    let store = fixture.open(StoreOptions::default()).await;
    maas_store::conformance::apply_export_round_trip(&fixture).await;
    let app = store
        .list_applications(&Default::default(), &maas_store::Page::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    store
        .check_and_record(&app.id, &[], &[("hits", 1)], store.clock().now())
        .await
        .unwrap();

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", fixture.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() > 20, "the scenario wrote keys: {keys:?}");
    for key in &keys {
        let tag = hash_tag(key);
        let counter = key.starts_with(&format!("{}:u:", fixture.prefix));
        if counter {
            assert_eq!(tag, app.id, "{key}");
        } else {
            assert_eq!(tag, "r", "{key}");
        }
    }
    fixture.cleanup().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", fixture.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty());
}
