//! SIGTERM, as Kubernetes sends it before removing a pod: the proxy stops
//! accepting, lets the streams in flight finish, writes their usage to the
//! store and exits 0.

use std::time::Duration;

use futures_util::StreamExt;

use super::harness::{CATALOG, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_fifty_open_streams_finish_and_stores_their_usage() {
    let mut gw = Gateway::start(CATALOG, 1, "local").await;
    let (app_id, key) = gw.app_key("drain-app", "exact", "open").await;
    let url = format!("{}/v1/chat/completions", gw.base());
    let mut streams = Vec::new();
    for i in 0..50 {
        let request = gw.http.post(&url).bearer_auth(&key).json(&serde_json::json!({
            "model": "paced-x",
            "messages": [{"role": "user", "content": format!("stream number {i}")}],
            "max_tokens": 20,
            "stream": true,
        }));
        // paced-x: 100 ms to the first token, 100 ms between tokens.
        streams.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let mut body = Vec::new();
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                body.extend_from_slice(&chunk.expect("the stream was not cut"));
            }
            (status, String::from_utf8(body).unwrap())
        }));
    }
    let metrics = gw.proxies[0].metrics.clone();
    // The readiness probe: the catalog is loaded.
    let ready = gw.http.get(metrics.replace("/metrics", "/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n");
    let mut open = 0;
    for _ in 0..200 {
        let text = gw.http.get(&metrics).send().await.unwrap().text().await.unwrap();
        open = text
            .lines()
            .find_map(|line| line.strip_prefix("maas_requests_in_flight "))
            .map_or(0, |n| n.parse().unwrap());
        if open == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, 50, "all 50 streams are open before SIGTERM");

    let exited = tokio::task::block_in_place(|| gw.terminate_proxy(0, Duration::from_secs(30)));
    assert!(exited.success(), "the proxy exits 0 after draining: {exited}");
    for stream in streams {
        let (status, body) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.trim_end().ends_with("data: [DONE]"), "a stream was cut: {body}");
    }

    // Every token the simulator served is in the store, written before exit.
    let served = gw.assert_stored_as_served(&app_id).await;
    assert_eq!(served["requests"], 50, "{served}");
    assert_eq!(gw.stored(&app_id, "hits").await, 50);
}
