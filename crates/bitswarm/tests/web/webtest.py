"""What the browser tests share (ui_test.py, create_test.py): a Chromium driven by Selenium, the
list's rows and cells, waits that say what they waited for, the console checked for errors, and
the test's own RPC client to check what the page did."""

import json
import os
import re
import subprocess
import threading
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# Every console entry seen by check_console (a test may report how many there were).
console = []


def step(text):
    print(text, flush=True)


def screenshot(driver, name):
    """With UI_SCREENSHOTS=DIR, saves the page as DIR/NAME.png (to look at, or for the README)."""
    folder = os.environ.get("UI_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        driver.save_screenshot(os.path.join(folder, f"{name}.png"))


class Rpc:
    """The test's own view of the daemon, to check what the page did."""

    def __init__(self, base):
        self.url = base.rstrip("/") + "/transmission/rpc"
        self.sid = ""

    def call(self, method, arguments):
        body = json.dumps({"method": method, "arguments": arguments}).encode()
        for _ in range(2):
            req = urllib.request.Request(self.url, data=body, headers={"X-Transmission-Session-Id": self.sid})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    reply = json.load(r)
                    assert reply["result"] == "success", reply
                    return reply["arguments"]
            except urllib.error.HTTPError as e:
                if e.code != 409:
                    raise
                self.sid = e.headers["X-Transmission-Session-Id"]
        raise AssertionError("no session id")

    def torrent(self, name, fields):
        for t in self.call("torrent-get", {"fields": ["name"] + fields})["torrents"]:
            if t["name"] == name:
                return t
        return None


class PortZeroService(Service):
    """chromedriver on a port it picks itself (`--port=0`), read back from its first lines.

    Selenium's own Service picks a free port, closes it and hands it to chromedriver, which
    binds it a moment later: meanwhile another test's process binding port 0 can take it, and
    chromedriver exits ("IPv4 port not available"). Tests run in parallel here, so that
    happened."""

    def _start_process(self, path):
        args = [a for a in self.command_line_args() if not a.startswith("--port=")]
        self.process = subprocess.Popen([path, "--port=0"] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=self.env)
        said = []
        for line in self.process.stdout:
            said.append(line)
            m = re.search(r"started successfully on port (\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        else:
            raise WebDriverException("chromedriver ended before it listened: " + "".join(said))

        def drain(out):
            try:
                for _ in out:
                    pass
            except (OSError, ValueError):
                pass

        threading.Thread(target=drain, args=(self.process.stdout,), daemon=True).start()


def browser(dark=False):
    """Headless Chromium (Debian's, or $CHROMIUM with $CHROMEDRIVER) that keeps its console."""
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-proxy-server", "--window-size=1280,900",
        "--force-prefers-color-scheme=dark" if dark else "--disable-features=Translate",
    ]:
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = PortZeroService(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def check_console(driver):
    """Fails on any error the page logged (scripts, CSP, failed requests)."""
    for entry in driver.get_log("browser"):
        console.append(entry)
        if entry["level"] in ("SEVERE", "ERROR"):
            raise AssertionError(f"browser console error: {entry['message']}")


def xpath_text(s):
    return "'" + s + "'" if "'" not in s else 'concat("' + s.replace('"', '", \'"\', "') + '")'


def row(driver, name):
    rows = driver.find_elements(By.XPATH, f"//div[@id='rows']/div[span[contains(@class,'c-name')][text()={xpath_text(name)}]]")
    return rows[0] if rows else None


def cell(driver, name, column):
    r = row(driver, name)
    return r.find_element(By.CLASS_NAME, f"c-{column}").text if r else None


def shown_names(driver):
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#rows .row .c-name")]


def wait(driver, what, cond, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond(d))
    except TimeoutException:
        names = shown_names(driver)
        states = [cell(driver, n, "state") for n in names]
        raise AssertionError(f"timed out waiting for: {what}; the list shows {list(zip(names, states))}")


def wait_ready(driver):
    """Until the page has its list (it marks its body `data-ready` then)."""
    wait(driver, "the page ready", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
