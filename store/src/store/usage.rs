//! Usage counters: every increment lands in one bucket of each period
//! (minute … eternity), which serve both limits and charts.
//!
//! Enforcement and accounting are apart: an admission or a settle counts,
//! in its one atomic step, only the buckets a limit checks
//! ([`enforced_periods`]); the request's other buckets (every other period,
//! every metric no limit names) come back as records for the caller to
//! write in batches ([`Store::record_usage_once`]). Each bucket is counted
//! by exactly one of the two.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Store;
use crate::backend::{CheckOutcome, CounterAdd, CounterCheck, CounterKey, Reservation};
use crate::error::{StoreError, StoreResult};
use crate::limits::{Grant, delta_of};
use crate::model::{COMPLETION_TOKENS, PROMPT_TOKENS, SpendRates, TOTAL_TOKENS, UsageLimit, is_spend_metric};
use crate::period::{Period, PeriodSet};

/// `value` of `metric` used by an application at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub application_id: String,
    pub metric: String,
    pub value: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The period buckets it is counted in: all, unless a limit script
    /// counted some already. Records spooled before this field read as all.
    #[serde(default, skip_serializing_if = "PeriodSet::is_all")]
    pub periods: PeriodSet,
}

impl UsageRecord {
    /// A record counted in every period's bucket.
    pub fn new(application_id: &str, metric: &str, value: u64, at: OffsetDateTime) -> UsageRecord {
        UsageRecord {
            application_id: application_id.to_owned(),
            metric: metric.to_owned(),
            value,
            at,
            periods: PeriodSet::ALL,
        }
    }

    fn only(&self, periods: PeriodSet) -> Option<UsageRecord> {
        (!periods.is_empty() && self.value > 0).then(|| UsageRecord {
            periods,
            ..self.clone()
        })
    }
}

/// What an application's usage is broken down by, beside its methods: the
/// model a request named, or the key it came with. No limit counts these
/// series; they are written with the usage batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakdown<'a> {
    Model(&'a str),
    Key(&'a str),
    /// A person calling with an access token (its `sub`).
    User(&'a str),
}

/// The metrics each [`Breakdown`] keeps: requests, the tokens they were
/// billed, and what they cost (nanos, at each model's prices).
pub const BREAKDOWN_METRICS: [&str; 4] = [
    crate::model::HITS,
    PROMPT_TOKENS,
    COMPLETION_TOKENS,
    crate::model::SPEND,
];

impl Breakdown<'_> {
    /// The buckets breakdowns are counted in: those statistics draw by
    /// (hour, day, month), not every period's, so they cost under half
    /// the writes of the application's own series.
    pub fn periods() -> PeriodSet {
        PeriodSet::NONE.with(Period::Hour).with(Period::Day).with(Period::Month)
    }

    /// The counter name of `metric` for this model or key. Metric names
    /// of products never hold a `:`, so these never meet them.
    pub fn metric(self, metric: &str) -> String {
        let mut name = String::new();
        self.write_metric(&mut name, metric);
        name
    }

    /// [`Breakdown::metric`] into `name` (cleared first), so a caller
    /// naming several series reuses one buffer.
    pub fn write_metric(self, name: &mut String, metric: &str) {
        let (kind, part) = match self {
            Breakdown::Model(model) => ("model", model),
            Breakdown::Key(key) => ("key", key),
            Breakdown::User(user) => ("user", user),
        };
        name.clear();
        for piece in [kind, ":", part, ":", metric] {
            name.push_str(piece);
        }
    }
}

/// The periods whose buckets of `metric` some limit checks: an admission
/// or a settle counts those itself.
pub fn enforced_periods(limits: &[UsageLimit], metric: &str) -> PeriodSet {
    limits
        .iter()
        .filter(|limit| limit.metric == metric)
        .fold(PeriodSet::NONE, |set, limit| set.with(limit.period))
}

/// Splits `records` into the part `limits` check (for the limit script:
/// [`Store::settle`]) and the rest (for a usage batch).
pub fn split_by_limits(records: &[UsageRecord], limits: &[UsageLimit]) -> (Vec<UsageRecord>, Vec<UsageRecord>) {
    let mut limited = Vec::new();
    let mut rest = Vec::new();
    for record in records {
        let checked = enforced_periods(limits, &record.metric).and(record.periods);
        limited.extend(record.only(checked));
        rest.extend(record.only(record.periods.without(checked)));
    }
    (limited, rest)
}

/// What a limit check decided, and the usage it left to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    pub admission: Admission,
    /// Completion tokens granted, when a token limit bounds them.
    pub completion_grant: Option<u64>,
    /// The admitted request's deltas in the buckets no limit checks: the
    /// caller writes them (a usage batch); empty when refused.
    pub unrecorded: Vec<UsageRecord>,
}

/// Where an application stands against one limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStatus {
    pub limit: UsageLimit,
    pub used: u64,
    pub remaining: u64,
    /// When the current period ends and the count starts over.
    #[serde(with = "time::serde::rfc3339")]
    pub resets_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted; the status of every limit after counting.
    Admitted(Vec<LimitStatus>),
    /// Nothing counted; the limit that refused.
    Rejected(LimitStatus),
}

/// What a request holds against its plan's token limits and its spend
/// budgets while in flight: its prompt, and as many completion tokens as
/// fit up to `completion_max` (on a budget, at their price). Released with
/// the actual usage by [`Store::settle`], or at expiry if the holder never
/// settles (a crashed proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHold {
    /// Unique per request.
    pub id: String,
    /// Prompt tokens, estimated before the model counts them.
    pub prompt: u64,
    /// Most completion tokens wanted; admission fails below `completion_min`.
    pub completion_max: u64,
    pub completion_min: u64,
    pub ttl_secs: u64,
    /// What a token of the requested model costs (budgets hold money).
    pub rates: SpendRates,
}

/// What a limit on `metric` holds for a request of `prompt` tokens at
/// `rates`: `(fixed, grant rate)`, the grant being completion tokens.
pub fn hold_on(metric: &str, prompt: u64, rates: SpendRates) -> (u64, u64) {
    match metric {
        TOTAL_TOKENS => (prompt, 1),
        COMPLETION_TOKENS => (0, 1),
        PROMPT_TOKENS => (prompt, 0),
        spend if is_spend_metric(spend) => (prompt.saturating_mul(rates.prompt), rates.completion),
        _ => (0, 0),
    }
}

/// One bar of a usage chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub value: u64,
}

/// Most buckets one series may span.
pub const MAX_SERIES_POINTS: usize = 10_000;

fn counter(application_id: &str, metric: &str, period: Period, bucket_start: i64) -> CounterKey {
    CounterKey {
        shard: application_id.to_owned(),
        name: [
            metric,
            ":",
            period.as_str(),
            ":",
            itoa::Buffer::new().format(bucket_start),
        ]
        .concat(),
    }
}

fn bucket_key(application_id: &str, metric: &str, period: Period, at: i64) -> CounterKey {
    counter(application_id, metric, period, period.bucket_start(at))
}

fn resets_at(period: Period, at: i64) -> OffsetDateTime {
    let end = period.bucket_end(period.bucket_start(at));
    OffsetDateTime::from_unix_timestamp(end).unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC))
}

impl LimitStatus {
    /// Where `limit` stands with `used` spent, in its period's bucket at
    /// `at` (unix seconds).
    pub fn at(limit: &UsageLimit, used: u64, at: i64) -> LimitStatus {
        LimitStatus {
            limit: limit.clone(),
            used,
            remaining: limit.value.saturating_sub(used),
            resets_at: resets_at(limit.period, at),
        }
    }
}

/// The increments of `value` to `metric` in every period's bucket at `at`.
/// The increments of `records`, one per counter, by application.
fn summed_adds(records: &[UsageRecord]) -> HashMap<String, Vec<CounterAdd>> {
    let mut by_app: HashMap<&str, HashMap<CounterKey, CounterAdd>> = HashMap::new();
    for record in records.iter().filter(|r| r.value > 0) {
        let summed = by_app.entry(record.application_id.as_str()).or_default();
        for add in adds_for(
            &record.application_id,
            &record.metric,
            record.value,
            record.at.unix_timestamp(),
            record.periods,
        ) {
            summed
                .entry(add.key.clone())
                .and_modify(|existing| existing.by = existing.by.saturating_add(add.by))
                .or_insert(add);
        }
    }
    by_app
        .into_iter()
        .map(|(app, adds)| (app.to_owned(), adds.into_values().collect()))
        .collect()
}

/// The increments of one application's `records`, one per record and period
/// (not summed: an atomic step's few records need no map).
fn adds_of(application_id: &str, records: &[UsageRecord]) -> Vec<CounterAdd> {
    records
        .iter()
        .filter(|r| r.value > 0 && r.application_id == application_id)
        .flat_map(|r| adds_for(&r.application_id, &r.metric, r.value, r.at.unix_timestamp(), r.periods))
        .collect()
}

fn adds_for(
    application_id: &str,
    metric: &str,
    value: u64,
    at: i64,
    periods: PeriodSet,
) -> impl Iterator<Item = CounterAdd> {
    periods.iter().map(move |period| CounterAdd {
        key: bucket_key(application_id, metric, period, at),
        by: value,
        ttl_secs: period.retention_secs(),
    })
}

impl Store {
    /// Adds usage without checking limits (tokens after a response, local
    /// mode's periodic sync). Records of the same bucket are summed first.
    pub async fn record_usage(&self, records: &[UsageRecord]) -> StoreResult<()> {
        let adds: Vec<CounterAdd> = summed_adds(records).into_values().flatten().collect();
        self.backend.add_counters(&adds).await
    }

    /// [`record_usage`](Self::record_usage) exactly once: `writer` numbers
    /// its batches in the order it sends them (`seq`, from 1) and resends
    /// a batch it is unsure of, unchanged, before any later one; each
    /// application's part of a batch is counted once however often it is
    /// sent, within 30 days. Returns how many applications' parts were
    /// counted now (the others were already).
    pub async fn record_usage_once(&self, writer: &str, seq: u64, records: &[UsageRecord]) -> StoreResult<usize> {
        let mut counted = 0;
        for (application_id, adds) in summed_adds(records) {
            if self
                .backend
                .add_counters_once(&application_id, writer, seq, &adds)
                .await?
            {
                counted += 1;
            }
        }
        Ok(counted)
    }

    /// Strict mode: atomically checks every limit against `deltas` and, only
    /// if all admit, counts the deltas in the buckets the limits check,
    /// holding `hold`'s tokens when given. The deltas' other buckets come
    /// back in [`LimitCheck::unrecorded`] for the caller's usage batches. A
    /// limit on a metric with no delta (tokens, known after the response)
    /// admits while not yet spent.
    pub async fn check_limits(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(&str, u64)],
        hold: Option<&TokenHold>,
        at: OffsetDateTime,
    ) -> StoreResult<LimitCheck> {
        let now = at;
        let at = at.unix_timestamp();
        let checks: Vec<CounterCheck> = limits
            .iter()
            .map(|limit| {
                let (hold, grant_rate) = hold.map_or((0, 0), |h| hold_on(&limit.metric, h.prompt, h.rates));
                CounterCheck {
                    key: bucket_key(application_id, &limit.metric, limit.period, at),
                    max: limit.value,
                    add: delta_of(deltas, &limit.metric),
                    hold,
                    grant_rate,
                }
            })
            .collect();
        let bounded = checks.iter().any(|c| c.grant_rate > 0);
        let reservation = hold.map(|h| Reservation {
            id: h.id.clone(),
            expires_at: at.saturating_add(i64::try_from(h.ttl_secs).unwrap_or(i64::MAX)),
            grant: Grant {
                max: h.completion_max,
                min: h.completion_min,
            },
        });
        let deltas: Vec<UsageRecord> = deltas
            .iter()
            .map(|(metric, value)| UsageRecord::new(application_id, metric, *value, now))
            .collect();
        let (limited, unrecorded) = split_by_limits(&deltas, limits);
        let adds = adds_of(application_id, &limited);
        let outcome = self
            .backend
            .check_and_add(&checks, &adds, self.clock.now().unix_timestamp(), reservation.as_ref())
            .await?;
        match outcome {
            CheckOutcome::Admitted { values, granted } => Ok(LimitCheck {
                admission: Admission::Admitted(
                    limits
                        .iter()
                        .zip(values)
                        .map(|(limit, used)| LimitStatus::at(limit, used, at))
                        .collect(),
                ),
                completion_grant: bounded.then_some(granted),
                unrecorded,
            }),
            CheckOutcome::Rejected { index, current } => {
                let limit = limits
                    .get(index)
                    .ok_or_else(|| StoreError::Corrupt("check-and-add rejected an unknown limit".into()))?;
                Ok(LimitCheck {
                    admission: Admission::Rejected(LimitStatus::at(limit, current, at)),
                    completion_grant: None,
                    unrecorded: Vec::new(),
                })
            }
        }
    }

    /// [`check_limits`](Self::check_limits) that also writes the usage it
    /// leaves (one more round trip): for callers without a usage batch.
    pub async fn check_and_record(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(&str, u64)],
        at: OffsetDateTime,
    ) -> StoreResult<Admission> {
        Ok(self
            .reserve_and_record_inner(application_id, limits, deltas, None, at)
            .await?
            .0)
    }

    /// [`check_and_record`](Self::check_and_record) that also holds tokens
    /// against the token limits: admitted only if the prompt and at least
    /// `hold.completion_min` completion tokens fit, and then with the
    /// completion tokens granted (`None` when no limit bounds them).
    pub async fn reserve_and_record(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(&str, u64)],
        hold: &TokenHold,
        at: OffsetDateTime,
    ) -> StoreResult<(Admission, Option<u64>)> {
        self.reserve_and_record_inner(application_id, limits, deltas, Some(hold), at)
            .await
    }

    async fn reserve_and_record_inner(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        deltas: &[(&str, u64)],
        hold: Option<&TokenHold>,
        at: OffsetDateTime,
    ) -> StoreResult<(Admission, Option<u64>)> {
        let check = self.check_limits(application_id, limits, deltas, hold, at).await?;
        self.record_usage(&check.unrecorded).await?;
        Ok((check.admission, check.completion_grant))
    }

    /// Ends a [`TokenHold`]: releases it and counts the usage the request
    /// turned out to have, atomically: no moment counts both or neither.
    /// Each record counts in its own `periods`; a caller with a usage batch
    /// sends only the part its limits check ([`split_by_limits`]).
    pub async fn settle(&self, application_id: &str, hold_id: &str, records: &[UsageRecord]) -> StoreResult<()> {
        let adds = adds_of(application_id, records);
        self.backend
            .settle(application_id, hold_id, &adds, self.clock.now().unix_timestamp(), false)
            .await
            .map(drop)
    }

    /// [`settle`](Self::settle) resent after an attempt whose outcome is
    /// unknown: applied only if the hold is still there, so it counts once.
    /// `Ok(false)` when it is not (settled by that attempt, or expired).
    pub async fn settle_if_held(
        &self,
        application_id: &str,
        hold_id: &str,
        records: &[UsageRecord],
    ) -> StoreResult<bool> {
        let adds = adds_of(application_id, records);
        self.backend
            .settle(application_id, hold_id, &adds, self.clock.now().unix_timestamp(), true)
            .await
    }

    /// Where an application stands against each limit at `at`.
    pub async fn limit_status(
        &self,
        application_id: &str,
        limits: &[UsageLimit],
        at: OffsetDateTime,
    ) -> StoreResult<Vec<LimitStatus>> {
        let at = at.unix_timestamp();
        let keys: Vec<CounterKey> = limits
            .iter()
            .map(|l| bucket_key(application_id, &l.metric, l.period, at))
            .collect();
        let values = self.backend.read_counters(&keys).await?;
        Ok(limits
            .iter()
            .zip(values)
            .map(|(limit, used)| LimitStatus::at(limit, used, at))
            .collect())
    }

    /// Usage of `metric` in the `period` bucket holding `at`.
    pub async fn usage(
        &self,
        application_id: &str,
        metric: &str,
        period: Period,
        at: OffsetDateTime,
    ) -> StoreResult<u64> {
        let key = bucket_key(application_id, metric, period, at.unix_timestamp());
        Ok(self.backend.read_counters(&[key]).await?.first().copied().unwrap_or(0))
    }

    /// One point per `granularity` bucket from the bucket holding `from` up
    /// to `to` (exclusive). Buckets past their retention read as 0.
    pub async fn usage_series(
        &self,
        application_id: &str,
        metric: &str,
        granularity: Period,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<UsagePoint>> {
        self.usage_series_total(&[application_id.to_owned()], metric, granularity, from, to)
            .await
    }

    /// [`usage_series`](Store::usage_series) summed over applications (a
    /// product's or an account's); every bucket, zero without applications.
    pub async fn usage_series_total(
        &self,
        application_ids: &[String],
        metric: &str,
        granularity: Period,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<UsagePoint>> {
        if granularity == Period::Eternity {
            return Err(StoreError::invalid(
                "granularity",
                "a series needs minute, hour, day, week, month or year",
            ));
        }
        let to = to.unix_timestamp();
        let mut starts = Vec::new();
        let mut start = granularity.bucket_start(from.unix_timestamp());
        while start < to {
            if starts.len() == MAX_SERIES_POINTS {
                return Err(StoreError::invalid(
                    "granularity",
                    format!(
                        "the range spans more than {MAX_SERIES_POINTS} {granularity} buckets; use a coarser granularity"
                    ),
                ));
            }
            starts.push(start);
            start = granularity.bucket_end(start);
        }
        let keys: Vec<CounterKey> = application_ids
            .iter()
            .flat_map(|id| starts.iter().map(move |s| counter(id, metric, granularity, *s)))
            .collect();
        let values = self.backend.read_counters(&keys).await?;
        let mut totals = vec![0u64; starts.len()];
        for (index, value) in values.into_iter().enumerate() {
            totals[index % starts.len()] = totals[index % starts.len()].saturating_add(value);
        }
        Ok(starts
            .into_iter()
            .zip(totals)
            .filter_map(|(start, value)| {
                OffsetDateTime::from_unix_timestamp(start)
                    .ok()
                    .map(|start| UsagePoint { start, value })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spool files written before records carried their periods still read,
    /// as records of every period; records of some periods keep them.
    #[test]
    fn records_keep_their_periods_through_json() {
        let at = time::macros::datetime!(2026-12-07 10:00:00 UTC);
        let old = r#"{"application_id":"a","metric":"hits","value":3,"at":"2026-12-07T10:00:00Z"}"#;
        let record: UsageRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record, UsageRecord::new("a", "hits", 3, at));
        assert!(record.periods.is_all());
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            old,
            "all periods are not written"
        );
        let some = UsageRecord {
            periods: PeriodSet::NONE.with(Period::Day),
            ..record
        };
        let back: UsageRecord = serde_json::from_str(&serde_json::to_string(&some).unwrap()).unwrap();
        assert_eq!(back, some);
    }

    #[test]
    fn a_split_counts_every_bucket_once() {
        let at = time::macros::datetime!(2026-12-07 10:00:00 UTC);
        let limits = [
            UsageLimit {
                metric: "total_tokens".into(),
                period: Period::Day,
                value: 10,
            },
            UsageLimit {
                metric: "total_tokens".into(),
                period: Period::Minute,
                value: 10,
            },
        ];
        let records = [
            UsageRecord::new("a", "total_tokens", 5, at),
            UsageRecord::new("a", "hits", 1, at),
            UsageRecord::new("a", "prompt_tokens", 0, at),
        ];
        let (limited, rest) = split_by_limits(&records, &limits);
        let periods = |records: &[UsageRecord], metric: &str| {
            records
                .iter()
                .filter(|r| r.metric == metric)
                .map(|r| r.periods)
                .fold(PeriodSet::NONE, PeriodSet::or)
        };
        assert_eq!(
            periods(&limited, "total_tokens"),
            enforced_periods(&limits, "total_tokens")
        );
        assert!(periods(&limited, "hits").is_empty() && periods(&rest, "hits").is_all());
        assert_eq!(
            periods(&rest, "total_tokens"),
            PeriodSet::ALL.without(enforced_periods(&limits, "total_tokens"))
        );
        assert!(
            limited.iter().chain(&rest).all(|r| r.value > 0),
            "zero records are dropped"
        );
        // Splitting what is left again changes nothing.
        let (again, same) = split_by_limits(&rest, &limits);
        assert!(again.is_empty());
        assert_eq!(same, rest);
    }
}
