//! The OpenAPI document against the running API: it validates as OpenAPI
//! 3.1, every operation it lists is routed and guarded, the live API keeps
//! to it under generated requests (schemathesis), and Swagger UI renders it
//! in headless Chromium from assets the binary serves itself.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

mod harness;

use harness::{ADMIN, Api, READER};

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// Fails with how to install `module` when Python cannot import it.
fn require_python(module: &str, package: &str) {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs Python 3 with `{package}`: `python3 -m pip install {package}` (.ci/run installs it)"
    );
}

async fn document(api: &Api) -> Value {
    let response = api.http.get(format!("{}/openapi.json", api.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "served without a token");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                found.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_validates_as_openapi_3_1() {
    require_python("openapi_spec_validator", "openapi-spec-validator");
    let api = Api::embedded().await;
    let doc = document(&api).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, serde_json::to_value(maas_admin_api::openapi()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let output = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What an operator needs to use it: the token scheme, errors, ETags.
    assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer");
    let put_backend = &doc["paths"]["/backends/{name}"]["put"];
    assert_eq!(
        put_backend["responses"]["409"]["$ref"], "#/components/responses/Conflict",
        "{put_backend}"
    );
    assert!(put_backend["responses"]["200"]["headers"]["ETag"].is_object());
    let params = put_backend["parameters"].to_string();
    assert!(
        params.contains("If-Match") && params.contains("If-None-Match"),
        "{params}"
    );
    let patterns = doc["components"]["schemas"]["Backend"]["properties"]["system_name"].to_string();
    assert!(
        patterns.contains("pattern"),
        "validation rules are documented: {patterns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_guarded() {
    let api = Api::embedded().await;
    let doc = document(&api).await;
    let operations = operations(&doc);
    assert!(operations.len() >= 40, "{} operations", operations.len());
    for (method, path) in &operations {
        // Any value for path parameters: the token is checked first.
        let concrete: String = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{}{concrete}", api.base);
        let response = api.http.request(method.parse().unwrap(), &url).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}: documented, so routed and guarded"
        );
        if method != "GET" {
            let response = api
                .http
                .request(method.parse().unwrap(), &url)
                .bearer_auth(READER)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} with a read token"
            );
            let documented = &doc["paths"][path][method.to_lowercase()]["responses"]["403"];
            assert!(documented.is_object(), "{method} {path} documents its 403");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_server_error_and_answers_match_the_schema() {
    require_python("schemathesis", "schemathesis");
    let api = Api::embedded().await;
    // Something to find for the operations that read and change objects.
    for (method, path, body) in [
        ("PUT", "/backends/vllm", r#"{"urls":["http://127.0.0.1:9"]}"#),
        ("PUT", "/products/chat", r#"{"backend":"vllm","models":["m"]}"#),
        (
            "PUT",
            "/products/chat/plans/basic",
            r#"{"published":true,"default":true}"#,
        ),
    ] {
        let response = api
            .http
            .request(method.parse().unwrap(), format!("{}{path}", api.base))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
    }
    let report = tempfile::tempdir().unwrap();
    let base = api.base.clone();
    let output = tokio::process::Command::new("schemathesis")
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        // Every check but "a schema-valid request is accepted": some rules
        // span fields or objects (`from` before `to`, a plan that exists,
        // an expiry in the future) and cannot be said in a schema.
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "12", "--seed", "20261126", "--no-color"])
        .args(["--request-timeout", "10"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(report.path())
        .output()
        .await
        .expect("schemathesis: `python3 -m pip install schemathesis` (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found the API breaking its document:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Tested: "), "{stdout}");
    let summary = stdout.lines().filter(|l| l.contains("generated")).collect::<Vec<_>>();
    eprintln!("schemathesis: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_from_the_binary_in_a_browser() {
    let api = Api::embedded().await;
    let page = api.http.get(format!("{}/docs", api.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script: {html}");
    for asset in [
        "docs/assets/swagger-ui.css",
        "docs/assets/swagger-ui-bundle.js",
        "docs/init.js",
    ] {
        assert!(html.contains(asset), "{asset} in {html}");
        let response = api.http.get(format!("{}/{asset}", api.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }

    let node_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/node");
    let installed = std::path::Path::new(node_dir)
        .join("node_modules/playwright-core/package.json")
        .exists();
    assert!(
        installed && std::path::Path::new("/usr/bin/chromium").exists(),
        "this test needs Debian's chromium and npm playwright-core: \
         `apt-get install chromium && npm ci --prefix tests/node` (.ci/run does both)"
    );
    let artifacts = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/artifacts"));
    std::fs::create_dir_all(artifacts).unwrap();
    let screenshot = artifacts.join("admin-api-docs.png");
    let output = tokio::process::Command::new("node")
        .arg(format!("{node_dir}/api_docs_browser.mjs"))
        .arg(format!("{}/docs", api.base))
        .arg(&screenshot)
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    let doc = document(&api).await;
    assert_eq!(
        seen["operations"].as_u64().unwrap() as usize,
        operations(&doc).len(),
        "every operation is listed: {seen}"
    );
    assert!(seen["title"].as_str().unwrap().starts_with("MaaS admin API"), "{seen}");
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "no console errors or CSP violations"
    );
    assert_eq!(
        seen["foreign_requests"],
        serde_json::json!([]),
        "nothing fetched from elsewhere"
    );
    assert!(screenshot.exists());
}
