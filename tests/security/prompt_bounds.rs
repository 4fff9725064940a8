//! Class 7: prompts that cost more than they weigh. A hold of a quarter of
//! the body's bytes let prompts of token ids, one-letter words, digits or
//! images through at a fraction of their cost; holds now never fall below
//! what the model counts, so no budget is served past, one request at a
//! time or fifty at once, on Redis (two strict proxies) and on the
//! embedded store.

use std::time::{Duration, Instant};

use super::fixtures::{EmbeddedUp, gateway};

/// The plan's budget (catalog.yaml, `bounded/two-thousand`).
const BUDGET: u64 = 2000;
/// Tokens of each text prompt as the simulator counts them, about.
const WORDS: usize = 600;

/// The four kinds of prompt: `(path, body)`.
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stored(&app, "total_tokens").await != total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check("50 at once", &statuses, gw.stored(&app, "total_tokens").await, total);
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
        check(
            &format!("{path} one at a time"),
            &statuses,
            gw.stored(&app, "total_tokens").await,
            total,
        );
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
