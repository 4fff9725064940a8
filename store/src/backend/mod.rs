//! The narrow contract a storage engine implements.
//!
//! Domain rules (validation, references, cascades, key lookup, limits) are
//! written once in [`crate::Store`] on top of these primitives, so the two
//! backends cannot drift apart in behaviour; each backend only has to make
//! the primitives atomic:
//!
//! - **records**: JSON values under string keys, written only through
//!   [`WriteBatch`]es whose conditions and operations apply all-or-nothing;
//! - **collections**: ordered sets of member strings (ids sort by time), for
//!   listing and paging;
//! - **counters**: usage counts in time buckets, sharded by application,
//!   with an atomic check-and-add for strict limits;
//! - **ephemeral records** with a time to live (portal sessions);
//! - the **change feed**, published with the batch that caused it.

pub mod embedded;
pub mod redis;
mod redis_connect;
mod redis_link;
mod redis_scripts;
pub mod redis_url;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::changes::Change;
use crate::error::StoreResult;
use crate::limits::{Demand, Grant};

/// A precondition of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Exists(String),
    Absent(String),
    /// The record holds exactly these bytes (optimistic concurrency).
    Equals(String, Vec<u8>),
    /// The collection has no members.
    Empty(String),
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    AddMember { collection: String, member: String },
    RemoveMember { collection: String, member: String },
}

/// Writes that happen together or not at all, if every condition holds.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
    /// Published once the batch is committed.
    pub changes: Vec<Change>,
}

impl WriteBatch {
    pub fn require(&mut self, condition: Condition) -> &mut Self {
        self.conditions.push(condition);
        self
    }
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put(key.into(), value));
        self
    }
    pub fn delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }
    pub fn add_member(&mut self, collection: impl Into<String>, member: impl Into<String>) -> &mut Self {
        self.ops.push(Op::AddMember {
            collection: collection.into(),
            member: member.into(),
        });
        self
    }
    pub fn remove_member(&mut self, collection: impl Into<String>, member: impl Into<String>) -> &mut Self {
        self.ops.push(Op::RemoveMember {
            collection: collection.into(),
            member: member.into(),
        });
        self
    }
    pub fn publish(&mut self, change: Change) -> &mut Self {
        self.changes.push(change);
        self
    }
}

/// A record read after another, its key made from the other's fields:
/// `template` is a key with `{field}` placeholders filled from the top-level
/// string fields of the JSON record at `from` (0 is the first record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub from: usize,
    pub template: &'static str,
}

/// `app:{application_id}` with `{"application_id": "app_1"}` → `app:app_1`;
/// `None` when a placeholder's field is missing or not a string.
pub fn fill_template(template: &str, record: &serde_json::Value) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}')?;
        out.push_str(record.get(&rest[open + 1..close])?.as_str()?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Which condition of a batch failed (index into `conditions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionFailed(pub usize);

/// A usage counter: `shard` is the application id, so every counter of one
/// application can be checked and added atomically (one Redis Cluster slot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub shard: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterAdd {
    pub key: CounterKey,
    pub by: u64,
    /// Seconds the counter is kept after its first increment; `None` = forever.
    pub ttl_secs: Option<u64>,
}

/// One limit checked at admission. `used` below is the counter plus what
/// requests in flight hold on it ([`Reservation`]s).
///
/// Admits only if `used + add + hold <= max` (plus the grant times
/// `grant_rate`), and when nothing is added or held (a metric counted
/// after the response, such as tokens without a reservation) only if
/// `used < max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterCheck {
    pub key: CounterKey,
    pub max: u64,
    /// Counted now.
    pub add: u64,
    /// Held until the reservation settles or expires (needs a [`Reservation`]).
    pub hold: u64,
    /// Also holds the reservation's grant, this much per granted unit
    /// (1 on a token limit, the completion price on a spend budget).
    pub grant_rate: u64,
}

impl CounterCheck {
    pub fn demand(&self) -> Demand {
        Demand {
            max: self.max,
            add: self.add,
            hold: self.hold,
            grant_rate: self.grant_rate,
        }
    }
}

/// A hold on limits by one request in flight, released by
/// [`StoreBackend::settle`] or, if its holder crashed, at `expires_at`.
///
/// The grant is the flexible part (completion tokens): as much as every
/// check with a `grant_rate` has room for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Unique per request; settling twice is harmless.
    pub id: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub grant: Grant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// All adds applied and holds taken; `values` is each check's `used`
    /// after them, `granted` the grant held (0 without a reservation).
    Admitted { values: Vec<u64>, granted: u64 },
    /// Nothing applied; `index` is the first check that failed, `current`
    /// its `used`.
    Rejected { index: usize, current: u64 },
}

#[async_trait]
pub trait StoreBackend: Send + Sync + 'static {
    /// A short name for logs and errors: `redis` or `embedded`.
    fn kind(&self) -> &'static str;

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>>;
    /// The record at `key`, then one record per link, read together as one
    /// consistent snapshot (one round trip on Redis): what a key lookup
    /// needs. A link whose source record is missing reads as `None`.
    async fn get_linked(&self, key: &str, links: &[Link]) -> StoreResult<Vec<Option<Vec<u8>>>>;
    /// Up to `limit` members of `collection` after `after` (exclusive), in
    /// ascending order, or descending before it when `descending`.
    async fn members(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> StoreResult<Vec<String>>;
    async fn commit(&self, batch: WriteBatch) -> StoreResult<Result<(), ConditionFailed>>;

    async fn add_counters(&self, adds: &[CounterAdd]) -> StoreResult<()>;
    /// Adds `adds` (all of `shard`) unless `writer`'s batch `seq`, or a
    /// later one of the same writer, was applied to the shard already;
    /// `Ok(false)` when it was. A writer that sends its batches in order
    /// and resends one it is unsure of gets each counted exactly once.
    async fn add_counters_once(&self, shard: &str, writer: &str, seq: u64, adds: &[CounterAdd]) -> StoreResult<bool>;
    /// All checks and adds must share one shard. Reservations of the shard
    /// due by `now` (unix seconds) are released first; with a reservation,
    /// the checks' holds are taken under its id (see [`decide`](crate::limits::decide)).
    async fn check_and_add(
        &self,
        checks: &[CounterCheck],
        adds: &[CounterAdd],
        now: i64,
        reservation: Option<&Reservation>,
    ) -> StoreResult<CheckOutcome>;
    /// Releases reservation `reservation_id` of `shard` (if still held) and
    /// applies `adds` (the usage it turned out to have), atomically.
    /// Reservations of the shard due by `now` are released too. With
    /// `only_if_held`, nothing is applied unless the reservation is still
    /// held (a settle resent after an uncertain attempt counts once);
    /// `Ok(false)` when nothing was.
    async fn settle(
        &self,
        shard: &str,
        reservation_id: &str,
        adds: &[CounterAdd],
        now: i64,
        only_if_held: bool,
    ) -> StoreResult<bool>;
    async fn read_counters(&self, keys: &[CounterKey]) -> StoreResult<Vec<u64>>;

    async fn put_ephemeral(&self, key: &str, value: Vec<u8>, ttl_secs: u64) -> StoreResult<()>;
    async fn get_ephemeral(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn delete_ephemeral(&self, key: &str) -> StoreResult<()>;

    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Whether the engine answers now (the proxy's breaker probes with it).
    async fn ping(&self) -> StoreResult<()>;

    /// Makes everything written so far durable (before shutdown).
    async fn flush(&self) -> StoreResult<()>;
}

/// How long a shard remembers a writer's last batch: a writer must resend
/// an unsure batch within this (30 days).
pub const WRITER_MEMORY_SECS: u64 = 30 * 86_400;

/// Largest count a check compares exactly in every backend (Lua numbers
/// are doubles): 2^53.
pub const MAX_EXACT_COUNT: u64 = 1 << 53;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_string_fields() {
        let record = serde_json::json!({"product": "granite", "plan": "standard", "n": 1});
        assert_eq!(
            fill_template("plan:{product}/{plan}", &record).as_deref(),
            Some("plan:granite/standard")
        );
        assert_eq!(fill_template("static", &record).as_deref(), Some("static"));
        assert_eq!(fill_template("x:{missing}", &record), None);
        assert_eq!(fill_template("x:{n}", &record), None, "only strings fill a key");
        assert_eq!(fill_template("x:{product", &record), None);
    }
}
