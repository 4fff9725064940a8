//! What operators see: the token counters on /metrics equal what the
//! simulator served; the access log has one line per request.

use super::harness::{CATALOG, Gateway, metric_value};

/// Proxy `index`'s metrics once no request is in flight: Pingora logs a
/// request (and counts it out of flight) just after the client has its
/// answer.
async fn metrics_when_idle(gw: &Gateway, index: usize) -> String {
    let mut text = gw.metrics(index).await;
    for _ in 0..100 {
        if text.contains("maas_requests_in_flight 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = gw.metrics(index).await;
    }
    text
}

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
    // Another product's model and a made-up one: counted under the key's
    // product, with no model label of the client's choosing.
    for model in ["chat-b", "made-up-model"] {
        assert_eq!(gw.chat(gw.base(), &key, model).await.status(), 404);
    }

    let truth = gw.sim_usage(&app_id).await;
    let text = metrics_when_idle(&gw, 0).await;
    let prompt = metric_value(&text, "llm_prompt_tokens_count", "application_id", &app_id).expect(&text);
    let completion = metric_value(&text, "llm_completion_tokens_count", "application_id", &app_id).expect(&text);
    let total = metric_value(&text, "llm_total_token_count", "application_id", &app_id).expect(&text);
    assert_eq!(prompt, truth["prompt_tokens"].as_u64().unwrap(), "{truth}");
    assert_eq!(completion, truth["completion_tokens"].as_u64().unwrap(), "{truth}");
    assert_eq!(total, prompt + completion);
    let labels = format!(
        "llm_total_token_count{{application_id=\"{app_id}\",application_system_name=\"metered-app\",model=\"chat-a\",service_id=\"alpha\",service_system_name=\"alpha\"}} "
    );
    assert!(text.contains(&labels), "{labels}\n{text}");
    assert!(text.contains("model=\"embed-a\""), "{text}");
    for line in [
        "maas_requests_total{model=\"chat-a\",product=\"alpha\",status=\"200\"} 5",
        "maas_requests_total{model=\"embed-a\",product=\"alpha\",status=\"200\"} 1",
        "maas_requests_total{model=\"\",product=\"alpha\",status=\"404\"} 2",
        "maas_rejected_total{reason=\"not_subscribed\"} 1",
        "maas_rejected_total{reason=\"model_not_found\"} 1",
        // Present before anything failed, so dashboards show 0.
        "maas_upstream_errors_total{backend=\"sim\",kind=\"connect\"} 0",
        "maas_store_errors_total{operation=\"lookup_key\"} 0",
        "maas_estimated_tokens_total{product=\"alpha\"} 0",
        "maas_streams_in_flight 0",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(!text.contains("made-up-model"), "{text}");
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
    assert_eq!(log.len(), 9, "one line per request");
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

/// A model server that answers every request with the same small chat
/// completion and records each request's head and body.
fn start_recording_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Some((head, body)) = crate::support::read_request(&mut reader) else {
                continue;
            };
            recorded
                .lock()
                .unwrap()
                .push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
            let reply = r#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0,"total_tokens":3}}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: upstream-own-id\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (port, seen)
}

/// Every answer carries `x-request-id`, the client's when it sent a
/// plausible one, else one made here; the model server gets the same id,
/// and so does the access log. A body of the wrong shape is refused in
/// OpenAI's words; `max_tokens: 0` is bounded, not a quota error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_follow_a_request_and_body_errors_say_what_is_wrong() {
    let (port, seen) = start_recording_server();
    let catalog = format!(
        r#"
backends:
  - system_name: recording
    urls: ["http://127.0.0.1:{port}"]
products:
  - {{system_name: recording, models: [chat-r], backend: recording}}
plans:
  - product: recording
    system_name: budget
    limits: [{{metric: total_tokens, period: day, value: 1000}}]
"#
    );
    let gw = Gateway::start(&catalog, 1, "strict").await;
    let (_, key) = gw.app_key("trace-app", "recording", "budget").await;
    let chat = |body: serde_json::Value, id: Option<&str>| {
        let mut request = gw
            .http
            .post(format!("{}/v1/chat/completions", gw.base()))
            .bearer_auth(&key)
            .json(&body);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let hello = serde_json::json!({"model": "chat-r", "messages": [{"role": "user", "content": "hi"}]});
    let id_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let kept = chat(hello.clone(), Some("client-trace-1")).await.unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(
        id_of(&kept).as_deref(),
        Some("client-trace-1"),
        "the client's id, not the upstream's"
    );
    let made = chat(hello.clone(), Some("bad id\twith tab")).await.unwrap();
    let made_id = id_of(&made).unwrap();
    assert!(made_id.starts_with("req_") && made_id.len() == 28, "{made_id}");
    {
        let seen = seen.lock().unwrap();
        assert!(seen[0].contains("x-request-id: client-trace-1\r\n"), "{}", seen[0]);
        assert!(seen[1].contains(&format!("x-request-id: {made_id}\r\n")), "{}", seen[1]);
    }

    // Refused by the gateway itself: an id all the same.
    let refused = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base()))
        .bearer_auth("sk-maas-not-a-key")
        .json(&hello)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(id_of(&refused).is_some_and(|id| id.starts_with("req_")));

    // `max_tokens: 0` is what vLLM reads as no limit: it is bounded like
    // an absent one, at what the budget has left, not refused.
    let mut nothing = hello.clone();
    nothing["max_tokens"] = 0.into();
    let response = chat(nothing, None).await.unwrap();
    assert_eq!(response.status(), 200, "not a quota error");
    let forwarded = seen.lock().unwrap().last().cloned().unwrap();
    let forwarded: serde_json::Value = serde_json::from_str(forwarded.rsplit('\n').next().unwrap()).unwrap();
    let bound = forwarded["max_tokens"].as_u64();
    assert!(bound.is_some_and(|b| (1..=1000).contains(&b)), "{forwarded}");

    // Valid JSON of the wrong shape: which member, in OpenAI's words.
    for (body, status, code, param, message) in [
        (
            serde_json::json!({"model": "chat-r", "messages": [], "max_tokens": "5"}),
            400,
            "invalid_type",
            Some("max_tokens"),
            "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
        ),
        (
            serde_json::json!([1, 2]),
            400,
            "invalid_type",
            None,
            "Invalid type for the request body: expected an object, but got an array instead.",
        ),
        (
            serde_json::json!({"model": "chat-r", "messages": [], "n": -2}),
            400,
            "integer_below_min_value",
            Some("n"),
            "Invalid 'n': integer below minimum value. Expected a value >= 0, but got -2 instead.",
        ),
    ] {
        let response = chat(body.clone(), None).await.unwrap();
        let (got_status, error) = super::harness::error_of(response).await;
        assert_eq!(
            (
                got_status,
                error["code"].as_str(),
                error["param"].as_str(),
                error["message"].as_str()
            ),
            (status, Some(code), param, Some(message)),
            "{body}"
        );
    }
    // A whole decimal is a number as vLLM reads it.
    let mut decimal = hello.clone();
    decimal["n"] = serde_json::json!(1.0);
    decimal["stream"] = serde_json::Value::Null;
    assert_eq!(chat(decimal, None).await.unwrap().status(), 200);

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = gw.access_log(0);
    assert_eq!(log[0]["request_id"], "client-trace-1");
    assert_eq!(log[1]["request_id"], made_id.as_str());
    assert!(log.iter().all(|line| line["request_id"].is_string()), "{log:?}");
}

/// The sum of a histogram's series for `product` (seconds).
fn histogram_sum(text: &str, name: &str, product: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}_sum{{")) && line.contains(&format!("product=\"{product}\"")))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The gateway's own time is told apart from the model server's: a paced
/// stream lasting over a second costs the gateway milliseconds, in the
/// `x-maas-overhead-us` header (when enabled) and in
/// `maas_gateway_overhead_seconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reports_its_own_time_apart_from_the_models() {
    let mut gw = Gateway::start(CATALOG, 1, "strict").await;
    gw.add_proxy_with_env("strict", &[("MAAS_OVERHEAD_HEADER", "true")]);
    let (_, key) = gw.app_key("timed", "exact", "open").await;
    let with_header = gw.proxies[1].base.clone();

    let started = std::time::Instant::now();
    let response = gw.stream_chat(&with_header, &key, "paced-x").await;
    assert_eq!(response.status(), 200);
    let overhead_us: u64 = response.headers()["x-maas-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .expect("a number of microseconds");
    let text = response.text().await.unwrap();
    let elapsed = started.elapsed();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(elapsed.as_millis() >= 1_000, "the model paced the stream: {elapsed:?}");
    assert!(
        overhead_us > 0 && overhead_us < 250_000,
        "the gateway's time before the headers: {overhead_us} µs"
    );
    let plain = gw.chat(&with_header, &key, "paced-x").await;
    assert!(plain.headers().contains_key("x-maas-overhead-us"));
    // Off by default; never on answers the gateway gives itself.
    assert!(
        !gw.chat(gw.base(), &key, "paced-x")
            .await
            .headers()
            .contains_key("x-maas-overhead-us")
    );
    let refused = gw.chat(&with_header, "sk-maas-not-a-key", "paced-x").await;
    assert_eq!(refused.status(), 401);
    assert!(!refused.headers().contains_key("x-maas-overhead-us"));

    let metrics = metrics_when_idle(&gw, 1).await;
    let total = histogram_sum(&metrics, "maas_request_duration_seconds", "exact");
    let own = histogram_sum(&metrics, "maas_gateway_overhead_seconds", "exact");
    assert!(total > 1.0, "two paced answers took over a second: {total}");
    assert!(
        own > 0.0 && own < total / 4.0,
        "the gateway's own time {own} s of {total} s"
    );
    eprintln!("overhead: header {overhead_us} µs on a {elapsed:?} stream; {own:.6} s of {total:.3} s in all");
}
