//! Class 1: body checks that depended on `Content-Type`. A JSON body the
//! model server reads (vLLM parses it whatever the header says) must be
//! inspected whatever the header says: the model check, the plan's cap,
//! the usage injection, and a body that is not JSON is refused, never
//! forwarded.

use super::fixtures::{CONTENT_TYPES, gateway};
use super::raw_http::{post, post_typed, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_body_is_checked_whatever_its_content_type() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("ct-app", "tinyllama", "capped").await;
    let base = gw.base().to_owned();
    for content_type in CONTENT_TYPES {
        let label = content_type.unwrap_or("no content type");

        // Another product's model is refused before the upstream.
        let before = capture.count();
        let body = br#"{"model":"chat-b","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}"#;
        let answer = send(
            &base,
            &post_typed("/tinyllama/v1/chat/completions", &key, content_type, body),
        )
        .await;
        assert_eq!(
            (answer.status, answer.error()["code"].as_str()),
            (404, Some("model_not_found")),
            "{label}"
        );
        assert_eq!(capture.count(), before, "{label}: not forwarded");

        // The plan's cap holds, and the upstream is told it is JSON.
        let answer = send(
            &base,
            &post_typed(
                "/tinyllama/v1/chat/completions",
                &key,
                content_type,
                &body[..].replace_model(),
            ),
        )
        .await;
        assert_eq!(
            answer.status,
            200,
            "{label}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        let seen = capture.last();
        assert_eq!(seen.json()["max_tokens"], 50, "{label}: capped");
        assert_eq!(seen.header("content-type"), Some("application/json"), "{label}");

        // Streams ask for usage, so they are metered.
        let stream = br#"{"model":"chat-a","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let answer = send(
            &base,
            &post_typed("/tinyllama/v1/chat/completions", &key, content_type, stream),
        )
        .await;
        assert_eq!(answer.status, 200, "{label}");
        assert_eq!(
            capture.last().json()["stream_options"]["include_usage"],
            true,
            "{label}"
        );

        // What is not a JSON object is a 400 and goes nowhere.
        let before = capture.count();
        for bad in [
            &b"model=chat-b&max_tokens=200"[..],
            b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nchat-b\r\n--x--",
            b"[1]",
        ] {
            let answer = send(
                &base,
                &post_typed("/tinyllama/v1/chat/completions", &key, content_type, bad),
            )
            .await;
            assert_eq!(answer.status, 400, "{label}: {:?}", String::from_utf8_lossy(bad));
            assert_eq!(answer.error()["type"], "invalid_request_error");
        }
        assert_eq!(capture.count(), before, "{label}: nothing forwarded");
    }
}

trait ReplaceModel {
    fn replace_model(&self) -> Vec<u8>;
}

impl ReplaceModel for [u8] {
    fn replace_model(&self) -> Vec<u8> {
        String::from_utf8_lossy(self).replace("chat-b", "chat-a").into_bytes()
    }
}

/// The values a lenient model server reads as a number, and members given
/// twice, are refused; every field that bounds generation is capped; a
/// body without a model names the product's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_bounds_cannot_be_spelled_past_the_cap() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("bounds-app", "tinyllama", "capped").await;
    let base = gw.base().to_owned();
    let json = ["Content-Type: application/json"];
    for (body, param) in [
        (
            &br#"{"model":"chat-a","max_tokens":"200","messages":[]}"#[..],
            Some("max_tokens"),
        ),
        (
            br#"{"model":"chat-a","max_tokens":200.5,"messages":[]}"#,
            Some("max_tokens"),
        ),
        (br#"{"model":"chat-a","n":1e300,"messages":[]}"#, Some("n")),
        (
            br#"{"model":"chat-a","max_completion_tokens":-1,"messages":[]}"#,
            Some("max_completion_tokens"),
        ),
        (br#"{"model":"chat-a","n":"4","messages":[]}"#, Some("n")),
        (
            br#"{"model":"chat-a","max_tokens":5,"max_tokens":5000,"messages":[]}"#,
            None,
        ),
        (
            br#"{"model":"chat-a","max_tokens":5,"max_tok\u0065ns":5000,"messages":[]}"#,
            None,
        ),
        (br#"{"model":"chat-a","model":"chat-b","messages":[]}"#, None),
        (
            br#"{"model":"chat-a","stream":true,"stream_options":{"include_usage":true},"stream_options":{}}"#,
            None,
        ),
        (br#"{"model":"chat-a","messages":[]} {"model":"chat-b"}"#, None),
        (b"{\"model\":\"chat-a\",\"messages\":[],\"x\":NaN}", None),
    ] {
        let before = capture.count();
        let answer = send(&base, &post("/tinyllama/v1/chat/completions", &key, &json, body)).await;
        assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(body));
        let error = answer.error();
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{error}");
        }
        assert_eq!(
            capture.count(),
            before,
            "{}: not forwarded",
            String::from_utf8_lossy(body)
        );
    }
    // vLLM reads `max_completion_tokens or max_tokens`: both are capped;
    // whole decimals are the numbers pydantic reads, capped as such; a 0
    // alone does not let the absent field fall back to the context's end.
    for body in [
        &br#"{"model":"chat-a","max_completion_tokens":0,"max_tokens":5000,"messages":[]}"#[..],
        br#"{"model":"chat-a","max_tokens":2e2,"messages":[]}"#,
        br#"{"model":"chat-a","max_tokens":200.0,"messages":[]}"#,
        br#"{"model":"chat-a","max_completion_tokens":0,"messages":[]}"#,
        br#"{"model":"chat-a","max_completion_tokens":null,"max_tokens":null,"messages":[]}"#,
        br#"{"model":"chat-a","max_completion_tokens":900,"messages":[]}"#,
    ] {
        let answer = send(&base, &post("/tinyllama/v1/chat/completions", &key, &json, body)).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(body));
        let seen = capture.last().json();
        for field in ["max_tokens", "max_completion_tokens"] {
            if let Some(value) = seen[field].as_f64() {
                assert!(value <= 50.0, "{field} {value} past the cap: {seen}");
            }
        }
        // What vLLM reads: `max_completion_tokens or max_tokens`, never unbounded.
        let bound = match seen["max_completion_tokens"].as_f64() {
            Some(value) if value != 0.0 => Some(value),
            _ => seen["max_tokens"].as_f64(),
        };
        assert!(bound.is_some_and(|b| b <= 50.0), "{seen}");
    }
    // No model: the product's, not the server's default.
    let answer = send(
        &base,
        &post("/tinyllama/v1/chat/completions", &key, &json, br#"{"messages":[]}"#),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(capture.last().json()["model"], "chat-a");
}

/// `n` and batched prompts multiply what one request generates: the hold
/// counts every generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generation_of_a_request_is_held() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("n-app", "tinyllama", "thousand").await;
    let base = gw.base().to_owned();
    let json = ["Content-Type: application/json"];
    let before = capture.count();
    for body in [
        &br#"{"model":"chat-a","n":2000,"max_tokens":1,"messages":[]}"#[..],
        br#"{"model":"chat-a","prompt":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q","r","s","t"],"n":100,"max_tokens":1}"#,
    ] {
        let path = if body.starts_with(br#"{"model":"chat-a","prompt""#) {
            "/tinyllama/v1/completions"
        } else {
            "/tinyllama/v1/chat/completions"
        };
        let answer = send(&base, &post(path, &key, &json, body)).await;
        assert_eq!(answer.status, 429, "{}", String::from_utf8_lossy(body));
        assert_eq!(answer.error()["code"], "insufficient_quota");
    }
    assert_eq!(capture.count(), before, "refused before the upstream");
    // Ten generations share the grant: each is capped at a tenth of it.
    let body = br#"{"model":"chat-a","n":10,"messages":[]}"#;
    let answer = send(&base, &post("/tinyllama/v1/chat/completions", &key, &json, body)).await;
    assert_eq!(answer.status, 200);
    let forwarded = capture.last().json()["max_tokens"].as_u64().unwrap();
    assert!(
        forwarded * 10 <= 1000,
        "max_tokens {forwarded} × 10 generations fits the budget"
    );
}

/// The shared `/v1` endpoint routes by the body's model, so it always read
/// JSON; its cap and usage injection did not, and now do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_endpoint_caps_whatever_the_content_type() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("shared-app", "tinyllama", "capped").await;
    let base = gw.base().to_owned();
    for content_type in CONTENT_TYPES {
        let body = br#"{"model":"chat-a","stream":true,"max_tokens":104,"messages":[{"role":"user","content":"hi"}]}"#;
        let answer = send(&base, &post_typed("/v1/chat/completions", &key, content_type, body)).await;
        assert_eq!(answer.status, 200, "{content_type:?}");
        let seen = capture.last().json();
        assert_eq!(seen["max_tokens"], 50, "{content_type:?}");
        assert_eq!(seen["stream_options"]["include_usage"], true, "{content_type:?}");
    }
}

/// What would generate tokens where the gateway cannot meter them is not
/// served: a background response (generated after the answer) and a
/// protocol upgrade (a tunnel past every check). `Upgrade: h2c`, which
/// curl sends with `--http2`, is dropped before forwarding, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_generated_where_it_cannot_be_metered() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("tunnel-app", "tinyllama", "open").await;
    let base = gw.base().to_owned();
    let json = "Content-Type: application/json";
    let before = capture.count();
    let background = br#"{"model":"chat-a","input":"hi","background":true}"#;
    let answer = send(&base, &post("/tinyllama/v1/responses", &key, &[json], background)).await;
    assert_eq!(
        (answer.status, answer.error()["param"].as_str()),
        (400, Some("background"))
    );
    for upgrade in ["websocket", "WebSocket", "tcp", "h2c, websocket"] {
        let upgrade = format!("Upgrade: {upgrade}");
        let headers = [json, "Connection: Upgrade", upgrade.as_str()];
        let body = br#"{"model":"chat-a","messages":[]}"#;
        let answer = send(&base, &post("/tinyllama/v1/chat/completions", &key, &headers, body)).await;
        assert_eq!(answer.status, 400, "{upgrade}");
        assert_eq!(answer.error()["param"], "upgrade");
    }
    assert_eq!(capture.count(), before, "nothing reached the model server");
    let headers = [json, "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"];
    let answer = send(
        &base,
        &post(
            "/tinyllama/v1/chat/completions",
            &key,
            &headers,
            br#"{"model":"chat-a","messages":[]}"#,
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = capture.last();
    assert!(seen.header("upgrade").is_none() && seen.header("http2-settings").is_none());
}
