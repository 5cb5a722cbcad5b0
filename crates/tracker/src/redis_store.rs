//! The Redis backend: swarms in a Redis server that several tracker instances share
//! (`store.backend = "redis"`, `store.redis_url`).
//!
//! # Key layout
//!
//! Keys start with `bs:`; `H` is an info-hash's 20 raw bytes, an address is a peer's compact
//! form (4 or 16 bytes of IP, then the port, big-endian: 6 or 18 bytes).
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `bs:4:H`, `bs:6:H` | sorted set | the swarm's IPv4 (IPv6) peers: member the address, score the Redis time (s) of its last announce, plus 2^32 for a seeder |
//! | `bs:p:H` | hash | address → 1 byte (`c`: its `completed` was counted, `-`: not) and its 20-byte peer id; field `d`: completed downloads |
//! | `bs:swarms` | sorted set | every swarm: member H, score the time of its last announce |
//! | `bs:totals` | hash | `s`, `l`, `d`: seeders, leechers and downloads over every swarm |
//!
//! A peer costs its address twice (a member and a field), a score and 21 bytes: about 45
//! bytes in Redis's compact encodings (swarms of up to 128 peers), more in bigger swarms; the
//! bench measures it (`INFO memory` over the peers stored).
//!
//! Seeders score above 2^32 and leechers below, so one sorted set answers both counts
//! (`ZCOUNT` over a range of scores) and a seeder's ask for leechers only (ranks `0..L`).
//!
//! # Expiry, by Redis's own clock
//!
//! Every script reads the time with `TIME` on the Redis server, so instances with skewed
//! clocks agree. A peer whose score is older than the peer timeout is not counted: counts are
//! `ZCOUNT`s over the live range, exact without any cleaning. Stale entries are deleted by the
//! scripts themselves: an announce drops the stale peers of its own swarm (up to 256 of each
//! kind) and up to 2 swarms of `bs:swarms` idle past the timeout, with their keys; each
//! instance's cleaner tick drops idle swarms the same way (one script over the expired end of
//! `bs:swarms`; nothing scans the live swarms, and several instances doing it is harmless).
//! Keys have no TTL: a key that vanished by itself would leave `bs:totals` counting its peers.
//!
//! # Round trips
//!
//! Each request is one `EVALSHA` of a Lua script, atomic in Redis: an announce reads and writes
//! its swarm, picks the reply's peers (from a random rank on, as the in-memory store does) and
//! returns the counts. The UDP workers send the requests of one receive batch (up to 32) as one
//! pipeline. A Redis that lost its scripts (restarted) gets them again (`SCRIPT LOAD`) and the
//! batch is sent again: announces are idempotent (a `completed` is counted once per peer).
//!
//! # When Redis is down
//!
//! The connection is a [`redis::aio::ConnectionManager`]: it reconnects by itself, in the
//! background. Meanwhile requests fail at once (connection refused) or after the response
//! timeout, and the service answers them with a failure reason (HTTP) or an error packet (UDP).
//! The tracker starts even when Redis is not there yet.
//!
//! Limits: one Redis server (or a primary with replicas), not Redis Cluster (the scripts touch
//! keys of other swarms); `maxmemory-policy` must be `noeviction` (an evicted key would leave
//! `bs:totals` wrong).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bitswarm_tracker_proto::InfoHash;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Value};

use crate::backend::{Job, Op, Snapshot, StoreError};
use crate::store::{Announce, Families, Outcome, PeerSink, SwarmCounts, SwarmInfo, Totals};

const PREFIX: &str = "bs:";
/// Stale peers an announce drops from its swarm, of each kind.
const PRUNE: u32 = 256;
/// Idle swarms the cleaner drops per script.
const GC_BATCH: u32 = 1000;
/// Swarms read per round trip for the stats page and a full scrape.
const CHUNK: isize = 500;

/// Functions the scripts share.
const PRELUDE: &str = r#"
local BIG = 4294967296
local function add_totals(tot, s, l, d)
  if s ~= 0 then redis.call('HINCRBY', tot, 's', s) end
  if l ~= 0 then redis.call('HINCRBY', tot, 'l', l) end
  if d ~= 0 then redis.call('HINCRBY', tot, 'd', d) end
end
-- Seeders and leechers of sorted set z seen since cutoff.
local function counts(z, cutoff)
  return redis.call('ZCOUNT', z, BIG + cutoff, '+inf'), redis.call('ZCOUNT', z, cutoff, '(' .. BIG)
end
-- Drops the peers of z (and their fields in hash p) last seen before cutoff, at most limit of
-- each kind; returns the seeders and leechers dropped.
local function prune(z, p, cutoff, limit)
  local l = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
  local s = redis.call('ZRANGEBYSCORE', z, BIG, '(' .. (BIG + cutoff), 'LIMIT', 0, limit)
  for _, gone in ipairs({l, s}) do
    if #gone > 0 then
      redis.call('ZREM', z, unpack(gone))
      redis.call('HDEL', p, unpack(gone))
    end
  end
  return #s, #l
end
-- Deletes swarm h (not its entry in the swarm index); returns its peers.
local function drop_swarm(prefix, h, tot)
  local p, z4, z6 = prefix .. 'p:' .. h, prefix .. '4:' .. h, prefix .. '6:' .. h
  local s = redis.call('ZCOUNT', z4, BIG, '+inf') + redis.call('ZCOUNT', z6, BIG, '+inf')
  local n = redis.call('ZCARD', z4) + redis.call('ZCARD', z6)
  local d = tonumber(redis.call('HGET', p, 'd') or 0)
  redis.call('DEL', p, z4, z6)
  add_totals(tot, -s, s - n, -d)
  return n
end
-- Drops up to limit swarms idle since before cutoff; returns the peers and swarms dropped.
local function gc(prefix, sw, tot, cutoff, limit)
  local dead = redis.call('ZRANGEBYSCORE', sw, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
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

/// KEYS: p, z4, z6, swarms, totals. ARGV: prefix, info-hash, address, peer id, seeder (1/0),
/// event (n, c, s, x: none, completed, started, stopped), numwant, both families (1/0),
/// timeout, most peers per swarm, most peers in all, a random number, with ids (1/0), skew.
/// Returns seeders, leechers, downloaded, outcome (0 ok, 1 full), the peers of the announcer's
/// family (addresses end to end), those of the other, and their ids in that order.
const ANNOUNCE: &str = r#"
local P, Z4, Z6, SW, TOT = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, h, me, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local seeder, event, want, both = ARGV[5] == '1', ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local max_swarm, max_total, rand, with_ids = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13] == '1'
local now, cutoff = clock(ARGV[9], ARGV[14])

local ps4, pl4 = prune(Z4, P, cutoff, PRUNE)
local ps6, pl6 = prune(Z6, P, cutoff, PRUNE)
add_totals(TOT, -(ps4 + ps6), -(pl4 + pl6), 0)
gc(prefix, SW, TOT, cutoff, 2)

local Z, OTHER = Z4, Z6
if #me ~= 6 then Z, OTHER = Z6, Z4 end
local old = redis.call('ZSCORE', Z, me)
local outcome = 0
if event == 'x' then
  if old then
    redis.call('ZREM', Z, me)
    redis.call('HDEL', P, me)
    if tonumber(old) >= BIG then add_totals(TOT, -1, 0, 0) else add_totals(TOT, 0, -1, 0) end
  end
  if redis.call('ZSCORE', SW, h) then redis.call('ZADD', SW, now, h) end
else
  local score = now
  if seeder then score = BIG + now end
  local completing = event == 'c'
  if old then
    local was = tonumber(old) >= BIG
    redis.call('ZADD', Z, score, me)
    if was ~= seeder then
      if seeder then add_totals(TOT, 1, -1, 0) else add_totals(TOT, -1, 1, 0) end
    end
    local v = redis.call('HGET', P, me) or ''
    local flag = string.sub(v, 1, 1)
    if flag ~= 'c' then flag = '-' end
    if completing and flag ~= 'c' then
      flag = 'c'
      redis.call('HINCRBY', P, 'd', 1)
      add_totals(TOT, 0, 0, 1)
    end
    if flag .. id ~= v then redis.call('HSET', P, me, flag .. id) end
  else
    local n = redis.call('ZCARD', Z4) + redis.call('ZCARD', Z6)
    local t = redis.call('HMGET', TOT, 's', 'l')
    if n >= max_swarm or tonumber(t[1] or 0) + tonumber(t[2] or 0) >= max_total then
      outcome = 1
    else
      redis.call('ZADD', Z, score, me)
      if completing then
        redis.call('HSET', P, me, 'c' .. id)
        redis.call('HINCRBY', P, 'd', 1)
        add_totals(TOT, 0, 0, 1)
      else
        redis.call('HSET', P, me, '-' .. id)
      end
      if seeder then add_totals(TOT, 1, 0, 0) else add_totals(TOT, 0, 1, 0) end
    end
  end
  if outcome == 0 or redis.call('EXISTS', P) == 1 then redis.call('ZADD', SW, now, h) end
end

-- Up to `want` peers of z from a random rank on, wrapping around, skipping the announcer and,
-- for a seeder, seeders (they rank last).
local function take(z, want, out)
  if want <= 0 then return 0 end
  local n
  if seeder then n = redis.call('ZCOUNT', z, '-inf', '(' .. BIG) else n = redis.call('ZCARD', z) end
  if n == 0 then return 0 end
  local start = rand % n
  local got = 0
  for _, r in ipairs({{start, n - 1}, {0, start - 1}}) do
    if got < want and r[2] >= r[1] then
      for _, a in ipairs(redis.call('ZRANGE', z, r[1], math.min(r[2], r[1] + want - got))) do
        if a ~= me and got < want then
          out[#out + 1] = a
          got = got + 1
        end
      end
    end
  end
  return got
end
local taken = {{}, {}}
if want > 0 then
  local got = take(Z, want, taken[1])
  if both then take(OTHER, want - got, taken[2]) end
end
local ids = {}
if with_ids then
  for _, list in ipairs(taken) do
    if #list > 0 then
      local vs = redis.call('HMGET', P, unpack(list))
      for i = 1, #list do
        if vs[i] then ids[#ids + 1] = string.sub(vs[i], 2) else ids[#ids + 1] = string.rep('\0', 20) end
      end
    end
  end
end
local s4, l4 = counts(Z4, cutoff)
local s6, l6 = counts(Z6, cutoff)
local d = tonumber(redis.call('HGET', P, 'd') or 0)
return {s4 + s6, l4 + l6, d, outcome, table.concat(taken[1]), table.concat(taken[2]), table.concat(ids)}
"#;

/// ARGV: prefix, timeout, skew, info-hashes. Returns seeders, leechers, downloaded of each.
const SCRAPE: &str = r#"
local prefix = ARGV[1]
local now, cutoff = clock(ARGV[2], ARGV[3])
local out = {}
for i = 4, #ARGV do
  local h = ARGV[i]
  local s4, l4 = counts(prefix .. '4:' .. h, cutoff)
  local s6, l6 = counts(prefix .. '6:' .. h, cutoff)
  out[#out + 1] = s4 + s6
  out[#out + 1] = l4 + l6
  out[#out + 1] = tonumber(redis.call('HGET', prefix .. 'p:' .. h, 'd') or 0)
end
return out
"#;

/// KEYS: swarms, totals. ARGV: prefix, timeout, skew, limit. Returns peers and swarms dropped.
const GC: &str = r#"
local now, cutoff = clock(ARGV[2], ARGV[3])
local peers, swarms = gc(ARGV[1], KEYS[1], KEYS[2], cutoff, tonumber(ARGV[4]))
return {peers, swarms}
"#;

/// KEYS: swarms, totals. ARGV: prefix, info-hashes. Drops those swarms; returns their peers.
const DROP: &str = r#"
local peers = 0
for i = 2, #ARGV do
  peers = peers + drop_swarm(ARGV[1], ARGV[i], KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return peers
"#;

/// A script's text and its SHA-1 (what `EVALSHA` names it by).
struct Script {
    code: String,
    sha: String,
}

impl Script {
    fn new(body: &str) -> Script {
        let code =
            format!("{}\n{}", PRELUDE.replace("PRUNE", &PRUNE.to_string()), body.replace("PRUNE", &PRUNE.to_string()));
        let sha = redis::Script::new(&code).get_hash().to_owned();
        Script { code, sha }
    }
}

struct Scripts {
    announce: Script,
    scrape: Script,
    gc: Script,
    drop: Script,
}

/// Swarms in Redis. See the module documentation.
pub struct RedisStore {
    conn: ConnectionManager,
    /// Runs the connection's tasks (and the UDP workers' round trips); shut down on drop.
    rt: Option<tokio::runtime::Runtime>,
    scripts: Scripts,
    /// The server, for messages (without a password).
    shown: String,
    timeout: u32,
    max_per_swarm: u32,
    max_total: u64,
    /// Seconds added to Redis's clock (the conformance tests' expiry; 0 otherwise).
    skew: AtomicI64,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("Redis: {e}"))
}

fn key(kind: &str, h: &InfoHash) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + kind.len() + 20);
    k.extend_from_slice(PREFIX.as_bytes());
    k.extend_from_slice(kind.as_bytes());
    k.extend_from_slice(&h.0);
    k
}

/// The address without a password.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
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
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = {
            let _in = rt.enter();
            ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| format!("store.redis_url {:?}: {e}", shown(url)))?
        };
        Ok(RedisStore {
            conn,
            rt: Some(rt),
            scripts: Scripts {
                announce: Script::new(ANNOUNCE),
                scrape: Script::new(SCRAPE),
                gc: Script::new(GC),
                drop: Script::new(DROP),
            },
            shown: shown(url),
            timeout,
            max_per_swarm,
            max_total,
            skew: AtomicI64::new(0),
        })
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

    fn skew(&self) -> i64 {
        self.skew.load(Ordering::Relaxed)
    }

    /// Sends `pipe` (its commands `EVALSHA`s of these scripts); a Redis that does not know
    /// them is given them and asked again.
    async fn query(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.conn.clone();
        let n = pipe.len();
        for attempt in 0..2 {
            let values = conn.req_packed_commands(pipe, 0, n).await.map_err(err)?;
            let unknown = values.iter().any(|v| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"));
            if !unknown {
                return Ok(values);
            }
            if attempt == 0 {
                let mut load = redis::pipe();
                for s in [&self.scripts.announce, &self.scripts.scrape, &self.scripts.gc, &self.scripts.drop] {
                    load.cmd("SCRIPT").arg("LOAD").arg(&s.code);
                }
                load.query_async::<()>(&mut conn).await.map_err(err)?;
            }
        }
        Err(err("the scripts were not kept"))
    }

    fn push_announce(&self, pipe: &mut Pipeline, a: &Announce, with_ids: bool) {
        let h = &a.info_hash;
        let me: Vec<u8> = match a.addr.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => crate::store::compact4(ip, a.addr.port()).to_vec(),
            std::net::IpAddr::V6(ip) => crate::store::compact6(ip, a.addr.port()).to_vec(),
        };
        let event = match a.event {
            bitswarm_tracker_proto::Event::None => "n",
            bitswarm_tracker_proto::Event::Completed => "c",
            bitswarm_tracker_proto::Event::Started => "s",
            bitswarm_tracker_proto::Event::Stopped => "x",
        };
        pipe.cmd("EVALSHA")
            .arg(&self.scripts.announce.sha)
            .arg(5)
            .arg(key("p:", h))
            .arg(key("4:", h))
            .arg(key("6:", h))
            .arg(format!("{PREFIX}swarms"))
            .arg(format!("{PREFIX}totals"))
            .arg(PREFIX)
            .arg(&h.0[..])
            .arg(me)
            .arg(&a.peer_id.0[..])
            .arg(if a.left == 0 { "1" } else { "0" })
            .arg(event)
            .arg(a.numwant.min(10_000))
            .arg(if a.families == Families::Both { "1" } else { "0" })
            .arg(self.timeout)
            .arg(self.max_per_swarm)
            .arg(self.max_total)
            .arg(crate::store::rand_u64() as u32)
            .arg(if with_ids { "1" } else { "0" })
            .arg(self.skew());
    }

    fn push_scrape(&self, pipe: &mut Pipeline, hashes: &[InfoHash]) {
        let c = pipe.cmd("EVALSHA").arg(&self.scripts.scrape.sha).arg(0).arg(PREFIX).arg(self.timeout).arg(self.skew());
        for h in hashes {
            c.arg(&h.0[..]);
        }
    }

    pub async fn announce(&self, a: &Announce, out: &mut impl PeerSink) -> Result<(SwarmCounts, Outcome), StoreError> {
        let mut pipe = redis::pipe();
        self.push_announce(&mut pipe, a, out.wants_ids());
        let v = self.query(&pipe).await?;
        announced(a, v.into_iter().next(), out)
    }

    pub async fn scrape(&self, hashes: &[InfoHash]) -> Result<Vec<SwarmCounts>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        self.push_scrape(&mut pipe, hashes);
        let v = self.query(&pipe).await?;
        scraped(hashes.len(), v.into_iter().next())
    }

    /// A batch in one pipeline (one round trip).
    pub async fn run<S: PeerSink>(&self, jobs: &mut [Job], sinks: &mut [S]) {
        let mut pipe = redis::pipe();
        for j in jobs.iter() {
            match &j.op {
                Op::Announce { announce, .. } => self.push_announce(&mut pipe, announce, sinks[j.slot].wants_ids()),
                Op::Scrape { hashes, .. } if hashes.is_empty() => {
                    pipe.cmd("PING");
                }
                Op::Scrape { hashes, .. } => self.push_scrape(&mut pipe, hashes),
            }
        }
        let values = self.query(&pipe).await;
        let mut values = match values {
            Ok(v) => v.into_iter(),
            Err(e) => {
                for j in jobs.iter_mut() {
                    match &mut j.op {
                        Op::Announce { result, .. } => *result = Err(e.clone()),
                        Op::Scrape { result, .. } => *result = Err(e.clone()),
                    }
                }
                return;
            }
        };
        for j in jobs.iter_mut() {
            let v = values.next();
            match &mut j.op {
                Op::Announce { announce, result } => *result = announced(announce, v, &mut sinks[j.slot]),
                Op::Scrape { hashes, result } if hashes.is_empty() => *result = Ok(Vec::new()),
                Op::Scrape { hashes, result } => *result = scraped(hashes.len(), v),
            }
        }
    }

    /// Drops the swarms idle past the timeout (a batch at a time), with their peers.
    pub async fn clean(&self) -> Result<(u64, u64), StoreError> {
        let (mut peers, mut swarms) = (0u64, 0u64);
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("EVALSHA")
                .arg(&self.scripts.gc.sha)
                .arg(2)
                .arg(format!("{PREFIX}swarms"))
                .arg(format!("{PREFIX}totals"))
                .arg(PREFIX)
                .arg(self.timeout)
                .arg(self.skew())
                .arg(GC_BATCH);
            let v = self.query(&pipe).await?;
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
        let mut conn = self.conn.clone();
        let mut all = Vec::new();
        let mut start = 0isize;
        loop {
            let chunk: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                .arg(format!("{PREFIX}swarms"))
                .arg(start)
                .arg(start + CHUNK - 1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let got = chunk.len();
            all.extend(chunk.into_iter().filter_map(|(h, t)| Some((InfoHash(h.try_into().ok()?), t as i64))));
            if (got as isize) < CHUNK {
                break;
            }
            start += CHUNK;
        }
        let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.map_err(err)?;
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
            let mut pipe = redis::pipe();
            let c = pipe
                .cmd("EVALSHA")
                .arg(&self.scripts.drop.sha)
                .arg(2)
                .arg(format!("{PREFIX}swarms"))
                .arg(format!("{PREFIX}totals"))
                .arg(PREFIX);
            for h in chunk {
                c.arg(&h.0[..]);
            }
            let v = self.query(&pipe).await?;
            peers += match v.into_iter().next() {
                Some(Value::Int(n)) => n.max(0) as u64,
                other => return Err(err(format!("unexpected reply {other:?}"))),
            };
        }
        Ok((peers, gone.len() as u64))
    }

    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let mut conn = self.conn.clone();
        let ((s, l, d), swarms): TotalsReply = redis::pipe()
            .cmd("HMGET")
            .arg(format!("{PREFIX}totals"))
            .arg("s")
            .arg("l")
            .arg("d")
            .cmd("ZCARD")
            .arg(format!("{PREFIX}swarms"))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
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

    /// Whether Redis answers now (the start-up line says so).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await.map_err(err)
    }

    /// Redis's `INFO memory` `used_memory` (the bench's bytes per peer).
    pub async fn used_memory(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.map_err(err)?;
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
    match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::Int(n) => Ok(n),
                other => Err(err(format!("unexpected reply {other:?}"))),
            })
            .collect(),
        Some(Value::ServerError(e)) => Err(err(e)),
        other => Err(err(format!("unexpected reply {other:?}"))),
    }
}

fn scraped(n: usize, v: Option<Value>) -> Result<Vec<SwarmCounts>, StoreError> {
    let v = ints(v)?;
    if v.len() != n * 3 {
        return Err(err("a scrape reply of the wrong length"));
    }
    let c = |x: i64| x.clamp(0, i64::from(u32::MAX)) as u32;
    Ok(v.chunks_exact(3).map(|x| SwarmCounts { seeders: c(x[0]), leechers: c(x[1]), downloaded: c(x[2]) }).collect())
}

/// Reads an announce script's reply and hands its peers to `out`.
fn announced(a: &Announce, v: Option<Value>, out: &mut impl PeerSink) -> Result<(SwarmCounts, Outcome), StoreError> {
    let items = match v {
        Some(Value::Array(items)) if items.len() == 7 => items,
        Some(Value::ServerError(e)) => return Err(err(e)),
        other => return Err(err(format!("unexpected reply {other:?}"))),
    };
    let mut it = items.into_iter();
    let mut int = || match it.next() {
        Some(Value::Int(n)) => Ok((n, Vec::new())),
        Some(Value::BulkString(b)) => Ok((0, b)),
        other => Err(err(format!("unexpected reply item {other:?}"))),
    };
    let c = |x: i64| x.clamp(0, i64::from(u32::MAX)) as u32;
    let (s, l, d, outcome) = (int()?.0, int()?.0, int()?.0, int()?.0);
    let (same, other, ids) = (int()?.1, int()?.1, int()?.1);
    let v4 = a.addr.ip().to_canonical().is_ipv4();
    // The ids come in the order of the peers: the announcer's family first.
    let mut ids = ids.chunks_exact(20).map(|i| <[u8; 20]>::try_from(i).unwrap_or([0; 20]));
    give(&same, v4, &mut ids, out);
    give(&other, !v4, &mut ids, out);
    let counts = SwarmCounts { seeders: c(s), leechers: c(l), downloaded: c(d) };
    Ok((counts, if outcome == 0 { Outcome::Ok } else { Outcome::Full }))
}

/// Hands compact addresses of one family, end to end, with their ids, to `out`.
fn give(addrs: &[u8], v4: bool, ids: &mut impl Iterator<Item = [u8; 20]>, out: &mut impl PeerSink) {
    if v4 {
        for p in addrs.chunks_exact(6) {
            let id = ids.next().unwrap_or([0; 20]);
            if let Ok(p) = <&[u8; 6]>::try_from(p) {
                out.v4(p, &id);
            }
        }
    } else {
        for p in addrs.chunks_exact(18) {
            let id = ids.next().unwrap_or([0; 20]);
            if let Ok(p) = <&[u8; 18]>::try_from(p) {
                out.v6(p, &id);
            }
        }
    }
}
