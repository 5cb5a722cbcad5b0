"""The daemon's web page in headless Chromium, driven by Selenium (run with /usr/bin/python3 by
tests/web_ui.rs, against a daemon and libtorrent seeders that test started).

  ui_test.py URL TORRENT MAGNET DOWNLOADS TREE PEERS_TORRENT SEEDER_PORT
  ui_test.py --auth URL MAGNET DOWNLOADS
  ui_test.py --many N URL


URL is the daemon's RPC address (http://127.0.0.1:PORT/); TORRENT a .torrent file whose data a
seeder has (added by the file picker); MAGNET a magnet link another seeder has (pasted);
DOWNLOADS the daemon's download folder; TREE a .torrent of several files in folders (added
paused, to look at its files as a tree); PEERS_TORRENT a .torrent a libtorrent seeder listening
on 127.0.0.1:SEEDER_PORT has (downloaded slowly, to look at that peer in its details). With --auth, URL carries a user and password
(http://USER:PASSWORD@HOST:PORT/): the page loads behind them and adds MAGNET, paused. With
--many, N paused magnet links are added first (through one keep-alive connection), and the page
must list them quickly, keep only the rows in view, and follow the update stream with small lines. Prints a line per step; exits 0 when every step held
and the browser's console logged no error, else 1 with what failed.
"""
import http.client
import json
import os
import sys
import time
import urllib.parse

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from webtest import Rpc, browser, cell, check_console, console, row, screenshot, shown_names, step, wait, wait_ready

AUTH = sys.argv[1] == "--auth"
MANY = int(sys.argv[2]) if sys.argv[1] == "--many" else 0
if MANY:
    url = sys.argv[3]
    torrent, magnet, downloads = "none.torrent", "magnet:?xt=urn:btih:00&dn=none", ""
elif AUTH:
    url, magnet, downloads = sys.argv[2:5]
    torrent = "none.torrent"
else:
    url, torrent, magnet, downloads, tree, peers_torrent, seeder_port = sys.argv[1:8]
TORRENT_NAME = os.path.basename(torrent)[: -len(".torrent")]
MAGNET_NAME = [p[3:] for p in magnet.split("?", 1)[1].split("&") if p.startswith("dn=")][0]
LONG = 90


def removed_in_page(driver, name, what):
    """After Remove is confirmed: the row gone (the page's update stream may bring it in
    `removed` before the torrent-remove's answer, which waits for the torrent to stop) and the
    dialog closed (at that answer)."""
    wait(driver, what, lambda d: row(d, name) is None)
    dialog = driver.find_element(By.ID, "remove-dialog")
    wait(driver, "the remove dialog closed", lambda d: not dialog.is_displayed(), LONG)


def select_only(driver, name):
    row(driver, name).find_element(By.CLASS_NAME, "c-name").click()
    wait(driver, f"{name} selected", lambda d: "selected" in row(d, name).get_attribute("class") and d.find_element(By.ID, "selection").text == "1 selected")


def limit_down(driver, name, kbps):
    """Sets torrent `name`'s own download limit to `kbps` kB/s in the page's Limits dialog."""
    select_only(driver, name)
    driver.find_element(By.ID, "limits").click()
    driver.find_element(By.ID, "limit-down-on").click()
    down = driver.find_element(By.ID, "limit-down")
    down.clear()
    down.send_keys(str(kbps))
    driver.find_element(By.ID, "limits-ok").click()


def junk_file():
    """A file named junk.torrent that is not a torrent, in a folder of its own."""
    folder = os.path.join(os.path.dirname(os.path.normpath(downloads)), "drag")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "junk.torrent")
    with open(path, "w") as f:
        f.write("not a torrent")
    return path


def drag_file(driver, target, path):
    """Drags the file at `path` onto the element with id `target` as the user's mouse would:
    Chromium's own drag events (CDP Input.dispatchDragEvent: enter, over, drop), trusted, with
    the file as the browser reads it from disk. While it is over the page, the page shows it."""
    r = driver.execute_script("const r = document.getElementById(arguments[0]).getBoundingClientRect();"
                              "return [r.left + r.width / 2, r.top + r.height / 2];", target)
    data = {"items": [], "files": [path], "dragOperationsMask": 1}  # 1: copy
    for kind in ("dragEnter", "dragOver"):
        driver.execute_cdp_cmd("Input.dispatchDragEvent", {"type": kind, "x": r[0], "y": r[1], "data": data})
    wait(driver, "the page showing the drag", lambda d: "dragging" in d.find_element(By.TAG_NAME, "body").get_attribute("class"))
    driver.execute_cdp_cmd("Input.dispatchDragEvent", {"type": "drop", "x": r[0], "y": r[1], "data": data})
    wait(driver, "the drag over", lambda d: "dragging" not in d.find_element(By.TAG_NAME, "body").get_attribute("class"))


def shift_tab_to(driver, target, most=40):
    """Moves the keyboard's focus back with shift+tab until it is on the element with id
    `target`."""
    for _ in range(most):
        if driver.switch_to.active_element.get_attribute("id") == target:
            return
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    raise AssertionError(f"shift+tab never reached #{target}")


def contrast(driver, element):
    """WCAG contrast ratio of an element's text colour against the page's background."""
    return driver.execute_script("""
        const lum = (c) => {
            const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => {
                v = Number(v) / 255;
                return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
            });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b;
        };
        const a = lum(getComputedStyle(arguments[0]).color), b = lum(getComputedStyle(document.body).backgroundColor);
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);""", element)


def add(driver, files=(), links="", labels="", folder=None, paused=False, expect_error=None):
    driver.find_element(By.ID, "add").click()
    dialog = driver.find_element(By.ID, "add-dialog")
    wait(driver, "the add dialog", lambda d: dialog.is_displayed())
    for f in files:
        driver.find_element(By.ID, "add-files").send_keys(f)
    if links:
        driver.find_element(By.ID, "add-url").send_keys(links)
    if labels:
        driver.find_element(By.ID, "add-labels").send_keys(labels)
    assert driver.find_element(By.ID, "add-dir").get_attribute("value") == downloads, "the folder is the daemon's"
    if folder:
        driver.find_element(By.ID, "add-dir").clear()
        driver.find_element(By.ID, "add-dir").send_keys(folder)
    if paused:
        driver.find_element(By.ID, "add-paused").click()
    driver.find_element(By.ID, "add-ok").click()
    if expect_error:
        err = driver.find_element(By.ID, "add-error")
        wait(driver, "the refusal shown in the dialog", lambda d: err.is_displayed() and expect_error in err.text)
        step(f"refused, and says why: {err.text}")
        driver.find_element(By.ID, "add-cancel").click()
    wait(driver, "the add dialog closed", lambda d: not dialog.is_displayed())


def main():
    driver = browser(dark=bool(os.environ.get("DARK")))
    rpc = Rpc(url)
    try:
        if MANY:
            run_many(driver)
        elif AUTH:
            run_auth(driver)
        else:
            run(driver, rpc)
        check_console(driver)
    finally:
        driver.quit()
    step(f"console: {len(console)} entries, no error")
    step("ok")


def add_many(n):
    """n paused magnet links named many-00000…, over one keep-alive connection."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url)
    handshake = Rpc(url)
    handshake.call("session-get", {"fields": ["version"]})
    sid = handshake.sid
    c = None
    reconnects = 0
    i = 0
    while i < n:
        body = json.dumps({"method": "torrent-add", "arguments": {
            "filename": f"magnet:?xt=urn:btih:{i + 1:040x}&dn=many-{i:05d}", "paused": True}})
        try:
            c = c or http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            c.request("POST", "/transmission/rpc", body, {"X-Transmission-Session-Id": sid})
            r = c.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            c = None  # the server closed it: again on a new one
            reconnects += 1
            assert reconnects < 100, "the daemon keeps closing the connection"
            continue
        assert r.status == 200 and json.loads(data)["result"] == "success", data[:300]
        i += 1
    c.close()


def run_many(driver):
    t0 = time.monotonic()
    add_many(MANY)
    added = time.monotonic()
    step(f"{MANY} torrents added in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    driver.get(url)
    totals = driver.find_element(By.ID, "totals")
    wait(driver, f"{MANY} listed", lambda d: totals.text.startswith(f"{MANY} torrents"))
    shown_after = time.monotonic() - t0
    rows = len(driver.find_elements(By.CSS_SELECTOR, "#rows .row"))
    assert 0 < rows <= 100, f"{rows} rows in the page for {MANY} torrents"
    assert shown_names(driver)[0] == "many-00000", shown_names(driver)[:3]
    step(f"listed in {shown_after:.2f} s, with {rows} rows in the page")
    # Scrolled to the end: the last ones, still as few rows.
    driver.execute_script("const v = document.getElementById('viewport'); v.scrollTop = v.scrollHeight;")
    wait(driver, "the last row shown", lambda d: f"many-{MANY - 1:05d}" in shown_names(d))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#rows .row")) <= 100
    # Sorted the other way, and searched, quickly.
    ms = driver.execute_script("""
        const t0 = performance.now();
        document.querySelector("#head button[data-column='name']").click();
        return performance.now() - t0;""")
    wait(driver, "sorted descending", lambda d: f"many-{MANY - 1:05d}" in shown_names(d)[:3]
         or d.find_element(By.ID, "viewport").get_attribute("scrollTop") != "0")
    step(f"sorted {MANY} in {ms:.0f} ms")
    assert ms < 1000, f"sorting {MANY} took {ms:.0f} ms"
    driver.find_element(By.ID, "search").send_keys("many-0999")
    wait(driver, "the search", lambda d: len(shown_names(d)) == 10)
    # The page follows the daemon's update stream: its first line is the whole list, the next
    # ones only what changed since the line before, also in the minute in which the RPC counts
    # every torrent just added as recently active; with nothing changing, no line at all (an
    # empty one every 25 s says the stream is alive).
    assert driver.execute_script("return document.body.dataset.updates;") == "stream"
    lines = lambda d: d.execute_script("return window.bitswarmUpdates.lines;")
    sizes = [n for _, n in lines(driver)]
    assert sizes and sizes[0] > 50 * MANY, sizes
    quiet = 10
    t0 = time.monotonic()
    time.sleep(quiet)  # the length of the quiet is the point: the stream says nothing meanwhile
    took = time.monotonic() - added
    assert took < 50, f"{took:.0f} s: the added torrents may no longer count as recently active"
    after = [n for _, n in lines(driver)][1:]
    assert all(n < 1000 for n in after), after
    last = driver.execute_script("const l = window.bitswarmUpdates.lines; return performance.now() - l[l.length - 1][0];")
    assert last >= quiet * 1000 - 500, f"a line {last:.0f} ms ago, in a quiet of {time.monotonic() - t0:.1f} s: {after}"
    step(f"first line {sizes[0]} bytes; then, up to {took:.0f} s after the add, lines of {after} bytes; "
         f"none in the last {last / 1000:.1f} s")


def peers_in_details(driver, rpc):
    """A libtorrent seeder, downloaded from slowly (a limit set in the page), in the torrent's
    details: its address, client, share, rates, flags and where we learned of it."""
    add(driver, files=[peers_torrent], paused=True)
    name = os.path.basename(peers_torrent)[: -len(".torrent")]
    wait(driver, f"{name} listed, stopped", lambda d: cell(d, name, "state") == "Stopped")
    limit_down(driver, name, 20)
    wait(driver, "the limit set", lambda d: rpc.torrent(name, ["downloadLimited"])["downloadLimited"] is True)
    driver.find_element(By.ID, "start").click()
    driver.find_element(By.ID, "details").click()
    details = driver.find_element(By.ID, "details-dialog")
    wait(driver, "the details open", lambda d: details.is_displayed() and d.find_element(By.ID, "details-title").text == name)

    def seeder(d):
        for tr in d.find_elements(By.CSS_SELECTOR, "#details-peers tbody tr"):
            cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            if cells and cells[0].startswith("127.0.0.1:") and cells[3]:
                return cells
        return None
    cells = wait(driver, "the seeder in the peers list, sending", seeder, LONG)
    address, client, has, down, up, flags, source = cells
    assert "libtorrent" in client.lower(), cells
    assert has == "100%", cells
    assert down.endswith("/s") and up == "", cells
    assert "D" in flags or "d" in flags, cells
    # We learned of it from the tracker (and connected to its listening port), or it
    # connected to us (then flagged I).
    assert (source == "tracker" and address == f"127.0.0.1:{seeder_port}" and "I" not in flags) or (
        source == "incoming" and "I" in flags), cells
    headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#details-peers thead th")]
    assert headers == ["Address", "Client", "Has", "Down", "Up", "Flags", "From"], headers
    step(f"details: the seeder in the peers list: {cells}")
    driver.find_element(By.ID, "details-close").click()
    wait(driver, "the details closed", lambda d: not details.is_displayed())
    driver.find_element(By.ID, "remove").click()
    driver.find_element(By.ID, "remove-data").click()
    driver.find_element(By.ID, "remove-ok").click()
    removed_in_page(driver, name, f"{name} removed")


def stream_brings_a_change(driver, rpc):
    """A torrent stopped by another client shows in the page without a reload, brought by the
    page's update stream: a line of it, the page asking nothing meanwhile."""
    assert driver.execute_script("return document.body.dataset.updates;") == "stream"
    t_stop = driver.execute_script("return performance.now();")
    t0 = time.monotonic()
    (tid,) = [t["id"] for t in rpc.call("torrent-get", {"fields": ["id", "name"]})["torrents"] if t["name"] == TORRENT_NAME]
    rpc.call("torrent-stop", {"ids": [tid]})
    wait(driver, f"{TORRENT_NAME} stopped by another client, in the page",
         lambda d: cell(d, TORRENT_NAME, "state") in ("Stopped", "Finished"), 15)
    took = time.monotonic() - t0
    lines = driver.execute_script("return window.bitswarmUpdates.lines.filter((l) => l[0] > arguments[0]);", t_stop)
    assert lines, "no line of the stream since the stop"
    asked = driver.execute_script("""
        return performance.getEntriesByType("resource").filter((e) => e.name.endsWith("/transmission/rpc"))
            .filter((e) => e.startTime > arguments[0]).length;""", t_stop)
    assert asked == 0, f"the page asked {asked} times"
    step(f"stopped by another client: in the page {took:.1f} s later, in a line of the stream "
         f"({lines[0][1]} bytes), the page asking nothing")
    rpc.call("torrent-start", {"ids": [tid]})


def polls_where_no_stream(driver, rpc):
    """Where the daemon holds no more streams for this client (four, from another tab or
    program), the page polls instead, and still shows a change by another client."""
    driver.get("about:blank")  # the page's own stream ends with it
    where = urllib.parse.urlsplit(url)
    rpc.call("session-get", {"fields": ["version"]})  # the session id
    body = json.dumps({"method": "torrent-get", "arguments": {"fields": ["id"], "format": "table"}})
    held = []

    def four(_):
        # Until the daemon has let go of the page's stream, a fifth is refused (503): again.
        c = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        c.request("POST", "/transmission/stream", body, {"X-Transmission-Session-Id": rpc.sid})
        r = c.getresponse()
        if r.status == 200:
            held.append(c)
        else:
            c.close()
        return len(held) == 4
    wait(driver, "four streams held by another program", four)
    try:
        driver.get(url)
        wait_ready(driver)
        assert driver.execute_script("return document.body.dataset.updates;") == "poll"
        (tid,) = [t["id"] for t in rpc.call("torrent-get", {"fields": ["id", "name"]})["torrents"] if t["name"] == TORRENT_NAME]
        rpc.call("torrent-stop", {"ids": [tid]})
        wait(driver, f"{TORRENT_NAME} stopped by another client, in the polling page",
             lambda d: cell(d, TORRENT_NAME, "state") in ("Stopped", "Finished"), 15)
        rpc.call("torrent-start", {"ids": [tid]})
        wait(driver, f"{TORRENT_NAME} started again, in the polling page",
             lambda d: cell(d, TORRENT_NAME, "state") == "Seeding", LONG)
        step("four streams held elsewhere: the page polls, and shows a change by another client")
    finally:
        for c in held:
            c.close()

    def streaming(d):
        d.get(url)
        wait_ready(d)
        return d.execute_script("return document.body.dataset.updates;") == "stream"
    wait(driver, "the page following its stream again", streaming)


def run_auth(driver):
    """Behind a password: the browser sends it for the page, and the page's own RPC calls."""
    driver.get(url)
    wait_ready(driver)
    assert driver.current_url.endswith("/transmission/web/"), driver.current_url
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    check_console(driver)
    add(driver, links=magnet, paused=True)
    wait(driver, f"{MAGNET_NAME} listed, stopped", lambda d: cell(d, MAGNET_NAME, "state") == "Stopped")
    step(f"behind a password: loaded, and {MAGNET_NAME} added paused")


def run(driver, rpc):
    driver.get(url)
    wait_ready(driver)
    assert driver.current_url.endswith("/transmission/web/"), driver.current_url
    assert driver.find_element(By.ID, "empty").is_displayed()
    check_console(driver)
    step("page loaded from / (redirected to /transmission/web/), empty list")

    # A refused torrent says why: the RPC's result string, in the dialog.
    add(driver, links="magnet:?xt=urn:btih:zz", expect_error="unrecognized info")

    # A file dragged from outside and dropped on the list opens the dialog with it; not a
    # torrent, it is refused, and the dialog says why.
    drag_file(driver, "viewport", junk_file())
    dialog = driver.find_element(By.ID, "add-dialog")
    wait(driver, "the add dialog opened by the drop", lambda d: dialog.is_displayed()
         and "junk.torrent" in d.find_element(By.ID, "drop").get_attribute("data-dropped"))
    driver.find_element(By.ID, "add-ok").click()
    err = driver.find_element(By.ID, "add-error")
    wait(driver, "the dropped file refused", lambda d: err.is_displayed()
         and any(r in err.text for r in ("invalid or corrupt torrent file", "unrecognized info")))
    step(f"a dropped file refused, and says why: {err.text}")
    driver.find_element(By.ID, "add-cancel").click()
    wait(driver, "the add dialog closed", lambda d: not dialog.is_displayed())

    # Added by the file picker (with a label), and by a pasted magnet link.
    add(driver, files=[torrent], labels="web-test, first")
    wait(driver, f"{TORRENT_NAME} listed", lambda d: row(d, TORRENT_NAME) is not None)
    assert cell(driver, TORRENT_NAME, "labels") == "web-test, first", cell(driver, TORRENT_NAME, "labels")
    step(f"{TORRENT_NAME} added by upload, with its labels")
    add(driver, links=magnet)
    wait(driver, f"{MAGNET_NAME} listed", lambda d: row(d, MAGNET_NAME) is not None)
    step(f"{MAGNET_NAME} added by its magnet link")

    # Both complete, seen without reloading.
    for name in (TORRENT_NAME, MAGNET_NAME):
        wait(driver, f"{name} complete and seeding",
             lambda d: cell(d, name, "state") == "Seeding" and cell(d, name, "progress") == "100%", LONG)
        width = row(driver, name).find_element(By.CSS_SELECTOR, ".meter .fill").get_attribute("style")
        assert "100%" in width, width
    assert "MB" in cell(driver, TORRENT_NAME, "size"), cell(driver, TORRENT_NAME, "size")
    check_console(driver)
    screenshot(driver, "list")
    step("both downloaded from the libtorrent seeders, shown live")

    peers_in_details(driver, rpc)

    # Search, filters, sorting.
    search = driver.find_element(By.ID, "search")
    search.send_keys(TORRENT_NAME[:3])
    wait(driver, "the search", lambda d: shown_names(d) == [TORRENT_NAME])
    search.send_keys(Keys.ESCAPE)
    wait(driver, "the search cleared", lambda d: len(shown_names(d)) == 2)
    Select(driver.find_element(By.ID, "label-filter")).select_by_visible_text("web-test")
    wait(driver, "the label filter", lambda d: shown_names(d) == [TORRENT_NAME])
    Select(driver.find_element(By.ID, "label-filter")).select_by_value("")
    Select(driver.find_element(By.ID, "state-filter")).select_by_value("paused")
    wait(driver, "the state filter", lambda d: shown_names(d) == [])
    Select(driver.find_element(By.ID, "state-filter")).select_by_value("all")
    wait(driver, "all shown", lambda d: len(shown_names(d)) == 2)
    ascending = sorted([TORRENT_NAME, MAGNET_NAME], key=str.lower)
    assert shown_names(driver) == ascending, shown_names(driver)
    name_header = driver.find_element(By.CSS_SELECTOR, "#head button[data-column='name']")
    name_header.click()
    wait(driver, "sorted by name, descending", lambda d: shown_names(d) == ascending[::-1])
    name_header.click()
    wait(driver, "sorted by name again", lambda d: shown_names(d) == ascending)
    step("search, label and state filters, sorting by name")

    # The keyboard alone: into the list, down to a row, space selects it, escape clears.
    viewport = driver.find_element(By.ID, "viewport")
    viewport.send_keys(Keys.HOME, Keys.SPACE)
    wait(driver, "a row selected by keyboard", lambda d: d.find_element(By.ID, "selection").text == "1 selected")
    viewport.send_keys(Keys.ESCAPE)
    wait(driver, "the selection cleared by keyboard", lambda d: d.find_element(By.ID, "selection").text == "None selected")
    step("keyboard: selected and cleared")

    # The keyboard alone stops and starts: a row selected with the arrows and space, then
    # shift+tab back to the buttons, and Enter.
    index = shown_names(driver).index(TORRENT_NAME)
    viewport.send_keys(Keys.HOME, *([Keys.ARROW_DOWN] * index), Keys.SPACE)
    wait(driver, f"{TORRENT_NAME} selected by keyboard", lambda d: "selected" in row(d, TORRENT_NAME).get_attribute("class"))
    shift_tab_to(driver, "stop")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait(driver, f"{TORRENT_NAME} stopped by keyboard", lambda d: rpc.torrent(TORRENT_NAME, ["status"])["status"] == 0
         and cell(d, TORRENT_NAME, "state") in ("Stopped", "Finished"))
    shift_tab_to(driver, "start")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait(driver, f"{TORRENT_NAME} started by keyboard", lambda d: cell(d, TORRENT_NAME, "state") == "Seeding", LONG)
    viewport.send_keys(Keys.ESCAPE)
    step("keyboard: stopped and started (shift+tab to the buttons, Enter)")

    # Stop and start.
    select_only(driver, TORRENT_NAME)
    driver.find_element(By.ID, "stop").click()
    wait(driver, f"{TORRENT_NAME} stopped", lambda d: cell(d, TORRENT_NAME, "state") in ("Stopped", "Finished"))
    assert rpc.torrent(TORRENT_NAME, ["status"])["status"] == 0
    driver.find_element(By.ID, "start").click()
    wait(driver, f"{TORRENT_NAME} seeding again", lambda d: cell(d, TORRENT_NAME, "state") == "Seeding", LONG)
    step("stopped and started")

    stream_brings_a_change(driver, rpc)
    polls_where_no_stream(driver, rpc)

    # Verified again: still complete.
    driver.find_element(By.ID, "verify").click()
    wait(driver, f"{TORRENT_NAME} verified", lambda d: rpc.torrent(TORRENT_NAME, ["status"])["status"] == 6
         and cell(d, TORRENT_NAME, "state") == "Seeding" and cell(d, TORRENT_NAME, "progress") == "100%", LONG)
    step("verified")

    # Its details: general facts, files (wanted, priority), trackers; Enter opens them.
    viewport = driver.find_element(By.ID, "viewport")
    index = shown_names(driver).index(TORRENT_NAME)
    viewport.send_keys(Keys.HOME, *([Keys.ARROW_DOWN] * index), Keys.ENTER)
    details = driver.find_element(By.ID, "details-dialog")
    wait(driver, "the details open", lambda d: details.is_displayed()
         and d.find_element(By.ID, "details-title").text == TORRENT_NAME)
    files = lambda d: d.find_elements(By.CSS_SELECTOR, "#details-files tbody tr")
    wait(driver, "its file listed", lambda d: len(files(d)) == 1 and files(d)[0].find_elements(By.TAG_NAME, "td")[1].text
         == TORRENT_NAME and files(d)[0].find_elements(By.TAG_NAME, "td")[3].text == "100%")
    general = driver.find_element(By.ID, "details-general").text
    info_hash = rpc.torrent(TORRENT_NAME, ["hashString"])["hashString"]
    assert info_hash in general and downloads in general, general
    pieces = driver.find_element(By.ID, "details-pieces")
    count = rpc.torrent(TORRENT_NAME, ["pieceCount"])["pieceCount"]
    assert pieces.get_attribute("aria-label") == f"{count} of {count} pieces", pieces.get_attribute("aria-label")
    wait(driver, "its tracker listed", lambda d: "/announce" in d.find_element(By.ID, "details-trackers").text)
    Select(files(driver)[0].find_element(By.TAG_NAME, "select")).select_by_visible_text("High")
    wait(driver, "the file's priority high", lambda d: rpc.torrent(TORRENT_NAME, ["fileStats"])["fileStats"][0]["priority"] == 1)
    files(driver)[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    wait(driver, "the file unwanted", lambda d: rpc.torrent(TORRENT_NAME, ["fileStats"])["fileStats"][0]["wanted"] is False)
    files(driver)[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    wait(driver, "the file wanted again", lambda d: rpc.torrent(TORRENT_NAME, ["fileStats"])["fileStats"][0]["wanted"] is True)
    screenshot(driver, "details")
    driver.find_element(By.ID, "details-close").click()
    wait(driver, "the details closed", lambda d: not details.is_displayed())
    step("details: general, file wanted and priority set, tracker")

    # Several files in folders: a tree, and a folder's box (un)wants every file in it.
    add(driver, files=[tree], paused=True)
    tree_name = os.path.basename(tree)[: -len(".torrent")]
    wait(driver, f"{tree_name} listed", lambda d: cell(d, tree_name, "state") == "Stopped")
    select_only(driver, tree_name)
    driver.find_element(By.ID, "details").click()
    wait(driver, "the tree's details", lambda d: details.is_displayed()
         and d.find_element(By.ID, "details-title").text == tree_name and len(files(d)) > 1)
    names = [r.find_elements(By.TAG_NAME, "td")[1].text for r in files(driver)]
    folders = [r.find_elements(By.TAG_NAME, "td")[1].text for r in files(driver) if "folder" in r.get_attribute("class")]
    assert folders == [f"{tree_name}/", "sub/", "deeper/"], (folders, names)
    sub = [r for r in files(driver) if r.find_elements(By.TAG_NAME, "td")[1].text == "sub/"][0]
    sub.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()

    def wanted(d):
        t = rpc.torrent(tree_name, ["files", "fileStats"])
        return {f["name"]: s["wanted"] for f, s in zip(t["files"], t["fileStats"])}
    wait(driver, "the files under sub/ unwanted", lambda d: all(
        w == (not n.startswith(f"{tree_name}/sub/")) for n, w in wanted(d).items()))
    top = files(driver)[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]")
    wait(driver, "the top folder partly wanted", lambda d: top.get_property("indeterminate"))
    top.click()
    wait(driver, "every file wanted again", lambda d: all(wanted(d).values()))
    step(f"files as a tree: {names}; a folder unwanted and wanted again")
    driver.find_element(By.ID, "details-close").click()
    wait(driver, "the details closed", lambda d: not details.is_displayed())
    driver.find_element(By.ID, "remove").click()
    driver.find_element(By.ID, "remove-ok").click()
    removed_in_page(driver, tree_name, f"{tree_name} removed")

    # A download limit.
    limit_down(driver, TORRENT_NAME, 100)
    wait(driver, "the limits dialog closed", lambda d: not d.find_element(By.ID, "limits-dialog").is_displayed())
    wait(driver, "the limit set", lambda d: rpc.torrent(TORRENT_NAME, ["downloadLimit", "downloadLimited"])
         == {"name": TORRENT_NAME, "downloadLimit": 100, "downloadLimited": True})
    step("download limit set to 100 kB/s")

    # Removed with its data, asked first.
    data = os.path.join(downloads, MAGNET_NAME)
    assert os.path.exists(data), data
    select_only(driver, MAGNET_NAME)
    driver.find_element(By.ID, "remove").click()
    what = driver.find_element(By.ID, "remove-what")
    wait(driver, "the remove question", lambda d: what.is_displayed() and MAGNET_NAME in what.text)
    driver.find_element(By.ID, "remove-data").click()
    driver.find_element(By.ID, "remove-ok").click()
    removed_in_page(driver, MAGNET_NAME, f"{MAGNET_NAME} gone from the list")
    wait(driver, f"{data} deleted", lambda d: not os.path.exists(data))
    assert rpc.torrent(MAGNET_NAME, []) is None
    assert os.path.exists(os.path.join(downloads, TORRENT_NAME))
    step("removed with its data")

    # Added again, paused, into another folder: it waits, stopped, for a start.
    other = os.path.join(downloads, "other")
    add(driver, links=magnet, folder=other, paused=True)
    wait(driver, f"{MAGNET_NAME} listed, stopped", lambda d: cell(d, MAGNET_NAME, "state") == "Stopped")
    t = rpc.torrent(MAGNET_NAME, ["status", "downloadDir"])
    assert t["status"] == 0 and t["downloadDir"] == other, t
    select_only(driver, MAGNET_NAME)
    driver.find_element(By.ID, "remove").click()
    driver.find_element(By.ID, "remove-ok").click()
    removed_in_page(driver, MAGNET_NAME, f"{MAGNET_NAME} removed, data kept")
    step("added paused into another folder, removed without its data")

    # The daemon's settings: a refused one says why; a speed limit is saved.
    driver.find_element(By.ID, "settings").click()
    settings = driver.find_element(By.ID, "settings-dialog")
    folder = driver.find_element(By.ID, "setting-download-dir")
    wait(driver, "the settings open", lambda d: settings.is_displayed() and folder.get_attribute("value") == downloads)
    folder.clear()
    folder.send_keys("relative/folder")
    driver.find_element(By.ID, "settings-ok").click()
    err = driver.find_element(By.ID, "settings-error")
    wait(driver, "the refusal", lambda d: err.is_displayed() and "download directory path is not absolute" in err.text)
    step(f"settings refused, and says why: {err.text}")
    folder.clear()
    folder.send_keys(downloads)
    driver.find_element(By.ID, "setting-speed-limit-down-enabled").click()
    limit = driver.find_element(By.ID, "setting-speed-limit-down")
    limit.clear()
    limit.send_keys("500")
    driver.find_element(By.ID, "settings-ok").click()
    wait(driver, "the settings saved and closed", lambda d: not settings.is_displayed())
    got = rpc.call("session-get", {"fields": ["speed-limit-down", "speed-limit-down-enabled", "download-dir"]})
    assert got == {"speed-limit-down": 500, "speed-limit-down-enabled": True, "download-dir": downloads}, got
    step("settings: the session's download limit set to 500 kB/s")

    # The peer port: one in use is refused where it is typed (the daemon says why), a free one is
    # taken at once; and the alt-speed schedule's days.
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    driver.find_element(By.ID, "settings").click()
    port = driver.find_element(By.ID, "setting-peer-port")
    before = rpc.call("session-get", {"fields": ["peer-port"]})["peer-port"]
    wait(driver, "the settings open", lambda d: settings.is_displayed() and port.get_attribute("value") == str(before))
    port.clear()
    port.send_keys(str(busy))
    driver.find_element(By.ID, "settings-ok").click()
    wait(driver, "the port refused", lambda d: err.is_displayed() and f"peer-port {busy}: cannot listen" in err.text)
    assert driver.switch_to.active_element == port, "the refused field has the focus"
    assert rpc.call("session-get", {"fields": ["peer-port"]})["peer-port"] == before
    step(f"a peer port in use refused, and says why: {err.text}")
    port.clear()
    port.send_keys(str(free))
    Select(driver.find_element(By.ID, "setting-alt-speed-time-day")).select_by_visible_text("Weekends")
    driver.find_element(By.ID, "settings-ok").click()
    wait(driver, "the settings saved and closed", lambda d: not settings.is_displayed())
    got = rpc.call("session-get", {"fields": ["peer-port", "alt-speed-time-day", "alt-speed-time-begin"]})
    assert got == {"peer-port": free, "alt-speed-time-day": 65, "alt-speed-time-begin": 540}, got
    taken.close()
    step(f"settings: the peer port moved from {before} to {free}; the schedule on weekends")

    # Dark when the system is, and readable in both (WCAG AA contrast, 4.5:1, for a name).
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    name = lambda: row(driver, TORRENT_NAME).find_element(By.CLASS_NAME, "c-name")
    light_contrast = contrast(driver, name())
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    dark_contrast = contrast(driver, name())
    assert light == "rgb(255, 255, 255)" and dark != light, (light, dark)
    assert light_contrast >= 4.5 and dark_contrast >= 4.5, (light_contrast, dark_contrast)
    step(f"dark when the system is: {light} -> {dark}; a name's contrast {light_contrast:.1f}:1 light, {dark_contrast:.1f}:1 dark")

    # A phone's width (375 CSS pixels, an iPhone's): nothing wider than the screen, and the
    # list readable: a name in full on screen, text of 12 px or more, every action button on
    # screen.
    driver.set_window_size(375, 800)
    wait(driver, "the narrow layout", lambda d: d.execute_script(
        "return window.innerWidth <= 375 && document.documentElement.scrollWidth <= document.documentElement.clientWidth"))
    assert row(driver, TORRENT_NAME).is_displayed()
    box = driver.execute_script("""
        const e = arguments[0], r = e.getBoundingClientRect();
        return { left: r.left, right: r.right, width: r.width, font: parseFloat(getComputedStyle(e).fontSize),
                 clipped: e.scrollWidth > e.clientWidth, vw: document.documentElement.clientWidth };""", name())
    assert box["left"] >= 0 and box["right"] <= box["vw"] and box["width"] >= 120 and not box["clipped"], box
    assert box["font"] >= 12, box
    for b in ["add", "search", "start", "stop", "verify", "details", "limits", "remove"]:
        r = driver.execute_script("const r = document.getElementById(arguments[0]).getBoundingClientRect();"
                                  "return [r.left, r.right, r.width, document.documentElement.clientWidth];", b)
        assert r[0] >= 0 and r[1] <= r[3] and r[2] > 0, (b, r)
    screenshot(driver, "phone")
    step(f"fits a phone's width (375 px): the name {box['width']:.0f} px wide, in full, {box['font']:.0f} px text; every button on screen")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
