//! When each API key was last used, to the minute.
//!
//! Proxies note uses in memory and write them with their usage batches, at
//! most once per key and minute each, so a busy key costs the store one
//! small write a minute per proxy, never one per request. Writes only move
//! a key's time forward (two proxies flushing out of order cannot set it
//! back), and a key deleted meanwhile gets no record.

use time::OffsetDateTime;

use super::Store;
use crate::backend::{Condition, WriteBatch};
use crate::error::StoreResult;

/// What a use is rounded down to: coarse enough to write rarely, fine
/// enough to tell a key in use from one forgotten.
pub const KEY_USE_RESOLUTION_SECS: i64 = 60;

pub(super) fn key_use_record(key_id: &str) -> String {
    format!("key-used:{key_id}")
}

/// Unix seconds `at` rounded down to [`KEY_USE_RESOLUTION_SECS`].
pub fn key_use_slot(at: i64) -> i64 {
    at.div_euclid(KEY_USE_RESOLUTION_SECS) * KEY_USE_RESOLUTION_SECS
}

fn decode_slot(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_be_bytes)
}

/// Tries before giving up on a batch whose records other proxies keep
/// moving: each retry rereads them, and a use already covered drops out.
const ATTEMPTS: usize = 3;

impl Store {
    /// Records that each key of `uses` was used at its time (unix seconds,
    /// rounded down to the minute). Keeps the later time when the store
    /// already has one; skips keys that no longer exist.
    pub async fn record_key_uses(&self, uses: &[(String, i64)]) -> StoreResult<()> {
        let mut uses: Vec<(String, i64)> = uses.iter().map(|(id, at)| (id.clone(), key_use_slot(*at))).collect();
        for _ in 0..ATTEMPTS {
            let mut reads = Vec::with_capacity(uses.len() * 2);
            for (id, _) in &uses {
                reads.push(key_use_record(id));
                reads.push(format!("key-id:{id}"));
            }
            let values = self.backend.get_many(&reads).await?;
            let mut batch = WriteBatch::default();
            let mut newer = Vec::new();
            for ((id, at), pair) in uses.iter().zip(values.chunks(2)) {
                let [stored, key] = pair else { continue };
                let stored_at = stored.as_deref().and_then(decode_slot);
                if key.is_none() || stored_at.is_some_and(|s| s >= *at) {
                    continue;
                }
                let record = key_use_record(id);
                batch
                    .require(Condition::Exists(format!("key-id:{id}")))
                    .require(match stored {
                        Some(bytes) => Condition::Equals(record.clone(), bytes.clone()),
                        None => Condition::Absent(record.clone()),
                    })
                    .put(record, at.to_be_bytes().to_vec());
                newer.push((id.clone(), *at));
            }
            if newer.is_empty() || self.backend.commit(batch).await?.is_ok() {
                return Ok(());
            }
            uses = newer;
        }
        tracing::debug!(
            keys = uses.len(),
            "key uses kept changing under this write; left to the next"
        );
        Ok(())
    }

    /// When each key of `ids` was last used, to the minute; `None` for a
    /// key never used (or not since this was recorded).
    pub async fn keys_last_used(&self, ids: &[String]) -> StoreResult<Vec<Option<OffsetDateTime>>> {
        let records: Vec<String> = ids.iter().map(|id| key_use_record(id)).collect();
        Ok(self
            .backend
            .get_many(&records)
            .await?
            .into_iter()
            .map(|value| {
                value
                    .as_deref()
                    .and_then(decode_slot)
                    .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
            })
            .collect())
    }
}
