//! `balance:` of a backend, against two real simulator replicas: with
//! `least_requests` a replica busy with a long stream gets no new request
//! while the other is idle, and gets its turn again once the stream ends;
//! with `load_aware` a replica whose own metrics show a queue gets none.

use super::gpus::{fill_directly, one_place_replica, second_replica, served};
use super::harness::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_spares_the_replica_busy_with_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (_second_sim, second) = second_replica(dir.path());
    let catalog = format!(
        r#"
backends:
  - system_name: pair
    urls: ["{{SIM}}", "{second}"]
    balance: least_requests
products:
  - {{system_name: paired, models: [long-a, chat-a], backend: pair}}
plans:
  - {{product: paired, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    let (app, key) = gw.app_key("balanced", "paired", "open").await;
    let replicas = [gw.sim_base.clone(), second];

    // A long stream (300 tokens, 10 ms apart) holds one replica.
    let mut stream = gw
        .chat_body(
            gw.base(),
            &key,
            serde_json::json!({"model": "long-a", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream started");
    let mut busy = None;
    for (index, base) in replicas.iter().enumerate() {
        if served(&gw, base, &app).await == 1 {
            busy = Some(index);
        }
    }
    let busy = busy.expect("one replica holds the stream");
    let idle = 1 - busy;

    // Ten short requests meanwhile: all to the idle replica.
    for i in 0..10 {
        let answer = gw.chat(gw.base(), &key, "chat-a").await;
        assert_eq!(answer.status(), 200, "request {i}");
    }
    assert_eq!(served(&gw, &replicas[idle], &app).await, 10);
    assert_eq!(served(&gw, &replicas[busy], &app).await, 1, "only the stream");

    // The stream ends (the client leaves): both replicas take turns again.
    drop(stream);
    let mut back = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let answer = gw.chat(gw.base(), &key, "chat-a").await;
        assert_eq!(answer.status(), 200);
        back = served(&gw, &replicas[busy], &app).await - 1;
        if back >= 3 {
            break;
        }
    }
    assert!(back >= 3, "the replica whose stream ended serves again: {back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_sends_requests_away_from_a_replica_whose_queue_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (_a_sim, a) = one_place_replica(dir.path());
    let (_b_sim, b) = one_place_replica(dir.path());
    let catalog = format!(
        r#"
backends:
  - system_name: gpus
    urls: ["{a}", "{b}"]
    balance: load_aware
products:
  - {{system_name: gpus, models: [gpu-a], backend: gpus}}
plans:
  - {{product: gpus, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    let (app, key) = gw.app_key("aware", "gpus", "open").await;

    // Someone else fills replica a: one request runs (50 steps of 20 ms), three wait.
    let direct = fill_directly(&gw, &a, 4, 50);
    let waiting = |base: String| {
        let gw = &gw;
        async move {
            let text = gw.text(&format!("{base}/metrics")).await;
            text.lines()
                .find_map(|l| l.strip_prefix("vllm:num_requests_waiting{model_name=\"gpu-a\"} "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    for _ in 0..100 {
        if waiting(a.clone()).await >= 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(waiting(a.clone()).await, 3.0, "replica a has a queue");
    // The proxy reads /metrics every 200 ms, and shows what it read.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let metrics = gw.metrics(0).await;
    let series = |name: &str, base: &str| format!("{name}{{backend=\"gpus\",replica=\"{}\"}}", &base[7..]);
    assert!(
        metrics.contains(&format!("{} 3", series("maas_upstream_replica_waiting", &a))),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("{} 0", series("maas_upstream_replica_waiting", &b))));
    assert!(metrics.contains(&series("maas_upstream_replica_metrics_age_seconds", &a)));

    // Six requests through the gateway: none joins a's queue.
    for i in 0..6 {
        let answer = gw
            .chat_body(
                gw.base(),
                &key,
                serde_json::json!({"model": "gpu-a", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(answer.status(), 200, "request {i}");
    }
    assert_eq!(served(&gw, &b, &app).await, 6, "all to the replica without a queue");
    assert_eq!(served(&gw, &a, &app).await, 0);
    for request in direct {
        assert_eq!(request.await.unwrap().ok(), Some(200));
    }
}

/// A server that answers every request 503 (its `/health` too), as a model
/// server that is up but not ready does.
async fn not_ready() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_health_check_fails_gets_no_request() {
    let sick = not_ready().await;
    let catalog = format!(
        r#"
backends:
  - system_name: checked
    urls: ["{{SIM}}", "{sick}"]
    health_check: {{interval_ms: 100, timeout_ms: 200, unhealthy_after: 1, healthy_after: 1}}
  - system_name: unchecked
    urls: ["{{SIM}}", "{sick}"]
products:
  - {{system_name: checked, models: [chat-a], backend: checked}}
  - {{system_name: unchecked, models: [chat-b], backend: unchecked}}
plans:
  - {{product: checked, system_name: open}}
  - {{product: unchecked, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    let (_, checked) = gw.app_key("checked", "checked", "open").await;
    let (_, unchecked) = gw.app_key("unchecked", "unchecked", "open").await;
    // Probes every 100 ms: the not-ready replica is down after the first.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    for i in 0..10 {
        assert_eq!(
            gw.chat(gw.base(), &checked, "chat-a").await.status(),
            200,
            "request {i}"
        );
    }
    let metrics = gw.metrics(0).await;
    let up = |base: &str| {
        format!(
            "maas_upstream_replica_up{{backend=\"checked\",replica=\"{}\"}}",
            &base[7..]
        )
    };
    assert!(metrics.contains(&format!("{} 0", up(&sick))), "{metrics}");
    assert!(metrics.contains(&format!("{} 1", up(&gw.sim_base))), "{metrics}");
    // Without health checks, its 503s reach clients (it accepts connections).
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(gw.chat(gw.base(), &unchecked, "chat-b").await.status().as_u16());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_the_same_prompt_start_go_to_the_same_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (_second_sim, second) = second_replica(dir.path());
    let catalog = format!(
        r#"
backends:
  - system_name: cached
    urls: ["{{SIM}}", "{second}"]
    prefix_affinity: true
products:
  - {{system_name: cached, models: [chat-a], backend: cached}}
plans:
  - {{product: cached, system_name: open}}
"#
    );
    let gw = Gateway::start(&catalog, 1, "local").await;
    let replicas = [gw.sim_base.clone(), second];
    // Four system prompts, each the prompt of one application's four requests.
    for team in 0..4 {
        let (app, key) = gw.app_key(&format!("team-{team}"), "cached", "open").await;
        let system = format!("You answer for team {team}. ").repeat(60);
        for question in 0..4 {
            let body = serde_json::json!({"model": "chat-a", "max_tokens": 2, "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("question {question}")}]});
            assert_eq!(gw.chat_body(gw.base(), &key, body).await.status(), 200);
        }
        let mut counts = Vec::new();
        for base in &replicas {
            counts.push(served(&gw, base, &app).await);
        }
        counts.sort_unstable();
        assert_eq!(counts, [0, 4], "team {team}: one replica served its prefix");
    }
}
