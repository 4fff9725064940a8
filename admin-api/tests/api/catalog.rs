//! Tokens, catalog objects with ETags, validation errors and pages.

use maas_store::AuditQuery;
use reqwest::StatusCode;
use serde_json::json;

use super::harness::{ADMIN, Api, READER};
use super::{backend, etag};

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
