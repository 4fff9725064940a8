//! Conformance cases for usage counters, the change feed, sessions and
//! durability.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::Duration;
use time::macros::datetime;

use super::{Fixture, expect_change, open, open_at, seed_catalog};
use crate::changes::Change;
use crate::clock::ManualClock;
use crate::model::{SpendRates, UsageLimit};
use crate::period::Period;
use crate::period::PeriodSet;
use crate::store::{
    Admission, Environment, NewAccount, NewApplication, NewKey, SessionRecord, Store, TokenHold, UsageRecord,
    split_by_limits,
};

pub(super) fn limit(metric: &str, period: Period, value: u64) -> UsageLimit {
    UsageLimit {
        metric: metric.into(),
        period,
        value,
    }
}

pub(super) async fn live_app(store: &Store) -> String {
    seed_catalog(store).await;
    live_app_of(store, "Acme").await
}

/// An application on granite's standard plan of a new account `organization`.
pub(super) async fn live_app_of(store: &Store, organization: &str) -> String {
    let account = store
        .create_account(NewAccount {
            name: organization.into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    store
        .create_application(NewApplication {
            account_id: account.id,
            name: "bot".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap()
        .id
}

pub async fn concurrent_check_and_add_never_exceeds_limit<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let limits = [
        limit("hits", Period::Minute, 100),
        limit("v1-chat-completions", Period::Day, 1_000),
    ];
    let admitted = Arc::new(AtomicU64::new(0));
    let at = store.clock().now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (store, app, limits, admitted) = (store.clone(), app.clone(), limits.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                // 3 hits per request: 100 is not a multiple, the last unit must stay unused.
                let deltas = [("hits", 3), ("v1-chat-completions", 1)];
                if let Admission::Admitted(_) = store.check_and_record(&app, &limits, &deltas, at).await.unwrap() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        admitted.load(Ordering::SeqCst),
        33,
        "256 attempts, room for exactly 33 requests of 3 hits"
    );
    assert_eq!(store.usage(&app, "hits", Period::Minute, at).await.unwrap(), 99);
    assert_eq!(
        store.usage(&app, "v1-chat-completions", Period::Day, at).await.unwrap(),
        33
    );

    // Exactly at the limit is allowed, one more is not.
    match store.check_and_record(&app, &limits, &[("hits", 1)], at).await.unwrap() {
        Admission::Admitted(statuses) => {
            assert_eq!(statuses[0].used, 100);
            assert_eq!(statuses[0].remaining, 0);
        }
        rejected => panic!("the 100th hit fits: {rejected:?}"),
    }
    match store.check_and_record(&app, &limits, &[("hits", 1)], at).await.unwrap() {
        Admission::Rejected(status) => {
            assert_eq!(status.limit, limits[0]);
            assert_eq!(status.used, 100);
        }
        admitted => panic!("the 101st hit must be refused: {admitted:?}"),
    }
    assert_eq!(
        store.usage(&app, "hits", Period::Minute, at).await.unwrap(),
        100,
        "a refusal counts nothing"
    );
}

fn hold(id: &str, prompt: u64, completion_max: u64) -> TokenHold {
    TokenHold {
        id: id.into(),
        prompt,
        completion_max,
        completion_min: 1,
        ttl_secs: 600,
        rates: SpendRates::default(),
    }
}

/// Holds count against token limits until settled; settling swaps the hold
/// for the actual usage; what does not fit is clamped, then refused.
pub async fn token_holds_reserve_clamp_and_settle<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let now = store.clock().now();
    let limits = [
        limit("hits", Period::Minute, 100),
        limit("total_tokens", Period::Day, 1_000),
        limit("completion_tokens", Period::Day, 700),
    ];
    let reserve = |id: &'static str, prompt, completion_max| {
        let (store, app, limits) = (store.clone(), app.clone(), limits.clone());
        async move {
            store
                .reserve_and_record(&app, &limits, &[("hits", 1)], &hold(id, prompt, completion_max), now)
                .await
                .unwrap()
        }
    };
    // 100 + 300 held on total, 300 on completion.
    let (admission, granted) = reserve("a", 100, 300).await;
    assert_eq!(granted, Some(300));
    let Admission::Admitted(statuses) = admission else {
        panic!("an empty budget admits: {admission:?}")
    };
    assert_eq!((statuses[1].used, statuses[2].used), (400, 300), "holds count as used");
    // Requests within the budget get what they ask for …
    let (_, granted) = reserve("b", 50, 200).await;
    assert_eq!(granted, Some(200));
    // … then total (1000 − 650 − 200 = 150) and completion (700 − 500 = 200) clamp.
    let (_, granted) = reserve("c", 200, 500).await;
    assert_eq!(granted, Some(150));
    let usage = store.usage(&app, "total_tokens", Period::Day, now).await.unwrap();
    assert_eq!(usage, 0, "holds are not usage");
    let (admission, granted) = reserve("d", 10, 5).await;
    match admission {
        Admission::Rejected(status) => {
            assert!(granted.is_none());
            assert_eq!(status.limit.metric, "total_tokens");
            assert_eq!((status.used, status.remaining), (1_000, 0));
        }
        other => panic!("every token is held: {other:?}"),
    }
    assert_eq!(
        store.usage(&app, "hits", Period::Minute, now).await.unwrap(),
        3,
        "a refused reservation counts no hit"
    );

    // Settling "a" with 100 + 120 frees 180 of its 400 held tokens.
    let record = |metric: &str, value| UsageRecord::new(&app, metric, value, now);
    let actual = [
        record("prompt_tokens", 100),
        record("completion_tokens", 120),
        record("total_tokens", 220),
    ];
    store.settle(&app, "a", &actual).await.unwrap();
    store.settle(&app, "a", &[]).await.unwrap();
    assert_eq!(store.usage(&app, "total_tokens", Period::Day, now).await.unwrap(), 220);
    assert_eq!(
        store
            .usage(&app, "completion_tokens", Period::Month, now)
            .await
            .unwrap(),
        120,
        "settled usage lands in every period"
    );
    let (_, granted) = reserve("e", 20, 1_000).await;
    assert_eq!(granted, Some(160), "1000 − (220 used + 250 + 350 held) − 20 = 160");
}

/// A limit check counts only the buckets its limits check and hands back
/// the rest; a settle counts what it is given; written back through a
/// batch, every bucket holds the request once.
pub async fn limit_checks_count_only_limited_buckets<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let now = store.clock().now();
    let limits = [
        limit("hits", Period::Minute, 100),
        limit("hits", Period::Minute, 50),
        limit("total_tokens", Period::Day, 1_000),
    ];
    let check = store
        .check_limits(
            &app,
            &limits,
            &[("hits", 1), ("v1-chat", 1)],
            Some(&hold("h", 10, 100)),
            now,
        )
        .await
        .unwrap();
    assert!(matches!(check.admission, Admission::Admitted(_)), "{check:?}");
    let usage = |metric: &'static str, period| {
        let (store, app) = (store.clone(), app.clone());
        async move { store.usage(&app, metric, period, now).await.unwrap() }
    };
    assert_eq!(
        usage("hits", Period::Minute).await,
        1,
        "two limits, one bucket, one count"
    );
    assert_eq!(usage("hits", Period::Day).await, 0, "no limit checks the day");
    assert_eq!(usage("v1-chat", Period::Minute).await, 0);
    let left: Vec<(String, u64, bool, bool)> = check
        .unrecorded
        .iter()
        .map(|r| {
            (
                r.metric.clone(),
                r.value,
                r.periods.contains(Period::Minute),
                r.periods.contains(Period::Day),
            )
        })
        .collect();
    assert_eq!(
        left,
        [("hits".into(), 1, false, true), ("v1-chat".into(), 1, true, true)],
        "what the check left to write"
    );
    store.record_usage(&check.unrecorded).await.unwrap();
    for period in Period::ALL {
        assert_eq!(usage("hits", period).await, 1, "hits, {period}");
        assert_eq!(usage("v1-chat", period).await, 1, "v1-chat, {period}");
    }

    let actual = [
        UsageRecord::new(&app, "total_tokens", 70, now),
        UsageRecord::new(&app, "prompt_tokens", 10, now),
    ];
    let (limited, rest) = split_by_limits(&actual, &limits);
    assert_eq!(limited.len(), 1, "only total_tokens is limited: {limited:?}");
    assert_eq!(limited[0].periods, PeriodSet::NONE.with(Period::Day));
    store.settle(&app, "h", &limited).await.unwrap();
    assert_eq!(usage("total_tokens", Period::Day).await, 70);
    assert_eq!(usage("total_tokens", Period::Month).await, 0);
    store.record_usage_once("writer-1", 1, &rest).await.unwrap();
    for period in Period::ALL {
        assert_eq!(usage("total_tokens", period).await, 70, "total_tokens, {period}");
        assert_eq!(usage("prompt_tokens", period).await, 10, "prompt_tokens, {period}");
    }
    // A refused check leaves nothing to write.
    let refused = store
        .check_limits(&app, &[limit("hits", Period::Minute, 1)], &[("hits", 1)], None, now)
        .await
        .unwrap();
    assert!(matches!(refused.admission, Admission::Rejected(_)) && refused.unrecorded.is_empty());
}

/// A hold whose holder never settles (a crashed proxy) is released at expiry.
pub async fn token_holds_of_crashed_requests_expire<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    let app = live_app(&store).await;
    let limits = [limit("total_tokens", Period::Month, 1_000)];
    let mut crashed = hold("crashed", 100, 900);
    crashed.ttl_secs = 30;
    let now = store.clock().now();
    let (_, granted) = store
        .reserve_and_record(&app, &limits, &[("hits", 1)], &crashed, now)
        .await
        .unwrap();
    assert_eq!(granted, Some(900));
    let (admission, _) = store
        .reserve_and_record(&app, &limits, &[("hits", 1)], &hold("next", 10, 10), now)
        .await
        .unwrap();
    assert!(matches!(admission, Admission::Rejected(_)), "the whole month is held");
    clock.advance(Duration::seconds(29));
    let now = store.clock().now();
    let (admission, _) = store
        .reserve_and_record(&app, &limits, &[("hits", 1)], &hold("next", 10, 10), now)
        .await
        .unwrap();
    assert!(matches!(admission, Admission::Rejected(_)), "held until it expires");
    clock.advance(Duration::seconds(2));
    let now = store.clock().now();
    let (admission, granted) = store
        .reserve_and_record(&app, &limits, &[("hits", 1)], &hold("next", 10, 10), now)
        .await
        .unwrap();
    assert!(matches!(admission, Admission::Admitted(_)), "{admission:?}");
    assert_eq!(granted, Some(10));
    // Settling late finds nothing to release and still counts the usage.
    store
        .settle(&app, "crashed", &[UsageRecord::new(&app, "total_tokens", 40, now)])
        .await
        .unwrap();
    let statuses = store.limit_status(&app, &limits, now).await.unwrap();
    assert_eq!(statuses[0].used, 40);
}

/// Many requests holding tokens at once never hold more than the limit.
pub async fn concurrent_token_holds_never_exceed_limit<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let limits = [limit("total_tokens", Period::Day, 10_000)];
    let now = store.clock().now();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (store, app, limits) = (store.clone(), app.clone(), limits.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("r{i}");
            let (admission, granted) = store
                .reserve_and_record(&app, &limits, &[("hits", 1)], &hold(&id, 50, 250), now)
                .await
                .unwrap();
            match admission {
                Admission::Admitted(_) => 50 + granted.unwrap(),
                Admission::Rejected(_) => 0,
            }
        }));
    }
    let mut held = 0;
    for task in tasks {
        held += task.await.unwrap();
    }
    assert_eq!(held, 10_000, "the budget is held to the last token, never past it");
}

pub async fn period_buckets_roll_over<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    let app = live_app(&store).await;
    let limits = [limit("hits", Period::Minute, 10), limit("hits", Period::Month, 1_000)];
    clock.set(datetime!(2026-11-30 23:59:30 UTC));
    for _ in 0..10 {
        let now = store.clock().now();
        assert!(matches!(
            store
                .check_and_record(&app, &limits, &[("hits", 1)], now)
                .await
                .unwrap(),
            Admission::Admitted(_)
        ));
    }
    clock.set(datetime!(2026-11-30 23:59:59.999 UTC));
    match store
        .check_and_record(&app, &limits, &[("hits", 1)], store.clock().now())
        .await
        .unwrap()
    {
        Admission::Rejected(status) => {
            assert_eq!(status.limit.period, Period::Minute);
            assert_eq!(status.resets_at, datetime!(2026-12-01 00:00:00 UTC));
        }
        other => panic!("the 11th hit in a minute must be refused: {other:?}"),
    }
    clock.set(datetime!(2026-12-01 00:00:00 UTC));
    match store
        .check_and_record(&app, &limits, &[("hits", 1)], store.clock().now())
        .await
        .unwrap()
    {
        Admission::Admitted(statuses) => {
            assert_eq!(statuses[0].used, 1, "a new minute starts from zero");
            assert_eq!(statuses[1].used, 1, "and so does the new month");
            assert_eq!(statuses[1].resets_at, datetime!(2027-01-01 00:00:00 UTC));
        }
        other => panic!("a new minute admits again: {other:?}"),
    }
    let november = datetime!(2026-11-15 00:00:00 UTC);
    assert_eq!(store.usage(&app, "hits", Period::Month, november).await.unwrap(), 10);
    assert_eq!(
        store.usage(&app, "hits", Period::Year, november).await.unwrap(),
        11,
        "December 1st is still 2026"
    );
    assert_eq!(
        store.usage(&app, "hits", Period::Week, november).await.unwrap(),
        0,
        "Nov 30 is a Monday: a new week"
    );
    assert_eq!(
        store
            .usage(&app, "hits", Period::Week, datetime!(2026-12-02 00:00:00 UTC))
            .await
            .unwrap(),
        11
    );
    assert_eq!(store.usage(&app, "hits", Period::Eternity, november).await.unwrap(), 11);
}

pub async fn token_limits_block_once_spent<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let now = store.clock().now();
    let limits = [
        limit("hits", Period::Minute, 100),
        limit("total_tokens", Period::Day, 1_000),
    ];
    let record = |value| UsageRecord::new(&app, "total_tokens", value, now);
    assert!(matches!(
        store
            .check_and_record(&app, &limits, &[("hits", 1)], now)
            .await
            .unwrap(),
        Admission::Admitted(_)
    ));
    store.record_usage(&[record(600), record(399)]).await.unwrap();
    match store
        .check_and_record(&app, &limits, &[("hits", 1)], now)
        .await
        .unwrap()
    {
        Admission::Admitted(statuses) => assert_eq!(statuses[1].remaining, 1),
        other => panic!("999 of 1000 tokens spent still admits: {other:?}"),
    }
    store.record_usage(&[record(5)]).await.unwrap();
    match store
        .check_and_record(&app, &limits, &[("hits", 1)], now)
        .await
        .unwrap()
    {
        Admission::Rejected(status) => {
            assert_eq!(status.limit.metric, "total_tokens");
            assert_eq!(status.used, 1_004);
            assert_eq!(status.remaining, 0);
        }
        other => panic!("spent tokens must block the next request: {other:?}"),
    }
    let statuses = store.limit_status(&app, &limits, now).await.unwrap();
    assert_eq!((statuses[0].used, statuses[1].used), (2, 1_004));
}

pub async fn usage_series_and_batches<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let t = datetime!(2026-11-26 10:00:00 UTC);
    let rec = |metric: &str, value, minutes: i64| UsageRecord::new(&app, metric, value, t + Duration::minutes(minutes));
    store
        .record_usage(&[
            rec("prompt_tokens", 10, 0),
            rec("prompt_tokens", 5, 0),
            rec("prompt_tokens", 7, 2),
            rec("prompt_tokens", 1, 61),
            rec("hits", 1, 0),
        ])
        .await
        .unwrap();
    let minutes = store
        .usage_series(&app, "prompt_tokens", Period::Minute, t, t + Duration::minutes(4))
        .await
        .unwrap();
    let values: Vec<u64> = minutes.iter().map(|p| p.value).collect();
    assert_eq!(values, [15, 0, 7, 0]);
    assert_eq!(minutes[2].start, t + Duration::minutes(2));
    let hours = store
        .usage_series(&app, "prompt_tokens", Period::Hour, t, t + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(hours.iter().map(|p| p.value).collect::<Vec<_>>(), [22, 1]);
    let days = store
        .usage_series(
            &app,
            "prompt_tokens",
            Period::Day,
            t - Duration::days(1),
            t + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(days.iter().map(|p| p.value).collect::<Vec<_>>(), [0, 23]);
    assert!(
        store
            .usage_series(&app, "prompt_tokens", Period::Minute, t, t + Duration::days(30))
            .await
            .is_err()
    );
    assert!(
        store
            .usage_series(&app, "prompt_tokens", Period::Eternity, t, t)
            .await
            .is_err()
    );
    assert_eq!(store.usage(&app, "hits", Period::Minute, t).await.unwrap(), 1);

    // Summed over applications (a product's, an account's); none reads zero.
    let other = "app_other".to_owned();
    store
        .record_usage(&[UsageRecord::new(&other, "prompt_tokens", 100, t + Duration::minutes(2))])
        .await
        .unwrap();
    let both = store
        .usage_series_total(
            &[app.clone(), other],
            "prompt_tokens",
            Period::Minute,
            t,
            t + Duration::minutes(4),
        )
        .await
        .unwrap();
    assert_eq!(both.iter().map(|p| p.value).collect::<Vec<_>>(), [15, 0, 107, 0]);
    let none = store
        .usage_series_total(&[], "prompt_tokens", Period::Minute, t, t + Duration::minutes(4))
        .await
        .unwrap();
    assert_eq!(none.iter().map(|p| p.value).collect::<Vec<_>>(), [0, 0, 0, 0]);
}

pub async fn change_events_reach_subscribers<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let mut changes = store.subscribe();
    seed_catalog(&store).await;
    let revision = store.catalog().await.unwrap().revision;
    expect_change(&mut changes, |c| *c == Change::Catalog { revision }).await;
    expect_change(&mut changes, |c| {
        matches!(c, Change::Release { product, environment: Environment::Production, version: 1 } if product == "granite")
    })
    .await;
    let account = store
        .create_account(NewAccount {
            name: "Acme".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    expect_change(&mut changes, |c| *c == Change::Account { id: account.id.clone() }).await;
    let app = store
        .create_application(NewApplication {
            account_id: account.id.clone(),
            name: "bot".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap();
    expect_change(&mut changes, |c| *c == Change::Application { id: app.id.clone() }).await;
    let key = store.create_key(&app.id, NewKey::default()).await.unwrap();
    store.revoke_key(&key.key.id).await.unwrap();
    let hash = key.secret.hash();
    expect_change(&mut changes, |c| {
        *c == Change::Key {
            id: key.key.id.clone(),
            hash,
        }
    })
    .await;

    // A second subscriber, through its own connection, sees changes too.
    let mut plans = store.subscribe();
    let mut gold = crate::conformance::plan("granite", "gold", serde_json::json!([]));
    gold.published = false;
    store.put_plan(gold).await.unwrap();
    expect_change(&mut plans, |c| *c == Change::Catalog { revision: revision + 1 }).await;
}

pub async fn sessions_round_trip_and_expire<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    let mut data = serde_json::Map::new();
    data.insert("csrf".into(), serde_json::json!("t0k3n"));
    let session = SessionRecord {
        user_id: Some("usr_1".into()),
        created_at: store.clock().now(),
        data,
        user_epoch: 0,
    };
    store
        .put_session("session-secret-id", &session, Duration::hours(8))
        .await
        .unwrap();
    assert_eq!(
        store.get_session("session-secret-id").await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.get_session("another-id").await.unwrap(), None);
    store.delete_session("session-secret-id").await.unwrap();
    assert_eq!(store.get_session("session-secret-id").await.unwrap(), None);
    assert!(store.put_session("x", &session, Duration::ZERO).await.is_err());

    store
        .put_session("short", &session, Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.get_session("short").await.unwrap().is_some());
    // Redis expires by its own clock, the embedded store by the store's.
    clock.advance(Duration::seconds(2));
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        store.get_session("short").await.unwrap(),
        None,
        "an expired session is gone"
    );
}

pub async fn data_survives_reopen<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(super::START);
    let store = open_at(fixture, &clock).await;
    let app = live_app(&store).await;
    let key = store.create_key(&app, NewKey::default()).await.unwrap();
    let now = store.clock().now();
    store.check_and_record(&app, &[], &[("hits", 7)], now).await.unwrap();
    store
        .record_usage(&[UsageRecord::new(&app, "total_tokens", 42, now)])
        .await
        .unwrap();
    let catalog = store.catalog().await.unwrap();
    drop(store);

    let store = open_at(fixture, &clock).await;
    assert_eq!(store.catalog().await.unwrap(), catalog);
    let context = store
        .lookup_key(&key.secret.hash())
        .await
        .unwrap()
        .expect("keys survive a reopen");
    assert_eq!(context.application.id, app);
    assert_eq!(store.usage(&app, "hits", Period::Day, now).await.unwrap(), 7);
    assert_eq!(
        store.usage(&app, "total_tokens", Period::Eternity, now).await.unwrap(),
        42
    );
    assert_eq!(
        store
            .release("granite", Environment::Production)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}
