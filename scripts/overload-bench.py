#!/usr/bin/env python3
"""Admission by deadline under a 10x overload: one `wolf serve` (2 workers) gets python jobs of
0.2 s at ten times what its workers finish, open loop, for DURATION seconds; the accepted jobs'
queue wait (from their records) and the time a refusal takes are printed as p50/p95/p99. The
baseline, in the same run, is the same overload with `max_queue_wait = off` (every job accepted),
for a shorter time (its backlog takes long to drain).

    scripts/overload-bench.py target/release/wolf [DURATION] [OUT.md]
"""
import concurrent.futures, http.client, json, os, platform, subprocess, sys, tempfile, threading, time

wolf = sys.argv[1]
duration = float(sys.argv[2]) if len(sys.argv) > 2 else 45.0
out = sys.argv[3] if len(sys.argv) > 3 else None
JOB = json.dumps({"code": "import time; time.sleep(0.2)", "executionEngine": "python"})
WORKERS = 2


def serve(d, max_wait):
    env = dict(os.environ, WOLF_LOG="warn", WOLF_CACHE_DIR=os.path.join(d, "cache"),
               WOLF_MAX_QUEUE_WAIT=max_wait)
    p = subprocess.Popen([wolf, "serve", "--listen", "127.0.0.1:0", "--workers", str(WORKERS),
                          "--data-dir", os.path.join(d, "data")], env=env, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("wolf: listening on "):
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, line.split()[3].removeprefix("http://")
    raise SystemExit("wolf serve did not start")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


local = threading.local()


def request(addr, method, path, body=None):
    """One request on this thread's keep-alive connection; a connection the server had closed
    while idle is replaced once (the request never reached it)."""
    for attempt in (0, 1):
        c = getattr(local, "conn", None)
        fresh = c is None or getattr(local, "addr", None) != addr
        if fresh:
            c = local.conn = http.client.HTTPConnection(addr, timeout=600)
            local.addr = addr
        try:
            c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            local.conn = None
            if fresh or attempt:
                raise


def capacity(addr):
    """Jobs per second the workers finish, measured: 20 jobs two at a time."""
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(lambda _: request(addr, "POST", "/job?wait=true", JOB), range(20)))
    return 20 / (time.perf_counter() - t)


def overload(addr, rate, seconds):
    """Open loop at `rate` for `seconds`: (accepted ids, refusal latencies ms, accept latencies ms)."""
    accepted, refused_ms, accepted_ms, statuses = [], [], [], {}
    lock = threading.Lock()

    def one():
        t = time.perf_counter()
        status, body = request(addr, "POST", "/job", JOB)
        ms = (time.perf_counter() - t) * 1000
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                accepted.append(body["id"])
                accepted_ms.append(ms)
            elif status == 503:
                refused_ms.append(ms)

    with concurrent.futures.ThreadPoolExecutor(64) as ex:
        start, n = time.perf_counter(), int(rate * seconds)
        futures = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(ex.submit(one))
        for f in futures:
            f.result()
    return accepted, refused_ms, accepted_ms, statuses


def waits(addr, ids):
    """The accepted jobs' queue waits (ms), once each has ended."""
    def wait(i):
        while True:
            status, rec = request(addr, "GET", f"/job/{i}?wait=true&timeout=300")
            if status == 200 and rec["status"] in ("Completed", "Failed"):
                return rec["timings"]["queueWait"]
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        return list(ex.map(wait, ids))


def run(max_wait, seconds):
    with tempfile.TemporaryDirectory() as d:
        p, addr = serve(d, max_wait)
        try:
            cap = capacity(addr)
            ids, refused, accepted_ms, statuses = overload(addr, 10 * cap, seconds)
            qw = waits(addr, ids)
        finally:
            p.terminate()
            p.wait()
    return cap, ids, refused, accepted_ms, statuses, qw


rows = []
for label, max_wait, seconds in (("max_queue_wait 30s", "30s", duration), ("off (baseline)", "off", duration / 4)):
    cap, ids, refused, acc_ms, statuses, qw = run(max_wait, seconds)
    rows.append((label, seconds, cap, len(ids), len(refused), statuses, qw, refused, acc_ms))
    print(f"{label}: capacity {cap:.1f} jobs/s, offered {10 * cap:.0f}/s for {seconds:.0f} s, "
          f"accepted {len(ids)}, refused {len(refused)}, statuses {statuses}", flush=True)

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [
    "# Admission by deadline under a 10x overload",
    "",
    f"Machine: {os.cpu_count()} cores, {platform.release()}; commit {commit}; `wolf serve --workers {WORKERS}`",
    f"Command: `scripts/overload-bench.py {wolf} {duration:.0f}`: python `time.sleep(0.2)` jobs, open loop at ten",
    "times the capacity measured first (20 jobs, two at a time); queue waits from the records of the",
    "accepted jobs once they ended; refusal latency at the client.",
    "",
    "| | overload | accepted | refused | queue wait p50 / p95 / p99 (s) | refusal p50 / p95 / p99 (ms) | acceptance p50 / p99 (ms) |",
    "|---|---|---|---|---|---|---|",
]
for label, seconds, cap, n_ok, n_no, statuses, qw, refused, acc_ms in rows:
    q = " / ".join(f"{pct(qw, x) / 1000:.1f}" for x in (0.5, 0.95, 0.99))
    r = " / ".join(f"{pct(refused, x):.1f}" for x in (0.5, 0.95, 0.99)) if refused else "none"
    a = " / ".join(f"{pct(acc_ms, x):.1f}" for x in (0.5, 0.99))
    lines.append(f"| {label} | {10 * cap:.0f} jobs/s for {seconds:.0f} s | {n_ok} | {n_no} | {q} | {r} | {a} |")
text = "\n".join(lines) + "\n"
print(text)
if out:
    with open(out, "w") as f:
        f.write(text)
