//! The gateway on Redis Cluster and on Redis Sentinel: two proxies, real
//! redis-server processes on free ports, usage checked against the
//! simulator's count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use maas_store::conformance::servers::{RedisCluster, RedisSentinels};

use super::harness::Gateway;
use super::outage::{CATALOG, Outcome, assert_hits_stored, await_breakers, await_usage_written, start_load};

/// Strict and local proxies on a three-master cluster: requests, streams,
/// an exact strict limit, a revocation through the change feed, and every
/// token stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3)).await.unwrap();
    let mut gw = Gateway::start_on(&cluster.url(), CATALOG, 2, "strict").await;
    gw.add_proxy("local");
    let mut apps = Vec::new();
    let mut requests = 0u64;
    for name in ["c-1", "c-2", "c-3", "c-4", "c-5", "c-6"] {
        let (app, key) = gw.app_key(name, "ha", "metered").await;
        for turn in 0..6 {
            let base = &gw.proxies[turn % 3].base;
            if turn % 2 == 0 {
                let response = gw.chat(base, &key, "chat-a").await;
                assert_eq!(response.status(), 200, "{name} on proxy {}", turn % 3);
            } else {
                let response = gw.stream_chat(base, &key, "chat-a").await;
                assert_eq!(response.status(), 200);
                assert!(response.text().await.unwrap().trim_end().ends_with("data: [DONE]"));
            }
            requests += 1;
        }
        apps.push(app);
    }
    await_usage_written(&gw, &apps).await;
    let mut hits = 0;
    for app in &apps {
        gw.assert_stored_as_served(app).await;
        hits += gw.stored(app, "hits").await;
    }
    assert_eq!(hits, requests, "one hit a request");

    // Strict admission is one script in the application's slot: exact.
    let (capped_app, capped) = gw.app_key("capped", "ha", "capped").await;
    let mut admitted = 0;
    for i in 0..50 {
        match gw
            .chat(&gw.proxies[i % 2].base, &capped, "chat-a")
            .await
            .status()
            .as_u16()
        {
            200 => admitted += 1,
            429 => {}
            other => panic!("capped plan: {other}"),
        }
    }
    assert_eq!((admitted, gw.stored(&capped_app, "hits").await), (40, 40));

    // A revocation reaches every proxy through cluster pub/sub.
    let (app, key) = gw.app_key("revoked", "ha", "metered").await;
    for proxy in 0..3 {
        assert_eq!(gw.chat(&gw.proxies[proxy].base, &key, "chat-a").await.status(), 200);
    }
    let key_id = gw.store.application_keys(&app).await.unwrap()[0].id.clone();
    gw.store.revoke_key(&key_id).await.unwrap();
    for proxy in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while gw.chat(&gw.proxies[proxy].base, &key, "chat-a").await.status() != 401 {
            assert!(Instant::now() < deadline, "proxy {proxy} still takes the revoked key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let holding = cluster
        .nodes
        .iter()
        .filter(|node| node.cli(&["DBSIZE"]).trim() != "0")
        .count();
    assert!(
        holding >= 2,
        "the gateway's keys spread over the masters: {holding} of 3 hold keys"
    );
}

/// The master is killed under steady load on two strict proxies: the
/// sentinels promote the replica, the proxies follow, no request fails and
/// every token is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_follows_a_sentinel_failover_under_load() {
    let mut topology = tokio::task::spawn_blocking(RedisSentinels::start).await.unwrap();
    let gw = Arc::new(Gateway::start_on(&topology.url(), CATALOG, 2, "strict").await);
    let mut apps = Vec::new();
    let mut keys = Vec::new();
    for name in ["s-1", "s-2", "s-3"] {
        let (app, key) = gw.app_key(name, "ha", "metered").await;
        apps.push(app);
        keys.push(key);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&gw, &keys, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed = Instant::now();
    topology.master.kill();
    let topology = tokio::task::spawn_blocking(move || {
        topology.wait_for_failover(Duration::from_secs(30));
        topology
    })
    .await
    .unwrap();
    let promoted = killed.elapsed();
    await_breakers(&gw, 0, Duration::from_secs(15)).await;
    let followed = killed.elapsed();
    // Traffic on the new master for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes: Vec<(Instant, Outcome)> = Vec::new();
    for worker in load {
        outcomes.extend(worker.await.unwrap());
    }
    let failed: Vec<_> = outcomes.iter().filter(|(_, o)| o.2 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    let after = outcomes.iter().filter(|(at, _)| *at > killed + followed).count();
    assert!(after > 20, "{after} requests after the proxies followed the failover");

    await_usage_written(&gw, &apps).await;
    for app in &apps {
        gw.assert_stored_as_served(app).await;
    }
    let total = outcomes.len() as u64;
    let (hits, uncertain) = assert_hits_stored(&gw, &apps, total).await;
    let new_master = topology.replica.cli(&["DBSIZE"]);
    assert_ne!(new_master.trim(), "0", "the promoted replica holds the data");
    eprintln!(
        "sentinel: {total} requests, 0 failed; promoted after {promoted:?}, proxies followed after {followed:?}; \
         {hits} hits stored ({uncertain} uncertain admissions)"
    );
}
