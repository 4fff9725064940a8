//! The Lua scripts of the Redis backend: each runs atomically in one slot.

pub(super) const COMMIT_SCRIPT: &str = r#"
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
pub(super) const GET_LINKED_SCRIPT: &str = r#"
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

/// Mirrors [`decide`](crate::limits::decide). KEYS: the counters, then the
/// shard's held amounts (hash), reservation expiries (sorted set) and
/// reservation holds (hash). `plan.c`: checks `[key, max, add, hold,
/// grant rate, field]`; `plan.a`: adds `[key, by, ttl]`; `plan.h`, `x`, `v`:
/// the indexes of the three reservation keys; `plan.now`; `plan.r`: the
/// reservation `[id, expires_at, grant_max, grant_min, keep_secs]` or absent;
/// `plan.settle`: a reservation to release first.
pub(super) const CHECK_AND_ADD_SCRIPT: &str = r#"
local plan = cjson.decode(ARGV[1])
local H, X, V = KEYS[plan.h], KEYS[plan.x], KEYS[plan.v]
local function release(id)
  local holds = redis.call('HGET', V, id)
  if holds then
    for _, h in ipairs(cjson.decode(holds)) do
      if redis.call('HINCRBY', H, h[1], string.format('%.0f', -tonumber(h[2]))) <= 0 then redis.call('HDEL', H, h[1]) end
    end
    redis.call('HDEL', V, id)
  end
  redis.call('ZREM', X, id)
end
if plan.settle then
  if plan.only_held and redis.call('HEXISTS', V, plan.settle) == 0 then return {2} end
  release(plan.settle)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', plan.now)) do release(id) end
local r = plan.r
local grant = r and r[3] or 0
local tightest, tightest_used = nil, 0
local used = {}
for i, c in ipairs(plan.c) do
  local u = tonumber(redis.call('GET', KEYS[c[1]]) or '0') + tonumber(redis.call('HGET', H, c[6]) or '0')
  used[i] = u
  local hold = r and c[4] or 0
  local rate = r and c[5] or 0
  local need = c[3] + hold
  if rate == 0 then
    if need == 0 then
      if u >= c[2] then return {i, u} end
    elseif u + need > c[2] then return {i, u} end
  else
    if u + need > c[2] then return {i, u} end
    local room = math.floor((c[2] - u - need) / rate)
    if tightest == nil or room < grant then
      if room < grant then grant = room end
      tightest, tightest_used = i, u
    end
  end
end
if r and tightest and grant < r[4] then return {tightest, tightest_used} end
if not tightest then grant = 0 end
for _, a in ipairs(plan.a) do
  if redis.call('INCRBY', KEYS[a[1]], string.format('%.0f', a[2])) == a[2] and a[3] > 0 then
    redis.call('EXPIRE', KEYS[a[1]], a[3])
  end
end
if r then
  local holds = {}
  for _, c in ipairs(plan.c) do
    local amount = c[4] + c[5] * grant
    if amount > 0 then
      -- '%.0f' writes every integer below 2^53 exactly (a bare number
      -- would go as 14 significant digits).
      local text = string.format('%.0f', amount)
      redis.call('HINCRBY', H, c[6], text)
      table.insert(holds, {c[6], text})
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

/// `add_counters_once`: KEYS[1] the shard's writer marks (hash writer →
/// last batch applied), the others counters; ARGV: writer, batch, the adds
/// `[[key index, by, ttl]]` (JSON), how long the marks are kept.
pub(super) const ADD_ONCE_SCRIPT: &str = r#"
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last then return 0 end
for _, a in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('INCRBY', KEYS[a[1]], string.format('%.0f', a[2])) == a[2] and a[3] > 0 then
    redis.call('EXPIRE', KEYS[a[1]], a[3])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"#;
