//! The Redis backend: production, shared by every proxy and portal replica.
//!
//! Key layout (`P` is the configured prefix, `maas` by default):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{r}:<record key>` | string | JSON records: catalog, accounts, users, apps, keys, indexes, audit |
//! | `P:{r}:z:<collection>` | sorted set, all scores 0 | members in lexical order, for listing |
//! | `P:u:{<app id>}:<metric>:<period>:<bucket start>` | string (integer) | usage counters |
//! | `P:e:<key>` | string with TTL | ephemeral records (sessions) |
//! | `P:changes` | pub/sub channel | change events (JSON) |
//!
//! Every record and collection shares the `{r}` hash tag, so a write batch
//! (one Lua script) touches a single Redis Cluster slot; counters share the
//! application's tag, so a strict check-and-add is one script in one slot.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::{
    CheckOutcome, Condition, ConditionFailed, CounterAdd, CounterCheck, CounterKey, Link, MAX_EXACT_COUNT, Op,
    Reservation, StoreBackend, WriteBatch,
};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};

const COMMIT_SCRIPT: &str = r#"
local plan = cjson.decode(ARGV[1])
for i, c in ipairs(plan.c) do
  local key = KEYS[c[2]]
  local ok
  if c[1] == 'x' then ok = redis.call('EXISTS', key) == 1
  elseif c[1] == 'a' then ok = redis.call('EXISTS', key) == 0
  elseif c[1] == 'e' then ok = redis.call('GET', key) == ARGV[c[3]]
  else ok = redis.call('ZCARD', key) == 0 end
  if not ok then return i end
end
for _, o in ipairs(plan.o) do
  local key = KEYS[o[2]]
  if o[1] == 'p' then redis.call('SET', key, ARGV[o[3]])
  elseif o[1] == 'd' then redis.call('DEL', key)
  elseif o[1] == 'za' then redis.call('ZADD', key, 0, ARGV[o[3]])
  else redis.call('ZREM', key, ARGV[o[3]]) end
end
for _, m in ipairs(plan.m) do redis.call('PUBLISH', ARGV[2], ARGV[m]) end
return 0
"#;

// Follows links from the first record; every key is in the `{r}` slot of
// KEYS[1], so the script stays in one cluster slot.
const GET_LINKED_SCRIPT: &str = r#"
local out = {redis.call('GET', KEYS[1])}
local decoded = {}
for i, link in ipairs(cjson.decode(ARGV[1])) do
  local from = link[1] + 1
  local value = false
  if out[from] then
    if decoded[from] == nil then
      local ok, record = pcall(cjson.decode, out[from])
      decoded[from] = ok and type(record) == 'table' and record or false
    end
    local record = decoded[from]
    if record then
      local missing = false
      local key = string.gsub(link[2], '{([^}]*)}', function(field)
        local v = record[field]
        if type(v) ~= 'string' then missing = true; return '' end
        return v
      end)
      if not missing then value = redis.call('GET', ARGV[2] .. key) end
    end
  end
  out[i + 1] = value
end
return out
"#;

/// Mirrors [`decide`](super::decide). KEYS: the counters, then the
/// shard's held amounts (hash), reservation expiries (sorted set) and
/// reservation holds (hash). `plan.c`: checks `[key, max, add, hold,
/// takes_grant, field]`; `plan.a`: adds `[key, by, ttl]`; `plan.h`, `x`, `v`:
/// the indexes of the three reservation keys; `plan.now`; `plan.r`: the
/// reservation `[id, expires_at, grant_max, grant_min, keep_secs]` or absent.
/// How long a shard's reservation keys outlive its last reservation's expiry.
const RESERVATION_KEEP_SECS: i64 = 60;

const CHECK_AND_ADD_SCRIPT: &str = r#"
local plan = cjson.decode(ARGV[1])
local H, X, V = KEYS[plan.h], KEYS[plan.x], KEYS[plan.v]
local function release(id)
  local holds = redis.call('HGET', V, id)
  if holds then
    for _, h in ipairs(cjson.decode(holds)) do
      if redis.call('HINCRBY', H, h[1], -h[2]) <= 0 then redis.call('HDEL', H, h[1]) end
    end
    redis.call('HDEL', V, id)
  end
  redis.call('ZREM', X, id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', plan.now)) do release(id) end
if plan.settle then
  release(plan.settle)
end
local r = plan.r
local grant = r and r[3] or 0
local tightest, tightest_used = nil, 0
local used = {}
for i, c in ipairs(plan.c) do
  local u = tonumber(redis.call('GET', KEYS[c[1]]) or '0') + tonumber(redis.call('HGET', H, c[6]) or '0')
  used[i] = u
  local hold = r and c[4] or 0
  local takes = r and c[5] == 1
  local need = c[3] + hold
  if need == 0 and not takes then
    if u >= c[2] then return {i, u} end
  else
    if u + need > c[2] then return {i, u} end
    local room = c[2] - u - need
    if takes and (tightest == nil or room < grant) then
      if room < grant then grant = room end
      tightest, tightest_used = i, u
    end
  end
end
if r and tightest and grant < r[4] then return {tightest, tightest_used} end
if not tightest then grant = 0 end
for _, a in ipairs(plan.a) do
  if redis.call('INCRBY', KEYS[a[1]], a[2]) == a[2] and a[3] > 0 then
    redis.call('EXPIRE', KEYS[a[1]], a[3])
  end
end
if r then
  local holds = {}
  for _, c in ipairs(plan.c) do
    local amount = c[4] + ((c[5] == 1) and grant or 0)
    if amount > 0 then
      redis.call('HINCRBY', H, c[6], amount)
      table.insert(holds, {c[6], amount})
    end
  end
  redis.call('HSET', V, r[1], cjson.encode(holds))
  redis.call('ZADD', X, r[2], r[1])
  for _, k in ipairs({H, X, V}) do
    if redis.call('TTL', k) < r[5] then redis.call('EXPIRE', k, r[5]) end
  end
end
local result = {0, grant}
for i, c in ipairs(plan.c) do
  table.insert(result, tonumber(redis.call('GET', KEYS[c[1]]) or '0') + tonumber(redis.call('HGET', H, c[6]) or '0'))
end
return result
"#;

pub struct RedisBackend {
    conn: ConnectionManager,
    prefix: String,
    changes: broadcast::Sender<Change>,
    commit_script: Script,
    check_script: Script,
    linked_script: Script,
    subscriber: JoinHandle<()>,
}

impl RedisBackend {
    /// Connects, and subscribes to the change feed before returning so no
    /// change committed after this call is missed.
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<RedisBackend> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        let (changes, _) = broadcast::channel(4096);
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = tokio::spawn(run_subscriber(
            client,
            format!("{prefix}:changes"),
            changes.clone(),
            ready_tx,
        ));
        match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(StoreError::Unavailable(format!("redis subscribe: {e}"))),
            _ => return Err(StoreError::Unavailable("redis subscribe timed out".into())),
        }
        Ok(RedisBackend {
            conn,
            prefix: prefix.to_owned(),
            changes,
            commit_script: Script::new(COMMIT_SCRIPT),
            check_script: Script::new(CHECK_AND_ADD_SCRIPT),
            linked_script: Script::new(GET_LINKED_SCRIPT),
            subscriber,
        })
    }

    fn record_key(&self, key: &str) -> String {
        format!("{}:{{r}}:{key}", self.prefix)
    }

    fn collection_key(&self, collection: &str) -> String {
        format!("{}:{{r}}:z:{collection}", self.prefix)
    }

    fn counter_key(&self, key: &CounterKey) -> String {
        format!("{}:u:{{{}}}:{}", self.prefix, key.shard, key.name)
    }

    /// The shard's held amounts, reservation expiries and reservation holds,
    /// in the shard's slot.
    fn reservation_keys(&self, shard: &str) -> [String; 3] {
        ["h", "x", "v"].map(|kind| format!("{}:{kind}:{{{shard}}}", self.prefix))
    }

    fn adds_plan(&self, script: &mut ScriptArgs, adds: &[CounterAdd]) -> Vec<serde_json::Value> {
        adds.iter()
            .filter(|a| a.by > 0)
            .map(|a| {
                serde_json::json!([
                    script.key(self.counter_key(&a.key)),
                    a.by.min(MAX_EXACT_COUNT),
                    a.ttl_secs.unwrap_or(0)
                ])
            })
            .collect()
    }

    async fn run_check_script(&self, script: &ScriptArgs, plan: &serde_json::Value) -> StoreResult<Vec<u64>> {
        let mut invocation = self.check_script.prepare_invoke();
        for key in &script.keys {
            invocation.key(key);
        }
        invocation.arg(plan.to_string());
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(unavailable)
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
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            for key in keys {
                let _: () = conn.del(key).await.map_err(unavailable)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Keeps one pub/sub connection subscribed, reconnecting forever; after a
/// reconnect subscribers get `Resync` since events may have been missed.
async fn run_subscriber(
    client: redis::Client,
    channel: String,
    changes: broadcast::Sender<Change>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Ok(()));
                    }
                    None => {
                        let _ = changes.send(Change::Resync);
                    }
                }
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    match serde_json::from_slice::<Change>(message.get_payload_bytes()) {
                        Ok(change) => {
                            let _ = changes.send(change);
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable change event; resyncing"),
                    }
                }
                tracing::warn!("redis change feed disconnected; reconnecting");
                let _ = changes.send(Change::Resync);
            }
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
                tracing::warn!(error = %e, "redis change feed: reconnect failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
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
        let mut conn = self.conn.clone();
        conn.get(self.record_key(key)).await.map_err(unavailable)
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let full: Vec<String> = keys.iter().map(|k| self.record_key(k)).collect();
        redis::cmd("MGET")
            .arg(full)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get_linked(&self, key: &str, links: &[Link]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let plan: Vec<_> = links.iter().map(|l| serde_json::json!([l.from, l.template])).collect();
        let mut conn = self.conn.clone();
        self.linked_script
            .key(self.record_key(key))
            .arg(serde_json::Value::Array(plan).to_string())
            .arg(self.record_key(""))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn members(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> StoreResult<Vec<String>> {
        let mut conn = self.conn.clone();
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
        cmd.query_async(&mut conn).await.map_err(unavailable)
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
        let mut conn = self.conn.clone();
        let failed: usize = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if failed == 0 {
            Ok(())
        } else {
            Err(ConditionFailed(failed - 1))
        })
    }

    async fn add_counters(&self, adds: &[CounterAdd]) -> StoreResult<()> {
        if adds.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for add in adds.iter().filter(|a| a.by > 0) {
            let key = self.counter_key(&add.key);
            pipe.cmd("INCRBY").arg(&key).arg(add.by).ignore();
            if let Some(ttl) = add.ttl_secs {
                pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
            }
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
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
        let checks_plan: Vec<_> = checks
            .iter()
            .map(|c| {
                serde_json::json!([
                    script.key(self.counter_key(&c.key)),
                    c.max.min(MAX_EXACT_COUNT),
                    c.add.min(MAX_EXACT_COUNT),
                    c.hold.min(MAX_EXACT_COUNT),
                    u8::from(c.takes_grant),
                    c.key.name,
                ])
            })
            .collect();
        let adds_plan = self.adds_plan(&mut script, adds);
        let mut plan = serde_json::json!({
            "c": checks_plan, "a": adds_plan, "h": held, "x": expiries, "v": holds, "now": now,
        });
        if let Some(r) = reservation {
            plan["r"] = serde_json::json!([
                r.id,
                r.expires_at,
                r.grant.max.min(MAX_EXACT_COUNT),
                r.grant.min.min(MAX_EXACT_COUNT),
                (r.expires_at - now).max(1) + RESERVATION_KEEP_SECS,
            ]);
        }
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

    async fn settle(&self, shard: &str, reservation_id: &str, adds: &[CounterAdd], now: i64) -> StoreResult<()> {
        let mut script = ScriptArgs::default();
        let [held, expiries, holds] = self.reservation_keys(shard).map(|key| script.key(key));
        let adds_plan = self.adds_plan(&mut script, adds);
        let plan = serde_json::json!({
            "c": [], "a": adds_plan, "h": held, "x": expiries, "v": holds, "now": now, "settle": reservation_id,
        });
        self.run_check_script(&script, &plan).await.map(drop)
    }

    async fn read_counters(&self, keys: &[CounterKey]) -> StoreResult<Vec<u64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One GET each in a pipeline: the keys may live in different slots.
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(self.counter_key(key));
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<u64>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn put_ephemeral(&self, key: &str, value: Vec<u8>, ttl_secs: u64) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        conn.set_ex(self.ephemeral_key(key), value, ttl_secs.max(1))
            .await
            .map_err(unavailable)
    }

    async fn get_ephemeral(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        conn.get(self.ephemeral_key(key)).await.map_err(unavailable)
    }

    async fn delete_ephemeral(&self, key: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        conn.del(self.ephemeral_key(key)).await.map_err(unavailable)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every command is acknowledged by Redis before it returns; Redis's
        // own persistence (AOF) decides durability.
        Ok(())
    }
}

/// The cluster slot of a key, as Redis computes it (for tests that prove
/// the layout keeps atomic writes in one slot).
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::hash_tag;

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(hash_tag("maas:{r}:product:x"), "r");
        assert_eq!(hash_tag("maas:u:{app_1}:hits:m:60"), "app_1");
        assert_eq!(hash_tag("maas:{}:x"), "maas:{}:x");
        assert_eq!(hash_tag("plain"), "plain");
    }
}
