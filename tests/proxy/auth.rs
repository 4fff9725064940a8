//! Keys in every location; wrong, missing, revoked and expired keys;
//! applications that are not live.

use std::time::{Duration, Instant};

use base64::Engine;
use maas_store::model::KeyHash;
use maas_store::{ApplicationAction, NewKey, Precondition};

use super::harness::{CATALOG, Gateway, error_of, metric_value, with_typo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_location_works_and_bad_keys_get_401() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, key) = gw.app_key("auth-app", "alpha", "open").await;
    let url = format!("{}/alpha/v1/models", gw.base());
    let basic = |user_pass: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
    let ok = [
        ("bearer", gw.http.get(&url).bearer_auth(&key)),
        (
            "basic user",
            gw.http.get(&url).header("authorization", basic(&format!("{key}:"))),
        ),
        (
            "basic password",
            gw.http.get(&url).header("authorization", basic(&format!(":{key}"))),
        ),
        ("api-key header", gw.http.get(&url).header("api-key", &key)),
        ("query", gw.http.get(format!("{url}?user_key={key}"))),
    ];
    for (location, request) in ok {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{location}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["data"][0]["id"], "chat-a", "{location}");
    }

    // The key's last use reaches the store by the minute, within a flush.
    let key_id = gw
        .store
        .lookup_key(&KeyHash::of(&key))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .id
        .clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let last_used = loop {
        if let Some(at) = gw.store.keys_last_used(std::slice::from_ref(&key_id)).await.unwrap()[0] {
            break at;
        }
        assert!(Instant::now() < deadline, "the key's use was not recorded within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let now = time::OffsetDateTime::now_utc();
    assert!(
        last_used <= now && now - last_used < time::Duration::minutes(2) && last_used.second() == 0,
        "{last_used} at {now}"
    );

    let (status, error) = error_of(gw.http.get(&url).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("missing_api_key")));
    assert!(
        error["message"].as_str().unwrap().contains("Authorization: Bearer"),
        "{error}"
    );
    let wrong = with_typo(&key);
    let (status, error) = error_of(gw.http.get(&url).bearer_auth(&wrong).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("invalid_api_key")));
    let (status, _) = error_of(
        gw.http
            .get(&url)
            .header("authorization", "Basic %%%")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // Revoked and expired keys.
    gw.store.revoke_key(&key_id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = gw.http.get(&url).bearer_auth(&key).send().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "a revoked key still works after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (app_id, expiring) = gw.app_key("expiring-app", "alpha", "open").await;
    assert_eq!(
        gw.http.get(&url).bearer_auth(&expiring).send().await.unwrap().status(),
        200
    );
    let expiring_id = gw
        .store
        .lookup_key(&KeyHash::of(&expiring))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .id
        .clone();
    gw.store
        .set_key_expiry(
            &expiring_id,
            Some(time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, error) = error_of(gw.http.get(&url).bearer_auth(&expiring).send().await.unwrap()).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("invalid_api_key")),
        "expired"
    );
    let fresh = gw.store.create_key(&app_id, NewKey::default()).await.unwrap();
    assert_eq!(
        gw.http
            .get(&url)
            .bearer_auth(fresh.secret.expose())
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "a new key of the same application works at once"
    );

    let log = std::fs::read_to_string(&gw.proxies[0].access_log).unwrap();
    assert!(
        !log.contains(&key) && !log.contains(&expiring),
        "the access log never holds a key"
    );
    assert!(log.contains(&key[..12]), "but names its prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_a_second_proxy_within_a_second() {
    let gw = Gateway::start(CATALOG, 2, "strict").await;
    let (_, key) = gw.app_key("revoked-app", "alpha", "open").await;
    for proxy in &gw.proxies {
        // Both proxies now hold the key in their caches.
        let response = gw.chat(&proxy.base, &key, "chat-a").await;
        assert_eq!(response.status(), 200);
    }
    let key_id = gw
        .store
        .lookup_key(&KeyHash::of(&key))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .id
        .clone();
    let revoked_at = Instant::now();
    gw.store.revoke_key(&key_id).await.unwrap();
    for proxy in &gw.proxies {
        loop {
            let status = gw
                .http
                .get(format!("{}/v1/models", proxy.base))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status();
            if status == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "{} still accepts a key revoked {:?} ago",
                proxy.base,
                revoked_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!("revocation seen by both proxies after {:?}", revoked_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_that_are_not_live_are_refused_with_the_reason() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("gated-app", "alpha", "gated").await;
    let (status, error) = error_of(gw.chat(gw.base(), &key, "chat-a").await).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("application_pending")));
    assert!(
        error["message"].as_str().unwrap().contains("awaiting approval"),
        "{error}"
    );

    gw.store
        .act_on_application(&app_id, ApplicationAction::Approve, Precondition::Any)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.chat(gw.base(), &key, "chat-a").await.status(), 200, "approved");

    gw.store
        .act_on_application(&app_id, ApplicationAction::Suspend, Precondition::Any)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, error) = error_of(gw.chat(gw.base(), &key, "chat-a").await).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("application_suspended")));
}

/// A storm of made-up keys costs a checksum each, not a store lookup; a
/// well-formed unknown key is looked up once, then answered from the
/// negative cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_keys_never_reach_the_store() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, key) = gw.app_key("storm-app", "alpha", "open").await;
    // The account, application and key events must not land mid-count:
    // they empty the key cache, which would add a store lookup.
    gw.await_changes(0, "key", 1).await;
    let url = format!("{}/alpha/v1/models", gw.base());
    let lookups =
        |text: &str, outcome: &str| metric_value(text, "maas_key_lookups_total", "outcome", outcome).unwrap_or(0);

    assert_eq!(gw.http.get(&url).bearer_auth(&key).send().await.unwrap().status(), 200);
    let before = gw.metrics(0).await;
    assert_eq!(lookups(&before, "store"), 1, "{before}");

    let well_formed_unknown = maas_store::model::KeySecret::generate("sk-maas-").into_string();
    let mut storm = Vec::new();
    for i in 0..100 {
        storm.push(format!("sk-maas-{i:040}")); // the right shape, a wrong checksum
        storm.push(KeyHash::of(&i.to_string()).to_hex()); // any other string
    }
    storm.push(with_typo(&key));
    for made_up in &storm {
        let (status, error) = error_of(gw.http.get(&url).bearer_auth(made_up).send().await.unwrap()).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (401, Some("invalid_api_key")),
            "{made_up}"
        );
    }
    for _ in 0..20 {
        let response = gw
            .http
            .get(&url)
            .bearer_auth(&well_formed_unknown)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }

    let after = gw.metrics(0).await;
    assert_eq!(
        lookups(&after, "malformed") - lookups(&before, "malformed"),
        storm.len() as u64,
        "{after}"
    );
    // The one well-formed unknown key: one lookup, then 19 negative-cache hits.
    assert_eq!(lookups(&after, "store") - lookups(&before, "store"), 1, "{after}");
    assert_eq!(lookups(&after, "cached") - lookups(&before, "cached"), 19, "{after}");
}
