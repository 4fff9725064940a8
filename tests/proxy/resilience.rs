//! Upstream failures: dead replicas are skipped, unreachable backends get
//! 503, slow ones 504, all in OpenAI's error shape.

use super::harness::{Gateway, error_of, free_port};

fn catalog() -> String {
    // A port nothing listens on: connections are refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    format!(
        r#"
backends:
  - system_name: mixed
    urls: ["{dead}", "{{SIM}}"]
  - system_name: dead
    urls: ["{dead}"]
  - system_name: slow
    urls: ["{{SIM}}"]
    timeouts: {{read_ms: 300}}
products:
  - {{system_name: mixed, models: [chat-a], backend: mixed}}
  - {{system_name: dead, models: [chat-b], backend: dead}}
  - {{system_name: slow, models: [slow-a], backend: slow}}
plans:
  - {{product: mixed, system_name: open}}
  - {{product: dead, system_name: open}}
  - {{product: slow, system_name: open}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replicas_are_skipped_and_failures_are_openai_shaped() {
    let gw = Gateway::start(&catalog(), 1, "strict").await;
    let (_, mixed) = gw.app_key("mixed-app", "mixed", "open").await;
    for i in 0..20 {
        let response = gw.chat(gw.base(), &mixed, "chat-a").await;
        assert_eq!(response.status(), 200, "request {i}: the live replica answers");
    }
    let metrics = gw
        .http
        .get(&gw.proxies[0].metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let connect_errors: u64 = metrics
        .lines()
        .find(|l| l.starts_with("maas_upstream_errors_total{backend=\"mixed\",kind=\"connect\"}"))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
        .expect(&metrics);
    assert!(
        (1..=4).contains(&connect_errors),
        "the dead replica is ejected after its first refusal, not tried on every request: {connect_errors}"
    );

    let (_, dead) = gw.app_key("dead-app", "dead", "open").await;
    let (status, error) = error_of(gw.chat(gw.base(), &dead, "chat-b").await).await;
    assert_eq!((status, error["type"].as_str()), (503, Some("server_error")), "{error}");

    let (_, slow) = gw.app_key("slow-app", "slow", "open").await;
    let started = std::time::Instant::now();
    let (status, error) = error_of(gw.chat(gw.base(), &slow, "slow-a").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (504, Some("gateway_timeout")),
        "{error}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
