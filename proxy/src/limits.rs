//! Plan limits, shared by every proxy replica through the store.
//!
//! - `strict`: one atomic check-and-add in the store per request; exact
//!   across any number of replicas, one store round trip per request.
//! - `local`: each replica admits from its own view, `base` (the store's
//!   count at the last sync) plus `pending` (what it admitted since), and
//!   syncs every `sync_interval`. No store round trip per request. Other
//!   replicas' admissions since the last sync are invisible, so with `R`
//!   replicas each admitting at most `λ` requests per second, a limit is
//!   overshot by at most `(R − 1) · λ · (T + d)` (T the sync interval, d the
//!   store's round trip), and never by more than `(R − 1) · limit` per
//!   period. One replica alone is exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maas_store::model::{COMPLETION_TOKENS, PROMPT_TOKENS, TOTAL_TOKENS, UsageLimit};
use maas_store::{Admission, LimitStatus, Store, StoreResult};
use time::OffsetDateTime;

use crate::usage::UsageSink;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    Strict,
    Local { sync_interval: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Counted; where every limit stands now.
    Admitted(Vec<LimitStatus>),
    /// Nothing counted; the limit that refused.
    Rejected(LimitStatus),
}

#[derive(Debug, Clone)]
struct LocalCounter {
    limit: UsageLimit,
    bucket_start: i64,
    /// The store's count at the last sync (includes every replica).
    base: u64,
    /// Admitted here since the last sync.
    pending: u64,
}

impl LocalCounter {
    fn used(&self) -> u64 {
        self.base.saturating_add(self.pending)
    }

    fn status(&self) -> LimitStatus {
        let used = self.used();
        LimitStatus {
            limit: self.limit.clone(),
            used,
            remaining: self.limit.value.saturating_sub(used),
            resets_at: OffsetDateTime::from_unix_timestamp(self.limit.period.bucket_end(self.bucket_start))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        }
    }
}

#[derive(Debug, Default)]
struct LocalApp {
    counters: Vec<LocalCounter>,
    last_used: Option<Instant>,
}

/// A tracked counter at sync time: its limit, bucket and pending count.
type FlushedCounter = (UsageLimit, i64, u64);

/// Admission and accounting for every request.
pub struct Limiter {
    store: Store,
    sink: Arc<UsageSink>,
    mode: LimitMode,
    local: Mutex<HashMap<String, LocalApp>>,
}

/// Would `delta` more of a metric fit? A limit on a metric the request does
/// not count up front (tokens) admits while not yet spent.
pub fn admits(limit_value: u64, used: u64, delta: u64) -> bool {
    if delta == 0 {
        used < limit_value
    } else {
        used.checked_add(delta).is_some_and(|total| total <= limit_value)
    }
}

/// Prompt tokens guessed from a request body's size, before the model
/// server counts them: a quarter of the bytes (English text runs about four
/// characters per token; the JSON around the prompt makes this generous).
pub fn prompt_estimate(body_bytes: usize) -> u64 {
    (body_bytes / 4) as u64
}

/// How many completion tokens the token limits still allow a request
/// whose prompt is about `prompt_estimate` tokens: `None` when the plan
/// has no token limit, `Some(0)` when not even the prompt fits.
pub fn completion_budget(statuses: &[LimitStatus], prompt_estimate: u64) -> Option<u64> {
    statuses
        .iter()
        .filter_map(|status| match status.limit.metric.as_str() {
            TOTAL_TOKENS => Some(status.remaining.saturating_sub(prompt_estimate)),
            COMPLETION_TOKENS => Some(status.remaining),
            PROMPT_TOKENS if status.remaining < prompt_estimate => Some(0),
            _ => None,
        })
        .min()
}

fn delta_of<M: AsRef<str>>(deltas: &[(M, u64)], metric: &str) -> u64 {
    deltas
        .iter()
        .filter(|(m, _)| m.as_ref() == metric)
        .map(|(_, v)| *v)
        .fold(0, u64::saturating_add)
}

impl Limiter {
    pub fn new(store: Store, sink: Arc<UsageSink>, mode: LimitMode) -> Limiter {
        Limiter {
            store,
            sink,
            mode,
            local: Mutex::new(HashMap::new()),
        }
    }

    pub fn mode(&self) -> LimitMode {
        self.mode
    }

    /// Checks every limit against `deltas` and counts them if all admit.
    pub async fn admit(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        now: OffsetDateTime,
    ) -> StoreResult<Decision> {
        match self.mode {
            LimitMode::Strict => {
                let deltas: Vec<(&str, u64)> = deltas.iter().map(|(m, v)| (m.as_str(), *v)).collect();
                Ok(
                    match self
                        .store
                        .check_and_record(application_id, limits, &deltas, now)
                        .await?
                    {
                        Admission::Admitted(statuses) => Decision::Admitted(statuses),
                        Admission::Rejected(status) => Decision::Rejected(status),
                    },
                )
            }
            LimitMode::Local { .. } => loop {
                let missing = self.try_admit_locally(application_id, limits, deltas, now);
                match missing {
                    Ok(decision) => return Ok(decision),
                    Err(missing) => self.load_counters(application_id, &missing, now).await?,
                }
            },
        }
    }

    /// `Err(limits)` when some limits have no local counter yet.
    fn try_admit_locally(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        now: OffsetDateTime,
    ) -> Result<Decision, Vec<UsageLimit>> {
        let at = now.unix_timestamp();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let Some(app) = local.get_mut(application_id) else {
            // First sight of the application on this replica.
            return Err(limits.to_vec());
        };
        let mut indexes = Vec::with_capacity(limits.len());
        let mut missing = Vec::new();
        for limit in limits {
            match app
                .counters
                .iter()
                .position(|c| c.limit.metric == limit.metric && c.limit.period == limit.period)
            {
                Some(index) => {
                    let counter = &mut app.counters[index];
                    counter.limit.value = limit.value;
                    let bucket = limit.period.bucket_start(at);
                    if counter.bucket_start != bucket {
                        // A new period: the store's count of it is unknown here yet.
                        missing.push(limit.clone());
                    }
                    indexes.push(index);
                }
                None => missing.push(limit.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        for &index in &indexes {
            let counter = &app.counters[index];
            if !admits(
                counter.limit.value,
                counter.used(),
                delta_of(deltas, &counter.limit.metric),
            ) {
                return Ok(Decision::Rejected(counter.status()));
            }
        }
        app.last_used = Some(Instant::now());
        for counter in app.counters.iter_mut() {
            counter.pending = counter.pending.saturating_add(delta_of(deltas, &counter.limit.metric));
        }
        let statuses = indexes.iter().map(|&i| app.counters[i].status()).collect();
        drop(local);
        for (metric, value) in deltas {
            self.sink.push(application_id, metric, *value, now);
        }
        Ok(Decision::Admitted(statuses))
    }

    async fn load_counters(&self, application_id: &str, limits: &[UsageLimit], now: OffsetDateTime) -> StoreResult<()> {
        let statuses = self.store.limit_status(application_id, limits, now).await?;
        let at = now.unix_timestamp();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let app = local.entry(application_id.to_owned()).or_default();
        for status in statuses {
            let bucket_start = status.limit.period.bucket_start(at);
            let fresh = LocalCounter {
                limit: status.limit.clone(),
                bucket_start,
                base: status.used,
                pending: 0,
            };
            match app
                .counters
                .iter_mut()
                .find(|c| c.limit.metric == status.limit.metric && c.limit.period == status.limit.period)
            {
                // Pending usage of an ended period was pushed to the sink already.
                Some(counter) if counter.bucket_start != bucket_start => *counter = fresh,
                Some(_) => {}
                None => app.counters.push(fresh),
            }
        }
        Ok(())
    }

    /// Usage known after the response (tokens): queued for the store, and
    /// counted locally so this replica's token limits see it at once.
    pub fn record(&self, application_id: &str, deltas: &[(&str, u64)], now: OffsetDateTime) {
        for (metric, value) in deltas {
            self.sink.push(application_id, metric, *value, now);
        }
        if let LimitMode::Local { .. } = self.mode {
            let at = now.unix_timestamp();
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(app) = local.get_mut(application_id) {
                for counter in app.counters.iter_mut() {
                    if counter.bucket_start == counter.limit.period.bucket_start(at) {
                        let delta = delta_of(deltas, &counter.limit.metric);
                        counter.pending = counter.pending.saturating_add(delta);
                    }
                }
            }
        }
    }

    /// One sync of local mode: write queued usage, then re-read every
    /// tracked counter. Strict mode only writes the queue.
    pub async fn sync(&self) -> StoreResult<()> {
        let LimitMode::Local { .. } = self.mode else {
            self.sink.flush().await?;
            return Ok(());
        };
        // What was pending before the flush is in the store after it.
        let snapshot: Vec<(String, Vec<FlushedCounter>)> = {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            local.retain(|_, app| {
                app.last_used.is_some_and(|t| t.elapsed() < Duration::from_secs(120))
                    || app.counters.iter().any(|c| c.pending > 0)
            });
            local
                .iter()
                .map(|(id, app)| {
                    let counters = app
                        .counters
                        .iter()
                        .map(|c| (c.limit.clone(), c.bucket_start, c.pending))
                        .collect();
                    (id.clone(), counters)
                })
                .collect()
        };
        self.sink.flush().await?;
        let now = OffsetDateTime::now_utc();
        for (application_id, counters) in snapshot {
            let limits: Vec<UsageLimit> = counters.iter().map(|(l, _, _)| l.clone()).collect();
            let statuses = self.store.limit_status(&application_id, &limits, now).await?;
            let at = now.unix_timestamp();
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let Some(app) = local.get_mut(&application_id) else {
                continue;
            };
            for ((limit, bucket_start, flushed), status) in counters.into_iter().zip(statuses) {
                let Some(counter) = app
                    .counters
                    .iter_mut()
                    .find(|c| c.limit.metric == limit.metric && c.limit.period == limit.period)
                else {
                    continue;
                };
                if counter.bucket_start == bucket_start && limit.period.bucket_start(at) == bucket_start {
                    counter.base = status.used;
                    counter.pending = counter.pending.saturating_sub(flushed);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_store::period::Period;
    use maas_store::{StoreLocation, StoreOptions};

    async fn store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("maas-limits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open(&StoreLocation::Embedded { data_dir: dir }, StoreOptions::default())
            .await
            .unwrap()
    }

    fn hits(value: u64) -> Vec<UsageLimit> {
        vec![UsageLimit {
            metric: "hits".into(),
            period: Period::Eternity,
            value,
        }]
    }

    #[test]
    fn completion_budget_is_the_tightest_token_limit() {
        let status = |metric: &str, remaining: u64| LimitStatus {
            limit: UsageLimit {
                metric: metric.into(),
                period: Period::Day,
                value: 1000,
            },
            used: 1000 - remaining,
            remaining,
            resets_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(completion_budget(&[status("hits", 5)], 10), None);
        assert_eq!(completion_budget(&[status("total_tokens", 500)], 100), Some(400));
        assert_eq!(
            completion_budget(&[status("total_tokens", 500), status("completion_tokens", 300)], 100),
            Some(300)
        );
        assert_eq!(completion_budget(&[status("total_tokens", 50)], 100), Some(0));
        assert_eq!(completion_budget(&[status("prompt_tokens", 50)], 100), Some(0));
        assert_eq!(completion_budget(&[status("prompt_tokens", 500)], 100), None);
        assert_eq!(prompt_estimate(400), 100);
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
                .admit(app, &hits(limit), &deltas, OffsetDateTime::now_utc())
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
            let store = store(name).await;
            let limiter = Limiter::new(store.clone(), Arc::new(UsageSink::new(store.clone())), mode);
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
        let store = store("unlimited").await;
        let limiter = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            LimitMode::Local {
                sync_interval: Duration::from_millis(100),
            },
        );
        let deltas = vec![("hits".to_owned(), 1)];
        let now = OffsetDateTime::now_utc();
        for _ in 0..3 {
            let decision = limiter.admit("app", &[], &deltas, now).await.unwrap();
            assert_eq!(decision, Decision::Admitted(Vec::new()));
        }
        limiter.sync().await.unwrap();
        assert_eq!(store.usage("app", "hits", Period::Eternity, now).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn local_replicas_see_each_other_after_a_sync() {
        let store = store("replicas").await;
        let mode = LimitMode::Local {
            sync_interval: Duration::from_millis(100),
        };
        let a = Limiter::new(store.clone(), Arc::new(UsageSink::new(store.clone())), mode);
        let b = Limiter::new(store.clone(), Arc::new(UsageSink::new(store.clone())), mode);
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
        let store = store("tokens").await;
        let limiter = Limiter::new(
            store.clone(),
            Arc::new(UsageSink::new(store.clone())),
            LimitMode::Local {
                sync_interval: Duration::from_millis(100),
            },
        );
        let limits = vec![UsageLimit {
            metric: "total_tokens".into(),
            period: Period::Eternity,
            value: 100,
        }];
        let deltas = vec![("hits".to_owned(), 1)];
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            limiter.admit("app", &limits, &deltas, now).await.unwrap(),
            Decision::Admitted(_)
        ));
        limiter.record("app", &[("total_tokens", 150)], now);
        let Decision::Rejected(status) = limiter.admit("app", &limits, &deltas, now).await.unwrap() else {
            panic!("a spent token budget must refuse");
        };
        assert_eq!(status.used, 150);
        assert_eq!(status.remaining, 0);
    }
}
