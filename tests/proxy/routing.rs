//! Routing by path prefix, host and model; the model list per key; body
//! sizes far beyond Pingora's retry buffer; routing errors.

use super::harness::{CATALOG, Gateway, error_of};

fn prompt_of_bytes(bytes: usize) -> String {
    // Words of 4 characters: the simulator counts one token per word.
    "word ".repeat(bytes / 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_prefix_host_and_model_with_large_prompts() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("routing-app", "alpha", "open").await;
    let base = gw.base();
    let body = serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3});

    let by_prefix = gw
        .http
        .post(format!("{base}/alpha/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body);
    let by_host = gw
        .http
        .post(format!("{base}/v1/chat/completions"))
        .header("host", "alpha.test")
        .bearer_auth(&key)
        .json(&body);
    let by_model = gw
        .http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body);
    for (route, request) in [("prefix", by_prefix), ("host", by_host), ("model", by_model)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{route}");
        let reply: serde_json::Value = response.json().await.unwrap();
        assert_eq!(reply["usage"]["completion_tokens"], 3, "{route}: {reply}");
    }

    // Prompts around and far beyond the 64 KiB retry buffer, on both routes.
    gw.http
        .delete(format!("{}/sim/usage", gw.sim_base))
        .send()
        .await
        .unwrap();
    let mut expected_prompt_tokens = 0u64;
    for (path, size) in [
        ("/v1/chat/completions", 64 * 1024 - 100),
        ("/v1/chat/completions", 64 * 1024 + 7),
        ("/alpha/v1/chat/completions", 200 * 1024),
        ("/v1/chat/completions", 1024 * 1024),
    ] {
        let prompt = prompt_of_bytes(size);
        let body =
            serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": prompt}], "max_tokens": 2});
        let response = gw
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} with a {size} byte prompt");
        let reply: serde_json::Value = response.json().await.unwrap();
        let prompt_tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
        // The simulator counts words (+3 per message, +3 per prompt): the whole body arrived.
        assert_eq!(prompt_tokens, (size / 5) as u64 + 6, "{path}, {size} bytes");
        expected_prompt_tokens += prompt_tokens;
    }
    let served = gw.sim_usage(&app_id).await;
    assert_eq!(served["prompt_tokens"], expected_prompt_tokens, "{served}");

    // Bodies over the limit (8 MiB by default) get 413, even sent whole.
    let huge = serde_json::json!({"model": "chat-a", "messages": [{"role": "user", "content": "x".repeat(9 << 20)}]});
    let response = gw
        .http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&huge)
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].as_str()), (413, Some("request_too_large")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_per_key_and_routing_errors_are_openai_shaped() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (_, alpha) = gw.app_key("alpha-app", "alpha", "open").await;
    let (_, beta) = gw.app_key("beta-app", "beta", "open").await;
    let base = gw.base();
    let models = |key: &str| {
        let request = gw.http.get(format!("{base}/v1/models")).bearer_auth(key.to_owned());
        async move {
            let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            let ids: Vec<String> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect();
            ids
        }
    };
    assert_eq!(models(&alpha).await, ["chat-a", "embed-a"]);
    assert_eq!(models(&beta).await, ["chat-b"]);

    let (status, error) = error_of(gw.chat(base, &alpha, "no-such-model").await).await;
    assert_eq!(
        (status, error["code"].as_str(), error["param"].as_str()),
        (404, Some("model_not_found"), Some("model"))
    );
    let (status, error) = error_of(gw.chat(base, &alpha, "chat-b").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("model_not_found")),
        "another product's model looks like one that does not exist"
    );
    let response = gw
        .http
        .post(format!("{base}/beta/v1/chat/completions"))
        .bearer_auth(&alpha)
        .json(&serde_json::json!({"model": "chat-b", "messages": []}))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("model_not_found")),
        "a product route of another product"
    );
    let response = gw
        .http
        .post(format!("{base}/alpha/v1/chat/completions"))
        .bearer_auth(&alpha)
        .json(&serde_json::json!({"model": "chat-b", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 404, "a model the product does not serve");

    // One model, by id, on the shared endpoint and on a product's.
    for (path, key, expected) in [
        ("/v1/models/chat-a", &alpha, Some("chat-a")),
        ("/v1/models/embed-a", &alpha, Some("embed-a")),
        ("/alpha/v1/models/chat-a", &alpha, Some("chat-a")),
        ("/v1/models/chat-b", &alpha, None),
        ("/alpha/v1/models/chat-b", &alpha, None),
        ("/v1/models/no-such-model", &alpha, None),
        ("/beta/v1/models/chat-b", &alpha, None),
    ] {
        let response = gw
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        match expected {
            Some(id) => {
                assert_eq!(response.status(), 200, "{path}");
                let model: serde_json::Value = response.json().await.unwrap();
                assert_eq!(
                    (model["id"].as_str(), model["object"].as_str()),
                    (Some(id), Some("model"))
                );
            }
            None => {
                let (status, error) = error_of(response).await;
                assert_eq!(
                    (status, error["code"].as_str()),
                    (404, Some("model_not_found")),
                    "{path}"
                );
            }
        }
    }
    // A method the path does not take: 405 with `Allow`, before any key.
    for (method, path, allow) in [
        (reqwest::Method::GET, "/v1/chat/completions", "POST"),
        (reqwest::Method::GET, "/alpha/v1/chat/completions", "POST"),
        (reqwest::Method::PUT, "/v1/embeddings", "POST"),
        (reqwest::Method::POST, "/v1/models", "GET"),
        (reqwest::Method::DELETE, "/alpha/v1/models/chat-a", "GET"),
    ] {
        let response = gw
            .http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let (status, error) = error_of(response).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
    }
    let response = gw
        .http
        .post(format!("{base}/alpha/v1/images/generations"))
        .bearer_auth(&alpha)
        .json(&serde_json::json!({"prompt": "a cat"}))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 404);
    assert!(
        error["message"].as_str().unwrap().contains("No mapping rule"),
        "{error}"
    );
    let response = gw
        .http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&alpha)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 400, "invalid JSON");
    let (status, _) = error_of(gw.http.get(format!("{base}/nowhere")).send().await.unwrap()).await;
    assert_eq!(status, 404);

    // CORS: the preflight is answered by the proxy, without a key.
    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, format!("{base}/alpha/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let allow = |name: &str| preflight.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        allow("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        allow("access-control-allow-headers").as_deref(),
        Some("Authorization, Content-Type, Accept")
    );
    let refused = gw
        .http
        .request(reqwest::Method::OPTIONS, format!("{base}/alpha/v1/chat/completions"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let response = gw
        .http
        .get(format!("{base}/alpha/v1/models"))
        .header("origin", "https://app.example.com")
        .bearer_auth(&alpha)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
}
