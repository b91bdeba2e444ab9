"""What the compatible front doors cost over Wolf's own API, measured in one run.

Usage: front-doors-bench.py URL RUNS OUT.md   (URL: a running wolf serve)
Interleaved, sequential, one keep-alive connection each: POST /job?wait=true (the baseline),
POST /judge0/submissions?wait=true and POST /api/v2/execute, all of python `print(1)`.
Writes a markdown table (p50/p95/p99, and each door's p50 minus the baseline's) with the
machine and commit to OUT.md.
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
CODE = "print(1)"
doors = {
    "POST /job?wait=true (Wolf)": ("/job?wait=true", {"code": CODE, "executionEngine": "python"}),
    "POST /judge0/submissions?wait=true": ("/judge0/submissions?wait=true", {"source_code": CODE, "language_id": 71}),
    "POST /api/v2/execute (Piston)": ("/api/v2/execute", {"language": "python", "version": "*", "files": [{"content": CODE}]}),
}
conns = {name: http.client.HTTPConnection(u.hostname, u.port, timeout=60) for name in doors}
samples = {name: [] for name in doors}


def once(name):
    path, body = doors[name]
    c = conns[name]
    t = time.perf_counter()
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    elapsed = (time.perf_counter() - t) * 1000
    assert r.status in (200, 201), (name, r.status, data[:200])
    assert b"1" in data or name.startswith("POST /job"), (name, data[:200])
    return elapsed


for _ in range(10):
    for name in doors:
        once(name)
for _ in range(runs):
    for name in doors:
        samples[name].append(once(name))


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


base = q(samples["POST /job?wait=true (Wolf)"], 0.5)
rows = ["| Request | p50 (ms) | p95 (ms) | p99 (ms) | p50 − Wolf's p50 |", "|---|---|---|---|---|"]
for name, xs in samples.items():
    rows.append(f"| {name} | {q(xs, .5):.2f} | {q(xs, .95):.2f} | {q(xs, .99):.2f} | {q(xs, .5) - base:+.2f} |")
table = "\n".join(rows)
print(table)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
with open(out, "w") as f:
    f.write(
        f"# Front doors: Judge0 and Piston against Wolf's own API\n\nMachine: {cpu}, {platform.release()}\n"
        f"Commit: {commit}\nCommand: `python3 scripts/front-doors-bench.py URL {runs} OUT` against `wolf serve` (release)\n"
        f"Each round sends each request once, sequentially, python `print(1)`, one keep-alive connection per door.\n\n"
        f"{table}\n"
    )
