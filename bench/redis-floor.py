#!/usr/bin/env python3
"""What an announce must cost Redis at least, whatever a tracker on it does.

The data has the shape of bench/tracker.sh's UDP runs (1,000 swarms of 1,000 peers: a hash per
swarm of compact address -> 29-byte entry, and a packed list of the addresses), and a
re-announce needs at least: read the peer's entry and the swarm's state (HMGET of 2 fields),
write the entry back with its new time (HSET), read 50 peers (GETRANGE of 300 bytes). This
script measures Redis's own CPU (from /proc, redis-server pinned to CPU 0, redis-cli on CPU 1)
per announce for those three commands:
  plain: pipelined as they are (no atomicity: a real tracker could not decide what to write
         from what it read, and its counts would drift under concurrent instances);
  lua:   inside one FCALL of a Lua function per 64 announces, which does nothing else (the
         atomic form bitswarm uses; its own function does more work than this);
  lua2:  the HMGET and HSET inside the FCALL and the GETRANGE pipelined after it (what
         bitswarm does since 2026-12-07: Lua's strings are hashed byte by byte when made, so
         peers are not brought into Lua).
  calls: what lua2's calls cost without their data: the same FCALLs and GETRANGEs, but the
         HMGET and HSET on one small hash (no swarm looked up, nothing out of the CPU's cache):
         the price of a redis.call from Lua itself.
Each is run RUNS times (default 5) over 256,000 announces; prints the medians.

Usage: bench/redis-floor.py [RUNS]   (needs redis-server and redis-cli)
"""
import os, random, shutil, socket, statistics, struct, subprocess, sys, tempfile, time

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
N, B, SWARMS, PEERS = 256_000, 64, 1000, 1000
for p in ("redis-server", "redis-cli"):
    if not shutil.which(p):
        sys.exit(f"missing {p}: apt-get install -y redis-server")


def cmd(*a):
    out = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(out)


def addr(s, i):
    return struct.pack(">IH", 0x0A000000 + s, i)


def entry(i, t):
    return struct.pack(">BII", 76, i, t) + b"x" * 20


def fill():
    for s in range(SWARMS):
        h = b"%020d" % s
        args = []
        for i in range(PEERS):
            args += [addr(s, i), entry(i, 1000)]
        yield cmd(b"HSET", b"p:" + h, b"m", b"\0" * 36, *args)
        yield cmd(b"SET", b"L:" + h, b"".join(addr(s, i) for i in range(PEERS)))


def announces(mode):
    rnd = random.Random(1)
    for _ in range(N // B):
        jobs = []
        for _ in range(B):
            s, i = rnd.randrange(SWARMS), rnd.randrange(PEERS)
            o = rnd.randrange(PEERS - 50) * 6
            jobs.append((b"%020d" % s, addr(s, i), entry(i, 1001), o))
        if mode == "plain":
            for h, a, v, o in jobs:
                yield cmd(b"HMGET", b"p:" + h, a, b"m")
                yield cmd(b"HSET", b"p:" + h, a, v)
                yield cmd(b"GETRANGE", b"L:" + h, o, o + 299)
        else:
            args = []
            for h, a, v, o in jobs:
                args += [h, a, v, o, o + 299]
            yield cmd(b"FCALL", b"floor_" + mode.encode(), 0, *args)
            if mode in ("lua2", "calls"):
                for h, a, v, o in jobs:
                    yield cmd(b"GETRANGE", b"L:" + h, o, o + 299)


LIB = """#!lua name=floor
local function run(ARGV, cut)
  local out = {}
  for i = 1, #ARGV, 5 do
    local P = 'p:' .. ARGV[i]
    redis.call('HMGET', P, ARGV[i + 1], 'm')
    redis.call('HSET', P, ARGV[i + 1], ARGV[i + 2])
    if cut then out[#out + 1] = redis.call('GETRANGE', 'L:' .. ARGV[i], ARGV[i + 3], ARGV[i + 4]) end
  end
  return out
end
redis.register_function('floor_lua', function(_, ARGV) return run(ARGV, true) end)
redis.register_function('floor_lua2', function(_, ARGV) return run(ARGV, false) end)
redis.register_function('floor_calls', function(_, ARGV)
  for i = 1, #ARGV, 5 do
    redis.call('HMGET', 'small', 'f', 'm')
    redis.call('HSET', 'small', 'f', ARGV[i + 2])
  end
  return {}
end)
"""


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])


def main():
    d = tempfile.mkdtemp(prefix="redis-floor.")
    sock = os.path.join(d, "r.sock")
    srv = subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", "0", "--unixsocket", sock,
                            "--save", "", "--appendonly", "no", "--dir", d, "--loglevel", "warning"],
                           stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        cli = ["redis-cli", "-s", sock]
        subprocess.run(cli + ["function", "load", "replace", LIB], check=True, stdout=subprocess.DEVNULL)

        def pipe(data):
            r = subprocess.run(["taskset", "-c", "1"] + cli + ["--pipe"], input=data, capture_output=True)
            if b"errors: 0" not in r.stdout:
                sys.exit(f"redis-cli --pipe: {r.stdout[-300:]!r}")

        pipe(b"".join(fill()))
        data = {m: b"".join(announces(m)) for m in ("plain", "lua", "lua2", "calls")}
        hz = os.sysconf("SC_CLK_TCK")
        got = {m: [] for m in data}
        for _ in range(RUNS):
            for m, payload in data.items():
                t0 = ticks(srv.pid)
                pipe(payload)
                got[m].append((ticks(srv.pid) - t0) / hz * 1e6 / N)
        print(f"Redis CPU per announce (us), medians of {RUNS} runs of {N:,} announces, 1,000 swarms of 1,000 peers:")
        for m, v in got.items():
            print(f"  {m}: {statistics.median(v):.2f} (runs: {', '.join(f'{x:.2f}' for x in v)})")
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(d, ignore_errors=True)


main()
