//! Spend budgets: money held and settled exactly under concurrency, per
//! period, and kept across key rotations.

use std::sync::Arc;

use time::Duration;
use time::macros::datetime;

use super::open;
use super::usage::live_app;
use crate::error::StoreError;
use crate::model::{ApiKey, Budget, BudgetMode, BudgetPeriod, Money, SPEND, SpendRates, budget_limits, spend_deltas};
use crate::period::Period;
use crate::store::{Admission, NewKey, Precondition, Store, TokenHold, UsageRecord, split_by_limits};

/// 0.0015 per 1k prompt tokens, 0.002 per 1k completion tokens.
const RATES: SpendRates = SpendRates {
    prompt: 1_500,
    completion: 2_000,
};

fn budget(amount: &str, period: BudgetPeriod) -> Budget {
    Budget {
        amount: Money::parse(amount).expect("an amount"),
        period,
        mode: BudgetMode::Hard,
    }
}

fn ask(id: &str, prompt: u64, completion_max: u64) -> TokenHold {
    TokenHold {
        id: id.into(),
        prompt,
        completion_max,
        completion_min: 1,
        ttl_secs: 600,
        rates: RATES,
    }
}

/// Admits one request against the hard budgets of `app` and `key`, then
/// settles it as having generated every token granted: what it cost, in
/// nanos, or `None` when refused.
async fn spend_once(store: &Store, app: &str, key: &ApiKey, hold: TokenHold) -> Option<u64> {
    let application = store.get_application(app).await.unwrap().unwrap();
    let limits = budget_limits(&application, key);
    let now = store.clock().now();
    let (admission, granted) = store
        .reserve_and_record(app, &limits, &[("hits", 1)], &hold, now)
        .await
        .unwrap();
    if let Admission::Rejected(_) = admission {
        return None;
    }
    let cost = RATES.cost(hold.prompt, granted.unwrap_or(hold.completion_max));
    let records: Vec<UsageRecord> = spend_deltas(key, cost)
        .iter()
        .map(|(metric, value)| UsageRecord::new(app, metric, *value, now))
        .collect();
    let (limited, rest) = split_by_limits(&records, &limits);
    store.settle(app, &hold.id, &limited).await.unwrap();
    store.record_usage(&rest).await.unwrap();
    Some(cost)
}

async fn spent(store: &Store, app: &str, period: Period) -> u64 {
    store.usage(app, SPEND, period, store.clock().now()).await.unwrap()
}

async fn key_of(store: &Store, app: &str) -> ApiKey {
    store.create_key(app, NewKey::default()).await.unwrap().key
}

/// 200 requests at once against a budget worth about 87 of them: together
/// they never spend past it, and they leave less than one request's least
/// cost (its prompt and one completion token) unspent.
pub async fn concurrent_requests_never_spend_past_a_budget<F: super::Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let key = key_of(&store, &app).await;
    store
        .set_application_budgets(&app, vec![budget("0.1", BudgetPeriod::Day)], Precondition::Any)
        .await
        .unwrap();
    let key = Arc::new(key);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, app, key) = (store.clone(), app.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            spend_once(&store, &app, &key, ask(&format!("r{i}"), 100, 500)).await
        }));
    }
    let mut total = 0;
    let mut admitted = 0;
    for task in tasks {
        if let Some(cost) = task.await.unwrap() {
            total += cost;
            admitted += 1;
        }
    }
    let budget_nanos = 100_000_000;
    assert!(total <= budget_nanos, "spent {total} of {budget_nanos}");
    let least = RATES.cost(100, 1);
    assert!(
        budget_nanos - total < least,
        "{} left, enough for another request ({least})",
        budget_nanos - total
    );
    assert!((80..200).contains(&admitted), "{admitted} admitted");
    assert_eq!(spent(&store, &app, Period::Day).await, total, "the counter is the sum");
    assert_eq!(
        spent(&store, &app, Period::Month).await,
        total,
        "every period counts it"
    );
    assert!(
        spend_once(&store, &app, &key, ask("late", 1, 1)).await.is_none(),
        "a spent budget refuses"
    );
}

/// A day's budget starts over the next day; a total one never does.
pub async fn a_budget_starts_over_with_its_period<F: super::Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    clock.set(datetime!(2026-12-07 23:00:00 UTC));
    let app = live_app(&store).await;
    let key = key_of(&store, &app).await;
    // 1,150,000 nanos a request: the day's budget takes one, the total two.
    store
        .set_application_budgets(
            &app,
            vec![
                budget("0.0012", BudgetPeriod::Day),
                budget("0.0024", BudgetPeriod::Total),
            ],
            Precondition::Any,
        )
        .await
        .unwrap();
    assert_eq!(
        spend_once(&store, &app, &key, ask("a", 100, 500)).await,
        Some(1_150_000)
    );
    let refused = spend_once(&store, &app, &key, ask("b", 100, 500)).await;
    assert_eq!(refused, None, "the day's budget has 50,000 nanos left");
    clock.advance(Duration::hours(1));
    assert_eq!(
        spend_once(&store, &app, &key, ask("c", 100, 500)).await,
        Some(1_150_000),
        "a new day"
    );
    clock.advance(Duration::days(1));
    let refused = spend_once(&store, &app, &key, ask("d", 100, 500)).await;
    assert_eq!(refused, None, "the total's 100,000 nanos do not buy the prompt");
    let last = spend_once(&store, &app, &key, ask("e", 10, 500)).await;
    assert_eq!(last, Some(RATES.cost(10, 42)), "a shorter prompt and 42 tokens fit");
    assert_eq!(spent(&store, &app, Period::Eternity).await, 2_300_000 + 99_000);
}

/// A key's budget counts every key of its rotation chain; the budgets go
/// with the rotation and other keys of the application are apart.
pub async fn a_rotated_key_keeps_its_spend<F: super::Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let first = key_of(&store, &app).await;
    let other = key_of(&store, &app).await;
    let first = store
        .set_key_budgets(&first.id, vec![budget("0.002", BudgetPeriod::Month)])
        .await
        .unwrap();
    assert_eq!(
        spend_once(&store, &app, &first, ask("a", 100, 500)).await,
        Some(1_150_000)
    );
    let rotated = store.rotate_key(&first.id, Duration::ZERO).await.unwrap().key;
    assert_eq!(rotated.budgets, first.budgets, "the budgets go with the rotation");
    assert_eq!(rotated.spend_lineage(), first.id);
    let second = spend_once(&store, &app, &rotated, ask("b", 100, 500)).await;
    assert_eq!(
        second,
        Some(RATES.cost(100, 350)),
        "what the first key left: 850,000 nanos"
    );
    let twice = store.rotate_key(&rotated.id, Duration::ZERO).await.unwrap().key;
    assert_eq!(twice.spend_lineage(), first.id, "the chain keeps its first key");
    assert_eq!(spend_once(&store, &app, &twice, ask("c", 1, 1)).await, None);
    assert!(
        spend_once(&store, &app, &other, ask("d", 100, 500)).await.is_some(),
        "another key of the application has no such budget"
    );
}

/// Budgets are checked when set and the change is audited.
pub async fn budgets_are_checked_when_set<F: super::Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let twice = vec![budget("1", BudgetPeriod::Week), budget("2", BudgetPeriod::Week)];
    match store.set_application_budgets(&app, twice, Precondition::Any).await {
        Err(StoreError::Invalid(errors)) => assert!(errors.to_string().contains("budgets[1].period"), "{errors}"),
        other => panic!("two weekly budgets: {other:?}"),
    }
    let too_much = vec![budget("9000001", BudgetPeriod::Total)];
    assert!(matches!(
        store.set_key_budgets(&key_of(&store, &app).await.id, too_much).await,
        Err(StoreError::Invalid(_))
    ));
    let stale = store.get_application(&app).await.unwrap().unwrap();
    store
        .set_application_budgets(&app, vec![budget("5", BudgetPeriod::Month)], Precondition::Any)
        .await
        .unwrap();
    let etag = crate::store::etag(&stale);
    assert!(matches!(
        store
            .set_application_budgets(&app, Vec::new(), Precondition::Matches(&etag))
            .await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    let entries = store
        .audit_log(&crate::store::AuditQuery {
            entity_id: Some(app.clone()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.action == "budgets"), "audited");
    assert!(matches!(
        store.set_key_budgets("key_missing", Vec::new()).await,
        Err(StoreError::NotFound { .. })
    ));
}
