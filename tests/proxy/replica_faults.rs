//! Replicas that change under the proxy, each behind a forwarder the test
//! can turn faulty: a hot prompt prefix stays on its replica until that
//! replica has more than its share, then spills; a replica whose
//! `/metrics` stops answering is compared by requests in flight; a replica
//! that fails its health checks gets no request, and gets them again once
//! it passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gpus::{fill_directly, one_place_replica, second_replica, served};
use super::harness::Gateway;

/// A forwarder in front of a replica. `sick`: every new connection is
/// answered 503 (health checks fail). `metrics_down`: `GET /metrics` gets
/// no answer (the connection is closed).
struct Forwarder {
    base: String,
    sick: Arc<AtomicBool>,
    metrics_down: Arc<AtomicBool>,
}

async fn forwarder(replica: &str) -> Forwarder {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let upstream = replica.trim_start_matches("http://").to_owned();
    let (sick, metrics_down) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (is_sick, no_metrics) = (sick.clone(), metrics_down.clone());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, is_sick, no_metrics) = (upstream.clone(), is_sick.clone(), no_metrics.clone());
            tokio::spawn(async move {
                // The first request's head tells what the connection is for.
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if is_sick.load(Ordering::Relaxed) {
                    let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                if head.starts_with(b"GET /metrics") && no_metrics.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    Forwarder {
        base,
        sick,
        metrics_down,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_prefix_stays_on_its_replica_until_it_has_more_than_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let (_second_sim, second) = second_replica(dir.path());
    let catalog = format!(
        r#"
backends:
  - system_name: cached
    urls: ["{{SIM}}", "{second}"]
    prefix_affinity: true
products:
  - {{system_name: cached, models: [long-a, chat-a], backend: cached}}
plans:
  - {{product: cached, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    let replicas = [gw.sim_base.clone(), second];
    let (app, key) = gw.app_key("hot", "cached", "open").await;
    let system = "You are the support desk of one busy product. ".repeat(40);
    let body = |model: &str, stream: bool, question: usize| {
        serde_json::json!({"model": model, "stream": stream, "max_tokens": 300, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": format!("question {question}")}]})
    };
    // Long streams with the same system prompt, held open one by one: the
    // first two stay on the preferred replica; the third would give it
    // more than 1.25 × its share of the three, so it spills.
    let mut held = Vec::new();
    let mut placed = Vec::new();
    for question in 0..3 {
        let mut stream = gw.chat_body(gw.base(), &key, body("long-a", true, question)).await;
        assert_eq!(stream.status(), 200);
        assert!(stream.chunk().await.unwrap().is_some(), "stream {question} started");
        held.push(stream);
        let mut now = Vec::new();
        for base in &replicas {
            now.push(served(&gw, base, &app).await);
        }
        placed.push(now);
    }
    let preferred = if placed[0][0] == 1 { 0 } else { 1 };
    let other = 1 - preferred;
    assert_eq!(placed[1][preferred], 2, "the second stays: {placed:?}");
    assert_eq!(placed[2][other], 1, "the third spills: {placed:?}");
    // Once the streams end, the prefix is back on its replica.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for question in 10..14 {
        let answer = gw.chat_body(gw.base(), &key, body("chat-a", false, question)).await;
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(served(&gw, &replicas[preferred], &app).await, 2 + 4, "{placed:?}");
    assert_eq!(served(&gw, &replicas[other], &app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_metrics_stop_answering_is_compared_by_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (_a_sim, a) = one_place_replica(dir.path());
    let (_b_sim, b) = one_place_replica(dir.path());
    let b_front = forwarder(&b).await;
    let catalog = format!(
        r#"
backends:
  - system_name: gpus
    urls: ["{a}", "{}"]
    balance: load_aware
products:
  - {{system_name: gpus, models: [gpu-a], backend: gpus}}
plans:
  - {{product: gpus, system_name: open}}
"#,
        b_front.base
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    let (app, key) = gw.app_key("aware", "gpus", "open").await;
    // Another client queues three requests at replica a, for a few seconds.
    let fill = fill_directly(&gw, &a, 4, 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let short =
        || serde_json::json!({"model": "gpu-a", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]});
    // Both replicas report: a's queue keeps every request away from it.
    for _ in 0..4 {
        assert_eq!(gw.chat_body(gw.base(), &key, short()).await.status(), 200);
    }
    assert_eq!(served(&gw, &a, &app).await, 0, "a is queued");
    // b's metrics stop answering: once its reading is stale (1 s), what
    // the proxy knows decides, its own requests in flight (none: in turn),
    // and a's queue no longer counts.
    b_front.metrics_down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = gw.metrics(0).await;
    let age = metrics
        .lines()
        .find(|l| l.starts_with("maas_upstream_replica_metrics_age_seconds") && l.contains(&b_front.base[7..]))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("b's reading age");
    assert!(age > 1.0, "b's reading is stale: {age}");
    for _ in 0..4 {
        assert_eq!(gw.chat_body(gw.base(), &key, short()).await.status(), 200);
    }
    assert_eq!(served(&gw, &a, &app).await, 2, "in turn, a's queue unseen");
    for request in fill {
        assert_eq!(request.await.unwrap().ok(), Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_fails_its_health_checks_gets_no_request_until_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (_second_sim, second) = second_replica(dir.path());
    let front = forwarder(&second).await;
    let catalog = format!(
        r#"
backends:
  - system_name: checked
    urls: ["{{SIM}}", "{}"]
    health_check: {{interval_ms: 100, timeout_ms: 200, unhealthy_after: 1, healthy_after: 2}}
products:
  - {{system_name: checked, models: [chat-a], backend: checked}}
plans:
  - {{product: checked, system_name: open}}
"#,
        front.base
    );
    let mut gw = Gateway::start(&catalog, 0, "local").await;
    gw.add_proxy_with_env("local", &[("MAAS_REPORT_INTERVAL_MS", "200")]);
    let (app, key) = gw.app_key("checked", "checked", "open").await;
    front.sick.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..6 {
        assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200);
    }
    assert_eq!(served(&gw, &second, &app).await, 0, "down: no request");
    // The proxy tells the store, for the console.
    let down = reported(&gw, &front.base, |r| !r.up).await;
    let error = down.last_error.unwrap_or_default();
    assert!(error.contains("health check: GET /health"), "{error}");
    assert_eq!(reported(&gw, &gw.sim_base, |r| r.up).await.in_flight, 0);
    front.sick.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..6 {
        assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200);
    }
    assert_eq!(served(&gw, &second, &app).await, 3, "up again: its turn");
    let up = reported(&gw, &front.base, |r| r.up).await;
    assert!(up.last_error.is_some(), "the last error stays on show");
}

/// Waits up to 3 s for the proxy's report to show replica `url` as
/// `wanted` says.
async fn reported(
    gw: &Gateway,
    url: &str,
    wanted: impl Fn(&maas_store::ReplicaReport) -> bool,
) -> maas_store::ReplicaReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let reports = gw.store.proxy_reports().await.unwrap();
        let replica = reports
            .iter()
            .flat_map(|p| &p.backends)
            .filter(|b| b.backend == "checked")
            .flat_map(|b| &b.replicas)
            .find(|r| r.url == url)
            .cloned();
        if let Some(replica) = replica.filter(|r| wanted(r)) {
            return replica;
        }
        last = Some(reports);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no report shows {url} as wanted: {last:?}");
}
