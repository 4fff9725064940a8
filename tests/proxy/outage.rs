//! Redis fails under load: two proxies keep serving the keys they know,
//! fall back to local limits within the documented bound, and write every
//! token once Redis is back (`store.outage: serve_cached`, the default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::harness::{Gateway, PrivateRedis, error_of, metric_value};

pub(super) const CATALOG: &str = r#"
backends:
  - system_name: sim
    urls: ["{SIM}"]
products:
  - system_name: ha
    models: [chat-a]
    backend: sim
plans:
  - product: ha
    system_name: metered
    limits: [{metric: total_tokens, period: day, value: 100000000}]
  - product: ha
    system_name: capped
    limits: [{metric: hits, period: eternity, value: 40}]
"#;

/// One request of the steady load: (proxy, streamed, status, latency).
pub(super) type Outcome = (usize, bool, u16, Duration);

/// Steady load until `stop`: each worker alternates proxies and streamed
/// or plain chats on its key.
pub(super) fn start_load(
    gw: &Arc<Gateway>,
    keys: &[String],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(Instant, Outcome)>>> {
    keys.iter()
        .enumerate()
        .map(|(worker, key)| {
            let (gw, key, stop) = (gw.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut turn = worker;
                while !stop.load(Ordering::Relaxed) {
                    let proxy = turn % 2;
                    let streamed = (turn / 2) % 2 == 1;
                    turn += 1;
                    let started = Instant::now();
                    let base = gw.proxies[proxy].base.clone();
                    let status = if streamed {
                        let response = gw.stream_chat(&base, &key, "chat-a").await;
                        let status = response.status().as_u16();
                        let text = response.text().await.unwrap_or_default();
                        if status == 200 && !text.trim_end().ends_with("data: [DONE]") {
                            599
                        } else {
                            status
                        }
                    } else {
                        let response = gw.chat(&base, &key, "chat-a").await;
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status
                    };
                    outcomes.push((started, (proxy, streamed, status, started.elapsed())));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                outcomes
            })
        })
        .collect()
}

async fn breaker_state(gw: &Gateway, proxy: usize) -> u64 {
    let text = gw.metrics(proxy).await;
    text.lines()
        .find_map(|line| line.strip_prefix("maas_store_breaker_state "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maas_store_breaker_state in {text}"))
}

/// Waits until every proxy's breaker is in `state` (0 closed, 1 open).
pub(super) async fn await_breakers(gw: &Gateway, state: u64, within: Duration) {
    let deadline = Instant::now() + within;
    for proxy in 0..gw.proxies.len() {
        while breaker_state(gw, proxy).await != state {
            assert!(
                Instant::now() < deadline,
                "proxy {proxy}'s breaker did not reach state {state} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    assert!(!latencies.is_empty(), "no requests measured");
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// Until the store holds what the simulator served each application.
pub(super) async fn await_usage_written(gw: &Gateway, apps: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut written = true;
        for app in apps {
            let served = gw.sim_usage(app).await;
            for metric in ["prompt_tokens", "completion_tokens"] {
                written &= gw.stored(app, metric).await == served[metric].as_u64().unwrap_or(0);
            }
        }
        if written || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every request is one hit. An admission whose connection dropped after
/// it was sent (Redis killed mid-write) may have been counted by Redis as
/// well as queued by a proxy: the proxies count those, and the stored hits
/// may exceed `requests` by that many. Returns (hits, uncertain).
pub(super) async fn assert_hits_stored(gw: &Gateway, apps: &[String], requests: u64) -> (u64, u64) {
    let mut hits = 0;
    for app in apps {
        hits += gw.stored(app, "hits").await;
    }
    let mut uncertain = 0;
    for proxy in 0..gw.proxies.len() {
        let text = gw.metrics(proxy).await;
        uncertain += metric_value(&text, "maas_store_uncertain_writes_total", "operation", "admit").unwrap_or(0);
    }
    assert!(
        (requests..=requests + uncertain).contains(&hits),
        "{hits} hits stored for {requests} requests ({uncertain} uncertain admissions)"
    );
    (hits, uncertain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hangs_and_dies_under_load_and_nothing_is_lost() {
    let mut redis = PrivateRedis::start();
    let gw = Arc::new(Gateway::start_on(&redis.url(), CATALOG, 2, "strict").await);
    let mut apps = Vec::new();
    let mut keys = Vec::new();
    for name in ["steady-a", "steady-b", "steady-c"] {
        let (app, key) = gw.app_key(name, "ha", "metered").await;
        apps.push(app);
        keys.push(key);
    }
    let (capped_app, capped) = gw.app_key("capped", "ha", "capped").await;
    let (_, unknown) = gw.app_key("never-used", "ha", "metered").await;
    // Ten hits on the capped plan, alternating: proxy 0 last saw 9, proxy 1 saw 10.
    for i in 0..10 {
        let response = gw.chat(&gw.proxies[i % 2].base, &capped, "chat-a").await;
        assert_eq!(response.status(), 200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&gw, &keys, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Redis hangs for 10 s.
    let hang_started = Instant::now();
    redis.signal("STOP");
    await_breakers(&gw, 1, Duration::from_secs(5)).await;
    let breaker_open = Instant::now();
    let opened_after = breaker_open - hang_started;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(opened_after)).await;
    redis.signal("CONT");
    let hang_ended = Instant::now();
    await_breakers(&gw, 0, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Redis dies for 15 s, then restarts on its append-only file.
    redis.kill();
    let killed = Instant::now();
    await_breakers(&gw, 1, Duration::from_secs(5)).await;
    let (status, error) = error_of(gw.chat(gw.base(), &unknown, "chat-a").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("service_unavailable")),
        "a key this replica never saw cannot be verified: {error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("cannot verify API keys"),
        "{error}"
    );
    let response = gw.chat(gw.base(), &unknown, "chat-a").await;
    assert_eq!(response.headers()["retry-after"], "2");
    let mut capped_during = 0;
    for i in 0..80 {
        let response = gw.chat(&gw.proxies[i % 2].base, &capped, "chat-a").await;
        match response.status().as_u16() {
            200 => capped_during += 1,
            429 => {}
            other => panic!("capped plan during the outage: {other}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(killed.elapsed())).await;
    redis.restart();
    await_breakers(&gw, 0, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for worker in load {
        outcomes.extend(worker.await.unwrap());
    }

    // Not one request of the steady load failed, streamed or not.
    let failed: Vec<&(Instant, Outcome)> = outcomes.iter().filter(|(_, o)| o.2 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    let streamed = outcomes.iter().filter(|(_, o)| o.1).count();
    assert!(
        streamed > 20 && outcomes.len() - streamed > 20,
        "{streamed} of {}",
        outcomes.len()
    );

    // Latency: once the breaker is open, requests do not wait for Redis.
    let plain = |from: Instant, to: Instant| -> Vec<Duration> {
        outcomes
            .iter()
            .filter(|(at, o)| !o.1 && *at >= from && *at < to)
            .map(|(_, o)| o.3)
            .collect()
    };
    let before = p99(plain(hang_started - Duration::from_secs(2), hang_started));
    let hung = p99(plain(breaker_open, hang_ended));
    eprintln!("hang: breaker open after {opened_after:?}; plain-chat p99 before {before:?}, while open {hung:?}");
    // Measured alone the difference is about a millisecond; other tests of
    // this binary share the two cores, hence the slack over the 5 ms aim
    // (a breaker that stayed closed would cost every request 500 ms).
    assert!(
        hung <= before + Duration::from_millis(50),
        "p99 while the breaker is open {hung:?}, before {before:?}"
    );

    // Every token the simulator served is stored, once.
    await_usage_written(&gw, &apps).await;
    for app in &apps {
        gw.assert_stored_as_served(app).await;
    }
    let total_requests = outcomes.len() as u64;
    let (stored_hits, uncertain) = assert_hits_stored(&gw, &apps, total_requests).await;
    eprintln!("outage: {total_requests} requests, {stored_hits} hits stored, {uncertain} uncertain admissions");

    // The capped plan: each replica went on from the count it last saw.
    // Bound: limit + (R − 1) · (limit − u) with u = 9, the lowest count seen.
    let capped_total = gw.stored(&capped_app, "hits").await;
    assert_eq!(
        capped_total,
        10 + capped_during,
        "hits admitted in the outage are stored"
    );
    assert!(
        capped_during >= 30,
        "each replica admits up to the limit on its own count: {capped_during}"
    );
    assert!(capped_total <= 40 + 31, "overshoot past the bound: {capped_total}");
    eprintln!("outage: capped plan 10 before, {capped_during} admitted during (limit 40, bound 71)");

    for proxy in 0..2 {
        let text = gw.metrics(proxy).await;
        let local = metric_value(&text, "maas_outage_decisions_total", "decision", "local_admission").unwrap_or(0);
        let opened = metric_value(&text, "maas_store_breaker_transitions_total", "to", "open").unwrap_or(0);
        assert!(
            local > 0 && opened >= 2,
            "proxy {proxy}: {local} local admissions, opened {opened} times"
        );
    }
}

/// A proxy started while Redis is down stays up, says why it is not
/// ready, answers 503, and serves once Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_before_redis_becomes_ready_with_it() {
    let mut redis = PrivateRedis::start();
    let mut gw = Gateway::start_on(&redis.url(), CATALOG, 0, "strict").await;
    let (_, key) = gw.app_key("early", "ha", "metered").await;
    redis.kill();
    gw.add_proxy("strict");
    let ready_url = gw.proxies[0].metrics.replace("/metrics", "/ready");
    let ready = gw.http.get(&ready_url).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("waiting for the store"), "{body}");
    let health = gw
        .http
        .get(gw.proxies[0].metrics.replace("/metrics", "/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let response = gw.chat(gw.base(), &key, "chat-a").await;
    assert_eq!(response.headers()["retry-after"], "2");
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("service_unavailable")),
        "{error}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = gw.http.get(&ready_url).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 15 s after Redis came up: {}",
            ready.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200);
}

/// A proxy killed during an outage leaves its usage in the spool; the next
/// proxy started in the same place writes it once Redis is back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_spooled_by_a_killed_proxy_is_written_once() {
    let mut redis = PrivateRedis::start();
    let mut gw = Gateway::start_on(&redis.url(), CATALOG, 1, "strict").await;
    let (app, key) = gw.app_key("spooled", "ha", "metered").await;
    let mut requests = 0;
    for _ in 0..4 {
        assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200);
        requests += 1;
    }
    redis.kill();
    for i in 0..30 {
        let response = if i % 2 == 0 {
            gw.chat(gw.base(), &key, "chat-a").await
        } else {
            gw.stream_chat(gw.base(), &key, "chat-a").await
        };
        assert_eq!(response.status(), 200, "request {i} during the outage");
        let _ = response.bytes().await;
        requests += 1;
    }
    // Everything served is on disk within a sync interval or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = gw.metrics(0).await;
        let spooled = text
            .lines()
            .find_map(|line| line.strip_prefix("maas_usage_spool_bytes "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if spooled > 0 && gw.sim_usage(&app).await["requests"].as_u64() == Some(requests) {
            // The last request's usage is spooled at the next sync (100 ms).
            tokio::time::sleep(Duration::from_secs(1)).await;
            break;
        }
        assert!(Instant::now() < deadline, "nothing spooled: {spooled} bytes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.crash_proxy(0);
    let spool_dir = gw.dir.path().join("data/spool");
    let files = std::fs::read_dir(&spool_dir).unwrap().count();
    assert_eq!(files, 1, "the killed proxy's spool is there");

    redis.restart();
    gw.add_proxy("strict");
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.stored(&app, "hits").await < requests {
        assert!(Instant::now() < deadline, "the spool was not replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.stored(&app, "hits").await, requests, "each request counted once");
    gw.assert_stored_as_served(&app).await;
    let left: Vec<_> = std::fs::read_dir(&spool_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 1, "only the new proxy's (empty) spool is left: {left:?}");
    assert_eq!(std::fs::metadata(&left[0]).unwrap().len(), 0);
}

/// After a Redis restart the portal and the admin API answer the first
/// request (a read and a write alike), and `/readyz` names the store while
/// it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_the_first_request_after_a_redis_restart() {
    const TOKEN: &str = "outage-test-admin-token";
    let mut redis = PrivateRedis::start();
    let mut gw = Gateway::start_on(&redis.url(), CATALOG, 0, "strict").await;
    let portal = gw.add_portal(TOKEN);
    let api = format!("{portal}{}", maas_admin_api::BASE_PATH);
    let get = |url: String| {
        let http = gw.http.clone();
        async move { http.get(url).bearer_auth(TOKEN).send().await.unwrap() }
    };
    assert_eq!(get(format!("{api}/products")).await.status(), 200);

    redis.kill();
    let ready = gw.http.get(format!("{portal}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("the store (redis) does not answer"), "{body}");

    redis.restart();
    let first = get(format!("{api}/products")).await;
    assert_eq!(first.status(), 200, "{}", first.text().await.unwrap());
    redis.kill();
    redis.restart();
    let created = gw
        .http
        .post(format!("{api}/accounts"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "after-restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    assert_eq!(
        gw.http.get(format!("{portal}/readyz")).send().await.unwrap().status(),
        200
    );
}
