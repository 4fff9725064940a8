//! Local mode's view of the limits on one replica: per application and
//! limit, `base` (the store's count at the last sync), `pending` (admitted
//! here since) and `held` (tokens held here by requests in flight).
//!
//! Other replicas' pending usage and holds are invisible until a sync, which
//! is where local mode's documented overshoot bound comes from.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use maas_store::limits::{Demand, Grant, decide};
use maas_store::model::UsageLimit;
use maas_store::{LimitStatus, hold_on};
use time::OffsetDateTime;

use crate::limits::{Admitted, Decision, TokenRequest, admits, delta_of};

#[derive(Debug, Clone)]
struct LocalCounter {
    limit: UsageLimit,
    bucket_start: i64,
    base: u64,
    pending: u64,
    held: u64,
}

impl LocalCounter {
    fn used(&self) -> u64 {
        self.base.saturating_add(self.pending).saturating_add(self.held)
    }

    fn status(&self) -> LimitStatus {
        LimitStatus::at(&self.limit, self.used(), self.bucket_start)
    }

    /// A counter of `limit`'s bucket at `at` that starts from `base`.
    fn fresh(limit: &UsageLimit, at: i64, base: u64) -> LocalCounter {
        LocalCounter {
            limit: limit.clone(),
            bucket_start: limit.period.bucket_start(at),
            base,
            pending: 0,
            held: 0,
        }
    }

    fn is(&self, limit: &UsageLimit) -> bool {
        self.limit.metric == limit.metric && self.limit.period == limit.period
    }
}

/// Tokens one request holds: `(counter index, bucket, amount)` each.
#[derive(Debug)]
struct LocalHold {
    amounts: Vec<(usize, i64, u64)>,
    expires: Instant,
}

#[derive(Debug, Default)]
struct LocalApp {
    counters: Vec<LocalCounter>,
    holds: HashMap<String, LocalHold>,
    last_used: Option<Instant>,
}

/// A tracked counter at sync time: its limit, bucket and pending count.
pub(crate) type FlushedCounter = (UsageLimit, i64, u64);

/// How long an application nobody calls keeps its counters here.
const IDLE: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub(crate) struct LocalLimits {
    apps: HashMap<String, LocalApp>,
}

impl LocalLimits {
    /// Admits against this replica's view; `Err(limits)` when some limits
    /// have no current counter yet (load them from the store and retry).
    pub(crate) fn try_admit(
        &mut self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(String, u64)],
        tokens: Option<(&TokenRequest, &str, Duration)>,
        now: OffsetDateTime,
    ) -> Result<Decision, Vec<UsageLimit>> {
        let at = now.unix_timestamp();
        let Some(app) = self.apps.get_mut(application_id) else {
            // First sight of the application on this replica.
            return Err(limits.to_vec());
        };
        let mut indexes = Vec::with_capacity(limits.len());
        let mut missing = Vec::new();
        for limit in limits {
            match app.counters.iter().position(|c| c.is(limit)) {
                Some(index) => {
                    let counter = &mut app.counters[index];
                    counter.limit.value = limit.value;
                    if counter.bucket_start != limit.period.bucket_start(at) {
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
        let mut completion_grant = None;
        let mut hold = None;
        match tokens {
            None => {
                for &index in &indexes {
                    let counter = &app.counters[index];
                    let delta = delta_of(deltas, &counter.limit.metric);
                    if !admits(counter.limit.value, counter.used(), delta) {
                        return Ok(Decision::Rejected(counter.status()));
                    }
                }
            }
            Some((request, id, ttl)) => {
                let demands: Vec<Demand> = indexes
                    .iter()
                    .map(|&i| {
                        let counter = &app.counters[i];
                        let (hold, grant_rate) = hold_on(&counter.limit.metric, request.prompt, request.rates);
                        Demand {
                            max: counter.limit.value,
                            add: delta_of(deltas, &counter.limit.metric),
                            hold,
                            grant_rate,
                        }
                    })
                    .collect();
                let used: Vec<u64> = indexes.iter().map(|&i| app.counters[i].used()).collect();
                let grant = Grant {
                    max: request.completion_max,
                    min: request.completion_min,
                };
                match decide(&demands, &used, Some(grant)) {
                    Err((position, _)) => return Ok(Decision::Rejected(app.counters[indexes[position]].status())),
                    Ok((granted, amounts)) => {
                        if demands.iter().any(|d| d.grant_rate > 0) {
                            completion_grant = Some(granted);
                        }
                        let amounts: Vec<(usize, i64, u64)> = indexes
                            .iter()
                            .zip(amounts)
                            .filter(|(_, amount)| *amount > 0)
                            .map(|(&i, amount)| (i, app.counters[i].bucket_start, amount))
                            .collect();
                        for &(index, _, amount) in &amounts {
                            let counter = &mut app.counters[index];
                            counter.held = counter.held.saturating_add(amount);
                        }
                        app.holds.insert(
                            id.to_owned(),
                            LocalHold {
                                amounts,
                                expires: Instant::now() + ttl,
                            },
                        );
                        hold = Some(id.to_owned());
                    }
                }
            }
        }
        app.last_used = Some(Instant::now());
        for counter in app.counters.iter_mut() {
            counter.pending = counter.pending.saturating_add(delta_of(deltas, &counter.limit.metric));
        }
        Ok(Decision::Admitted(Admitted {
            statuses: indexes.iter().map(|&i| app.counters[i].status()).collect(),
            completion_grant,
            hold,
        }))
    }

    /// Takes the store's counts of limits not tracked (or of a new period).
    pub(crate) fn load(&mut self, application_id: &str, statuses: Vec<LimitStatus>, now: OffsetDateTime) {
        let at = now.unix_timestamp();
        let app = self.apps.entry(application_id.to_owned()).or_default();
        for status in statuses {
            let fresh = LocalCounter::fresh(&status.limit, at, status.used);
            let bucket_start = fresh.bucket_start;
            match app.counters.iter_mut().find(|c| c.is(&status.limit)) {
                // Pending usage of an ended period was pushed to the sink already.
                Some(counter) if counter.bucket_start != bucket_start => *counter = fresh,
                Some(_) => {}
                None => app.counters.push(fresh),
            }
        }
    }

    /// Strict mode: the store's count of each limit after an admission, the
    /// base an outage would go on from ([`crate::limits::outage`]). What this
    /// replica admitted or holds on its own (during an outage) stays.
    pub(crate) fn observe(&mut self, application_id: &str, statuses: &[LimitStatus], now: OffsetDateTime) {
        let at = now.unix_timestamp();
        // Called on every strict admission: no allocation once the
        // application is known.
        if !self.apps.contains_key(application_id) {
            self.apps.insert(application_id.to_owned(), LocalApp::default());
        }
        let Some(app) = self.apps.get_mut(application_id) else {
            return;
        };
        app.last_used = Some(Instant::now());
        for status in statuses {
            let bucket_start = status.limit.period.bucket_start(at);
            match app.counters.iter_mut().find(|c| c.is(&status.limit)) {
                Some(counter) if counter.bucket_start == bucket_start => {
                    counter.limit.value = status.limit.value;
                    // The store's count includes what was pending here
                    // (and what requests in flight hold there: until they
                    // settle, an outage counts them twice, on the safe side).
                    counter.base = status.used;
                    counter.pending = 0;
                }
                found => {
                    let fresh = LocalCounter::fresh(&status.limit, at, status.used);
                    match found {
                        Some(counter) => *counter = fresh,
                        None => app.counters.push(fresh),
                    }
                }
            }
        }
    }

    /// Releases hold `hold` (if any) and counts usage known after the
    /// response, so this replica's token limits see it at once; whether
    /// the hold was this replica's.
    pub(crate) fn settle(
        &mut self,
        application_id: &str,
        hold: Option<&str>,
        deltas: &[(&str, u64)],
        now: OffsetDateTime,
    ) -> bool {
        let at = now.unix_timestamp();
        let Some(app) = self.apps.get_mut(application_id) else {
            return false;
        };
        let released = hold.and_then(|id| app.holds.remove(id));
        if let Some(released) = &released {
            release(&mut app.counters, released);
        }
        for counter in app.counters.iter_mut() {
            if counter.bucket_start == counter.limit.period.bucket_start(at) {
                counter.pending = counter.pending.saturating_add(delta_of(deltas, &counter.limit.metric));
            }
        }
        released.is_some()
    }

    /// Forgets idle applications (where `pending_matters`, only those with
    /// nothing pending: local mode still has to write it) and releases
    /// holds never settled.
    pub(crate) fn prune(&mut self, pending_matters: bool) {
        let now = Instant::now();
        self.apps.retain(|_, app| {
            let expired: Vec<String> = app
                .holds
                .iter()
                .filter(|(_, hold)| hold.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                if let Some(hold) = app.holds.remove(&id) {
                    release(&mut app.counters, &hold);
                }
            }
            app.last_used.is_some_and(|t| t.elapsed() < IDLE)
                || !app.holds.is_empty()
                || (pending_matters && app.counters.iter().any(|c| c.pending > 0))
        });
    }

    /// Prunes, and lists every tracked counter with what is pending on it.
    pub(crate) fn snapshot(&mut self) -> Vec<(String, Vec<FlushedCounter>)> {
        self.prune(true);
        self.apps
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
    }

    /// After a sync wrote `flushed` pending counts: the store's counts are
    /// the new base, and what was flushed is no longer pending.
    pub(crate) fn apply_sync(
        &mut self,
        application_id: &str,
        flushed: Vec<FlushedCounter>,
        statuses: Vec<LimitStatus>,
        now: OffsetDateTime,
    ) {
        let at = now.unix_timestamp();
        let Some(app) = self.apps.get_mut(application_id) else {
            return;
        };
        for ((limit, bucket_start, flushed), status) in flushed.into_iter().zip(statuses) {
            let Some(counter) = app.counters.iter_mut().find(|c| c.is(&limit)) else {
                continue;
            };
            if counter.bucket_start == bucket_start && limit.period.bucket_start(at) == bucket_start {
                counter.base = status.used;
                counter.pending = counter.pending.saturating_sub(flushed);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn held(&self, application_id: &str) -> Vec<u64> {
        self.apps
            .get(application_id)
            .map(|app| app.counters.iter().map(|c| c.held).collect())
            .unwrap_or_default()
    }
}

fn release(counters: &mut [LocalCounter], hold: &LocalHold) {
    for &(index, bucket_start, amount) in &hold.amounts {
        // A counter of a later period never held this.
        if let Some(counter) = counters.get_mut(index).filter(|c| c.bucket_start == bucket_start) {
            counter.held = counter.held.saturating_sub(amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use maas_store::period::Period;

    use super::*;

    /// Strict mode counts usage into these counters too (for an outage)
    /// and never writes it from here: that must not keep an idle
    /// application forever. Local mode must keep it until written.
    #[test]
    fn idle_applications_are_forgotten_unless_local_mode_has_usage_to_write() {
        let now = OffsetDateTime::now_utc();
        let limit = UsageLimit {
            metric: "total_tokens".into(),
            period: Period::Day,
            value: 1_000,
        };
        let idle = |limits: &mut LocalLimits| {
            limits.observe("app", &[LimitStatus::at(&limit, 10, now.unix_timestamp())], now);
            limits.settle("app", None, &[("total_tokens", 5)], now);
            let app = limits.apps.get_mut("app").unwrap();
            app.last_used = Instant::now().checked_sub(IDLE + Duration::from_secs(1));
        };
        let mut limits = LocalLimits::default();
        idle(&mut limits);
        limits.prune(true);
        assert!(limits.apps.contains_key("app"), "local mode: 5 tokens still to write");
        limits.prune(false);
        assert!(limits.apps.is_empty(), "strict mode: nothing of its own to write");
    }
}
