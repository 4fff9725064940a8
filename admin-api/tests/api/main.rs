//! The admin API over HTTP against a real store, on both backends: authz,
//! catalog CRUD with ETags, validation errors naming fields, pagination,
//! tenants, promotion and the audit trail of API writes.

use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "../harness/mod.rs"]
mod harness;

mod catalog;
mod tenancy;

use harness::Api;

fn etag(headers: &reqwest::header::HeaderMap) -> String {
    headers["etag"].to_str().unwrap().to_owned()
}

fn backend() -> Value {
    json!({"urls": ["http://127.0.0.1:8000"]})
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
