//! The admin API driving a running proxy: an application that needs
//! approval is refused with the reason until an admin approves it; key
//! rotation keeps the old key for its grace period; revocation reaches the
//! proxy within a second.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{CATALOG, Gateway, error_of};

const TOKEN: &str = "proxy-test-admin-token";

/// The admin API in this process, on the gateway's store.
async fn admin_api(gw: &Gateway) -> String {
    let app = maas_admin_api::router(gw.store.clone(), maas_admin_api::AdminTokens::new(Some(TOKEN)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}{}", maas_admin_api::BASE_PATH)
}

async fn call(gw: &Gateway, method: &str, url: String, body: Option<Value>) -> Value {
    let mut request = gw.http.request(method.parse().unwrap(), url).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    response.json().await.unwrap_or(Value::Null)
}

/// Retries `chat` until its status is `wanted`, for up to `within`; the time it took.
async fn until_status(gw: &Gateway, key: &str, wanted: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = gw.chat(gw.base(), key, "chat-a").await.status().as_u16();
        if status == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {status} after {within:?}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_rotation_and_revocation_through_the_admin_api() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let api = admin_api(&gw).await;
    let account = call(
        &gw,
        "POST",
        format!("{api}/accounts"),
        Some(json!({"name": "Approvals Inc"})),
    )
    .await;
    let new = json!({"account_id": account["id"], "name": "waiting-bot", "product": "alpha", "plan": "gated"});
    let app = call(&gw, "POST", format!("{api}/applications"), Some(new)).await;
    assert_eq!(app["state"], "pending");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let issued = call(&gw, "POST", format!("{api}/applications/{app_id}/keys"), None).await;
    let key = issued["secret"].as_str().unwrap().to_owned();

    // Pending: refused, saying why.
    let (status, error) = error_of(gw.chat(gw.base(), &key, "chat-a").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("application_pending")),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("awaiting approval"),
        "{error}"
    );

    // Approved: the same key works.
    call(&gw, "POST", format!("{api}/applications/{app_id}/approve"), None).await;
    let approved_after = until_status(&gw, &key, 200, Duration::from_secs(1)).await;

    // Rotation: the new key works at once, the old one until its grace ends.
    let rotated = call(
        &gw,
        "POST",
        format!("{api}/keys/{}/rotate", issued["id"].as_str().unwrap()),
        Some(json!({"grace_seconds": 2})),
    )
    .await;
    let new_key = rotated["secret"].as_str().unwrap().to_owned();
    until_status(&gw, &new_key, 200, Duration::from_secs(1)).await;
    assert_eq!(
        gw.chat(gw.base(), &key, "chat-a").await.status(),
        200,
        "the old key works during the grace period"
    );
    let expired_after = until_status(&gw, &key, 401, Duration::from_secs(4)).await;
    assert!(
        expired_after >= Duration::from_millis(500),
        "the old key stopped before its grace period ended ({expired_after:?})"
    );

    // Revocation: refused within a second.
    call(
        &gw,
        "POST",
        format!("{api}/keys/{}/revoke", rotated["id"].as_str().unwrap()),
        None,
    )
    .await;
    let revoked_after = until_status(&gw, &new_key, 401, Duration::from_secs(1)).await;
    eprintln!(
        "approval reached the proxy after {approved_after:?}, the rotated key expired after {expired_after:?}, \
         revocation after {revoked_after:?}"
    );
}

/// Status of `POST {base}/beta/v1/completions` on proxy `index`.
async fn completions_status(gw: &Gateway, index: usize, key: &str) -> u16 {
    gw.http
        .post(format!("{}/beta/v1/completions", gw.proxies[index].base))
        .bearer_auth(key)
        .json(&json!({"model": "chat-b", "prompt": "hi", "max_tokens": 2}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits up to a second for proxy `index` to answer `wanted`.
async fn until_served(gw: &Gateway, index: usize, key: &str, wanted: u16) {
    let started = Instant::now();
    loop {
        let status = completions_status(gw, index, key).await;
        if status == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "proxy {index} still answers {status}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_reaches_staging_then_production_and_rolls_back() {
    // Proxy 0 serves production, proxy 1 staging.
    let mut gw = Gateway::start(CATALOG, 1, "strict").await;
    gw.add_proxy_with_env("strict", &[("MAAS_ENVIRONMENT", "staging")]);
    let api = admin_api(&gw).await;
    let (_, key) = gw.app_key("promotion-app", "beta", "open").await;
    for proxy in [0, 1] {
        assert_eq!(
            completions_status(&gw, proxy, &key).await,
            200,
            "proxy {proxy} serves completions"
        );
    }
    let before = call(&gw, "GET", format!("{api}/products/beta/releases"), None).await;
    let old_version = before["production"].as_u64().unwrap();

    // The draft allows chat only: nothing served changes yet.
    let mut draft = call(&gw, "GET", format!("{api}/products/beta"), None).await;
    draft["mapping_rules"] = json!([{"http_method": "POST", "pattern": "/v1/chat/completions$", "metric": "hits"}]);
    call(&gw, "PUT", format!("{api}/products/beta"), Some(draft)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for proxy in [0, 1] {
        assert_eq!(
            completions_status(&gw, proxy, &key).await,
            200,
            "a draft is served nowhere"
        );
    }

    // Staging first …
    let promoted = call(
        &gw,
        "POST",
        format!("{api}/products/beta/promote"),
        Some(json!({"environment": "staging"})),
    )
    .await;
    until_served(&gw, 1, &key, 404).await;
    assert_eq!(
        completions_status(&gw, 0, &key).await,
        200,
        "production still serves the old rules"
    );
    // … then production.
    call(
        &gw,
        "POST",
        format!("{api}/products/beta/promote"),
        Some(json!({"environment": "production"})),
    )
    .await;
    until_served(&gw, 0, &key, 404).await;
    let (status, error) = error_of(
        gw.http
            .post(format!("{}/beta/v1/completions", gw.base()))
            .bearer_auth(&key)
            .json(&json!({"model": "chat-b", "prompt": "hi"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{error}");

    // Rollback: production serves the old version again; staging keeps the new one.
    call(
        &gw,
        "POST",
        format!("{api}/products/beta/rollback"),
        Some(json!({"environment": "production", "version": old_version})),
    )
    .await;
    until_served(&gw, 0, &key, 200).await;
    assert_eq!(completions_status(&gw, 1, &key).await, 404);
    assert!(promoted["version"].as_u64().unwrap() > old_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_report_what_the_proxy_counted() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let api = admin_api(&gw).await;
    let (app_id, key) = gw.app_key("analytics-app", "alpha", "priced").await;
    for _ in 0..12 {
        assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let truth = gw.sim_usage(&app_id).await;
    let (prompt, completion) = (
        truth["prompt_tokens"].as_u64().unwrap(),
        truth["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(gw.stored(&app_id, "total_tokens").await, prompt + completion);

    let now = time::OffsetDateTime::now_utc();
    let format = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (from, to) = (
        format(now - time::Duration::hours(1)),
        format(now + time::Duration::minutes(1)),
    );
    let range = format!("from={from}&to={to}").replace('+', "%2B");
    let series = call(
        &gw,
        "GET",
        format!("{api}/analytics/usage?scope=application&id={app_id}&granularity=minute&{range}"),
        None,
    )
    .await;
    assert_eq!(series["total"], prompt + completion, "{series}");
    let points = series["points"].as_array().unwrap();
    // One point per minute bucket the range touches: 61, or 62 off the minute.
    assert!((61..=62).contains(&points.len()), "{} points", points.len());

    // The CSV is the same series.
    let csv = gw
        .http
        .get(format!(
            "{api}/analytics/usage?scope=application&id={app_id}&granularity=minute&{range}&format=csv"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("start,value"));
    let rows: Vec<(String, u64)> = lines
        .map(|l| {
            let (start, value) = l.split_once(',').unwrap();
            (start.to_owned(), value.parse().unwrap())
        })
        .collect();
    let json_rows: Vec<(String, u64)> = points
        .iter()
        .map(|p| (p["start"].as_str().unwrap().to_owned(), p["value"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, json_rows);

    // Per product and per metric, and the ranking, agree.
    let completions = call(
        &gw,
        "GET",
        format!("{api}/analytics/usage?scope=product&id=alpha&metric=completion_tokens&granularity=hour&{range}"),
        None,
    )
    .await;
    assert!(completions["total"].as_u64().unwrap() >= completion, "{completions}");
    let top = call(
        &gw,
        "GET",
        format!("{api}/analytics/top?metric=total_tokens&period=day"),
        None,
    )
    .await;
    let ranked = top["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["application_id"] == app_id.as_str())
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(ranked["value"], prompt + completion);

    // Cost at the plan's prices: 0.5 and 1.5 per 1k tokens.
    let cost = call(
        &gw,
        "GET",
        format!("{api}/analytics/cost?application_id={app_id}&{range}"),
        None,
    )
    .await;
    assert_eq!(
        (cost["prompt_tokens"].as_u64(), cost["completion_tokens"].as_u64()),
        (Some(prompt), Some(completion))
    );
    let micros = (prompt * 500_000 + completion * 1_500_000 + 500) / 1000;
    let expected = maas_store::model::Money::from_micros(micros).to_string();
    assert_eq!(cost["cost"], expected.as_str(), "{cost}");
    assert_eq!(cost["currency"], "USD");
}

/// Many replicas on one Redis: two proxy processes and a `maas portal`
/// process (which serves the admin API). A plan changed through the
/// portal's admin API is enforced by both proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_changed_through_the_portal_is_enforced_by_both_proxies() {
    let mut gw = Gateway::start(CATALOG, 2, "strict").await;
    let (_, key) = gw.app_key("replicas-app", "alpha", "open").await;
    for index in 0..2 {
        assert_eq!(
            gw.chat(&gw.proxies[index].base, &key, "chat-a").await.status().as_u16(),
            200,
            "proxy {index} before"
        );
    }
    let portal = gw.add_portal(TOKEN);
    let plan_url = format!("{portal}/admin/api/v1/products/alpha/plans/open");
    let mut plan = call(&gw, "GET", plan_url.clone(), None).await;
    plan["limits"] = json!([{"metric": "hits", "period": "minute", "value": 3}]);
    call(&gw, "PUT", plan_url, Some(plan)).await;

    // Three hits a minute, counted across both replicas (strict mode): two
    // were spent above, so both refuse within a request or two once the
    // change has reached them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = [false, false];
    while refused != [true, true] {
        for (index, seen) in refused.iter_mut().enumerate() {
            if !*seen {
                *seen = gw.chat(&gw.proxies[index].base, &key, "chat-a").await.status().as_u16() == 429;
            }
        }
        assert!(
            Instant::now() < deadline,
            "both proxies enforce the new plan: {refused:?}"
        );
    }
}
