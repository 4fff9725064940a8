//! The simulator over real HTTP: wire shapes, counting, timing, failures.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use maas_sim::{Failures, SimConfig, TokenRange};
use serde_json::{Value, json};

mod support;

use support::{model, start};

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[tokio::test]
async fn chat_completion_counts_by_the_rule() {
    let sim = start(model(|_| {})).await;
    let body = json!({"model": "m", "max_tokens": 10,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there world"}]});
    let response: Value = sim
        .post("/v1/chat/completions", "app_a", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(response["object"], "chat.completion");
    let content = response["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        words(content),
        10,
        "max_tokens below the natural length caps the output"
    );
    assert_eq!(response["choices"][0]["finish_reason"], "length");
    assert_eq!(
        response["usage"],
        json!({"prompt_tokens": 5 + 6 + 3, "completion_tokens": 10, "total_tokens": 24})
    );

    let response: Value = sim
        .post(
            "/v1/chat/completions",
            "app_a",
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let completion = response["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        (20..=40).contains(&completion),
        "natural length from the range: {completion}"
    );
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    let usage = sim.usage("app_a").await;
    assert_eq!(usage["requests"], 2);
    assert_eq!(usage["prompt_tokens"], 14 + 7);
    assert_eq!(usage["completion_tokens"], 10 + completion);
}

#[tokio::test]
async fn streams_follow_vllm_shapes_and_usage_options() {
    let sim = start(model(|_| {})).await;
    let request = |options: Value| {
        json!({"model": "m", "max_tokens": 4, "stream": true, "stream_options": options,
               "messages": [{"role": "user", "content": "one two"}]})
    };
    let plain = sim.events("/v1/chat/completions", request(json!(null))).await;
    assert_eq!(plain.len(), 1 + 4 + 1 + 1, "role, 4 tokens, finish, [DONE]");
    assert_eq!(plain.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&plain[0]).unwrap();
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(first["object"], "chat.completion.chunk");
    let finish: Value = serde_json::from_str(&plain[5]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert!(plain.iter().all(|e| !e.contains("usage")), "no usage unless asked for");

    let with_usage = sim
        .events("/v1/chat/completions", request(json!({"include_usage": true})))
        .await;
    assert_eq!(with_usage.len(), 8);
    let last: Value = serde_json::from_str(&with_usage[6]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12})
    );
    assert!(
        with_usage[..6].iter().all(|e| !e.contains("usage")),
        "only the last chunk carries usage"
    );

    let continuous = sim
        .events(
            "/v1/chat/completions",
            request(json!({"include_usage": true, "continuous_usage_stats": true})),
        )
        .await;
    let running: Vec<u64> = continuous[..6]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["usage"]["completion_tokens"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(running, [0, 1, 2, 3, 4, 4]);

    let completion = sim
        .events(
            "/v1/completions",
            json!({"model": "m", "prompt": "a b c", "max_tokens": 3, "stream": true}),
        )
        .await;
    assert_eq!(completion.len(), 3 + 1 + 1, "no role chunk for completions");
    let chunk: Value = serde_json::from_str(&completion[0]).unwrap();
    assert_eq!(chunk["object"], "text_completion");
    assert_eq!(words(chunk["choices"][0]["text"].as_str().unwrap()), 1);
    assert_eq!(sim.usage("app").await["completion_tokens"], 4 * 3 + 3);
}

#[tokio::test]
async fn embeddings_in_float_and_base64() {
    let sim = start(model(|m| m.embedding_dimensions = 8)).await;
    let response: Value = sim
        .post("/v1/embeddings", "e", json!({"model": "m", "input": ["a b c", "d"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(response["data"].as_array().unwrap().len(), 2);
    assert_eq!(response["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(response["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));
    let encoded: Value = sim
        .post(
            "/v1/embeddings",
            "e",
            json!({"model": "m", "input": "x", "encoding_format": "base64", "dimensions": 3}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        encoded["data"][0]["embedding"].as_str().unwrap().len(),
        16,
        "3 floats = 12 bytes = 16 base64 chars"
    );
    assert_eq!(sim.usage("e").await["prompt_tokens"], 5);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let sim = start(model(|m| m.max_model_len = 50)).await;
    let unknown = sim
        .post("/v1/chat/completions", "a", json!({"model": "gpt-9", "messages": []}))
        .await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "not_found_error");

    let garbage = sim
        .client
        .post(format!("{}/v1/chat/completions", sim.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(
        garbage.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid request")
    );

    let too_long = sim
        .post(
            "/v1/chat/completions",
            "a",
            json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(too_long.status(), 400);
    assert_eq!(too_long.json::<Value>().await.unwrap()["error"]["param"], "max_tokens");
    let none = sim
        .post("/v1/completions", "a", json!({"model": "m", "prompt": "x", "n": 0}))
        .await;
    assert_eq!(none.status(), 400);
    assert_eq!(none.json::<Value>().await.unwrap()["error"]["param"], "n");
    let nowhere = sim.client.get(format!("{}/v2/nothing", sim.base)).send().await.unwrap();
    assert_eq!(nowhere.status(), 404);
    assert!(
        sim.usage("a").await.is_null(),
        "refused requests are not counted as served"
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_is_counted_as_aborted() {
    let sim = start(model(|m| {
        m.itl_ms = 20;
        m.output_tokens = TokenRange { min: 200, max: 200 };
    }))
    .await;
    let response = sim
        .post(
            "/v1/chat/completions",
            "quitter",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    let mut body = response.bytes_stream();
    let mut seen = 0;
    while seen < 3 {
        let chunk = body.next().await.unwrap().unwrap();
        seen += String::from_utf8_lossy(&chunk).matches("data: ").count();
    }
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let usage = sim.usage("quitter").await;
        if usage["aborted_streams"] == 1 {
            let sent = usage["completion_tokens"].as_u64().unwrap();
            assert!(
                (2..200).contains(&sent),
                "tokens sent before the hang-up are counted: {sent}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the abort was not counted: {usage}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn timing_follows_the_model() {
    let sim = start(model(|m| {
        m.ttft_ms = 60;
        m.itl_ms = 15;
        m.failures.slow_headers_ms = 40;
    }))
    .await;
    let started = Instant::now();
    let events = sim
        .events(
            "/v1/chat/completions",
            json!({"model": "m", "max_tokens": 5, "stream": true, "messages": []}),
        )
        .await;
    assert_eq!(events.len(), 8);
    assert!(
        started.elapsed() >= Duration::from_millis(40 + 60 + 4 * 15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn failures_are_injected() {
    let sim = start(model(|m| {
        m.failures = Failures {
            error_rate: 1.0,
            error_status: 429,
            ..Failures::default()
        };
    }))
    .await;
    let response = sim
        .post("/v1/chat/completions", "f", json!({"model": "m", "messages": []}))
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["type"],
        "rate_limit_error"
    );
    assert_eq!(sim.usage("f").await["injected_errors"], 1);

    let sim = start(model(|m| {
        m.itl_ms = 5;
        m.failures.reset_rate = 1.0;
    }))
    .await;
    let response = sim
        .post(
            "/v1/chat/completions",
            "r",
            json!({"model": "m", "stream": true, "messages": []}),
        )
        .await;
    assert_eq!(response.status(), 200, "the reset comes mid-stream");
    assert!(response.text().await.is_err(), "the stream is cut off");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sim.usage("r").await["reset_streams"] != 1 {
        assert!(Instant::now() < deadline, "the reset was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_same_seed_replays_the_same_outputs() {
    async fn run(seed: u64) -> Vec<String> {
        let mut config = model(|_| {});
        config.seed = seed;
        let sim = start(config).await;
        let mut out = Vec::new();
        for _ in 0..3 {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "same"}]});
            let response: Value = sim.post("/v1/chat/completions", "d", body).await.json().await.unwrap();
            out.push(
                response["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        out
    }
    let first = run(11).await;
    assert_eq!(first, run(11).await);
    assert_ne!(first, run(12).await);
    assert_ne!(first[0], first[1], "requests in a run differ");
}

#[tokio::test]
async fn models_health_version_and_metrics() {
    let sim = start(SimConfig::default()).await;
    let models = sim.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tinyllama-1.1b-chat", "granite-3.1-8b-instruct"]);
    assert_eq!(
        sim.client
            .get(format!("{}/health", sim.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let version = sim.get_json("/version").await;
    assert!(version["version"].as_str().unwrap().starts_with("maas-sim "));
    let body =
        json!({"model": "granite-3.1-8b-instruct", "max_tokens": 2, "messages": [{"role": "user", "content": "a"}]});
    sim.post("/v1/chat/completions", "x", body).await.text().await.unwrap();
    let metrics = sim.text("/metrics").await;
    assert!(
        metrics.contains("sim_requests_total{model=\"granite-3.1-8b-instruct\",endpoint=\"chat\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sim_generation_tokens_total{model=\"granite-3.1-8b-instruct\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sim_requests_running{model=\"granite-3.1-8b-instruct\"} 0"),
        "{metrics}"
    );
    let reset = sim
        .client
        .delete(format!("{}/sim/usage", sim.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert!(sim.usage("x").await.is_null());
}

/// What vLLM's pydantic models accept, the simulator accepts: `null` for
/// absent, whole decimals, negative seeds.
#[tokio::test]
async fn requests_are_read_as_vllm_reads_them() {
    let sim = start(model(|_| {})).await;
    let hi = json!([{"role": "user", "content": "hi"}]);
    for body in [
        json!({"model": "m", "messages": hi, "stream": null, "n": 1.0, "seed": -3}),
        json!({"model": "m", "messages": hi, "max_tokens": 5.0, "stream_options": null}),
        json!({"model": "m", "messages": hi, "max_completion_tokens": null, "tools": null, "response_format": null}),
    ] {
        let response = sim.post("/v1/chat/completions", "lenient", body.clone()).await;
        assert_eq!(response.status(), 200, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["choices"][0]["message"]["refusal"].is_null(), "{answer}");
        assert!(
            answer["choices"][0]["message"].get("refusal").is_some(),
            "refusal: null is present"
        );
    }
    let response = sim
        .post(
            "/v1/responses",
            "lenient",
            json!({"model": "m", "input": "hi", "stream": null, "max_output_tokens": 4.0}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    for member in ["error", "instructions", "metadata", "temperature", "top_p"] {
        assert!(answer.get(member).is_some(), "{member}: {answer}");
    }
    let refused = sim
        .post(
            "/v1/chat/completions",
            "lenient",
            json!({"model": "m", "messages": hi, "n": 1.5}),
        )
        .await;
    assert_eq!(refused.status(), 400);
}

/// `n` choices side by side, whole and streamed, all of them billed.
#[tokio::test]
async fn n_choices_are_generated_and_counted() {
    let sim = start(model(|_| {})).await;
    let body = json!({"model": "m", "n": 3, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let answer: Value = sim
        .post("/v1/chat/completions", "n", body.clone())
        .await
        .json()
        .await
        .unwrap();
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let words_out: u64 = choices
        .iter()
        .map(|c| words(c["message"]["content"].as_str().unwrap()))
        .sum();
    assert_eq!(answer["usage"]["completion_tokens"], words_out);
    assert_eq!(words_out, 12, "4 tokens each");

    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = sim.events("/v1/chat/completions", streamed).await;
    let mut text = [String::new(), String::new(), String::new()];
    let mut finished = 0;
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        for choice in chunk["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            text[index].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            finished += usize::from(choice["finish_reason"].is_string());
        }
    }
    assert_eq!(finished, 3);
    assert!(text.iter().all(|t| words(t) == 4), "{text:?}");
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(sim.usage("n").await["completion_tokens"], 12, "whole");
    assert_eq!(sim.usage("app").await["completion_tokens"], 12, "streamed");
}

/// Tools are called (arguments valid against the tool's parameters), a
/// tool's result is answered in words, and `response_format` gives JSON.
#[tokio::test]
async fn tool_calls_and_response_formats() {
    let sim = start(model(|_| {})).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}
    }}}]);
    let ask = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let answer: Value = sim
        .post(
            "/v1/chat/completions",
            "tools",
            json!({"model": "m", "messages": ask, "tools": tools}),
        )
        .await
        .json()
        .await
        .unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("chatcmpl-tool-"));
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        arguments["city"].is_string() && arguments["days"].is_u64(),
        "{arguments}"
    );
    assert!(choice["message"]["content"].is_null());

    // Streamed: the id and name first, then the arguments in pieces.
    let streamed = json!({"model": "m", "messages": ask, "tools": tools, "stream": true, "tool_choice": "required"});
    let events = sim.events("/v1/chat/completions", streamed).await;
    let mut arguments = String::new();
    let mut names = Vec::new();
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        if let Some(call) = chunk["choices"][0]["delta"]["tool_calls"].get(0) {
            if let Some(name) = call["function"]["name"].as_str() {
                names.push(name.to_owned());
            }
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(names, ["get_weather"], "the name once");
    assert!(
        serde_json::from_str::<Value>(&arguments).unwrap()["city"].is_string(),
        "{arguments}"
    );

    // After the tool's result: words.
    let answered = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    ]);
    let answer: Value = sim
        .post(
            "/v1/chat/completions",
            "tools",
            json!({"model": "m", "messages": answered, "tools": tools}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(answer["choices"][0]["message"]["content"].is_string(), "{answer}");

    let schema = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": {
        "type": "object", "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}
    }}});
    let answer: Value = sim
        .post(
            "/v1/chat/completions",
            "tools",
            json!({"model": "m", "messages": ask, "response_format": schema}),
        )
        .await
        .json()
        .await
        .unwrap();
    let person: Value = serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(person["name"].is_string() && person["age"].is_u64(), "{person}");
    let object = json!({"type": "json_object"});
    let answer: Value = sim
        .post(
            "/v1/chat/completions",
            "tools",
            json!({"model": "m", "messages": ask, "response_format": object}),
        )
        .await
        .json()
        .await
        .unwrap();
    let parsed: Value = serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(parsed.is_object());
    // Every token billed is a token sent.
    let served = sim.usage("tools").await;
    assert!(served["completion_tokens"].as_u64().unwrap() > 0, "{served}");
}
