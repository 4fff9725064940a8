//! Class 2: paths that are not what they seem. The path is normalised
//! once, before routing: rules match, the endpoint is classified and the
//! upstream is called on the normal form, and what has none is a 400.

use super::fixtures::gateway;
use super::raw_http::{post, send};

const CHAT: &[u8] = br#"{"model":"chat-a","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_endpoint_is_that_endpoint() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("path-app", "tinyllama", "capped").await;
    let base = gw.base().to_owned();
    let json = ["Content-Type: application/json"];
    for spelled in [
        "/tinyllama/v1/chat/completions/.",
        "/tinyllama/v1/chat/completions/",
        "/tinyllama/v1/chat/completions;x=1",
        "/tinyllama/v1;a=b/chat;c/completions",
        "/tinyllama//v1///chat/completions",
        "/tinyllama/v1/%63hat/%63ompletions",
        "/tinyllama/v1/x/../chat/completions",
        "/tinyllama/./v1/chat/./completions",
        "/tinyllama/v1/chat/completions/%2e",
        "/tinyllama/v1/chat/completions/x/%2E%2E",
        "/%74inyllama/v1/chat/completions",
        "/tinyllama/v1/chat/completions?stream=false",
    ] {
        let answer = send(&base, &post(spelled, &key, &json, CHAT)).await;
        assert_eq!(
            answer.status,
            200,
            "{spelled}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        let seen = capture.last();
        let expected_query = spelled
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        assert_eq!(
            seen.target,
            format!("/v1/chat/completions{expected_query}"),
            "{spelled}"
        );
        assert_eq!(
            seen.json()["max_tokens"],
            50,
            "{spelled}: classified as chat, so capped"
        );
    }
    // The completions endpoint, spelled oddly, is capped as completions.
    let answer = send(
        &base,
        &post(
            "/tinyllama/v1/completions/./",
            &key,
            &json,
            br#"{"model":"chat-a","prompt":"hi","max_tokens":500}"#,
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        (
            capture.last().target.as_str(),
            capture.last().json()["max_tokens"].as_u64()
        ),
        ("/v1/completions", Some(50))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_without_a_safe_normal_form_or_a_rule_go_nowhere() {
    let (gw, capture) = gateway(1).await;
    let (_, key) = gw.app_key("refused-app", "tinyllama", "capped").await;
    let base = gw.base().to_owned();
    let json = ["Content-Type: application/json"];
    // Resolved, then matched: nothing serves these.
    for escaping in [
        "/tinyllama/v1/chat/completions/../../../admin",
        "/tinyllama/v1/chat/completions/../../../../tinyllama/admin",
        "/tinyllama/v1/chat/completions/..%2f..%2fadmin",
        "/tinyllama/v1/models/../../metrics",
    ] {
        let before = capture.count();
        let answer = send(&base, &post(escaping, &key, &json, CHAT)).await;
        assert!(matches!(answer.status, 400 | 404), "{escaping}: {}", answer.status);
        answer.error();
        assert_eq!(capture.count(), before, "{escaping}: not forwarded");
    }
    // No safe normal form.
    for unsafe_path in [
        "/tinyllama/v1/chat%2Fcompletions",
        "/tinyllama/v1/chat%2fcompletions",
        "/tinyllama/v1/chat%5Ccompletions",
        "/tinyllama/v1/chat\\completions",
        "/tinyllama/v1/chat/completions%00",
        "/tinyllama/v1/chat/completions%0d%0aX-Injected:%201",
        "/tinyllama/v1/chat/completions%zz",
        "/../tinyllama/v1/chat/completions",
        "/..;/tinyllama/v1/chat/completions",
        "/tinyllama/../../v1/chat/completions",
    ] {
        let before = capture.count();
        let answer = send(&base, &post(unsafe_path, &key, &json, CHAT)).await;
        assert_eq!(answer.status, 400, "{unsafe_path}");
        let error = answer.error();
        // A raw `\` may already be refused by the HTTP parser; either way in JSON.
        if !unsafe_path.contains('\\') {
            assert_eq!(error["code"], "invalid_path", "{unsafe_path}");
        }
        assert_eq!(capture.count(), before, "{unsafe_path}: not forwarded");
    }
}
