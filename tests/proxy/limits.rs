//! Plan limits across proxy replicas: requests per minute, token budgets,
//! strict mode's exactness and local mode's documented bound.

use std::time::Duration;

use futures_util::future::join_all;

use super::harness::{CATALOG, Gateway, error_of, leave_room_in_this_minute};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_per_minute_refuses_the_eleventh_until_the_next_minute() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, key) = gw.app_key("minute-app", "alpha", "ten-per-minute").await;
    leave_room_in_this_minute(Duration::from_secs(10)).await;
    for n in 1..=10u64 {
        let response = gw.chat(gw.base(), &key, "chat-a").await;
        assert_eq!(response.status(), 200, "request {n}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("x-ratelimit-limit-requests"), "10");
        assert_eq!(header("x-ratelimit-remaining-requests"), (10 - n).to_string());
    }
    let refused = gw.chat(gw.base(), &key, "chat-a").await;
    let header = |name: &str| refused.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let retry_after: u64 = header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(header("x-ratelimit-limit-requests").as_deref(), Some("10"));
    assert_eq!(header("x-ratelimit-remaining-requests").as_deref(), Some("0"));
    let reset = header("x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    let (status, error) = error_of(refused).await;
    assert_eq!(
        (status, error["type"].as_str(), error["code"].as_str()),
        (429, Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(300)).await;
    assert_eq!(
        gw.chat(gw.base(), &key, "chat-a").await.status(),
        200,
        "the next minute passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_is_never_overrun_and_then_refuses() {
    for mode in ["strict", "local"] {
        let gw = Gateway::start(CATALOG, 1, mode).await;
        let (app_id, key) = gw.app_key("token-app", "alpha", "fifty-tokens").await;
        // The simulator would write 20–40 tokens; the proxy lowers max_tokens
        // to what the 50-token budget has left after the prompt.
        let mut spent = 0;
        let mut admitted = 0;
        loop {
            let response = gw.chat(gw.base(), &key, "chat-a").await;
            if response.status() == 429 {
                assert!(response.headers().contains_key("retry-after"), "{mode}");
                let (_, error) = error_of(response).await;
                let code = error["code"].as_str().unwrap();
                assert!(
                    ["insufficient_quota", "rate_limit_exceeded"].contains(&code),
                    "{mode}: {error}"
                );
                break;
            }
            assert_eq!(response.status(), 200, "{mode}");
            let reply: serde_json::Value = response.json().await.unwrap();
            spent += reply["usage"]["total_tokens"].as_u64().unwrap();
            admitted += 1;
            assert!(
                admitted <= 5,
                "{mode}: admitted {admitted} requests after spending {spent} of 50 tokens"
            );
            // Usage reaches the store in batches (every 100 ms).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            spent > 0 && spent <= 50,
            "{mode}: {spent} tokens spent of a 50-token budget"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(gw.stored(&app_id, "total_tokens").await, spent, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_refuses_with_rate_limit_headers() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("spent-app", "alpha", "fifty-tokens").await;
    // Spend the budget outside the proxy, as another replica would have.
    gw.store
        .record_usage(&[maas_store::UsageRecord::new(
            &app_id,
            "total_tokens",
            60,
            time::OffsetDateTime::now_utc(),
        )])
        .await
        .unwrap();
    let response = gw.chat(gw.base(), &key, "chat-a").await;
    let remaining = response.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(remaining, "0");
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].as_str()), (429, Some("rate_limit_exceeded")));
    assert!(
        error["message"].as_str().unwrap().contains("total_tokens spent"),
        "{error}"
    );
}

/// 300 concurrent requests spread over `proxies`; how many got through.
async fn burst(gw: &Gateway, key: &str) -> (usize, usize) {
    let requests = (0..300).map(|i| {
        let base = gw.proxies[i % gw.proxies.len()].base.clone();
        let http = gw.http.clone();
        let key = key.to_owned();
        async move {
            http.get(format!("{base}/v1/models"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = join_all(requests).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, 300, "{statuses:?}");
    (admitted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_admits_exactly_the_limit_across_three_proxies() {
    let gw = Gateway::start(CATALOG, 3, "strict").await;
    let (app_id, key) = gw.app_key("strict-app", "alpha", "hundred").await;
    let (admitted, refused) = burst(&gw, &key).await;
    assert_eq!((admitted, refused), (100, 200));
    assert_eq!(
        gw.stored(&app_id, "hits").await,
        100,
        "the store counted exactly what was admitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_stays_within_its_documented_bound() {
    let gw = Gateway::start(CATALOG, 3, "local").await;
    let (_, key) = gw.app_key("local-app", "alpha", "hundred").await;
    let (admitted, _) = burst(&gw, &key).await;
    // limit + (R − 1) · limit is the per-period ceiling of docs/ARCHITECTURE.md.
    assert!((100..=300).contains(&admitted), "admitted {admitted}");
    eprintln!("local mode, 3 proxies, 300 concurrent requests, limit 100: admitted {admitted}");
    // After one sync (100 ms) every replica knows the limit is spent.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for proxy in &gw.proxies {
        for _ in 0..5 {
            let status = gw
                .http
                .get(format!("{}/v1/models", proxy.base))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 429, "{} after a sync", proxy.base);
        }
    }
}
