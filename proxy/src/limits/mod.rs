//! Plan limits, shared by every proxy replica through the store.
//!
//! - `strict`: one atomic check-and-add in the store per request; exact
//!   across any number of replicas, one store round trip per request (two
//!   when the plan limits tokens: the hold is settled after the response).
//! - `local`: each replica admits from its own view ([`local`])
//!   and syncs every `sync_interval`. No store round trip per request.
//!   Other replicas' admissions and holds since the last sync are
//!   invisible, so with `R` replicas each admitting at most `λ` requests per
//!   second, a limit is overshot by at most `(R − 1) · λ · (T + d)` requests
//!   (T the sync interval, d the store's round trip) and a token limit by
//!   what those requests hold, and never by more than `(R − 1) · limit` per
//!   period. One replica alone is exact.
//!
//! **Token holds.** A request on a plan with token limits holds its prompt
//! estimate plus the completion tokens it may generate against every token
//! limit, and is granted only as many completion tokens as are left, so
//! concurrent streams cannot overrun the budget between them. The response's
//! actual usage replaces the hold ([`Limiter::settle`]); holds of a crashed
//! proxy expire after `hold_ttl`.

//!
//! Beside them: what a request may spend ([`spend`]), the `x-ratelimit-*`
//! headers ([`ratelimit`]), and what happens when the store does not
//! answer: the circuit breaker around it ([`breaker`]) and admission from
//! local counters meanwhile ([`outage`]).

pub mod breaker;
pub(crate) mod local;
pub mod outage;
pub mod ratelimit;
pub mod spend;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use maas_store::model::{SpendRates, UsageLimit};
use maas_store::{LimitStatus, Store, StoreResult};
use time::OffsetDateTime;

use crate::limits::breaker::{BreakerSettings, StoreBreaker};
use crate::limits::local::LocalLimits;
use crate::limits::outage::OutagePolicy;
use crate::record::usage::UsageSink;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    Strict,
    Local { sync_interval: Duration },
}

/// How requests hold tokens on plans with token limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    /// A hold nobody settled (its proxy crashed) is released after this.
    pub ttl: Duration,
    /// Completion tokens held for a request that names no `max_tokens`,
    /// when its plan sets no cap either; the request is capped to it.
    pub default_max_tokens: u64,
}

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy {
            ttl: Duration::from_secs(900),
            default_max_tokens: 4096,
        }
    }
}

/// What a request asks of the token limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest {
    /// Prompt tokens, estimated from the body.
    pub prompt: u64,
    /// Most completion tokens it may generate.
    pub completion_max: u64,
    /// Fewest completion tokens worth admitting it for (0 for embeddings).
    pub completion_min: u64,
    /// What a token of the requested model costs, for spend budgets.
    pub rates: SpendRates,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Where every limit stands now (holds count as used).
    pub statuses: Vec<LimitStatus>,
    /// Completion tokens granted, when a token limit bounds them.
    pub completion_grant: Option<u64>,
    /// The hold to settle after the response.
    pub hold: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Admitted(Admitted),
    /// Nothing counted or held; the limit that refused.
    Rejected(LimitStatus),
}

/// Admission and accounting for every request.
pub struct Limiter {
    pub(crate) store: Store,
    pub(crate) sink: Arc<UsageSink>,
    mode: LimitMode,
    pub(crate) holds: HoldPolicy,
    local: Mutex<LocalLimits>,
    pub(crate) breaker: Arc<StoreBreaker>,
    pub(crate) outage: OutagePolicy,
}

/// Would `delta` more of a metric fit? The store's arithmetic, so local
/// and strict modes decide alike.
pub use maas_store::limits::{admits, delta_of};

/// Prompt tokens guessed from a request body's size, before the model
/// server counts them: a quarter of the bytes (English text runs about four
/// characters per token; the JSON around the prompt makes this generous).
pub fn prompt_estimate(body_bytes: usize) -> u64 {
    (body_bytes / 4) as u64
}

/// A hold id unique across replicas and restarts.
fn new_hold_id() -> String {
    static NONCE: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = NONCE.get_or_init(|| maas_store::ids::hex(&maas_store::ids::random_bytes::<8>()));
    let mut id = String::with_capacity(nonce.len() + 21);
    id.push_str(nonce);
    id.push('-');
    id.push_str(itoa::Buffer::new().format(NEXT.fetch_add(1, Ordering::Relaxed)));
    id
}

impl Limiter {
    pub fn new(store: Store, sink: Arc<UsageSink>, mode: LimitMode, holds: HoldPolicy) -> Limiter {
        Limiter {
            store,
            sink,
            mode,
            holds,
            local: Mutex::new(LocalLimits::default()),
            breaker: Arc::new(StoreBreaker::new(BreakerSettings::default())),
            outage: OutagePolicy::default(),
        }
    }

    /// This limiter, asking the store through `breaker` and doing what
    /// `outage` says when it does not answer ([`crate::limits::outage`]).
    pub fn with_outage(mut self, breaker: Arc<StoreBreaker>, outage: OutagePolicy) -> Limiter {
        self.breaker = breaker;
        self.outage = outage;
        self
    }

    pub fn breaker(&self) -> &Arc<StoreBreaker> {
        &self.breaker
    }

    pub fn outage_policy(&self) -> OutagePolicy {
        self.outage
    }

    pub fn mode(&self) -> LimitMode {
        self.mode
    }

    pub fn hold_policy(&self) -> HoldPolicy {
        self.holds
    }

    pub(crate) fn local(&self) -> std::sync::MutexGuard<'_, LocalLimits> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks every limit against `deltas` (and `tokens`, holding them) and
    /// counts the deltas if all admit.
    pub async fn admit(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        tokens: Option<&TokenRequest>,
        now: OffsetDateTime,
    ) -> StoreResult<Decision> {
        let hold_id = tokens.map(|_| new_hold_id());
        self.admit_held(application_id, limits, deltas, tokens, hold_id, now)
            .await
    }

    /// [`admit`](Self::admit) behind an organization's hard budgets
    /// (`account`: its id, the shard of its spend counter, and the budgets
    /// as limits): the request's cost is held there first, in its own
    /// atomic step, then against the application's `limits` with the
    /// completion tokens the organization's budgets left. If the second
    /// step refuses, the first hold is released. Both holds share one id,
    /// settled apart ([`Limiter::settle`] on each shard).
    pub async fn admit_in_account(
        &self,
        account: (&str, &[UsageLimit]),
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        tokens: Option<&TokenRequest>,
        now: OffsetDateTime,
    ) -> StoreResult<Decision> {
        let (account_id, account_limits) = account;
        let Some(request) = tokens.filter(|_| !account_limits.is_empty()) else {
            return self.admit(application_id, limits, deltas, tokens, now).await;
        };
        let hold_id = Some(new_hold_id());
        let account_grant = match self
            .admit_held(account_id, account_limits, &[], Some(request), hold_id.clone(), now)
            .await?
        {
            Decision::Rejected(status) => return Ok(Decision::Rejected(status)),
            Decision::Admitted(admitted) => admitted.completion_grant,
        };
        let narrowed = TokenRequest {
            completion_max: account_grant.map_or(request.completion_max, |grant| grant.min(request.completion_max)),
            ..*request
        };
        let decision = self
            .admit_held(application_id, limits, deltas, Some(&narrowed), hold_id.clone(), now)
            .await;
        match decision {
            Ok(Decision::Admitted(mut admitted)) => {
                admitted.completion_grant = admitted.completion_grant.or(account_grant);
                Ok(Decision::Admitted(admitted))
            }
            refused => {
                self.settle(account_id, account_limits, hold_id.as_deref(), &[], now)
                    .await;
                refused
            }
        }
    }

    async fn admit_held(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        tokens: Option<&TokenRequest>,
        hold_id: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<Decision> {
        match self.mode {
            LimitMode::Strict => {
                let tokens = tokens.zip(hold_id.as_deref());
                self.admit_strict(application_id, limits, deltas, tokens, now).await
            }
            LimitMode::Local { .. } => loop {
                let tokens = tokens.zip(hold_id.as_deref()).map(|(t, id)| (t, id, self.holds.ttl));
                let attempt = self.local().try_admit(application_id, limits, deltas, tokens, now);
                match attempt {
                    Ok(decision) => {
                        if let Decision::Admitted(_) = decision {
                            self.sink.push_deltas(application_id, deltas, now);
                        }
                        return Ok(decision);
                    }
                    Err(missing) => {
                        let statuses = self.load_counts(application_id, &missing, now).await?;
                        self.local().load(application_id, statuses, now);
                    }
                }
            },
        }
    }

    /// The response is done: its usage known after the response (tokens)
    /// replaces its hold. Strict mode writes both at once when there is a
    /// hold, in the buckets `limits` check (if that fails, the usage is
    /// queued and the hold expires); the rest of the usage is queued for
    /// the next batch.
    pub async fn settle(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        hold: Option<&str>,
        deltas: &[(&str, u64)],
        now: OffsetDateTime,
    ) {
        match self.mode {
            LimitMode::Strict => self.settle_strict(application_id, limits, hold, deltas, now).await,
            LimitMode::Local { .. } => {
                self.local().settle(application_id, hold, deltas, now);
                self.sink.push_deltas(application_id, deltas, now);
            }
        }
    }

    /// One sync of local mode: write queued usage, then re-read every
    /// tracked counter. Strict mode only writes the queue.
    pub async fn sync(&self) -> StoreResult<()> {
        // An open breaker's probe says when the store is back; until then
        // the queue waits.
        if self.breaker.is_open() {
            self.sink.spool_pending().await;
            return Ok(());
        }
        let LimitMode::Local { .. } = self.mode else {
            // The counters an outage would fall back to; idle ones go (what
            // is pending on them is the sink's to write, not theirs).
            self.local().prune(false);
            self.flush_queue().await?;
            return Ok(());
        };
        // What was pending before the flush is in the store after it.
        let snapshot = self.local().snapshot();
        self.flush_queue().await?;
        let now = OffsetDateTime::now_utc();
        for (application_id, counters) in snapshot {
            let limits: Vec<UsageLimit> = counters.iter().map(|(l, _, _)| l.clone()).collect();
            let statuses = self
                .breaker
                .call(self.store.limit_status(&application_id, &limits, now))
                .await?;
            self.local().apply_sync(&application_id, counters, statuses, now);
        }
        Ok(())
    }

    /// At shutdown: writes the queued usage whatever the breaker says.
    pub async fn drain(&self) -> StoreResult<()> {
        self.flush_queue().await.map(drop)
    }

    /// Writes the queued usage. Not under the breaker's deadline: a write
    /// cut short might still land, and its records would be queued twice.
    async fn flush_queue(&self) -> StoreResult<usize> {
        let flushed = self.sink.flush().await;
        match &flushed {
            Err(error) if crate::limits::breaker::is_unavailable(error) => self.breaker.record_failure("unreachable"),
            // An empty queue asked nothing of the store.
            Ok(0) => {}
            _ => self.breaker.record_success(),
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_store::period::Period;

    #[test]
    fn hold_ids_share_the_process_nonce_and_never_repeat() {
        let (first, second) = (new_hold_id(), new_hold_id());
        let (nonce, count) = first.split_once('-').unwrap();
        assert_eq!(nonce.len(), 16);
        assert!(second.starts_with(&format!("{nonce}-")));
        assert_ne!(first, second);
        assert!(count.parse::<u64>().is_ok());
    }

    fn hits(value: u64) -> Vec<UsageLimit> {
        vec![UsageLimit {
            metric: "hits".into(),
            period: Period::Eternity,
            value,
        }]
    }

    #[test]
    fn admission_arithmetic() {
        assert!(admits(10, 9, 1));
        assert!(!admits(10, 10, 1));
        assert!(!admits(10, 5, 6));
        assert!(admits(10, 9, 0));
        assert!(!admits(10, 10, 0));
        assert!(admits(u64::MAX, u64::MAX - 1, 0));
        assert!(!admits(u64::MAX, u64::MAX, 5));
    }

    async fn count_admitted(limiter: &Limiter, app: &str, requests: usize, limit: u64) -> usize {
        let deltas = vec![("hits".to_owned(), 1)];
        let mut admitted = 0;
        for _ in 0..requests {
            if let Decision::Admitted(_) = limiter
                .admit(app, &hits(limit), &deltas, None, OffsetDateTime::now_utc())
                .await
                .unwrap()
            {
                admitted += 1;
            }
        }
        admitted
    }

    #[tokio::test]
    async fn both_modes_stop_at_the_limit_on_one_replica() {
        for (name, mode) in [
            ("strict", LimitMode::Strict),
            (
                "local",
                LimitMode::Local {
                    sync_interval: Duration::from_millis(100),
                },
            ),
        ] {
            let (store, _dir) = crate::test_store().await;
            let limiter = Limiter::new(
                store.clone(),
                Arc::new(UsageSink::new(store.clone())),
                mode,
                HoldPolicy::default(),
            );
            assert_eq!(count_admitted(&limiter, "app", 15, 10).await, 10, "{name}");
            limiter.sync().await.unwrap();
            let used = store
                .usage("app", "hits", Period::Eternity, OffsetDateTime::now_utc())
                .await
                .unwrap();
            assert_eq!(used, 10, "{name}: the store holds what was admitted");
            assert_eq!(count_admitted(&limiter, "app", 3, 10).await, 0, "{name}");
        }
    }

    #[tokio::test]
    async fn plans_without_limits_are_admitted_and_counted() {
        let (store, _dir) = crate::test_store().await;
        let limiter = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            LimitMode::Local {
                sync_interval: Duration::from_millis(100),
            },
            HoldPolicy::default(),
        );
        let deltas = vec![("hits".to_owned(), 1)];
        let now = OffsetDateTime::now_utc();
        for _ in 0..3 {
            let decision = limiter.admit("app", &[], &deltas, None, now).await.unwrap();
            assert_eq!(
                decision,
                Decision::Admitted(Admitted {
                    statuses: Vec::new(),
                    completion_grant: None,
                    hold: None
                })
            );
        }
        limiter.sync().await.unwrap();
        assert_eq!(store.usage("app", "hits", Period::Eternity, now).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn local_replicas_see_each_other_after_a_sync() {
        let (store, _dir) = crate::test_store().await;
        let mode = LimitMode::Local {
            sync_interval: Duration::from_millis(100),
        };
        let a = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            mode,
            HoldPolicy::default(),
        );
        let b = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            mode,
            HoldPolicy::default(),
        );
        assert_eq!(count_admitted(&a, "app", 6, 10).await, 6);
        a.sync().await.unwrap();
        // b loads the store's count on first sight of the application.
        assert_eq!(count_admitted(&b, "app", 6, 10).await, 4);
        b.sync().await.unwrap();
        a.sync().await.unwrap();
        assert_eq!(count_admitted(&a, "app", 1, 10).await, 0);
    }

    #[tokio::test]
    async fn token_limits_refuse_once_spent() {
        let (store, _dir) = crate::test_store().await;
        let limiter = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            LimitMode::Local {
                sync_interval: Duration::from_millis(100),
            },
            HoldPolicy::default(),
        );
        let limits = vec![UsageLimit {
            metric: "total_tokens".into(),
            period: Period::Eternity,
            value: 100,
        }];
        let deltas = vec![("hits".to_owned(), 1)];
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            limiter.admit("app", &limits, &deltas, None, now).await.unwrap(),
            Decision::Admitted(_)
        ));
        limiter
            .settle("app", &limits, None, &[("total_tokens", 150)], now)
            .await;
        let Decision::Rejected(status) = limiter.admit("app", &limits, &deltas, None, now).await.unwrap() else {
            panic!("a spent token budget must refuse");
        };
        assert_eq!(status.used, 150);
        assert_eq!(status.remaining, 0);
    }

    fn tokens(prompt: u64, completion_max: u64) -> TokenRequest {
        TokenRequest {
            prompt,
            completion_max,
            completion_min: 1,
            rates: SpendRates::default(),
        }
    }

    /// Concurrent holds share the budget in both modes; settling replaces a
    /// hold by the usage; nothing is granted once every token is held.
    #[tokio::test]
    async fn holds_clamp_then_refuse_then_settle() {
        for (name, mode) in [
            ("holds-strict", LimitMode::Strict),
            (
                "holds-local",
                LimitMode::Local {
                    sync_interval: Duration::from_millis(100),
                },
            ),
        ] {
            let (store, _dir) = crate::test_store().await;
            let limiter = Limiter::new(
                store.clone(),
                Arc::new(UsageSink::new(store.clone())),
                mode,
                HoldPolicy::default(),
            );
            let limits = vec![UsageLimit {
                metric: "total_tokens".into(),
                period: Period::Day,
                value: 1_000,
            }];
            let deltas = vec![("hits".to_owned(), 1)];
            let now = OffsetDateTime::now_utc();
            let admit = |request: TokenRequest| {
                let (limiter, limits, deltas) = (&limiter, &limits, &deltas);
                async move { limiter.admit("app", limits, deltas, Some(&request), now).await.unwrap() }
            };
            let Decision::Admitted(first) = admit(tokens(100, 500)).await else {
                panic!("{name}: an empty budget admits")
            };
            assert_eq!(first.completion_grant, Some(500), "{name}");
            assert_eq!(first.statuses[0].used, 600, "{name}: the hold counts as used");
            let Decision::Admitted(second) = admit(tokens(100, 500)).await else {
                panic!("{name}: the prompt and some completion fit")
            };
            assert_eq!(second.completion_grant, Some(300), "{name}: clamped to what is left");
            let Decision::Rejected(status) = admit(tokens(1, 1)).await else {
                panic!("{name}: every token is held")
            };
            assert_eq!((status.used, status.remaining), (1_000, 0), "{name}");

            limiter
                .settle("app", &limits, first.hold.as_deref(), &[("total_tokens", 150)], now)
                .await;
            limiter.sync().await.unwrap();
            let Decision::Admitted(third) = admit(tokens(50, 1_000)).await else {
                panic!("{name}: the settled hold freed 450 tokens")
            };
            assert_eq!(third.completion_grant, Some(400), "{name}: 1000 − 150 − 400 − 50");
            limiter
                .settle("app", &limits, second.hold.as_deref(), &[("total_tokens", 400)], now)
                .await;
            limiter
                .settle("app", &limits, third.hold.as_deref(), &[("total_tokens", 10)], now)
                .await;
            limiter.sync().await.unwrap();
            assert_eq!(
                store.usage("app", "total_tokens", Period::Day, now).await.unwrap(),
                560,
                "{name}: the store holds the settled usage"
            );
            if let LimitMode::Local { .. } = mode {
                assert_eq!(limiter.local().held("app"), vec![0], "{name}: nothing stays held");
            }
        }
    }

    /// An organization's budget is held across its applications before
    /// each application's own limits; a refusal by the application
    /// releases what the organization's step held.
    #[tokio::test]
    async fn an_organization_budget_is_held_before_its_applications() {
        for (name, mode) in [
            ("org-strict", LimitMode::Strict),
            (
                "org-local",
                LimitMode::Local {
                    sync_interval: Duration::from_millis(100),
                },
            ),
        ] {
            let (store, _dir) = crate::test_store().await;
            let limiter = Limiter::new(
                store.clone(),
                Arc::new(UsageSink::new(store.clone())),
                mode,
                HoldPolicy::default(),
            );
            // 1,000,000 nanos; a request costs 10 × 1,000 + up to 100 × 2,000.
            let organization = vec![UsageLimit {
                metric: maas_store::model::ACCOUNT_SPEND.into(),
                period: Period::Month,
                value: 1_000_000,
            }];
            let one_hit = hits(1);
            let request = TokenRequest {
                prompt: 10,
                completion_max: 100,
                completion_min: 1,
                rates: SpendRates {
                    prompt: 1_000,
                    completion: 2_000,
                },
            };
            let deltas = vec![("hits".to_owned(), 1)];
            let now = OffsetDateTime::now_utc();
            let admit = |app: &'static str, limits: Vec<UsageLimit>| {
                let (limiter, organization, deltas) = (&limiter, &organization, &deltas);
                async move {
                    limiter
                        .admit_in_account(("acc", organization), app, &limits, deltas, Some(&request), now)
                        .await
                        .unwrap()
                }
            };
            let mut held = Vec::new();
            for app in ["a", "b", "a", "b"] {
                let Decision::Admitted(admitted) = admit(app, Vec::new()).await else {
                    panic!("{name}: 210,000 nanos each fit four times")
                };
                assert_eq!(admitted.completion_grant, Some(100), "{name}");
                held.push((app, admitted.hold.unwrap()));
            }
            // 160,000 left: 75 completion tokens after the prompt.
            let Decision::Admitted(fifth) = admit("c", Vec::new()).await else {
                panic!("{name}: what is left is granted")
            };
            assert_eq!(fifth.completion_grant, Some(75), "{name}");
            let Decision::Rejected(status) = admit("a", Vec::new()).await else {
                panic!("{name}: the organization's budget is held to the last nano")
            };
            assert_eq!(
                (status.limit.metric.as_str(), status.used),
                ("account-spend", 1_000_000),
                "{name}"
            );
            // The first two requests settle at 10 + 40 tokens: 90,000 nanos.
            for (app, hold) in held.drain(..2) {
                limiter
                    .settle(app, &[], Some(&hold), &[("total_tokens", 50)], now)
                    .await;
                limiter
                    .settle("acc", &organization, Some(&hold), &[("account-spend", 90_000)], now)
                    .await;
            }
            limiter.sync().await.unwrap();
            // 240,000 freed. Application d allows one hit: its first request
            // holds 210,000; its second fits the organization's 30,000 but
            // d's own limit refuses it, and that gives the 30,000 back.
            let Decision::Admitted(_) = admit("d", one_hit.clone()).await else {
                panic!("{name}: 240,000 nanos freed")
            };
            let Decision::Rejected(status) = admit("d", one_hit.clone()).await else {
                panic!("{name}: d's own limit refuses")
            };
            assert_eq!(status.limit.metric, "hits", "{name}");
            let Decision::Admitted(last) = admit("e", Vec::new()).await else {
                panic!("{name}: the refused request's hold was released")
            };
            assert_eq!(
                last.completion_grant,
                Some(10),
                "{name}: 30,000 nanos buy the prompt and 10 tokens"
            );
            let Decision::Rejected(status) = admit("e", Vec::new()).await else {
                panic!("{name}: spent")
            };
            assert_eq!(status.used, 1_000_000, "{name}: no leaked hold");
        }
    }
}
