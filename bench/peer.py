#!/usr/bin/env python3
"""Peer benchmark: a file of random data (1 GiB by default) over loopback, one seeder and one
leecher, for bitswarm, libtorrent (TCP: uTP off on both sides), aria2 and rqbit, and bitswarm
paired with each. For each pair: the leecher's wall time from its start to its exit (start-up
included), its CPU time (user + system) and its peak RSS, medians over RUNS runs; the runs of
all pairs are interleaved so that noise spreads evenly. The seeder is started and ready first;
every pair announces to a fresh `bitswarm tracker`, and the leecher's copy is compared with the
original after each run. Just before each leecher starts, memory is written and freed so that
every leecher's page cache starts alike (see prefault_memory; --no-prefault leaves it out).

Usage: bench/peer.py [--runs 3] [--warmup 1] [--size 1G] [--pairs bitswarm>bitswarm,libtorrent>libtorrent]
       [--no-prefault]
"""
import argparse, filecmp, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

# Every bitswarm this starts runs without a DHT node and without Local Service Discovery, as
# the other programs here run without theirs (none looks for the public routers, nothing
# multicasts).
os.environ["BITSWARM_NO_DHT"] = "1"
os.environ["BITSWARM_NO_LSD"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/bitswarm")
LT = os.path.join(ROOT, "crates/bitswarm/tests/support/lt_peer.py")
RQBIT = os.path.expanduser(os.environ.get("ANCHORS", "~/.cache/bitswarm-anchors") + "/bin/rqbit")
QUIET = ["--enable-dht=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--summary-interval=0",
         "--console-log-level=warn", "--no-conf=true"]
RQ = ["-v", "warn", "--disable-dht", "--disable-dht-persistence", "--disable-lsd", "--disable-upnp-port-forward"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    """A background program whose output lines are collected."""

    def __init__(self, argv, **kw):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.lines, self.cv = [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            with self.cv:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.lines.append(None)
            self.cv.notify_all()

    def wait_line(self, pred, timeout=120):
        end = time.time() + timeout
        with self.cv:
            while True:
                for l in self.lines:
                    if l is None:
                        raise RuntimeError("%s ended: %s" % (self.p.args[0], "\n".join(x for x in self.lines if x)))
                    if pred(l):
                        return l
                left = end - time.time()
                if left <= 0:
                    raise RuntimeError("%s: no expected output in %ds" % (self.p.args[0], timeout))
                self.cv.wait(left)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on %d" % port)


# Seeders: start, wait until ready to serve, return (Proc, port).
def seed_bitswarm(t, data, host="127.0.0.1"):
    p = Proc([BIN, "seed", t, "-d", data, "--port", "0", "--bind", host, "-q"])
    return p, int(p.wait_line(lambda l: l.startswith("listening on ")).rsplit(":", 1)[1])

def seed_libtorrent(t, data):
    p = Proc(["/usr/bin/python3", LT, "seed", t, data], env=dict(os.environ, LT_PEER_TIMEOUT="3600"))
    port = int(p.wait_line(lambda l: l.startswith("port "))[5:])
    p.wait_line(lambda l: l == "seeding")
    return p, port

def seed_aria2(t, data):
    port = free_port()
    p = Proc(["aria2c", "-d", data, "--listen-port=%d" % port, "--seed-ratio=0", "--bt-seed-unverified=true",
              "--check-integrity=false"] + QUIET + [t])
    wait_port(port)
    return p, port

def seed_rqbit(t, data):
    port = free_port()
    p = Proc([RQBIT] + RQ[:1] + ["info"] + RQ[2:] + ["--listen-port", str(port), "--http-api-listen-addr",
             "127.0.0.1:0", "download", "--overwrite", "-o", data, t])
    p.wait_line(lambda l: "Initial check results" in l)
    return p, port


# Leechers: the command that downloads into `out` and exits when done.
def leech_bitswarm(t, out, seed_port):
    return [BIN, "join", t, "-d", out, "--port", "0", "--bind", "127.0.0.1", "--peer", "127.0.0.1:%d" % seed_port,
            "--exit-when-done", "-q"]

def leech_libtorrent(t, out, seed_port):
    return ["/usr/bin/python3", LT, "leech", t, out, "127.0.0.1:%d" % seed_port]

def leech_aria2(t, out, seed_port):
    return ["aria2c", "-d", out, "--listen-port=%d" % free_port(), "--seed-time=0", "--file-allocation=none"] + QUIET + [t]

def leech_rqbit(t, out, seed_port):
    return [RQBIT] + RQ + ["--listen-port", str(free_port()), "--http-api-listen-addr", "127.0.0.1:0", "download",
                           "--disable-http-api", "-o", out, "--initial-peers", "127.0.0.1:%d" % seed_port, "-e", t]


SEED = {"bitswarm": seed_bitswarm, "libtorrent": seed_libtorrent, "aria2": seed_aria2, "rqbit": seed_rqbit}
LEECH = {"bitswarm": leech_bitswarm, "libtorrent": leech_libtorrent, "aria2": leech_aria2, "rqbit": leech_rqbit}
PAIRS = ["bitswarm>bitswarm", "libtorrent>libtorrent", "aria2>aria2", "rqbit>rqbit",
         "bitswarm>libtorrent", "libtorrent>bitswarm", "bitswarm>aria2", "aria2>bitswarm",
         "bitswarm>rqbit", "rqbit>bitswarm"]


def prefault_memory(work, size):
    """Writes and deletes a file a quarter larger than the transfer, so that the leecher's page
    cache comes from memory this machine has just used. This VM hands freed memory back to its
    host (virtio-balloon free page reporting: "Free page reporting enabled" in dmesg), and the
    first write into such memory costs about 1.7 s per GiB here, whichever program writes; without
    this step that cost lands on whichever leecher runs after the pages were reported."""
    warm = os.path.join(work, "prefault.bin")
    n = size + size // 4
    subprocess.run(["dd", "if=/dev/zero", "of=" + warm, "bs=1M", "count=%d" % max(1, n >> 20), "status=none"], check=True)
    os.unlink(warm)


def measure(pair, work, data_file, prefault):
    seeder, leecher = pair.split(">")
    tracker = Proc([BIN, "tracker", "--http", "127.0.0.1:0", "--udp", "off"])
    try:
        addr = tracker.wait_line(lambda l: l.startswith("HTTP tracker listening on ")).rsplit(" ", 1)[1]
        torrent = os.path.join(work, "bench.torrent")
        subprocess.run([BIN, "torrent", "create", "-q", "--force", "--no-date", "--piece-size", "1M", "-t",
                        "http://%s/announce" % addr, "-o", torrent, data_file], check=True, stdout=subprocess.DEVNULL)
        seed, port = SEED[seeder](torrent, os.path.dirname(data_file))
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        try:
            # GNU time is the leecher's parent: a fork of this Python process would count
            # Python's own pages in the child's peak RSS.
            timing = os.path.join(work, "time.txt")
            if prefault:
                prefault_memory(work, os.path.getsize(data_file))
            p = subprocess.Popen(["/usr/bin/time", "-o", timing, "-f", "%e %U %S %M"] + LEECH[leecher](torrent, out, port),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                status = p.wait(timeout=600)
            except BaseException:
                p.kill()
                raise
            wall, user, system, rss_kb = (float(x) for x in open(timing).read().split()[-4:])
        finally:
            seed.stop()
        got = os.path.join(out, os.path.basename(data_file))
        if status != 0 or not os.path.exists(got) or not filecmp.cmp(got, data_file, shallow=False):
            raise RuntimeError("%s: the leecher failed (status %d) or its copy differs" % (pair, status))
        shutil.rmtree(out, ignore_errors=True)
        return wall, user + system, rss_kb / 1024.0
    finally:
        tracker.stop()


def source_file(bench_dir, size):
    """The random file of `size` bytes under `bench_dir`/peer-src (made once, kept), read into
    the page cache; returns its path."""
    data_dir = os.path.join(bench_dir, "peer-src")
    os.makedirs(data_dir, exist_ok=True)
    data_file = os.path.join(data_dir, "bench-%d.bin" % size)
    if not os.path.exists(data_file) or os.path.getsize(data_file) != size:
        with open("/dev/urandom", "rb") as r, open(data_file, "wb") as w:
            left = size
            while left:
                n = min(left, 1 << 20)
                w.write(r.read(n))
                left -= n
    with open(data_file, "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    return data_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="discarded rounds of every pair first")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/tmp/bitswarm-bench"))
    ap.add_argument("--no-prefault", action="store_true",
                    help="do not touch fresh memory before each leecher (see prefault_memory)")
    a = ap.parse_args()
    size = int(a.size[:-1]) << {"K": 10, "M": 20, "G": 30}[a.size[-1]] if a.size[-1] in "KMG" else int(a.size)
    pairs = a.pairs.split(",")
    if not os.path.exists(RQBIT):
        print("rqbit not found at %s (run ../shared/tools/anchors.sh): its pairs are left out" % RQBIT)
        pairs = [p for p in pairs if "rqbit" not in p]
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    data_file = source_file(a.dir, size)
    work = tempfile.mkdtemp(prefix="bitswarm-peer-bench-", dir=a.dir)
    results = {p: [] for p in pairs}
    try:
        # Warm-up rounds first (discarded): the first gigabyte written after other work runs
        # slower on this kind of machine (page cache and writeback state), whichever program.
        for run in range(-a.warmup, a.runs):
            for pair in pairs:
                r = measure(pair, work, data_file, not a.no_prefault)
                label = "warm-up" if run < 0 else "run %d" % (run + 1)
                if run >= 0:
                    results[pair].append(r)
                print("%-7s %-22s %6.2f s  cpu %6.2f s  rss %7.1f MB" % (label, pair, r[0], r[1], r[2]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {p: tuple(statistics.median(x[i] for x in results[p]) for i in range(3)) for p in pairs}
    base = med.get("libtorrent>libtorrent")
    print()
    print("%s over loopback, medians of %d runs (the leecher's wall time includes its start-up):" % (a.size, a.runs))
    print()
    print("| seeder → leecher | wall | throughput | leecher CPU | leecher peak RSS | speed vs libtorrent → libtorrent |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in pairs:
        w, c, m = med[p]
        ratio = "%.2f×" % (base[0] / w) if base else ""
        print("| %s | %.2f s | %.0f MB/s | %.2f s | %.0f MB | %s |" % (p.replace(">", " → "), w, size / w / 1e6, c, m, ratio))


if __name__ == "__main__":
    main()
