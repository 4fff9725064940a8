//! Streams through the proxy: clients see what they would see from the
//! model server directly, every token is metered (whole, cut by the client,
//! or broken off by the server), and the store, the metrics and the
//! simulator agree.

use std::time::Duration;

use futures_util::StreamExt;

use super::harness::{CATALOG, Gateway, require_python_openai, run_json_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_sees_the_same_stream_through_the_proxy() {
    require_python_openai();
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("stream-sdk-app", "alpha", "open").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/openai_stream.py");
    let report = run_json_script("python3", &[script, gw.base(), &gw.sim_base, &key]).await;
    assert_eq!(report["compared"], 6, "{report}");

    // Every streamed token reached the store, whether or not the client asked for usage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.assert_stored_as_served(&app_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_npm_sdk_sees_the_same_stream_through_the_proxy() {
    let dir = super::harness::node_dir(&["openai"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("stream-npm-app", "alpha", "open").await;
    let script = format!("{dir}/openai_stream.mjs");
    let report = run_json_script("node", &[&script, gw.base(), &gw.sim_base, &key]).await;
    assert_eq!(report["compared"], 6, "{report}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.assert_stored_as_served(&app_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_is_metered_exactly() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("mixed-traffic-app", "alpha", "open").await;
    let options = [
        serde_json::json!(null),
        serde_json::json!({"include_usage": true}),
        serde_json::json!({"continuous_usage_stats": true}),
        serde_json::json!({"include_usage": true, "continuous_usage_stats": true}),
    ];
    for i in 0..24 {
        let (path, mut body) = match i % 4 {
            0 => (
                "/v1/chat/completions",
                serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "a b c"}]}),
            ),
            1 => (
                "/v1/completions",
                serde_json::json!({"model": "chat-a", "prompt": "one two"}),
            ),
            2 => (
                "/v1/embeddings",
                serde_json::json!({"model": "embed-a", "input": ["x y", "z"]}),
            ),
            _ => (
                "/alpha/v1/chat/completions",
                serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "d"}]}),
            ),
        };
        if i % 2 == 1 {
            // Odd requests stream, cycling through every usage option.
            body["stream"] = true.into();
            let option = &options[(i / 2) % 4];
            if !option.is_null() {
                body["stream_options"] = option.clone();
            }
        }
        let response = gw
            .http
            .post(format!("{}{path}", gw.base()))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}: {body}");
        let text = response.text().await.unwrap();
        if body["stream"] == true {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
            let asked_final = body["stream_options"]["include_usage"] == true;
            let asked_every = body["stream_options"]["continuous_usage_stats"] == true;
            let usage_events = text.matches("\"usage\"").count();
            match (asked_final, asked_every) {
                (false, false) => assert_eq!(usage_events, 0, "{text}"),
                (true, false) => assert_eq!(usage_events, 1, "{text}"),
                _ => assert!(usage_events > 1, "{text}"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let truth = gw.sim_usage(&app_id).await;
    let (prompt, completion) = (
        truth["prompt_tokens"].as_u64().unwrap(),
        truth["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(gw.stored(&app_id, "prompt_tokens").await, prompt, "{truth}");
    assert_eq!(gw.stored(&app_id, "completion_tokens").await, completion, "{truth}");
    assert_eq!(gw.stored(&app_id, "total_tokens").await, prompt + completion);
    let metrics = gw.metrics(0).await;
    let expected = format!(
        "llm_completion_tokens_count{{application_id=\"{app_id}\",application_system_name=\"mixed-traffic-app\",model=\"chat-a\",service_id=\"alpha\",service_system_name=\"alpha\"}} {completion}"
    );
    assert!(metrics.contains(&expected), "{expected}\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_metering_policy_fits_servers_without_continuous_usage() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let stream = |model: &str| serde_json::json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "a b"}]});
    // The default policy asks for vLLM's continuous usage, which such a server refuses.
    let (_, key) = gw.app_key("continuous-app", "delta", "open").await;
    let response = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base()))
        .bearer_auth(&key)
        .json(&stream("strict-d"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("continuous_usage_stats"));

    // `stream_usage: final` asks only for the final usage chunk: served and metered exactly.
    let (app_id, key) = gw.app_key("final-usage-app", "epsilon", "open").await;
    for i in 0..6 {
        let mut body = stream("strict-e");
        if i % 2 == 1 {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let response = gw
            .http
            .post(format!("{}/v1/chat/completions", gw.base()))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let text = response.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        let usage_events = text.matches("\"usage\"").count();
        assert_eq!(usage_events, i % 2, "usage only when the client asked: {text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.assert_stored_as_served(&app_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_the_generation_and_pays_for_what_it_got() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("hangup-app", "gamma", "open").await;
    let response = gw.stream_chat(gw.base(), &key, "long-a").await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = String::new();
    while received.matches("data: ").count() < 10 {
        received.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    assert!(
        !received.contains("\"usage\""),
        "the client did not ask for usage: {received}"
    );
    // Counted as a stream while it flows, and only then.
    let metrics = gw.metrics(0).await;
    assert!(metrics.contains("\nmaas_streams_in_flight 1\n"), "{metrics}");
    drop(stream);
    // The simulator sees the cancellation within a few tokens (10 ms each).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let truth = loop {
        let truth = gw.sim_usage(&app_id).await;
        if truth["aborted_streams"] == 1 {
            break truth;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream stream was not cancelled: {truth}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let served = truth["completion_tokens"].as_u64().unwrap();
    assert!(served < 100, "generation stopped early: {served} of 300 tokens");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !gw.metrics(0).await.contains("\nmaas_streams_in_flight 0\n") {
        assert!(std::time::Instant::now() < deadline, "the stream was never counted out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let billed = gw.stored(&app_id, "completion_tokens").await;
    // Billed from the last usage the proxy saw; the simulator may have put a
    // token or two on the wire that the proxy never read.
    assert!(
        billed >= 9 && billed <= served && served - billed <= 2,
        "billed {billed}, served {served}"
    );
    assert_eq!(
        gw.stored(&app_id, "prompt_tokens").await,
        truth["prompt_tokens"].as_u64().unwrap()
    );
    let line = gw.access_log(0).into_iter().last().unwrap();
    assert_eq!(line["completion_tokens"], billed, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_breaks_off_ends_with_an_error_event_and_is_billed() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("reset-app", "gamma", "open").await;
    let response = gw.stream_chat(&format!("{}/gamma", gw.base()), &key, "reset-a").await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&response.bytes().await.expect("the stream ends cleanly")).into_owned();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let error: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").expect(last)).unwrap();
    assert_eq!(error["error"]["code"], "stream_interrupted", "{text}");
    assert!(!text.contains("[DONE]"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let truth = gw.sim_usage(&app_id).await;
    assert_eq!(truth["reset_streams"], 1, "{truth}");
    let served = truth["completion_tokens"].as_u64().unwrap();
    assert!(served > 0 && served < 40, "{truth}");
    assert_eq!(gw.stored(&app_id, "completion_tokens").await, served);
}
