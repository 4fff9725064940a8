//! The official `openai` Python SDK through the proxy.

use super::harness::{CATALOG, Gateway, leave_room_in_this_minute, require_python_openai, run_json_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    require_python_openai();
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, key) = gw.app_key("sdk-app", "alpha", "open").await;
    let (_, limited) = gw.app_key("sdk-limited-app", "alpha", "ten-per-minute").await;
    leave_room_in_this_minute(std::time::Duration::from_secs(15)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/openai_sdk.py");
    let report = run_json_script("python3", &[script, gw.base(), &key, &limited]).await;
    assert!(report["chat_tokens"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["embedding_dimensions"], 16);
    // "Hello through the gateway": 4 words + 3 + 3; "Hello": 1 + 3 + 3.
    assert_eq!(report["responses_tokens"], (10 + 5) + (7 + 4), "{report}");
    assert_eq!(report["rate_limited_after"], 10, "{report}");
    assert_eq!(report["rate_limit_code"], "rate_limit_exceeded");
    assert_eq!(report["bad_key_status"], 401);
    assert_eq!(report["retrieved_model"], "chat-a");
    let not_found = serde_json::json!(["model_not_found", "model_not_found"]);
    assert_eq!(report["retrieve_not_found"], not_found, "{report}");
    assert_eq!(report["chat_not_found"], not_found, "{report}");
    assert_eq!(
        report["wrong_method"],
        serde_json::json!([405, "method_not_allowed", "POST"]),
        "{report}"
    );
}
