//! The conformance suite against a real redis-server.
//!
//! Uses `MAAS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); every
//! test works under a fresh key prefix and deletes it afterwards.

use std::sync::Arc;

use maas_store::backend::redis::{RedisBackend, hash_tag};
use maas_store::backend::{CounterAdd, CounterKey, StoreBackend, WriteBatch};
use maas_store::changes::Change;
use maas_store::conformance::Fixture;
use maas_store::conformance::servers::{RedisCluster, RedisSentinels};
use maas_store::ids::random_bytes;
use maas_store::{Store, StoreOptions};

fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct RedisFixture {
    prefix: String,
    url: String,
}

impl RedisFixture {
    fn new() -> Self {
        Self::on(redis_url())
    }

    /// A fixture on another server, cluster or sentinel-watched master.
    fn on(url: String) -> Self {
        RedisFixture {
            prefix: format!("maastest-{}", maas_store::ids::hex(&random_bytes::<6>())),
            url,
        }
    }

    async fn connect(&self) -> RedisBackend {
        RedisBackend::connect(&self.url, &self.prefix, &Default::default())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need a running redis-server at {} ({e}). Install it with \
                 `apt-get install redis-server` and start it with `redis-server --daemonize yes`, \
                 or point MAAS_TEST_REDIS_URL at one.",
                    self.url
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

fn counters(shards: usize, by: u64) -> Vec<CounterAdd> {
    (0..shards)
        .map(|i| CounterAdd {
            key: CounterKey {
                shard: format!("app_{i}"),
                name: "hits:m:0".into(),
            },
            by: by + i as u64,
            ttl_secs: Some(600),
        })
        .collect()
}

/// The whole conformance suite on a three-master Redis Cluster, then
/// counters of many applications spread over every master and read back
/// in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3)).await.unwrap();
    let url = cluster.url();
    maas_store::conformance_in_sequence!(RedisFixture::on(url.clone()));

    let fixture = RedisFixture::on(url);
    let backend = fixture.connect().await;
    let adds = counters(40, 1);
    backend.add_counters(&adds).await.unwrap();
    let keys: Vec<CounterKey> = adds.iter().map(|a| a.key.clone()).collect();
    let values = backend.read_counters(&keys).await.unwrap();
    assert_eq!(values, (0..40).map(|i| 1 + i as u64).collect::<Vec<_>>());
    let holding: Vec<String> = cluster.nodes.iter().map(|n| n.cli(&["DBSIZE"])).collect();
    assert!(
        holding.iter().all(|size| size.trim() != "0"),
        "every master holds some counters: {holding:?}"
    );
    fixture.cleanup().await;
    let left: Vec<String> = cluster.nodes.iter().map(|n| n.cli(&["DBSIZE"])).collect();
    assert!(
        left.iter().all(|size| size.trim() == "0"),
        "cleanup reached every master: {left:?}"
    );
}

/// The master dies; the sentinels promote the replica and the backend
/// follows: writes and the change feed work again, on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_is_followed() {
    let mut topology = tokio::task::spawn_blocking(RedisSentinels::start).await.unwrap();
    let fixture = RedisFixture::on(topology.url());
    let backend = fixture.connect().await;
    let mut changes = backend.subscribe();
    let adds = counters(3, 10);
    let keys: Vec<CounterKey> = adds.iter().map(|a| a.key.clone()).collect();
    assert!(backend.add_counters_once("app_0", "w1", 1, &adds[..1]).await.unwrap());

    // Replication is asynchronous: the test kills the master once the
    // replica has the write (the store's own wait is another test's).
    let counter_key = format!("{}:u:{{app_0}}:hits:m:0", fixture.prefix);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while topology.replica.cli(&["GET", &counter_key]).trim() != "10" {
        assert!(std::time::Instant::now() < deadline, "the replica never got the write");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let old_master = topology.master.port;
    topology.master.kill();
    let topology = tokio::task::spawn_blocking(move || {
        topology.wait_for_failover(std::time::Duration::from_secs(30));
        topology
    })
    .await
    .unwrap();
    assert_ne!(topology.master_port(), old_master);

    // Writes fail while no master answers, then succeed on the new one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match backend.add_counters_once("app_0", "w1", 2, &adds[..1]).await {
            Ok(applied) => {
                assert!(applied);
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "no write after the failover: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A resent batch still counts once: the writer marks were replicated.
    assert!(!backend.add_counters_once("app_0", "w1", 1, &adds[..1]).await.unwrap());
    assert_eq!(backend.read_counters(&keys[..1]).await.unwrap(), [20]);
    assert_eq!(
        topology.replica.cli(&["GET", &counter_key]).trim(),
        "20",
        "the new master holds the counter"
    );

    // The change feed resubscribed on the new master: a commit reaches it.
    let change = Change::Account {
        id: "acc_after_failover".into(),
    };
    let mut batch = WriteBatch::default();
    batch.changes.push(change.clone());
    backend.commit(batch).await.unwrap().unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match changes.recv().await {
                Ok(c) if c == change => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("change feed closed: {e}"),
            }
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "the change committed after the failover reached the subscriber"
    );
    fixture.cleanup().await;
}

/// A proxy may start before its Sentinel or Cluster: with
/// `wait_for_server` the backend is made at once and says what it waits
/// for; without it, the error names the topology.
#[tokio::test]
async fn sentinel_and_cluster_urls_wait_for_their_servers() {
    use maas_store::backend::redis::RedisConnect;
    let dead = maas_store::conformance::servers::free_port();
    for (url, waiting, refused) in [
        (
            format!("redis+sentinel://127.0.0.1:{dead}/maas"),
            "the sentinels have not named",
            "redis sentinel (master `maas`)",
        ),
        (
            format!("redis+cluster://127.0.0.1:{dead}"),
            "no cluster node has answered",
            "redis cluster:",
        ),
    ] {
        let how = RedisConnect {
            wait_for_server: true,
            ..RedisConnect::default()
        };
        let backend = RedisBackend::connect_with(&url, "maastest-wait", &Default::default(), how)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let error = backend.ping().await.expect_err("nothing answers").to_string();
        assert!(error.contains(waiting), "{url}: {error}");
        let error = RedisBackend::connect(&url, "maastest-wait", &Default::default())
            .await
            .err()
            .expect("nothing answers")
            .to_string();
        assert!(error.contains(refused), "{url}: {error}");
    }
}
