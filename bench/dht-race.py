#!/usr/bin/python3
"""DHT race (issue 20, item 7b): an info-hash-only magnet link through a small DHT on loopback.

In a network namespace that has only `lo` (the script re-runs itself under `unshare -rn` when it
is not in one), every node on its own 127.X.Y.1 (a /24 each, as the DHT tests do):
  - a `bitswarm dht` router (127.0.1.1) and NODES libtorrent DHT nodes (127.0.2.1, …);
  - `bitswarm seed` (127.0.9.1) of a 16 MiB file (--size), its torrent with no tracker, ready
    once it has announced the torrent on the DHT;
  - then RUNS rounds (5), each: `bitswarm join 'magnet:?xt=urn:btih:…' --exit-when-done`,
    libtorrent (python3-libtorrent, bench/lt_dht_race.py) and aria2c with the same link, one
    after the other (the order turning each round), each a fresh process with an empty routing
    table on an address of its own for the round. Those that ran before stay in the DHT as dead
    nodes and dead peers, as departed peers do in a real DHT.
For each download: seconds from the start of the process to the first peer connection, as the
seeder sees it (its log line of the downloader's handshake: the same clock for every client,
metadata fetch included), and to the complete download (the process's exit, or libtorrent's
"done" after every piece checked); every copy is compared with the original. Prints medians
and ratios against libtorrent, and writes them with the raw runs to bench/results/dht-race-DATE.md.

--idle N (0 to skip): also `bitswarm seed` of N small public torrents (16 KiB each) with the
DHT on in the same small DHT: the time until every one is announced, then CPU (utime+stime,
% of one core) over --idle-secs (60) and RSS.

--fresh makes the DHT, the seeder and its announce anew for every download, so that no
downloader meets the dead nodes of those before it (libtorrent's bootstrap waits for them).

Usage: bench/dht-race.py [--runs 5] [--size 16M] [--nodes 4] [--idle 1000] [--idle-secs 60]
       [--only bitswarm,libtorrent,aria2] [--fresh] [--no-write]
"""
import argparse, datetime, filecmp, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/bitswarm")
LT = os.path.join(ROOT, "bench/lt_dht_race.py")
CLK = os.sysconf("SC_CLK_TCK")
DOWNLOADERS = ["bitswarm", "libtorrent", "aria2"]
DHT_LOG = "warn,bitswarm_peer::dht=debug,bitswarm_peer::conn=debug"


def lo_only():
    ifs = [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]]
    return ifs == ["lo"]


class Proc:
    """A background program whose output lines are collected with the time each arrived."""

    def __init__(self, argv, env=None, **kw):
        self.t0 = time.monotonic()
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=e, **kw)
        self.lines, self.cv = [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            with self.cv:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
                self.cv.notify_all()
        with self.cv:
            self.lines.append((time.monotonic(), None))
            self.cv.notify_all()

    def wait_line(self, pred, timeout=120, after=0.0):
        """The first line (time, text) at or after `after` that `pred` accepts."""
        end = time.time() + timeout
        with self.cv:
            while True:
                for t, l in self.lines:
                    if t < after:
                        continue
                    if l is None:
                        raise RuntimeError("%s ended:\n%s" % (self.p.args[0], self.text()))
                    if pred(l):
                        return t, l
                left = end - time.time()
                if left <= 0:
                    raise RuntimeError("%s: no expected output in %ds:\n%s" % (self.p.args[0], timeout, self.text()[-3000:]))
                self.cv.wait(left)

    def count(self, pred):
        with self.cv:
            return sum(1 for _, l in self.lines if l is not None and pred(l))

    def text(self):
        return "\n".join(l for _, l in self.lines if l)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def free_port(host):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def magnet_of(torrent):
    out = subprocess.run([BIN, "torrent", "magnet", torrent], check=True, capture_output=True, text=True).stdout
    return out.strip().split("&")[0]


def download(who, link, out, host, router, seeder, work):
    """One download; returns (first peer s, done s)."""
    if who == "bitswarm":
        argv = [BIN, "join", link, "-d", out, "--port", "0", "--bind", host, "--dht-router", router, "-q",
                "--exit-when-done"]
    elif who == "libtorrent":
        argv = ["/usr/bin/python3", LT, "leech", link, out, host, router]
    else:
        dht_file = os.path.join(work, "aria2-dht.dat")
        if os.path.exists(dht_file):
            os.unlink(dht_file)
        argv = ["aria2c", "--dir=" + out, "--listen-port=%d" % free_port(host),
                "--dht-listen-port=%d" % free_port(host), "--dht-entry-point=" + router, "--dht-file-path=" + dht_file,
                "--no-conf=true", "--enable-dht=true", "--enable-dht6=false", "--disable-ipv6=true",
                "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-time=0", "--bt-stop-timeout=100",
                "--summary-interval=0", "--console-log-level=warn", "--file-allocation=none", link]
    cache = os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    # XDG_CACHE_HOME of its own: `join` keeps fetched metadata there, which would spare the next
    # run its metadata fetch.
    p = Proc(argv, env={"BITSWARM_LOG": os.environ.get("JOIN_LOG", "warn"), "XDG_CACHE_HOME": cache})
    try:
        try:
            t_peer, _ = seeder.wait_line(lambda l: "connected (incoming" in l, timeout=120, after=p.t0)
        except RuntimeError:
            raise RuntimeError("%s: no connection to the seeder in 120 s:\n%s" % (who, p.text()[-3000:]))
        if who == "libtorrent":
            t_done, _ = p.wait_line(lambda l: l == "done", timeout=120)
        else:
            status = p.p.wait(timeout=120)
            t_done = time.monotonic()
            if status != 0:
                raise RuntimeError("%s exited %d:\n%s" % (who, status, p.text()))
        if os.environ.get("DHT_RACE_DEBUG"):
            print(p.text())
    finally:
        p.stop()
    return t_peer - p.t0, t_done - p.t0


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rss_mb(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) / 1024.0
    return 0.0


def idle(n, secs, work, router, log):
    """`bitswarm seed` of n small public torrents on the DHT: (s to announce all, cpu %, rss MB, windows)."""
    src = os.path.join(work, "idle-src")
    tdir = os.path.join(work, "idle-torrents")
    os.makedirs(src)
    os.makedirs(tdir)
    torrents = []
    for i in range(n):
        f = os.path.join(src, "f%05d.bin" % i)
        with open(f, "wb") as w:
            w.write(os.urandom(16 * 1024))
        t = os.path.join(tdir, "t%05d.torrent" % i)
        subprocess.run([BIN, "torrent", "create", "-q", "--no-date", "-o", t, f], check=True, stdout=subprocess.DEVNULL)
        torrents.append(t)
    host = "127.0.8.1"
    start = time.monotonic()
    p = Proc([BIN, "seed", "--port", "0", "--bind", host, "--dht-router", router, "-q", "-d", src] + torrents,
             env={"BITSWARM_LOG": "warn,bitswarm_peer::dht=debug"})
    try:
        end = time.time() + 600
        done = 0
        while done < n and time.time() < end:
            if p.p.poll() is not None:
                raise RuntimeError("idle: the seed ended:\n%s" % p.text()[-3000:])
            time.sleep(0.5)
            done = p.count(lambda l: " announced to " in l)
        announced = time.monotonic() - start
        log("idle: %d of %d torrents announced in %.1f s; settling 10 s" % (done, n, announced))
        time.sleep(10)
        windows = []
        c0, t0 = cpu_ticks(p.p.pid), time.monotonic()
        c, t = c0, t0
        while time.monotonic() - t0 < secs:
            time.sleep(min(10, secs - (time.monotonic() - t0)))
            c2, t2 = cpu_ticks(p.p.pid), time.monotonic()
            windows.append(100.0 * (c2 - c) / CLK / (t2 - t))
            c, t = c2, t2
        cpu = 100.0 * (c - c0) / CLK / (t - t0)
        return announced, cpu, rss_mb(p.p.pid), windows
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="16M")
    ap.add_argument("--nodes", type=int, default=4, help="libtorrent DHT nodes besides our router")
    ap.add_argument("--only", default=",".join(DOWNLOADERS))
    ap.add_argument("--idle", type=int, default=1000, help="torrents for the idle measure (0: skip it)")
    ap.add_argument("--idle-secs", type=int, default=60)
    ap.add_argument("--fresh", action="store_true",
                    help="a new DHT and seeder for every download: no dead nodes of earlier downloaders")
    ap.add_argument("--no-write", action="store_true", help="print only; no bench/results file")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    # A stop (SIGTERM) ends what was started, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if not lo_only():
        if not a.no_build:
            subprocess.run(["cargo", "build", "--release", "-q", "-p", "bitswarm"], cwd=ROOT, check=True)
        cmd = "ip link set lo up && exec /usr/bin/python3 %s --no-build %s" % (
            os.path.abspath(__file__), " ".join("'%s'" % x for x in sys.argv[1:] if x != "--no-build"))
        os.execvp("unshare", ["unshare", "-rn", "sh", "-c", cmd])
    for prog in (BIN, "/usr/bin/python3"):
        if not os.path.exists(prog):
            sys.exit("%s is missing" % prog)
    if not shutil.which("aria2c"):
        sys.exit("aria2c is missing: apt-get install aria2")
    size = int(a.size[:-1]) << {"K": 10, "M": 20, "G": 30}[a.size[-1]] if a.size[-1] in "KMG" else int(a.size)
    who = a.only.split(",")
    report = []

    def log(s):
        print(s, flush=True)
        report.append(s)

    work = tempfile.mkdtemp(prefix="bitswarm-dht-race-")
    procs = []
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        data = os.path.join(src, "race.bin")
        with open(data, "wb") as w:
            w.write(os.urandom(size))
        torrent = os.path.join(work, "race.torrent")
        subprocess.run([BIN, "torrent", "create", "-q", "--no-date", "-o", torrent, data], check=True,
                       stdout=subprocess.DEVNULL)
        link = magnet_of(torrent)

        def dht():
            """Our router, the libtorrent nodes and the seeder, announced: (their Procs, router, seeder)."""
            ps = []
            try:
                r = Proc([BIN, "dht", "--no-bootstrap", "--status-every", "0", "--port", "0", "--bind", "127.0.1.1"])
                ps.append(r)
                router = r.wait_line(lambda l: l.startswith("DHT node on UDP "))[1].rsplit(" ", 1)[1]
                nodes = Proc(["/usr/bin/python3", LT, "nodes", router] + ["127.0.%d.1" % (2 + i) for i in range(a.nodes)])
                ps.append(nodes)
                nodes.wait_line(lambda l: l == "ready", timeout=60)
                seeder = Proc([BIN, "seed", "--port", "0", "--bind", "127.0.9.1", "--dht-router", router, "-q", "-d",
                               src, torrent], env={"BITSWARM_LOG": DHT_LOG})
                ps.append(seeder)
                seeder.wait_line(lambda l: " announced to " in l, timeout=120)
            except BaseException:
                for p in reversed(ps):
                    p.stop()
                raise
            return ps, router, seeder

        ps, router, seeder = dht()
        procs.extend(ps)
        log("DHT: our router %s, %d libtorrent nodes; the seeder announced %s (%s)%s" % (
            router, a.nodes, link, a.size, "; all made afresh for each download (--fresh)" if a.fresh else ""))
        results = {w: [] for w in who}
        if a.runs == 0:
            who = []
        for run in range(a.runs):
            # The order turns each round: a downloader's node stays in the others' routing
            # tables (and its address in the peer stores) after it exits, and the next ones
            # meet it dead.
            for w in who[run % len(who):] + who[:run % len(who)]:
                host = "127.%d.%d.1" % (10 + 10 * who.index(w), run + 1)
                out = os.path.join(work, "out")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                if a.fresh:
                    for p in reversed(procs):
                        p.stop()
                    procs.clear()
                    ps, router, seeder = dht()
                    procs.extend(ps)
                first, done = download(w, link, out, host, router, seeder, work)
                if not filecmp.cmp(os.path.join(out, "race.bin"), data, shallow=False):
                    raise RuntimeError("%s: the copy differs" % w)
                results[w].append((first, done))
                log("run %d %-10s first peer %6.3f s  done %6.3f s" % (run + 1, w, first, done))
        med = {} if not who else {w: (statistics.median(r[0] for r in results[w]), statistics.median(r[1] for r in results[w])) for w in who}
        base = med.get("libtorrent")
        table = [] if not who else ["", "Medians of %d runs (%s, %d libtorrent DHT nodes + our router; seconds from the downloader's start):"
                 % (a.runs, a.size, a.nodes), "",
                 "| downloader | first peer | done | first peer vs libtorrent | done vs libtorrent | first peer ≤ libtorrent's, runs |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for w in who:
            f, d = med[w]
            rf = "%.3g×" % (f / base[0]) if base and base[0] else ""
            rd = "%.3g×" % (d / base[1]) if base and base[1] else ""
            wins = ""
            if base and "libtorrent" in results and w != "libtorrent":
                wins = "%d of %d" % (sum(1 for x, y in zip(results[w], results["libtorrent"]) if x[0] <= y[0]), a.runs)
            table.append("| %s | %.3f s | %.3f s | %s | %s | %s |" % (w, f, d, rf, rd, wins))
        for l in table:
            log(l)
        if a.idle:
            announced, cpu, rss, windows = idle(a.idle, a.idle_secs, work, router, log)
            log("")
            log("Idle with the DHT on: `bitswarm seed` of %d torrents of 16 KiB: announced %.1f s after the start; "
                "then CPU %.2f%% of one core over %d s (10 s windows: %s), RSS %.1f MB"
                % (a.idle, announced, cpu, a.idle_secs, ", ".join("%.2f" % x for x in windows), rss))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not a.no_write:
        date = datetime.date.today().isoformat()
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        path = os.path.join(ROOT, "bench/results/dht-race-%s%s.md" % (date, "-fresh" if a.fresh else ""))
        with open(path, "w") as f:
            f.write("# DHT race: an info-hash-only magnet link through a loopback DHT (issue 20, item 7b)\n\n")
            f.write("`bench/dht-race.py %s` at `%s`, %s:\n\n```\n" % (" ".join(x for x in sys.argv[1:] if x != "--no-build"),
                                                                   rev, date))
            f.write("\n".join(report) + "\n```\n")
        print("written to %s" % path)


if __name__ == "__main__":
    main()
