#!/usr/bin/env python3
"""The web console, end to end in headless Chromium (Debian's chromium and chromium-driver,
driven by selenium): `wolf serve` with keys on, the key typed into the page, then what a user
does — run Python and C++, read a compile error, a test table with a failing test, the
waterfall against the record's timeline, an image output, a job URL reopened — with no console
error and no request to another origin. Screenshots of the views go to OUT.

usage: console_e2e.py WOLF_BINARY OUT_DIR
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

WOLF, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


tmp = tempfile.mkdtemp(prefix="wolf-console-")
# A tracing UI the console links each job's trace to (a link only: the page never loads it).
TRACE_UI = "http://127.0.0.1:16686/trace/{trace_id}"
env = dict(os.environ, WOLF_LOG="warn", WOLF_AUTH="on", WOLF_DATA_DIR=f"{tmp}/data", WOLF_CACHE_DIR=f"{tmp}/cache",
           WOLF_TRACE_URL=TRACE_UI)
key = subprocess.run([WOLF, "keys", "create", "--name", "console"], env=env, check=True,
                     capture_output=True, text=True).stdout.strip()
port = free_port()
base = f"http://127.0.0.1:{port}"
server = subprocess.Popen([WOLF, "serve", "--listen", f"127.0.0.1:{port}", "--workers", "2"], env=env,
                          stderr=subprocess.DEVNULL)


def api(path):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


for _ in range(300):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=1)
        break
    except OSError:
        time.sleep(0.1)

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1100",
          "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync"]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 60)
by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731


def set_value(element_id, text):
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input'));", element_id, text)


def finished():
    wait.until(lambda d: re.match(r"^(Completed|Failed)", by_id("status").text))
    return by_id("status").text


def field(name):
    return driver.find_element(By.CSS_SELECTOR, f'#summary dd[data-field="{name}"]').text


try:
    driver.get(base + "/")
    wait.until(lambda d: len(Select(by_id("engine")).options) > 3 or by_id("error").text)
    check("the page loads without a key in it and says why not", "401" in by_id("error").text
          or len(Select(by_id("engine")).options) > 3, by_id("error").text)
    key_box = by_id("key")
    key_box.send_keys(key)
    key_box.send_keys(Keys.TAB)  # change event: the key is kept and the lists reload
    wait.until(lambda d: any(o.get_attribute("value") == "c++" for o in Select(by_id("engine")).options))
    check("engines come from /languages with the key", True)

    # Tab indents in the editor; Ctrl+Enter runs.
    Select(by_id("engine")).select_by_value("python")
    set_value("code", "")
    code = by_id("code")
    code.click()
    code.send_keys("if True:", Keys.ENTER, Keys.TAB, "print('hello from python')")
    check("Tab indents (four spaces)", by_id("code").get_attribute("value") == "if True:\n    print('hello from python')",
          repr(by_id("code").get_attribute("value")))
    check("line numbers follow the code", by_id("gutter").text.split() == ["1", "2"], by_id("gutter").text)
    code.send_keys(Keys.CONTROL, Keys.ENTER)
    status = finished()
    check("python runs: Completed: Accepted", status == "Completed: Accepted", status)
    check("its stdout is shown", by_id("stdout").text == "hello from python", by_id("stdout").text)
    check("exit code, CPU, wall and memory are shown",
          field("exit code") == "0" and field("CPU").endswith("ms") and field("memory").endswith("MiB"))
    py_url = driver.current_url
    driver.save_screenshot(f"{OUT}/run.png")

    # C++.
    Select(by_id("engine")).select_by_value("c++")
    set_value("code", '#include <iostream>\nint main() { std::cout << "hello from c++\\n"; }\n')
    by_id("run").click()
    status = finished()
    check("c++ runs: Completed: Accepted", status == "Completed: Accepted", status)
    check("its stdout is shown", by_id("stdout").text == "hello from c++", by_id("stdout").text)

    # A compile error, with the compiler's message.
    set_value("code", "int main() { return undefined_name; }\n")
    by_id("run").click()
    status = finished()
    check("a compile error is the verdict", status == "Completed: CompileError", status)
    check("the compiler's message is shown", by_id("compile-box").is_displayed()
          and "undefined_name" in by_id("compile").text, by_id("compile").text[:200])
    driver.save_screenshot(f"{OUT}/compile-error.png")

    # An interactive run: lines typed while it runs reach its stdin (over the WebSocket, the
    # key as a subprotocol), its output streams back, then the record.
    by_id("interactive").click()
    Select(by_id("engine")).select_by_value("python")
    set_value("code", 'print("name?", flush=True)\nname = input()\nprint("hello " + name, flush=True)\nprint(input()[::-1])\n')
    by_id("run").click()
    wait.until(lambda d: by_id("live").is_displayed() and "name?" in by_id("stdout").text)
    by_id("live-line").send_keys("wolf\n")
    wait.until(lambda d: "hello wolf" in by_id("stdout").text)
    by_id("live-line").send_keys("abc")
    by_id("live-send").click()
    status = finished()
    check("an interactive run: typed lines reach the program", status == "Completed: Accepted"
          and by_id("stdout").text == "name?\nhello wolf\ncba", f"{status} {by_id('stdout').text!r}")
    sent = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#live-sent li")]
    rec = api("/job/" + driver.current_url.rsplit("/", 1)[1])
    check("the interactive job is recorded as such, with what was sent listed", rec.get("interactive") is True
          and sent == ["wolf", "abc"] and not by_id("live").is_displayed(), f"{rec.get('interactive')} {sent}")
    driver.save_screenshot(f"{OUT}/interactive.png")
    by_id("interactive").click()

    # Session cells: each cell runs in one sandbox; a REPL keeps its variables for the next.
    Select(by_id("engine")).select_by_value("python")
    by_id("session-start").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cells .cell-code"))
    sid = by_id("session-state").text.split()[1]
    cell = lambda n: driver.find_elements(By.CSS_SELECTOR, "#cells .cell")[n]
    cell(0).find_element(By.CSS_SELECTOR, ".cell-code").send_keys("x = 41\nprint('set')")
    cell(0).find_element(By.CSS_SELECTOR, ".cell-run").click()
    wait.until(lambda d: "#1" in cell(0).find_element(By.CSS_SELECTOR, ".cell-out").text)
    by_id("cell-add").click()
    cell(1).find_element(By.CSS_SELECTOR, ".cell-code").send_keys("x + 1")
    cell(1).find_element(By.CSS_SELECTOR, ".cell-run").click()
    wait.until(lambda d: "#2" in cell(1).find_element(By.CSS_SELECTOR, ".cell-out").text)
    first = cell(0).find_element(By.CSS_SELECTOR, ".cell-stdout").text
    values = cell(1).find_elements(By.CSS_SELECTOR, ".cell-value")
    info = api(f"/session/{sid}")
    check("session cells share one interpreter", first == "set" and [v.text for v in values] == ["42"]
          and info.get("execs") == 2 and info.get("mode") == "repl", f"{first!r} {[v.text for v in values]} {info}")
    driver.execute_script("arguments[0].scrollIntoView()", by_id("session-box"))
    driver.save_screenshot(f"{OUT}/session.png")
    by_id("session-end").click()
    wait.until(lambda d: "ended" in by_id("session-state").text)
    try:
        api(f"/session/{sid}")
        gone = None
    except urllib.error.HTTPError as e:
        gone = e.code
    check("ending the session deletes it (410 afterwards)", gone == 410, str(gone))

    # Test cases: one passes, one fails.
    Select(by_id("engine")).select_by_value("python")
    set_value("code", "n = int(input())\nprint(n * 2)\n")
    for stdin, expected in [("2", "4"), ("3", "7")]:
        by_id("add-test").click()
        row = driver.find_elements(By.CSS_SELECTOR, "#tests tbody tr")[-1]
        row.find_element(By.CSS_SELECTOR, ".t-stdin").send_keys(stdin)
        row.find_element(By.CSS_SELECTOR, ".t-expected").send_keys(expected)
    by_id("run").click()
    status = finished()
    verdicts = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#tests .t-verdict")]
    check("a test table with one failing test", status == "Completed: WrongAnswer"
          and verdicts == ["Accepted", "WrongAnswer"], f"{status} {verdicts}")
    check("tests passed: 1 of 2", field("tests passed") == "1 of 2")
    # Each test's own output, folded in its row: the failing test printed 6, not 7.
    rec = api("/job/" + driver.current_url.rsplit("/", 1)[1])
    second = driver.find_elements(By.CSS_SELECTOR, "#tests tbody tr")[1]
    second.find_element(By.CSS_SELECTOR, ".t-output summary").click()
    shown = second.find_element(By.CSS_SELECTOR, ".t-output pre.t-stdout").text
    how = second.find_element(By.CSS_SELECTOR, ".t-output .t-how").text
    check("a test's stdout is shown in its row", shown == "6" and rec["result"]["tests"][1]["stdout"].strip() == "6"
          and how.startswith("exit 0"), f"{shown!r} {how!r}")

    # The waterfall: one bar per stage of the record's timeline, widths in proportion.
    job_id = driver.current_url.rsplit("/", 1)[1]
    tl = api(f"/job/{job_id}/timeline")
    spans = [s for s in tl["spans"] if s["stage"] != "end_to_end"]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall rect"))
    bars = driver.find_elements(By.CSS_SELECTOR, "#waterfall rect")
    check("one bar per stage", [b.get_attribute("data-stage") for b in bars] == [s["stage"] for s in spans],
          f"{[b.get_attribute('data-stage') for b in bars]} vs {[s['stage'] for s in spans]}")
    ratios = [float(b.get_attribute("width")) / s["durationMs"] for b, s in zip(bars, spans)
              if float(b.get_attribute("width")) > 2]
    check("bar widths in proportion to the timings", len(ratios) >= 2
          and max(ratios) / min(ratios) < 1.02, f"{ratios}")
    check("the failing test's bar is marked", any("fail" in b.get_attribute("class") for b in bars))
    links = driver.find_elements(By.ID, "trace-link")
    want = TRACE_UI.replace("{trace_id}", tl.get("traceId", "?"))
    check("the trace id linked to the configured tracing UI", tl.get("traceUrl") == want and len(links) == 1
          and links[0].get_attribute("href") == want and links[0].text == tl["traceId"]
          and "noopener" in links[0].get_attribute("rel"),
          f"{tl.get('traceUrl')} {[(a.get_attribute('href'), a.text) for a in links]}")
    driver.save_screenshot(f"{OUT}/tests-and-waterfall.png")

    # An image output, shown inline.
    for b in driver.find_elements(By.CSS_SELECTOR, "#tests tbody button"):
        b.click()
    png = ("import base64\nopen('dot.png', 'wb').write(base64.b64decode("
           "'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=='))\n"
           "print('drawn')\n")
    set_value("code", png)
    set_value("outfiles", "*.png")
    by_id("run").click()
    status = finished()
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('#files img'); return i && i.complete && i.naturalWidth === 1;"))
    check("an image output is shown", status == "Completed: Accepted")
    set_value("outfiles", "")

    # A job's URL, reopened in a fresh page, shows the same job.
    driver.get("about:blank")
    driver.get(py_url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#summary dd[data-field="job"]'))
    status = finished()
    check("a job URL reopened shows the same job", field("job") == py_url.rsplit("/", 1)[1]
          and status == "Completed: Accepted" and "hello from python" in by_id("stdout").text
          and "print('hello from python')" in by_id("code").get_attribute("value"), status)
    recent = driver.find_elements(By.CSS_SELECTOR, "#jobs a")
    check("the recent jobs list the key's jobs", len(recent) >= 5, str(len(recent)))

    # Dark theme.
    by_id("theme").click()
    check("the dark theme applies", "dark" in driver.execute_script("return document.documentElement.className"))
    driver.save_screenshot(f"{OUT}/dark.png")

    # Nothing from another origin; no console errors.
    foreign = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin) && !n.startsWith('blob:'))")
    check("no request to another origin", foreign == [], str(foreign))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
              # The first load, before the key was typed, was refused as it must be.
              and "401" not in e["message"]]
    check("no console errors", errors == [], str(errors))
    headers = urllib.request.urlopen(base + "/").headers
    csp = headers.get("Content-Security-Policy", "")
    check("the CSP forbids inline script and other origins",
          "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "default-src 'none'" in csp, csp)
finally:
    driver.quit()
    server.kill()
    server.wait()

if failures:
    print(f"console: {len(failures)} check(s) failed: {failures}")
    sys.exit(1)
print("console: every check passed")
