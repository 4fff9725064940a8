//! The Redis backend: production, shared by every proxy and portal replica.
//!
//! Key layout (`P` is the configured prefix, `maas` by default):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{r}:<record key>` | string | JSON records: catalog, accounts, users, apps, keys, indexes, audit |
//! | `P:{r}:z:<collection>` | sorted set, all scores 0 | members in lexical order, for listing |
//! | `P:u:{<app id>}:<metric>:<period>:<bucket start>` | string (integer) | usage counters |
//! | `P:h:{<app id>}`, `P:x:{<app id>}`, `P:v:{<app id>}` | hash, sorted set, hash | token holds: amounts held per counter, deadlines, each hold's amounts |
//! | `P:w:{<app id>}` | hash | each usage writer's last batch applied to the application (exactly-once writes), kept 30 days |
//! | `P:e:<key>` | string with TTL | ephemeral records (sessions) |
//! | `P:changes` | pub/sub channel | change events (JSON) |
//!
//! Every record and collection shares the `{r}` hash tag, so a write batch
//! (one Lua script) touches a single Redis Cluster slot; counters share the
//! application's tag, so a strict check-and-add is one script in one slot.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

pub use super::redis_connect::RedisConnect;
use super::redis_connect::{
    certificates, client, cluster_client, explain_connect_error, run_subscriber, sentinel_client, unavailable, unsure,
};
use super::redis_link::{FeedSource, RedisConn, RedisLink, connect_cluster, connect_sentinel};
use super::redis_scripts::{ADD_ONCE_SCRIPT, CHECK_AND_ADD_SCRIPT, COMMIT_SCRIPT, GET_LINKED_SCRIPT};
pub use super::redis_url::hash_tag;
use super::redis_url::{self, RedisTarget};
use super::{
    CheckOutcome, Condition, ConditionFailed, CounterAdd, CounterCheck, CounterKey, Link, MAX_EXACT_COUNT, Op,
    Reservation, StoreBackend, WRITER_MEMORY_SECS, WriteBatch,
};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::store::RedisTls;

/// How long a shard's reservation keys outlive its last reservation's expiry.
const RESERVATION_KEEP_SECS: i64 = 60;

pub struct RedisBackend {
    link: RedisLink,
    prefix: String,
    changes: broadcast::Sender<Change>,
    commit_script: Script,
    check_script: Script,
    linked_script: Script,
    add_once_script: Script,
    /// The change feed's subscriber, and the Sentinel follower or the
    /// Cluster's first connect; stopped with the backend.
    tasks: Vec<JoinHandle<()>>,
}

impl RedisBackend {
    /// Connects, and subscribes to the change feed before returning so no
    /// change committed after this call is missed.
    pub async fn connect(url: &str, prefix: &str, tls: &RedisTls) -> StoreResult<RedisBackend> {
        Self::connect_with(url, prefix, tls, RedisConnect::default()).await
    }

    /// [`connect`](Self::connect) as `how` says. `url` names one server,
    /// a Sentinel-watched master or a Cluster (see [`super::redis_url`]).
    pub async fn connect_with(url: &str, prefix: &str, tls: &RedisTls, how: RedisConnect) -> StoreResult<RedisBackend> {
        let target = redis_url::parse(url).map_err(|e| StoreError::Unavailable(format!("redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(how.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let mut tasks = Vec::new();
        // Whether a server answered already: then the change feed must
        // subscribe before this returns; otherwise it does when it can.
        let mut connected = false;
        let (link, feed) = match target {
            RedisTarget::Server(url) => {
                let client = client(&url, tls)?;
                let conn = match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(conn) => {
                        connected = true;
                        conn
                    }
                    // Not there yet (refused, no answer): connect on first use.
                    Err(e)
                        if how.wait_for_server
                            && (e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped()) =>
                    {
                        tracing::warn!(error = %e, "redis does not answer yet; connecting when it does");
                        ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?
                    }
                    Err(e) => return Err(explain_connect_error(e, &url, tls)),
                };
                (RedisLink::Server(conn), FeedSource::Server(Box::new(client)))
            }
            RedisTarget::Sentinel(target) => {
                let sentinels = sentinel_client(&target, certificates(url, tls)?)?;
                let (link, follower) = connect_sentinel(&target.master, sentinels, config, how.wait_for_server).await?;
                tasks.push(follower);
                connected = link.current().is_some();
                (RedisLink::Sentinel(link.clone()), FeedSource::Sentinel(link))
            }
            RedisTarget::Cluster(target) => {
                let certificates = certificates(url, tls)?;
                let cluster = cluster_client(&target, certificates.clone(), how)?;
                let nodes = target
                    .nodes
                    .iter()
                    .map(|node| client(node, tls))
                    .collect::<StoreResult<Vec<_>>>()?;
                let (link, pending) = connect_cluster(cluster, how.wait_for_server).await?;
                connected = pending.is_none();
                tasks.extend(pending);
                (RedisLink::Cluster(link), FeedSource::Nodes(nodes))
            }
        };
        let (changes, _) = broadcast::channel(4096);
        let (ready_tx, ready_rx) = oneshot::channel();
        tasks.push(tokio::spawn(run_subscriber(
            feed,
            format!("{prefix}:changes"),
            changes.clone(),
            connected.then_some(ready_tx),
        )));
        if connected {
            match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(StoreError::Unavailable(format!("redis subscribe: {e}"))),
                _ => return Err(StoreError::Unavailable("redis subscribe timed out".into())),
            }
        }
        Ok(RedisBackend {
            link,
            prefix: prefix.to_owned(),
            changes,
            commit_script: Script::new(COMMIT_SCRIPT),
            check_script: Script::new(CHECK_AND_ADD_SCRIPT),
            linked_script: Script::new(GET_LINKED_SCRIPT),
            add_once_script: Script::new(ADD_ONCE_SCRIPT),
            tasks,
        })
    }

    fn record_key(&self, key: &str) -> String {
        format!("{}:{{r}}:{key}", self.prefix)
    }

    fn collection_key(&self, collection: &str) -> String {
        format!("{}:{{r}}:z:{collection}", self.prefix)
    }

    fn counter_key(&self, key: &CounterKey) -> String {
        [
            self.prefix.as_str(),
            ":u:{",
            key.shard.as_str(),
            "}:",
            key.name.as_str(),
        ]
        .concat()
    }

    /// The shard's held amounts, reservation expiries and reservation holds,
    /// in the shard's slot.
    fn reservation_keys(&self, shard: &str) -> [String; 3] {
        ["h", "x", "v"].map(|kind| [self.prefix.as_str(), ":", kind, ":{", shard, "}"].concat())
    }

    fn adds_plan(&self, script: &mut ScriptArgs, adds: &[CounterAdd]) -> Vec<AddStep> {
        adds.iter()
            .filter(|a| a.by > 0)
            .map(|a| {
                (
                    script.key(self.counter_key(&a.key)),
                    a.by.min(MAX_EXACT_COUNT),
                    a.ttl_secs.unwrap_or(0),
                )
            })
            .collect()
    }

    async fn run_check_script(&self, script: &ScriptArgs, plan: &CheckPlan<'_>) -> StoreResult<Vec<u64>> {
        let mut invocation = self.check_script.prepare_invoke();
        for key in &script.keys {
            invocation.key(key);
        }
        invocation.arg(plan_json(plan)?);
        let mut conn = self.link.conn()?;
        invocation.invoke_async(&mut conn).await.map_err(unsure)
    }

    /// Runs a command that is safe to send twice (a read, or a write whose
    /// second run changes nothing more: puts, set members, deletes), and
    /// once more if the connection had dropped: after a Redis restart the
    /// first command on the old connection fails and starts the reconnect.
    /// Counter increments are never sent this way.
    async fn idempotent<T, F, Fut>(&self, run: F) -> StoreResult<T>
    where
        F: Fn(RedisConn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match run(self.link.conn()?).await {
            // On Sentinel the second try goes to the master named by then.
            Err(error) if error.is_connection_dropped() => run(self.link.conn()?).await.map_err(unavailable),
            other => other.map_err(unavailable),
        }
    }

    /// `items` split by the counter shard `shard` names, on a cluster (where
    /// a pipeline must stay in one slot); one group elsewhere.
    fn per_slot<'a, T: Copy>(&self, items: &[T], shard: impl Fn(&T) -> &'a str) -> Vec<Vec<T>> {
        if !self.link.is_cluster() {
            return if items.is_empty() {
                Vec::new()
            } else {
                vec![items.to_vec()]
            };
        }
        let mut groups: Vec<(&str, Vec<T>)> = Vec::new();
        for item in items {
            let tag = shard(item);
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, group)) => group.push(*item),
                None => groups.push((tag, vec![*item])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    fn ephemeral_key(&self, key: &str) -> String {
        format!("{}:e:{key}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// Deletes every key under this backend's prefix (tests use a fresh
    /// prefix each and clean up after themselves).
    pub async fn destroy_all_data(&self) -> StoreResult<()> {
        let mut conn = self.link.conn()?;
        let keys = conn
            .keys_matching(&format!("{}:*", self.prefix))
            .await
            .map_err(unavailable)?;
        for key in keys {
            let _: () = conn.del(key).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One counter increment for the scripts: `[key index, by, ttl secs]`.
type AddStep = (usize, u64, u64);

/// One limit for `CHECK_AND_ADD_SCRIPT`: `[key index, max, add, hold,
/// grant rate, hold field]`.
type CheckStep<'a> = (usize, u64, u64, u64, u64, &'a str);

/// The argument of `CHECK_AND_ADD_SCRIPT` (its doc comment says what each
/// member means), serialized straight from borrowed parts: the hot path of
/// strict mode builds no JSON tree.
#[derive(serde::Serialize)]
struct CheckPlan<'a> {
    c: Vec<CheckStep<'a>>,
    a: Vec<AddStep>,
    h: usize,
    x: usize,
    v: usize,
    now: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<(&'a str, i64, u64, u64, i64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settle: Option<&'a str>,
    only_held: bool,
}

fn plan_json(plan: &impl serde::Serialize) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(plan).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Collects the keys and arguments of one script call, numbering each key
/// and argument once.
#[derive(Default)]
struct ScriptArgs {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl ScriptArgs {
    fn key(&mut self, key: String) -> usize {
        match self.keys.iter().position(|k| *k == key) {
            Some(i) => i + 1,
            None => {
                self.keys.push(key);
                self.keys.len()
            }
        }
    }

    /// Arguments 1 and 2 are reserved (plan, channel).
    fn arg(&mut self, value: Vec<u8>) -> usize {
        self.args.push(value);
        self.args.len() + 2
    }
}

#[async_trait]
impl StoreBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = &self.record_key(key);
        self.idempotent(|mut conn| async move { conn.get(key).await }).await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.record_key(k)).collect();
        let cmd = &redis::cmd("MGET").arg(full).clone();
        self.idempotent(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn get_linked(&self, key: &str, links: &[Link]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let plan: Vec<_> = links.iter().map(|l| serde_json::json!([l.from, l.template])).collect();
        let mut invocation = self.linked_script.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .arg(serde_json::Value::Array(plan).to_string())
            .arg(self.record_key(""));
        let invocation = &invocation;
        self.idempotent(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    async fn members(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> StoreResult<Vec<String>> {
        let bound = after.map(|a| format!("({a}"));
        let mut cmd = if descending {
            let mut cmd = redis::cmd("ZREVRANGEBYLEX");
            cmd.arg(self.collection_key(collection))
                .arg(bound.as_deref().unwrap_or("+"))
                .arg("-");
            cmd
        } else {
            let mut cmd = redis::cmd("ZRANGEBYLEX");
            cmd.arg(self.collection_key(collection))
                .arg(bound.as_deref().unwrap_or("-"))
                .arg("+");
            cmd
        };
        cmd.arg("LIMIT").arg(0).arg(limit);
        let cmd = &cmd;
        self.idempotent(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn commit(&self, batch: WriteBatch) -> StoreResult<Result<(), ConditionFailed>> {
        let mut script = ScriptArgs::default();
        let mut conditions = Vec::with_capacity(batch.conditions.len());
        for condition in batch.conditions {
            conditions.push(match condition {
                Condition::Exists(key) => serde_json::json!(["x", script.key(self.record_key(&key))]),
                Condition::Absent(key) => serde_json::json!(["a", script.key(self.record_key(&key))]),
                Condition::Equals(key, value) => {
                    serde_json::json!(["e", script.key(self.record_key(&key)), script.arg(value)])
                }
                Condition::Empty(collection) => {
                    serde_json::json!(["z", script.key(self.collection_key(&collection))])
                }
            });
        }
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            ops.push(match op {
                Op::Put(key, value) => serde_json::json!(["p", script.key(self.record_key(&key)), script.arg(value)]),
                Op::Delete(key) => serde_json::json!(["d", script.key(self.record_key(&key))]),
                Op::AddMember { collection, member } => serde_json::json!([
                    "za",
                    script.key(self.collection_key(&collection)),
                    script.arg(member.into_bytes())
                ]),
                Op::RemoveMember { collection, member } => serde_json::json!([
                    "zr",
                    script.key(self.collection_key(&collection)),
                    script.arg(member.into_bytes())
                ]),
            });
        }
        let mut messages = Vec::with_capacity(batch.changes.len());
        for change in &batch.changes {
            let json = serde_json::to_vec(change).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            messages.push(script.arg(json));
        }
        let plan = serde_json::json!({"c": conditions, "o": ops, "m": messages}).to_string();
        let mut invocation = self.commit_script.prepare_invoke();
        for key in &script.keys {
            invocation.key(key);
        }
        invocation.arg(plan).arg(self.channel());
        for arg in &script.args {
            invocation.arg(arg.as_slice());
        }
        // A batch's conditions and writes give the same state when run
        // twice, and a second run fails its conditions rather than writing
        // again: safe to resend when the connection dropped.
        let invocation = &invocation;
        let failed: usize = self
            .idempotent(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(if failed == 0 {
            Ok(())
        } else {
            Err(ConditionFailed(failed - 1))
        })
    }

    async fn add_counters(&self, adds: &[CounterAdd]) -> StoreResult<()> {
        let adds: Vec<&CounterAdd> = adds.iter().filter(|a| a.by > 0).collect();
        let pipelines = self.per_slot(&adds, |a| &a.key.shard).into_iter().map(|adds| {
            let mut pipe = redis::pipe();
            for add in adds {
                let key = self.counter_key(&add.key);
                pipe.cmd("INCRBY").arg(&key).arg(add.by).ignore();
                if let Some(ttl) = add.ttl_secs {
                    pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
                }
            }
            pipe
        });
        let sends = pipelines.map(|pipe| async move {
            let mut conn = self.link.conn()?;
            pipe.query_async::<()>(&mut conn).await.map_err(unsure)
        });
        futures_util::future::try_join_all(sends).await.map(drop)
    }

    async fn add_counters_once(&self, shard: &str, writer: &str, seq: u64, adds: &[CounterAdd]) -> StoreResult<bool> {
        let mut script = ScriptArgs::default();
        let marks = script.key(format!("{}:w:{{{shard}}}", self.prefix));
        debug_assert_eq!(marks, 1);
        let plan = self.adds_plan(&mut script, adds);
        let mut invocation = self.add_once_script.prepare_invoke();
        for key in &script.keys {
            invocation.key(key);
        }
        invocation
            .arg(writer)
            .arg(seq.min(MAX_EXACT_COUNT))
            .arg(plan_json(&plan)?)
            .arg(WRITER_MEMORY_SECS);
        let mut conn = self.link.conn()?;
        let applied: i64 = invocation.invoke_async(&mut conn).await.map_err(unsure)?;
        Ok(applied == 1)
    }

    async fn check_and_add(
        &self,
        checks: &[CounterCheck],
        adds: &[CounterAdd],
        now: i64,
        reservation: Option<&Reservation>,
    ) -> StoreResult<CheckOutcome> {
        let Some(shard) = checks.first().map(|c| c.key.shard.as_str()) else {
            self.add_counters(adds).await?;
            return Ok(CheckOutcome::Admitted {
                values: Vec::new(),
                granted: 0,
            });
        };
        let mut script = ScriptArgs::default();
        let [held, expiries, holds] = self.reservation_keys(shard).map(|key| script.key(key));
        let checks_plan = checks
            .iter()
            .map(|c| {
                (
                    script.key(self.counter_key(&c.key)),
                    c.max.min(MAX_EXACT_COUNT),
                    c.add.min(MAX_EXACT_COUNT),
                    c.hold.min(MAX_EXACT_COUNT),
                    c.grant_rate.min(MAX_EXACT_COUNT),
                    c.key.name.as_str(),
                )
            })
            .collect();
        let adds_plan = self.adds_plan(&mut script, adds);
        let plan = CheckPlan {
            c: checks_plan,
            a: adds_plan,
            h: held,
            x: expiries,
            v: holds,
            now,
            r: reservation.map(|r| {
                (
                    r.id.as_str(),
                    r.expires_at,
                    r.grant.max.min(MAX_EXACT_COUNT),
                    r.grant.min.min(MAX_EXACT_COUNT),
                    (r.expires_at - now).max(1) + RESERVATION_KEEP_SECS,
                )
            }),
            settle: None,
            only_held: false,
        };
        let result = self.run_check_script(&script, &plan).await?;
        match result.split_first() {
            Some((0, rest)) => Ok(CheckOutcome::Admitted {
                granted: rest.first().copied().unwrap_or(0),
                values: rest.get(1..).unwrap_or_default().to_vec(),
            }),
            Some((&index, rest)) => Ok(CheckOutcome::Rejected {
                index: index as usize - 1,
                current: rest.first().copied().unwrap_or(0),
            }),
            None => Err(StoreError::Corrupt("empty check-and-add result".into())),
        }
    }

    async fn settle(
        &self,
        shard: &str,
        reservation_id: &str,
        adds: &[CounterAdd],
        now: i64,
        only_if_held: bool,
    ) -> StoreResult<bool> {
        let mut script = ScriptArgs::default();
        let [held, expiries, holds] = self.reservation_keys(shard).map(|key| script.key(key));
        let adds_plan = self.adds_plan(&mut script, adds);
        let plan = CheckPlan {
            c: Vec::new(),
            a: adds_plan,
            h: held,
            x: expiries,
            v: holds,
            now,
            r: None,
            settle: Some(reservation_id),
            only_held: only_if_held,
        };
        // The script answers {2} when `only_held` found no hold.
        let outcome = self.run_check_script(&script, &plan).await?;
        Ok(outcome.first() != Some(&2))
    }

    async fn read_counters(&self, keys: &[CounterKey]) -> StoreResult<Vec<u64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One GET each in a pipeline per slot: the keys may live in
        // different slots, and a cluster pipeline must stay in one.
        let order: Vec<usize> = (0..keys.len()).collect();
        let groups = self.per_slot(&order, |&i| &keys[i].shard);
        let reads = groups.iter().map(|group| async move {
            let mut pipe = redis::pipe();
            for &i in group {
                pipe.cmd("GET").arg(self.counter_key(&keys[i]));
            }
            let pipe = &pipe;
            self.idempotent(|mut conn| async move { pipe.query_async::<Vec<Option<u64>>>(&mut conn).await })
                .await
        });
        let answers = futures_util::future::try_join_all(reads).await?;
        let mut values = vec![0; keys.len()];
        for (group, answer) in groups.iter().zip(answers) {
            for (&i, value) in group.iter().zip(answer) {
                values[i] = value.unwrap_or_default();
            }
        }
        Ok(values)
    }

    async fn put_ephemeral(&self, key: &str, value: Vec<u8>, ttl_secs: u64) -> StoreResult<()> {
        let (key, value) = (&self.ephemeral_key(key), &value);
        self.idempotent(|mut conn| async move { conn.set_ex(key, value.as_slice(), ttl_secs.max(1)).await })
            .await
    }

    async fn get_ephemeral(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = &self.ephemeral_key(key);
        self.idempotent(|mut conn| async move { conn.get(key).await }).await
    }

    async fn delete_ephemeral(&self, key: &str) -> StoreResult<()> {
        let key = &self.ephemeral_key(key);
        self.idempotent(|mut conn| async move { conn.del(key).await }).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.link.conn()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every command is acknowledged by Redis before it returns; Redis's
        // own persistence (AOF) decides durability.
        Ok(())
    }
}
