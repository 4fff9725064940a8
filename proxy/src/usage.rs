//! Usage on its way to the store: request handlers push records without
//! awaiting anything; a background task writes them in batches. A failed
//! write keeps its batch for the next attempt, so an outage of the store
//! delays usage but does not lose it, and each batch is counted exactly
//! once: batches carry this process's writer id and a sequence number, and
//! a batch that may or may not have reached the store (its connection
//! dropped mid-write) is resent unchanged, which the store recognises
//! ([`Store::record_usage_once`]).

use std::collections::HashMap;
use std::sync::Mutex;

use maas_store::{Store, StoreResult, UsageRecord};
use time::OffsetDateTime;

/// Records summed per application, metric and second, so a long store
/// outage costs memory per active application, not per request.
type PendingKey = (String, String, i64);

/// A batch sent at least once, not yet known to be counted.
struct Unsent {
    seq: u64,
    records: Vec<UsageRecord>,
}

pub struct UsageSink {
    store: Store,
    /// This process's name as a usage writer (random per start).
    writer: String,
    pending: Mutex<HashMap<PendingKey, u64>>,
    /// One flush at a time, holding the batch being sent and the number
    /// of the last batch made: keeps batches in order and lets `flush` be
    /// called from the sync loop and at shutdown alike.
    flushing: tokio::sync::Mutex<(Option<Unsent>, u64)>,
}

impl UsageSink {
    pub fn new(store: Store) -> UsageSink {
        UsageSink {
            store,
            writer: maas_store::ids::hex(&maas_store::ids::random_bytes::<8>()),
            pending: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new((None, 0)),
        }
    }

    /// Queues `value` of `metric` for an application; never blocks on I/O.
    pub fn push(&self, application_id: &str, metric: &str, value: u64, at: OffsetDateTime) {
        if value == 0 {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending
            .entry((application_id.to_owned(), metric.to_owned(), at.unix_timestamp()))
            .or_insert(0);
        *entry = entry.saturating_add(value);
    }

    pub fn pending_records(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes the batch a failed flush left, else everything queued so
    /// far; how many records were written. On failure the batch is kept,
    /// unchanged, for the next call.
    pub async fn flush(&self) -> StoreResult<usize> {
        let mut flushing = self.flushing.lock().await;
        let (unsent, last_seq) = &mut *flushing;
        if unsent.is_none() {
            let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            if batch.is_empty() {
                return Ok(0);
            }
            *last_seq += 1;
            let records = batch
                .into_iter()
                .filter_map(|((application_id, metric, at), value)| {
                    Some(UsageRecord {
                        application_id,
                        metric,
                        value,
                        at: OffsetDateTime::from_unix_timestamp(at).ok()?,
                    })
                })
                .collect();
            *unsent = Some(Unsent {
                seq: *last_seq,
                records,
            });
        }
        let Some(batch) = unsent.as_ref() else { return Ok(0) };
        self.store
            .record_usage_once(&self.writer, batch.seq, &batch.records)
            .await?;
        let written = batch.records.len();
        *unsent = None;
        Ok(written)
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
            .record_usage_once(
                &sink.writer,
                1,
                &[UsageRecord {
                    application_id: "app1".into(),
                    metric: "total_tokens".into(),
                    value: 5,
                    at,
                }],
            )
            .await
            .unwrap();
        flaky.set(crate::flaky_store::UP);
        assert_eq!(sink.flush().await.unwrap(), 1, "the first batch again");
        assert_eq!(sink.flush().await.unwrap(), 1, "then the second");
        assert_eq!(
            truth.usage("app1", "total_tokens", Period::Eternity, at).await.unwrap(),
            12
        );
    }
}
