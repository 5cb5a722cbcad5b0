//! The Redis backend: swarms in a Redis server that several tracker instances share
//! (`store.backend = "redis"`, `store.redis_url`).
//!
//! # Key layout
//!
//! Keys start with `bs:`; `H` is an info-hash's 20 raw bytes, an address is a peer's compact
//! form (4 or 16 bytes of IP, then the port, big-endian: 6 or 18 bytes); numbers in values are
//! big-endian `u32`s.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `bs:p:H` | hash | address → 29 bytes: a flag (leecher or seeder, `completed` counted or not), the address's place in its list, the Redis time (s) of its last announce, the peer id; `m` → 36 bytes: the second of the swarm's last `bs:swarms` update, its downloads, the lengths of its four lists, `x` (the last second at which none of its peers can be stale) and the cursor and least peer time of a prune under way |
//! | `bs:L4:H`, `bs:S4:H`, `bs:L6:H`, `bs:S6:H` | string | the same peers' addresses end to end, leechers and seeders apart, in no order: what replies are cut from |
//! | `bs:swarms` | sorted set | every swarm: member H, score the time of its last announce |
//! | `bs:totals` | hash | `s`, `l`, `d`: seeders, leechers and downloads over every swarm |
//!
//! A list is a string written with `SETRANGE`, which never shortens one: a removal moves the
//! last entry into the freed place. When a removal leaves a power of two of entries (of 256
//! bytes at least) and the string is 512 bytes or more longer than they are, it is cut to them
//! (a `GETRANGE` and a `SET`; the `STRLEN` that tells is paid on those removals only, never on
//! a plain announce). So a swarm that had 10,000 peers and has 10 no longer keeps 60 KB a list:
//! a list's string is at most twice its entries plus 511 bytes, or under 1 KB. Replies read
//! a list only as far as its count.
//!
//! A peer costs its address twice (a field, a list entry) and its 29-byte entry: 88 bytes of
//! Redis memory a peer in swarms of 1,000 (the bench measures it, `INFO memory` over the
//! peers stored; 190 with the sorted set of times per swarm this layout had until
//! 2026-12-07). A swarm of an earlier layout (a hash without `m`) is dropped on its first
//! announce or scrape, and its peers come back as they announce again.
//!
//! # Expiry, by Redis's own clock
//!
//! Every call reads the time with `TIME` on the Redis server, so instances with skewed clocks
//! agree. A peer whose time is older than the peer timeout is stale. Until its `x` the list
//! lengths are a swarm's counts. The first announce or scrape of the swarm after it prunes the
//! swarm: an `HSCAN` of its hash (1,024 fields a step; a bigger swarm goes on at its next
//! announces) drops the stale peers from the hash and the lists, and sets `x` to the oldest
//! peer left's time plus the timeout, but at least `SLACK` on (min(60 s, timeout / 16)), so that
//! peers expiring one by one are dropped together rather than each with a scan of the swarm.
//! A stale peer can so be handed out and counted up to `SLACK` seconds past the timeout (and,
//! in a swarm of more than 1,024 peers, until the scan reaches it), as the in-memory store's
//! peers are until its cleaner's next tick. The first prune step also drops up to 2 swarms of
//! `bs:swarms` idle past the timeout, with their keys; each instance's cleaner tick drops idle
//! swarms the same way (nothing scans the live swarms; several instances doing it is
//! harmless). Until 2026-12-07 each peer's time was also a score in a sorted set per swarm:
//! its `ZADD` on every announce cost Redis more (4-6 us, memory-bound) than the whole rest of
//! an announce's commands. Keys have no TTL: a key that vanished by itself would leave
//! `bs:totals` counting its peers.
//!
//! # Round trips
//!
//! Requests go to Redis in batches, each one call of a Lua function (atomic in Redis) that
//! runs the batch's announces and scrapes in order and returns a reply string for each:
//! `FCALL` of a function library loaded with `FUNCTION LOAD` (Redis 7), or `EVALSHA` of a
//! script on a Redis without functions (see [`Lua`]). An announce's reply is its counts and
//! the lengths of the swarm's lists; its peers are read right after, in a second round trip
//! of plain `GETRANGE`s (see [`crate::redis_peers`], and a third, of `HMGET`s, for a reply
//! with peer ids). The UDP workers send the requests of
//! one receive batch (up to 64 with this store) as one batch, over a blocking connection of
//! a pool (no hand-over to the store's thread); HTTP announces go to a batcher task that
//! sends whatever queued while the batches in flight (2 at most) were answered, up to 64. An
//! announce of a known peer is one `HMGET` (its entry and the swarm's `m`) and one `HSET` (its
//! time) in the function, then one or two `GETRANGE`s of the lists (the reply's peers, from a
//! random place on, wrapping around); totals are added up in the function and written once per batch. A Redis
//! that lost the code (restarted without its data) gets it again and the batch is sent again:
//! announces are idempotent (a `completed` is counted once per peer). The async round trips
//! are made from the store's own runtime thread, where the connection's task lives.
//!
//! # When Redis is down
//!
//! The async connection is a [`redis::aio::ConnectionManager`]: it reconnects by itself, in
//! the background. A UDP worker never makes a connection: it takes one from a pool that the
//! store's runtime fills in the background, one connection at a time (one at start, made
//! before the start-up line says Redis answers, then one whenever the pool is emptied, so
//! that a spare waits), not within 100 ms of a failed attempt. A connection that failed is
//! dropped; a worker that finds the pool empty fails its batch at once. An address that does
//! not answer at all (packets dropped) holds an attempt up to the connect timeout (1 s): until
//! 2026-12-07 the worker itself waited on it, every 100 ms, and answered next to nothing, not
//! even errors. Meanwhile requests fail at once (no connection, connection refused) and the
//! service answers them with a failure reason (HTTP) or an error packet (UDP). A Redis that
//! stops answering on connections already made (paused, busy, or behind a link that drops
//! packets) fails the round trips under way after the response timeout (2 s); the first such
//! timeout marks it as not answering, and from then on every request fails at once until a
//! `PING`, sent every 100 ms, is answered again: on the async connection, or, when that one
//! times out, on a new one, which then replaces it (a connection that died without a word, as
//! when a NAT forgot it, timed out on every request until TCP gave up, some 15 minutes: the
//! connection manager reconnects on an error, not on a timeout). The tracker starts even when
//! Redis is not there yet.
//!
//! Limits: one Redis server (or a primary with replicas), not Redis Cluster (the scripts touch
//! keys of other swarms); `maxmemory-policy` must be `noeviction` (an evicted key would leave
//! `bs:totals` wrong).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bitswarm_tracker_proto::InfoHash;
use redis::ConnectionLike as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Value};

use crate::backend::{Job, Op, Snapshot, StoreError};
use crate::redis_peers::{Answer, Head, Reads, Want};
use crate::store::{Announce, Outcome, PeerSink, SwarmCounts, SwarmInfo, Totals};

const PREFIX: &str = "bs:";
/// Idle swarms the cleaner drops per script.
const GC_BATCH: u32 = 1000;
/// Swarms read per round trip for the stats page and a full scrape.
const CHUNK: isize = 500;

/// Functions the scripts share. Totals are changed in the script's own table and written once
/// at its end (`flush_totals`); numbers go to Redis as integer strings (`I`), not through
/// Lua's float formatting.
const PRELUDE: &str = r#"
local BIG = 4294967296
local function I(x) return string.format('%d', x) end
-- Numbers go to redis.call as strings made here (a number there is formatted with `%.17g`,
-- about 0.6 us each); those of list offsets are kept once made (a function library's locals
-- outlive a call), up to 32,768.
local DEC = {}
local function D(x)
  local s = DEC[x]
  if not s then
    s = string.format('%d', x)
    if x >= 0 and x < 32768 then DEC[x] = s end
  end
  return s
end
-- A swarm's field `m`: the second of its last `bs:swarms` update, downloads, the lengths of
-- its four lists (seeders and leechers, IPv4 then IPv6), the last second at which none of its
-- peers can be stale, and the cursor and least peer time of a prune under way.
local MF = '>I4I4I4I4I4I4I4I4I4'
local function meta(m)
  local t, d, s4, l4, s6, l6, x, k, o = struct.unpack(MF, m)
  return t, d, {s4, l4, s6, l6}, x, k, o
end
local function pack_meta(t, d, c, x, k, o)
  return struct.pack(MF, t, d, c[1], c[2], c[3], c[4], x, k, o)
end
local LK = {'S4:', 'L4:', 'S6:', 'L6:'}
local pend, base = {0, 0, 0}, nil
-- Every entry point starts with this: a function library's locals outlive a call (and one
-- that failed half-way may have left totals pending).
local function begin()
  pend, base = {0, 0, 0}, nil
end
local function add_totals(tot, s, l, d)
  pend[1], pend[2], pend[3] = pend[1] + s, pend[2] + l, pend[3] + d
end
-- Peers over every swarm, as this script has left them so far.
local function total_peers(tot)
  if not base then
    local t = redis.call('HMGET', tot, 's', 'l')
    base = tonumber(t[1] or 0) + tonumber(t[2] or 0)
  end
  return base + pend[1] + pend[2]
end
local function flush_totals(tot)
  if pend[1] ~= 0 then redis.call('HINCRBY', tot, 's', I(pend[1])) end
  if pend[2] ~= 0 then redis.call('HINCRBY', tot, 'l', I(pend[2])) end
  if pend[3] ~= 0 then redis.call('HINCRBY', tot, 'd', I(pend[3])) end
  pend, base = {0, 0, 0}, nil
end
-- Deletes swarm h (not its entry in the swarm index); returns its peers. A swarm of an
-- earlier layout (no `m`) is counted from its sorted sets.
local function drop_swarm(prefix, h, tot)
  local p, z4, z6 = prefix .. 'p:' .. h, prefix .. '4:' .. h, prefix .. '6:' .. h
  local m = redis.call('HGET', p, 'm')
  local s, n, d
  if m then
    local _, dd, c = meta(m)
    s, n, d = c[1] + c[3], c[1] + c[2] + c[3] + c[4], dd
  else
    s = redis.call('ZCOUNT', z4, I(BIG), '+inf') + redis.call('ZCOUNT', z6, I(BIG), '+inf')
    n = redis.call('ZCARD', z4) + redis.call('ZCARD', z6)
    d = tonumber(redis.call('HGET', p, 'd') or 0)
  end
  redis.call('DEL', p, z4, z6, prefix .. 'S4:' .. h, prefix .. 'L4:' .. h, prefix .. 'S6:' .. h, prefix .. 'L6:' .. h)
  add_totals(tot, -s, s - n, -d)
  return n
end
-- Drops up to limit swarms idle since before cutoff; returns the peers and swarms dropped.
local function gc(prefix, sw, tot, cutoff, limit)
  local dead = redis.call('ZRANGEBYSCORE', sw, '-inf', '(' .. I(cutoff), 'LIMIT', 0, limit)
  local peers = 0
  for _, h in ipairs(dead) do
    peers = peers + drop_swarm(prefix, h, tot)
  end
  if #dead > 0 then redis.call('ZREM', sw, unpack(dead)) end
  return peers, #dead
end
local function clock(timeout, skew)
  local now = tonumber(redis.call('TIME')[1]) + tonumber(skew)
  return now, now - tonumber(timeout)
end
"#;

/// A batch of announces and scrapes, in order, in one call. KEYS: swarms, totals. ARGV: prefix,
/// timeout, skew, most peers per swarm, most peers in all, then a job each (see
/// `pack_announce` and `pack_scrape`). Returns a reply per job: for an announce seeders,
/// leechers, downloaded, outcome (0 ok, 1 full) and the lengths of the swarm's four lists
/// ([`crate::redis_peers::HEAD`]); for a scrape seeders, leechers and downloaded of each
/// swarm; for anything else an empty string.
///
/// The swarm's hash `bs:p:H` also holds `s4`, `l4`, `s6`, `l6` (the seeders and leechers in
/// `bs:4:H` and `bs:6:H`, stale ones included), `t`, the second of its last `bs:swarms`
/// update, and `x`, the last second at which none of its peers can be stale: until then the
/// counters are its counts, without a `ZCOUNT`; the first announce after it drops the stale
/// peers (the same `HMGET` tells it whether to) and sets `x` from the oldest peer left.
const BATCH: &str = r#"
-- Set by each call of `batch` (below) before any announce or scrape runs.
local SW, TOT, prefix, now, cutoff, max_swarm, max_total, NOW, SLACK
local W = {6, 6, 18, 18}
local function later(a, b) return a > b end

-- Appends address a to list i of swarm h (c[i] entries); returns its position.
local function list_add(h, c, i, a)
  redis.call('SETRANGE', prefix .. LK[i] .. h, D(c[i] * W[i]), a)
  c[i] = c[i] + 1
  return c[i] - 1
end

-- Takes the entry at pos out of list i of swarm h (hash P): the last entry moves there, and
-- its position in P with it. The list's string keeps its length (`SETRANGE` never shortens
-- one): when the entries left fall to a power of two (of 256 bytes at least), a string longer
-- than they need by 512 bytes or more is cut to them. So a list is at most twice what its
-- entries need plus 511 bytes, or under 1 KB, and the `STRLEN` is paid on few removals.
local function list_del(P, h, c, i, pos)
  local last, w, B = c[i] - 1, W[i], prefix .. LK[i] .. h
  if pos ~= last then
    local moved = redis.call('GETRANGE', B, D(last * w), D(last * w + w - 1))
    redis.call('SETRANGE', B, D(pos * w), moved)
    local mv = redis.call('HGET', P, moved)
    if mv then redis.call('HSET', P, moved, struct.pack('>BI4', string.byte(mv, 1), pos) .. string.sub(mv, 6)) end
  end
  c[i] = last
  if last == 0 then
    redis.call('DEL', B)
  elseif last * w >= 256 and math.frexp(last) == 0.5 then -- a power of two
    local used = last * w
    if redis.call('STRLEN', B) - used >= 512 then
      redis.call('SET', B, redis.call('GETRANGE', B, '0', D(used - 1)))
    end
  end
end

-- One step of a prune of swarm h (hash P, list lengths c, changed here): up to 1024 fields of
-- P from cursor k on; the peers last seen before the cutoff go, from P and their lists. o is
-- the least time of a peer kept so far in this prune. Returns the next cursor (0: the prune is
-- done), o, the last second at which none of the peers can be stale (when done), and the
-- seeders and leechers dropped.
local function prune(P, h, c, k, o)
  if k == 0 then o = now end
  local r = redis.call('HSCAN', P, I(k), 'COUNT', '1024')
  local items = r[2]
  local gone, fields = {{}, {}, {}, {}}, {}
  for j = 1, #items, 2 do
    local f = items[j]
    if #f > 1 then
      local fl, pos, t = struct.unpack('>BI4I4', items[j + 1])
      if t < cutoff then
        local g = gone[(#f == 6 and 1 or 3) + ((fl == 83 or fl == 84) and 0 or 1)]
        g[#g + 1] = pos
        fields[#fields + 1] = f
      elseif t < o then
        o = t
      end
    end
  end
  if #fields > 0 then
    for i = 1, 4 do
      local g = gone[i]
      -- From the last position down: an entry moved into a freed place is never one still to
      -- be taken out.
      if #g > 0 then
        table.sort(g, later)
        for _, pos in ipairs(g) do list_del(P, h, c, i, pos) end
      end
    end
    redis.call('HDEL', P, unpack(fields))
  end
  k = tonumber(r[1])
  local x = 0
  -- Done: none can be stale before the oldest one left is, but a swarm is not scanned
  -- again within SLACK seconds (peers that expire one by one are dropped together).
  if k == 0 then x = math.max(o + (now - cutoff), now + SLACK) end
  return k, o, x, #gone[1] + #gone[3], #gone[2] + #gone[4]
end

-- The swarm's hash and state: the announcer's entry (me, if given) and the fields of `m`;
-- a swarm past its mark is pruned a step first (and its idle neighbours in `bs:swarms`).
-- A swarm of an earlier layout (a hash without `m`) is dropped: its peers come back as they
-- announce. Returns P, the entry, whether the swarm exists, t, d, c, x, k, o, and whether
-- `m` needs writing.
local function state(h, me)
  local P = prefix .. 'p:' .. h
  local old, m
  if me then
    local r = redis.call('HMGET', P, me, 'm')
    old, m = r[1], r[2]
  else
    m = redis.call('HGET', P, 'm')
  end
  if not m then
    if old or redis.call('EXISTS', P) == 1 then
      drop_swarm(prefix, h, TOT)
      redis.call('ZREM', SW, h)
    end
    return P, nil, false, 0, 0, {0, 0, 0, 0}, now + (now - cutoff), 0, 0, false
  end
  local t, d, c, x, k, o = meta(m)
  if x >= now then return P, old, true, t, d, c, x, k, o, false end
  if k == 0 then gc(prefix, SW, TOT, cutoff, 2) end
  local ps, pl
  k, o, x, ps, pl = prune(P, h, c, k, o)
  add_totals(TOT, -ps, -pl, 0)
  if me and ps + pl > 0 then old = redis.call('HGET', P, me) end
  return P, old, true, t, d, c, x, k, o, true
end

-- Appends the job's reply to out: seeders, leechers, downloaded, outcome (0 ok, 1 full) and
-- the lengths of the swarm's four lists (S4, L4, S6, L6). The reply's peers are not cut here:
-- the tracker reads them with plain `GETRANGE`s from those lengths (a peer list brought into
-- Lua costs more than the rest of the announce: every string made in Redis's Lua is hashed
-- byte by byte).
local function announce(x, out)
  local _, sd, event, h, id = struct.unpack('>BBBc20c20', x)
  local me = string.sub(x, 44)
  local seeder = sd == 49
  local P, old, exists, t, d, c, mx, mk, mo, dirty = state(h, me)
  local own = #me == 6 and 1 or 3
  -- The entry: a flag (L: leecher, S: seeder; C and T: the same whose `completed` was
  -- counted), its position in its list, the time of its last announce, the peer id.
  local flag, pos = 0, nil
  if old then flag, pos = struct.unpack('>BI4', old) end
  local was_seeder, counted = flag == 83 or flag == 84, flag == 67 or flag == 84
  local outcome, added, v = 0, false, nil
  if event == 120 then -- x: stopped
    if old then
      redis.call('HDEL', P, me)
      list_del(P, h, c, was_seeder and own or own + 1, pos)
      dirty = true
      if was_seeder then add_totals(TOT, -1, 0, 0) else add_totals(TOT, 0, -1, 0) end
    end
  else
    local go = true
    if not old then
      if c[1] + c[2] + c[3] + c[4] >= max_swarm or total_peers(TOT) >= max_total then
        outcome, go = 1, false
      else
        added, dirty = true, true
        pos = list_add(h, c, seeder and own or own + 1, me)
        if seeder then add_totals(TOT, 1, 0, 0) else add_totals(TOT, 0, 1, 0) end
      end
    elseif was_seeder ~= seeder then
      list_del(P, h, c, was_seeder and own or own + 1, pos)
      pos = list_add(h, c, seeder and own or own + 1, me)
      dirty = true
      if seeder then add_totals(TOT, 1, -1, 0) else add_totals(TOT, -1, 1, 0) end
    end
    if go then
      if event == 99 and not counted then -- c: completed
        counted, d, dirty = true, d + 1, true
        add_totals(TOT, 0, 0, 1)
      end
      v = struct.pack('>BI4I4c20', seeder and (counted and 84 or 83) or (counted and 67 or 76), pos, now, id)
      if v == old then v = nil end
    end
  end
  if exists or added then
    if t ~= now then
      redis.call('ZADD', SW, NOW, h)
      t, dirty = now, true
    end
  else
    dirty = false
  end
  if v and dirty then redis.call('HSET', P, me, v, 'm', struct.pack(MF, t, d, c[1], c[2], c[3], c[4], mx, mk, mo))
  elseif v then redis.call('HSET', P, me, v)
  elseif dirty then redis.call('HSET', P, 'm', struct.pack(MF, t, d, c[1], c[2], c[3], c[4], mx, mk, mo)) end

  out[#out + 1] = struct.pack('>I4I4I4BI4I4I4I4', c[1] + c[3], c[2] + c[4], d, outcome, c[1], c[2], c[3], c[4])
end

-- A job's reply: seeders, leechers and downloaded of each swarm.
local function scrape(x)
  local out = {}
  for i = 2, #x - 19, 20 do
    local P, _, exists, t, d, c, mx, mk, mo, dirty = state(string.sub(x, i, i + 19), nil)
    if dirty then redis.call('HSET', P, 'm', struct.pack(MF, t, d, c[1], c[2], c[3], c[4], mx, mk, mo)) end
    out[#out + 1] = struct.pack('>I4I4I4', c[1] + c[3], c[2] + c[4], d)
  end
  return table.concat(out)
end

-- The replies of the jobs, one string each (a table: joined here, they would be hashed again).
local function batch(KEYS, ARGV)
  begin()
  SW, TOT, prefix = KEYS[1], KEYS[2], ARGV[1]
  now, cutoff = clock(ARGV[2], ARGV[3])
  max_swarm, max_total = tonumber(ARGV[4]), tonumber(ARGV[5])
  NOW = I(now)
  SLACK = math.min(60, math.floor((now - cutoff) / 16))
  local out = {}
  for i = 6, #ARGV do
    local x = ARGV[i]
    local k = string.byte(x, 1)
    if k == 97 then announce(x, out)
    elseif k == 115 then out[#out + 1] = scrape(x)
    else out[#out + 1] = '' end
  end
  flush_totals(TOT)
  return out
end
"#;

/// KEYS: swarms, totals. ARGV: prefix, timeout, skew, limit. Returns peers and swarms dropped.
const GC: &str = r#"
local function gc_idle(KEYS, ARGV)
  begin()
  local _, cutoff = clock(ARGV[2], ARGV[3])
  local peers, swarms = gc(ARGV[1], KEYS[1], KEYS[2], cutoff, tonumber(ARGV[4]))
  flush_totals(KEYS[2])
  return {peers, swarms}
end
"#;

/// KEYS: swarms, totals. ARGV: prefix, info-hashes. Drops those swarms; returns their peers.
const DROP: &str = r#"
local function drop(KEYS, ARGV)
  begin()
  local peers = 0
  for i = 2, #ARGV do
    peers = peers + drop_swarm(ARGV[1], ARGV[i], KEYS[2])
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
  flush_totals(KEYS[2])
  return peers
end
"#;

/// An entry point of the Lua code.
#[derive(Clone, Copy)]
enum Entry {
    Batch = 0,
    Gc = 1,
    Drop = 2,
}

/// The Lua code, twice: a Redis 7 function library (`FUNCTION LOAD`, called by `FCALL`), whose
/// helpers are made once when it is loaded, and, for a Redis without functions, a script per
/// entry point (`EVALSHA`), which makes them again on every call (about 10 us of Redis's time
/// a call, measured: a quarter of an HTTP announce's cost when batches are small).
struct Lua {
    library: String,
    /// The functions' names, which end with a digest of the code: instances of other versions
    /// of bitswarm on the same Redis keep their own.
    functions: [String; 3],
    /// The scripts' texts and SHA-1s.
    scripts: [(String, String); 3],
    /// Whether to call the functions (cleared when Redis does not know `FCALL`).
    use_functions: std::sync::atomic::AtomicBool,
}

/// What a reply's error asks for.
enum Fix {
    /// The code is not in Redis (restarted, flushed): load it and ask again.
    Load,
    /// Redis has no functions (before 7.0): use the scripts.
    Scripts,
}

impl Lua {
    fn new() -> Lua {
        let common = [PRELUDE, BATCH, GC, DROP].join("\n");
        let digest = redis::Script::new(&common).get_hash()[..12].to_owned();
        let names = ["batch", "gc_idle", "drop"];
        let functions = names.map(|n| format!("bitswarm_{n}_{digest}"));
        let mut library = format!("#!lua name=bitswarm_{digest}\n{common}\n");
        for (f, n) in functions.iter().zip(names) {
            library.push_str(&format!("redis.register_function('{f}', {n})\n"));
        }
        let scripts = names.map(|n| {
            let code = format!("{common}\nreturn {n}(KEYS, ARGV)\n");
            let sha = redis::Script::new(&code).get_hash().to_owned();
            (code, sha)
        });
        Lua { library, functions, scripts, use_functions: std::sync::atomic::AtomicBool::new(true) }
    }

    /// Adds a call of `e` to `pipe` (`FCALL` or `EVALSHA`) with the keys and the prefix every
    /// entry takes; its own arguments follow.
    fn call<'a>(&self, pipe: &'a mut Pipeline, e: Entry) -> &'a mut Pipeline {
        let c = if self.use_functions.load(Ordering::Relaxed) {
            pipe.cmd("FCALL").arg(&self.functions[e as usize])
        } else {
            pipe.cmd("EVALSHA").arg(&self.scripts[e as usize].1)
        };
        // Every entry's keys (`bs:swarms`, `bs:totals`) and first argument (the key prefix).
        c.arg(2).arg(format!("{PREFIX}swarms")).arg(format!("{PREFIX}totals")).arg(PREFIX)
    }

    fn fix(e: &redis::ServerError) -> Option<Fix> {
        let text = e.details().unwrap_or("");
        if e.code() == "NOSCRIPT" || text.starts_with("Function not found") {
            Some(Fix::Load)
        } else if text.contains("unknown command") && text.contains("FCALL") {
            Some(Fix::Scripts)
        } else {
            None
        }
    }
}

/// The most jobs in one call of the batch script (each announce costs Redis some
/// microseconds; this bounds how long one call holds it).
const MAX_BATCH: usize = 64;
/// Batches of single announces (HTTP) in flight at once on the connection.
const IN_FLIGHT: usize = 2;
/// Single announces waiting for a batch, at most (then callers wait to queue).
const QUEUE: usize = 4096;
/// How long making a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis may take to answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a blocking connection is not tried again after one could not be made.
const RETRY: Duration = Duration::from_millis(100);
/// How often a Redis taken not to answer is asked again (see [`Core::stalled`]).
const PROBE: Duration = Duration::from_millis(100);

/// What the store's tasks share: the connection and what every call sends.
pub struct Core {
    /// Made again when it stops answering while a new connection answers (see [`probe`]).
    conn: std::sync::RwLock<ConnectionManager>,
    /// What it is made with.
    conn_config: ConnectionManagerConfig,
    /// The store's runtime: every round trip is made from it, so that the connection's tasks
    /// (which live where the connection was first used, and where it was last made again) stay
    /// on its thread and never on a server's (see [`Core::query`]).
    rt: tokio::runtime::Handle,
    lua: Lua,
    timeout: u32,
    max_per_swarm: u32,
    max_total: u64,
    /// Seconds added to Redis's clock (the conformance tests' expiry; 0 otherwise).
    skew: AtomicI64,
    /// For the blocking connections of the threads outside any runtime (the UDP workers, see
    /// [`RedisStore::run_blocking`]).
    client: redis::Client,
    /// The blocking connections, made in the background (see [`Core::with_conn`]).
    pool: std::sync::Mutex<Pool>,
    /// Why Redis is taken not to answer: set when a round trip waited the whole
    /// [`RESPONSE_TIMEOUT`], cleared when a `PING` is answered again ([`probe`], every
    /// [`PROBE`]). Meanwhile every request fails at once rather than waiting a timeout of its
    /// own: a Redis that stopped answering (paused, busy, or behind a link that drops packets)
    /// once held each HTTP batch 2 s, and the announces queued behind them waited on, 300 of
    /// them up to 8 s, past their clients' patience, and a UDP worker's batch 2 s on each of
    /// its connections.
    stalled: std::sync::Mutex<Option<String>>,
    /// Wakes [`probe`].
    tripped: tokio::sync::Notify,
    /// Trips so far: a probe whose `PING` was sent before the last one does not clear it.
    trips: std::sync::atomic::AtomicU64,
}

/// The UDP workers' blocking connections.
#[derive(Default)]
struct Pool {
    /// Connections not in use; one that failed is dropped, not put back.
    idle: Vec<redis::Connection>,
    /// Whether one is being made (on the store's runtime's blocking threads, one at a time).
    connecting: bool,
    /// Until when none is tried again, after one could not be made.
    retry_at: Option<Instant>,
    /// Why the last one could not be made (cleared when one is).
    failed: Option<String>,
}

/// A single announce waiting for a batch: its packed job, what its peers are read with, and
/// where its answer goes.
struct Pending {
    job: Vec<u8>,
    want: Want,
    reply: tokio::sync::oneshot::Sender<Result<Answer, StoreError>>,
}

/// Swarms in Redis. See the module documentation.
pub struct RedisStore {
    core: Arc<Core>,
    /// Runs the connection's tasks, the batcher (and the UDP workers' round trips); shut down
    /// on drop.
    rt: Option<tokio::runtime::Runtime>,
    /// Single announces, to the batcher.
    queue: tokio::sync::mpsc::Sender<Pending>,
    /// The server, for messages (without a password).
    shown: String,
}

impl std::ops::Deref for RedisStore {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("Redis: {e}"))
}

/// The address without a password.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// An announce as a job of the batch script: `a`, seeder, event (one byte each), the
/// info-hash, the peer id, the address; and what its reply's peers are read with.
fn pack_announce(a: &Announce, with_ids: bool) -> (Vec<u8>, Want) {
    let mut j = Vec::with_capacity(43 + 18);
    let event = match a.event {
        bitswarm_tracker_proto::Event::None => b'n',
        bitswarm_tracker_proto::Event::Completed => b'c',
        bitswarm_tracker_proto::Event::Started => b's',
        bitswarm_tracker_proto::Event::Stopped => b'x',
    };
    j.extend_from_slice(&[b'a', if a.left == 0 { b'1' } else { b'0' }, event]);
    j.extend_from_slice(&a.info_hash.0);
    j.extend_from_slice(&a.peer_id.0);
    match a.addr.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => j.extend_from_slice(&crate::store::compact4(ip, a.addr.port())),
        std::net::IpAddr::V6(ip) => j.extend_from_slice(&crate::store::compact6(ip, a.addr.port())),
    }
    (j, Want::new(a, with_ids, crate::store::rand_u64() as u32))
}

/// A scrape as a job of the batch script: `s`, then the info-hashes end to end.
fn pack_scrape(hashes: &[InfoHash]) -> Vec<u8> {
    let mut j = Vec::with_capacity(1 + 20 * hashes.len());
    j.push(b's');
    for h in hashes {
        j.extend_from_slice(&h.0);
    }
    j
}

impl Core {
    /// Sends the pipeline `make` makes (calls of the Lua code, see [`Lua::call`]); a Redis
    /// that does not have the code is given it and asked again, and one without functions is
    /// asked through the scripts.
    async fn query(&self, make: impl Fn() -> Pipeline) -> Result<Vec<Value>, StoreError> {
        self.answering()?;
        for _ in 0..3 {
            let pipe = make();
            let n = pipe.len();
            let values = {
                let mut conn = self.conn();
                self.rt
                    .spawn(async move { conn.req_packed_commands(&pipe, 0, n).await })
                    .await
                    .map_err(err)?
                    .map_err(|e| self.trip(e))?
            };
            let fix = values.iter().find_map(|v| match v {
                Value::ServerError(e) => Lua::fix(e),
                _ => None,
            });
            match fix {
                None => return Ok(values),
                Some(Fix::Scripts) => self.lua.use_functions.store(false, Ordering::Relaxed),
                Some(Fix::Load) => self.load().await?,
            }
        }
        Err(err("the Lua code was not kept"))
    }

    /// Gives Redis the Lua code: the library, or the scripts.
    async fn load(&self) -> Result<(), StoreError> {
        if self.lua.use_functions.load(Ordering::Relaxed) {
            let mut load = redis::cmd("FUNCTION");
            load.arg("LOAD").arg("REPLACE").arg(&self.lua.library);
            match self.ask::<_, String>(load).await {
                Ok(_) => return Ok(()),
                Err(e) if e.0.contains("unknown command") || e.0.contains("unknown subcommand") => {
                    self.lua.use_functions.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        let mut load = redis::pipe();
        for (code, _) in &self.lua.scripts {
            load.cmd("SCRIPT").arg("LOAD").arg(code);
        }
        self.ask::<_, ()>(load).await
    }

    fn skew(&self) -> i64 {
        self.skew.load(Ordering::Relaxed)
    }

    /// Sends a command or pipeline from the store's runtime (see [`Core::rt`]) and reads its
    /// reply as `T`.
    async fn ask<C, T>(&self, c: C) -> Result<T, StoreError>
    where
        C: AskRedis + Send + 'static,
        T: redis::FromRedisValue + Send + 'static,
    {
        self.answering()?;
        let mut conn = self.conn();
        self.rt.spawn(async move { c.ask(&mut conn).await }).await.map_err(err)?.map_err(|e| self.trip(e))
    }

    /// The async connection.
    fn conn(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fails while Redis is taken not to answer (see [`Core::stalled`]).
    fn answering(&self) -> Result<(), StoreError> {
        match &*self.stalled.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(why) => Err(err(format!("{why}; asking again every {} ms", PROBE.as_millis()))),
        }
    }

    /// A round trip's error; one that waited the whole response timeout marks Redis as not
    /// answering (see [`Core::stalled`]) and wakes [`probe`].
    fn trip(&self, e: redis::RedisError) -> StoreError {
        if e.is_timeout() {
            let why = format!("not answering: no reply within {} s", RESPONSE_TIMEOUT.as_secs());
            let mut stalled = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
            *stalled = Some(why);
            self.trips.fetch_add(1, Ordering::Relaxed);
            drop(stalled);
            self.tripped.notify_one();
        }
        err(e)
    }

    /// Runs packed jobs in calls of the batch script ([`MAX_BATCH`] a call); their replies,
    /// in order.
    async fn batch<J: AsRef<[u8]>>(&self, jobs: &[J]) -> Result<Vec<Vec<u8>>, StoreError> {
        let skew = self.skew();
        let mut replies = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(MAX_BATCH) {
            replies.extend(batch_reply(chunk.len(), self.query(|| self.batch_pipe(chunk, skew)).await?)?);
        }
        Ok(replies)
    }

    /// [`Core::batch`] over a blocking connection, for a thread outside any runtime.
    fn batch_blocking<J: AsRef<[u8]>>(
        &self,
        conn: &mut redis::Connection,
        jobs: &[J],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let skew = self.skew();
        let mut replies = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(MAX_BATCH) {
            replies.extend(batch_reply(chunk.len(), self.query_blocking(conn, || self.batch_pipe(chunk, skew))?)?);
        }
        Ok(replies)
    }

    /// Reads the peers of announces whose batch function replied `heads` (see
    /// [`crate::redis_peers`]): one round trip, and one more for peer ids when asked.
    async fn peers(&self, wants: &[&Want], heads: Vec<Head>) -> Result<Vec<Answer>, StoreError> {
        let (reads, pipe) = Reads::plan(PREFIX, wants, &heads);
        let values = if pipe.is_empty() { Vec::new() } else { self.ask::<_, Vec<Value>>(pipe).await? };
        let mut answers = reads.read(wants, heads, values)?;
        if let Some(pipe) = crate::redis_peers::ids_pipe(PREFIX, wants, &answers) {
            let values = self.ask::<_, Vec<Value>>(pipe).await?;
            crate::redis_peers::read_ids(wants, &mut answers, values)?;
        }
        Ok(answers)
    }

    /// [`Core::peers`] over a blocking connection.
    fn peers_blocking(
        &self,
        conn: &mut redis::Connection,
        wants: &[&Want],
        heads: Vec<Head>,
    ) -> Result<Vec<Answer>, StoreError> {
        let plain = |conn: &mut redis::Connection, pipe: Pipeline| {
            conn.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len()).map_err(|e| self.trip(e))
        };
        let (reads, pipe) = Reads::plan(PREFIX, wants, &heads);
        let values = if pipe.is_empty() { Vec::new() } else { plain(conn, pipe)? };
        let mut answers = reads.read(wants, heads, values)?;
        if let Some(pipe) = crate::redis_peers::ids_pipe(PREFIX, wants, &answers) {
            let values = plain(conn, pipe)?;
            crate::redis_peers::read_ids(wants, &mut answers, values)?;
        }
        Ok(answers)
    }

    /// A call of the batch function with these jobs.
    fn batch_pipe<J: AsRef<[u8]>>(&self, jobs: &[J], skew: i64) -> Pipeline {
        let mut pipe = redis::pipe();
        let c = self
            .lua
            .call(&mut pipe, Entry::Batch)
            .arg(self.timeout)
            .arg(skew)
            .arg(self.max_per_swarm)
            .arg(self.max_total);
        for j in jobs {
            c.arg(j.as_ref());
        }
        pipe
    }

    /// Runs `f` with a blocking connection of the pool: the thread that asks does the round
    /// trips itself, with no hand-over to the store's thread and back (two thread switches a
    /// batch). It never makes one: with none in the pool, the request fails at once, and one
    /// is made in the background ([`Core::refill`]). A Redis whose address does not answer
    /// holds a connection's making up to [`CONNECT_TIMEOUT`], which a UDP worker spends
    /// answering others (with an error, meanwhile) rather than waiting. A connection that
    /// failed is dropped.
    fn with_conn<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut redis::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.answering()?;
        let mut conn = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let c = pool.idle.pop();
            // One spare is kept: the next worker to ask finds one.
            if pool.idle.is_empty() {
                self.refill(&mut pool);
            }
            match c {
                Some(c) => c,
                None => {
                    return Err(err(match &pool.failed {
                        Some(e) => format!("cannot connect: {e} (trying again in the background)"),
                        None => "no connection yet (one is being made)".to_owned(),
                    }));
                }
            }
        };
        let r = f(&mut conn)?;
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).idle.push(conn);
        Ok(r)
    }

    /// Starts making a blocking connection for the pool on the store's runtime (its blocking
    /// threads), unless one is being made or one failed within [`RETRY`].
    fn refill(self: &Arc<Self>, pool: &mut Pool) {
        if pool.connecting || pool.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        pool.connecting = true;
        let core = self.clone();
        self.rt.spawn_blocking(move || {
            let _ = core.connect_one();
            core.pool.lock().unwrap_or_else(|e| e.into_inner()).connecting = false;
        });
    }

    /// Makes a blocking connection and puts it in the pool, or keeps why it could not be made
    /// (and tries none again within [`RETRY`]). Takes up to [`CONNECT_TIMEOUT`].
    fn connect_one(&self) -> Result<(), StoreError> {
        let made = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).and_then(|c| {
            c.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
            c.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
            Ok(c)
        });
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match made {
            Ok(c) => {
                pool.idle.push(c);
                (pool.retry_at, pool.failed) = (None, None);
                Ok(())
            }
            Err(e) => {
                (pool.retry_at, pool.failed) = (Some(Instant::now() + RETRY), Some(e.to_string()));
                Err(err(e))
            }
        }
    }

    /// [`Core::query`] over a blocking connection.
    fn query_blocking(
        &self,
        conn: &mut redis::Connection,
        make: impl Fn() -> Pipeline,
    ) -> Result<Vec<Value>, StoreError> {
        for _ in 0..3 {
            let pipe = make();
            let values =
                conn.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len()).map_err(|e| self.trip(e))?;
            let fix = values.iter().find_map(|v| match v {
                Value::ServerError(e) => Lua::fix(e),
                _ => None,
            });
            match fix {
                None => return Ok(values),
                Some(Fix::Scripts) => self.lua.use_functions.store(false, Ordering::Relaxed),
                Some(Fix::Load) => self.load_blocking(conn)?,
            }
        }
        Err(err("the Lua code was not kept"))
    }

    /// [`Core::load`] over a blocking connection.
    fn load_blocking(&self, conn: &mut redis::Connection) -> Result<(), StoreError> {
        if self.lua.use_functions.load(Ordering::Relaxed) {
            let mut load = redis::cmd("FUNCTION");
            load.arg("LOAD").arg("REPLACE").arg(&self.lua.library);
            match load.query::<String>(conn) {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("unknown command") || e.to_string().contains("unknown subcommand") => {
                    self.lua.use_functions.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(self.trip(e)),
            }
        }
        let mut load = redis::pipe();
        for (code, _) in &self.lua.scripts {
            load.cmd("SCRIPT").arg("LOAD").arg(code);
        }
        load.query::<()>(conn).map_err(|e| self.trip(e))
    }
}

/// The jobs of a batch, packed for the batch function, and what its announces' peers are
/// read with, in order.
fn pack_jobs<S: PeerSink>(jobs: &[Job], sinks: &[S]) -> (Vec<Vec<u8>>, Vec<Want>) {
    let mut wants = Vec::new();
    let packed = jobs
        .iter()
        .map(|j| match &j.op {
            Op::Announce { announce, .. } => {
                let (job, want) = pack_announce(announce, sinks[j.slot].wants_ids());
                wants.push(want);
                job
            }
            Op::Scrape { hashes, .. } if hashes.is_empty() => b"e".to_vec(),
            Op::Scrape { hashes, .. } => pack_scrape(hashes),
        })
        .collect();
    (packed, wants)
}

/// Every job of a batch failed with `e`.
fn fail(jobs: &mut [Job], e: StoreError) {
    for j in jobs.iter_mut() {
        match &mut j.op {
            Op::Announce { result, .. } => *result = Err(e.clone()),
            Op::Scrape { result, .. } => *result = Err(e.clone()),
        }
    }
}

/// The heads of the announces' replies among a batch's `replies`, in order.
fn heads(jobs: &[Job], replies: &[Vec<u8>]) -> Result<Vec<Head>, StoreError> {
    jobs.iter().zip(replies).filter(|(j, _)| matches!(j.op, Op::Announce { .. })).map(|(_, r)| Head::parse(r)).collect()
}

/// Puts a batch's replies and its announces' answers into its jobs and their sinks.
fn settle<S: PeerSink>(jobs: &mut [Job], sinks: &mut [S], replies: &[Vec<u8>], answers: Vec<Answer>) {
    let mut answers = answers.into_iter();
    for (j, r) in jobs.iter_mut().zip(replies) {
        match &mut j.op {
            Op::Announce { result, .. } => {
                *result = match answers.next() {
                    Some(a) => Ok(crate::redis_peers::deliver(a, &mut sinks[j.slot])),
                    None => Err(err("an announce's reply is missing")),
                }
            }
            Op::Scrape { hashes, result } if hashes.is_empty() => *result = Ok(Vec::new()),
            Op::Scrape { hashes, result } => *result = scraped(hashes.len(), r),
        }
    }
}

/// The batch function's reply: a string per job.
fn batch_reply(jobs: usize, values: Vec<Value>) -> Result<Vec<Vec<u8>>, StoreError> {
    let replies = items(values.into_iter().next(), |v| match v {
        Value::BulkString(b) => Ok(b),
        other => Err(other),
    })?;
    if replies.len() != jobs {
        return Err(err(format!("{} replies to a batch of {jobs}", replies.len())));
    }
    Ok(replies)
}

/// A command or a pipeline, for [`Core::ask`].
trait AskRedis {
    fn ask<T: redis::FromRedisValue + Send>(
        &self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send;
}

impl AskRedis for redis::Cmd {
    fn ask<T: redis::FromRedisValue + Send>(
        &self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send {
        self.query_async(conn)
    }
}

impl AskRedis for Pipeline {
    fn ask<T: redis::FromRedisValue + Send>(
        &self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send {
        self.query_async(conn)
    }
}

/// Asks a Redis taken not to answer (see [`Core::stalled`]) again every [`PROBE`], with a
/// `PING` on the async connection (which waits up to the response timeout), until it answers.
/// When that `PING` times out, a new connection is asked too: a connection that died without
/// a word (a NAT or a firewall that forgot it, a host gone) times out until TCP gives up, some
/// 15 minutes, and the connection manager makes a new one only on an error, not on a timeout.
/// If the new one answers, it replaces the old.
async fn probe(core: Arc<Core>) {
    loop {
        core.tripped.notified().await;
        loop {
            tokio::time::sleep(PROBE).await;
            let trips = core.trips.load(Ordering::Relaxed);
            let ping = |mut c: ConnectionManager| async move { redis::cmd("PING").query_async::<()>(&mut c).await };
            let answered = match ping(core.conn()).await {
                Ok(()) => true,
                Err(e) if e.is_timeout() => {
                    match ConnectionManager::new_lazy_with_config(core.client.clone(), core.conn_config.clone()) {
                        Ok(fresh) if ping(fresh.clone()).await.is_ok() => {
                            *core.conn.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                            // The UDP workers' connections waiting in the pool are as old:
                            // new ones are made (each old one would time out once).
                            core.pool.lock().unwrap_or_else(|e| e.into_inner()).idle.clear();
                            true
                        }
                        _ => false,
                    }
                }
                Err(_) => false,
            };
            if answered {
                let mut stalled = core.stalled.lock().unwrap_or_else(|e| e.into_inner());
                // Tripped again while this PING was out: asked again.
                if core.trips.load(Ordering::Relaxed) == trips {
                    *stalled = None;
                    break;
                }
            }
        }
    }
}

/// Collects single announces into batches: whatever queued while the batches in flight were
/// answered (up to [`MAX_BATCH`]) goes as the next, so under load a call carries many
/// announces and idle a lone one goes at once.
async fn batcher(core: Arc<Core>, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let core = core.clone();
        tokio::spawn(async move {
            let jobs: Vec<&[u8]> = batch.iter().map(|p| p.job.as_slice()).collect();
            let wants: Vec<&Want> = batch.iter().map(|p| &p.want).collect();
            let answers = async {
                let replies = core.batch(&jobs).await?;
                let heads = replies.iter().map(|r| Head::parse(r)).collect::<Result<Vec<_>, _>>()?;
                core.peers(&wants, heads).await
            };
            match answers.await {
                Ok(answers) => {
                    for (p, a) in batch.into_iter().zip(answers) {
                        let _ = p.reply.send(Ok(a));
                    }
                }
                Err(e) => {
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}

impl RedisStore {
    /// Connects (lazily: a Redis that is not there yet is tried again on each request) to
    /// `url` (`redis://HOST:PORT/DB`, `unix:///PATH`, see the `redis` crate). Peers time out
    /// after `timeout` seconds. Fails only on a URL that cannot be used or no thread to run on.
    pub fn new(url: &str, timeout: u32, max_per_swarm: u32, max_total: u64) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("store.redis_url {:?}: {e}", shown(url)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = {
            let _in = rt.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map_err(|e| format!("store.redis_url {:?}: {e}", shown(url)))?
        };
        let core = Arc::new(Core {
            conn: std::sync::RwLock::new(conn),
            conn_config: config,
            rt: rt.handle().clone(),
            lua: Lua::new(),
            timeout,
            max_per_swarm,
            max_total,
            skew: AtomicI64::new(0),
            client,
            pool: std::sync::Mutex::new(Pool::default()),
            stalled: std::sync::Mutex::new(None),
            tripped: tokio::sync::Notify::new(),
            trips: std::sync::atomic::AtomicU64::new(0),
        });
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        rt.spawn(batcher(core.clone(), rx));
        rt.spawn(probe(core.clone()));
        Ok(RedisStore { core, rt: Some(rt), queue, shown: shown(url) })
    }

    /// The server, without its password.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Runs `f` to its end from a thread outside any async runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives until drop"),
        }
    }

    /// Moves Redis's clock as this store sees it `secs` on (the conformance tests' expiry).
    pub fn advance(&self, secs: u32) {
        self.skew.fetch_add(i64::from(secs), Ordering::Relaxed);
    }

    /// Calls the Lua code through `EVALSHA` of scripts from now on, as on a Redis without
    /// functions (the tests of that path).
    pub fn use_scripts(&self) {
        self.lua.use_functions.store(false, Ordering::Relaxed);
    }

    /// One announce, in the batcher's next batch.
    pub async fn announce(&self, a: &Announce, out: &mut impl PeerSink) -> Result<(SwarmCounts, Outcome), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let (job, want) = pack_announce(a, out.wants_ids());
        self.queue.send(Pending { job, want, reply }).await.map_err(|_| err("the batcher stopped"))?;
        let answer = rx.await.map_err(|_| err("the batcher stopped"))??;
        Ok(crate::redis_peers::deliver(answer, out))
    }

    pub async fn scrape(&self, hashes: &[InfoHash]) -> Result<Vec<SwarmCounts>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.core.batch(&[pack_scrape(hashes)]).await?;
        scraped(hashes.len(), &replies[0])
    }

    /// A batch: calls of the batch script, then the reads of its announces' peers.
    pub async fn run<S: PeerSink>(&self, jobs: &mut [Job], sinks: &mut [S]) {
        let (packed, wants) = pack_jobs(jobs, sinks);
        let done = async {
            let replies = self.core.batch(&packed).await?;
            let heads = heads(jobs, &replies)?;
            let answers = self.core.peers(&wants.iter().collect::<Vec<_>>(), heads).await?;
            Ok((replies, answers))
        };
        match done.await {
            Ok((replies, answers)) => settle(jobs, sinks, &replies, answers),
            Err(e) => fail(jobs, e),
        }
    }

    /// [`RedisStore::run`] from a thread outside any runtime (a UDP worker), over a blocking
    /// connection of its own (see [`Core::with_conn`]).
    pub fn run_blocking<S: PeerSink>(&self, jobs: &mut [Job], sinks: &mut [S]) {
        let (packed, wants) = pack_jobs(jobs, sinks);
        let done = self.core.with_conn(|conn| {
            let replies = self.core.batch_blocking(conn, &packed)?;
            let heads = heads(jobs, &replies)?;
            let answers = self.core.peers_blocking(conn, &wants.iter().collect::<Vec<_>>(), heads)?;
            Ok((replies, answers))
        });
        match done {
            Ok((replies, answers)) => settle(jobs, sinks, &replies, answers),
            Err(e) => fail(jobs, e),
        }
    }

    /// Drops the swarms idle past the timeout (a batch at a time), with their peers.
    pub async fn clean(&self) -> Result<(u64, u64), StoreError> {
        let (mut peers, mut swarms) = (0u64, 0u64);
        loop {
            let skew = self.skew();
            let make = || {
                let mut pipe = redis::pipe();
                self.lua.call(&mut pipe, Entry::Gc).arg(self.timeout).arg(skew).arg(GC_BATCH);
                pipe
            };
            let v = self.query(make).await?;
            let n = ints(v.into_iter().next())?;
            let (p, s) = (n.first().copied().unwrap_or(0), n.get(1).copied().unwrap_or(0));
            peers += p as u64;
            swarms += s as u64;
            if s < i64::from(GC_BATCH) {
                return Ok((peers, swarms));
            }
        }
    }

    /// Every swarm in the index, with the time of its last announce, and Redis's time.
    async fn swarms(&self) -> Result<(Vec<(InfoHash, i64)>, i64), StoreError> {
        let mut all = Vec::new();
        let mut start = 0isize;
        loop {
            let mut zrange = redis::cmd("ZRANGE");
            zrange.arg(format!("{PREFIX}swarms")).arg(start).arg(start + CHUNK - 1).arg("WITHSCORES");
            let chunk: Vec<(Vec<u8>, f64)> = self.ask(zrange).await?;
            let got = chunk.len();
            all.extend(chunk.into_iter().filter_map(|(h, t)| Some((InfoHash(h.try_into().ok()?), t as i64))));
            if (got as isize) < CHUNK {
                break;
            }
            start += CHUNK;
        }
        let (secs, _): (i64, i64) = self.ask(redis::cmd("TIME")).await?;
        Ok((all, secs + self.skew()))
    }

    /// Counts of many swarms, a chunk per round trip.
    async fn counts_of(&self, hashes: &[InfoHash]) -> Result<Vec<SwarmCounts>, StoreError> {
        let mut v = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(CHUNK as usize) {
            v.extend(self.scrape(chunk).await?);
        }
        Ok(v)
    }

    pub async fn all_counts(&self) -> Result<Vec<(InfoHash, SwarmCounts)>, StoreError> {
        let (swarms, _) = self.swarms().await?;
        let hashes: Vec<InfoHash> = swarms.iter().map(|(h, _)| *h).collect();
        let counts = self.counts_of(&hashes).await?;
        Ok(hashes.into_iter().zip(counts).collect())
    }

    pub async fn retain_swarms(&self, keep: impl Fn(&InfoHash) -> bool) -> Result<(u64, u64), StoreError> {
        let (swarms, _) = self.swarms().await?;
        let gone: Vec<InfoHash> = swarms.into_iter().map(|(h, _)| h).filter(|h| !keep(h)).collect();
        let mut peers = 0u64;
        for chunk in gone.chunks(CHUNK as usize) {
            let make = || {
                let mut pipe = redis::pipe();
                let c = self.lua.call(&mut pipe, Entry::Drop);
                for h in chunk {
                    c.arg(&h.0[..]);
                }
                pipe
            };
            let v = self.query(make).await?;
            peers += match v.into_iter().next() {
                Some(Value::Int(n)) => n.max(0) as u64,
                other => return Err(err(format!("unexpected reply {other:?}"))),
            };
        }
        Ok((peers, gone.len() as u64))
    }

    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(format!("{PREFIX}totals")).arg("s").arg("l").arg("d");
        pipe.cmd("ZCARD").arg(format!("{PREFIX}swarms"));
        let ((s, l, d), swarms): TotalsReply = self.ask(pipe).await?;
        let n = |x: Option<i64>| x.unwrap_or(0).max(0) as u64;
        let (seeders, leechers) = (n(s), n(l));
        Ok(Totals { swarms, seeders, leechers, peers: seeders + leechers, downloaded: n(d) })
    }

    pub async fn snapshot(&self, limit: usize) -> Result<Snapshot, StoreError> {
        let totals = self.totals().await?;
        let (swarms, now) = self.swarms().await?;
        let hashes: Vec<InfoHash> = swarms.iter().map(|(h, _)| *h).collect();
        let counts = self.counts_of(&hashes).await?;
        let mut v: Vec<(InfoHash, SwarmCounts, i64)> =
            swarms.iter().zip(counts).map(|((h, t), c)| (*h, c, now - t)).collect();
        let key = |c: &SwarmCounts| std::cmp::Reverse(u64::from(c.seeders) + u64::from(c.leechers));
        if v.len() > limit {
            v.select_nth_unstable_by_key(limit, |x| key(&x.1));
            v.truncate(limit);
        }
        v.sort_by_key(|x| (key(&x.1), x.0));
        let swarms = v
            .into_iter()
            .map(|(h, counts, idle)| SwarmInfo {
                info_hash: h.to_hex(),
                counts,
                idle_secs: idle.clamp(0, i64::from(u32::MAX)) as u32,
            })
            .collect();
        Ok(Snapshot { totals, swarms })
    }

    /// Whether Redis answers now (the start-up line says so); then makes the UDP workers' first
    /// blocking connection, so that their first batch finds one.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.ask::<_, ()>(redis::cmd("PING")).await?;
        let empty = self.pool.lock().unwrap_or_else(|e| e.into_inner()).idle.is_empty();
        if empty {
            let core = self.core.clone();
            self.core.rt.spawn_blocking(move || core.connect_one()).await.map_err(err)??;
        }
        Ok(())
    }

    /// Redis's `INFO memory` `used_memory` (the bench's bytes per peer).
    pub async fn used_memory(&self) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("memory");
        let info: String = self.ask(cmd).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| err("INFO memory has no used_memory"))
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Without waiting: this may be dropped on an async runtime's thread.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `HMGET bs:totals s l d` and `ZCARD bs:swarms`.
type TotalsReply = ((Option<i64>, Option<i64>, Option<i64>), u64);

/// A reply's integers.
fn ints(v: Option<Value>) -> Result<Vec<i64>, StoreError> {
    items(v, |i| match i {
        Value::Int(n) => Ok(n),
        other => Err(other),
    })
}

/// The items of an array reply, each read by `item` (which hands back one of another kind).
fn items<T>(v: Option<Value>, item: impl Fn(Value) -> Result<T, Value>) -> Result<Vec<T>, StoreError> {
    match v {
        Some(Value::Array(items)) => {
            items.into_iter().map(|i| item(i).map_err(|other| err(format!("unexpected reply {other:?}")))).collect()
        }
        Some(Value::ServerError(e)) => Err(err(e)),
        other => Err(err(format!("unexpected reply {other:?}"))),
    }
}

fn scraped(n: usize, v: &[u8]) -> Result<Vec<SwarmCounts>, StoreError> {
    if v.len() != n * 12 {
        return Err(err("a scrape reply of the wrong length"));
    }
    Ok(v.chunks_exact(12)
        .map(|x| SwarmCounts { seeders: be32(&x[0..]), leechers: be32(&x[4..]), downloaded: be32(&x[8..]) })
        .collect())
}

/// The big-endian `u32` at the start of `b` (which has 4 bytes at least).
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
