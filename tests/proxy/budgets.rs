//! Spend budgets through real proxies: concurrent requests spend up to an
//! application's budget and never past it, spend is the simulator's served
//! tokens at the model's prices, and a key's budget survives its rotation.

use std::time::{Duration, Instant};

use maas_store::Precondition;
use maas_store::model::{ACCOUNT_SPEND, Budget, BudgetMode, BudgetPeriod, Money, SPEND, key_spend_metric};
use maas_store::period::Period;

use super::harness::{CATALOG, Gateway, error_of};

/// stream-a's prices on plan `metered`, in nanos per token.
const PROMPT_RATE: u64 = 1_000_000;
const COMPLETION_RATE: u64 = 3_000_000;

fn budget(amount: &str, period: BudgetPeriod) -> Budget {
    Budget {
        amount: Money::parse(amount).unwrap(),
        period,
        mode: BudgetMode::Hard,
        alert_at_percent: Vec::new(),
        set_by: Default::default(),
    }
}

fn ask() -> serde_json::Value {
    serde_json::json!({"model": "stream-a", "max_tokens": 200, "messages": [{"role": "user", "content": "Tell me a long story"}]})
}

/// Sends one chat; `Ok(())` when answered, `Err` with the refusal.
async fn call(gw: &Gateway, base: &str, key: &str) -> Result<(), (u16, serde_json::Value, Option<String>)> {
    let response = gw.chat_body(base, key, ask()).await;
    if response.status() == 200 {
        response.bytes().await.unwrap();
        return Ok(());
    }
    let retry = response
        .headers()
        .get("x-should-retry")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, error) = error_of(response).await;
    Err((status, error, retry))
}

async fn stored(gw: &Gateway, app: &str, metric: &str, period: Period) -> u64 {
    gw.store
        .usage(app, metric, period, time::OffsetDateTime::now_utc())
        .await
        .unwrap()
}

/// `clients` clients at once, spread over the gateway's proxies, each
/// calling until refused (at most 10 times: without budgets they would
/// call forever); how many were answered.
async fn spend_down(gw: &Gateway, key: &str, clients: usize) -> usize {
    let calls = (0..clients).map(|i| {
        let base = gw.proxies[i % gw.proxies.len()].base.clone();
        async move {
            let mut answered = 0;
            while answered < 10 && call(gw, &base, key).await.is_ok() {
                answered += 1;
            }
            answered
        }
    });
    futures_util::future::join_all(calls).await.into_iter().sum()
}

/// Local mode: one replica alone is exact; with two, each admits from its
/// own view, so the budget is overshot by at most (R − 1) · budget, the
/// bound docs/configuration.md states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_stays_within_its_bound_in_money() {
    let budget_nanos = 4_000_000_000;
    let mut spent = Vec::new();
    for replicas in [1, 2] {
        let mut gw = Gateway::start(CATALOG, 1, "local").await;
        if replicas == 2 {
            gw.add_proxy("local");
        }
        let (app, key) = gw.app_key(&format!("local-{replicas}"), "gamma", "metered").await;
        gw.store
            .set_application_budgets(&app, vec![budget("4", BudgetPeriod::Day)], Precondition::Any)
            .await
            .unwrap();
        spend_down(&gw, &key, 12).await;
        // Usage reaches the store with the next sync (every 100 ms).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stored = stored(&gw, &app, SPEND, Period::Day).await;
        let served = gw.sim_usage(&app).await;
        let priced = served["prompt_tokens"].as_u64().unwrap() * PROMPT_RATE
            + served["completion_tokens"].as_u64().unwrap() * COMPLETION_RATE;
        assert_eq!(
            stored, priced,
            "{replicas} replica(s): spend is what was served, priced"
        );
        assert!(
            stored <= replicas * budget_nanos,
            "{replicas} local replica(s) overran the bound: {stored} nanos"
        );
        spent.push(stored);
    }
    assert!(
        spent[0] > budget_nanos - 200 * PROMPT_RATE - COMPLETION_RATE,
        "one replica spends it to the end: {}",
        spent[0]
    );
    eprintln!(
        "local mode, budget 4 EUR: one replica spent {} nanos, two spent {} (bound 8 EUR)",
        spent[0], spent[1]
    );
}

/// 24 clients at once on two proxies, each calling until refused, then one
/// client until refused: the budget is spent to less than one request's
/// least cost, never past it, and spend is exactly what the simulator
/// served at stream-a's own prices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_spend_the_budget_exactly_and_never_past_it() {
    let gw = Gateway::start(CATALOG, 2, "strict").await;
    let (app, key) = gw.app_key("budgeted", "gamma", "metered").await;
    // About 20 requests of up to 0.6 EUR each.
    let budget_nanos = 8_000_000_000;
    gw.store
        .set_application_budgets(&app, vec![budget("8", BudgetPeriod::Day)], Precondition::Any)
        .await
        .unwrap();
    let answered = spend_down(&gw, &key, 24).await;
    // With nothing in flight, one more client spends what is left.
    let mut last = None;
    for _ in 0..50 {
        match call(&gw, gw.base(), &key).await {
            Ok(()) => {}
            Err(refusal) => {
                last = Some(refusal);
                break;
            }
        }
    }
    let (status, error, retry) = last.expect("the budget runs out");
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["code"], "insufficient_quota", "{error}");
    assert_eq!(error["type"], "insufficient_quota", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("application's daily budget of 8 EUR has ")
            && message.contains("less than this request needs"),
        "the message names the budget and what is left: {message}"
    );
    assert_eq!(retry.as_deref(), Some("false"), "SDKs must not retry a spent budget");

    let spent = stored(&gw, &app, SPEND, Period::Day).await;
    assert!(spent <= budget_nanos, "spent {spent} of {budget_nanos} nanos");
    let served = gw.sim_usage(&app).await;
    let (prompt, completion) = (
        served["prompt_tokens"].as_u64().unwrap(),
        served["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(
        spent,
        prompt * PROMPT_RATE + completion * COMPLETION_RATE,
        "spend is the served tokens at stream-a's prices: {served}"
    );
    // Refused with nothing in flight: what is left buys less than the
    // prompt's bound (under 200 tokens for this message, counted before
    // the model counts it) and one completion token.
    let least = 200 * PROMPT_RATE + COMPLETION_RATE;
    assert!(
        budget_nanos - spent < least,
        "{} nanos left unspent, enough for another request",
        budget_nanos - spent
    );
    assert!(answered >= 10, "{answered} answered");
    eprintln!(
        "budget 8 EUR: {answered} answered at once, {} served, {spent} nanos spent",
        served["requests"]
    );
    // The other periods' buckets reach the store with the next usage batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let by_model = maas_store::Breakdown::Model("stream-a").metric(SPEND);
    while stored(&gw, &app, SPEND, Period::Eternity).await != spent
        || stored(&gw, &app, &by_model, Period::Day).await != spent
    {
        assert!(
            Instant::now() < deadline,
            "the total's bucket and the model's spend never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key's total budget refuses once spent, naming the key's budget, and
/// a rotation of the key is refused too: its spend is the chain's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_budget_is_kept_through_rotation() {
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app, key) = gw.app_key("key-budget", "gamma", "metered").await;
    let key_id = gw.store.application_keys(&app).await.unwrap()[0].id.clone();
    gw.store
        .set_key_budgets(&key_id, vec![budget("1.5", BudgetPeriod::Total)])
        .await
        .unwrap();
    let mut answered = 0;
    let refusal = loop {
        match call(&gw, gw.base(), &key).await {
            Ok(()) => answered += 1,
            Err(refusal) => break refusal,
        }
        assert!(answered < 20, "1.5 EUR buys at most a few requests");
    };
    assert!(answered >= 2, "{answered} answered");
    let message = refusal.1["message"].as_str().unwrap().to_owned();
    assert!(message.contains("key's total budget of 1.5 EUR"), "{message}");
    assert!(message.contains("ask an admin to raise it"), "{message}");
    let spent = stored(&gw, &app, &key_spend_metric(&key_id), Period::Eternity).await;
    assert!(spent <= 1_500_000_000, "{spent}");

    let rotated = gw.store.rotate_key(&key_id, time::Duration::ZERO).await.unwrap();
    let (status, error, _) = call(&gw, gw.base(), rotated.secret.expose())
        .await
        .expect_err("the rotated key shares the spent budget");
    assert_eq!(
        (status, &error["code"]),
        (429, &serde_json::json!("insufficient_quota"))
    );
    // Raising the budget lets the new key spend again.
    gw.store
        .set_key_budgets(&rotated.key.id, vec![budget("5", BudgetPeriod::Total)])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&gw, gw.base(), rotated.secret.expose()).await.is_err() {
        assert!(Instant::now() < deadline, "the raised budget never reached the proxy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An organization's budget spans its applications: clients of two
/// applications at once spend it together, never past it, and the
/// organization's spend is the sum of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_budget_spans_its_applications() {
    let gw = Gateway::start(CATALOG, 2, "strict").await;
    let (first_app, first_key) = gw.app_key("org-first", "gamma", "metered").await;
    let account = gw.store.get_application(&first_app).await.unwrap().unwrap().account_id;
    let second_app = gw
        .store
        .create_application(maas_store::NewApplication {
            account_id: account.clone(),
            name: "org-second".into(),
            description: String::new(),
            product: "gamma".into(),
            plan: "metered".into(),
        })
        .await
        .unwrap()
        .id;
    let second_key = gw
        .store
        .create_key(&second_app, maas_store::NewKey::default())
        .await
        .unwrap()
        .secret
        .into_string();
    gw.store
        .set_account_budgets(&account, vec![budget("4", BudgetPeriod::Week)], Precondition::Any)
        .await
        .unwrap();
    let keys = [first_key, second_key];
    let clients = (0..12).map(|i| {
        let (base, key, gw) = (gw.proxies[i % 2].base.clone(), keys[i % 2].clone(), &gw);
        async move {
            let mut answered = 0;
            let mut refusal = None;
            while answered < 10 {
                match call(gw, &base, &key).await {
                    Ok(()) => answered += 1,
                    Err(refused) => {
                        refusal = Some(refused);
                        break;
                    }
                }
            }
            refusal
        }
    });
    let refusals: Vec<_> = futures_util::future::join_all(clients).await;
    let (status, error, retry) = refusals
        .into_iter()
        .flatten()
        .next()
        .expect("the organization's budget runs out");
    assert_eq!((status, retry.as_deref()), (429, Some("false")), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("organization's weekly budget of 4 EUR"), "{message}");

    let organization = stored(&gw, &account, ACCOUNT_SPEND, Period::Week).await;
    assert!(organization <= 4_000_000_000, "spent {organization} nanos of 4 EUR");
    let mut served_cost = 0;
    for app in [&first_app, &second_app] {
        let served = gw.sim_usage(app).await;
        served_cost += served["prompt_tokens"].as_u64().unwrap_or(0) * PROMPT_RATE
            + served["completion_tokens"].as_u64().unwrap_or(0) * COMPLETION_RATE;
    }
    assert_eq!(
        organization, served_cost,
        "the organization's spend is what was served, priced"
    );
    // The applications' spend (no budget of their own) comes with the usage batches.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let applications = stored(&gw, &first_app, SPEND, Period::Eternity).await
            + stored(&gw, &second_app, SPEND, Period::Eternity).await;
        if applications == organization {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the applications' spend ({applications}) never reached the organization's ({organization})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("organization budget 4 EUR: {organization} nanos spent");
}
