"""The web page's "Create", tracker panel, file choice at add time, and settings, in headless
Chromium driven by Selenium (run with /usr/bin/python3 by tests/web_create.rs).

  create_test.py create URL FOLDER LT_PEER LEECH_DIR PEER_PORT
  create_test.py choose URL TORRENT UNWANTED MAGNET UNWANTED2
  create_test.py settings URL WATCH_DIR NAME
  create_test.py settings-after URL WATCH_DIR NAME

create: the daemon at URL runs a tracker; the page refuses to make a torrent of /etc, makes one
of FOLDER (in the daemon's download folder) announcing to the daemon's tracker, sees it seeding,
copies its magnet link, and a libtorrent leecher (LT_PEER, into LEECH_DIR, dialing the daemon's
peer port too) downloads it from the daemon; the tracker panel shows the swarm, one seeder and
no leecher before, one completed download after.
choose: TORRENT (several files; a seeder has them) is picked in the add dialog, the file named
UNWANTED is unticked in the file list shown before adding, and the torrent completes; MAGNET is
added to have its files chosen once known: its details open when its metadata came, with no
data fetched, UNWANTED2 is unticked there, and it is started and completes.
settings: the alternative speed limits and the watch folder are set in the settings dialog,
and torrent NAME's seeding limits in its details; settings-after: after a restart of the
daemon, the page shows them all as they were set.
Prints a line per step; exits 0 and prints "ok" when every step held and the browser's console
logged no error, else 1 with what failed.
"""
import os
import subprocess
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from webtest import Rpc, browser, cell, check_console, row, screenshot, step, wait, wait_ready

MODE = sys.argv[1]
url = sys.argv[2]
LONG = 90

rpc = Rpc(url)


def load(driver):
    driver.get(url)
    wait_ready(driver)
    check_console(driver)


def swarm_cells(driver, info_hash):
    rows = driver.find_elements(By.CSS_SELECTOR, f"#tracker-swarms tbody tr[data-hash='{info_hash}']")
    return [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")] if rows else None


def run_create(driver):
    folder, lt_peer, leech_dir, peer_port = sys.argv[3:7]
    name = os.path.basename(folder)
    load(driver)
    toggle = driver.find_element(By.ID, "tracker-toggle")
    assert toggle.is_displayed(), "the tracker button shows when the daemon runs a tracker"
    dialog = driver.find_element(By.ID, "create-dialog")
    error = driver.find_element(By.ID, "create-error")

    # A path outside the allowed folders: refused, and the dialog says why.
    driver.find_element(By.ID, "create").click()
    wait(driver, "the create dialog", lambda d: dialog.is_displayed())
    path = driver.find_element(By.ID, "create-path")
    path.clear()
    path.send_keys("/etc")
    driver.find_element(By.ID, "create-ok").click()
    wait(driver, "/etc refused", lambda d: error.is_displayed() and "not in a folder torrents may be made from" in error.text)
    step(f"/etc refused, and says why: {error.text}")

    # The folder: made with the daemon's tracker (offered), hashed with progress, seeding.
    trackers = driver.find_element(By.ID, "create-trackers").get_attribute("value")
    assert trackers.startswith("http://127.0.0.1:") and trackers.endswith("/announce"), trackers
    path.clear()
    path.send_keys(folder)
    Select(driver.find_element(By.ID, "create-piece")).select_by_visible_text("16 KiB")
    driver.find_element(By.ID, "create-comment").send_keys("made in the web page")
    driver.find_element(By.ID, "create-ok").click()
    box = driver.find_element(By.ID, "create-progress-box")
    wait(driver, "the torrent made", lambda d: box.get_attribute("data-status") == "done", LONG)
    assert not error.is_displayed(), error.text
    assert driver.find_element(By.ID, "create-progress").get_attribute("value") == "1"
    magnet = driver.find_element(By.ID, "create-magnet").get_attribute("value")
    assert magnet.startswith("magnet:?xt=urn:btih:"), magnet
    info_hash = magnet.split("urn:btih:")[1][:40].lower()
    step(f"made: {driver.find_element(By.ID, 'create-progress-text').text} {magnet}")

    # Copied to the clipboard, read back from it.
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": url.rstrip("/"), "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    driver.find_element(By.ID, "create-copy").click()
    wait(driver, "copied", lambda d: d.find_element(By.ID, "create-copied").text == "Copied.")
    copied = driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, (e) => done('failed: ' + e));")
    assert copied == magnet, f"the clipboard holds {copied!r}"
    screenshot(driver, "create")
    step("the magnet link copied")
    driver.find_element(By.ID, "create-cancel").click()
    wait(driver, "the create dialog closed", lambda d: not dialog.is_displayed())

    wait(driver, f"{name} seeding in the list", lambda d: cell(d, name, "state") == "Seeding" and cell(d, name, "progress") == "100%")
    t = rpc.torrent(name, ["hashString", "downloadDir", "comment", "pieceSize"])
    assert t["hashString"] == info_hash and t["downloadDir"] == os.path.dirname(folder), t
    assert t["comment"] == "made in the web page" and t["pieceSize"] == 16384, t
    step(f"{name} listed, seeding from {t['downloadDir']}")

    # The tracker's swarm: the daemon seeding, nobody else yet.
    toggle.click()
    wait(driver, "the swarm with one seeder", lambda d: (swarm_cells(d, info_hash) or [None])[1:4] == ["1", "0", "0"])
    assert swarm_cells(driver, info_hash)[0] == name, swarm_cells(driver, info_hash)
    summary = driver.find_element(By.ID, "tracker-summary").text
    assert summary.startswith("1 swarm · 1 seeder · 0 leechers · 0 completed"), summary
    step(f"tracker panel: {summary}")

    # A libtorrent leecher fetches it by the copied link (metadata, then data) from the daemon.
    leecher = subprocess.Popen(["/usr/bin/python3", lt_peer, "leech", copied, leech_dir, f"127.0.0.1:{peer_port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = leecher.communicate(timeout=LONG)
    except subprocess.TimeoutExpired:
        leecher.kill()
        out, _ = leecher.communicate()
        raise AssertionError(f"the libtorrent leecher did not finish:\n{out}")
    assert leecher.returncode == 0 and "done" in out.split("\n"), out
    step("libtorrent downloaded it from the daemon")
    wait(driver, "the completed download counted", lambda d: (swarm_cells(d, info_hash) or [None] * 4)[3] == "1", LONG)
    screenshot(driver, "tracker")
    step(f"tracker panel: {driver.find_element(By.ID, 'tracker-summary').text}")


def run_choose(driver):
    torrent, unwanted, magnet, unwanted2 = sys.argv[3:7]
    name = os.path.basename(torrent)[: -len(".torrent")]
    load(driver)
    driver.find_element(By.ID, "add").click()
    dialog = driver.find_element(By.ID, "add-dialog")
    wait(driver, "the add dialog", lambda d: dialog.is_displayed())
    driver.find_element(By.ID, "add-files").send_keys(torrent)
    boxes = lambda d: d.find_elements(By.CSS_SELECTOR, "#add-file-table tbody input[type=checkbox]")
    wait(driver, "the file list", lambda d: d.find_element(By.ID, "add-choose").is_displayed() and len(boxes(d)) > 2)
    paths = [b.get_attribute("data-path") for b in boxes(driver)]
    step(f"before adding, its files: {paths}")
    target = [b for b in boxes(driver) if b.get_attribute("data-path").endswith("/" + unwanted)]
    assert len(target) == 1, paths
    target[0].click()
    assert not target[0].is_selected()
    # Its folder's box shows part of it wanted.
    folder = "/".join(target[0].get_attribute("data-path").split("/")[:-1]) + "/"
    fbox = [b for b in boxes(driver) if b.get_attribute("data-path") == folder][0]
    screenshot(driver, "add-files")
    assert driver.execute_script("return arguments[0].indeterminate", fbox) or not fbox.is_selected()
    driver.find_element(By.ID, "add-ok").click()
    wait(driver, "the add dialog closed", lambda d: not dialog.is_displayed())
    wait(driver, f"{name} done", lambda d: cell(d, name, "progress") == "100%" and cell(d, name, "state") == "Seeding", LONG)
    t = rpc.torrent(name, ["files", "fileStats"])
    wanted = {f["name"].split("/")[-1]: s["wanted"] for f, s in zip(t["files"], t["fileStats"])}
    assert wanted[unwanted] is False and sum(wanted.values()) == len(wanted) - 1, wanted
    step(f"{name} complete without {unwanted}: {wanted}")

    # A magnet link: its files chosen once the daemon has its metadata, before any data.
    name2 = [p[3:] for p in magnet.split("?", 1)[1].split("&") if p.startswith("dn=")][0]
    driver.find_element(By.ID, "add").click()
    wait(driver, "the add dialog", lambda d: dialog.is_displayed())
    driver.find_element(By.ID, "add-url").send_keys(magnet)
    driver.find_element(By.ID, "add-choose-later").click()
    driver.find_element(By.ID, "add-ok").click()
    wait(driver, "the add dialog closed", lambda d: not dialog.is_displayed())
    details = driver.find_element(By.ID, "details-dialog")
    files = lambda d: d.find_elements(By.CSS_SELECTOR, "#details-files tbody tr")
    wait(driver, f"{name2}'s details opened once its metadata came", lambda d: details.is_displayed()
         and d.find_element(By.ID, "details-title").text == name2 and d.find_element(By.ID, "details-choose").is_displayed()
         and len(files(d)) > 2, LONG)
    t = rpc.torrent(name2, ["status", "haveValid", "metadataPercentComplete"])
    assert (t["status"], t["haveValid"], t["metadataPercentComplete"]) == (0, 0, 1), t
    step(f"{name2}: metadata here, stopped with nothing fetched, details open")
    target = [r for r in files(driver) if r.find_elements(By.TAG_NAME, "td")[1].text == unwanted2]
    assert len(target) == 1, [r.text for r in files(driver)]
    target[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    index = [f["name"].split("/")[-1] for f in rpc.torrent(name2, ["files"])["files"]].index(unwanted2)
    wait(driver, f"{unwanted2} unwanted", lambda d: rpc.torrent(name2, ["fileStats"])["fileStats"][index]["wanted"] is False)
    driver.find_element(By.ID, "details-start").click()
    wait(driver, "started from the details", lambda d: not d.find_element(By.ID, "details-start").is_displayed())
    driver.find_element(By.ID, "details-close").click()
    wait(driver, "the details closed", lambda d: not details.is_displayed())
    wait(driver, f"{name2} done", lambda d: cell(d, name2, "progress") == "100%" and cell(d, name2, "state") == "Seeding", LONG)
    step(f"{name2} complete without {unwanted2}")


SETTINGS = {"alt-speed-enabled": True, "alt-speed-down": 30, "alt-speed-up": 40, "watch-dir-enabled": True}


def setting(driver, key):
    return driver.find_element(By.ID, f"setting-{key}")


def open_details(driver, name):
    row(driver, name).find_element(By.CLASS_NAME, "c-name").click()
    driver.find_element(By.ID, "details").click()
    details = driver.find_element(By.ID, "details-dialog")
    wait(driver, "the details", lambda d: details.is_displayed() and d.find_element(By.ID, "details-title").text == name
         and d.find_element(By.ID, "seed-idle-limit").get_attribute("value") != "")
    return details


def run_settings(driver, after):
    watch_dir, name = sys.argv[3:5]
    load(driver)
    wait(driver, f"{name} listed", lambda d: row(d, name) is not None)
    driver.find_element(By.ID, "settings").click()
    dialog = driver.find_element(By.ID, "settings-dialog")
    wait(driver, "the settings", lambda d: dialog.is_displayed())
    if not after:
        assert not setting(driver, "alt-speed-enabled").is_selected()
        for key in ("alt-speed-enabled", "watch-dir-enabled"):
            setting(driver, key).click()
        for key, value in (("alt-speed-down", "30"), ("alt-speed-up", "40"), ("watch-dir", watch_dir)):
            setting(driver, key).clear()
            setting(driver, key).send_keys(value)
        driver.find_element(By.ID, "settings-ok").click()
        wait(driver, "the settings saved", lambda d: not dialog.is_displayed())
    else:
        assert setting(driver, "alt-speed-enabled").is_selected() and setting(driver, "watch-dir-enabled").is_selected()
        for key, value in (("alt-speed-down", "30"), ("alt-speed-up", "40"), ("watch-dir", watch_dir)):
            assert setting(driver, key).get_attribute("value") == value, (key, setting(driver, key).get_attribute("value"))
        driver.find_element(By.ID, "settings-cancel").click()
    s = rpc.call("session-get", {"fields": list(SETTINGS) + ["watch-dir"]})
    assert s == {**SETTINGS, "watch-dir": watch_dir}, s
    step(("after the restart, " if after else "") + f"settings: {s}")

    details = open_details(driver, name)
    if not after:
        Select(driver.find_element(By.ID, "seed-ratio-mode")).select_by_value("1")
        driver.find_element(By.ID, "seed-ratio-limit").clear()
        driver.find_element(By.ID, "seed-ratio-limit").send_keys("1.5")
        Select(driver.find_element(By.ID, "seed-idle-mode")).select_by_value("2")
        driver.find_element(By.ID, "seed-apply").click()
        wait(driver, "the seeding limits set", lambda d: rpc.torrent(name, ["seedRatioMode"])["seedRatioMode"] == 1)
    else:
        assert Select(driver.find_element(By.ID, "seed-ratio-mode")).first_selected_option.get_attribute("value") == "1"
        assert driver.find_element(By.ID, "seed-ratio-limit").get_attribute("value") == "1.5"
        assert Select(driver.find_element(By.ID, "seed-idle-mode")).first_selected_option.get_attribute("value") == "2"
    t = rpc.torrent(name, ["seedRatioMode", "seedRatioLimit", "seedIdleMode"])
    assert (t["seedRatioMode"], t["seedRatioLimit"], t["seedIdleMode"]) == (1, 1.5, 2), t
    driver.find_element(By.ID, "details-close").click()
    wait(driver, "the details closed", lambda d: not details.is_displayed())
    step(("after the restart, " if after else "") + f"{name}'s seeding limits: {t}")


def main():
    driver = browser()
    try:
        if MODE == "create":
            run_create(driver)
        elif MODE == "choose":
            run_choose(driver)
        elif MODE in ("settings", "settings-after"):
            run_settings(driver, MODE == "settings-after")
        else:
            raise AssertionError(f"unknown mode {MODE}")
        check_console(driver)
    except Exception as e:  # noqa: BLE001 (reported, then the exit status says it)
        step(f"FAILED: {type(e).__name__}: {e}")
        sys.exit(1)
    finally:
        driver.quit()
    step("ok")


if __name__ == "__main__":
    main()
