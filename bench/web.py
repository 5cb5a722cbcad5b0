#!/usr/bin/python3
"""Web page benchmark (issue 18, item 9): bitswarm's web page against Transmission's own web
client (Debian's transmission-daemon 3.00 serving /usr/share/transmission/web), each on its
daemon holding the same N torrents (10,000 by default), in one run, in headless Chromium driven
by Selenium and the Chrome DevTools Protocol. Run with /usr/bin/python3 (Debian's selenium).

The torrents and the daemons are bench/daemon.py's (imported, not copied): N torrents of 1 MiB,
one file each, data on disk, the tracker unreachable, DHT/LSD/PeX/uTP off. They are added
paused (through the RPC, one torrent-add each): transmission-daemon 3.00 checks an added
torrent's data at about 9 a second, paused or not (bench/daemon.py: 1,115 s for 10,000), so
each program's state with all N, checked and paused, is made once and kept under --dir (as the
torrents are), and copied for each run. Paused or seeding without peers, a torrent is idle:
nothing in its row changes, and neither RPC counts it as recently active.

For each program, one after the other:
  - bulk add, on a fresh state folder: the page open on the empty daemon, then all N added (one torrent-add each, on one
    keep-alive connection); measured over the --bulk seconds (60) after the last add, while
    both RPCs still count every torrent as recently active (their 60 s after an add): the
    page's refreshes (the torrent-get of `recently-active` that each client sends every 2 s,
    bitswarm, or 5 s, Transmission's default), their response bytes, and the browser's CPU.
    (Transmission is still checking most of them then; the statuses at the end are kept.)
  - then the program on a copy of its kept state, once it lists all N, stopped, and none as
    recently active; --runs times (3), a new browser (empty profile and cache):
    - first render: from navigation start (performance.timeOrigin) to the first frame painted
      with the top row of the list (the torrent named f00000.bin, first by name, the default
      order of both) in the page: a script added before the page's own
      (Page.addScriptToEvaluateOnNewDocument) looks for that row's name cell at every
      requestAnimationFrame; the time is that of the next frame's callback, when the frame
      that first held the row has been produced.
    - steady refreshes, --steady seconds (75) starting 5 s after the first render, the
      torrents idle: per refresh, the response bytes of the refresh's torrent-get (CDP's
      Network.loadingFinished encodedDataLength: what came over the connection, headers
      included) and of every RPC call in the window divided by the refreshes, and per minute;
      the browser's CPU (Performance.getMetrics TaskDuration, ScriptDuration: deltas over the
      window divided by the refreshes); and the daemon's own CPU (/proc, utime+stime) per
      refresh. A response counts in the window it finished in. bitswarm's page asks no
      refresh: it follows one response that stays open (POST /transmission/stream), a line per
      update; each line is a refresh here, its bytes those CDP's Network.dataReceived gives
      (encodedDataLength: on the wire, with the chunk's framing), and the empty lines that only
      keep the stream alive (one per 25 s) count in every RPC response's bytes. Chromium
      reports a gzipped part's wire bytes only with a later part, so bitswarm's windows start
      once its stream has sent a part after its first line (the whole list). Request bytes
      are counted for neither (Transmission's page sends a request of some 400 bytes with every
      refresh; bitswarm's none). Nothing runs in the page meanwhile but the page itself.
  - then, that program still running, with activity (unless --no-activity): ACTIVE_N (5)
    more torrents of 48 MiB added, limited to 64 kB/s each and started, downloading from
    `bitswarm seed` seeders found through a `bitswarm tracker` (the same for both daemons);
    once all download, --runs new browsers measured as the idle runs (their rows' rates,
    progress and ETA move all along), and the body of each run's last refresh kept (what the
    answer holds with 5 moving). Then they are removed with their data.
Medians over the runs; ratios bitswarm ÷ Transmission. Prints Markdown tables and writes them
with the raw runs to bench/results/web-DATE.md (--results). Every program started is stopped at
the end.

Everything runs in a network namespace of its own (the script re-runs itself under `unshare -rn`,
as bench/dht-race.py and scripts/test do): `lo`, and a veth pair inside it carrying SEED_HOST
(10.91.0.1: the tracker and the seeders) and DAEMON_HOST (10.91.0.2: both daemons' peer address);
no route leads off the machine. Transmission dials no peer at 127.0.0.0/8 (libtransmission's
"martian" addresses), so on loopback alone it announced and never connected; the same
non-loopback address is handed to both daemons. The RPCs and the pages stay on 127.0.0.1.

Usage: bench/web.py [--n 10000] [--runs 3] [--steady 75] [--bulk 60] [--programs bitswarm,transmission] [--no-activity]
       [--results FILE]
"""
import argparse, atexit, base64, datetime, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as bench  # noqa: E402  bench/daemon.py: the torrents, the programs, their processes

from selenium import webdriver  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "bitswarm", "tests", "web"))
from webtest import PortZeroService  # noqa: E402  chromedriver on a port it picks itself

ROOT = bench.ROOT
# The activity (see Activity): this many torrents downloading, of this size, at this limit each.
ACTIVE_N, ACTIVE_MIB, ACTIVE_LIMIT = 5, 48, 64
TOP = "f00000.bin"  # the first torrent by name: the list's top row in both pages
STREAM = "/transmission/stream"  # bitswarm's page: its update stream (one response, a line per update)
WEB_HOME = "/usr/share/transmission/web"
# Where each page puts a row's name.
NAME_CELL = {"bitswarm": "#rows .row .c-name", "transmission": ".torrent_name"}
VERSIONS = {"transmission": "transmission-daemon 3.00 and its web client (Debian)"}
# The namespace (see the top): its veth pair's two ends and their addresses.
NETNS_ENV = "BITSWARM_WEB_NETNS"
SEED_IF, SEED_HOST = "bw0", "10.91.0.1"
DAEMON_IF, DAEMON_HOST = "bw1", "10.91.0.2"
log = bench.log

FIRST_RENDER_JS = """
(() => {
  const cell = %s, name = %s;
  let seen = false;
  window.__benchFirstRender = null;
  const tick = () => {
    if (seen) { window.__benchFirstRender = performance.now(); return; }
    const e = document.querySelector(cell);
    if (e && e.textContent.trim() === name) seen = true;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


# ---------------------------------------------------------------- the browser

class Browser:
    """Headless Chromium with an empty profile, its network events kept (chromedriver's
    performance log: CDP events) and its page's CPU counters on."""

    def __init__(self, work, program):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
        options = webdriver.ChromeOptions()
        options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--no-proxy-server", "--window-size=1280,900",
                  "--disable-features=Translate", "--user-data-dir=" + self.profile,
                  "--disk-cache-dir=" + os.path.join(self.profile, "cache")]:
            options.add_argument(a)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
        service = PortZeroService(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
        self.d = webdriver.Chrome(service=service, options=options)
        self.d.set_page_load_timeout(300)
        self.d.set_script_timeout(300)
        self.d.execute_cdp_cmd("Performance.enable", {"timeDomain": "timeTicks"})
        self.d.execute_cdp_cmd("Network.enable", {})
        self.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
            "source": FIRST_RENDER_JS % (json.dumps(NAME_CELL[program]), json.dumps(TOP))})
        self.requests = {}  # requestId -> {"t", "url", "body", "bytes", "status"}

    def drain(self):
        """Reads the CDP events logged since the last call into self.requests."""
        for entry in self.d.get_log("performance"):
            m = json.loads(entry["message"])["message"]
            p = m.get("params", {})
            if m["method"] == "Network.requestWillBeSent":
                r = p["request"]
                # When chromedriver logged it (ms since the epoch): sent then.
                self.requests[p["requestId"]] = {"t": entry["timestamp"] / 1000, "url": r["url"], "method": r["method"],
                                                 "body": r.get("postData", ""), "bytes": None, "status": None}
            elif m["method"] == "Network.responseReceived" and p["requestId"] in self.requests:
                self.requests[p["requestId"]]["status"] = p["response"]["status"]
            elif m["method"] == "Network.dataReceived" and p["requestId"] in self.requests \
                    and self.requests[p["requestId"]]["url"].endswith(STREAM):
                # A part of bitswarm's update stream as it came: a line (or an empty one that
                # only says the stream is alive), its bytes on the wire with the chunk's framing.
                self.requests[p["requestId"]].setdefault("chunks", []).append(
                    {"t": entry["timestamp"] / 1000, "bytes": p["encodedDataLength"], "data": p["dataLength"]})
            elif m["method"] == "Network.loadingFinished" and p["requestId"] in self.requests:
                self.requests[p["requestId"]]["bytes"] = p["encodedDataLength"]
                self.requests[p["requestId"]]["end"] = entry["timestamp"] / 1000

    def metrics(self):
        got = self.d.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
        return {m["name"]: m["value"] for m in got}

    def quit(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def is_refresh(r):
    """The periodic refresh: a torrent-get of `recently-active`."""
    if not r["url"].endswith("/transmission/rpc") or r["method"] != "POST":
        return False
    try:
        body = json.loads(r["body"])
    except ValueError:
        return False
    return body.get("method") == "torrent-get" and body.get("arguments", {}).get("ids") == "recently-active"


def window(browser, prog, seconds):
    """Refreshes over `seconds`, nothing else done meanwhile: their bytes, every RPC call's,
    the browser's CPU and the daemon's, per refresh. A response counts in the window it
    finished in (bitswarm's page holds its refresh until something changes, up to 25 s)."""
    browser.drain()
    m0, c0, t0 = browser.metrics(), bench.cpu_ticks(prog.p.pid), time.time()
    time.sleep(seconds)
    m1, c1, t1 = browser.metrics(), bench.cpu_ticks(prog.p.pid), time.time()
    load = os.getloadavg()
    time.sleep(1.5)  # for the last responses' events
    browser.drain()
    rpc = [r for r in browser.requests.values()
           if r["url"].endswith("/transmission/rpc") and r.get("end") is not None and t0 <= r["end"] <= t1]
    refreshes = [r for r in rpc if is_refresh(r)]
    # bitswarm's page: its updates are the lines of its stream (each a refresh), the empty ones
    # that only keep it alive count in the bytes of all.
    chunks = [c for r in browser.requests.values() if r["url"].endswith(STREAM)
              for c in r.get("chunks", []) if t0 <= c["t"] <= t1]
    refreshes += [c for c in chunks if c["data"] > 1]
    rpc += chunks
    n = len(refreshes)
    by_method = {}  # RPC method -> [answers, their bytes]
    for r in rpc:
        try:
            m = "stream" if "data" in r else json.loads(r["body"]).get("method", "?")
        except (ValueError, AttributeError):
            m = "?"
        by_method.setdefault(m, [0, 0])
        by_method[m][0] += 1
        by_method[m][1] += r["bytes"] or 0
    per = lambda v: v / n if n else None
    return {
        "seconds": t1 - t0,
        "refreshes": n,
        "refresh_bytes": [r["bytes"] for r in refreshes],
        "refresh_bytes_median": statistics.median([r["bytes"] or 0 for r in refreshes]) if n else None,
        "refresh_bytes_per_minute": sum(r["bytes"] or 0 for r in refreshes) * 60 / (t1 - t0),
        "rpc_calls": len(rpc),
        "rpc_bytes": sum(r["bytes"] or 0 for r in rpc),
        "rpc_bytes_per_refresh": per(sum(r["bytes"] or 0 for r in rpc)),
        "rpc_bytes_per_minute": sum(r["bytes"] or 0 for r in rpc) * 60 / (t1 - t0),
        "rpc_by_method": by_method,
        "task_ms": (m1["TaskDuration"] - m0["TaskDuration"]) * 1000,
        "script_ms": (m1["ScriptDuration"] - m0["ScriptDuration"]) * 1000,
        "task_ms_per_refresh": per((m1["TaskDuration"] - m0["TaskDuration"]) * 1000),
        "script_ms_per_refresh": per((m1["ScriptDuration"] - m0["ScriptDuration"]) * 1000),
        "task_ms_per_minute": (m1["TaskDuration"] - m0["TaskDuration"]) * 1000 * 60 / (t1 - t0),
        "daemon_cpu_ms_per_refresh": per((c1 - c0) * 1000 / bench.CLK),
        "loadavg_at_end": load,
    }


def stream_settled(browser, timeout=40):
    """bitswarm's page: Chromium reports the wire bytes of a gzipped response's part only with
    a later part (seen: the first line, the whole list, counted with the empty line the stream
    sends 25 s later). A window starts once the stream has sent a part after its first line, so
    that it does not count the list's bytes. Nothing to wait for without a stream."""
    end = time.time() + timeout
    while True:
        browser.drain()
        streams = [r for r in browser.requests.values() if r["url"].endswith(STREAM)]
        if all(len(r.get("chunks", [])) >= 2 for r in streams):
            return
        if time.time() > end:
            raise RuntimeError("the stream sent nothing after its first line in %d s" % timeout)
        time.sleep(0.5)


def last_refresh(browser):
    """The last refresh the browser finished: what the page asked and what came back (its
    body, from the browser's buffer; without the headers)."""
    done = [(r["end"], rid, r) for rid, r in browser.requests.items() if r.get("end") is not None and is_refresh(r)]
    if not done:
        return None
    _, rid, r = max(done)
    try:
        body = browser.d.execute_cdp_cmd("Network.getResponseBody", {"requestId": rid})
    except Exception as e:  # noqa: BLE001  the buffer may have dropped it; said in the results
        return {"request": r["body"], "error": str(e)}
    text = base64.b64decode(body["body"]).decode() if body.get("base64Encoded") else body["body"]
    out = {"request": r["body"], "bytes_with_headers": r["bytes"], "body_bytes": len(text.encode()), "body": text}
    try:
        torrents = json.loads(text)["arguments"]["torrents"]
        out["torrents"] = len(torrents)
        out["fields"] = sorted({k for t in torrents for k in t}) if torrents else []
        if torrents:
            out["bytes_per_torrent"] = [len(json.dumps(t, separators=(",", ":")).encode()) for t in torrents]
    except (ValueError, KeyError, TypeError):
        pass
    return out


def page_url(prog):
    return "http://127.0.0.1:%d/transmission/web/" % prog.api_port


def first_render(browser, prog, timeout=300):
    """Milliseconds from navigation start to the first frame painted with the top row."""
    t0 = time.monotonic()
    browser.d.get(page_url(prog))
    while time.monotonic() - t0 < timeout:
        v = browser.d.execute_script("return window.__benchFirstRender")
        if v is not None:
            return v
        time.sleep(0.1)
    raise RuntimeError("%s: the row %s not shown after %d s" % (prog.name, TOP, timeout))


# ---------------------------------------------------------------- the programs

def start(name, work, data, n, prog=None):
    prog = prog or bench.CLASSES[name](work, data, n)
    if name == "transmission":
        prog.env["TRANSMISSION_WEB_HOME"] = WEB_HOME
    prog.start()
    t0 = time.monotonic()
    while True:
        try:
            prog.rpc("session-get", {})
            return prog
        except (OSError, RuntimeError, bench.http.client.HTTPException):
            prog.http.close()
            if prog.p.poll() is not None:
                raise RuntimeError("%s exited at start (status %s), see %s" % (name, prog.p.returncode, work))
            if time.monotonic() - t0 > 60:
                raise RuntimeError("%s: RPC not up after 60 s" % name)
            time.sleep(0.05)


def add_all(prog, metainfo):
    """Every torrent, paused, one torrent-add each."""
    for name, b64 in metainfo:
        data, _ = prog.rpc("torrent-add", {"metainfo": b64, "download-dir": prog.data, "paused": True})
        r = json.loads(data)
        if r["result"] != "success" or "torrent-added" not in r["arguments"]:
            raise RuntimeError("%s: torrent-add %s: %s" % (prog.name, name, data[:300]))


def wait_until(prog, what, done, timeout, every=2.0):
    """Polls `done(prog)` until true; raises after `timeout` seconds, saying what it waited for."""
    t0 = time.monotonic()
    while not done(prog):
        if prog.p.poll() is not None:
            raise RuntimeError("%s exited (status %s) waiting for %s" % (prog.name, prog.p.returncode, what))
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("%s: %s not after %.0f s" % (prog.name, what, timeout))
        time.sleep(every)
    return time.monotonic() - t0


def statuses(prog, ids=None):
    args = {"fields": ["id", "status"]}
    if ids:
        args["ids"] = ids
    data, _ = prog.rpc("torrent-get", args)
    by = {}
    for t in json.loads(data)["arguments"]["torrents"]:
        by[t["status"]] = by.get(t["status"], 0) + 1
    return by


def idle(prog):
    """Every torrent loaded and stopped, and the RPC lists none as recently active."""
    return statuses(prog) == {0: prog.n} and not statuses(prog, "recently-active")


def prepared_state(name, data, metainfo, a, base):
    """A state folder of `name` holding every torrent, paused and checked, made once and kept
    under --dir (transmission-daemon 3.00 checks every added torrent's data, paused or not, at
    about 9 a second: 19 minutes for 10,000), as bench/daemon.py keeps its torrents."""
    cache = os.path.join(a.dir, "web-state-%s-%d-%s" % (name, len(metainfo), a.piece_size))
    if os.path.exists(os.path.join(cache, "done")):
        return cache
    log("  %s: making its state with %d paused torrents in %s (once, kept)" % (name, len(metainfo), cache))
    work = tempfile.mkdtemp(prefix=name + "-prepare-", dir=base)
    prog = start(name, work, data, len(metainfo))
    try:
        add_all(prog, metainfo)
        took = wait_until(prog, "every torrent checked and stopped",
                          lambda p: statuses(p) == {0: len(metainfo)}, 3600, 10)
        log("  %s: all checked and stopped %.0f s after the adds" % (name, took))
    finally:
        _, clean = prog.stop()
    if not clean:
        raise RuntimeError("%s did not stop cleanly: its state is not kept" % name)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(prog.state, cache)
    open(os.path.join(cache, "done"), "w").close()
    shutil.rmtree(work, ignore_errors=True)
    return cache


def start_on(name, work, data, n, cache):
    """`name` on a copy of a prepared state (its settings, with this run's ports, kept)."""
    prog = bench.CLASSES[name](work, data, n)
    for entry in os.listdir(cache):
        if entry in ("settings.json", "done"):
            continue
        src, dst = os.path.join(cache, entry), os.path.join(prog.state, entry)
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
    return start(name, work, data, n, prog)


class Activity:
    """ACTIVE_N torrents of ACTIVE_MIB MiB (random data, made once and kept under --dir), each
    seeded by `bitswarm seed` and announced to a `bitswarm tracker`, both on SEED_HOST: what both
    daemons download, the same way, at a limit of ACTIVE_LIMIT kB/s each (set through the RPC
    before they start), so that their rows' rates, progress and ETA move for minutes."""

    def __init__(self, a, base):
        src = os.path.join(a.dir, "web-active-src")
        os.makedirs(src, exist_ok=True)
        files = []
        for i in range(ACTIVE_N):
            # Named to sort after f00000.bin, which stays the list's top row.
            f = os.path.join(src, "x-active-%d.bin" % i)
            if not os.path.exists(f) or os.path.getsize(f) != ACTIVE_MIB << 20:
                with open(f + ".part", "wb") as out:
                    for _ in range(ACTIVE_MIB):
                        out.write(os.urandom(1 << 20))
                os.rename(f + ".part", f)
            files.append(f)
        self.tracker, addr = bench.start_tracker(SEED_HOST)
        self.torrents, self.seeders = [], []
        for f in files:
            work = tempfile.mkdtemp(prefix="active-", dir=base)
            t = bench.make_torrent(work, f, addr)
            self.torrents.append((os.path.basename(f), base64.b64encode(open(t, "rb").read()).decode()))
            self.seeders.append(bench.peer.seed_bitswarm(t, src, SEED_HOST)[0])
            bench.wait_seeder_known(addr, t)

    def stop(self):
        for p in self.seeders:
            p.stop()
        self.tracker.stop()


def downloading(prog, ids):
    data, _ = prog.rpc("torrent-get", {"ids": ids, "fields": ["id", "rateDownload", "leftUntilDone"]})
    ts = json.loads(data)["arguments"]["torrents"]
    return len(ts) == len(ids) and all(t["rateDownload"] > 0 and t["leftUntilDone"] > 0 for t in ts)


def measure_active(prog, act, base, a, r):
    """With the program idle and holding N: the activity's torrents added (paused, limited,
    then started); once all download, --runs new browsers, each measured as the idle runs."""
    dl = tempfile.mkdtemp(prefix=prog.name + "-active-", dir=base)
    ids = []
    for name, b64 in act.torrents:
        data, _ = prog.rpc("torrent-add", {"metainfo": b64, "download-dir": dl, "paused": True})
        reply = json.loads(data)
        if reply["result"] != "success" or "torrent-added" not in reply["arguments"]:
            raise RuntimeError("%s: torrent-add %s: %s" % (prog.name, name, data[:300]))
        ids.append(reply["arguments"]["torrent-added"]["id"])
    prog.rpc("torrent-set", {"ids": ids, "downloadLimited": True, "downloadLimit": ACTIVE_LIMIT})
    prog.rpc("torrent-start", {"ids": ids})
    r["active_start_s"] = wait_until(prog, "the %d downloading" % len(ids), lambda p: downloading(p, ids), 180, 1)
    r["active_runs"] = []
    try:
        for i in range(a.runs):
            b = Browser(base, prog.name)
            try:
                run = {"first_render_ms": first_render(b, prog)}
                time.sleep(5)
                stream_settled(b)
                run.update(window(b, prog, a.steady))
                run["still_downloading"] = downloading(prog, ids)
                run["last_refresh"] = last_refresh(b)
            finally:
                b.quit()
            log("  %s active run %d: %s; all still downloading: %s" % (prog.name, i + 1, short(run),
                                                                       run["still_downloading"]))
            r["active_runs"].append(run)
    finally:
        prog.rpc("torrent-remove", {"ids": ids, "delete-local-data": True})


def measure(name, base, data, metainfo, a, act):
    r = {"program": name, "n": len(metainfo), "runs": []}
    cache = prepared_state(name, data, metainfo, a, base)
    # The page open on an empty daemon, then all added.
    prog = start(name, tempfile.mkdtemp(prefix=name + "-bulk-", dir=base), data, len(metainfo))
    try:
        b = Browser(base, name)
        try:
            b.d.get(page_url(prog))
            time.sleep(5)
            log("  %s: adding %d, paused, with the page open" % (name, len(metainfo)))
            t0 = time.monotonic()
            add_all(prog, metainfo)
            r["add_s"] = time.monotonic() - t0
            log("  %s: added in %.1f s; the %d s after" % (name, r["add_s"], a.bulk))
            r["bulk"] = window(b, prog, a.bulk)
            r["bulk"]["statuses_after"] = statuses(prog)
            log("  %s: after the add: %s; statuses then %s" % (name, short(r["bulk"]), r["bulk"]["statuses_after"]))
        finally:
            b.quit()
    finally:
        prog.stop()
    # Idle: on a copy of the prepared state, once the RPC lists nothing as recently active.
    prog = start_on(name, tempfile.mkdtemp(prefix=name + "-idle-", dir=base), data, len(metainfo), cache)
    try:
        r["idle_after_start_s"] = wait_until(prog, "nothing recently active", idle, 180)
        for i in range(a.runs):
            b = Browser(base, name)
            try:
                run = {"first_render_ms": first_render(b, prog)}
                time.sleep(5)
                stream_settled(b)
                run.update(window(b, prog, a.steady))
                errors = [e["message"] for e in b.d.get_log("browser") if e["level"] == "SEVERE"]
                if errors:
                    run["console_errors"] = errors[:5]
            finally:
                b.quit()
            log("  %s run %d: first render %.0f ms; steady: %s" % (name, i + 1, run["first_render_ms"], short(run)))
            r["runs"].append(run)
        if act is not None:
            try:
                measure_active(prog, act, base, a, r)
            except RuntimeError as e:
                # Kept in the results, said in the log: the idle figures still count.
                r["active_error"] = str(e)
                log("  %s: no activity measured: %s" % (name, e))
    finally:
        prog.stop()
    return r


def short(w):
    return "%d refreshes of %s B (all RPC %.0f B/refresh), browser %.1f ms/refresh (script %.1f), daemon %.1f ms/refresh" % (
        w["refreshes"], w["refresh_bytes_median"], w["rpc_bytes_per_refresh"] or 0, w["task_ms_per_refresh"] or 0,
        w["script_ms_per_refresh"] or 0, w["daemon_cpu_ms_per_refresh"] or 0)


# ---------------------------------------------------------------- the tables

def med(r, key, runs="runs"):
    vals = [run[key] for run in r.get(runs, []) if run.get(key) is not None]
    return statistics.median(vals) if vals else None


def amed(key):
    return lambda r: med(r, key, "active_runs")


ROWS = [
    # (label, getter, format)
    ("first render: navigation → the top row painted (median of runs)", lambda r: med(r, "first_render_ms"), "%.0f ms"),
    ("refreshes in the steady window", lambda r: med(r, "refreshes"), "%.0f"),
    ("steady: bytes per refresh (its torrent-get's response, headers included)",
     lambda r: med(r, "refresh_bytes_median"), "%.0f B"),
    ("steady: every RPC response's bytes, per refresh", lambda r: med(r, "rpc_bytes_per_refresh"), "%.0f B"),
    ("steady: every RPC response's bytes, per minute", lambda r: med(r, "rpc_bytes_per_minute"), "%.0f B"),
    ("steady: browser CPU per refresh (TaskDuration)", lambda r: med(r, "task_ms_per_refresh"), "%.2f ms"),
    ("steady: of which script (ScriptDuration)", lambda r: med(r, "script_ms_per_refresh"), "%.2f ms"),
    ("steady: browser CPU per minute", lambda r: med(r, "task_ms_per_minute"), "%.1f ms"),
    ("steady: the refreshes' bytes, per minute", lambda r: med(r, "refresh_bytes_per_minute"), "%.0f B"),
    ("steady: daemon CPU per refresh (/proc, 10 ms ticks)", lambda r: med(r, "daemon_cpu_ms_per_refresh"), "%.1f ms"),
    ("%d downloading (%d kB/s each): refreshes in the window" % (ACTIVE_N, ACTIVE_LIMIT), amed("refreshes"), "%.0f"),
    ("%d downloading: bytes per refresh (median)" % ACTIVE_N, amed("refresh_bytes_median"), "%.0f B"),
    ("%d downloading: the refreshes' bytes, per minute" % ACTIVE_N, amed("refresh_bytes_per_minute"), "%.0f B"),
    ("%d downloading: every RPC response's bytes, per minute" % ACTIVE_N, amed("rpc_bytes_per_minute"), "%.0f B"),
    ("%d downloading: browser CPU per refresh" % ACTIVE_N, amed("task_ms_per_refresh"), "%.2f ms"),
    ("%d downloading: browser CPU per minute" % ACTIVE_N, amed("task_ms_per_minute"), "%.1f ms"),
    ("%d downloading: daemon CPU per refresh" % ACTIVE_N, amed("daemon_cpu_ms_per_refresh"), "%.1f ms"),
    ("adding all (paused, one torrent-add each)", lambda r: r.get("add_s"), "%.1f s"),
    ("60 s after the add: refreshes", lambda r: r["bulk"]["refreshes"], "%d"),
    ("60 s after the add: bytes per refresh (median)", lambda r: r["bulk"]["refresh_bytes_median"], "%.0f B"),
    ("60 s after the add: every RPC response's bytes, all", lambda r: r["bulk"]["rpc_bytes"], "%.0f B"),
    ("60 s after the add: browser CPU per refresh", lambda r: r["bulk"]["task_ms_per_refresh"], "%.1f ms"),
    ("60 s after the add: browser CPU, all", lambda r: r["bulk"]["task_ms"], "%.0f ms"),
    ("60 s after the add: daemon CPU per refresh", lambda r: r["bulk"]["daemon_cpu_ms_per_refresh"], "%.1f ms"),
]


def tables(results, programs, n):
    head = ["%d idle torrents" % n] + ["%s" % p for p in programs]
    both = "bitswarm" in results and "transmission" in results
    if both:
        head.append("bitswarm ÷ transmission")
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, get, f in ROWS:
        cells = [label]
        vals = {}
        for p in programs:
            try:
                v = get(results[p])
            except (KeyError, TypeError):
                v = None
            vals[p] = v
            cells.append(f % v if v is not None else "–")
        if both:
            x, y = vals["bitswarm"], vals["transmission"]
            cells.append("%.2f×" % (x / y) if x is not None and y else "–")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def into_netns():
    """Re-runs this script, with the same arguments, in a network namespace of its own (see the
    top): `lo` up, and a veth pair whose ends carry SEED_HOST and DAEMON_HOST."""
    if subprocess.run(["unshare", "-rn", "true"], stderr=subprocess.DEVNULL).returncode != 0:
        sys.exit("bench/web.py runs in a network namespace of its own, and this machine does not allow one "
                 "(`unshare -rn` failed): Transmission dials no peer on loopback")
    setup = " && ".join([
        "ip link set lo up",
        "ip link add %s type veth peer name %s" % (SEED_IF, DAEMON_IF),
        "ip addr add %s/24 dev %s" % (SEED_HOST, SEED_IF),
        "ip addr add %s/24 dev %s" % (DAEMON_HOST, DAEMON_IF),
        "ip link set %s up" % SEED_IF,
        "ip link set %s up" % DAEMON_IF,
        'exec "$0" "$@"'])
    os.environ[NETNS_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("unshare", ["unshare", "-rn", "sh", "-c", setup, "/usr/bin/python3", os.path.abspath(__file__)]
              + sys.argv[1:])


def check_netns():
    """In the namespace into_netns made: only its interfaces (nothing leads off the machine),
    and its two addresses there."""
    ifs = sorted(l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:])
    if ifs != sorted(["lo", SEED_IF, DAEMON_IF]):
        sys.exit("%s=1 but this is not bench/web.py's network namespace (interfaces %s)" % (NETNS_ENV, ", ".join(ifs)))
    for host in (SEED_HOST, DAEMON_HOST):
        s = socket.socket()
        try:
            s.bind((host, 0))
        except OSError as e:
            sys.exit("the namespace has no %s: %s" % (host, e))
        finally:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steady", type=float, default=75, help="the steady window, s (at least 60: an idle page of bitswarm's is answered every 25 s)")
    ap.add_argument("--no-activity", action="store_true", help="measure idle only, not with torrents downloading")
    ap.add_argument("--bulk", type=float, default=60, help="the window after the bulk add, s")
    ap.add_argument("--programs", default="bitswarm,transmission")
    ap.add_argument("--piece-size", default="64K")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/tmp/bitswarm-bench"))
    ap.add_argument("--no-results", action="store_true", help="do not write bench/results/web-DATE.md")
    ap.add_argument("--results", help="the results file to add to (default bench/results/web-DATE.md)")
    ap.add_argument("--bitswarm", help="this bitswarm binary (an earlier build, to compare), not this tree's release build")
    ap.add_argument("--prepare-only", action="store_true", help="make the kept state folders, measure nothing")
    a = ap.parse_args()
    programs = [p for p in a.programs.split(",") if p]
    for p in programs:
        if p not in NAME_CELL:
            ap.error("unknown program %s (known: %s)" % (p, ", ".join(NAME_CELL)))
    if "transmission" in programs and not shutil.which("transmission-daemon"):
        sys.exit("transmission-daemon not found: apt-get install -y transmission-daemon")
    if "transmission" in programs and not os.path.exists(os.path.join(WEB_HOME, "index.html")):
        sys.exit("Transmission's web client not found in %s: apt-get install -y transmission-common" % WEB_HOME)
    for exe in ("chromium", "chromedriver"):
        if not shutil.which(exe):
            sys.exit("%s not found: apt-get install -y chromium chromium-driver python3-selenium" % exe)
    signal.signal(signal.SIGTERM, bench._on_signal)
    signal.signal(signal.SIGHUP, bench._on_signal)
    atexit.register(bench.stop_all)

    if a.bitswarm:
        bench.BIN = bench.peer.BIN = os.path.abspath(a.bitswarm)
    elif os.environ.get(NETNS_ENV) != "1":
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "bitswarm"], cwd=ROOT, check=True)
    if os.environ.get(NETNS_ENV) != "1":
        into_netns()
    check_netns()
    bench.PEER_HOST = DAEMON_HOST
    started = datetime.datetime.now()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "daemon-src-%s" % a.piece_size)
    log("%d torrents of 1 MiB (%s pieces) in %s (bench/daemon.py's, made once, kept)" % (a.n, a.piece_size, src))
    data, torrents = bench.dataset(src, a.n, bench.parse_size(a.piece_size))
    metainfo = [(name, base64.b64encode(t).decode()) for name, t, _ in torrents]
    base = tempfile.mkdtemp(prefix="bitswarm-web-bench-", dir=a.dir)
    results = {}
    act = None
    try:
        if not a.prepare_only and not a.no_activity:
            act = Activity(a, base)
        for p in programs:
            log("%s, %d torrents" % (p, a.n))
            if a.prepare_only:
                prepared_state(p, data, metainfo, a, base)
                continue
            results[p] = measure(p, base, data, metainfo, a, act)
    finally:
        if act is not None:
            act.stop()
        shutil.rmtree(base, ignore_errors=True)
        bench.stop_all()

    if a.prepare_only:
        return
    text = tables(results, programs, a.n)
    print()
    print(text)
    if not a.no_results:
        path = a.results or os.path.join(ROOT, "bench/results/web-%s.md" % started.strftime("%Y-%m-%d"))
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip()
        chromium = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
        with open(path, "a") as f:
            f.write("# bench/web.py, %s\n\n" % started.strftime("%Y-%m-%d %H:%M"))
            ours = "bitswarm " + (("%s (%s)" % (a.bitswarm, subprocess.run(
                [bench.BIN, "--version"], capture_output=True, text=True).stdout.strip())) if a.bitswarm else rev)
            parts = [ours] + [VERSIONS[p] for p in programs if p in VERSIONS] + [
                chromium, "%d cores" % os.cpu_count(), "`%s`" % " ".join(["bench/web.py"] + sys.argv[1:]),
                "in a network namespace: seeders and tracker at %s, the daemons' peers at %s" % (SEED_HOST, DAEMON_HOST),
                "load average at the end %.2f %.2f %.2f" % os.getloadavg()]
            f.write("; ".join(parts) + "\n\n")
            f.write(text + "\n\n## Raw runs\n\n```\n")
            for p in programs:
                f.write(json.dumps(results[p]) + "\n")
            f.write("```\n\n")
        log("\nwritten to %s" % os.path.relpath(path, os.getcwd()))


if __name__ == "__main__":
    main()
