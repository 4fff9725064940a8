//! Class 7: prompts that cost more than they weigh. A hold of a quarter of
//! the body's bytes let prompts of token ids, one-letter words, digits or
//! images through at a fraction of their cost; holds now never fall below
//! what the model counts, so no budget is served past, one request at a
//! time or fifty at once, on Redis (two strict proxies) and on the
//! embedded store.

use std::time::Duration;

use super::fixtures::{EmbeddedUp, await_stored, gateway};

/// The plan's budget (catalog.yaml, `bounded/two-thousand`).
const BUDGET: u64 = 2000;
/// Tokens of each text prompt as the simulator counts them, about.
const WORDS: usize = 600;

/// The kinds of prompt: `(path, body)`.
fn prompts() -> Vec<(&'static str, String)> {
    let ids = vec!["7"; WORDS].join(",");
    let letters = vec!["a"; WORDS].join(" ");
    let digits: Vec<String> = (0..WORDS).map(|i| (i % 10).to_string()).collect();
    let chat = |model: &str, content: &str| {
        format!(r#"{{"model":"{model}","max_tokens":5,"messages":[{{"role":"user","content":{content}}}]}}"#)
    };
    vec![
        (
            "/bounded/v1/completions",
            format!(r#"{{"model":"words-a","max_tokens":5,"prompt":[{ids}]}}"#),
        ),
        (
            "/bounded/v1/chat/completions",
            chat("words-a", &format!("\"{letters}\"")),
        ),
        (
            "/bounded/v1/chat/completions",
            chat("words-a", &format!("\"{}\"", digits.join(" "))),
        ),
        (
            "/bounded/v1/chat/completions",
            chat(
                "vision-a",
                r#"[{"type":"text","text":"what is it"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]"#,
            ),
        ),
        // vLLM takes a part without `type` by its key.
        (
            "/bounded/v1/chat/completions",
            chat("vision-a", r#"[{"image_url":{"url":"https://example.com/cat.png"}}]"#),
        ),
    ]
}

/// 50 requests at once, the four kinds in turn, spread over `bases`; the statuses.
async fn storm(bases: &[String], key: &str) -> Vec<u16> {
    let http = reqwest::Client::new();
    let prompts = prompts();
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let (path, body) = prompts[i % prompts.len()].clone();
            let (http, base, key) = (http.clone(), bases[i % bases.len()].clone(), key.to_owned());
            tokio::spawn(async move {
                let response = http
                    .post(format!("{base}{path}"))
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                assert!(status == 200 || status == 429, "{path}: {status} {text}");
                status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses
}

fn check(what: &str, statuses: &[u16], billed: u64, served: u64) {
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "{what}: {admitted} of {} admitted, {served} of {BUDGET} tokens served",
        statuses.len()
    );
    assert!(
        served <= BUDGET,
        "{what}: the model server served {served} of a {BUDGET}-token budget"
    );
    assert_eq!(billed, served, "{what}: billed what was served");
    assert!(admitted >= 1, "{what}: a prompt that fits is admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prompts_that_cost_more_than_they_weigh_never_overrun_a_budget_on_redis() {
    let (gw, _capture) = gateway(2).await;
    let bases: Vec<String> = gw.proxies.iter().map(|p| p.base.clone()).collect();
    let served = |usage: serde_json::Value| {
        usage["prompt_tokens"].as_u64().unwrap_or(0) + usage["completion_tokens"].as_u64().unwrap_or(0)
    };
    // Fifty at once.
    let (app, key) = gw.app_key("bounded-storm", "bounded", "two-thousand").await;
    let statuses = storm(&bases, &key).await;
    let total = served(gw.sim_usage(&app).await);
    let billed = await_stored(&gw, &app, "total_tokens", |t| t == total).await;
    check("50 at once", &statuses, billed, total);
    // One at a time, each kind until the budget refuses it.
    for (n, (path, body)) in prompts().into_iter().enumerate() {
        let (app, key) = gw.app_key(&format!("bounded-seq-{n}"), "bounded", "two-thousand").await;
        let mut statuses = Vec::new();
        loop {
            let response = gw
                .http
                .post(format!("{}{path}", bases[statuses.len() % 2]))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
            if response.status() == 429 {
                let error: serde_json::Value = response.json().await.unwrap();
                assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
                break;
            }
            assert_eq!(response.status(), 200, "{path}");
            response.bytes().await.unwrap();
            // Usage is settled after the answer.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let total = served(gw.sim_usage(&app).await);
        let billed = await_stored(&gw, &app, "total_tokens", |t| t == total).await;
        check(&format!("{path} one at a time"), &statuses, billed, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prompts_that_cost_more_than_they_weigh_never_overrun_a_budget_on_the_embedded_store() {
    let catalog = format!(
        "products:\n  - system_name: bounded\n    path_prefix: /bounded\n    models: [words-a, vision-a]\n    \
         backend: sim\n    model_settings: {{vision-a: {{image_tokens: 1500}}}}\n\
         plans:\n  - product: bounded\n    system_name: two-thousand\n    \
         limits: [{{metric: total_tokens, period: eternity, value: {BUDGET}}}]\n"
    );
    let mut up = EmbeddedUp::start(&catalog, &[("Bounded", "bounded-app", "bounded", "two-thousand")]);
    let statuses = storm(&[up.base.clone()], &up.keys[0].clone()).await;
    let (billed, served) = up.stop_and_count("Bounded", "bounded-app").await;
    check("50 at once, embedded", &statuses, billed, served);
}

/// With the model's tokenizer configured, a prompt whose byte bound does
/// not fit what is left is counted exactly and admitted, its hold the
/// tokenizer's count; without it, the same prompt is refused. Either way
/// the budget is never served past.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_models_tokenizer_admits_what_its_bound_would_not() {
    let corpus = ["the model serves tokens quickly and every request is metered by the gateway with care"; 64];
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    std::fs::write(&tokenizer, maas_sim::tokens::train_tokenizer(&corpus, 400).unwrap()).unwrap();
    let tokenizer = tokenizer.display().to_string();
    let models = format!(
        "models:\n  - {{id: tok-a, ttft_ms: 0, itl_ms: 0, output_tokens: {{min: 20, max: 40}}, tokenizer: \"{tokenizer}\"}}\n"
    );
    let (mut sim, sim_base) = crate::harness::spawn_sim_with(dir.path(), &models);
    let catalog = format!(
        "backends:\n  - {{system_name: toksim, urls: [\"{sim_base}\"]}}\n\
         products:\n\
         \x20 - {{system_name: tok, path_prefix: /tok, models: [tok-a], backend: toksim, \
                model_settings: {{tok-a: {{tokenizer: \"{tokenizer}\", message_tokens: 4, template_tokens: 4}}}}}}\n\
         \x20 - {{system_name: untok, path_prefix: /untok, models: [tok-a], backend: toksim, \
                model_settings: {{tok-a: {{message_tokens: 4, template_tokens: 4}}}}}}\n\
         \x20 - {{system_name: tokcut, path_prefix: /tokcut, models: [tok-a], backend: toksim, \
                metering: {{stream_usage: final}}, \
                model_settings: {{tok-a: {{tokenizer: \"{tokenizer}\", message_tokens: 4, template_tokens: 4}}}}}}\n\
         plans:\n\
         \x20 - {{product: tok, system_name: budget, limits: [{{metric: total_tokens, period: eternity, value: 1000}}]}}\n\
         \x20 - {{product: tokcut, system_name: open}}\n\
         \x20 - {{product: untok, system_name: budget, limits: [{{metric: total_tokens, period: eternity, value: 1000}}]}}\n"
    );
    let gw = crate::harness::Gateway::start(&catalog, 2, "strict").await;
    let text = corpus[..16].join(" ");
    assert!(text.len() > 1000, "the byte bound ({}) exceeds the budget", text.len());
    let body = serde_json::json!({"model": "tok-a", "max_tokens": 5, "messages": [{"role": "user", "content": text}]});
    let ask = |product: &'static str, key: String, proxy: usize| {
        let (http, base, body) = (gw.http.clone(), gw.proxies[proxy].base.clone(), body.clone());
        async move {
            http.post(format!("{base}/{product}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // Without a tokenizer: the bound does not fit, refused.
    let (_, untok_key) = gw.app_key("untok-app", "untok", "budget").await;
    let refused = ask("untok", untok_key, 0).await;
    assert_eq!(refused.status(), 429);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    // With it: counted exactly, admitted; the hold shows in the remaining tokens.
    let (app, key) = gw.app_key("tok-app", "tok", "budget").await;
    let admitted = ask("tok", key.clone(), 0).await;
    assert_eq!(admitted.status(), 200);
    let remaining: u64 = admitted.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let answer: serde_json::Value = admitted.json().await.unwrap();
    let served_prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    // The simulator: the text's tokens, 3 for the message, 3 for the reply.
    // The gateway: the same tokens, the role's, 4 for the message, 4 once.
    let counter = maas_sim::tokens::TextCounter::load(&tokenizer).unwrap();
    let held_prompt = 1000 - 5 - remaining;
    assert_eq!(
        held_prompt,
        served_prompt - 6 + u64::from(counter.count("user")) + 8,
        "the hold is the tokenizer's exact count"
    );
    assert!(
        held_prompt < text.len() as u64 / 2,
        "{held_prompt} tokens of {} bytes",
        text.len()
    );
    // A stream cut before its usage bills the prompt as the tokenizer counts it.
    let (cut_app, cut_key) = gw.app_key("tokcut-app", "tokcut", "open").await;
    let mut streamed = body.clone();
    streamed["stream"] = true.into();
    let path = "/tokcut/v1/chat/completions";
    super::metering_truth::cut_after(&gw.proxies[1].base, &cut_key, path, "", &streamed.to_string(), 1).await;
    assert_eq!(
        await_stored(&gw, &cut_app, "prompt_tokens", |t| t > 0).await,
        served_prompt - 6 + u64::from(counter.count("user")) + 4,
        "the text's tokens, the role's, and the template's 4 for the message"
    );
    // One at a time on both proxies until refused: never past the budget.
    let mut statuses = vec![200];
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let response = ask("tok", key.clone(), statuses.len() % 2).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            break;
        }
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        assert!(statuses.len() < 20, "refused at last");
    }
    let all: serde_json::Value = reqwest::get(format!("{sim_base}/sim/usage"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = (sim.kill(), sim.wait());
    let usage = &all["applications"][&app];
    let served = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    assert!(served <= 1000, "served {served} of 1,000 ({statuses:?})");
    let billed = await_stored(&gw, &app, "total_tokens", |t| t == served).await;
    assert_eq!(billed, served, "billed what was served");
    let metrics = gw.metrics(0).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("maas_prompts_tokenized_total{outcome=\"counted\",product=\"tok\"}")
                && !l.ends_with(" 0")
        ),
        "counted with the tokenizer"
    );
}

/// Context the server stored (`previous_response_id`, `conversation`) and a
/// template sent with the request (`chat_template`) add to the prompt where
/// the gateway cannot bound it: refused on a token budget, forwarded where
/// no budget is at stake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_the_server_adds_to_are_refused_on_a_token_budget() {
    let (gw, _capture) = gateway(1).await;
    let (_, budget_key) = gw.app_key("stored-budget", "bounded", "two-thousand").await;
    let (_, open_key) = gw.app_key("stored-open", "metered", "capped").await;
    let post = |path: &str, key: &str, body: serde_json::Value| {
        gw.http
            .post(format!("{}{path}", gw.base()))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    for (member, value) in [
        ("previous_response_id", serde_json::json!("resp_123")),
        ("conversation", serde_json::json!({"id": "conv_123"})),
        ("conversation", serde_json::json!("conv_123")),
        (
            "chat_template",
            serde_json::json!("{% for i in range(100000) %}x{% endfor %}"),
        ),
    ] {
        let mut body = serde_json::json!({"model": "words-a", "input": "hi", "max_output_tokens": 5});
        body[member] = value;
        let refused = post("/bounded/v1/responses", &budget_key, body.clone()).await.unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        let error: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["param"], member, "{error}");
        body["model"] = "stream-a".into();
        let open = post("/metered/v1/responses", &open_key, body.clone()).await.unwrap();
        assert_eq!(open.status(), 200, "{body}");
    }
    let body =
        serde_json::json!({"model": "words-a", "input": "hi", "max_output_tokens": 5, "previous_response_id": null});
    assert_eq!(
        post("/bounded/v1/responses", &budget_key, body).await.unwrap().status(),
        200
    );
}
