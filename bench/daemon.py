#!/usr/bin/env python3
"""Daemon benchmark (issue 21, item 7): many small torrents seeding in one process, for
`bitswarm daemon`, transmission-daemon, qbittorrent-nox and rqbit (`server start`), all in one
run on this machine, loopback only; then one seeder to one leecher through the daemon, against
`bitswarm seed` → `bitswarm join` measured by bench/peer.py's method in the same run.

Part 1, for each size N (--sizes) and program (--programs), one after the other:
  N torrents of 1 MiB of random data, one file each (--piece-size, 64 KiB by default), all in
  one data folder that stays on disk between runs (under --dir) and is read into the page cache
  before each program starts; each torrent names a tracker on a closed port
  (http://127.0.0.1:9/announce). Each program gets free ports and a temporary state folder
  (removed at the end) and runs with DHT, LSD, PeX, UPnP/NAT-PMP and uTP off.
  - add:     every torrent added through the program's API, one request each (Transmission RPC
             torrent-add with metainfo for bitswarm and transmission-daemon, qBittorrent's
             /api/v2/torrents/add, rqbit's POST /torrents), then the API polled until all N
             seed. One run (it is the expensive row).
  - RSS:     VmRSS of the process once all seed and --settle seconds passed.
  - idle:    utime+stime over --idle seconds (60) of seeding, % of one core (the figure is the
             whole window: /proc counts in 10 ms ticks; the 10 s windows are in the raw runs).
  - list:    every torrent through the API, median of --list-runs calls on one keep-alive
             connection, request to last byte (JSON parsing not included): torrent-get with
             id,name,status,percentDone,rateDownload; /api/v2/torrents/info;
             rqbit's GET /torrents?with_stats=true (state and speeds, as the others give; plain
             GET /torrents is in the raw runs).
  - restart: a clean stop (SIGTERM, waited for), a start on the same state, the time until the
             API says all N seed, and what the process read meanwhile (/proc/PID/io read_bytes
             and rchar, taken at that moment); median of --restarts.
  - state:   du of the state folder after the last clean stop (disk usage; apparent size too).
  A phase that passes --timeout is recorded as a timeout (with how many seeded) and the
  program's other rows for that size are left out.

Part 2 (--transfer-runs, 0 to skip): 1 GiB over loopback, three paths interleaved run by run,
after a discarded warm-up round: bench/peer.py's `bitswarm>bitswarm` (its measure(): `seed` →
`join --exit-when-done`, the leecher's wall time), the daemon seeding to the same `join`, and
`bitswarm seed` to the daemon (from torrent-add until the RPC says leftUntilDone is 0). Every
copy is compared with the original.

Prints Markdown tables and writes them with the raw runs to bench/results/daemon-DATE.md.
Every program started is stopped at the end, also on failure or Ctrl-C.

Usage: bench/daemon.py [--sizes 1000,10000] [--programs bitswarm,transmission,qbittorrent,rqbit]
       [--timeout 1800] [--idle 60] [--list-runs 9] [--restarts 3] [--transfer-runs 3]
"""
import argparse, atexit, base64, ctypes, datetime, filecmp, hashlib, http.client, json, os, re, resource, shutil
import signal
import socket, statistics, subprocess, sys, tempfile, time, urllib.parse, uuid

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing peer.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402  bench/peer.py: its measure() is part 2's reference

# Every bitswarm this starts runs without a DHT node and without Local Service Discovery, as
# the other programs here run without theirs (none looks for the public routers, nothing
# multicasts).
os.environ["BITSWARM_NO_DHT"] = "1"
os.environ["BITSWARM_NO_LSD"] = "1"

ROOT, BIN, RQBIT = peer.ROOT, peer.BIN, peer.RQBIT
PROGRAMS = ["bitswarm", "transmission", "qbittorrent", "rqbit"]
DEAD_TRACKER = "http://127.0.0.1:9/announce"
# The address bitswarm's and Transmission's daemons take peers on and dial them from. bench/web.py
# sets another (10.91.0.2, in a network namespace of its own): Transmission dials no peer at
# 127.0.0.0/8.
PEER_HOST = "127.0.0.1"
MiB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- processes, always stopped

LIVE = {}  # pid -> Popen of every program this script started and has not seen exit


NOFILE = 65536


def _child_setup():
    # If this script is killed outright, its programs get SIGKILL (they are started from the
    # main thread, whose exit is what the kernel watches).
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # The same descriptor limit for every program, high enough for rqbit's two a torrent at
    # 10,000 torrents (this machine's default is 20,000).
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        pass


def spawn(argv, logfile, env=None):
    out = open(logfile, "ab")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                         start_new_session=True, preexec_fn=_child_setup)
    out.close()
    LIVE[p.pid] = p
    return p


def stop(p, timeout=120):
    """SIGTERM, then waits; SIGKILL past the timeout. Returns (seconds, clean)."""
    if p.poll() is not None:
        LIVE.pop(p.pid, None)
        return 0.0, False
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
        clean = True
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        clean = False
    LIVE.pop(p.pid, None)
    return time.monotonic() - t0, clean


def stop_all():
    for p in list(LIVE.values()):
        try:
            stop(p, 20)
        except Exception:
            pass


def _on_signal(sig, _frame):
    raise SystemExit("stopped by signal %d" % sig)


# ---------------------------------------------------------------- small helpers

def free_port():
    return peer.free_port()


def wait_port(port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.01)
    return False


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime (fields 14 and 15)


def status_kb(pid, key):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def proc_io(pid):
    d = {}
    for line in open("/proc/%d/io" % pid):
        k, v = line.split(":")
        d[k] = int(v)
    return d


def du(path):
    """(disk usage, apparent size) in bytes."""
    blocks = int(subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout.split()[0]) * 1024
    apparent = int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])
    return blocks, apparent


def bencode(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(v) for v in x) + b"e"
    items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"


class Http:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, port, timeout=600):
        self.port, self.timeout, self.c = port, timeout, None

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body, seconds from sending to the last byte)."""
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                t0 = time.perf_counter()
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                dt = time.perf_counter() - t0
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, r, data, dt
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


# ---------------------------------------------------------------- the torrents

def dataset(base, n, piece):
    """N torrents of 1 MiB of random data, one file each, made once and kept under `base`:
    returns (data folder, [(name, .torrent bytes, info-hash hex)])."""
    data = os.path.join(base, "data")
    tdir = os.path.join(base, "torrents")
    os.makedirs(data, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    out = []
    made = 0
    for i in range(n):
        name = "f%05d.bin" % i
        tpath = os.path.join(tdir, name + ".torrent")
        dpath = os.path.join(data, name)
        if os.path.exists(tpath) and os.path.exists(dpath) and os.path.getsize(dpath) == MiB:
            t = open(tpath, "rb").read()
        else:
            buf = os.urandom(MiB)
            pieces = b"".join(hashlib.sha1(buf[o:o + piece]).digest() for o in range(0, MiB, piece))
            info = {"name": name, "length": MiB, "piece length": piece, "pieces": pieces}
            t = bencode({"announce": DEAD_TRACKER, "created by": "bench/daemon.py", "info": info})
            with open(dpath + ".part", "wb") as w:
                w.write(buf)
            os.replace(dpath + ".part", dpath)
            with open(tpath + ".part", "wb") as w:
                w.write(t)
            os.replace(tpath + ".part", tpath)
            made += 1
        # The info dictionary is the last value of the outer dictionary.
        start = t.index(b"4:infod") + 6
        out.append((name, t, hashlib.sha1(t[start:-1]).hexdigest()))
        if made and made % 1000 == 0:
            log("  made %d torrents" % made)
    return data, out


def warm_cache(data, names):
    t0 = time.monotonic()
    for name in names:
        with open(os.path.join(data, name), "rb") as f:
            while f.read(MiB):
                pass
    return time.monotonic() - t0


def cached_fraction(data, names):
    """Share of the data's pages in the page cache (fincore), sampled on 200 files."""
    step = max(1, len(names) // 200)
    paths = [os.path.join(data, n) for n in names[::step]]
    r = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE"] + paths, capture_output=True, text=True)
    res = size = 0
    for line in r.stdout.split("\n"):
        if line.strip():
            a, b = line.split()
            res, size = res + int(a), size + int(b)
    return res / size if size else 0.0


# ---------------------------------------------------------------- the programs

class Program:
    """One daemon under test: started on a state folder, driven through its API."""
    name = ""

    def __init__(self, work, data, n):
        self.work, self.data, self.n = work, data, n
        self.state = os.path.join(work, "state")
        self.home = os.path.join(work, "home")
        os.makedirs(self.state)
        os.makedirs(self.home)
        self.peer_port, self.api_port = free_port(), free_port()
        self.p = None
        self.starts = 0
        self.env = dict(os.environ, HOME=self.home, XDG_CONFIG_HOME=self.home + "/config",
                        XDG_DATA_HOME=self.home + "/data", XDG_CACHE_HOME=self.home + "/cache")

    def start(self):
        self.starts += 1
        self.p = spawn(self.argv(), os.path.join(self.work, "log-%d.txt" % self.starts), env=self.env)
        self.http = Http(self.api_port)
        return self.p

    def stop(self):
        self.http.close()
        return stop(self.p)

    def api_up(self):
        return True

    # Overridden: argv(), add(name, torrent_bytes), seeding() -> (seeding, known, note, stopped),
    # list_all() -> (seconds, bytes)


class TransmissionRpc(Program):
    path = "/transmission/rpc"

    def start(self):
        self.sid = ""
        return super().start()

    def rpc(self, method, args):
        body = json.dumps({"method": method, "arguments": args}).encode()
        for _ in range(3):
            st, r, data, dt = self.http.request("POST", self.path, body, {
                "X-Transmission-Session-Id": self.sid, "Content-Type": "application/json"})
            if st == 409:
                self.sid = r.getheader("X-Transmission-Session-Id")
                continue
            if st != 200:
                raise RuntimeError("%s: %s: HTTP %d %r" % (self.name, method, st, data[:200]))
            return data, dt
        raise RuntimeError("%s: no session id" % self.name)

    def add(self, name, t):
        data, _ = self.rpc("torrent-add", {"metainfo": base64.b64encode(t).decode(), "download-dir": self.data})
        r = json.loads(data)
        if r["result"] != "success" or "torrent-added" not in r["arguments"]:
            raise RuntimeError("%s: torrent-add %s: %s" % (self.name, name, data[:300]))

    def seeding(self):
        data, _ = self.rpc("torrent-get", {"fields": ["id", "status", "error", "errorString"]})
        ts = json.loads(data)["arguments"]["torrents"]
        errors = [t["errorString"] for t in ts if t.get("error")]
        by = {}
        for t in ts:
            by[t["status"]] = by.get(t["status"], 0) + 1
        note = "status " + ", ".join("%s: %d" % kv for kv in sorted(by.items()))
        return (sum(1 for t in ts if t["status"] == 6), len(ts), note + ("; error: " + errors[0] if errors else ""),
                by.get(0, 0))

    def list_all(self):
        data, dt = self.rpc("torrent-get", {"fields": ["id", "name", "status", "percentDone", "rateDownload"]})
        assert len(json.loads(data)["arguments"]["torrents"]) == self.n
        return dt, len(data)


class Bitswarm(TransmissionRpc):
    name = "bitswarm"

    def argv(self):
        return [BIN, "daemon", "--state", self.state, "--download-dir", self.data, "--port", str(self.peer_port),
                "--bind", PEER_HOST, "--rpc", "127.0.0.1:%d" % self.api_port]


    def wait_saved(self, quiet=3.0, timeout=120):
        """Until the state database saw no commit for `quiet` seconds (its /metrics), so that a
        kill -9 loses nothing: returns the seconds waited."""
        t0 = last_change = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            _, _, data, _ = self.http.request("GET", "/metrics")
            m = re.search(rb"^bitswarm_state_commits_total (\d+)", data, re.M)
            v = int(m.group(1)) if m else None
            if v != last:
                last, last_change = v, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                break
            time.sleep(0.25)
        return time.monotonic() - t0


class Transmission(TransmissionRpc):
    name = "transmission"

    def __init__(self, *a):
        super().__init__(*a)
        settings = {
            "rpc-enabled": True, "rpc-bind-address": "127.0.0.1", "rpc-port": self.api_port,
            "rpc-authentication-required": False, "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False,
            "peer-port": self.peer_port, "peer-port-random-on-start": False,
            "bind-address-ipv4": PEER_HOST, "bind-address-ipv6": "::1",
            "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "utp-enabled": False,
            "port-forwarding-enabled": False, "blocklist-enabled": False,
            "download-dir": self.data, "incomplete-dir-enabled": False, "watch-dir-enabled": False,
            "start-added-torrents": True, "trash-original-torrent-files": False,
            "seed-queue-enabled": False, "queue-stalled-enabled": False,
            "ratio-limit-enabled": False, "idle-seeding-limit-enabled": False,
            "script-torrent-done-enabled": False, "message-level": 1,
        }
        with open(os.path.join(self.state, "settings.json"), "w") as f:
            json.dump(settings, f, indent=1)

    def argv(self):
        return ["transmission-daemon", "-f", "-g", self.state]


class Qbittorrent(Program):
    name = "qbittorrent"
    checking = 64
    SEEDING = ("uploading", "stalledUP", "forcedUP")

    def __init__(self, *a):
        super().__init__(*a)
        conf = os.path.join(self.state, "qBittorrent", "config")
        os.makedirs(conf)
        with open(os.path.join(conf, "qBittorrent.conf"), "w") as f:
            f.write("""[LegalNotice]
Accepted=true

[Application]
FileLogger\\Enabled=false

[Network]
PortForwardingEnabled=false

[BitTorrent]
Session\\Port={peer}
Session\\UseRandomPort=false
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\InterfaceAddress=127.0.0.1
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\BTProtocol=TCP
Session\\QueueingSystemEnabled=false
Session\\MaxActiveCheckingTorrents={checking}
Session\\DefaultSavePath={data}
Session\\TorrentContentLayout=Original

[Preferences]
WebUI\\Address=127.0.0.1
WebUI\\Port={api}
WebUI\\LocalHostAuth=false
WebUI\\CSRFProtection=false
WebUI\\HostHeaderValidation=false
WebUI\\UseUPnP=false
""".format(peer=self.peer_port, api=self.api_port, data=self.data, checking=self.checking))

    def argv(self):
        return ["qbittorrent-nox", "--profile=" + self.state, "--webui-port=%d" % self.api_port]

    def start(self):
        self.rid, self.torrents = 0, {}
        return super().start()

    def get(self, path):
        st, _, data, dt = self.http.request("GET", path)
        if st != 200:
            raise RuntimeError("qbittorrent: GET %s: HTTP %d %r" % (path, st, data[:200]))
        return data, dt

    def add(self, name, t):
        b = uuid.uuid4().hex
        parts = []
        for k, v in (("savepath", self.data), ("paused", "false"), ("contentLayout", "Original")):
            parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (b, k, v)).encode())
        parts.append(('--%s\r\nContent-Disposition: form-data; name="torrents"; filename="%s.torrent"\r\n'
                      'Content-Type: application/x-bittorrent\r\n\r\n' % (b, name)).encode() + t + b"\r\n")
        body = b"".join(parts) + ("--%s--\r\n" % b).encode()
        st, _, data, _ = self.http.request("POST", "/api/v2/torrents/add", body,
                                           {"Content-Type": "multipart/form-data; boundary=" + b})
        if st != 200 or data.strip() != b"Ok.":
            raise RuntimeError("qbittorrent: add %s: HTTP %d %r" % (name, st, data[:200]))

    def seeding(self):
        # /api/v2/sync/maindata with the last rid: only what changed (the full list takes
        # seconds at 10,000 torrents, and polling it would load the program under test).
        data, _ = self.get("/api/v2/sync/maindata?rid=%d" % self.rid)
        m = json.loads(data)
        if m.get("full_update"):
            self.torrents = {}
        for h, d in m.get("torrents", {}).items():
            self.torrents.setdefault(h, {}).update(d)
        for h in m.get("torrents_removed", []):
            self.torrents.pop(h, None)
        self.rid = m["rid"]
        states = [d.get("state") for d in self.torrents.values()]
        by = {}
        for s in states:
            by[s] = by.get(s, 0) + 1
        note = ", ".join("%s: %d" % kv for kv in sorted(by.items()))
        return sum(1 for s in states if s in self.SEEDING), len(states), note, by.get("pausedUP", 0)

    def list_all(self):
        data, dt = self.get("/api/v2/torrents/info")
        assert len(json.loads(data)) == self.n
        return dt, len(data)


class Rqbit(Program):
    name = "rqbit"

    def argv(self):
        return [RQBIT] + peer.RQ + ["--listen-port", str(self.peer_port), "--listen-ip", "127.0.0.1",
                                    "--http-api-listen-addr", "127.0.0.1:%d" % self.api_port,
                                    "server", "start", "--persistence-location", self.state, "--fastresume",
                                    self.data]

    def get(self, path):
        st, _, data, dt = self.http.request("GET", path)
        if st != 200:
            raise RuntimeError("rqbit: GET %s: HTTP %d %r" % (path, st, data[:200]))
        return data, dt

    def add(self, name, t):
        q = urllib.parse.urlencode({"overwrite": "true", "output_folder": self.data, "is_url": "false"})
        st, _, data, _ = self.http.request("POST", "/torrents?" + q, t, {"Content-Type": "application/octet-stream"})
        if st != 200:
            raise RuntimeError("rqbit: add %s: HTTP %d %r" % (name, st, data[:300]))

    def seeding(self):
        data, _ = self.get("/torrents?with_stats=true")
        ts = [t.get("stats") or {} for t in json.loads(data)["torrents"]]
        errors = [t.get("error") for t in ts if t.get("error")]
        by = {}
        for t in ts:
            k = "%s%s" % (t.get("state"), "/finished" if t.get("finished") else "")
            by[k] = by.get(k, 0) + 1
        note = ", ".join("%s: %d" % kv for kv in sorted(by.items()))
        return (sum(1 for t in ts if t.get("state") == "live" and t.get("finished")), len(ts),
                note + ("; error: " + errors[0] if errors else ""), by.get("paused/finished", 0))

    def list_all(self):
        data, dt = self.get("/torrents?with_stats=true")
        assert len(json.loads(data)["torrents"]) == self.n
        return dt, len(data)

    def list_brief(self):
        data, dt = self.get("/torrents")
        return dt, len(data)


CLASSES = {"bitswarm": Bitswarm, "transmission": Transmission, "qbittorrent": Qbittorrent, "rqbit": Rqbit}


class CameBackStopped(Exception):
    pass


def wait_seeding(prog, n, t0, timeout, label):
    """Polls until all n seed; returns (seconds since t0, None) or (seconds, why not). The
    pause between polls is twice the last poll's time (at least 10 ms), so polling costs the
    program at most a third of its API's time. Raises CameBackStopped when all n are known and
    stopped for 5 s (nothing would change without a client's start)."""
    last_note, seen = time.monotonic(), (0, 0, "", 0)
    all_stopped_since = None
    end = t0 + timeout
    while True:
        now = time.monotonic()
        if now > end:
            return now - t0, "timeout after %.0f s: %d of %d seeding (%d known%s)" % (
                now - t0, seen[0], n, seen[1], (": " + seen[2]) if seen[2] else "")
        if prog.p.poll() is not None:
            return now - t0, "%s exited (status %s)" % (prog.name, prog.p.returncode)
        a = time.monotonic()
        try:
            seen = prog.seeding()
        except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError):
            # not up yet (connection refused, 5xx while loading)
            prog.http.close()
            time.sleep(0.01)
            continue
        took = time.monotonic() - a
        if seen[0] >= n:
            return time.monotonic() - t0, None
        if seen[1] >= n and seen[3] >= n:
            all_stopped_since = all_stopped_since or time.monotonic()
            if time.monotonic() - all_stopped_since > 5:
                raise CameBackStopped("all %d came back stopped (%s)" % (n, seen[2]))
        else:
            all_stopped_since = None
        if time.monotonic() - last_note > 15:
            log("    %s %s: %d of %d seeding (%d known: %s) after %.0f s" % (
                prog.name, label, seen[0], n, seen[1], seen[2], time.monotonic() - t0))
            last_note = time.monotonic()
        time.sleep(max(0.01, 2 * took))


def measure_daemon(name, n, data, torrents, a, base):
    """All rows for one program and size; returns a dict (raw figures, 'error' when cut short)."""
    r = {"program": name, "n": n}
    work = tempfile.mkdtemp(prefix="%s-%d-" % (name, n), dir=base)
    prog = CLASSES[name](work, data, n)
    try:
        r["warm_cache_s"] = warm_cache(data, [t[0] for t in torrents])
        r["cached"] = cached_fraction(data, [t[0] for t in torrents])
        t_start = time.monotonic()
        prog.start()
        # wait for the API (any answer to a poll)
        while True:
            try:
                prog.seeding()
                break
            except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError):
                prog.http.close()
                if prog.p.poll() is not None:
                    raise RuntimeError("%s exited at start (status %s), see %s" % (name, prog.p.returncode, work))
                if time.monotonic() - t_start > 60:
                    raise RuntimeError("%s: API not up after 60 s" % name)
                time.sleep(0.02)
        r["api_up_s"] = time.monotonic() - t_start
        r["rss_empty_mb"] = status_kb(prog.p.pid, "VmRSS") * 1024 / 1e6
        log("  %s N=%d: adding" % (name, n))
        t0 = time.monotonic()
        for tname, t, _ in torrents:
            prog.add(tname, t)
        r["add_calls_s"] = time.monotonic() - t0
        took, why = wait_seeding(prog, n, t0, a.timeout, "add")
        r["add_s"] = took
        if why:
            r["error"] = "add: " + why
            log("  %s N=%d: %s" % (name, n, r["error"]))
            return r
        pid = prog.p.pid
        r["rss_at_seeding_mb"] = status_kb(pid, "VmRSS") * 1024 / 1e6
        log("  %s N=%d: all seeding after %.2f s (adds took %.2f s); settling %d s, idle %d s" % (
            name, n, took, r["add_calls_s"], a.settle, a.idle))
        time.sleep(a.settle)
        r["rss_mb"] = status_kb(pid, "VmRSS") * 1024 / 1e6
        # VmRSS is private memory (RssAnon) plus pages of files mapped (the program's code and its
        # libraries, shared with other processes and dropped first under memory pressure).
        r["rss_anon_mb"] = status_kb(pid, "RssAnon") * 1024 / 1e6
        r["rss_file_mb"] = status_kb(pid, "RssFile") * 1024 / 1e6
        r["threads"] = status_kb(pid, "Threads")
        r["fds"] = len(os.listdir("/proc/%d/fd" % pid))
        # idle CPU: the whole window, and its 10 s windows
        windows, c0, w0 = [], cpu_ticks(pid), time.monotonic()
        c, w = c0, w0
        while time.monotonic() - w0 < a.idle - 0.01:
            time.sleep(min(10, a.idle - (time.monotonic() - w0)))
            c2, w2 = cpu_ticks(pid), time.monotonic()
            windows.append(100.0 * (c2 - c) / CLK / (w2 - w))
            c, w = c2, w2
        r["idle_pct"] = 100.0 * (c - c0) / CLK / (w - w0)
        r["idle_windows_pct"] = windows
        # listing: a new connection for each call (as transmission-remote makes), and on one
        # keep-alive connection (raw runs: transmission-daemon 3.00 answers there 40 ms late,
        # its reply's last segment held by Nagle until the client's delayed ACK)
        fresh, kept = [], []
        for i in range(a.list_runs + 1):
            prog.http.close()
            dt, size = prog.list_all()
            if i:
                fresh.append(dt * 1000)
        for i in range(a.list_runs + 1):
            dt, size = prog.list_all()
            if i:
                kept.append(dt * 1000)
        r["list_ms"] = statistics.median(fresh)
        r["list_runs_ms"] = fresh
        r["list_keepalive_ms"] = statistics.median(kept)
        r["list_keepalive_runs_ms"] = kept
        r["list_bytes"] = size
        if name == "rqbit":
            r["list_brief_ms"] = statistics.median(prog.list_brief()[0] * 1000 for _ in range(a.list_runs))
        prog.http.close()
        r["rss_after_list_mb"] = status_kb(pid, "VmRSS") * 1024 / 1e6
        # restarts: a clean stop, a start on the same state
        r["restarts"] = []
        kill = False
        i = 0
        while i < a.restarts:
            if kill:
                t_k = time.monotonic()
                prog.http.close()
                prog.p.kill()
                prog.p.wait()
                LIVE.pop(prog.p.pid, None)
                stop_s, clean = time.monotonic() - t_k, False
            else:
                stop_s, clean = prog.stop()
            one = {"stop_s": stop_s, "clean_stop": clean, "stop": "kill -9" if kill else "SIGTERM"}
            t0 = time.monotonic()
            prog.start()
            try:
                took, why = wait_seeding(prog, n, t0, a.timeout, "restart")
            except CameBackStopped as e:
                if kill or name != "bitswarm":
                    raise
                # A defect found (see the report): the torrents come back stopped after a clean
                # stop. Restarted after kill -9 instead, from the resume data saved while they
                # ran, so that the row still measures loading the state.
                r["restart_defect"] = "after a clean stop (SIGTERM), %s" % e
                log("  %s N=%d: restart after a clean stop: %s; restarting after kill -9 instead" % (name, n, e))
                prog.rpc("torrent-start", {})
                took, why = wait_seeding(prog, n, time.monotonic(), a.timeout, "start")
                if why:
                    r["error"] = "restart: torrent-start: " + why
                    return r
                r["saved_wait_s"] = [prog.wait_saved()]  # the resume data says running again
                kill = True
                continue
            one["s"] = took
            r["restarts"].append(one)
            if why:
                r["error"] = "restart: " + why
                log("  %s N=%d: %s" % (name, n, r["error"]))
                return r
            io = proc_io(prog.p.pid)
            one["read_bytes"], one["rchar"] = io["read_bytes"], io["rchar"]
            one["rss_mb"] = status_kb(prog.p.pid, "VmRSS") * 1024 / 1e6
            log("  %s N=%d: restart %d: all seeding after %.3f s (%s took %.2f s%s), read_bytes %d, rchar %d" % (
                name, n, i + 1, took, one["stop"], stop_s, "" if clean or kill else ", killed", io["read_bytes"],
                io["rchar"]))
            i += 1
            if kill:
                r["saved_wait_s"].append(prog.wait_saved())  # as before the first kill
        r["restart_stop"] = "kill -9" if kill else "SIGTERM"
        r["restart_s"] = statistics.median(x["s"] for x in r["restarts"])
        r["restart_read_bytes"] = statistics.median(x["read_bytes"] for x in r["restarts"])
        r["restart_rchar"] = statistics.median(x["rchar"] for x in r["restarts"])
        stop_s, clean = prog.stop()
        r["last_stop_s"], r["last_clean_stop"] = stop_s, clean
        r["state_du"], r["state_apparent"] = du(prog.state)
        return r
    except Exception as e:  # recorded, and the other programs still run
        r["error"] = "%s: %s" % (type(e).__name__, e)
        log("  %s N=%d failed: %s" % (name, n, r["error"]))
        return r
    finally:
        if prog.p is not None:
            prog.http.close()
            stop(prog.p)
        if a.keep:
            log("  kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- part 2: one transfer

def make_torrent(work, data_file, tracker_addr):
    t = os.path.join(work, "xfer.torrent")
    subprocess.run([BIN, "torrent", "create", "-q", "--force", "--no-date", "--piece-size", "1M", "-t",
                    "http://%s/announce" % tracker_addr, "-o", t, data_file], check=True, stdout=subprocess.DEVNULL)
    return t


def start_tracker(host="127.0.0.1"):
    tracker = peer.Proc([BIN, "tracker", "--http", "%s:0" % host, "--udp", "off"])
    addr = tracker.wait_line(lambda l: l.startswith("HTTP tracker listening on ")).rsplit(" ", 1)[1]
    return tracker, addr


def wait_seeder_known(addr, torrent, timeout=30):
    """Until the tracker counts a seeder for the torrent (a scrape)."""
    t = open(torrent, "rb").read()
    start = t.index(b"4:infod") + 6
    h = hashlib.sha1(t[start:-1]).digest()
    end = time.monotonic() + timeout
    host, port = addr.rsplit(":", 1)
    while time.monotonic() < end:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            c.request("GET", "/scrape?info_hash=" + urllib.parse.quote(h, safe=""))
            m = re.search(rb"8:completei(\d+)e", c.getresponse().read())
            if m and int(m.group(1)) > 0:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            c.close()
        time.sleep(0.05)
    raise RuntimeError("the tracker never saw the seeder")


def start_daemon(work, download_dir):
    d = Bitswarm(work, download_dir, 1)
    d.start()
    while True:
        try:
            d.seeding()
            return d
        except (OSError, http.client.HTTPException, RuntimeError):
            d.http.close()
            if d.p.poll() is not None:
                raise RuntimeError("bitswarm daemon exited (see %s)" % work)
            time.sleep(0.02)


def daemon_to_join(work, data_file, prefault):
    """The daemon seeds data_file; `bitswarm join --exit-when-done` fetches it (as peer.py
    times a leecher: GNU time's wall, CPU and peak RSS)."""
    tracker, addr = start_tracker()
    dwork = tempfile.mkdtemp(prefix="daemon-seed-", dir=work)
    d = None
    try:
        torrent = make_torrent(work, data_file, addr)
        d = start_daemon(dwork, os.path.dirname(data_file))
        d.add("xfer", open(torrent, "rb").read())
        took, why = wait_seeding(d, 1, time.monotonic(), 300, "check")
        if why:
            raise RuntimeError("daemon as seeder: " + why)
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        timing = os.path.join(work, "time.txt")
        if prefault:
            peer.prefault_memory(work, os.path.getsize(data_file))
        p = subprocess.Popen(["/usr/bin/time", "-o", timing, "-f", "%e %U %S %M"] +
                             peer.leech_bitswarm(torrent, out, d.peer_port),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             preexec_fn=_child_setup)
        LIVE[p.pid] = p
        try:
            status = p.wait(timeout=600)
        finally:
            stop(p, 5)
        wall, user, system, rss_kb = (float(x) for x in open(timing).read().split()[-4:])
        got = os.path.join(out, os.path.basename(data_file))
        if status != 0 or not filecmp.cmp(got, data_file, shallow=False):
            raise RuntimeError("daemon → join: the leecher failed (status %d) or its copy differs" % status)
        shutil.rmtree(out, ignore_errors=True)
        return wall, user + system, rss_kb / 1024.0
    finally:
        if d is not None and d.p is not None:
            d.http.close()
            stop(d.p)
        tracker.stop()
        shutil.rmtree(dwork, ignore_errors=True)


def seed_to_daemon(work, data_file, prefault):
    """`bitswarm seed` has data_file; the daemon downloads it, timed from torrent-add until the
    RPC says nothing is left (polled every 5 ms). Returns (wall, daemon CPU during it, daemon
    peak RSS)."""
    tracker, addr = start_tracker()
    dwork = tempfile.mkdtemp(prefix="daemon-leech-", dir=work)
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    d = seed = None
    try:
        torrent = make_torrent(work, data_file, addr)
        seed, _ = peer.seed_bitswarm(torrent, os.path.dirname(data_file))
        wait_seeder_known(addr, torrent)
        d = start_daemon(dwork, out)
        if prefault:
            peer.prefault_memory(work, os.path.getsize(data_file))
        c0 = cpu_ticks(d.p.pid)
        t0 = time.monotonic()
        d.add("xfer", open(torrent, "rb").read())
        while True:
            data, _ = d.rpc("torrent-get", {"fields": ["id", "leftUntilDone", "percentDone", "error", "errorString"]})
            ts = json.loads(data)["arguments"]["torrents"]
            if ts and ts[0]["leftUntilDone"] == 0 and ts[0]["percentDone"] == 1:
                break
            if ts and ts[0]["error"]:
                raise RuntimeError("seed → daemon: %s" % ts[0]["errorString"])
            if time.monotonic() - t0 > 600:
                raise RuntimeError("seed → daemon: not complete after 600 s")
            time.sleep(0.005)
        wall = time.monotonic() - t0
        cpu = (cpu_ticks(d.p.pid) - c0) / CLK
        hwm = status_kb(d.p.pid, "VmHWM") / 1024.0
        got = os.path.join(out, os.path.basename(data_file))
        if not filecmp.cmp(got, data_file, shallow=False):
            raise RuntimeError("seed → daemon: the daemon's copy differs")
        return wall, cpu, hwm
    finally:
        if d is not None and d.p is not None:
            d.http.close()
            stop(d.p)
        if seed is not None:
            seed.stop()
        tracker.stop()
        shutil.rmtree(dwork, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


PATHS = [("bitswarm seed → bitswarm join (bench/peer.py's measure)", "join"),
         ("bitswarm daemon → bitswarm join", "daemon_seeds"),
         ("bitswarm seed → bitswarm daemon (torrent-add until leftUntilDone is 0)", "daemon_leeches")]


def transfer(a, base):
    size = parse_size(a.transfer_size)
    data_file = peer.source_file(a.dir, size)  # bench/peer.py's file, shared
    work = tempfile.mkdtemp(prefix="transfer-", dir=base)
    runs = {k: [] for _, k in PATHS}
    prefault = not a.no_prefault
    try:
        for run in range(-1, a.transfer_runs):
            for label, k in PATHS:
                if k == "join":
                    res = peer.measure("bitswarm>bitswarm", work, data_file, prefault)
                elif k == "daemon_seeds":
                    res = daemon_to_join(work, data_file, prefault)
                else:
                    res = seed_to_daemon(work, data_file, prefault)
                if run >= 0:
                    runs[k].append(res)
                log("  %-7s %-34s %6.2f s  cpu %6.2f s  rss %7.1f MB" % (
                    "warm-up" if run < 0 else "run %d" % (run + 1), k, *res))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return size, runs


def parse_size(s):
    return int(s[:-1]) << {"K": 10, "M": 20, "G": 30}[s[-1]] if s[-1] in "KMG" else int(s)


# ---------------------------------------------------------------- the tables

ROWS = [
    ("add all, until all seeding", "add_s", "s"),
    ("of which the N add requests", "add_calls_s", "s"),
    ("RSS, seeding", "rss_mb", "MB"),
    ("of it private (RssAnon)", "rss_anon_mb", "MB"),
    ("of it mapped files (RssFile: code, libraries)", "rss_file_mb", "MB"),
    ("idle CPU, % of a core", "idle_pct", "%"),
    ("list all through the API", "list_ms", "ms"),
    ("restart until all seeding", "restart_s", "s"),
    ("restart: bytes read (read_bytes / rchar)", "restart_rchar", "rd"),
    ("state on disk (du)", "state_du", "MB"),
    ("state, apparent size (du -b)", "state_apparent", "MB"),
]


def fmt(r, key, unit):
    if r is None:
        return "not run"
    if r.get(key) is None:
        # the row where the run stopped says why; the rows after it are empty
        e = r.get("error", "")
        if key == "add_s" and e.startswith("add: "):
            return "**%s**" % e[5:]
        if key == "restart_s" and e.startswith("restart: "):
            return "**%s**" % e
        if key == "add_s" and e:
            return "**failed: %s**" % short(e)
        return "–"
    v = r[key]
    if key == "restart_s" and r.get("restart_stop") == "kill -9":
        return "%s after kill -9 ¹" % fmt(dict(r, restart_stop=None), key, unit)
    if unit == "s":
        return "%.3f s" % v if v < 1 else "%.2f s" % v if v < 10 else "%.1f s" % v
    if unit == "MB":
        v = v / 1e6 if key.startswith("state") else v
        return "%.2f MB" % v if v < 10 else "%.1f MB" % v
    if unit == "%":
        return "%.3f %%" % v
    if unit == "ms":
        return "%.2f ms" % v if v < 10 else "%.1f ms" % v if v < 100 else "%.0f ms" % v
    if unit == "rd":
        return "%.2f MB / %.2f MB" % (r["restart_read_bytes"] / 1e6, v / 1e6)
    return str(v)


def short(e):
    """An error, cut to what a table cell can hold."""
    m = re.search(r"add (f\d+)\.bin.*?: ([^:\\\"]*\(os error \d+\))", e)
    if m:
        return "%s at torrent %s" % (m.group(2), m.group(1))
    return e[:100]


def valid(r, key):
    """A figure that holds (a timed-out add's time is only a bound)."""
    return bool(r) and r.get(key) is not None and not (key == "add_s" and r.get("error", "").startswith("add"))


def ratio(results, n, key, programs):
    b = results.get(("bitswarm", n))
    anchors = [results.get((p, n)) for p in programs if p != "bitswarm"]
    anchors = [r[key] for r in anchors if valid(r, key)]
    if not valid(b, key) or not anchors:
        return "–"
    best = min(anchors)
    if best == 0:
        return "∞" if b[key] > 0 else "1.00×"
    return "%.2f×" % (b[key] / best)


def tables(results, sizes, programs, xfer, a):
    out = []
    if not results:
        sizes = []
    head = ["| torrents of 1 MiB |"]
    sep = ["| --- |"]
    for n in sizes:
        for p in programs:
            head.append(" %s %s |" % (p, "{:,}".format(n)))
            sep.append(" --- |")
        head.append(" bitswarm ÷ best anchor, %s |" % "{:,}".format(n))
        sep.append(" --- |")
    out += ["".join(head), "".join(sep)] if sizes else []
    for label, key, unit in ROWS if sizes else []:
        row = ["| %s |" % label]
        for n in sizes:
            for p in programs:
                row.append(" %s |" % fmt(results.get((p, n)), key, unit))
            row.append(" %s |" % ratio(results, n, key, programs))
        out.append("".join(row))
    out.append("")
    if sizes:
        out.append("Ratios below 1 mean bitswarm does better (every row is lower-is-better). The adds are one run "
                   "each; idle CPU is one %d s window; listing is the median of %d calls; restart the median of %d." % (
                       a.idle, a.list_runs, a.restarts))
    defects = sorted({"%s at %s: %s" % (r["program"], "{:,}".format(r["n"]), r["restart_defect"])
                      for r in results.values() if r.get("restart_defect")})
    if defects:
        out.append("")
        out.append("¹ Restarted after kill -9, not after a clean stop: " + "; ".join(defects) + ".")
    if xfer:
        size, runs = xfer
        out += ["", "%s over loopback, one seeder and one leecher, medians of %d runs after a warm-up round:" % (
            a.transfer_size, a.transfer_runs), "",
            "| seeder → leecher | wall | throughput | CPU (leecher) | peak RSS (leecher) | vs seed → join |",
            "| --- | --- | --- | --- | --- | --- |"]
        med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in runs.items() if v}
        base = med.get("join")
        for label, k in PATHS:
            if k in med:
                w, c, m = med[k]
                out.append("| %s | %.2f s | %.0f MB/s | %.2f s | %.0f MB | %s |" % (
                    label, w, size / w / 1e6, c, m, "%.2f×" % (w / base[0]) if base else ""))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--timeout", type=float, default=1800, help="per program and phase (add, each restart), s")
    ap.add_argument("--idle", type=float, default=60, help="the idle CPU window, s")
    ap.add_argument("--settle", type=float, default=5, help="wait after all seed before RSS and idle CPU, s")
    ap.add_argument("--list-runs", type=int, default=9)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--piece-size", default="64K")
    ap.add_argument("--qbt-checking", type=int, default=64, help="qBittorrent's Session\\MaxActiveCheckingTorrents")
    ap.add_argument("--transfer-runs", type=int, default=5, help="part 2's runs (0: skip it)")
    ap.add_argument("--transfer-size", default="1G")
    ap.add_argument("--no-prefault", action="store_true", help="as bench/peer.py's")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/tmp/bitswarm-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the programs' state folders and logs")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/results/daemon-DATE.md")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",") if x]
    programs = [p for p in a.programs.split(",") if p]
    for p in programs:
        if p not in PROGRAMS:
            ap.error("unknown program %s (known: %s)" % (p, ", ".join(PROGRAMS)))
    missing = {"transmission": "transmission-daemon", "qbittorrent": "qbittorrent-nox"}
    for p, exe in missing.items():
        if p in programs and not shutil.which(exe):
            log("%s not found (apt-get install -y %s): left out" % (exe, exe))
            programs.remove(p)
    if "rqbit" in programs and not os.path.exists(RQBIT):
        log("rqbit not found at %s (run ../shared/tools/anchors.sh): left out" % RQBIT)
        programs.remove("rqbit")
    Qbittorrent.checking = a.qbt_checking
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(stop_all)
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        log("warning: something listens on 127.0.0.1:9, the torrents' tracker is meant to be unreachable")
    except OSError:
        pass

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "bitswarm"], cwd=ROOT, check=True)
    started = datetime.datetime.now()
    # The commit the binary was built from: taken now, as the tree may move during a long run.
    rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    os.makedirs(a.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="bitswarm-daemon-bench-", dir=a.dir)
    results, raw = {}, []
    xfer = None
    piece = parse_size(a.piece_size)
    try:
        if sizes and programs:
            src = os.path.join(a.dir, "daemon-src-%s" % a.piece_size)
            log("%d torrents of 1 MiB (%s pieces) in %s (made once, kept)" % (max(sizes), a.piece_size, src))
            data, torrents = dataset(src, max(sizes), piece)
        for n in sizes if programs else []:
            for p in programs:
                log("%s, %d torrents" % (p, n))
                r = measure_daemon(p, n, data, torrents[:n], a, base)
                results[(p, n)] = r
                raw.append(r)
        if a.transfer_runs > 0:
            log("transfer of %s through the daemon, against bench/peer.py's bitswarm → bitswarm" % a.transfer_size)
            xfer = transfer(a, base)
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
        stop_all()

    text = tables(results, sizes, programs, xfer, a)
    print()
    print(text)
    if not a.no_results:
        os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
        path = os.path.join(ROOT, "bench/results/daemon-%s.md" % started.strftime("%Y-%m-%d"))
        versions = {"transmission": "transmission-daemon 3.00", "qbittorrent": "qbittorrent-nox 4.5.2",
                    "rqbit": "rqbit 9.1.0 (server start --fastresume)"}
        with open(path, "w") as f:
            f.write("# bench/daemon.py, %s\n\n" % started.strftime("%Y-%m-%d %H:%M"))
            f.write("bitswarm %s; %s; %d cores; `%s`\n\n" % (
                rev, ", ".join(versions[p] for p in programs if p in versions), os.cpu_count(),
                " ".join(["bench/daemon.py"] + sys.argv[1:])))
            f.write(text + "\n\n## Raw runs\n\n```\n")
            for r in raw:
                f.write(json.dumps(r) + "\n")
            if xfer:
                for k, v in xfer[1].items():
                    f.write(json.dumps({"transfer": k, "runs (wall s, cpu s, rss MB)": v}) + "\n")
            f.write("```\n")
        log("\nwritten to %s" % os.path.relpath(path, os.getcwd()))


if __name__ == "__main__":
    main()
