"""What sessions and streaming cost, measured in one run against a running `wolf serve`.

Usage: live-bench.py URL RUNS OUT.md
Interleaved, sequential, keep-alive connections: a REPL cell `x = x + 1` (POST
/session/{id}/exec of a repl session), the same code as an exec of an exec-mode session, as a
fresh job (POST /job?wait=true), and a bare `python3 -c pass` on this host (the baseline a
session must beat). Then the streaming latency: a job prints the wall clock's nanoseconds 40
times, and the delay from each print to its chunk's arrival at an SSE subscriber is taken
(the sandbox shares the host's clock: no time namespace). Writes a markdown table (p50/p95/p99)
with the machine and commit to OUT.md.
"""

import http.client
import json
import platform
import subprocess
import sys
import time
import urllib.parse

url, runs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u = urllib.parse.urlparse(url)


def conn():
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def post(c, path, body):
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status in (200, 201), (path, r.status, data[:300])
    return json.loads(data)


setup = conn()
repl = post(setup, "/session", {"mode": "repl"})["id"]
execs = post(setup, "/session", {"executionEngine": "python"})["id"]
post(setup, f"/session/{repl}/exec", {"code": "x = 0"})
post(setup, f"/session/{execs}/exec", {"command": "echo 0 > x"})
cases = {
    "REPL cell `x = x + 1` (POST /session/{id}/exec)": (f"/session/{repl}/exec", {"code": "x = x + 1"}),
    "exec-mode session, the same python": (f"/session/{execs}/exec", {"code": "x = 1"}),
    "fresh job, the same python (POST /job?wait=true)": ("/job?wait=true", {"code": "x = 1", "executionEngine": "python"}),
}
conns = {name: conn() for name in cases}
samples = {name: [] for name in cases}
samples["bare `python3 -c pass` on the host"] = []


def once(name):
    path, body = cases[name]
    t = time.perf_counter()
    r = post(conns[name], path, body)
    elapsed = (time.perf_counter() - t) * 1000
    verdict = r.get("verdict") or r.get("result", {}).get("verdict")
    assert verdict == "Accepted", (name, r)
    return elapsed


def bare():
    t = time.perf_counter()
    subprocess.run(["/usr/bin/python3", "-c", "pass"], check=True)
    return (time.perf_counter() - t) * 1000


for _ in range(5):
    for name in cases:
        once(name)
    bare()
for _ in range(runs):
    for name in cases:
        samples[name].append(once(name))
    samples["bare `python3 -c pass` on the host"].append(bare())

# Streaming: the delay from a print to its SSE chunk's arrival.
PRINTS = 40
code = f"import time\nfor _ in range({PRINTS}):\n    print(time.time_ns(), flush=True)\n    time.sleep(0.02)"
delays = []
for _ in range(max(1, runs // 40)):
    job = post(conn(), "/job", {"code": code, "executionEngine": "python"})["id"]
    s = conn()
    s.request("GET", f"/job/{job}/events")
    r = s.getresponse()
    pending = ""
    while True:
        line = r.fp.readline().decode()
        if not line:
            break
        if line.startswith("data: "):
            now = time.time_ns()
            e = json.loads(line[6:])
            if e["type"] == "stdout":
                pending += e["data"]
                *whole, pending = pending.split("\n")
                delays += [(now - int(w)) / 1e6 for w in whole if w]
            if e["type"] == "result":
                break
    s.close()
samples["first byte of a streamed chunk after the print"] = delays


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


rows = ["| What | n | p50 (ms) | p95 (ms) | p99 (ms) |", "|---|---|---|---|---|"]
for name, xs in samples.items():
    rows.append(f"| {name} | {len(xs)} | {q(xs, .5):.2f} | {q(xs, .95):.2f} | {q(xs, .99):.2f} |")
table = "\n".join(rows)
base = q(samples["bare `python3 -c pass` on the host"], 0.5)
cell = q(samples["REPL cell `x = x + 1` (POST /session/{id}/exec)"], 0.5)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
with open(out, "w") as f:
    f.write(
        f"# Sessions and streaming\n\nMachine: {platform.node()}, {cpu}, {len(open('/proc/cpuinfo').read().split('processor')) - 1} CPUs, "
        f"kernel {platform.release()}; commit {commit}; `scripts/live-bench.py {url} {runs}` against `wolf serve` (debug build unless noted).\n\n"
        f"{table}\n\nA REPL cell is {base / cell:.1f}× faster than a cold `python3 -c pass` on the bare host.\n"
    )
print(table)
print(f"REPL cell p50 {cell:.2f} ms; bare python3 -c pass p50 {base:.2f} ms ({base / cell:.1f}x)")
