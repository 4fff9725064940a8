//! The embedded backend: one durable file (redb), no server, one process.
//!
//! Tables: `records` (key → JSON), `members` ((collection, member) → ()),
//! `counters` (key → u64), `held` (counter key → amount held by requests
//! in flight), `reservations` ((shard, id) → (expiry, holds)), `ephemeral`
//! (key → (expiry, value)) and `expiry` ((unix second, key) → ()) which the
//! sweeper walks to drop counters and ephemeral records past their time to
//! live. Due reservations are released whenever their shard is checked.
//!
//! Records commit with full durability. Counter increments commit without
//! an fsync and are made durable by the next durable commit or by the
//! flusher within [`FLUSH_INTERVAL`]; a power cut can lose at most that
//! much usage, a clean shutdown ([`StoreBackend::flush`]) loses none.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{
    CheckOutcome, Condition, ConditionFailed, CounterAdd, CounterCheck, CounterKey, Link, Op, Reservation,
    StoreBackend, WriteBatch, fill_template,
};
use crate::changes::Change;
use crate::clock::Clock;
use crate::error::{StoreError, StoreResult};
use crate::limits::decide;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const MEMBERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("members");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const HELD: TableDefinition<&str, u64> = TableDefinition::new("held");
const RESERVATIONS: TableDefinition<(&str, &str), (i64, &[u8])> = TableDefinition::new("reservations");
const EPHEMERAL: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("ephemeral");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
/// (shard, writer) → the writer's last batch applied to the shard.
const WRITER_MARKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("writer_marks");

/// Longest time a counter increment stays only in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
mod counters;

const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

struct Inner {
    db: Database,
    changes: broadcast::Sender<Change>,
    clock: Arc<dyn Clock>,
    /// Counter commits not yet made durable.
    dirty: AtomicBool,
}

pub struct EmbeddedBackend {
    inner: Arc<Inner>,
    housekeeping: JoinHandle<()>,
}

fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

/// The data directory (0700) and the store file (0600) are the owner's
/// alone: the file holds key and password hashes, sessions and usage. A
/// directory that exists already is left as its owner set it; the file is
/// always tightened.
fn create_private(dir: &Path, file: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let unavailable = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot {what} {}: {e}", path.display()))
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unavailable("create data directory", dir, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| unavailable("restrict", file, e))
        }
        Err(e) => Err(unavailable("create", file, e)),
    }
}

impl EmbeddedBackend {
    /// Opens (or creates) `dir/maas.redb`. Must be called inside a Tokio
    /// runtime: housekeeping runs as a background task.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> StoreResult<EmbeddedBackend> {
        let path = dir.join("maas.redb");
        create_private(dir, &path)?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is already open in another process; the embedded store serves one process (use Redis for several)",
                path.display()
            )),
            e => StoreError::Unavailable(format!("cannot open {}: {e}", path.display())),
        })?;
        let txn = db.begin_write().map_err(db_error)?;
        {
            txn.open_table(RECORDS).map_err(db_error)?;
            txn.open_table(MEMBERS).map_err(db_error)?;
            txn.open_table(COUNTERS).map_err(db_error)?;
            txn.open_table(HELD).map_err(db_error)?;
            txn.open_table(RESERVATIONS).map_err(db_error)?;
            txn.open_table(EPHEMERAL).map_err(db_error)?;
            txn.open_table(EXPIRY).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        let (changes, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            db,
            changes,
            clock,
            dirty: AtomicBool::new(false),
        });
        let housekeeping = tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        Ok(EmbeddedBackend { inner, housekeeping })
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
    }

    fn read<T>(&self, work: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>) -> StoreResult<T> {
        let txn = self.inner.db.begin_read().map_err(db_error)?;
        work(&txn).map_err(db_error)
    }
}

impl Drop for EmbeddedBackend {
    fn drop(&mut self) {
        self.housekeeping.abort();
        if let Err(e) = self.inner.flush() {
            tracing::error!(error = %e, "embedded store: final flush failed");
        }
    }
}

async fn housekeeping(inner: std::sync::Weak<Inner>) {
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = flush.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if inner.dirty.load(Ordering::Acquire) {
                    let _ = tokio::task::spawn_blocking(move || inner.flush()).await;
                }
            }
            _ = sweep.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || inner.sweep()).await;
            }
        }
    }
}

fn counter_name(key: &CounterKey) -> String {
    format!("{}/{}", key.shard, key.name)
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0)
    }

    fn flush(&self) -> StoreResult<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let txn = self.db.begin_write().map_err(db_error)?;
            txn.commit().map_err(db_error)?;
        }
        Ok(())
    }

    fn sweep(&self) -> StoreResult<()> {
        let now = self.now();
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut expiry = txn.open_table(EXPIRY).map_err(db_error)?;
            let due: Vec<(u64, String)> = expiry
                .range(..(now + 1, ""))
                .map_err(db_error)?
                .filter_map(Result::ok)
                .map(|(k, _)| {
                    let (at, key) = k.value();
                    (at, key.to_owned())
                })
                .collect();
            let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
            let mut ephemeral = txn.open_table(EPHEMERAL).map_err(db_error)?;
            for (at, key) in &due {
                expiry.remove((*at, key.as_str())).map_err(db_error)?;
                if let Some(name) = key.strip_prefix("c:") {
                    counters.remove(name).map_err(db_error)?;
                } else if let Some(name) = key.strip_prefix("e:") {
                    ephemeral.remove(name).map_err(db_error)?;
                }
            }
        }
        txn.commit().map_err(db_error)
    }
}

/// Bounds covering exactly the members of `collection`: names never contain
/// NUL, and `(c, m) < (c + "\0", "")` for every member `m`.
fn collection_range(collection: &str) -> (String, String) {
    (collection.to_owned(), format!("{collection}\0"))
}

#[async_trait]
impl StoreBackend for EmbeddedBackend {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let table = txn.open_table(RECORDS)?;
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.read(|txn| {
            let table = txn.open_table(RECORDS)?;
            keys.iter()
                .map(|key| Ok(table.get(key.as_str())?.map(|v| v.value().to_vec())))
                .collect()
        })
    }

    async fn get_linked(&self, key: &str, links: &[Link]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.read(|txn| {
            let table = txn.open_table(RECORDS)?;
            let mut out = vec![table.get(key)?.map(|v| v.value().to_vec())];
            for link in links {
                let source = out.get(link.from).and_then(Option::as_deref);
                let next_key = source
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).ok())
                    .and_then(|record| fill_template(link.template, &record));
                let value = match next_key {
                    Some(next_key) => table.get(next_key.as_str())?.map(|v| v.value().to_vec()),
                    None => None,
                };
                out.push(value);
            }
            Ok(out)
        })
    }

    async fn members(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> StoreResult<Vec<String>> {
        let (low, high) = collection_range(collection);
        self.read(|txn| {
            let table = txn.open_table(MEMBERS)?;
            let range = match (after, descending) {
                (None, _) => table.range((low.as_str(), "")..(high.as_str(), ""))?,
                (Some(after), false) => table.range((low.as_str(), after)..(high.as_str(), ""))?,
                (Some(before), true) => table.range((low.as_str(), "")..(low.as_str(), before))?,
            };
            let pick = |entry: Result<(redb::AccessGuard<(&str, &str)>, redb::AccessGuard<()>), redb::StorageError>| {
                entry.map(|(k, _)| k.value().1.to_owned())
            };
            let mut out = Vec::new();
            if descending {
                for entry in range.rev() {
                    out.push(pick(entry)?);
                    if out.len() == limit {
                        break;
                    }
                }
            } else {
                for entry in range {
                    let member = pick(entry)?;
                    if after == Some(member.as_str()) {
                        continue;
                    }
                    out.push(member);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn commit(&self, batch: WriteBatch) -> StoreResult<Result<(), ConditionFailed>> {
        let outcome = self
            .write(move |inner| {
                let txn = inner.db.begin_write().map_err(db_error)?;
                {
                    let mut records = txn.open_table(RECORDS).map_err(db_error)?;
                    let mut members = txn.open_table(MEMBERS).map_err(db_error)?;
                    for (i, condition) in batch.conditions.iter().enumerate() {
                        let holds = match condition {
                            Condition::Exists(key) => records.get(key.as_str()).map_err(db_error)?.is_some(),
                            Condition::Absent(key) => records.get(key.as_str()).map_err(db_error)?.is_none(),
                            Condition::Equals(key, value) => records
                                .get(key.as_str())
                                .map_err(db_error)?
                                .is_some_and(|v| v.value() == value.as_slice()),
                            Condition::Empty(collection) => {
                                let (low, high) = collection_range(collection);
                                members
                                    .range((low.as_str(), "")..(high.as_str(), ""))
                                    .map_err(db_error)?
                                    .next()
                                    .is_none()
                            }
                        };
                        if !holds {
                            drop((records, members));
                            txn.abort().map_err(db_error)?;
                            return Ok(Err(ConditionFailed(i)));
                        }
                    }
                    for op in &batch.ops {
                        match op {
                            Op::Put(key, value) => {
                                records.insert(key.as_str(), value.as_slice()).map_err(db_error)?;
                            }
                            Op::Delete(key) => {
                                records.remove(key.as_str()).map_err(db_error)?;
                            }
                            Op::AddMember { collection, member } => {
                                members
                                    .insert((collection.as_str(), member.as_str()), ())
                                    .map_err(db_error)?;
                            }
                            Op::RemoveMember { collection, member } => {
                                members
                                    .remove((collection.as_str(), member.as_str()))
                                    .map_err(db_error)?;
                            }
                        }
                    }
                }
                txn.commit().map_err(db_error)?;
                Ok(Ok(batch.changes))
            })
            .await?;
        Ok(outcome.map(|changes| {
            for change in changes {
                let _ = self.inner.changes.send(change);
            }
        }))
    }

    async fn add_counters(&self, adds: &[CounterAdd]) -> StoreResult<()> {
        let adds = adds.to_vec();
        self.write(move |inner| {
            let txn = inner.begin_counter_write()?;
            inner.apply_adds(&txn, &adds)?;
            inner.commit_counters(txn)
        })
        .await
    }

    async fn add_counters_once(&self, shard: &str, writer: &str, seq: u64, adds: &[CounterAdd]) -> StoreResult<bool> {
        let (shard, writer, adds) = (shard.to_owned(), writer.to_owned(), adds.to_vec());
        self.write(move |inner| {
            let txn = inner.begin_counter_write()?;
            {
                let mut marks = txn.open_table(WRITER_MARKS).map_err(db_error)?;
                let last = marks
                    .get((shard.as_str(), writer.as_str()))
                    .map_err(db_error)?
                    .map_or(0, |v| v.value());
                if seq <= last {
                    return Ok(false);
                }
                marks.insert((shard.as_str(), writer.as_str()), seq).map_err(db_error)?;
            }
            inner.apply_adds(&txn, &adds)?;
            inner.commit_counters(txn)?;
            Ok(true)
        })
        .await
    }

    async fn check_and_add(
        &self,
        checks: &[CounterCheck],
        adds: &[CounterAdd],
        now: i64,
        reservation: Option<&Reservation>,
    ) -> StoreResult<CheckOutcome> {
        let checks = checks.to_vec();
        let adds = adds.to_vec();
        let reservation = reservation.cloned();
        self.write(move |inner| {
            let txn = inner.begin_counter_write()?;
            if let Some(first) = checks.first() {
                Inner::release(&txn, &first.key.shard, None, now)?;
            }
            let used = |txn: &redb::WriteTransaction, key: &CounterKey| -> StoreResult<u64> {
                let name = counter_name(key);
                let counters = txn.open_table(COUNTERS).map_err(db_error)?;
                let held = txn.open_table(HELD).map_err(db_error)?;
                let count = counters.get(name.as_str()).map_err(db_error)?.map_or(0, |v| v.value());
                let held = held.get(name.as_str()).map_err(db_error)?.map_or(0, |v| v.value());
                Ok(count.saturating_add(held))
            };
            let before = checks
                .iter()
                .map(|c| used(&txn, &c.key))
                .collect::<StoreResult<Vec<_>>>()?;
            let demands: Vec<_> = checks.iter().map(CounterCheck::demand).collect();
            let (granted, amounts) = match decide(&demands, &before, reservation.as_ref().map(|r| r.grant)) {
                Ok(decision) => decision,
                Err((index, current)) => {
                    txn.abort().map_err(db_error)?;
                    return Ok(CheckOutcome::Rejected { index, current });
                }
            };
            inner.apply_adds(&txn, &adds)?;
            if let (Some(reservation), Some(first)) = (&reservation, checks.first()) {
                let mut holds: Vec<(String, u64)> = Vec::new();
                {
                    let mut held = txn.open_table(HELD).map_err(db_error)?;
                    for (check, amount) in checks.iter().zip(amounts).filter(|(_, a)| *a > 0) {
                        let name = counter_name(&check.key);
                        Inner::change_held(&mut held, &name, i128::from(amount))?;
                        holds.push((name, amount));
                    }
                }
                let encoded = serde_json::to_vec(&holds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let mut reservations = txn.open_table(RESERVATIONS).map_err(db_error)?;
                reservations
                    .insert(
                        (first.key.shard.as_str(), reservation.id.as_str()),
                        (reservation.expires_at, encoded.as_slice()),
                    )
                    .map_err(db_error)?;
            }
            let values = checks
                .iter()
                .map(|c| used(&txn, &c.key))
                .collect::<StoreResult<Vec<_>>>()?;
            inner.commit_counters(txn)?;
            Ok(CheckOutcome::Admitted { values, granted })
        })
        .await
    }

    async fn settle(
        &self,
        shard: &str,
        reservation_id: &str,
        adds: &[CounterAdd],
        now: i64,
        only_if_held: bool,
    ) -> StoreResult<bool> {
        self.settle_hold(shard, reservation_id, adds, now, only_if_held).await
    }

    async fn read_counters(&self, keys: &[CounterKey]) -> StoreResult<Vec<u64>> {
        self.read(|txn| {
            let table = txn.open_table(COUNTERS)?;
            keys.iter()
                .map(|key| Ok(table.get(counter_name(key).as_str())?.map(|v| v.value()).unwrap_or(0)))
                .collect()
        })
    }

    async fn put_ephemeral(&self, key: &str, value: Vec<u8>, ttl_secs: u64) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |inner| {
            let expires = inner.now().saturating_add(ttl_secs.max(1));
            let txn = inner.db.begin_write().map_err(db_error)?;
            {
                let mut table = txn.open_table(EPHEMERAL).map_err(db_error)?;
                let mut expiry = txn.open_table(EXPIRY).map_err(db_error)?;
                let index_key = format!("e:{key}");
                let old = table.get(key.as_str()).map_err(db_error)?.map(|v| v.value().0);
                if let Some(old) = old {
                    expiry.remove((old, index_key.as_str())).map_err(db_error)?;
                }
                table
                    .insert(key.as_str(), (expires, value.as_slice()))
                    .map_err(db_error)?;
                expiry.insert((expires, index_key.as_str()), ()).map_err(db_error)?;
            }
            txn.commit().map_err(db_error)
        })
        .await
    }

    async fn get_ephemeral(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let now = self.inner.now();
        self.read(|txn| {
            let table = txn.open_table(EPHEMERAL)?;
            Ok(table.get(key)?.and_then(|v| {
                let (expires, value) = v.value();
                (expires > now).then(|| value.to_vec())
            }))
        })
    }

    async fn delete_ephemeral(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |inner| {
            let txn = inner.db.begin_write().map_err(db_error)?;
            {
                let mut table = txn.open_table(EPHEMERAL).map_err(db_error)?;
                let old = table.remove(key.as_str()).map_err(db_error)?.map(|v| v.value().0);
                if let Some(old) = old {
                    let mut expiry = txn.open_table(EXPIRY).map_err(db_error)?;
                    expiry.remove((old, format!("e:{key}").as_str())).map_err(db_error)?;
                }
            }
            txn.commit().map_err(db_error)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    async fn ping(&self) -> StoreResult<()> {
        // The file is in this process: it answers while the process does.
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        self.write(|inner| inner.flush()).await
    }
}
