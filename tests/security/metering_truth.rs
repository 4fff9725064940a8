//! Class 6: tokens served but never billed. A 2xx that reached the model
//! server never settles at zero: answers of any size are metered, a
//! stream cut before its usage bills its prompt and every delta it
//! carried, an answer whose usage cannot be read bills the request's
//! ceiling, and a limit of 0 cannot be read as "no limit".

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fixtures::{ANSWER_HEADER, await_stored, gateway};
use super::raw_http::send;
use crate::support::metric_value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_any_size_are_metered_exactly() {
    let (gw, _capture) = gateway(1).await;
    let (app, key) = gw.app_key("large-app", "metered", "million").await;
    // 65,536 floats an input, about 1.2 MiB of JSON each.
    let mut served_before = 0;
    for inputs in [15, 30, 50] {
        let input: Vec<String> = (0..inputs).map(|i| format!("input number {i} of many")).collect();
        let response = gw
            .http
            .post(format!("{}/metered/v1/embeddings", gw.base()))
            .bearer_auth(&key)
            .json(&serde_json::json!({"model": "embed-a", "input": input, "dimensions": 65536}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        let mib = body.len() as f64 / (1024.0 * 1024.0);
        assert!((17.0..=64.0).contains(&mib), "{inputs} inputs: {mib:.1} MiB");
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let reported = answer["usage"]["total_tokens"].as_u64().unwrap();
        assert!(reported > 0);
        let served = gw.sim_usage(&app).await["prompt_tokens"].as_u64().unwrap();
        assert_eq!(served - served_before, reported, "the simulator's own count");
        served_before = served;
        let stored = await_stored(&gw, &app, "total_tokens", |t| t >= served).await;
        assert_eq!(stored, served, "a {mib:.1} MiB answer is billed what it reported");
    }
    let metrics = gw.metrics(0).await;
    assert_eq!(
        metric_value(&metrics, "maas_unmetered_answers_total", "product", "metered"),
        Some(0),
        "every usage was read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_whose_usage_cannot_be_read_bill_the_ceiling() {
    let (gw, _capture) = gateway(1).await;
    let (app, key) = gw.app_key("ceiling-app", "tinyllama", "thousand").await;
    let body =
        serde_json::json!({"model": "chat-a", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    // The prompt's bound ("user" and "hi": 6 bytes, a message at 8, the
    // template's 64) and every token max_tokens allows.
    let ceiling = 6 + 8 + 64 + 100;
    let mut billed = 0;
    for mode in ["no-usage", "text", "no-usage"] {
        let response = gw
            .http
            .post(format!("{}/tinyllama/v1/chat/completions", gw.base()))
            .bearer_auth(&key)
            .header(ANSWER_HEADER, mode)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{mode}");
        billed += ceiling;
        let stored = await_stored(&gw, &app, "total_tokens", |t| t >= billed).await;
        assert_eq!(stored, billed, "{mode}: the ceiling, prompt and max_tokens");
    }
    let metrics = gw.metrics(0).await;
    assert_eq!(
        metric_value(&metrics, "maas_unmetered_answers_total", "product", "tinyllama"),
        Some(3)
    );
    // The budget moves: the same answer cannot repeat forever.
    let mut refused = false;
    for _ in 0..20 {
        let response = gw
            .http
            .post(format!("{}/tinyllama/v1/chat/completions", gw.base()))
            .bearer_auth(&key)
            .header(ANSWER_HEADER, "no-usage")
            .json(&body)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a 1,000-token budget ran out");
    assert!(gw.stored(&app, "total_tokens").await <= 1000);
}

/// Sends `body` to `path` over a raw connection with `headers` and hangs
/// up once `events` events arrived; the events read.
pub(super) async fn cut_after(base: &str, key: &str, path: &str, headers: &str, body: &str, events: usize) -> String {
    let address = base.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n{headers}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, seen)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200"), "{text}");
            if seen.matches("\n\n").count() >= events {
                return seen.to_owned();
            }
        }
        let read = tokio::time::timeout_at(deadline.into(), connection.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{events} events within 10 s: {text}"))
            .unwrap();
        assert!(read > 0, "the stream ended before the client hung up: {text}");
        received.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cut_after_their_first_event_bill_the_prompt_and_every_delta() {
    let (gw, _capture) = gateway(1).await;
    let base = gw.base().to_owned();
    let long_prompt = "word ".repeat(2000);
    let tools = serde_json::json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    // The simulator's streams, cut after the first event, and after the
    // first generated delta of a tool call.
    let simulated = [
        (
            "/metered/v1/responses",
            serde_json::json!({"model": "stream-a", "input": long_prompt, "stream": true}),
            1,
            false,
        ),
        (
            "/metered/v1/chat/completions",
            serde_json::json!({"model": "stream-a", "messages": [{"role": "user", "content": long_prompt}], "stream": true}),
            1,
            false,
        ),
        (
            "/metered/v1/chat/completions",
            serde_json::json!({"model": "stream-a", "messages": [{"role": "user", "content": long_prompt}], "stream": true, "tools": tools, "tool_choice": "required"}),
            2,
            true,
        ),
        // Four opening events, then the first text delta.
        (
            "/metered/v1/responses",
            serde_json::json!({"model": "stream-a", "input": long_prompt, "stream": true}),
            5,
            true,
        ),
    ];
    for (n, (path, body, events, generated)) in simulated.into_iter().enumerate() {
        let (app, key) = gw.app_key(&format!("cut-sim-{n}"), "metered", "million").await;
        let seen = cut_after(&base, &key, path, "", &body.to_string(), events).await;
        let served = gw.sim_usage(&app).await;
        let prompt = served["prompt_tokens"].as_u64().unwrap();
        assert!(prompt >= 2000, "{served}");
        let stored = await_stored(&gw, &app, "prompt_tokens", |t| t >= prompt).await;
        assert!(
            stored >= prompt,
            "{path} cut after {events} events: billed {stored} of a {prompt}-token prompt: {seen}"
        );
        if generated {
            assert!(gw.stored(&app, "completion_tokens").await >= 1, "{path}: {seen}");
        }
    }
    // Every kind of generated delta a model server streams, cut right after it.
    let role = serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]});
    let deltas = [
        serde_json::json!({"choices": [{"index": 0, "delta": {"reasoning_content": "Let me think"}}]}),
        serde_json::json!({"choices": [{"index": 0, "delta": {"reasoning": "Let me think"}}]}),
        serde_json::json!({"choices": [{"index": 0, "delta": {"refusal": "I can't"}}]}),
        serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": \"a long query string\"}"}}]}}]}),
        serde_json::json!({"type": "response.reasoning_summary_text.delta", "delta": "Thinking"}),
        serde_json::json!({"type": "response.function_call_arguments.delta", "delta": "{\"q\""}),
        serde_json::json!({"type": "response.refusal.delta", "delta": "No"}),
    ];
    let body =
        serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": long_prompt}], "stream": true});
    let body = body.to_string();
    for (n, delta) in deltas.iter().enumerate() {
        let (app, key) = gw.app_key(&format!("cut-kind-{n}"), "tinyllama", "open").await;
        let events = serde_json::json!([role, delta]).to_string();
        let header = format!("{ANSWER_HEADER}: stream:{events}\r\n");
        cut_after(&base, &key, "/tinyllama/v1/chat/completions", &header, &body, 2).await;
        let prompt = await_stored(&gw, &app, "prompt_tokens", |t| t > 0).await;
        assert!(prompt >= 2000, "{delta}: billed a {prompt}-token prompt");
        let completion = gw.stored(&app, "completion_tokens").await;
        assert!(completion >= 1, "{delta}: billed {completion} completion tokens");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_zero_is_never_read_as_no_limit() {
    let (gw, _capture) = gateway(1).await;
    // stream-a writes 100–200 tokens when nothing stops it; the plan caps at 50.
    let chat =
        |bounds: &str| format!(r#"{{"model":"stream-a","messages":[{{"role":"user","content":"hi"}}],{bounds}}}"#);
    let cases = [
        ("/metered/v1/chat/completions", chat(r#""max_completion_tokens":0"#), 50),
        ("/metered/v1/chat/completions", chat(r#""max_tokens":0"#), 50),
        (
            "/metered/v1/chat/completions",
            chat(r#""max_completion_tokens":0,"max_tokens":0"#),
            50,
        ),
        (
            "/metered/v1/chat/completions",
            chat(r#""max_completion_tokens":0.0,"max_tokens":null"#),
            50,
        ),
        (
            "/metered/v1/chat/completions",
            chat(r#""max_completion_tokens":0,"max_tokens":30"#),
            30,
        ),
        (
            "/metered/v1/chat/completions",
            chat(r#""max_completion_tokens":0,"stream":true"#),
            50,
        ),
        (
            "/metered/v1/responses",
            r#"{"model":"stream-a","input":"hi","max_output_tokens":0}"#.to_owned(),
            50,
        ),
        (
            "/metered/v1/completions",
            r#"{"model":"stream-a","prompt":"hi","max_tokens":0}"#.to_owned(),
            1,
        ),
    ];
    for (n, (path, body, most)) in cases.into_iter().enumerate() {
        let (app, key) = gw.app_key(&format!("zero-{n}"), "metered", "capped").await;
        let response = gw
            .http
            .post(format!("{}{path}", gw.base()))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{body}");
        response.bytes().await.unwrap();
        let served = gw.sim_usage(&app).await["completion_tokens"].as_u64().unwrap();
        assert!(
            served <= most,
            "{body}: the model server generated {served}, at most {most}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_answered() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("pipeline-app", "tinyllama", "open").await;
    let address = gw.base().trim_start_matches("http://").to_owned();
    let post = |body: &str, close: bool| {
        format!(
            "POST /tinyllama/v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    let get = |close: bool| {
        format!(
            "GET /tinyllama/v1/models HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    let first = r#"{"model":"chat-a","max_tokens":7,"messages":[]}"#;
    let second = r#"{"model":"chat-a","max_tokens":8,"messages":[]}"#;
    let refused = format!(
        "POST /tinyllama/v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer sk-not-a-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        first.len()
    );
    let runs = [
        vec![post(first, false), post(second, true)],
        vec![post(first, false), get(false), post(second, true)],
        vec![get(false), get(false), get(true)],
        // Refused before its body was read: answered, and the connection
        // closed (the unread body is never taken for a request).
        vec![refused, get(false), get(true)],
    ];
    for requests in runs {
        let refused = requests.iter().any(|r| r.contains("sk-not-a-key"));
        let before = capture.count();
        let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
        connection.write_all(requests.concat().as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut answer))
            .await
            .expect("every answer within 10 s, then the close")
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        if refused {
            assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
            assert!(
                text.starts_with("HTTP/1.1 401") && text.contains("Connection: close"),
                "{text}"
            );
            continue;
        }
        assert_eq!(text.matches("HTTP/1.1 200").count(), requests.len(), "{text}");
        let posts = requests.iter().filter(|r| r.starts_with("POST")).count();
        assert_eq!(capture.count() - before, posts, "each body went upstream once");
        if posts == 2 {
            // In order, each with its own body.
            let (one, two) = (
                text.find("\"completion_tokens\":7"),
                text.find("\"completion_tokens\":8"),
            );
            assert!(one.is_some() && two.is_some() && one < two, "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_numbers_written_as_decimals_are_read_as_integers() {
    let (gw, _capture) = gateway(1).await;
    let (app, key) = gw.app_key("decimals-app", "metered", "million").await;
    for bounds in [
        r#""n":1.0,"max_tokens":16.0"#,
        r#""max_tokens":1e1"#,
        r#""max_completion_tokens":2E1,"n":1"#,
        r#""max_tokens":16.000"#,
    ] {
        let body = format!(r#"{{"model":"stream-a","messages":[{{"role":"user","content":"hi"}}],{bounds}}}"#);
        let response = gw
            .http
            .post(format!("{}/metered/v1/chat/completions", gw.base()))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{body}: {answer}");
        assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() <= 20, "{answer}");
    }
    assert!(await_stored(&gw, &app, "total_tokens", |t| t > 0).await > 0, "billed");
    let base = gw.base().to_owned();
    for (bounds, param) in [
        (r#""n":1.5"#, "n"),
        (r#""max_tokens":-2.0"#, "max_tokens"),
        (r#""max_tokens":1e30"#, "max_tokens"),
        (r#""temperature":1,"temperature":2"#, "temperature"),
        (r#""messages":[],"messages":[]"#, "messages"),
    ] {
        let body = format!(r#"{{"model":"stream-a","messages":[],{bounds}}}"#);
        let answer = send(
            &base,
            &super::raw_http::post(
                "/metered/v1/chat/completions",
                &key,
                &["Content-Type: application/json"],
                body.as_bytes(),
            ),
        )
        .await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.error()["param"], param, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_clamping_a_request_that_does_not_fit_is_refused_not_forwarded() {
    let (gw, capture) = gateway(2).await;
    let (app, key) = gw.app_key("unclamped-app", "tinyllama", "unclamped").await;
    let ask = |max_tokens: Option<u64>| {
        let mut body = serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "hi"}]});
        if let Some(max_tokens) = max_tokens {
            body["max_tokens"] = max_tokens.into();
        }
        body
    };
    // 50 at once over both proxies, each asking for 300: three fit.
    let requests = (0..50).map(|i| {
        let (http, base, key, body) = (
            gw.http.clone(),
            gw.proxies[i % 2].base.clone(),
            key.clone(),
            ask(Some(300)),
        );
        tokio::spawn(async move {
            let response = http
                .post(format!("{base}/tinyllama/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        })
    });
    let mut statuses = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        statuses.push(request.await.unwrap());
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!((1..=3).contains(&admitted), "{admitted} of 50 admitted: {statuses:?}");
    assert_eq!(
        capture.count(),
        admitted,
        "refused requests never reached the model server"
    );
    assert_eq!(capture.last().json()["max_tokens"], 300, "forwarded as asked");
    let stored = await_stored(&gw, &app, "total_tokens", |t| t >= 305 * admitted as u64).await;
    assert!(stored <= 1000, "spent {stored} of 1,000");
    // No bound asked: the default bound (4,096) does not fit either.
    let before = capture.count();
    let response = gw
        .http
        .post(format!("{}/tinyllama/v1/chat/completions", gw.base()))
        .bearer_auth(&key)
        .json(&ask(None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    assert_eq!(capture.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_the_gateway_cannot_meter_fail_closed() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("broad-app", "broad", "capped").await;
    let base = gw.base().to_owned();
    let json = ["Content-Type: application/json"];
    let post = |path: &str, headers: &[&str], body: &str| super::raw_http::post(path, &key, headers, body.as_bytes());
    // vLLM's /invocations: a chat, completions or embeddings request, metered as one.
    for body in [
        r#"{"model":"chat-w","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}"#,
        r#"{"model":"chat-w","prompt":"hi","max_tokens":5000}"#,
        r#"{"model":"chat-w","messages":[],"max_completion_tokens":0}"#,
    ] {
        let answer = send(&base, &post("/broad/invocations", &[], body)).await;
        assert_eq!(answer.status, 200, "{body}");
        let seen = capture.last().json();
        let bound = seen["max_tokens"].as_u64().or(seen["max_completion_tokens"].as_u64());
        assert!(bound.is_some_and(|b| (1..=50).contains(&b)), "{body} went as {seen}");
    }
    let answer = send(&base, &post("/broad/invocations", &json, r#"{"inputs":"hi"}"#)).await;
    assert_eq!(
        (answer.status, answer.error()["param"].as_str()),
        (400, Some("messages"))
    );
    // Generating endpoints the gateway cannot meter, and any other POST.
    let before = capture.count();
    let generate = r#"{"inputs":"hi","parameters":{"max_new_tokens":5000},"text":"hi","prompt":"hi"}"#;
    for path in [
        "/broad/generate",
        "/broad/generate_stream",
        "/broad/inference/v1/generate",
        "/broad/api/generate",
        "/broad/api/chat",
        "/broad/v2/models/chat-w/infer",
        "/broad/v2/models/chat-w/generate",
        "/broad/",
        "/broad/v1/rerank",
        "/broad/v1/messages",
        "/broad/tokenize/x",
    ] {
        for headers in [&json[..], &[], &["Content-Type: text/plain"]] {
            let answer = send(&base, &post(path, headers, generate)).await;
            let error = answer.error();
            assert_eq!(
                (answer.status, error["code"].as_str()),
                (404, Some("unknown_url")),
                "{path}: {error}"
            );
        }
    }
    assert_eq!(capture.count(), before, "none reached the model server");
    // The rule that says so lets a path through unmetered, its body checked if JSON.
    let answer = send(
        &base,
        &post("/broad/tokenize", &json, r#"{"model":"chat-w","prompt":"hi"}"#),
    )
    .await;
    assert_eq!(answer.status, 200);
    let answer = send(
        &base,
        &post("/broad/tokenize", &["Content-Type: text/plain"], "just words"),
    )
    .await;
    assert_eq!(answer.status, 200, "not JSON: the server's business");
    assert_eq!(capture.count(), before + 2);
    for (body, status) in [
        (r#"{"model":"chat-w","model":"chat-b","prompt":"hi"}"#, 400),
        (r#" {"model":"chat-w","prompt":NaN}"#, 400),
        (r#"[{"model":"chat-w"}]"#, 400),
        (r#"{"model":"chat-b","prompt":"hi"}"#, 404),
    ] {
        let answer = send(&base, &post("/broad/tokenize", &["Content-Type: text/plain"], body)).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.error());
    }
    assert_eq!(capture.count(), before + 2, "refused bodies never went upstream");
    // Reading without a body stays open.
    let get =
        format!("GET /broad/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    assert_eq!(send(&base, get.as_bytes()).await.status, 200);
}
