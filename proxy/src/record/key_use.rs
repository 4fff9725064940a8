//! Which keys this proxy saw used, to the minute, on their way to the
//! store ([`Store::record_key_uses`]): noted per request in memory, written
//! with the usage batches, at most once per key and minute.

use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use maas_store::{Store, StoreResult, key_use_slot};
use rustc_hash::FxHashMap;

/// A key's latest minute seen here, and the latest one written.
struct Slots {
    seen: AtomicI64,
    written: AtomicI64,
}

/// Keys by id. Requests only read the map (a shared lock) and raise their
/// key's minute with an atomic, so a busy proxy's requests never wait on
/// each other here; the map is locked exclusively only for a key new to
/// it and for the writer's sweep.
#[derive(Default)]
pub struct KeyUses {
    keys: RwLock<FxHashMap<String, Slots>>,
}

impl KeyUses {
    /// Notes that key `id` was used at unix second `at`; never blocks on I/O
    /// and allocates only for a key not seen since it was last forgotten.
    pub fn note(&self, id: &str, at: i64) {
        let slot = key_use_slot(at);
        {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slots) = keys.get(id) {
                // Most requests find their minute noted: a load, no write.
                if slots.seen.load(Ordering::Relaxed) < slot {
                    slots.seen.fetch_max(slot, Ordering::Relaxed);
                }
                return;
            }
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.entry(id.to_owned())
            .or_insert_with(|| Slots {
                seen: AtomicI64::new(i64::MIN),
                written: AtomicI64::new(i64::MIN),
            })
            .seen
            .fetch_max(slot, Ordering::Relaxed);
    }

    /// Writes the minutes not yet written; how many keys it wrote. On
    /// failure they stay for the next call. Keys written and not seen in
    /// the current minute are forgotten, so memory follows the keys in use.
    pub async fn flush(&self, store: &Store, now: i64) -> StoreResult<usize> {
        let due: Vec<(String, i64)> = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .map(|(id, s)| (id, s.seen.load(Ordering::Relaxed), s.written.load(Ordering::Relaxed)))
                .filter(|(_, seen, written)| seen > written)
                .map(|(id, seen, _)| (id.clone(), seen))
                .collect()
        };
        if !due.is_empty() {
            store.record_key_uses(&due).await?;
        }
        let current = key_use_slot(now);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        for (id, at) in &due {
            if let Some(slots) = keys.get(id) {
                slots.written.fetch_max(*at, Ordering::Relaxed);
            }
        }
        keys.retain(|_, s| {
            let seen = s.seen.load(Ordering::Relaxed);
            seen > s.written.load(Ordering::Relaxed) || seen >= current
        });
        Ok(due.len())
    }

    /// Keys remembered (for tests).
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_store::NewKey;

    /// A key of a new application.
    async fn key(store: &Store) -> String {
        let app = crate::test_application(store).await;
        store.create_key(&app, NewKey::default()).await.unwrap().key.id
    }

    #[tokio::test]
    async fn a_key_is_written_once_a_minute_and_forgotten_when_idle() {
        let (store, _dir) = crate::test_store().await;
        let key = key(&store).await;
        let uses = KeyUses::default();
        let t = 1_800_000_000; // a whole minute
        for second in 0..50 {
            uses.note(&key, t + second);
        }
        assert_eq!(uses.flush(&store, t + 50).await.unwrap(), 1, "fifty uses, one write");
        uses.note(&key, t + 55);
        assert_eq!(
            uses.flush(&store, t + 56).await.unwrap(),
            0,
            "same minute: nothing to write"
        );
        assert_eq!(uses.len(), 1, "kept while its minute lasts");
        uses.note(&key, t + 61);
        assert_eq!(uses.flush(&store, t + 62).await.unwrap(), 1, "a new minute is written");
        assert_eq!(uses.flush(&store, t + 130).await.unwrap(), 0);
        assert!(uses.is_empty(), "idle keys are forgotten");
        let last = store.keys_last_used(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(last[0].map(|at| at.unix_timestamp()), Some(t + 60));
    }
}
