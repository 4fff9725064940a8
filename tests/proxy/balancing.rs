//! `balance:` of a backend, against two real simulator replicas: with
//! `least_requests` a replica busy with a long stream gets no new request
//! while the other is idle, and gets its turn again once the stream ends.

use super::harness::{Gateway, spawn_sim};

/// A process stopped when dropped (a test that fails leaves no orphan).
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many requests of `application` the simulator at `base` served.
async fn served(gw: &Gateway, base: &str, application: &str) -> u64 {
    let usage: serde_json::Value = gw
        .http
        .get(format!("{base}/sim/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    usage["applications"][application]["requests"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_spares_the_replica_busy_with_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (second_sim, second) = spawn_sim(dir.path());
    let _second_sim = Stopped(second_sim);
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
