//! Usage on its way to the store: request handlers push records without
//! awaiting anything; a background task writes them in batches. A failed
//! write keeps its batch for the next attempt, so an outage of the store
//! delays usage but does not lose it, and each batch is counted exactly
//! once: batches carry this process's writer id and a sequence number, and
//! a batch that may or may not have reached the store (its connection
//! dropped mid-write) is resent unchanged, which the store recognises
//! ([`Store::record_usage_once`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use maas_store::model::AuthContext;
use maas_store::period::PeriodSet;
use maas_store::{BREAKDOWN_METRICS, Breakdown, Store, StoreResult, UsageRecord};
use rustc_hash::FxHashMap;
use time::OffsetDateTime;

use crate::record::spool::{Leftovers, Spool, SpoolError, SpoolSettings, SpooledBatch};
use crate::response::metering::TokenUsage;

/// Records summed per application, metric, second and the period buckets
/// they still need, so a long store outage costs memory per active
/// application, not per request. Nested by name so that adding to a known
/// series allocates nothing; every request adds a few.
#[derive(Default)]
struct Pending {
    applications: FxHashMap<String, FxHashMap<String, Buckets>>,
}

/// One series' sums by second and the period buckets still needed.
type Buckets = FxHashMap<(i64, PeriodSet), u64>;

impl Pending {
    fn add(&mut self, application_id: &str, metric: &str, at: i64, periods: PeriodSet, value: u64) {
        if !self.applications.contains_key(application_id) {
            self.applications
                .insert(application_id.to_owned(), FxHashMap::default());
        }
        let metrics = self.applications.get_mut(application_id).expect("inserted above");
        if !metrics.contains_key(metric) {
            metrics.insert(metric.to_owned(), FxHashMap::default());
        }
        let buckets = metrics.get_mut(metric).expect("inserted above");
        let sum = buckets.entry((at, periods)).or_insert(0);
        *sum = sum.saturating_add(value);
    }

    /// Series queued.
    fn len(&self) -> usize {
        self.applications
            .values()
            .flat_map(|m| m.values())
            .map(|b| b.len())
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.applications.is_empty()
    }

    fn into_records(self) -> Vec<UsageRecord> {
        let mut records = Vec::with_capacity(self.len());
        for (application_id, metrics) in self.applications {
            for (metric, buckets) in metrics {
                for ((at, periods), value) in buckets {
                    let Ok(at) = OffsetDateTime::from_unix_timestamp(at) else {
                        continue;
                    };
                    records.push(UsageRecord {
                        application_id: application_id.clone(),
                        metric: metric.clone(),
                        value,
                        at,
                        periods,
                    });
                }
            }
        }
        records
    }
}

/// A batch made, not yet known to be counted.
struct Unsent {
    batch: SpooledBatch,
    /// On disk (this process's spool, or a file taken over).
    spooled: bool,
}

/// Batches in the order they must reach the store, and the spool.
struct Outbox {
    queue: VecDeque<Unsent>,
    last_seq: u64,
    spool: Option<Spool>,
    leftovers: Leftovers,
    /// The spool refused a batch (full or failing) since it was last
    /// emptied: said once, loudly.
    spool_failing: bool,
}

pub struct UsageSink {
    store: Store,
    /// This process's name as a usage writer (random per start).
    writer: String,
    pending: Mutex<Pending>,
    /// Settles to resend, each applied only if its hold is still there.
    settles: Mutex<Vec<SpooledBatch>>,
    /// One flush at a time: keeps batches in order and lets `flush` be
    /// called from the sync loop and at shutdown alike.
    outbox: tokio::sync::Mutex<Outbox>,
}

impl UsageSink {
    /// A sink whose unsent batches live in memory only.
    pub fn new(store: Store) -> UsageSink {
        UsageSink::with_outbox(store, random_writer(), None, Leftovers::default())
    }

    /// A sink that appends the batches the store does not take to a spool
    /// in `settings.dir`, and first resends what earlier processes left
    /// there.
    pub fn with_spool(store: Store, settings: SpoolSettings) -> Result<UsageSink, SpoolError> {
        let writer = random_writer();
        let (spool, leftovers) = Spool::open(settings, &writer)?;
        if !leftovers.batches.is_empty() {
            tracing::warn!(
                batches = leftovers.batches.len(),
                files = leftovers.files.len(),
                "usage spooled by earlier processes: resending it"
            );
        }
        Ok(UsageSink::with_outbox(store, writer, Some(spool), leftovers))
    }

    fn with_outbox(store: Store, writer: String, spool: Option<Spool>, mut leftovers: Leftovers) -> UsageSink {
        let queue = std::mem::take(&mut leftovers.batches)
            .into_iter()
            .map(|batch| Unsent { batch, spooled: true })
            .collect();
        UsageSink {
            store,
            writer,
            pending: Mutex::new(Pending::default()),
            settles: Mutex::new(Vec::new()),
            outbox: tokio::sync::Mutex::new(Outbox {
                queue,
                last_seq: 0,
                spool,
                leftovers,
                spool_failing: false,
            }),
        }
    }

    /// Queues `value` of `metric` for an application, in every period's
    /// bucket; never blocks on I/O.
    pub fn push(&self, application_id: &str, metric: &str, value: u64, at: OffsetDateTime) {
        self.push_in(application_id, metric, value, at, PeriodSet::ALL);
    }

    fn push_in(&self, application_id: &str, metric: &str, value: u64, at: OffsetDateTime, periods: PeriodSet) {
        if value == 0 || periods.is_empty() {
            return;
        }
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).add(
            application_id,
            metric,
            at.unix_timestamp(),
            periods,
            value,
        );
    }

    /// Queues records, each in its own period buckets (what a limit
    /// script left to write).
    pub fn push_records(&self, records: &[UsageRecord]) {
        for record in records {
            self.push_in(
                &record.application_id,
                &record.metric,
                record.value,
                record.at,
                record.periods,
            );
        }
    }

    /// Queues a settle whose outcome is unknown: resent (and spooled) with
    /// the next batch, applied only if the hold `hold` is still held.
    pub fn push_settle(&self, hold: &str, records: Vec<UsageRecord>) {
        if records.is_empty() {
            return;
        }
        self.settles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SpooledBatch {
                writer: self.writer.clone(),
                seq: 0,
                records,
                hold: Some(hold.to_owned()),
            });
    }

    /// Queues every `(metric, value)` of `deltas` for an application.
    pub fn push_deltas<M: AsRef<str>>(&self, application_id: &str, deltas: &[(M, u64)], at: OffsetDateTime) {
        for (metric, value) in deltas {
            self.push(application_id, metric.as_ref(), *value, at);
        }
    }

    /// Queues an admitted request's hit and billed tokens under its key
    /// (or, with an access token, its person) and, when it named one of
    /// its product's models, that model ([`Breakdown`]): what statistics
    /// show by key, person and model. One lock and one name buffer for
    /// every series.
    pub fn push_breakdown(&self, auth: &AuthContext, model: &str, usage: TokenUsage, cost: u64, at: OffsetDateTime) {
        let app = auth.application.id.as_str();
        let values = [1, usage.prompt_tokens, usage.completion_tokens, cost];
        let (at, periods) = (at.unix_timestamp(), Breakdown::periods());
        let by = [
            auth.key().map(|key| Breakdown::Key(&key.id)),
            auth.credential
                .token()
                .and_then(|caller| caller.user.as_deref())
                .map(Breakdown::User),
            (!model.is_empty()).then_some(Breakdown::Model(model)),
        ];
        let mut name = String::with_capacity(96);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for breakdown in by.into_iter().flatten() {
            for (metric, value) in BREAKDOWN_METRICS.iter().zip(values).filter(|(_, v)| *v > 0) {
                breakdown.write_metric(&mut name, metric);
                pending.add(app, &name, at, periods, value);
            }
        }
    }

    pub fn pending_records(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes every batch not yet written, oldest first, then what was
    /// queued since; how many records were written. On failure the batches
    /// are kept, unchanged and spooled, for the next call.
    pub async fn flush(&self) -> StoreResult<usize> {
        let mut outbox = self.outbox.lock().await;
        self.make_batch(&mut outbox);
        let mut written = 0;
        while let Some(unsent) = outbox.queue.front() {
            let batch = &unsent.batch;
            let sent = match (&batch.hold, batch.records.first()) {
                (Some(hold), Some(first)) => self
                    .store
                    .settle_if_held(&first.application_id, hold, &batch.records)
                    .await
                    .map(drop),
                _ => self
                    .store
                    .record_usage_once(&batch.writer, batch.seq, &batch.records)
                    .await
                    .map(drop),
            };
            if let Err(error) = sent {
                spool_unsent(&mut outbox);
                return Err(error);
            }
            written += batch.records.len();
            outbox.queue.pop_front();
        }
        if let Some(spool) = outbox.spool.as_mut()
            && let Err(error) = spool.clear()
        {
            tracing::error!(%error, "emptying the usage spool");
        }
        outbox.spool_failing = false;
        outbox.leftovers.remove_files();
        Ok(written)
    }

    /// While the store does not answer: what was queued becomes a batch on
    /// disk, so a proxy killed now loses at most one sync interval of usage.
    pub async fn spool_pending(&self) {
        let mut outbox = self.outbox.lock().await;
        self.make_batch(&mut outbox);
        spool_unsent(&mut outbox);
    }

    /// Batches not yet written (for tests and metrics).
    pub async fn unsent_batches(&self) -> usize {
        self.outbox.lock().await.queue.len()
    }

    /// What was queued becomes the next batch.
    fn make_batch(&self, outbox: &mut Outbox) {
        let settles = std::mem::take(&mut *self.settles.lock().unwrap_or_else(|e| e.into_inner()));
        outbox
            .queue
            .extend(settles.into_iter().map(|batch| Unsent { batch, spooled: false }));
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        outbox.last_seq += 1;
        let records = pending.into_records();
        outbox.queue.push_back(Unsent {
            batch: SpooledBatch {
                writer: self.writer.clone(),
                seq: outbox.last_seq,
                records,
                hold: None,
            },
            spooled: false,
        });
    }
}

fn random_writer() -> String {
    maas_store::ids::hex(&maas_store::ids::random_bytes::<8>())
}

/// Appends the batches not yet on disk to the spool, in order; one that
/// does not fit stays in memory, said once.
fn spool_unsent(outbox: &mut Outbox) {
    let Outbox {
        queue,
        spool,
        spool_failing,
        ..
    } = outbox;
    let Some(spool) = spool.as_mut() else { return };
    for unsent in queue.iter_mut().filter(|u| !u.spooled) {
        match spool.append(&unsent.batch) {
            Ok(()) => unsent.spooled = true,
            Err(error) => {
                if !*spool_failing {
                    tracing::error!(
                        %error,
                        "USAGE SPOOL: batches stay in memory only; a proxy that stops before the store \
                         answers loses them (store.spool_max_mb)"
                    );
                    *spool_failing = true;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_store::period::Period;

    #[tokio::test]
    async fn batches_reach_the_store_summed() {
        let (store, _dir) = crate::test_store().await;
        let sink = UsageSink::new(store.clone());
        let at = OffsetDateTime::now_utc();
        sink.push("app1", "total_tokens", 5, at);
        sink.push("app1", "total_tokens", 7, at);
        sink.push("app1", "hits", 0, at);
        assert_eq!(sink.pending_records(), 1);
        assert_eq!(sink.flush().await.unwrap(), 1);
        assert_eq!(sink.flush().await.unwrap(), 0, "nothing left");
        assert_eq!(sink.pending_records(), 0);
        assert_eq!(
            store.usage("app1", "total_tokens", Period::Eternity, at).await.unwrap(),
            12
        );
    }

    /// A token caller's traffic is broken down by its person and model,
    /// never under a key.
    #[tokio::test]
    async fn token_callers_are_broken_down_by_person() {
        use maas_store::Breakdown;
        use maas_store::model::{AuthContext, Credential, TokenCaller};

        let (store, _dir) = crate::test_store().await;
        let app_id = crate::test_application(&store).await;
        let application = store.get_application(&app_id).await.unwrap().unwrap();
        let auth = AuthContext {
            credential: Credential::Token(TokenCaller {
                issuer: "https://idp.example.com".into(),
                client_id: "notebook".into(),
                user: Some("ada".into()),
            }),
            account: store.get_account(&application.account_id).await.unwrap().unwrap(),
            plan: store.get_plan("granite", "standard").await.unwrap().unwrap(),
            application,
        };
        let sink = UsageSink::new(store.clone());
        let at = OffsetDateTime::now_utc();
        let usage = TokenUsage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
        };
        sink.push_breakdown(&auth, "granite", usage, 0, at);
        sink.flush().await.unwrap();
        let of = |b: Breakdown<'_>, metric: &str| {
            let (store, app, name) = (store.clone(), app_id.clone(), b.metric(metric));
            async move { store.usage(&app, &name, Period::Day, at).await.unwrap() }
        };
        assert_eq!(of(Breakdown::User("ada"), "hits").await, 1);
        assert_eq!(of(Breakdown::User("ada"), "completion_tokens").await, 4);
        assert_eq!(of(Breakdown::Model("granite"), "prompt_tokens").await, 3);
        assert_eq!(of(Breakdown::Key("notebook"), "hits").await, 0);
    }

    /// A proxy killed during an outage: the next process resends what it
    /// spooled, once, whether or not some of it had reached the store.
    #[tokio::test]
    async fn spooled_batches_outlive_the_process() {
        let (flaky, store, truth, dir) = crate::flaky_store::FlakyBackend::stores();
        let settings = SpoolSettings {
            dir: dir.path().join("spool"),
            max_bytes: 1 << 20,
            fsync: true,
        };
        let at = OffsetDateTime::now_utc();
        let first = UsageSink::with_spool(store.clone(), settings.clone()).unwrap();
        flaky.set(crate::flaky_store::DOWN);
        first.push("app1", "total_tokens", 5, at);
        assert!(first.flush().await.is_err());
        first.push("app1", "total_tokens", 7, at);
        first.spool_pending().await;
        // Batch 1 had reached the store after all; then the process dies.
        truth
            .record_usage_once(&first.writer, 1, &[UsageRecord::new("app1", "total_tokens", 5, at)])
            .await
            .unwrap();
        drop(first);
        flaky.set(crate::flaky_store::UP);
        let second = UsageSink::with_spool(store, settings.clone()).unwrap();
        assert_eq!(second.unsent_batches().await, 2);
        second.flush().await.unwrap();
        assert_eq!(
            truth.usage("app1", "total_tokens", Period::Eternity, at).await.unwrap(),
            12
        );
        let files: Vec<_> = std::fs::read_dir(&settings.dir).unwrap().flatten().collect();
        assert_eq!(
            files.len(),
            1,
            "the dead process's spool is gone, the live one's is empty"
        );
        assert_eq!(files[0].metadata().unwrap().len(), 0);
    }

    /// A batch that failed is resent as it was, ahead of what came after,
    /// and counted once even if the failed attempt had reached the store.
    #[tokio::test]
    async fn a_failed_batch_is_resent_unchanged_and_counted_once() {
        let (flaky, store, truth, _dir) = crate::flaky_store::FlakyBackend::stores();
        let sink = UsageSink::new(store);
        let at = OffsetDateTime::now_utc();
        sink.push("app1", "total_tokens", 5, at);
        flaky.set(crate::flaky_store::DOWN);
        assert!(sink.flush().await.is_err());
        sink.push("app1", "total_tokens", 7, at);
        // The first batch reached the store after all (its answer was lost).
        truth
            .record_usage_once(&sink.writer, 1, &[UsageRecord::new("app1", "total_tokens", 5, at)])
            .await
            .unwrap();
        flaky.set(crate::flaky_store::UP);
        assert_eq!(sink.unsent_batches().await, 1);
        assert_eq!(sink.flush().await.unwrap(), 2, "the first batch again, then the second");
        assert_eq!(sink.unsent_batches().await, 0);
        assert_eq!(
            truth.usage("app1", "total_tokens", Period::Eternity, at).await.unwrap(),
            12
        );
    }
}
