//! The admin API over HTTP against a real store, on both backends: authz,
//! catalog CRUD with ETags, validation errors naming fields, pagination,
//! and the audit trail of API writes.

use maas_store::AuditQuery;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod harness;

use harness::{ADMIN, Api, READER};

fn etag(headers: &reqwest::header::HeaderMap) -> String {
    headers["etag"].to_str().unwrap().to_owned()
}

fn backend() -> Value {
    json!({"urls": ["http://127.0.0.1:8000"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_read_and_write() {
    for api in Api::both().await {
        let kind = api.kind();
        let (status, headers, body) = api.send("GET", "/backends", None, &[], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _, _) = api.send("GET", "/backends", Some("wrong"), &[], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        let (status, _, _) = api.send("GET", "/backends", Some(READER), &[], None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: a reader reads");
        let (status, _, body) = api
            .send("PUT", "/backends/vllm", Some(READER), &[], Some(backend()))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: a reader does not write");
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(api.store.get_backend("vllm").await.unwrap().is_none(), "{kind}");
        // Tokens made through the API, with a scope, revocable.
        let (status, _, made) = api
            .admin("POST", "/tokens", Some(json!({"name": "grafana", "scope": "read"})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {made}");
        let made_secret = made["secret"].as_str().unwrap().to_owned();
        let (status, _, _) = api.send("GET", "/products", Some(&made_secret), &[], None).await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, _, _) = api
            .send(
                "POST",
                "/tokens",
                Some(&made_secret),
                &[],
                Some(json!({"name": "x", "scope": "write"})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{kind}: a read token cannot make a write token"
        );
        let (_, _, listed) = api.admin("GET", "/tokens", None).await;
        assert!(
            !listed.to_string().contains(&made_secret) && !listed.to_string().contains("hash"),
            "{kind}: {listed}"
        );
        assert_eq!(listed["data"][0]["name"], "grafana");
        let (status, _, _) = api
            .admin("DELETE", &format!("/tokens/{}", made["id"].as_str().unwrap()), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = api.send("GET", "/products", Some(&made_secret), &[], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}: a deleted token is refused");
        let (status, _, body) = api
            .admin("POST", "/tokens", Some(json!({"name": "x", "scope": "root"})))
            .await;
        assert_eq!(
            (status, &body["error"]["fields"][0]["field"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("scope"))
        );

        let (status, _, body) = api.admin("GET", "/no-such-route", None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::NOT_FOUND, &json!("not_found"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_objects_round_trip_with_etags() {
    for api in Api::both().await {
        let kind = api.kind();
        let (status, headers, body) = api.admin("PUT", "/backends/vllm", Some(backend())).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        assert_eq!(body["system_name"], "vllm");
        let first = etag(&headers);
        let (status, headers, body) = api.admin("GET", "/backends/vllm", None).await;
        assert_eq!((status, etag(&headers)), (StatusCode::OK, first.clone()), "{kind}");
        assert_eq!(body["urls"][0], "http://127.0.0.1:8000");

        // A write naming the current version applies …
        let moved = json!({"urls": ["http://127.0.0.1:9000"]});
        let (status, headers, _) = api
            .send(
                "PUT",
                "/backends/vllm",
                Some(ADMIN),
                &[("if-match", &first)],
                Some(moved),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let second = etag(&headers);
        assert_ne!(first, second);
        // … one naming an old version is refused and changes nothing.
        let (status, _, body) = api
            .send(
                "PUT",
                "/backends/vllm",
                Some(ADMIN),
                &[("if-match", &first)],
                Some(backend()),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        assert_eq!(body["error"]["code"], "stale_version");
        let stored = api.store.get_backend("vllm").await.unwrap().unwrap();
        assert_eq!(stored.urls, ["http://127.0.0.1:9000"], "{kind}");
        let (status, _, _) = api
            .send(
                "PUT",
                "/backends/vllm",
                Some(ADMIN),
                &[("if-none-match", "*")],
                Some(backend()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: create-only on an existing backend"
        );

        // Products and plans reference it.
        let product = json!({"backend": "vllm", "models": ["granite-8b"], "path_prefix": "/granite"});
        let (status, _, body) = api.admin("PUT", "/products/granite", Some(product)).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        let plan = json!({"published": true, "limits": [{"metric": "hits", "period": "minute", "value": 10}]});
        let (status, headers, body) = api.admin("PUT", "/products/granite/plans/standard", Some(plan)).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        assert_eq!(
            (body["product"].as_str(), body["system_name"].as_str()),
            (Some("granite"), Some("standard"))
        );
        let plan_tag = etag(&headers);
        let (status, _, body) = api.admin("GET", "/products/granite/plans", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"].as_array().unwrap().len(), 1, "{kind}: {body}");

        // The backend cannot go while a product uses it.
        let (status, _, body) = api.admin("DELETE", "/backends/vllm", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        let (status, _, _) = api
            .send(
                "DELETE",
                "/products/granite/plans/standard",
                Some(ADMIN),
                &[("if-match", "\"0000000000000000\"")],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        let (status, _, _) = api
            .send(
                "DELETE",
                "/products/granite/plans/standard",
                Some(ADMIN),
                &[("if-match", &plan_tag)],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _, _) = api.admin("DELETE", "/products/granite", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _, _) = api
            .send("DELETE", "/backends/vllm", Some(ADMIN), &[("if-match", &second)], None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _, body) = api.admin("GET", "/backends/vllm", None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::NOT_FOUND, &json!("not_found")),
            "{kind}"
        );

        // Every write is in the audit log, by the token that made it.
        let audit = api
            .store
            .audit_log(&AuditQuery {
                entity: Some("backend".into()),
                entity_id: Some("vllm".into()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(audit.len(), 3, "{kind}: create, update, delete");
        assert!(
            audit
                .iter()
                .all(|e| e.actor.kind == "admin_token" && e.actor.id == "bootstrap")
        );
        assert_eq!(audit[0].actor.ip.as_deref(), Some("127.0.0.1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    for api in Api::both().await {
        let kind = api.kind();
        let (status, _, body) = api
            .admin("PUT", "/backends/vllm", Some(json!({"urls": "http://x"})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "urls", "{kind}: {body}");
        let (status, _, body) = api
            .admin(
                "PUT",
                "/backends/vllm",
                Some(json!({"urls": ["http://x"], "colour": "red"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("colour"),
            "{kind}: {body}"
        );
        let (status, _, body) = api
            .admin(
                "PUT",
                "/backends/vllm",
                Some(json!({"system_name": "other", "urls": ["http://x"]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "system_name");
        // The store's validation names nested fields.
        let (status, _, body) = api
            .admin("PUT", "/products/granite", Some(json!({"backend": "missing"})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        assert!(
            body["error"]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["field"].as_str().unwrap().contains("backend")),
            "{kind}: {body}"
        );
        api.admin("PUT", "/backends/vllm", Some(backend())).await;
        api.admin("PUT", "/products/granite", Some(json!({"backend": "vllm"})))
            .await;
        let plan = json!({"limits": [{"metric": "hits", "period": "fortnight", "value": 10}]});
        let (status, _, body) = api.admin("PUT", "/products/granite/plans/p", Some(plan)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(
            body["error"]["fields"][0]["field"], "limits[0].period",
            "{kind}: {body}"
        );
        let (status, _, body) = api
            .send(
                "PUT",
                "/backends/vllm",
                Some(ADMIN),
                &[("if-match", "no-quotes")],
                Some(backend()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "If-Match");
        let response = api
            .http
            .put(format!("{}/backends/vllm", api.base))
            .bearer_auth(ADMIN)
            .body("urls=x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{kind}");
        let (status, _, body) = api.admin("GET", "/products/missing/plans", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages() {
    for api in Api::both().await {
        let kind = api.kind();
        for name in ["e", "a", "d", "b", "c"] {
            let (status, _, _) = api.admin("PUT", &format!("/backends/{name}"), Some(backend())).await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let mut seen = Vec::new();
        let mut path = "/backends?limit=2".to_owned();
        loop {
            let (status, _, body) = api.admin("GET", &path, None).await;
            assert_eq!(status, StatusCode::OK, "{kind}");
            let names: Vec<String> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["system_name"].as_str().unwrap().to_owned())
                .collect();
            assert!(names.len() <= 2);
            seen.extend(names);
            match body["next"].as_str() {
                Some(next) => path = format!("/backends?limit=2&after={next}"),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"], "{kind}");
        let (status, _, body) = api.admin("GET", "/backends?limit=0", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "limit");
    }
}

/// A catalog with a product, an open plan and one that needs approval.
async fn seed(api: &Api) {
    api.admin("PUT", "/backends/vllm", Some(backend())).await;
    api.admin(
        "PUT",
        "/products/granite",
        Some(json!({"backend": "vllm", "models": ["g"]})),
    )
    .await;
    api.admin("PUT", "/products/granite/plans/open", Some(json!({"published": true})))
        .await;
    let (status, _, body) = api
        .admin(
            "PUT",
            "/products/granite/plans/gated",
            Some(json!({"published": true, "approval_required": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_applications_and_keys() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "Acme"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {account}");
        let account_id = account["id"].as_str().unwrap().to_owned();
        let (status, _, body) = api.admin("POST", "/accounts", Some(json!({"name": "acme"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: names are unique, case aside");
        assert_eq!(body["error"]["fields"][0]["field"], "name");
        let (status, _, renamed) = api
            .admin(
                "PATCH",
                &format!("/accounts/{account_id}"),
                Some(json!({"description": "the customer"})),
            )
            .await;
        assert_eq!(
            (status, &renamed["description"]),
            (StatusCode::OK, &json!("the customer")),
            "{kind}"
        );

        // An application on a plan that needs approval starts pending.
        let new = json!({"account_id": account_id, "name": "bot", "product": "granite", "plan": "gated"});
        let (status, _, app) = api.admin("POST", "/applications", Some(new)).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {app}");
        assert_eq!(app["state"], "pending");
        let app_id = app["id"].as_str().unwrap().to_owned();
        let (status, _, body) = api.admin("POST", &format!("/applications/{app_id}/resume"), None).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: a pending application is approved, not resumed: {body}"
        );
        for (action, state) in [("approve", "live"), ("suspend", "suspended"), ("resume", "live")] {
            let (status, _, body) = api
                .admin("POST", &format!("/applications/{app_id}/{action}"), None)
                .await;
            assert_eq!(
                (status, &body["state"]),
                (StatusCode::OK, &json!(state)),
                "{kind}: {action}"
            );
        }
        let (status, _, body) = api
            .admin(
                "PATCH",
                &format!("/applications/{app_id}"),
                Some(json!({"plan": "open"})),
            )
            .await;
        assert_eq!(
            (status, &body["plan"]),
            (StatusCode::OK, &json!("open")),
            "{kind}: {body}"
        );
        let (status, _, body) = api
            .admin(
                "PATCH",
                &format!("/applications/{app_id}"),
                Some(json!({"plan": "nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        let (status, _, list) = api
            .admin(
                "GET",
                &format!("/applications?account_id={account_id}&state=live"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{kind}: {list}");
        let (status, _, _) = api.admin("GET", "/applications?state=asleep", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: an unknown state filter");

        // Keys: the secret once, then prefix and last 4 only, never the hash.
        let (status, _, issued) = api
            .admin(
                "POST",
                &format!("/applications/{app_id}/keys"),
                Some(json!({"label": "ci"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {issued}");
        let secret = issued["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("sk-maas-") && secret.ends_with(issued["last4"].as_str().unwrap()));
        let key_id = issued["id"].as_str().unwrap().to_owned();
        let (_, _, keys) = api.admin("GET", &format!("/applications/{app_id}/keys"), None).await;
        let listed = keys.to_string();
        assert!(
            !listed.contains(&secret) && !listed.contains("hash"),
            "{kind}: {listed}"
        );
        assert_eq!(keys["data"][0]["active"], true);
        let (status, _, _) = api.admin("POST", &format!("/applications/{app_id}/keys"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: a key needs no body");

        let (status, _, body) = api
            .admin(
                "POST",
                &format!("/keys/{key_id}/rotate"),
                Some(json!({"grace_seconds": -1})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["fields"][0]["field"], "grace_seconds");
        let (status, _, rotated) = api
            .admin(
                "POST",
                &format!("/keys/{key_id}/rotate"),
                Some(json!({"grace_seconds": 3600})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {rotated}");
        assert_ne!(rotated["secret"], json!(secret));
        let (_, _, old) = api.admin("GET", &format!("/keys/{key_id}"), None).await;
        assert!(
            old["expires_at"].is_string() && old["active"] == true,
            "{kind}: valid during the grace: {old}"
        );
        let (status, _, revoked) = api.admin("POST", &format!("/keys/{key_id}/revoke"), None).await;
        assert_eq!((status, &revoked["active"]), (StatusCode::OK, &json!(false)), "{kind}");
        let (status, _, _) = api
            .admin(
                "POST",
                &format!("/keys/{key_id}/rotate"),
                Some(json!({"grace_seconds": 0})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: a revoked key is not rotated");
        let (status, _, _) = api.admin("DELETE", &format!("/keys/{key_id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = api.admin("GET", &format!("/keys/{key_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Deleting the account takes its applications and keys along.
        let (status, _, _) = api.admin("DELETE", &format!("/accounts/{account_id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _, _) = api.admin("GET", &format!("/applications/{app_id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        let (status, _, body) = api.admin("POST", "/applications", Some(json!({"name": "x"}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_users_and_the_audit_log() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, body) = api
            .admin(
                "POST",
                "/products/granite/promote",
                Some(json!({"environment": "production"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}: nothing in staging yet: {body}");
        let (status, _, body) = api
            .admin(
                "POST",
                "/products/granite/promote",
                Some(json!({"environment": "staging"})),
            )
            .await;
        assert_eq!(
            (status, &body["version"]),
            (StatusCode::OK, &json!(1)),
            "{kind}: {body}"
        );
        api.admin(
            "POST",
            "/products/granite/promote",
            Some(json!({"environment": "production"})),
        )
        .await;
        api.admin(
            "PUT",
            "/products/granite",
            Some(json!({"backend": "vllm", "models": ["g", "h"]})),
        )
        .await;
        let (_, _, body) = api
            .admin(
                "POST",
                "/products/granite/promote",
                Some(json!({"environment": "staging"})),
            )
            .await;
        assert_eq!(body["version"], 2, "{kind}: a changed draft is a new version");
        let (status, _, releases) = api.admin("GET", "/products/granite/releases", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (releases["staging"].clone(), releases["production"].clone()),
            (json!(2), json!(1)),
            "{kind}"
        );
        assert_eq!(releases["data"].as_array().unwrap().len(), 2);
        let (status, _, _) = api
            .admin(
                "POST",
                "/products/granite/rollback",
                Some(json!({"environment": "staging", "version": 9})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: no such release");
        let (status, _, body) = api
            .admin(
                "POST",
                "/products/granite/rollback",
                Some(json!({"environment": "staging", "version": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        let (status, _, body) = api
            .admin("POST", "/products/granite/promote", Some(json!({"environment": "qa"})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "environment");

        let (_, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "People"}))).await;
        let email = ["ada", "example.com"].join("@");
        let new = json!({"account_id": account["id"], "email": email, "role": "admin"});
        let (status, _, user) = api.admin("POST", "/users", Some(new)).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {user}");
        assert!(
            user.get("password_hash").is_none() && user["has_password"] == false,
            "{kind}: {user}"
        );
        let user_id = user["id"].as_str().unwrap();
        let (status, _, user) = api
            .admin(
                "PATCH",
                &format!("/users/{user_id}"),
                Some(json!({"state": "disabled"})),
            )
            .await;
        assert_eq!((status, &user["state"]), (StatusCode::OK, &json!("disabled")), "{kind}");
        let (status, _, body) = api
            .admin(
                "POST",
                "/users",
                Some(json!({"account_id": account["id"], "email": "nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "email");
        let (_, _, users) = api
            .admin(
                "GET",
                &format!("/users?account_id={}", account["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(users["data"].as_array().unwrap().len(), 1, "{kind}: {users}");

        // The audit log answers who did what, newest first, in pages.
        let (status, _, page) = api.admin("GET", "/audit?entity=environment&limit=2", None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {page}");
        let entries = page["data"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["action"], "rollback", "{kind}: {page}");
        assert_eq!(entries[0]["actor"]["id"], "bootstrap");
        let next = page["next"].as_str().unwrap();
        let (_, _, older) = api
            .admin("GET", &format!("/audit?entity=environment&limit=2&before={next}"), None)
            .await;
        assert!(!older["data"].as_array().unwrap().is_empty(), "{kind}: {older}");
        let (_, _, users_audit) = api.admin("GET", "/audit?entity=user", None).await;
        assert!(!users_audit.to_string().contains("password"), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_check_their_parameters() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, body) = api
            .admin("GET", "/analytics/usage?scope=application&id=nope", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}: {body}");
        let (status, _, _) = api.admin("GET", "/analytics/usage?scope=galaxy&id=x", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}");
        let (status, _, body) = api
            .admin("GET", "/analytics/usage?scope=product&id=granite&from=yesterday", None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        assert_eq!(body["error"]["fields"][0]["field"], "from");
        let (status, _, body) = api
            .admin(
                "GET",
                "/analytics/usage?scope=product&id=granite&from=2026-11-26T10:00:00Z&to=2026-11-26T09:00:00Z",
                None,
            )
            .await;
        assert_eq!(
            (status, &body["error"]["fields"][0]["field"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("from"))
        );
        let (status, _, body) = api
            .admin(
                "GET",
                "/analytics/usage?scope=product&id=granite&granularity=hour&from=2026-11-26T00:00:00Z&to=2026-11-27T00:00:00Z",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        assert_eq!(
            body["points"].as_array().unwrap().len(),
            24,
            "{kind}: a product without applications reads zero"
        );
        assert_eq!(body["total"], 0);
        let (status, _, _) = api
            .admin("GET", "/analytics/usage?scope=product&id=granite&format=xml", None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}");
        let (status, _, body) = api.admin("GET", "/analytics/top?limit=0", None).await;
        assert_eq!(
            (status, &body["error"]["fields"][0]["field"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("limit"))
        );
        let (status, _, _) = api.admin("GET", "/analytics/cost?application_id=nope", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_of_admins_may_use_the_api() {
    use maas_store::model::{UserRole, UserState};
    use maas_store::{NewAccount, NewUser, SessionRecord};

    for api in Api::both().await {
        let kind = api.kind();
        let account = api
            .store
            .create_account(NewAccount {
                name: "Ops".into(),
                description: String::new(),
            })
            .await
            .unwrap();
        let mut sessions = Vec::new();
        for (n, (role, state)) in [
            (UserRole::Member, UserState::Active),
            (UserRole::Admin, UserState::Active),
            (UserRole::Admin, UserState::Disabled),
        ]
        .into_iter()
        .enumerate()
        {
            let user = api
                .store
                .create_user(NewUser {
                    account_id: account.id.clone(),
                    email: [format!("user{n}"), "example.com".to_owned()].join("@"),
                    display_name: String::new(),
                    role,
                    state,
                    sso: None,
                    password_hash: None,
                })
                .await
                .unwrap();
            let id = format!(
                "session-{n}-{}",
                maas_store::ids::hex(&maas_store::ids::random_bytes::<8>())
            );
            let mut record = SessionRecord {
                user_id: Some(user.id.clone()),
                created_at: time::OffsetDateTime::now_utc(),
                data: serde_json::Map::new(),
            };
            record.data.insert("csrf".into(), json!(format!("csrf-{n}")));
            api.store
                .put_session(&id, &record, time::Duration::minutes(5))
                .await
                .unwrap();
            sessions.push((id, user.id));
        }
        let cookie = |n: usize| format!("theme=dark; maas_session={}", sessions[n].0);
        let (member, admin, disabled) = (cookie(0), cookie(1), cookie(2));

        let (status, _, body) = api.send("GET", "/products", None, &[("cookie", &member)], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: a member's session: {body}");
        let (status, _, _) = api.send("GET", "/products", None, &[("cookie", &disabled)], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: a disabled admin's session");
        let (status, _, _) = api
            .send("GET", "/products", None, &[("cookie", "maas_session=forged")], None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}: an unknown session");
        let (status, _, _) = api.send("GET", "/products", None, &[("cookie", &admin)], None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: an admin's session reads");

        // Writes need the session's CSRF token too.
        for csrf in [None, Some("csrf-0"), Some("")] {
            let mut headers = vec![("cookie", admin.as_str())];
            if let Some(csrf) = csrf {
                headers.push(("x-csrf-token", csrf));
            }
            let (status, _, body) = api.send("PUT", "/backends/vllm", None, &headers, Some(backend())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: CSRF {csrf:?}: {body}");
        }
        assert!(api.store.get_backend("vllm").await.unwrap().is_none(), "{kind}");
        let (status, _, body) = api
            .send(
                "PUT",
                "/backends/vllm",
                None,
                &[("cookie", &admin), ("x-csrf-token", "csrf-1")],
                Some(backend()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        // A bearer token wins over a cookie, so a token's scope is never widened.
        let (status, _, _) = api
            .send(
                "DELETE",
                "/backends/vllm",
                Some(READER),
                &[("cookie", &admin), ("x-csrf-token", "csrf-1")],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}");
        let audit = api
            .store
            .audit_log(&AuditQuery {
                entity: Some("backend".into()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(audit[0].actor.kind, "user", "{kind}");
        assert_eq!(
            audit[0].actor.id, sessions[1].1,
            "{kind}: the audit log names the admin"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_edits_are_conditional_on_their_etag() {
    for api in Api::both().await {
        let kind = api.kind();
        seed(&api).await;
        let (status, _, account) = api.admin("POST", "/accounts", Some(json!({"name": "Etag Corp"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}");
        let account_path = format!("/accounts/{}", account["id"].as_str().unwrap());
        let (_, headers, _) = api.admin("GET", &account_path, None).await;
        let first = etag(&headers);
        // Someone else renames it in between.
        let (status, headers, _) = api
            .admin("PATCH", &account_path, Some(json!({"description": "theirs"})))
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let second = etag(&headers);
        assert_ne!(first, second, "{kind}: a change is a new version");
        let (status, _, body) = api
            .send(
                "PATCH",
                &account_path,
                Some(ADMIN),
                &[("if-match", &first)],
                Some(json!({"description": "mine"})),
            )
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::CONFLICT, &json!("stale_version")),
            "{kind}"
        );
        let (_, _, now) = api.admin("GET", &account_path, None).await;
        assert_eq!(now["description"], "theirs", "{kind}: a stale write changes nothing");
        let (status, _, body) = api
            .send(
                "PATCH",
                &account_path,
                Some(ADMIN),
                &[("if-match", &second)],
                Some(json!({"description": "mine"})),
            )
            .await;
        assert_eq!(
            (status, &body["description"]),
            (StatusCode::OK, &json!("mine")),
            "{kind}"
        );

        // Applications: state changes too.
        let (_, _, app) = api
            .admin(
                "POST",
                "/applications",
                Some(json!({"account_id": account["id"], "name": "e", "product": "granite", "plan": "open"})),
            )
            .await;
        let app_path = format!("/applications/{}", app["id"].as_str().unwrap());
        let (_, headers, _) = api.admin("GET", &app_path, None).await;
        let app_tag = etag(&headers);
        api.admin("PATCH", &app_path, Some(json!({"name": "renamed"}))).await;
        let (status, _, _) = api
            .send(
                "POST",
                &format!("{app_path}/suspend"),
                Some(ADMIN),
                &[("if-match", &app_tag)],
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{kind}: suspending a version that is gone"
        );
        let (_, headers, _) = api.admin("GET", &app_path, None).await;
        let (status, _, body) = api
            .send(
                "POST",
                &format!("{app_path}/suspend"),
                Some(ADMIN),
                &[("if-match", &etag(&headers))],
                None,
            )
            .await;
        assert_eq!(
            (status, &body["state"]),
            (StatusCode::OK, &json!("suspended")),
            "{kind}"
        );

        // Users: the tag versions the stored user, the answer hides its secrets.
        let (_, _, user) = api
            .admin(
                "POST",
                "/users",
                Some(json!({"account_id": account["id"], "email": (["e", "example.com"].join("@"))})),
            )
            .await;
        let user_path = format!("/users/{}", user["id"].as_str().unwrap());
        let (_, headers, _) = api.admin("GET", &user_path, None).await;
        let user_tag = etag(&headers);
        let (status, headers, _) = api
            .send(
                "PATCH",
                &user_path,
                Some(ADMIN),
                &[("if-match", &user_tag)],
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        let (status, _, _) = api
            .send(
                "PATCH",
                &user_path,
                Some(ADMIN),
                &[("if-match", &user_tag)],
                Some(json!({"role": "member"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        let (_, latest, _) = api.admin("GET", &user_path, None).await;
        assert_eq!(
            etag(&latest),
            etag(&headers),
            "{kind}: the PATCH answer's tag is the stored one"
        );
    }
}
