//! Lua scripts, one per change kind. Each touches the keys of one user only (one slot), so it
//! runs atomically on the node that owns them. They are called by SHA (`EVALSHA`) and loaded
//! into a node the first time it does not know one (after a restart or a failover).

use std::sync::LazyLock;

use fred::types::scripts::Script;

/// A script's source and its SHA1, the name `EVALSHA` calls it by.
pub struct LuaScript(Script);

impl LuaScript {
    fn new(source: &str) -> Self {
        Self(Script::from_lua(source.to_owned()))
    }

    /// The script as fred runs it (`evalsha_with_reload`: `EVALSHA`, and on `NOSCRIPT` a
    /// `SCRIPT LOAD` on every primary and `EVALSHA` again).
    pub fn script(&self) -> &Script {
        &self.0
    }

    pub fn sha1(&self) -> &str {
        self.0.sha1()
    }

    pub fn source(&self) -> &str {
        self.0.lua().map_or("", |lua| &**lua)
    }

    /// A timeline script: [`PRELUDE`] and then `body`.
    fn timeline(body: &str) -> Self {
        Self::new(&format!("{PRELUDE}{body}"))
    }
}

/// What every timeline script shares: the four keys of one author (`KEYS[1..4]`: `tl`, `posts`,
/// `meta`, `del`), how post ids compare, the floor, the self-check and the common tail that
/// trims, writes the meta and renews the expiry of the four keys together.
///
/// The invariants the scripts keep for a loaded author (see `docs/cache.md`):
/// - `posts` holds the body of every entry of `tl` and nothing else; `meta.count` is the size
///   of both, `meta.dels` the size of `del`. A key that went missing on its own (evicted,
///   deleted by an operator) breaks one of these equations: the next script that sees it marks
///   the author not loaded, so readers rebuild it from PostgreSQL.
/// - Above the floor (all of it while `complete`), `tl` holds exactly the author's live posts
///   and `del` the deleted ones (at most `timeline_len` of each); below it the cache holds
///   nothing and a change there is dropped: PostgreSQL answers for those posts.
/// - The four keys carry one expiry time: whenever one of them has less than half its TTL left,
///   or none (a key created since), all four get a full one, at the same instant.
const PRELUDE: &str = r#"
local TL, POSTS, META, DEL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- Post ids have up to 19 digits, more than a Lua number holds exactly: compared as strings.
local function id_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- (ms, id) lies below the floor (floor_ms, floor_id); nothing does when there is no floor.
local function below(ms, id, floor_ms, floor_id)
  if not floor_id then return false end
  if ms ~= floor_ms then return ms < floor_ms end
  return id_lt(id, floor_id)
end

local function chunked(cmd, key, list)
  for i = 1, #list, 500 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 499, #list)))
  end
end

-- Removes the members of the sorted set `key` below the floor; returns them.
local function drop_below(key, floor_ms, floor_id)
  local out = {}
  local low = redis.call('ZRANGEBYSCORE', key, '-inf', floor_ms, 'WITHSCORES')
  for i = 1, #low, 2 do
    if below(tonumber(low[i + 1]), low[i], floor_ms, floor_id) then out[#out + 1] = low[i] end
  end
  chunked('ZREM', key, out)
  return out
end

local function state()
  local m = redis.call('HMGET', META, 'gone', 'loaded', 'complete', 'count', 'dels', 'floor', 'floor_ms')
  local floor = m[6]
  if floor == '' then floor = false end
  return {
    gone = m[1] == '1', loaded = m[2] == '1', complete = m[3],
    count = tonumber(m[4] or '-1'), dels = tonumber(m[5] or '0'),
    floor = floor or nil, floor_ms = tonumber(m[7] or '0'),
  }
end

-- The keys agree with the meta's counts: none went missing on its own since a script last
-- wrote them.
local function intact(s)
  return redis.call('ZCARD', TL) == s.count and redis.call('HLEN', POSTS) == s.count
    and redis.call('ZCARD', DEL) == s.dels
end

-- Drops timeline entries without a body and bodies without an entry (what is left of a key
-- lost on its own).
local function reconcile()
  local entries = redis.call('ZRANGE', TL, 0, -1)
  local in_tl = {}
  for _, id in ipairs(entries) do in_tl[id] = true end
  local orphans = {}
  for _, id in ipairs(redis.call('HKEYS', POSTS)) do
    if not in_tl[id] then orphans[#orphans + 1] = id end
  end
  chunked('HDEL', POSTS, orphans)
  local bodiless = {}
  for _, id in ipairs(entries) do
    if redis.call('HEXISTS', POSTS, id) == 0 then bodiless[#bodiless + 1] = id end
  end
  chunked('ZREM', TL, bodiless)
end

local function renew(ttl, force)
  local keys = {TL, POSTS, META, DEL}
  if not force then
    for _, k in ipairs(keys) do
      local left = redis.call('PTTL', k)
      if left == -1 or (left >= 0 and left < ttl / 2) then force = true break end
    end
  end
  if force then
    for _, k in ipairs(keys) do redis.call('PEXPIRE', k, ttl) end
  end
end

-- Trims `tl` and `del` to `len` entries each, raising the floor past what is dropped, writes
-- the meta (marking the author not loaded when `broken`) and renews the expiry.
local function settle(s, len, ttl, broken, force_ttl)
  local card = redis.call('ZCARD', TL)
  if card > len then
    local dropped = redis.call('ZRANGE', TL, 0, card - len - 1)
    redis.call('ZREMRANGEBYRANK', TL, 0, card - len - 1)
    chunked('HDEL', POSTS, dropped)
    local low = redis.call('ZRANGE', TL, 0, 0, 'WITHSCORES')
    s.floor, s.floor_ms = low[1], tonumber(low[2])
    drop_below(DEL, s.floor_ms, s.floor)
  end
  local dels = redis.call('ZCARD', DEL)
  if dels > len then
    redis.call('ZREMRANGEBYRANK', DEL, 0, dels - len - 1)
    local low = redis.call('ZRANGE', DEL, 0, 0, 'WITHSCORES')
    local low_ms = tonumber(low[2])
    if not s.floor or below(s.floor_ms, s.floor, low_ms, low[1]) then
      s.floor, s.floor_ms = low[1], low_ms
      chunked('HDEL', POSTS, drop_below(TL, s.floor_ms, s.floor))
    end
  end
  local top = redis.call('ZRANGE', TL, -1, -1, 'WITHSCORES')
  local fields = {'count', redis.call('ZCARD', TL), 'dels', redis.call('ZCARD', DEL), 'newest_ms', top[2] or '0'}
  if s.floor then
    for _, v in ipairs({'complete', '0', 'floor', s.floor, 'floor_ms', s.floor_ms}) do fields[#fields + 1] = v end
  end
  if broken then
    fields[#fields + 1] = 'loaded'
    fields[#fields + 1] = '0'
  end
  redis.call('HSET', META, unpack(fields))
  renew(ttl, force_ttl)
end
"#;

/// KEYS: tl, posts, meta, del. ARGV: post_id, time_ms, encoded post, timeline_len, ttl_ms.
/// Returns 1 when the post was added, 0 when it was already there, deleted, below the floor, or
/// its author is gone.
const POST_CREATED_LUA: &str = r#"
local s = state()
if s.gone then return 0 end
local id, ms, len, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HEXISTS', POSTS, id) == 1 or redis.call('ZSCORE', DEL, id) then return 0 end
local broken = s.loaded and not intact(s)
if below(ms, id, s.floor_ms, s.floor) then
  if broken then redis.call('HSET', META, 'loaded', '0') end
  return 0
end
redis.call('ZADD', TL, ms, id)
redis.call('HSET', POSTS, id, ARGV[3])
settle(s, len, ttl, broken, false)
return 1
"#;

/// KEYS: tl, posts, meta, del. ARGV: post_id, time_ms, timeline_len, ttl_ms. Removes the post and
/// records it in `del` (above the floor), so that a late create of it is ignored.
const POST_DELETED_LUA: &str = r#"
local s = state()
if s.gone then return 0 end
local id, ms, len, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local broken = s.loaded and not intact(s)
local removed = redis.call('ZREM', TL, id)
redis.call('HDEL', POSTS, id)
if not below(ms, id, s.floor_ms, s.floor) then redis.call('ZADD', DEL, ms, id) end
settle(s, len, ttl, broken, false)
return removed
"#;

/// KEYS: tl, posts, meta, del, following. ARGV: ttl_ms, timeline_len. Marks a new user's (empty)
/// timeline and followee set complete; posts or follows that raced ahead of it stay. Applied
/// by the request that created the user only, never replayed (see `CacheChange::UserCreated`).
const USER_CREATED_LUA: &str = r#"
local s = state()
if s.gone then return 0 end
redis.call('HSET', META, 'loaded', '1')
if not s.complete then redis.call('HSET', META, 'complete', '1') end
settle(s, tonumber(ARGV[2]), tonumber(ARGV[1]), false, true)
redis.call('HSET', KEYS[5], '_loaded', '1')
redis.call('PEXPIRE', KEYS[5], ARGV[1])
return 1
"#;

/// KEYS: tl, posts, meta, del, following. ARGV: ttl_ms. Removes what a deleted user had and
/// leaves a `gone` marker so that nothing is written for them again.
const USER_DELETED_LUA: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[3])
redis.call('HSET', KEYS[3], 'gone', '1', 'loaded', '1', 'complete', '1', 'newest_ms', '0', 'count', '0', 'dels', '0')
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
"#;

/// KEYS: following. ARGV: followee_id, version, state (1 follow, 0 unfollow), ttl_ms. Keeps the
/// highest version per edge: negative versions record an unfollow. A version at or below the
/// set's `_since` (what its last rebuild covered) is older than the snapshot: ignored.
const FOLLOW_EDGE_LUA: &str = r#"
local version = tonumber(ARGV[2])
-- A rebuild already holds every change of this follower up to `_since`.
if version <= tonumber(redis.call('HGET', KEYS[1], '_since') or '0') then return 0 end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and math.abs(tonumber(cur)) >= version then return 0 end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], version)
else
  redis.call('HSET', KEYS[1], ARGV[1], -version)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

pub static POST_CREATED: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::timeline(POST_CREATED_LUA));

pub static POST_DELETED: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::timeline(POST_DELETED_LUA));

pub static USER_CREATED: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::timeline(USER_CREATED_LUA));

pub static USER_DELETED: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::timeline(USER_DELETED_LUA));

pub static FOLLOW_EDGE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(FOLLOW_EDGE_LUA));

/// KEYS: tl, posts, meta, del. ARGV: ttl_ms. The first half of a rebuild, run before the
/// PostgreSQL snapshot is taken: drops what is left of a key lost on its own (see `reconcile`),
/// makes `count` and `dels` true again and, unless the keys were intact, marks the author not
/// loaded. From here on any key lost before [`AUTHOR_REBUILD_LUA`] runs breaks the equations
/// again, and every write in between is either in the snapshot or in the keys.
const AUTHOR_PREPARE_LUA: &str = r#"
local s = state()
if s.gone then return 0 end
local intact_before = s.loaded and intact(s)
reconcile()
local fields = {'count', redis.call('ZCARD', TL), 'dels', redis.call('ZCARD', DEL)}
if not intact_before then
  fields[#fields + 1] = 'loaded'
  fields[#fields + 1] = '0'
end
redis.call('HSET', META, unpack(fields))
renew(tonumber(ARGV[1]), false)
return 1
"#;

/// KEYS: tl, posts, meta, del, lease. ARGV: ttl_ms, timeline_len, lease token, floor post id
/// (empty when the snapshot holds every live post), floor time_ms, n, then n (post_id, time_ms,
/// encoded post) triples of live posts and (post_id, time_ms) pairs of deleted ones, from a
/// PostgreSQL snapshot taken after [`AUTHOR_PREPARE_LUA`].
///
/// Merges rather than replaces: what a write put there since the snapshot was taken (a newer
/// post, a deletion) wins, so a rebuild racing writes never loses one; a deletion in the
/// snapshot wins over a cached body (deletes are final). Every live post of the snapshot goes
/// back into `tl`, whatever was left of the keys. The author is marked loaded only if the keys
/// are still as the prepare step and the writes since left them (`intact`): a key lost in
/// between may have held a write the snapshot does not have, so the next read rebuilds again.
/// Then releases the lease if it still holds it.
const AUTHOR_REBUILD_LUA: &str = r#"
local s = state()
if not s.gone then
  local ttl, len, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6])
  local untouched = intact(s)
  local first_deleted = 7 + 3 * n
  for i = 7, first_deleted - 1, 3 do
    if not redis.call('ZSCORE', DEL, ARGV[i]) then
      redis.call('ZADD', TL, ARGV[i + 1], ARGV[i])
      redis.call('HSET', POSTS, ARGV[i], ARGV[i + 2])
    end
  end
  for i = first_deleted, #ARGV, 2 do
    redis.call('ZREM', TL, ARGV[i])
    redis.call('HDEL', POSTS, ARGV[i])
    redis.call('ZADD', DEL, ARGV[i + 1], ARGV[i])
  end
  reconcile()
  s.floor, s.floor_ms = nil, nil
  if ARGV[4] ~= '' then
    s.floor, s.floor_ms = ARGV[4], tonumber(ARGV[5])
    chunked('HDEL', POSTS, drop_below(TL, s.floor_ms, s.floor))
    drop_below(DEL, s.floor_ms, s.floor)
    redis.call('HSET', META, 'complete', '0')
  else
    redis.call('HSET', META, 'complete', '1')
    redis.call('HDEL', META, 'floor', 'floor_ms')
  end
  redis.call('HSET', META, 'loaded', untouched and '1' or '0')
  settle(s, len, ttl, false, true)
end
if redis.call('GET', KEYS[5]) == ARGV[3] then redis.call('DEL', KEYS[5]) end
return 1
"#;

/// KEYS: following. ARGV: ttl_ms, lease token. The first half of a followee-set rebuild, run
/// before the PostgreSQL snapshot: marks the set with the token, so that the second half can
/// tell whether the set was lost in between (with a follow the snapshot may not have).
const FOLLOWING_PREPARE_LUA: &str = r#"
redis.call('HSET', KEYS[1], '_rebuild', ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"#;

/// KEYS: following, lease. ARGV: ttl_ms, lease token, since, then followee ids from a
/// PostgreSQL snapshot that holds every change of the follower with a version up to `since`
/// (taken under the follower's row lock). Edges recorded at or below `since` are replaced by the
/// snapshot (an older replayed change can no longer contradict it); newer ones stay. Snapshot
/// edges get version 0, and `_since` makes the script ignore every later change at or below it.
/// The set is marked complete only if it still carries the mark of [`FOLLOWING_PREPARE_LUA`]:
/// a set lost in between may have held a follow the snapshot does not have.
const FOLLOWING_REBUILD_LUA: &str = r#"
local since = tonumber(ARGV[3])
local set = redis.call('HGETALL', KEYS[1])
for i = 1, #set, 2 do
  local field = set[i]
  if string.sub(field, 1, 1) ~= '_' and math.abs(tonumber(set[i + 1])) <= since then
    redis.call('HDEL', KEYS[1], field)
  end
end
for i = 4, #ARGV do redis.call('HSETNX', KEYS[1], ARGV[i], '0') end
if since > tonumber(redis.call('HGET', KEYS[1], '_since') or '0') then
  redis.call('HSET', KEYS[1], '_since', ARGV[3])
end
if redis.call('HGET', KEYS[1], '_rebuild') == ARGV[2] then
  redis.call('HSET', KEYS[1], '_loaded', '1')
end
redis.call('HDEL', KEYS[1], '_rebuild')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"#;

pub static AUTHOR_REBUILD: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::timeline(AUTHOR_REBUILD_LUA));

pub static AUTHOR_PREPARE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::timeline(AUTHOR_PREPARE_LUA));

pub static FOLLOWING_PREPARE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(FOLLOWING_PREPARE_LUA));

pub static FOLLOWING_REBUILD: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(FOLLOWING_REBUILD_LUA));
