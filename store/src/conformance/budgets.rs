//! Spend budgets: money held and settled exactly under concurrency, per
//! period, and kept across key rotations.

use std::sync::Arc;

use time::Duration;
use time::macros::datetime;

use super::open;
use super::usage::{live_app, live_app_of};
use crate::error::StoreError;
use crate::model::{
    ApiKey, Budget, BudgetMode, BudgetPeriod, Money, SPEND, SpendRates, budget_limits, key_spend_metric, spend_deltas,
};
use crate::period::Period;
use crate::store::{
    Admission, BudgetAlert, DeliveryState, NewKey, Precondition, Store, TokenHold, UsageRecord, split_by_limits,
};

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
        alert_at_percent: Vec::new(),
        set_by: Default::default(),
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
    let limits = budget_limits(&application, Some(key));
    let now = store.clock().now();
    let (admission, granted) = store
        .reserve_and_record(app, &limits, &[("hits", 1)], &hold, now)
        .await
        .unwrap();
    if let Admission::Rejected(_) = admission {
        return None;
    }
    let cost = RATES.cost(hold.prompt, granted.unwrap_or(hold.completion_max));
    let records: Vec<UsageRecord> = spend_deltas(Some(key), cost)
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

fn alerting(amount: &str, period: BudgetPeriod, mode: BudgetMode, alerts: &[u8]) -> Budget {
    Budget {
        mode,
        alert_at_percent: alerts.to_vec(),
        ..budget(amount, period)
    }
}

async fn add_spend(store: &Store, shard: &str, metric: &str, nanos: u64) {
    let now = store.clock().now();
    store
        .record_usage(&[UsageRecord::new(shard, metric, nanos, now)])
        .await
        .unwrap();
}

/// Each threshold of each budget alerts once per period, whoever scans
/// (two scans at once raise one alert), the keys of a rotation chain
/// alert once, and a delivery is claimed by one scanner and retried.
pub async fn budget_alerts_are_raised_once_per_threshold_and_period<F: super::Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    clock.set(datetime!(2026-12-07 10:00:00 UTC));
    let app = live_app(&store).await;
    let key = key_of(&store, &app).await;
    let account = store.get_application(&app).await.unwrap().unwrap().account_id;
    store
        .set_application_budgets(
            &app,
            vec![alerting("1", BudgetPeriod::Day, BudgetMode::Soft, &[50, 80, 100])],
            Precondition::Any,
        )
        .await
        .unwrap();
    store
        .set_key_budgets(
            &key.id,
            vec![alerting("2", BudgetPeriod::Month, BudgetMode::Hard, &[50])],
        )
        .await
        .unwrap();
    assert!(
        store.scan_budget_alerts(true).await.unwrap().is_empty(),
        "nothing spent"
    );

    add_spend(&store, &app, SPEND, 600_000_000).await;
    let raised = store.scan_budget_alerts(true).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(
        (
            raised[0].scope.as_str(),
            raised[0].threshold_percent,
            raised[0].spent.to_string()
        ),
        ("application", 50, "0.6".to_owned())
    );
    assert!(store.scan_budget_alerts(true).await.unwrap().is_empty(), "once");

    // Past 80 % and 100 % at once; two scanners race.
    add_spend(&store, &app, SPEND, 500_000_000).await;
    let (a, b) = tokio::join!(store.scan_budget_alerts(true), store.scan_budget_alerts(true));
    let mut thresholds: Vec<u8> = a
        .unwrap()
        .iter()
        .chain(&b.unwrap())
        .map(|a| a.threshold_percent)
        .collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, vec![80, 100], "each threshold once between the two scans");

    // The key's chain: spend through it, then rotate; one alert.
    let lineage = key_spend_metric(&key.id);
    add_spend(&store, &app, &lineage, 1_000_000_000).await;
    let rotated = store.rotate_key(&key.id, Duration::hours(1)).await.unwrap().key;
    assert_eq!(rotated.budgets.len(), 1);
    let raised = store.scan_budget_alerts(true).await.unwrap();
    assert_eq!(raised.len(), 1, "one alert for the chain: {raised:?}");
    assert_eq!((raised[0].scope.as_str(), raised[0].threshold_percent), ("key", 50));

    // A new day: the daily budget alerts again.
    clock.set(datetime!(2026-12-08 09:00:00 UTC));
    add_spend(&store, &app, SPEND, 500_000_000).await;
    let raised = store.scan_budget_alerts(true).await.unwrap();
    assert_eq!(
        raised.iter().map(|a| a.threshold_percent).collect::<Vec<_>>(),
        vec![50],
        "a new period"
    );
    let listed = store.budget_alerts(Some(&account), 50).await.unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0].id, raised[0].id, "newest first");
    assert!(store.budget_alerts(Some("acc_other"), 50).await.unwrap().is_empty());

    // Delivery: one claim wins; a failure retries after a second.
    let due = store.due_alert_deliveries(100).await.unwrap();
    assert_eq!(due.len(), 5);
    let first = due[0].clone();
    let (one, two) = tokio::join!(store.claim_alert_delivery(&first), store.claim_alert_delivery(&first));
    let claimed: Vec<BudgetAlert> = [one.unwrap(), two.unwrap()].into_iter().flatten().collect();
    assert_eq!(claimed.len(), 1, "one scanner delivers it");
    let failed = store
        .finish_alert_delivery(&claimed[0], Err("503 from the receiver".into()), 3)
        .await
        .unwrap();
    assert_eq!(
        (failed.delivery.attempts, failed.delivery.state),
        (1, DeliveryState::Pending)
    );
    assert!(
        !store
            .due_alert_deliveries(100)
            .await
            .unwrap()
            .iter()
            .any(|a| a.id == first.id)
    );
    clock.advance(Duration::seconds(1));
    let again = store.due_alert_deliveries(100).await.unwrap();
    let again = again.iter().find(|a| a.id == first.id).expect("due after a second");
    let claimed = store.claim_alert_delivery(again).await.unwrap().unwrap();
    let delivered = store.finish_alert_delivery(&claimed, Ok(()), 3).await.unwrap();
    assert_eq!(
        (delivered.delivery.attempts, delivered.delivery.state),
        (2, DeliveryState::Delivered)
    );
    assert_eq!(store.due_alert_deliveries(100).await.unwrap().len(), 4);
    // Without a webhook, alerts are shown and not sent.
    clock.set(datetime!(2026-12-09 09:00:00 UTC));
    add_spend(&store, &app, SPEND, 500_000_000).await;
    let quiet = store.scan_budget_alerts(false).await.unwrap();
    assert_eq!(quiet[0].delivery.state, DeliveryState::NotSent);
    assert_eq!(store.due_alert_deliveries(100).await.unwrap().len(), 4);
}

/// Owners add budgets of their own to the organization's applications and
/// keys; an admin's stay whatever an owner sends; members and other
/// organizations cannot.
pub async fn owners_add_budgets_but_never_lift_an_admins<F: super::Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let account = store.get_application(&app).await.unwrap().unwrap().account_id;
    let owner = store
        .create_user(super::tenancy::user(&account, &super::tenancy::email("owner")))
        .await
        .unwrap();
    let member = store
        .create_user(super::tenancy::user(&account, &super::tenancy::email("member")))
        .await
        .unwrap();
    assert_eq!(member.team_role, crate::model::TeamRole::Member);
    let admins = budget("10", BudgetPeriod::Month);
    store
        .set_application_budgets(&app, vec![admins.clone()], Precondition::Any)
        .await
        .unwrap();
    let after = store
        .set_application_budgets_as_owner(&owner.id, &app, vec![budget("2", BudgetPeriod::Day)], Precondition::Any)
        .await
        .unwrap();
    assert_eq!(after.budgets.len(), 2);
    assert_eq!(after.budgets[0], admins);
    assert_eq!(after.budgets[1].set_by, crate::model::BudgetAuthor::Owner);
    let after = store
        .set_application_budgets_as_owner(&owner.id, &app, Vec::new(), Precondition::Any)
        .await
        .unwrap();
    assert_eq!(after.budgets, vec![admins.clone()], "an owner removes only their own");
    assert!(matches!(
        store
            .set_application_budgets_as_owner(&member.id, &app, Vec::new(), Precondition::Any)
            .await,
        Err(StoreError::Forbidden(_))
    ));
    // An owner's change racing an admin's never drops the admin's budget:
    // the owner's is applied to the budgets as stored when it is written.
    for round in 0..15 {
        store
            .set_application_budgets(&app, Vec::new(), Precondition::Any)
            .await
            .unwrap();
        let (by_admin, by_owner) = tokio::join!(
            store.set_application_budgets(&app, vec![admins.clone()], Precondition::Any),
            store.set_application_budgets_as_owner(
                &owner.id,
                &app,
                vec![budget("2", BudgetPeriod::Day)],
                Precondition::Any
            ),
        );
        by_admin.unwrap();
        assert!(
            matches!(by_owner, Ok(_) | Err(StoreError::Conflict(_))),
            "round {round}: {by_owner:?}"
        );
        let stored = store.get_application(&app).await.unwrap().unwrap().budgets;
        assert!(
            stored.contains(&admins),
            "round {round}: the admin's budget was lost: {stored:?}"
        );
    }
    let key = key_of(&store, &app).await;
    let keyed = store
        .set_key_budgets_as_owner(&owner.id, &key.id, vec![budget("1", BudgetPeriod::Total)])
        .await
        .unwrap();
    assert_eq!(keyed.budgets.len(), 1);
    let other = live_app_of(&store, "Globex").await;
    let stranger = store
        .create_user(super::tenancy::user(
            &store.get_application(&other).await.unwrap().unwrap().account_id,
            &super::tenancy::email("stranger"),
        ))
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_application_budgets_as_owner(&stranger.id, &app, Vec::new(), Precondition::Any)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.set_key_budgets_as_owner(&stranger.id, &key.id, Vec::new()).await,
        Err(StoreError::NotFound { kind: "key", .. })
    ));
}
