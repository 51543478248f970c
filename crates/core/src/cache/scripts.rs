//! Lua scripts, one per change kind. Each touches the keys of one user only (one slot), so it
//! runs atomically on the node that owns them. They are called by SHA (`EVALSHA`) and loaded
//! into a node the first time it does not know one (after a restart or a failover).

use std::sync::LazyLock;

/// A script's source and its SHA1, the name `EVALSHA` calls it by.
pub struct LuaScript {
    pub source: &'static str,
    pub sha1: String,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        let sha1 = fred::types::scripts::Script::from_lua(source)
            .sha1()
            .to_string();
        Self { source, sha1 }
    }
}

/// KEYS: timeline, posts, meta. ARGV: post_id, time_ms, encoded post, timeline_len, ttl_ms.
/// Returns 1 when the post was added, 0 when it was already there, deleted, too old for a full
/// timeline, or its author is gone.
///
/// The hottest script of the write path, kept to few writes (each one is replicated): one
/// `HSET` of the meta fields that changed, one `HDEL` for the posts trimmed off the timeline,
/// and the keys' TTL renewed only once less than half of it is left (the reads that decide
/// this are not replicated).
const POST_CREATED_LUA: &str = r#"
if redis.call('HGET', KEYS[3], 'gone') == '1' then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local len = tonumber(ARGV[4])
local score = tonumber(ARGV[2])
local card = redis.call('ZCARD', KEYS[1])
if card >= len then
  local lowest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if lowest[2] and score < tonumber(lowest[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
card = card + 1
local meta = {}
if card > len then
  local dropped = redis.call('ZRANGE', KEYS[1], 0, card - len - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, card - len - 1)
  redis.call('HDEL', KEYS[2], unpack(dropped))
  card = len
  -- Older posts now live only in PostgreSQL.
  if redis.call('HGET', KEYS[3], 'complete') ~= '0' then
    meta[#meta + 1] = 'complete'
    meta[#meta + 1] = '0'
  end
end
local newest = tonumber(redis.call('HGET', KEYS[3], 'newest_ms') or '0')
if score > newest then
  meta[#meta + 1] = 'newest_ms'
  meta[#meta + 1] = ARGV[2]
end
meta[#meta + 1] = 'count'
meta[#meta + 1] = card
redis.call('HSET', KEYS[3], unpack(meta))
local ttl = tonumber(ARGV[5])
for i = 1, 3 do
  if redis.call('PTTL', KEYS[i]) < ttl / 2 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"#;

/// KEYS: timeline, posts, meta. ARGV: post_id, ttl_ms. Leaves a tombstone so that a late create
/// of the same post is ignored.
const POST_DELETED_LUA: &str = r#"
if redis.call('HGET', KEYS[3], 'gone') == '1' then return 0 end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], '~')
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('HSET', KEYS[3], 'newest_ms', top[2] or '0', 'count', redis.call('ZCARD', KEYS[1]))
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return removed
"#;

/// KEYS: timeline, posts, meta, following. ARGV: ttl_ms. Marks a new user's (empty) timeline and
/// followee set complete; posts or follows that raced ahead of it stay.
const USER_CREATED_LUA: &str = r#"
if redis.call('HGET', KEYS[3], 'gone') == '1' then return 0 end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('HSET', KEYS[3], 'loaded', '1', 'newest_ms', top[2] or '0', 'count', redis.call('ZCARD', KEYS[1]))
if not redis.call('HGET', KEYS[3], 'complete') then redis.call('HSET', KEYS[3], 'complete', '1') end
redis.call('HSET', KEYS[4], '_loaded', '1')
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
"#;

/// KEYS: timeline, posts, meta, following. ARGV: ttl_ms. Removes what a deleted user had and
/// leaves a `gone` marker so that nothing is written for them again.
const USER_DELETED_LUA: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'gone', '1', 'loaded', '1', 'complete', '1', 'newest_ms', '0', 'count', '0')
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
"#;

/// KEYS: following. ARGV: followee_id, version, state (1 follow, 0 unfollow), ttl_ms. Keeps the
/// highest version per edge: negative versions record an unfollow.
const FOLLOW_EDGE_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version = tonumber(ARGV[2])
if cur and math.abs(tonumber(cur)) >= version then return 0 end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], version)
else
  redis.call('HSET', KEYS[1], ARGV[1], -version)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

pub static POST_CREATED: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(POST_CREATED_LUA));

pub static POST_DELETED: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(POST_DELETED_LUA));

pub static USER_CREATED: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(USER_CREATED_LUA));

pub static USER_DELETED: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(USER_DELETED_LUA));

pub static FOLLOW_EDGE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(FOLLOW_EDGE_LUA));

/// KEYS: timeline, posts, meta, lease. ARGV: ttl_ms, timeline_len, complete (1 when the snapshot
/// holds every live post), lease token, then (post_id, time_ms, encoded post or `~`) triples from
/// a PostgreSQL snapshot. Merges rather than replaces: whatever a write put there since the
/// snapshot was taken (a newer post, a tombstone) wins, so a rebuild racing writes never loses
/// one; a tombstone in the snapshot wins over a cached body (deletes are final). Then marks the timeline loaded and releases the lease if it still holds it.
const AUTHOR_REBUILD_LUA: &str = r#"
if redis.call('HGET', KEYS[3], 'gone') ~= '1' then
  for i = 5, #ARGV, 3 do
    local id, score, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call('HEXISTS', KEYS[2], id) == 0 then
      redis.call('HSET', KEYS[2], id, value)
      if value ~= '~' then redis.call('ZADD', KEYS[1], score, id) end
    elseif value == '~' then
      -- A deletion is final: it wins over a body written before it.
      redis.call('HSET', KEYS[2], id, '~')
      redis.call('ZREM', KEYS[1], id)
    end
  end
  local len = tonumber(ARGV[2])
  local card = redis.call('ZCARD', KEYS[1])
  local complete = ARGV[3]
  if card > len then
    local dropped = redis.call('ZRANGE', KEYS[1], 0, card - len - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, card - len - 1)
    for _, id in ipairs(dropped) do redis.call('HDEL', KEYS[2], id) end
    card = len
    complete = '0'
  end
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('HSET', KEYS[3], 'loaded', '1', 'complete', complete, 'newest_ms', top[2] or '0', 'count', card)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
return 1
"#;

/// KEYS: following, lease. ARGV: ttl_ms, lease token, then followee ids from a PostgreSQL
/// snapshot. An edge from the snapshot gets version 0, which any real follow or unfollow
/// (versions start at 1) overrides; edges already present are left alone.
const FOLLOWING_REBUILD_LUA: &str = r#"
for i = 3, #ARGV do redis.call('HSETNX', KEYS[1], ARGV[i], '0') end
redis.call('HSET', KEYS[1], '_loaded', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"#;

pub static AUTHOR_REBUILD: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(AUTHOR_REBUILD_LUA));

pub static FOLLOWING_REBUILD: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(FOLLOWING_REBUILD_LUA));
