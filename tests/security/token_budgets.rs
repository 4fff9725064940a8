//! Token budgets hold whatever a request looks like: every content type,
//! every spelling of the path, the shared endpoint, every way to ask for
//! more tokens, all at once against a plan with B tokens; on Redis (two
//! strict proxies) and on the embedded store (`maas up`).

use std::time::{Duration, Instant};

use super::fixtures::{CONTENT_TYPES, EmbeddedUp, gateway};
use super::raw_http::{post_typed, send};

/// The plan's budget (catalog.yaml, `budget/two-thousand`).
const BUDGET: u64 = 2000;

/// Every variant: a path spelling × a way to ask for tokens, each with
/// one of the content types that used to skip the checks.
fn variants() -> Vec<(String, Option<&'static str>, String)> {
    let paths = [
        "/budget/v1/chat/completions",
        "/budget/v1/chat/completions/.",
        "/budget/v1/chat/completions;x=1",
        "/budget//v1/chat/completions/",
        "/budget/v1/%63hat/completions",
        "/budget/v1/x/../chat/completions",
        "/v1/chat/completions",
    ];
    let asks = [
        r#""max_tokens":200"#,
        r#""max_tokens":200,"stream":true"#,
        r#""max_completion_tokens":0,"max_tokens":5000"#,
        r#""stream":true"#,
        r#""max_tokens":null,"max_completion_tokens":300,"stream":true,"stream_options":{"include_usage":false}"#,
    ];
    let mut all = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        for (j, ask) in asks.iter().enumerate() {
            let body =
                format!(r#"{{"model":"stream-a",{ask},"messages":[{{"role":"user","content":"Hello there"}}]}}"#);
            all.push((path.to_string(), CONTENT_TYPES[(i + j) % CONTENT_TYPES.len()], body));
        }
    }
    all
}

/// Sends every variant at once, spread over `bases`; the statuses.
async fn storm(bases: &[String], key: &str) -> Vec<u16> {
    let requests = variants()
        .into_iter()
        .enumerate()
        .map(|(i, (path, content_type, body))| {
            let base = bases[i % bases.len()].clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                let answer = send(&base, &post_typed(&path, &key, content_type, body.as_bytes())).await;
                if answer.status != 200 {
                    let error = answer.error();
                    assert_eq!(answer.status, 429, "{path} {content_type:?}: {error}");
                }
                answer.status
            })
        });
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses
}

fn check(statuses: &[u16], spent: u64, served: u64) {
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        spent <= BUDGET,
        "spent {spent} of a {BUDGET}-token budget ({admitted} admitted)"
    );
    assert!(served <= BUDGET, "the model server generated {served} of {BUDGET}");
    assert!(
        admitted >= 3 && spent >= BUDGET / 4,
        "the budget was used: {admitted} admitted, {spent} spent"
    );
    eprintln!(
        "{} variants at once: {admitted} admitted, {spent} of {BUDGET} tokens spent",
        statuses.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_variants_never_overrun_the_budget_on_redis() {
    let (gw, _capture) = gateway(2).await;
    let (app, key) = gw.app_key("budget-app", "budget", "two-thousand").await;
    let bases: Vec<String> = gw.proxies.iter().map(|p| p.base.clone()).collect();
    let statuses = storm(&bases, &key).await;
    // Settled after the answers: wait until the store has what was served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut spent, mut served);
    loop {
        spent = gw.stored(&app, "total_tokens").await;
        let usage = gw.sim_usage(&app).await;
        served = usage["prompt_tokens"].as_u64().unwrap_or(0) + usage["completion_tokens"].as_u64().unwrap_or(0);
        if spent == served || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spent, served, "billed exactly what was served");
    check(&statuses, spent, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_variants_never_overrun_the_budget_on_the_embedded_store() {
    let catalog = format!(
        "products:\n  - {{system_name: budget, path_prefix: /budget, models: [stream-a], backend: sim}}\n\
         plans:\n  - product: budget\n    system_name: two-thousand\n    \
         limits: [{{metric: total_tokens, period: eternity, value: {BUDGET}}}]\n"
    );
    let mut up = EmbeddedUp::start(&catalog, &[("Budget", "budget-app", "budget", "two-thousand")]);
    let statuses = storm(&[up.base.clone()], &up.keys[0]).await;
    let (spent, served) = up.stop_and_count("Budget", "budget-app").await;
    assert_eq!(spent, served, "billed exactly what was served");
    check(&statuses, spent, served);
}
