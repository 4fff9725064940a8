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
