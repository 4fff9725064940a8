//! The key never travels upstream: not in the headers it came in, and not
//! in a query parameter whose name only looks different (`user%5Fkey` is
//! `user_key` to every server that decodes names).

use super::fixtures::gateway;
use super::raw_http::send;

/// A chat request that carries its key only where `target` and `extra` put it.
fn chat(target: &str, extra: &str) -> Vec<u8> {
    let body = r#"{"messages": []}"#;
    format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_never_forwarded_however_its_name_is_spelled() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("query-app", "keyed", "open").await;
    let base = gw.base().to_owned();
    for query in [
        format!("user_key={key}&a=1"),
        format!("user%5Fkey={key}&a=1"),
        format!("user%5fkey={key}&a=1"),
        format!("%75ser_key={key}&a=1"),
        format!("a=1&user_key={key}&user%5Fkey={key}"),
    ] {
        let answer = send(&base, &chat(&format!("/keyed/v1/chat/completions?{query}"), "")).await;
        assert_eq!(
            answer.status,
            200,
            "{query}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        let seen = capture.last();
        assert_eq!(seen.method, "POST");
        assert!(!seen.target.contains(&key), "{query}: forwarded {}", seen.target);
        assert!(
            seen.target.ends_with("?a=1"),
            "{query}: other parameters stay: {}",
            seen.target
        );
    }
    // The custom header and Authorization are dropped too.
    let answer = send(
        &base,
        &chat("/keyed/v1/chat/completions", &format!("api-key: {key}\r\n")),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = capture.last();
    assert!(
        seen.headers
            .iter()
            .all(|(_, v)| !v.to_str().unwrap_or_default().contains(&key)),
        "{:?}",
        seen.headers
    );
    assert!(!String::from_utf8_lossy(&seen.body).contains(&key));
}
