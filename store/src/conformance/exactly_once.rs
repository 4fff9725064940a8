//! Conformance cases for writes resent after an uncertain attempt: usage
//! batches and settles are counted once.

use super::usage::{limit, live_app};
use super::{Fixture, open};
use crate::period::Period;
use crate::store::{Admission, TokenHold, UsageRecord};

/// A writer's batch is counted once however often it is resent, and an
/// earlier batch resent after a later one is not counted again.
pub async fn usage_batches_count_once<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    // Counters need no application record.
    let (one, two) = (live_app(&store).await, "app_second".to_owned());
    let now = store.clock().now();
    let record = |app: &str, value| UsageRecord::new(app, "total_tokens", value, now);
    let batch = [record(&one, 10), record(&two, 7), record(&one, 5)];
    assert_eq!(store.record_usage_once("w1", 1, &batch).await.unwrap(), 2);
    assert_eq!(store.record_usage_once("w1", 1, &batch).await.unwrap(), 0, "resent");
    assert_eq!(store.record_usage_once("w1", 2, &[record(&one, 1)]).await.unwrap(), 1);
    assert_eq!(
        store.record_usage_once("w1", 1, &batch).await.unwrap(),
        0,
        "an older batch"
    );
    assert_eq!(
        store.record_usage_once("w2", 1, &[record(&two, 3)]).await.unwrap(),
        1,
        "another writer's batches count apart"
    );
    let total = |app: String| {
        let store = store.clone();
        async move { store.usage(&app, "total_tokens", Period::Day, now).await.unwrap() }
    };
    assert_eq!(total(one.clone()).await, 16);
    assert_eq!(total(two.clone()).await, 10);
}

/// A settle resent after an attempt whose outcome was unknown counts once.
pub async fn resent_settles_count_once<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let app = live_app(&store).await;
    let now = store.clock().now();
    let limits = [limit("total_tokens", Period::Day, 1_000)];
    let hold = TokenHold {
        id: "hold-1".into(),
        prompt: 10,
        completion_max: 100,
        completion_min: 1,
        ttl_secs: 600,
        rates: Default::default(),
    };
    let (admission, _) = store
        .reserve_and_record(&app, &limits, &[("hits", 1)], &hold, now)
        .await
        .unwrap();
    assert!(matches!(admission, Admission::Admitted(_)));
    let usage = [UsageRecord::new(&app, "total_tokens", 42, now)];
    assert!(store.settle_if_held(&app, "hold-1", &usage).await.unwrap());
    assert!(
        !store.settle_if_held(&app, "hold-1", &usage).await.unwrap(),
        "settled already"
    );
    assert!(!store.settle_if_held(&app, "never-held", &usage).await.unwrap());
    assert_eq!(store.usage(&app, "total_tokens", Period::Day, now).await.unwrap(), 42);
    let status = store.limit_status(&app, &limits, now).await.unwrap();
    assert_eq!(status[0].used, 42, "the hold is released");
}
