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

/// LangChain's `ChatOpenAI` through the gateway: `bind_tools` (whole,
/// streamed, answered after the tool's result) and `with_structured_output`
/// by JSON schema and by function calling, every token metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_tools_and_structured_output_work_through_the_gateway() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import langchain_openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs LangChain's OpenAI package: `python3 -m pip install langchain-openai` (.ci/run installs it)"
    );
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("langchain-app", "alpha", "open").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/langchain_tools.py");
    let report = run_json_script("python3", &[script, gw.base(), &key, "chat-a"]).await;
    assert_eq!(report["tool_call"], "get_weather", "{report}");
    assert_eq!(report["streamed_tool_call"], "get_weather", "{report}");
    assert_eq!(report["answered_after_tool"], true);
    assert_eq!(
        report["structured"],
        serde_json::json!(["json_schema", "function_calling"])
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    gw.assert_stored_as_served(&app_id).await;
}

/// The official npm SDK inside headless Chromium, on another origin than
/// the gateway: its requests pass CORS with their `x-stainless-*` headers,
/// it reads `x-request-id`, `x-ratelimit-*` and `retry-after`, and it does
/// not retry a 429 that says `x-should-retry: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_npm_sdk_runs_in_a_browser_against_the_gateway() {
    let dir = super::harness::require_browser(&["openai", "playwright-core"]);
    // Product beta with the default CORS policy (any origin), and a plan
    // of one request a day.
    let catalog = CATALOG
        .replacen(
            "    models: [chat-b]\n    backend: sim\n",
            "    models: [chat-b]\n    backend: sim\n    cors: {}\n",
            1,
        )
        .replacen(
            "  - {product: beta, system_name: open}\n",
            "  - {product: beta, system_name: open}\n  - product: beta\n    system_name: daily\n    \
             limits: [{metric: hits, period: day, value: 1}]\n",
            1,
        );
    assert!(catalog.contains("cors: {}") && catalog.contains("system_name: daily"));
    let gw = Gateway::start(&catalog, 1, "strict").await;
    let (_, key) = gw.app_key("browser-app", "beta", "open").await;
    let (_, daily) = gw.app_key("browser-daily-app", "beta", "daily").await;
    let script = format!("{dir}/openai_browser.mjs");
    let report = run_json_script("node", &[&script, gw.base(), &key, &daily, "chat-b"]).await;
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(report["content"].as_str().is_some_and(|c| !c.is_empty()), "{report}");
    assert!(report["usage"].as_u64() > Some(0), "{report}");
    assert!(!report["streamed"].as_str().unwrap().is_empty(), "{report}");
    assert_eq!(report["models"], serde_json::json!(["chat-b"]));
    assert_eq!(report["retrieved"], "chat-b");
    let request_id = report["request_id"].as_str().unwrap_or_default();
    assert!(request_id.starts_with("req_"), "the SDK reads x-request-id: {report}");
    let refused = &report["refused"];
    assert_eq!(refused["rate_limit_error"], true, "{report}");
    assert_eq!(refused["status"], 429);
    assert!(refused["retry_after"].as_u64() > Some(60), "{report}");
    assert_eq!(refused["should_retry"], "false");
    assert_eq!(refused["remaining"], "0");
    assert!(
        refused["request_id"].as_str().is_some_and(|id| id.starts_with("req_")),
        "{report}"
    );
    // A chat, a stream, 2 model calls, then the daily key's 2: no retry.
    assert_eq!(report["requests"], 6, "{report}");
}
