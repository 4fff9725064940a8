//! A store that answers, refuses or hangs on command, for the tests of
//! what the proxy does when its store fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use maas_store::backend::{
    CheckOutcome, ConditionFailed, CounterAdd, CounterCheck, CounterKey, Link, Reservation, StoreBackend, WriteBatch,
};
use maas_store::{Change, Store, StoreError, StoreOptions, StoreResult};
use tokio::sync::{Notify, broadcast};

pub(crate) const UP: u8 = 0;
pub(crate) const DOWN: u8 = 1;
pub(crate) const HUNG: u8 = 2;

/// A store that answers, refuses, or hangs until it answers again.
pub(crate) struct FlakyBackend {
    inner: Arc<dyn StoreBackend>,
    state: AtomicU8,
    woken: Notify,
}

impl FlakyBackend {
    pub(crate) fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
        self.woken.notify_waiters();
    }

    async fn gate(&self) -> StoreResult<()> {
        loop {
            let woken = self.woken.notified();
            match self.state.load(Ordering::SeqCst) {
                UP => return Ok(()),
                DOWN => return Err(StoreError::Unavailable("connection refused".into())),
                _ => woken.await,
            }
        }
    }
}

#[async_trait]
impl StoreBackend for FlakyBackend {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.gate().await?;
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.gate().await?;
        self.inner.get_many(keys).await
    }
    async fn get_linked(&self, key: &str, links: &[Link]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.gate().await?;
        self.inner.get_linked(key, links).await
    }
    async fn members(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> StoreResult<Vec<String>> {
        self.gate().await?;
        self.inner.members(collection, after, limit, descending).await
    }
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Result<(), ConditionFailed>> {
        self.gate().await?;
        self.inner.commit(batch).await
    }
    async fn add_counters(&self, adds: &[CounterAdd]) -> StoreResult<()> {
        self.gate().await?;
        self.inner.add_counters(adds).await
    }
    async fn add_counters_once(&self, shard: &str, writer: &str, seq: u64, adds: &[CounterAdd]) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.add_counters_once(shard, writer, seq, adds).await
    }
    async fn check_and_add(
        &self,
        checks: &[CounterCheck],
        adds: &[CounterAdd],
        now: i64,
        reservation: Option<&Reservation>,
    ) -> StoreResult<CheckOutcome> {
        self.gate().await?;
        self.inner.check_and_add(checks, adds, now, reservation).await
    }
    async fn settle(
        &self,
        shard: &str,
        reservation_id: &str,
        adds: &[CounterAdd],
        now: i64,
        only_if_held: bool,
    ) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.settle(shard, reservation_id, adds, now, only_if_held).await
    }
    async fn read_counters(&self, keys: &[CounterKey]) -> StoreResult<Vec<u64>> {
        self.gate().await?;
        self.inner.read_counters(keys).await
    }
    async fn put_ephemeral(&self, key: &str, value: Vec<u8>, ttl_secs: u64) -> StoreResult<()> {
        self.gate().await?;
        self.inner.put_ephemeral(key, value, ttl_secs).await
    }
    async fn get_ephemeral(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.gate().await?;
        self.inner.get_ephemeral(key).await
    }
    async fn delete_ephemeral(&self, key: &str) -> StoreResult<()> {
        self.gate().await?;
        self.inner.delete_ephemeral(key).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.subscribe()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.gate().await
    }
    async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }
}

impl FlakyBackend {
    /// An embedded store behind a flaky one: the store to test with, the
    /// same data always answering, and the directory that holds it.
    pub(crate) fn stores() -> (Arc<FlakyBackend>, Store, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let embedded: Arc<dyn StoreBackend> = Arc::new(
            maas_store::backend::embedded::EmbeddedBackend::open(dir.path(), Arc::new(maas_store::SystemClock))
                .unwrap(),
        );
        let flaky = Arc::new(FlakyBackend {
            inner: embedded.clone(),
            state: AtomicU8::new(UP),
            woken: Notify::new(),
        });
        let store = Store::with_backend(flaky.clone(), StoreOptions::default());
        let truth = Store::with_backend(embedded, StoreOptions::default());
        (flaky, store, truth, dir)
    }
}
