#!/usr/bin/env python3
"""What API keys add to a submission: `POST /job` (no wait) against two `wolf serve` on
loopback, one with keys on (a bearer key) and one without, interleaved request by request over
keep-alive connections; prints p50/p95/p99 of each and the difference. With `quotas`, the key
has a rate, a concurrency and a waiting cap too (set far above what the run reaches, so every
submission pays the bucket and the count without being refused). With `deadline`, keys are off
on both and what differs is admission by deadline (default `max_queue_wait` against `off`):
the cost of counting the jobs ahead at every submission.

    scripts/auth-bench.py target/release/wolf [N] [quotas|deadline]
"""
import atexit, http.client, json, os, subprocess, sys, tempfile, time

wolf, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400
quotas = ["--rate", "100000/s", "--burst", "100000", "--concurrency", "100000",
          "--max-queued", "100000"] if "quotas" in sys.argv[3:] else []
deadline = "deadline" in sys.argv[3:]

def serve(d, auth):
    env = dict(os.environ, WOLF_LOG="warn", WOLF_CACHE_DIR=os.path.join(d, "cache"))
    if deadline and not auth:
        env["WOLF_MAX_QUEUE_WAIT"] = "off"
    elif not deadline:
        # Keys are what differs: no deadline on either (the run's backlog of python jobs on
        # two shared cores can pass it, and a 503 would end the run).
        env["WOLF_MAX_QUEUE_WAIT"] = "off"
        if auth:
            env["WOLF_AUTH"] = "on"
    p = subprocess.Popen([wolf, "serve", "--listen", "127.0.0.1:0", "--workers", "2", "--data-dir",
                          os.path.join(d, "data")], env=env, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("wolf: listening on "):
            return p, line.split()[3].removeprefix("http://")
    raise SystemExit("wolf serve did not start")

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]

with tempfile.TemporaryDirectory() as d:
    os.makedirs(f"{d}/on"), os.makedirs(f"{d}/off")
    key = subprocess.run([wolf, "keys", "create", "--name", "bench", "--data-dir", f"{d}/on/data", *quotas],
                         capture_output=True, text=True, check=True).stdout.strip()
    on, on_addr = serve(f"{d}/on", True)
    off, off_addr = serve(f"{d}/off", False)
    # Both servers go with the run, even when it fails.
    atexit.register(lambda: [(p.kill(), p.wait()) for p in (on, off) if p.poll() is None])
    body = json.dumps({"code": "pass", "executionEngine": "python"})
    conns = {"on": http.client.HTTPConnection(on_addr), "off": http.client.HTTPConnection(off_addr)}
    heads = {"on": {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
             "off": {"Content-Type": "application/json"}}
    if deadline:
        heads["on"] = heads["off"]
    lat = {"on": [], "off": []}
    for i in range(n + 50):
        for k in ("on", "off") if i % 2 else ("off", "on"):
            t = time.perf_counter()
            conns[k].request("POST", "/job", body, heads[k])
            r = conns[k].getresponse()
            r.read()
            assert r.status == 200, (k, r.status)
            if i >= 50:  # the first 50 warm both
                lat[k].append((time.perf_counter() - t) * 1000)
        # Below the workers' rate: admission, not a backlog (with deadline, slower still: a
        # backlog there would be refused, and the count of jobs ahead grows with it).
        time.sleep(0.03 if deadline else 0.01)
    for p in (on, off):
        p.terminate()
        p.wait()
    rows = {k: [pct(v, q) for q in (0.5, 0.95, 0.99)] for k, v in lat.items()}
    what = "max_queue_wait" if deadline else "keys"
    print(f"POST /job, {n} each, interleaved (ms){', the key with quotas' if quotas else ''}")
    print("| | p50 | p95 | p99 |\n|---|---|---|---|")
    for k in ("off", "on"):
        print(f"| {what} {k} | " + " | ".join(f"{x:.3f}" for x in rows[k]) + " |")
    print("| difference | " + " | ".join(f"{a - b:+.3f}" for a, b in zip(rows["on"], rows["off"])) + " |")
