//! Limits when the store does not answer (`store.outage`).
//!
//! With `serve_cached` (the default), a request the store cannot admit
//! (its breaker is open, it is unreachable, or it did not answer in time)
//! is admitted on this replica's own counters instead. Strict mode seeds
//! those counters from every answer the store gives (`LocalLimits::observe`),
//! so during an outage each replica goes on from the last shared count it
//! saw. Each replica stops at the limit on its own count, so with `R`
//! replicas a limit is overshot by at most `(R − 1) · (limit − u)` per
//! period, `u` the lowest shared count a replica saw (at worst `(R − 1) ·
//! limit`); one replica alone is exact. Usage of requests admitted this way
//! is queued ([`crate::record::usage`]) and written when the store is back.
//!
//! A store call that timed out may still run when the store wakes. The
//! call is not dropped: it finishes in the background, and what it
//! did decides what is queued, so nothing is counted twice or lost.
//!
//! With `fail_closed`, requests the store cannot admit get 503.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use maas_store::model::UsageLimit;
use maas_store::{
    Admission, LimitCheck, LimitStatus, StoreError, StoreResult, TokenHold, UsageRecord, split_by_limits,
};
use time::OffsetDateTime;

use crate::limits::breaker::is_unavailable;
use crate::limits::{Admitted, Decision, Limiter, TokenRequest};
use crate::record::metrics::METRICS;
use crate::record::usage::UsageSink;

/// What the proxy does while the store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutagePolicy {
    /// Known keys keep working up to `max_key_age` after the store last
    /// vouched for them; limits fall back to this replica's counters.
    ServeCached { max_key_age: Duration },
    /// Requests that need the store get 503.
    FailClosed,
}

impl Default for OutagePolicy {
    fn default() -> Self {
        OutagePolicy::ServeCached {
            max_key_age: Duration::from_secs(3600),
        }
    }
}

impl OutagePolicy {
    pub fn serves_cached(self) -> bool {
        matches!(self, OutagePolicy::ServeCached { .. })
    }
}

type StoreCall<T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send>>;

/// A store call run under the breaker's deadline.
enum Called<T> {
    Answered(StoreResult<T>),
    /// Not sent (the breaker is open, the store refused), or the store
    /// became unreachable while it ran ([`StoreError::Uncertain`]: it may
    /// have run).
    Failed(StoreError),
    /// Sent, no answer yet: the call goes on in the background.
    Pending(StoreCall<T>),
}

/// Who counts a locally admitted request's deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uncounted {
    /// The store did not count them: queue them now.
    Queue,
    /// A store call still running may count them; it decides.
    Undecided,
}

impl Limiter {
    async fn call_store<T: Send + 'static>(&self, call: StoreCall<T>) -> Called<T> {
        if self.breaker.is_open() {
            return Called::Failed(crate::limits::breaker::open_refusal());
        }
        let mut call = call;
        match tokio::time::timeout(self.breaker.settings().call_timeout, &mut call).await {
            Ok(result) => match self.breaker.observe(Ok(result)) {
                Err(error) if is_unavailable(&error) => Called::Failed(error),
                answered => Called::Answered(answered),
            },
            Err(elapsed) => {
                // Counted as a failure, but the call is kept.
                let _ = self.breaker.observe::<()>(Err(elapsed));
                Called::Pending(call)
            }
        }
    }

    /// Strict mode: one atomic check in the store, or, when the store does
    /// not answer and the policy allows, this replica's counters.
    pub(crate) async fn admit_strict(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        tokens: Option<(&TokenRequest, &str)>,
        now: OffsetDateTime,
    ) -> StoreResult<Decision> {
        let store = self.store.clone();
        let (app, owned_limits, owned_deltas) = (application_id.to_owned(), limits.to_vec(), deltas.to_vec());
        let hold = tokens.map(|(request, id)| TokenHold {
            id: id.to_owned(),
            prompt: request.prompt,
            completion_max: request.completion_max,
            completion_min: request.completion_min,
            ttl_secs: self.holds.ttl.as_secs().max(1),
            rates: request.rates,
        });
        let call: StoreCall<LimitCheck> = Box::pin(async move {
            let deltas: Vec<(&str, u64)> = owned_deltas.iter().map(|(m, v)| (m.as_str(), *v)).collect();
            store
                .check_limits(&app, &owned_limits, &deltas, hold.as_ref(), now)
                .await
        });
        let uncounted = match self.call_store(call).await {
            Called::Answered(Ok(check)) => {
                // The buckets no limit checks go in the next usage batch.
                self.sink.push_records(&check.unrecorded);
                let completion_grant = check.completion_grant;
                let decision = match check.admission {
                    Admission::Admitted(statuses) => {
                        self.local().observe(application_id, &statuses, now);
                        Decision::Admitted(Admitted {
                            statuses,
                            completion_grant,
                            hold: tokens.map(|(_, id)| id.to_owned()),
                        })
                    }
                    Admission::Rejected(status) => {
                        self.local().observe(application_id, std::slice::from_ref(&status), now);
                        Decision::Rejected(status)
                    }
                };
                return Ok(decision);
            }
            Called::Answered(Err(error)) => return Err(error),
            Called::Failed(error) if !self.outage.serves_cached() => return Err(error),
            Called::Failed(error) => {
                if let StoreError::Uncertain(_) = error {
                    // Counted here; the store may have counted it too.
                    METRICS.uncertain_writes.with_label_values(&["admit"]).inc();
                }
                Uncounted::Queue
            }
            Called::Pending(call) => {
                if self.outage.serves_cached() {
                    self.resolve_in_background(application_id, deltas, call, now);
                    Uncounted::Undecided
                } else {
                    // Refused here; whatever the store does when it wakes
                    // is its own count.
                    tokio::spawn(call);
                    return Err(StoreError::Unavailable("the store did not answer in time".into()));
                }
            }
        };
        self.admit_without_store(application_id, limits, deltas, tokens, now, uncounted)
    }

    /// A timed-out admission: if the store admitted it after all, the store
    /// counted its deltas; otherwise they are queued.
    fn resolve_in_background(
        &self,
        application_id: &str,
        deltas: &[(String, u64)],
        call: StoreCall<LimitCheck>,
        now: OffsetDateTime,
    ) {
        let sink = self.sink.clone();
        let app = application_id.to_owned();
        let deltas = deltas.to_vec();
        tokio::spawn(async move {
            match call.await {
                Ok(LimitCheck {
                    admission: Admission::Admitted(_),
                    unrecorded,
                    ..
                }) => {
                    sink.push_records(&unrecorded);
                    return;
                }
                Err(StoreError::Uncertain(_)) => {
                    METRICS.uncertain_writes.with_label_values(&["admit"]).inc();
                }
                _ => {}
            }
            sink.push_deltas(&app, &deltas, now);
        });
    }

    /// Admits on this replica's counters; limits it has no count of start
    /// from zero (a new period, or an application first seen in the outage).
    fn admit_without_store(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        tokens: Option<(&TokenRequest, &str)>,
        now: OffsetDateTime,
        uncounted: Uncounted,
    ) -> StoreResult<Decision> {
        METRICS.outage_decisions.with_label_values(&["local_admission"]).inc();
        let tokens = tokens.map(|(request, id)| (request, id, self.holds.ttl));
        let mut local = self.local();
        let decision = match local.try_admit(application_id, limits, deltas, tokens, now) {
            Ok(decision) => decision,
            Err(missing) => {
                local.load(application_id, unknown_counts(&missing, now), now);
                local
                    .try_admit(application_id, limits, deltas, tokens, now)
                    .map_err(|_| StoreError::Unavailable("no local count of the plan's limits".into()))?
            }
        };
        drop(local);
        if let (Decision::Admitted(_), Uncounted::Queue) = (&decision, uncounted) {
            self.sink.push_deltas(application_id, deltas, now);
        }
        Ok(decision)
    }

    /// Strict mode, a request done: its usage replaces its hold, in the
    /// store in one step, or, for a hold an outage put on this replica's
    /// counters, in the next usage batch.
    pub(crate) async fn settle_strict(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        hold: Option<&str>,
        deltas: &[(&str, u64)],
        now: OffsetDateTime,
    ) {
        let held_here = self.local().settle(application_id, hold, deltas, now);
        let Some(hold) = hold.filter(|_| !held_here) else {
            self.sink.push_deltas(application_id, deltas, now);
            return;
        };
        let records: Vec<UsageRecord> = deltas
            .iter()
            .filter(|(_, value)| *value > 0)
            .map(|(metric, value)| UsageRecord::new(application_id, metric, *value, now))
            .collect();
        // The settle counts the buckets the limits check; the next usage
        // batch the others.
        let (records, unrecorded) = split_by_limits(&records, limits);
        self.sink.push_records(&unrecorded);
        let settle = Arc::new(Settle {
            application_id: application_id.to_owned(),
            hold: hold.to_owned(),
            records,
        });
        let store = self.store.clone();
        let sent = settle.clone();
        let call: StoreCall<()> =
            Box::pin(async move { store.settle(&sent.application_id, &sent.hold, &sent.records).await });
        match self.call_store(call).await {
            Called::Answered(Ok(())) => {}
            Called::Answered(Err(error)) | Called::Failed(error) => self.settle_failed(settle, &error),
            Called::Pending(call) => {
                let sink = self.sink.clone();
                tokio::spawn(async move {
                    if let Err(error) = call.await {
                        settle_failed(&sink, settle, &error);
                    }
                });
            }
        }
    }

    fn settle_failed(&self, settle: Arc<Settle>, error: &StoreError) {
        METRICS.store_errors.with_label_values(&["settle"]).inc();
        if !crate::limits::breaker::is_open_refusal(error) {
            tracing::warn!(%error, "settling a token hold failed; its usage is written later");
        }
        settle_failed(&self.sink, settle, error);
    }

    /// Local mode's first sight of limits: the store's counts, or zero
    /// when the store does not answer and the policy allows.
    pub(crate) async fn load_counts(
        &self,
        application_id: &str,
        missing: &[UsageLimit],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<LimitStatus>> {
        match self
            .breaker
            .call(self.store.limit_status(application_id, missing, now))
            .await
        {
            Err(error) if is_unavailable(&error) && self.outage.serves_cached() => {
                METRICS.outage_decisions.with_label_values(&["local_admission"]).inc();
                Ok(unknown_counts(missing, now))
            }
            other => other,
        }
    }
}

/// A settle, kept for sending again if it fails.
#[derive(Debug)]
pub(crate) struct Settle {
    application_id: String,
    hold: String,
    records: Vec<UsageRecord>,
}

/// A settle that failed: one the store may have applied is resent (and
/// spooled) to apply only if its hold is still there (counted once; lost
/// only if the hold expired in between, `limits.hold_ttl_secs`); one it
/// did not apply goes to the next usage batch, and its hold expires.
fn settle_failed(sink: &UsageSink, settle: Arc<Settle>, error: &StoreError) {
    if let StoreError::Uncertain(_) = error {
        METRICS.uncertain_writes.with_label_values(&["settle"]).inc();
        sink.push_settle(&settle.hold, settle.records.clone());
        return;
    }
    sink.push_records(&settle.records);
}

/// Limits whose shared count is unknown, counted from zero.
fn unknown_counts(limits: &[UsageLimit], now: OffsetDateTime) -> Vec<LimitStatus> {
    let at = now.unix_timestamp();
    limits.iter().map(|limit| LimitStatus::at(limit, 0, at)).collect()
}

#[cfg(test)]
mod tests {

    use maas_store::Store;
    use maas_store::period::Period;

    use super::*;
    use crate::flaky_store::{DOWN, FlakyBackend, HUNG, UP};
    use crate::limits::breaker::{BreakerSettings, StoreBreaker};
    use crate::limits::{HoldPolicy, LimitMode};
    use crate::record::usage::UsageSink;

    struct Rig {
        limiter: Limiter,
        flaky: Arc<FlakyBackend>,
        /// The same data, always answering: what the store holds.
        truth: Store,
        _dir: tempfile::TempDir,
    }

    async fn rig(policy: OutagePolicy) -> Rig {
        let (flaky, store, truth, dir) = FlakyBackend::stores();
        let breaker = Arc::new(StoreBreaker::new(BreakerSettings {
            failures_to_open: 3,
            call_timeout: Duration::from_millis(50),
            probe_interval: Duration::from_millis(20),
        }));
        let limiter = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store)),
            LimitMode::Strict,
            HoldPolicy::default(),
        )
        .with_outage(breaker, policy);
        Rig {
            limiter,
            flaky,
            truth,
            _dir: dir,
        }
    }

    fn hits(value: u64) -> Vec<UsageLimit> {
        vec![UsageLimit {
            metric: "hits".into(),
            period: Period::Eternity,
            value,
        }]
    }

    async fn admitted(limiter: &Limiter, requests: usize, limit: u64) -> usize {
        let deltas = vec![("hits".to_owned(), 1)];
        let mut admitted = 0;
        for _ in 0..requests {
            let decision = limiter
                .admit("app", &hits(limit), &deltas, None, OffsetDateTime::now_utc())
                .await
                .unwrap();
            admitted += usize::from(matches!(decision, Decision::Admitted(_)));
        }
        admitted
    }

    async fn stored_hits(rig: &Rig) -> u64 {
        rig.truth
            .usage("app", "hits", Period::Eternity, OffsetDateTime::now_utc())
            .await
            .unwrap()
    }

    /// Until the store answers again and the queue is written.
    async fn recover(rig: &Rig) {
        rig.flaky.set(UP);
        rig.limiter.breaker().probe(&rig.limiter.store).await;
        assert!(!rig.limiter.breaker().is_open());
        rig.limiter.sync().await.unwrap();
    }

    #[tokio::test]
    async fn a_refusing_store_falls_back_to_the_last_count_seen() {
        let rig = rig(OutagePolicy::default()).await;
        assert_eq!(admitted(&rig.limiter, 6, 10).await, 6);
        rig.flaky.set(DOWN);
        assert_eq!(
            admitted(&rig.limiter, 10, 10).await,
            4,
            "this replica goes on from the 6 the store last said"
        );
        assert!(rig.limiter.breaker().is_open());
        assert_eq!(stored_hits(&rig).await, 6);
        recover(&rig).await;
        assert_eq!(stored_hits(&rig).await, 10, "the queued hits are written once");
        assert_eq!(admitted(&rig.limiter, 2, 10).await, 0);
    }

    #[tokio::test]
    async fn admissions_that_timed_out_are_counted_once_whatever_the_store_did() {
        let rig = rig(OutagePolicy::default()).await;
        rig.flaky.set(HUNG);
        let started = std::time::Instant::now();
        // Three time out (then run when the store wakes), the rest skip it.
        assert_eq!(admitted(&rig.limiter, 8, 100).await, 8);
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert!(rig.limiter.breaker().is_open());
        recover(&rig).await;
        // The timed-out calls finish in the background.
        for _ in 0..50 {
            if stored_hits(&rig).await == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            rig.limiter.sync().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        rig.limiter.sync().await.unwrap();
        assert_eq!(stored_hits(&rig).await, 8, "each admitted request counted exactly once");
    }

    #[tokio::test]
    async fn fail_closed_refuses_without_the_store() {
        let rig = rig(OutagePolicy::FailClosed).await;
        rig.flaky.set(DOWN);
        let deltas = vec![("hits".to_owned(), 1)];
        let outcome = rig
            .limiter
            .admit("app", &hits(10), &deltas, None, OffsetDateTime::now_utc())
            .await;
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    }

    #[tokio::test]
    async fn token_usage_settled_in_an_outage_is_written_once() {
        let rig = rig(OutagePolicy::default()).await;
        let limits = vec![UsageLimit {
            metric: "total_tokens".into(),
            period: Period::Day,
            value: 10_000,
        }];
        let deltas = vec![("hits".to_owned(), 1)];
        let request = TokenRequest {
            prompt: 10,
            completion_max: 100,
            completion_min: 1,
            rates: Default::default(),
        };
        let now = OffsetDateTime::now_utc();
        let Decision::Admitted(before) = rig
            .limiter
            .admit("app", &limits, &deltas, Some(&request), now)
            .await
            .unwrap()
        else {
            panic!("admitted")
        };
        rig.flaky.set(HUNG);
        // Settled while the store hangs: the call goes on in the background.
        rig.limiter
            .settle("app", &limits, before.hold.as_deref(), &[("total_tokens", 30)], now)
            .await;
        rig.flaky.set(DOWN);
        let mut during = Vec::new();
        for _ in 0..4 {
            let Decision::Admitted(admitted) = rig
                .limiter
                .admit("app", &limits, &deltas, Some(&request), now)
                .await
                .unwrap()
            else {
                panic!("admitted on local counters")
            };
            during.push(admitted);
        }
        for admitted in &during {
            rig.limiter
                .settle("app", &limits, admitted.hold.as_deref(), &[("total_tokens", 25)], now)
                .await;
        }
        recover(&rig).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        rig.limiter.sync().await.unwrap();
        let total = rig.truth.usage("app", "total_tokens", Period::Day, now).await.unwrap();
        assert_eq!(total, 30 + 4 * 25);
        let hits = rig.truth.usage("app", "hits", Period::Eternity, now).await.unwrap();
        assert_eq!(hits, 5);
    }
}
