//! Usage on its way to the store: request handlers push records without
//! awaiting anything; a background task writes them in batches. A failed
//! write keeps the records for the next attempt, so an outage of the store
//! delays usage but does not lose it.

use std::collections::HashMap;
use std::sync::Mutex;

use maas_store::{Store, StoreResult, UsageRecord};
use time::OffsetDateTime;

/// Records summed per application, metric and second, so a long store
/// outage costs memory per active application, not per request.
type PendingKey = (String, String, i64);

pub struct UsageSink {
    store: Store,
    pending: Mutex<HashMap<PendingKey, u64>>,
    /// One flush at a time: keeps batches in order and lets `flush` be
    /// called from the sync loop and at shutdown alike.
    flushing: tokio::sync::Mutex<()>,
}

impl UsageSink {
    pub fn new(store: Store) -> UsageSink {
        UsageSink {
            store,
            pending: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
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

    /// Writes everything queued so far. On failure the records go back in
    /// the queue and the error is returned.
    pub async fn flush(&self) -> StoreResult<usize> {
        let _one_at_a_time = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        let records: Vec<UsageRecord> = batch
            .iter()
            .filter_map(|((application_id, metric, at), value)| {
                Some(UsageRecord {
                    application_id: application_id.clone(),
                    metric: metric.clone(),
                    value: *value,
                    at: OffsetDateTime::from_unix_timestamp(*at).ok()?,
                })
            })
            .collect();
        match self.store.record_usage(&records).await {
            Ok(()) => Ok(records.len()),
            Err(error) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (key, value) in batch {
                    let entry = pending.entry(key).or_insert(0);
                    *entry = entry.saturating_add(value);
                }
                Err(error)
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
        assert_eq!(sink.pending_records(), 0);
        assert_eq!(
            store.usage("app1", "total_tokens", Period::Eternity, at).await.unwrap(),
            12
        );
    }
}
