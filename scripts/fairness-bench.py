#!/usr/bin/env python3
"""The fairness bound under a flood, in both modes: one key submits N jobs of 0.2 s (python
`time.sleep(0.2)`) at once to 2 workers; then another key runs P small jobs one after another
(`wait=true`), and their queue waits are printed as p50/p95/max beside the same probe on the idle
deployment (the baseline, measured first in the same run) and beside the flood's own run time
per job. First come, first served would make the probe wait for the whole flood
(N x 0.2 s / 2 workers). Also printed: the flood's admission latency (the distributed mode holds
most of it in PostgreSQL), and, in the distributed mode, what the window's count costs a keyed
submission: one API with fair dispatch and one without, interleaved, before the flood.

    scripts/fairness-bench.py target/release/wolf [N] [P] [OUT.md]

The distributed mode is the testbed (`target/release/testbed up --api 2 --managers 1`, next to
the wolf binary): nats-server, PostgreSQL and the S3 server as the tests start them
(WOLF_NATS_SERVER as for the tests; the S3 server is `wolf-s3` next to the testbed, or
WOLF_S3_SERVER). Admission by deadline is off in both (it would refuse most
of a 10 000-job flood, rightly).
"""
import concurrent.futures, http.client, json, os, platform, signal, subprocess, sys, tempfile, threading, time

wolf = os.path.abspath(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
P = int(sys.argv[3]) if len(sys.argv) > 3 else 20
AB = int(os.environ.get("FAIRNESS_AB", "300"))
out = sys.argv[4] if len(sys.argv) > 4 else None
WORKERS = 2
FLOOD = json.dumps({"code": "import time; time.sleep(0.2)", "executionEngine": "python"})
PROBE = json.dumps({"code": "print('probe')", "executionEngine": "python"})
ENV = dict(os.environ, WOLF_LOG="warn", WOLF_AUTH="on", WOLF_MAX_QUEUE_WAIT="off", WOLF_WORKERS=str(WORKERS))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


local = threading.local()


def request(addr, method, path, key, body=None):
    conns = getattr(local, "conns", None) or {}
    local.conns = conns
    for attempt in range(2):
        c = conns.get(addr) or http.client.HTTPConnection(addr, timeout=120)
        conns[addr] = c
        try:
            c.request(method, path, body, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        except (http.client.HTTPException, ConnectionError):
            c.close()
            conns.pop(addr, None)
            if attempt:
                raise


def keys(env):
    def create(name):
        return subprocess.run([wolf, "keys", "create", "--name", name], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    return create("flood"), create("other")


def probe(addr, key):
    waits = []
    for _ in range(P):
        s, rec = request(addr, "POST", "/job?wait=true&timeout=120", key, PROBE)
        assert s == 200 and rec["status"] == "Completed", (s, rec)
        waits.append(rec["timings"]["queueWait"])
    return waits


def run(mode, addrs, flood_key, other_key):
    a, b = addrs[0], addrs[-1]
    probe(b, other_key)  # warm
    idle = probe(b, other_key)
    lat, ids = [], []
    t0 = time.perf_counter()

    def submit(i):
        t = time.perf_counter()
        s, rec = request(addrs[i % len(addrs)], "POST", "/job", flood_key, FLOOD)
        assert s == 200, (s, rec)
        return (time.perf_counter() - t) * 1000, rec["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for ms, jid in ex.map(submit, range(N)):
            lat.append(ms)
            ids.append(jid)
    admit_s = time.perf_counter() - t0
    flooded = probe(b, other_key)
    # The flood's own time per job on a worker, from the records of those that ended.
    served = []
    for jid in ids[:40]:
        s, rec = request(a, "GET", f"/job/{jid}", flood_key)
        if s == 200 and rec["status"] == "Completed":
            t = rec["timings"]
            served.append(t["workerAcquire"] + t["workerCreation"] + t["execution"] + t["storage"])
    s, page = request(a, "GET", "/job?limit=1", flood_key)
    return {"mode": mode, "idle": idle, "flooded": flooded, "admit": lat, "admit_s": admit_s, "served": served}


def counters(addrs, key):
    """Fair dispatch's counters summed over the APIs (held, promoted, and jobs let past the
    window: no worker count known, the count or the hold failed)."""
    total = {}
    for addr in addrs:
        c = http.client.HTTPConnection(addr, timeout=30)
        c.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(("wolf_jobs_held_total", "wolf_jobs_promoted_total", "wolf_fair_bypasses_total")):
                name, value = line.rsplit(" ", 1)
                total[name] = total.get(name, 0) + float(value)
        c.close()
    return total


def embedded(d):
    env = dict(ENV, WOLF_DATA_DIR=os.path.join(d, "data"), WOLF_CACHE_DIR=os.path.join(d, "cache"))
    flood_key, other_key = keys(env)
    p = subprocess.Popen([wolf, "serve", "--listen", "127.0.0.1:0"], env=env, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("wolf: listening on "):
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            addr = line.split()[3].removeprefix("http://")
            break
    else:
        raise SystemExit("wolf serve did not start")
    try:
        return run("embedded", [addr], flood_key, other_key)
    finally:
        p.kill()
        p.wait()


def distributed(d):
    testbed = os.path.join(os.path.dirname(wolf), "testbed")
    p = subprocess.Popen([testbed, "up", "--api", "2", "--managers", "1", "--dir", d], env=dict(ENV, WOLF_BIN=wolf),
                         stdout=subprocess.PIPE, text=True)
    stack = json.loads(p.stdout.readline())
    try:
        env = dict(ENV, WOLF_DATABASE_URL=stack["database"])
        flood_key, other_key = keys(env)
        addrs = [u.removeprefix("http://") for u in stack["api"]]
        # A third API with fair dispatch off, on the same services: the window's cost at a
        # submission, interleaved with the testbed's first API.
        s3 = stack["s3"]
        off_env = dict(env, WOLF_NATS_URL=stack["nats"], WOLF_S3_ENDPOINT=s3["endpoint"], WOLF_S3_BUCKET=s3["bucket"],
                       WOLF_S3_REGION="us-east-1", AWS_ACCESS_KEY_ID=s3["accessKeyId"],
                       AWS_SECRET_ACCESS_KEY=s3["secretAccessKey"], WOLF_FAIR_DISPATCH="false",
                       WOLF_CACHE_DIR=os.path.join(d, "off-cache"))
        off = subprocess.Popen([wolf, "api", "--listen", "127.0.0.1:0"], env=off_env, stderr=subprocess.PIPE, text=True)
        try:
            for line in off.stderr:
                if line.startswith("wolf: listening on "):
                    threading.Thread(target=lambda: [None for _ in off.stderr], daemon=True).start()
                    off_addr = line.split()[3].removeprefix("http://")
                    break
            # The APIs learn the managers' workers (the window) within 2 s of their advertising.
            time.sleep(4)
            ab_key = subprocess.run([wolf, "keys", "create", "--name", "ab"], env=env, capture_output=True,
                                    text=True, check=True).stdout.strip()
            ab = {"on": [], "off": []}
            for i in range(AB + 30):
                for k, addr in (("on", addrs[0]), ("off", off_addr)) if i % 2 else (("off", off_addr), ("on", addrs[0])):
                    t = time.perf_counter()
                    st, rec = request(addr, "POST", "/job", ab_key, json.dumps({"code": "pass", "executionEngine": "python"}))
                    assert st == 200, (st, rec)
                    if i >= 30:
                        ab[k].append((time.perf_counter() - t) * 1000)
                time.sleep(0.1)
            # Gone before the flood: an API with fair dispatch off publishes whatever the others
            # hold (that is how turning it off drains them).
            off.kill()
            off.wait()
            r = run("distributed", addrs, flood_key, other_key)
            r["ab"] = ab
            r["counters"] = counters(addrs, flood_key)
            return r
        finally:
            off.kill()
            off.wait()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait()


results = []
for mode in (embedded, distributed):
    with tempfile.TemporaryDirectory() as d:
        results.append(mode(d))

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [
    f"# Fairness under a flood of {N} jobs",
    "",
    f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.release()}; commit {commit}; "
    f"`scripts/fairness-bench.py {sys.argv[1]} {N} {P}`, {WORKERS} workers.",
    "",
    f"One key submits {N} jobs of `time.sleep(0.2)` at once (8 client threads); then another key runs {P} "
    "`print` jobs one after another with `wait=true`. Queue waits are from the jobs' records (ms). "
    f"First come, first served would make the probe wait about {N * 0.2 / WORKERS:.0f} s.",
    "",
    "| mode | probe queue wait, idle p50 / p95 / max | probe queue wait behind the flood p50 / p95 / max "
    "| flood job on its worker p50 | flood admission p50 / p99, rate |",
    "|---|---|---|---|---|",
]
for r in results:
    i, f, a = r["idle"], r["flooded"], r["admit"]
    lines.append(
        f"| {r['mode']} | {pct(i, .5):.1f} / {pct(i, .95):.1f} / {max(i):.1f} | {pct(f, .5):.1f} / {pct(f, .95):.1f} / {max(f):.1f} "
        f"| {pct(r['served'], .5):.1f} | {pct(a, .5):.2f} / {pct(a, .99):.2f} ms, {N / r['admit_s']:.0f}/s |")
for r in results:
    if "counters" in r:
        lines += ["", "Fair dispatch's counters over both APIs after the flood: " +
                  (", ".join(f"`{k}` {v:.0f}" for k, v in sorted(r["counters"].items())) or "none")]
    if "ab" in r:
        on, off = r["ab"]["on"], r["ab"]["off"]
        lines += [
            "",
            f"The window's cost at a keyed submission (distributed): `POST /job` of python `pass`, {AB} each, "
            "interleaved (order alternating) between the testbed's first API and a third API on the same services "
            "with `WOLF_FAIR_DISPATCH=false`, 100 ms between pairs, before the flood (ms):",
            "",
            "| | p50 | p95 | p99 |",
            "|---|---|---|---|",
            "| fair dispatch off | " + " | ".join(f"{pct(off, q):.3f}" for q in (.5, .95, .99)) + " |",
            "| fair dispatch on | " + " | ".join(f"{pct(on, q):.3f}" for q in (.5, .95, .99)) + " |",
            "| difference | " + " | ".join(f"{pct(on, q) - pct(off, q):+.3f}" for q in (.5, .95, .99)) + " |",
        ]
text = "\n".join(lines) + "\n"
print(text)
if out:
    with open(out, "w") as fh:
        fh.write(text)
