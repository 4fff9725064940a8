//! The conformance suite every [`StoreBackend`](crate::backend::StoreBackend)
//! must pass. A backend's test file implements [`Fixture`] and expands
//! [`conformance_suite!`](crate::conformance_suite) to get one `#[tokio::test]`
//! per case:
//!
//! ```text
//! maas_store::conformance_suite!(MyFixture::new().await);
//! ```

mod attempts;
mod budgets;
mod catalog;
mod drafts;
mod exactly_once;
mod identity;
mod own_account;
mod proxies;
pub mod servers;
mod teams;
mod tenancy;
mod token_clients;
mod usage;

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

pub use attempts::*;
pub use budgets::*;
pub use catalog::*;
pub use drafts::*;
pub use exactly_once::*;
pub use identity::*;
pub use own_account::*;
pub use proxies::*;
pub use teams::*;
pub use tenancy::*;
pub use token_clients::*;
pub use usage::*;

use crate::changes::{Change, ChangeSubscription};
use crate::clock::ManualClock;
use crate::document::CatalogDocument;
use crate::model::{Backend, Plan, Product};
use crate::store::{Store, StoreOptions};

/// A backend under test: a fresh, empty store per fixture.
pub trait Fixture: Send + Sync {
    /// Opens the store. Called again after the previous [`Store`] was
    /// dropped, it must open the same data (reopen tests).
    fn open(&self, options: StoreOptions) -> impl Future<Output = Store> + Send;
    /// Removes what the test wrote (shared servers).
    fn cleanup(&self) -> impl Future<Output = ()> + Send;
}

/// Calls `$then!($($args)*; <every conformance case>)`: the one list of
/// cases, shared by [`conformance_suite!`](crate::conformance_suite) and
/// [`conformance_in_sequence!`](crate::conformance_in_sequence).
#[macro_export]
macro_rules! conformance_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $crate::$then!($($args)*;
            catalog_crud_round_trip,
            conditional_catalog_writes,
            catalog_validation_errors,
            deletes_guarded_by_applications,
            promotion_and_rollback,
            product_drafts_save_together_at_the_version_seen,
            apply_export_round_trip,
            apply_promotes_only_what_it_changed,
            seeding_keeps_what_exists,
            accounts_and_users,
            applications_lifecycle,
            plan_changes_and_actions_follow_one_rule,
            company_sign_in_joins_only_bound_accounts,
            moved_users_change_account_and_lose_their_sessions,
            mixed_accounts_are_bound_or_split_by_hand,
            token_clients_get_one_application_each,
            key_lookup_by_hash,
            revoked_and_expired_keys_are_not_found,
            key_rotation_overlaps,
            key_uses_move_forward_and_go_with_the_key,
            teams_invite_by_one_time_links_and_keep_an_owner,
            joining_moves_only_users_who_leave_nothing_behind,
            admin_tokens_round_trip,
            concurrent_check_and_add_never_exceeds_limit,
            period_buckets_roll_over,
            usage_batches_count_once,
            resent_settles_count_once,
            token_limits_block_once_spent,
            token_holds_reserve_clamp_and_settle,
            limit_checks_count_only_limited_buckets,
            token_holds_of_crashed_requests_expire,
            concurrent_token_holds_never_exceed_limit,
            concurrent_requests_never_spend_past_a_budget,
            a_budget_starts_over_with_its_period,
            a_rotated_key_keeps_its_spend,
            budgets_are_checked_when_set,
            budget_alerts_are_raised_once_per_threshold_and_period,
            owners_add_budgets_but_never_lift_an_admins,
            usage_series_and_batches,
            change_events_reach_subscribers,
            sessions_round_trip_and_expire,
            users_list_and_end_their_own_sessions,
            password_reset_links_work_once,
            proxy_reports_are_kept_per_proxy_and_forgotten,
            attempts_are_held_when_they_begin_and_counted_when_they_fail,
            audit_log_records_changes_without_secrets,
            data_survives_reopen
        );
    };
}

/// Expands to one test per conformance case, each with a fresh fixture.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_cases!(conformance_suite!(@cases $fixture));
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $fixture;
                $crate::conformance::$case(&fixture).await;
                $crate::conformance::Fixture::cleanup(&fixture).await;
            }
        )*
    };
}

/// Runs every conformance case in turn inside one async test, each with a
/// fresh fixture from `$fixture` (for a backend whose servers the test
/// starts once, such as a Redis Cluster).
#[macro_export]
macro_rules! conformance_in_sequence {
    ($fixture:expr) => {
        $crate::conformance_cases!(conformance_in_sequence!(@cases $fixture))
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $({
            let fixture = $fixture;
            let started = std::time::Instant::now();
            $crate::conformance::$case(&fixture).await;
            $crate::conformance::Fixture::cleanup(&fixture).await;
            eprintln!("conformance {}: ok in {:?}", stringify!($case), started.elapsed());
        })*
    };
}

/// Noon on the day this suite was written; every case starts its clock here.
pub const START: OffsetDateTime = datetime!(2026-11-26 12:00:00 UTC);

pub(crate) async fn open_at<F: Fixture>(fixture: &F, clock: &ManualClock) -> Store {
    fixture
        .open(StoreOptions {
            clock: std::sync::Arc::new(clock.clone()),
            ..StoreOptions::default()
        })
        .await
}

pub(crate) async fn open<F: Fixture>(fixture: &F) -> (Store, ManualClock) {
    let clock = ManualClock::new(START);
    (open_at(fixture, &clock).await, clock)
}

pub(crate) fn backend(name: &str) -> Backend {
    serde_json::from_value(serde_json::json!({
        "system_name": name, "urls": ["http://127.0.0.1:8000"]
    }))
    .expect("valid backend")
}

pub(crate) fn product(name: &str, backend: &str) -> Product {
    serde_json::from_value(serde_json::json!({
        "system_name": name, "name": format!("Product {name}"), "backend": backend,
        "models": [format!("{name}-model")],
    }))
    .expect("valid product")
}

pub(crate) fn plan(product: &str, name: &str, limits: serde_json::Value) -> Plan {
    serde_json::from_value(serde_json::json!({
        "product": product, "system_name": name, "published": true, "limits": limits,
    }))
    .expect("valid plan")
}

/// A catalog with backend `vllm`, product `granite` and plans `standard`
/// (10 hits a minute) and `gated` (approval required).
pub(crate) async fn seed_catalog(store: &Store) {
    let mut gated = plan("granite", "gated", serde_json::json!([]));
    gated.approval_required = true;
    let document = CatalogDocument {
        backends: vec![backend("vllm")],
        products: vec![product("granite", "vllm")],
        plans: vec![
            plan(
                "granite",
                "standard",
                serde_json::json!([{"metric": "hits", "period": "minute", "value": 10}]),
            ),
            gated,
        ],
        ..CatalogDocument::default()
    };
    store.apply(&document, &Default::default()).await.expect("seed catalog");
}

/// Waits up to 2 s for a change matching `wanted`, skipping others.
pub(crate) async fn expect_change(subscription: &mut ChangeSubscription, wanted: impl Fn(&Change) -> bool) -> Change {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let next = tokio::time::timeout_at(deadline, subscription.recv()).await;
        match next {
            Ok(Some(change)) if wanted(&change) => return change,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("change feed closed"),
            Err(_) => panic!("no matching change event within 2 s"),
        }
    }
}
