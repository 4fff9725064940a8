//! The official `openai` Python SDK through the proxy.

use super::harness::{CATALOG, Gateway, leave_room_in_this_minute};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    match std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
    {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "this test needs Python 3 with the `openai` package: `python3 -m pip install openai` (.ci/run installs it)"
        ),
    }
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, key) = gw.app_key("sdk-app", "alpha", "open").await;
    let (_, limited) = gw.app_key("sdk-limited-app", "alpha", "ten-per-minute").await;
    leave_room_in_this_minute(std::time::Duration::from_secs(15)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/openai_sdk.py");
    let output = tokio::process::Command::new("python3")
        .args([script, gw.base(), &key, &limited])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["chat_tokens"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["embedding_dimensions"], 16);
    assert_eq!(report["rate_limited_after"], 10, "{report}");
    assert_eq!(report["rate_limit_code"], "rate_limit_exceeded");
    assert_eq!(report["bad_key_status"], 401);
}
