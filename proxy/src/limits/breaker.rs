//! The circuit breaker around the store.
//!
//! Closed, every store call runs under a deadline. After
//! `failures_to_open` consecutive failures (an unreachable store, or no
//! answer within the deadline) it opens: calls fail at once, so requests
//! stop waiting for a store that does not answer, and the proxy serves
//! from what it already knows ([`crate::state`], [`crate::limits`]). While
//! open a background probe asks the store every `probe_interval`
//! (half-open while it asks); the first answer closes the breaker.
//!
//! Only unavailability counts as failure: a store that answers with an
//! error (a corrupt record, a conflict) is up.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use maas_store::{Store, StoreError, StoreResult};

use crate::record::metrics::METRICS;

/// The breaker's settings (`store.timeout_ms`, `store.breaker_failures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures_to_open: u32,
    /// How long a store call may take before it counts as failed.
    pub call_timeout: Duration,
    /// How often an open breaker asks whether the store is back.
    pub probe_interval: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures_to_open: 3,
            call_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// Open, with a probe in flight.
    HalfOpen,
}

impl BreakerState {
    fn from_u8(value: u8) -> BreakerState {
        match value {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// The metric's value: 0 closed, 1 open, 2 half-open.
    pub fn as_u8(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What a call refused by the open breaker fails with.
const OPEN: &str = "the store's circuit breaker is open";

/// The error of a call the open breaker refused (not sent to the store).
pub fn open_refusal() -> StoreError {
    StoreError::Unavailable(OPEN.into())
}

/// Whether `error` is [`open_refusal`]'s: the breaker logged the outage
/// once, so callers need not log each refused call.
pub fn is_open_refusal(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(message) if message == OPEN)
}

/// Whether a store call's outcome says the store is unavailable.
pub fn is_unavailable(error: &StoreError) -> bool {
    error.is_unavailable()
}

pub struct StoreBreaker {
    settings: BreakerSettings,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
}

impl StoreBreaker {
    pub fn new(settings: BreakerSettings) -> StoreBreaker {
        METRICS.store_breaker_state.set(0);
        StoreBreaker {
            settings,
            state: AtomicU8::new(BreakerState::Closed.as_u8()),
            consecutive_failures: AtomicU32::new(0),
        }
    }

    pub fn settings(&self) -> BreakerSettings {
        self.settings
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// How long a call may take before it counts as a failure.
    pub fn call_timeout(&self) -> Duration {
        self.settings.call_timeout
    }

    /// Whether calls skip the store (open or half-open).
    pub fn is_open(&self) -> bool {
        self.state() != BreakerState::Closed
    }

    fn transition(&self, from: BreakerState, to: BreakerState, why: &str) -> bool {
        let moved = self
            .state
            .compare_exchange(from.as_u8(), to.as_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            METRICS.store_breaker_state.set(i64::from(to.as_u8()));
            METRICS
                .store_breaker_transitions
                .with_label_values(&[to.as_str()])
                .inc();
            // Half-open is the probe's own bookkeeping; only open and
            // closed are news to an operator.
            match to {
                BreakerState::Open if from == BreakerState::Closed => {
                    tracing::error!(
                        failures = self.consecutive_failures.load(Ordering::Relaxed),
                        reason = why,
                        "store circuit breaker open: serving from cached keys and local limits"
                    )
                }
                BreakerState::Closed => tracing::warn!("store circuit breaker closed: the store answers again"),
                _ => {}
            }
        }
        moved
    }

    /// The store answered.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let state = self.state();
        if state != BreakerState::Closed {
            self.transition(state, BreakerState::Closed, "answered");
        }
    }

    /// The store did not answer (unreachable, or past the deadline).
    pub fn record_failure(&self, why: &str) {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.settings.failures_to_open {
            self.transition(BreakerState::Closed, BreakerState::Open, why);
        }
    }

    /// Runs one store call under the deadline, unless the breaker is open
    /// (then it fails at once). Its outcome feeds the breaker.
    pub async fn call<T>(&self, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        if self.is_open() {
            return Err(open_refusal());
        }
        self.observe(tokio::time::timeout(self.settings.call_timeout, call).await)
    }

    /// Feeds a call's outcome (from [`tokio::time::timeout`]) to the
    /// breaker and returns it, a deadline passed as unavailability.
    pub fn observe<T>(&self, outcome: Result<StoreResult<T>, tokio::time::error::Elapsed>) -> StoreResult<T> {
        match outcome {
            Ok(Err(error)) if is_unavailable(&error) => {
                self.record_failure("unreachable");
                Err(error)
            }
            Ok(result) => {
                self.record_success();
                result
            }
            Err(_) => {
                self.record_failure("timeout");
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.settings.call_timeout.as_millis()
                )))
            }
        }
    }

    /// One probe of an open breaker: half-open while the store is asked,
    /// closed if it answers, open again if not.
    pub async fn probe(&self, store: &Store) {
        if !self.transition(BreakerState::Open, BreakerState::HalfOpen, "probe") {
            return;
        }
        match tokio::time::timeout(self.settings.call_timeout, store.ping()).await {
            Ok(Ok(())) => self.record_success(),
            _ => {
                self.transition(BreakerState::HalfOpen, BreakerState::Open, "probe failed");
            }
        }
    }

    /// Probes while open, for the life of the process.
    pub async fn run_probes(self: std::sync::Arc<Self>, store: Store) {
        let mut ticker = tokio::time::interval(self.settings.probe_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.state() == BreakerState::Open {
                self.probe(&store).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures_to_open: u32) -> StoreBreaker {
        StoreBreaker::new(BreakerSettings {
            failures_to_open,
            call_timeout: Duration::from_millis(20),
            probe_interval: Duration::from_millis(10),
        })
    }

    fn down() -> StoreResult<()> {
        Err(StoreError::Unavailable("connection refused".into()))
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_only() {
        let breaker = breaker(3);
        for _ in 0..2 {
            assert!(breaker.call(async { down() }).await.is_err());
        }
        breaker.call(async { Ok(()) }).await.unwrap();
        for _ in 0..2 {
            assert!(breaker.call(async { down() }).await.is_err());
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "a success in between resets the count"
        );
        assert!(breaker.call(async { down() }).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn an_open_breaker_fails_at_once_without_calling() {
        let breaker = breaker(1);
        assert!(breaker.call(async { down() }).await.is_err());
        let called = std::sync::atomic::AtomicBool::new(false);
        let outcome = breaker
            .call(async {
                called.store(true, Ordering::Relaxed);
                Ok(())
            })
            .await;
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))));
        assert!(
            !called.load(Ordering::Relaxed),
            "an open breaker does not call the store"
        );
    }

    #[tokio::test]
    async fn a_call_past_the_deadline_counts_as_a_failure() {
        let breaker = breaker(2);
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let outcome = breaker
                .call(async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                })
                .await;
            assert!(matches!(outcome, Err(StoreError::Unavailable(_))));
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn answers_that_are_errors_mean_the_store_is_up() {
        let breaker = breaker(1);
        let outcome: StoreResult<()> = breaker
            .call(async { Err(StoreError::Conflict("lost a race".into())) })
            .await;
        assert!(matches!(outcome, Err(StoreError::Conflict(_))));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_probe_closes_an_open_breaker_when_the_store_answers() {
        let (store, _dir) = crate::test_store().await;
        let breaker = breaker(1);
        assert!(breaker.call(async { down() }).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker.probe(&store).await;
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.call(async { Ok(()) }).await.unwrap();
    }
}
