//! Counters and token holds of the embedded store: the write transaction
//! counter updates share, and the arithmetic of holds.

use std::sync::atomic::Ordering;

use redb::{Durability, ReadableTable};

use super::{COUNTERS, EXPIRY, EmbeddedBackend, HELD, Inner, RESERVATIONS, counter_name, db_error};
use crate::backend::CounterAdd;
use crate::error::StoreResult;

impl Inner {
    pub(super) fn apply_adds(&self, txn: &redb::WriteTransaction, adds: &[CounterAdd]) -> StoreResult<()> {
        let now = self.now();
        let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(db_error)?;
        for add in adds.iter().filter(|a| a.by > 0) {
            let name = counter_name(&add.key);
            let current = counters.get(name.as_str()).map_err(db_error)?.map(|v| v.value());
            if current.is_none()
                && let Some(ttl) = add.ttl_secs
            {
                expiry
                    .insert((now.saturating_add(ttl), format!("c:{name}").as_str()), ())
                    .map_err(db_error)?;
            }
            counters
                .insert(name.as_str(), current.unwrap_or(0).saturating_add(add.by))
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// Adds `by` (may be negative) to what is held on counter `name`.
    pub(super) fn change_held(held: &mut redb::Table<&str, u64>, name: &str, by: i128) -> StoreResult<()> {
        let current = held.get(name).map_err(db_error)?.map(|v| v.value()).unwrap_or(0);
        let next = (i128::from(current) + by).clamp(0, i128::from(u64::MAX)) as u64;
        if next == 0 {
            held.remove(name).map_err(db_error)?;
        } else {
            held.insert(name, next).map_err(db_error)?;
        }
        Ok(())
    }

    /// Releases reservation `id` of `shard`, or every one of the shard due
    /// by `due_by` when `id` is `None`.
    pub(super) fn release(txn: &redb::WriteTransaction, shard: &str, id: Option<&str>, due_by: i64) -> StoreResult<()> {
        let mut reservations = txn.open_table(RESERVATIONS).map_err(db_error)?;
        let mut held = txn.open_table(HELD).map_err(db_error)?;
        let released: Vec<(String, Vec<u8>)> = match id {
            Some(id) => reservations
                .get((shard, id))
                .map_err(db_error)?
                .map(|v| vec![(id.to_owned(), v.value().1.to_vec())])
                .unwrap_or_default(),
            None => reservations
                .range((shard, "")..(format!("{shard}\0").as_str(), ""))
                .map_err(db_error)?
                .filter_map(Result::ok)
                .filter(|(_, v)| v.value().0 <= due_by)
                .map(|(k, v)| (k.value().1.to_owned(), v.value().1.to_vec()))
                .collect(),
        };
        for (id, holds) in released {
            reservations.remove((shard, id.as_str())).map_err(db_error)?;
            let holds: Vec<(String, u64)> = serde_json::from_slice(&holds).unwrap_or_default();
            for (name, amount) in holds {
                Self::change_held(&mut held, &name, -i128::from(amount))?;
            }
        }
        Ok(())
    }

    pub(super) fn is_held(txn: &redb::WriteTransaction, shard: &str, id: &str) -> StoreResult<bool> {
        let reservations = txn.open_table(RESERVATIONS).map_err(db_error)?;
        Ok(reservations.get((shard, id)).map_err(db_error)?.is_some())
    }

    pub(super) fn begin_counter_write(&self) -> StoreResult<redb::WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::None).map_err(db_error)?;
        Ok(txn)
    }

    pub(super) fn commit_counters(&self, txn: redb::WriteTransaction) -> StoreResult<()> {
        txn.commit().map_err(db_error)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }
}

impl EmbeddedBackend {
    /// Releases a reservation and applies `adds`; with `only_held`, only if
    /// it is still held. Whether it was applied.
    pub(super) async fn settle_hold(
        &self,
        shard: &str,
        reservation_id: &str,
        adds: &[CounterAdd],
        now: i64,
        only_held: bool,
    ) -> StoreResult<bool> {
        let (shard, id, adds) = (shard.to_owned(), reservation_id.to_owned(), adds.to_vec());
        self.write(move |inner| {
            let txn = inner.begin_counter_write()?;
            if only_held && !Inner::is_held(&txn, &shard, &id)? {
                return Ok(false);
            }
            Inner::release(&txn, &shard, Some(&id), now)?;
            Inner::release(&txn, &shard, None, now)?;
            inner.apply_adds(&txn, &adds)?;
            inner.commit_counters(txn)?;
            Ok(true)
        })
        .await
    }
}
