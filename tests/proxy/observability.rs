//! What operators see: the token counters on /metrics equal what the
//! simulator served; the access log has one line per request.

use super::harness::{CATALOG, Gateway, metric_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_tokens_the_model_served() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("metered-app", "alpha", "open").await;
    for i in 0..5 {
        let response = gw.chat(gw.base(), &key, "chat-a").await;
        assert_eq!(response.status(), 200, "chat {i}");
    }
    let embeddings = gw
        .http
        .post(format!("{}/v1/embeddings", gw.base()))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "embed-a", "input": ["one two three", "four five"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(embeddings.status(), 200);
    let refused = gw.chat(gw.base(), "sk-maas-not-a-key", "chat-a").await;
    assert_eq!(refused.status(), 401);

    let truth = gw.sim_usage(&app_id).await;
    // Pingora logs a request (and counts it out of flight) just after the
    // client has its answer; wait for the last one.
    let mut text = gw.metrics(0).await;
    for _ in 0..100 {
        if text.contains("maas_requests_in_flight 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = gw.metrics(0).await;
    }
    let prompt = metric_value(&text, "llm_prompt_tokens_count", "application_id", &app_id).expect(&text);
    let completion = metric_value(&text, "llm_completion_tokens_count", "application_id", &app_id).expect(&text);
    let total = metric_value(&text, "llm_total_token_count", "application_id", &app_id).expect(&text);
    assert_eq!(prompt, truth["prompt_tokens"].as_u64().unwrap(), "{truth}");
    assert_eq!(completion, truth["completion_tokens"].as_u64().unwrap(), "{truth}");
    assert_eq!(total, prompt + completion);
    let labels = format!(
        "llm_total_token_count{{application_id=\"{app_id}\",application_system_name=\"metered-app\",service_id=\"alpha\",service_system_name=\"alpha\"}} {total}"
    );
    assert!(text.contains(&labels), "{labels}\n{text}");
    assert!(
        text.contains("maas_requests_total{product=\"alpha\",status=\"200\"} 6"),
        "{text}"
    );
    assert!(text.contains("maas_rejected_total{reason=\"invalid_key\"} 1"), "{text}");
    assert!(text.contains("maas_request_duration_seconds_bucket"), "{text}");
    assert!(
        text.contains("maas_upstream_duration_seconds_count{product=\"alpha\"} 6"),
        "{text}"
    );
    assert!(text.contains("maas_requests_in_flight 0"), "{text}");

    // The store got the same tokens, in batches.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gw.stored(&app_id, "total_tokens").await, total);

    let log = gw.access_log(0);
    assert_eq!(log.len(), 7, "one line per request");
    let chat = &log[0];
    assert_eq!(chat["status"], 200);
    assert_eq!(chat["application_id"], app_id.as_str());
    assert_eq!(chat["model"], "chat-a");
    assert_eq!(chat["product"], "alpha");
    assert!(chat["total_tokens"].as_u64().unwrap() > 0);
    assert!(chat["key"].as_str().unwrap().starts_with("sk-maas-"));
    assert!(!chat["key"].as_str().unwrap().contains(&key[12..]), "only a masked key");
    assert_eq!(log[6]["status"], 401);
    assert_eq!(log[6]["rejected"], "invalid_key");
}
