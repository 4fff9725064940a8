//! The simulator's answers against OpenAI's schema, as the official npm
//! SDK's types carry it (tests/node/openai_conformance.mjs: the TypeScript
//! compiler in strict mode). Every shape the simulator sends is checked:
//! chat (text, `n` choices, tool calls, JSON documents) whole and streamed,
//! completions whole and streamed, embeddings, and the Responses API whole
//! and streamed. A copy with a required member taken out must fail, so the
//! check is known to bite.

use serde_json::{Value, json};

fn node_dir() -> &'static str {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/node");
    for package in ["openai", "typescript"] {
        assert!(
            std::path::Path::new(dir)
                .join("node_modules")
                .join(package)
                .join("package.json")
                .exists(),
            "this test needs the npm packages of tests/node: `npm ci --prefix tests/node` (.ci/run does it)"
        );
    }
    dir
}

/// The `data:` payloads of a stream, `[DONE]` left out.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_in_openais_schema() {
    let dir = node_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = maas_sim::SimConfig::default();
    for model in &mut config.models {
        (model.ttft_ms, model.itl_ms) = (0, 0);
    }
    let model = config.models[0].id.clone();
    tokio::spawn(maas_sim::serve(listener, config, std::future::pending()));
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{base}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{body}");
            response.text().await.unwrap()
        }
    };
    let hi = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let schema = json!({"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}});
    let chats = [
        ("chat", json!({"model": model, "messages": hi, "max_tokens": 5})),
        (
            "chat n=2",
            json!({"model": model, "messages": hi, "max_tokens": 5, "n": 2}),
        ),
        (
            "chat tool call",
            json!({"model": model, "messages": hi, "tools": tools}),
        ),
        (
            "chat json_schema",
            json!({"model": model, "messages": hi, "response_format": schema}),
        ),
    ];
    let mut cases = Vec::new();
    for (name, body) in &chats {
        let whole: Value = serde_json::from_str(&post("/v1/chat/completions", body.clone()).await).unwrap();
        cases.push(json!({"name": name, "type": "ChatCompletion", "value": whole}));
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true, "continuous_usage_stats": true});
        for (i, chunk) in events(&post("/v1/chat/completions", streamed).await)
            .into_iter()
            .enumerate()
        {
            cases.push(json!({"name": format!("{name} chunk {i}"), "type": "ChatCompletionChunk", "value": chunk}));
        }
    }
    let completion = json!({"model": model, "prompt": "Once upon a time", "max_tokens": 4});
    let whole: Value = serde_json::from_str(&post("/v1/completions", completion.clone()).await).unwrap();
    cases.push(json!({"name": "completion", "type": "Completion", "value": whole}));
    let mut streamed = completion;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    for (i, chunk) in events(&post("/v1/completions", streamed).await).into_iter().enumerate() {
        cases.push(json!({"name": format!("completion chunk {i}"), "type": "CompletionChunk", "value": chunk}));
    }
    let embedding: Value =
        serde_json::from_str(&post("/v1/embeddings", json!({"model": model, "input": ["a b", "c"]})).await).unwrap();
    cases.push(json!({"name": "embeddings", "type": "CreateEmbeddingResponse", "value": embedding}));
    let response = json!({"model": model, "input": "Hello", "instructions": "Be brief", "max_output_tokens": 4});
    let whole: Value = serde_json::from_str(&post("/v1/responses", response.clone()).await).unwrap();
    cases.push(json!({"name": "response", "type": "Response", "value": whole}));
    let mut streamed = response;
    streamed["stream"] = json!(true);
    for (i, event) in events(&post("/v1/responses", streamed).await).into_iter().enumerate() {
        cases.push(json!({"name": format!("response event {i}"), "type": "ResponseStreamEvent", "value": event}));
    }
    // Known bad: the check must catch a required member left out.
    let mut broken = cases[0]["value"].clone();
    broken["choices"][0]["message"]
        .as_object_mut()
        .unwrap()
        .remove("refusal");
    cases.push(json!({"name": "broken on purpose", "type": "ChatCompletion", "value": broken}));

    let file = tempfile_path();
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(format!("{dir}/openai_conformance.mjs"))
        .arg(&file)
        .output()
        .await
        .expect("node runs (apt-get install nodejs)");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["checked"], cases.len());
    assert!(cases.len() > 40, "every chunk of every stream: {}", cases.len());
    let errors = report["errors"].as_array().unwrap();
    let (expected, unexpected): (Vec<&Value>, Vec<&Value>) =
        errors.iter().partition(|e| e["name"] == "broken on purpose");
    assert!(
        unexpected.is_empty(),
        "answers outside OpenAI's schema: {unexpected:#?}"
    );
    assert_eq!(expected.len(), 1, "{errors:?}");
    assert!(
        expected[0]["message"]
            .as_str()
            .unwrap()
            .contains("'refusal' is missing"),
        "{errors:?}"
    );
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("maas-sim-conformance-{}.json", std::process::id()))
}
