//! OpenTelemetry, as the GenAI semantic conventions name it: a real
//! `maas proxy` exports its GenAI histograms and request spans over
//! OTLP/HTTP to a receiver that parses every export strictly with the
//! opentelemetry-proto definitions (`otlp_receiver.py`); names, attributes
//! and counts are checked against what the simulator served.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use super::harness::{CATALOG, Gateway, free_port, require_python_openai};

const CLIENT_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The receiver's lines so far.
fn received(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn spans(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["signal"] == "traces")
        .flat_map(|l| l["body"]["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn attribute(span_or_point: &Value, key: &str) -> Option<Value> {
    let attributes = span_or_point["attributes"].as_array()?;
    let found = attributes.iter().find(|a| a["key"] == key)?;
    let value = &found["value"];
    Some(match (value.get("stringValue"), value.get("intValue")) {
        (Some(text), _) => text.clone(),
        (_, Some(number)) => Value::from(number.as_str()?.parse::<u64>().ok()?),
        _ => Value::Null,
    })
}

/// The last metrics export's data points of `name` for model chat-a.
fn points(lines: &[Value], name: &str) -> Vec<Value> {
    let Some(last) = lines.iter().rev().find(|l| l["signal"] == "metrics") else {
        return Vec::new();
    };
    last["body"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| m["name"] == name)
        .flat_map(|m| m["histogram"]["dataPoints"].as_array().cloned().unwrap_or_default())
        .filter(|p| attribute(p, "gen_ai.request.model") == Some(Value::from("chat-a")))
        .collect()
}

fn count(point: &Value) -> u64 {
    point["count"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_metrics_and_spans_reach_an_otlp_receiver() {
    require_python_openai();
    let found = std::process::Command::new("python3")
        .args(["-c", "import opentelemetry.proto"])
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs the opentelemetry-proto definitions: `python3 -m pip install opentelemetry-proto` \
         (.ci/run installs it)"
    );
    let mut gw = Gateway::start(CATALOG, 0, "strict").await;
    let out = gw.dir.path().join("otlp.jsonl");
    let port = free_port();
    let mut receiver = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proxy/otlp_receiver.py"))
        .arg(port.to_string())
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
        "receiver: {ready:?}"
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    gw.add_proxy_with_env(
        "strict",
        &[
            ("MAAS_OTLP_ENDPOINT", endpoint.as_str()),
            ("MAAS_TRACE_SAMPLE_RATIO", "1"),
            ("MAAS_OTLP_METRICS_INTERVAL_MS", "200"),
        ],
    );
    let (app, key) = gw.app_key("traced", "alpha", "open").await;
    let base = format!("{}/alpha", gw.base());

    // Three answers, two streams, one refusal; one request continues the
    // client's trace.
    for _ in 0..3 {
        assert_eq!(gw.chat(&base, &key, "chat-a").await.status(), 200);
    }
    for _ in 0..2 {
        let response = gw.stream_chat(&base, &key, "chat-a").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    let traced = gw
        .http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .header("traceparent", CLIENT_TRACE)
        .json(&serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let upstream_context = traced.headers()["x-sim-traceparent"].to_str().unwrap().to_owned();
    assert_eq!(traced.status(), 200);
    assert_eq!(
        &upstream_context[..36],
        &CLIENT_TRACE[..36],
        "the model server continues the client's trace"
    );
    assert_ne!(
        &upstream_context[36..52],
        &CLIENT_TRACE[36..52],
        "as a child of the gateway's span"
    );
    let refused = gw.chat(&base, "sk-maas-not-a-key", "chat-a").await;
    assert_eq!(refused.status(), 401);

    // Everything the simulator served, as the receiver got it.
    let served = gw.sim_usage(&app).await;
    let (prompt, completion) = (
        served["prompt_tokens"].as_u64().unwrap(),
        served["completion_tokens"].as_u64().unwrap(),
    );
    let mut got = Vec::new();
    for _ in 0..100 {
        got = received(&out);
        let usage = points(&got, "gen_ai.client.token.usage");
        if spans(&got).len() >= 7 && usage.iter().map(count).sum::<u64>() >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors: Vec<&Value> = got.iter().filter(|l| l.get("error").is_some()).collect();
    assert!(errors.is_empty(), "the receiver refused exports: {errors:?}");

    let all = spans(&got);
    assert_eq!(all.len(), 7, "a span per request: {all:?}");
    let answered: Vec<&Value> = all.iter().filter(|s| s["name"] == "chat chat-a").collect();
    assert_eq!(answered.len(), 6);
    for span in &answered {
        assert_eq!(span["kind"], "SPAN_KIND_SERVER");
        assert_eq!(attribute(span, "gen_ai.operation.name"), Some("chat".into()));
        assert_eq!(attribute(span, "gen_ai.provider.name"), Some("sim".into()));
        assert_eq!(attribute(span, "gen_ai.response.model"), Some("chat-a".into()));
        assert_eq!(attribute(span, "maas.plan"), Some("open".into()));
        assert_eq!(attribute(span, "maas.decision"), Some("admitted".into()));
        assert!(attribute(span, "maas.upstream.duration_ms").is_some());
    }
    let sum = |key: &str| {
        answered
            .iter()
            .map(|s| attribute(s, key).unwrap().as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        sum("gen_ai.usage.input_tokens"),
        prompt,
        "the simulator's prompt tokens"
    );
    assert_eq!(
        sum("gen_ai.usage.output_tokens"),
        completion,
        "and its completion tokens"
    );
    let child = all
        .iter()
        .find(|s| s["parentSpanId"] == CLIENT_TRACE[36..52])
        .expect("the span continuing the client's trace");
    assert_eq!(child["traceId"], CLIENT_TRACE[3..35]);
    assert_eq!(
        child["spanId"],
        upstream_context[36..52],
        "the parent the model server was given"
    );
    let refusal = all
        .iter()
        .find(|s| attribute(s, "http.response.status_code") == Some(401.into()));
    let refusal = refusal.expect("the refusal's span");
    assert_eq!(
        attribute(refusal, "maas.decision"),
        Some("invalid_key".into()),
        "{refusal}"
    );

    let usage = points(&got, "gen_ai.client.token.usage");
    let of_type = |kind: &str| {
        usage
            .iter()
            .find(|p| attribute(p, "gen_ai.token.type") == Some(kind.into()))
            .unwrap_or_else(|| panic!("{kind} tokens: {usage:?}"))
            .clone()
    };
    let (input, output) = (of_type("input"), of_type("output"));
    assert_eq!((count(&input), input["sum"].as_f64().unwrap() as u64), (6, prompt));
    assert_eq!(
        (count(&output), output["sum"].as_f64().unwrap() as u64),
        (6, completion)
    );
    assert_eq!(attribute(&input, "gen_ai.provider.name"), Some("sim".into()));
    let total = |name: &str| points(&got, name).iter().map(count).sum::<u64>();
    assert_eq!(total("gen_ai.server.request.duration"), 6);
    assert_eq!(total("gen_ai.server.time_to_first_token"), 2, "the streams");
    assert_eq!(total("gen_ai.server.time_per_output_token"), 2);

    // The same names on /metrics, beside the gateway's own.
    let metrics = gw.metrics(0).await;
    assert!(metrics.contains("gen_ai_client_token_usage_count{"), "{metrics}");
    assert!(metrics.contains("gen_ai_token_type=\"output\""));

    // Tracing off: the client's context reaches the model server as sent.
    gw.add_proxy("strict");
    let plain = gw
        .http
        .post(format!("{}/alpha/v1/chat/completions", gw.proxies[1].base))
        .bearer_auth(&key)
        .header("traceparent", CLIENT_TRACE)
        .json(&serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers()["x-sim-traceparent"], CLIENT_TRACE);
    receiver.kill().await.unwrap();
}
