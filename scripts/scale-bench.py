#!/usr/bin/env python3
"""The embedded store at scale: N job records (copies of one real record under UUIDv7 ids, half
of them eight days old) are written into a `wolf serve` data dir; then, with `retention =
forever`, `GET /job/{id}` of random ids, the first page of the listing, a page deep in it (a
cursor) and admissions are timed (p50/p95/p99), each interleaved with the same request to a
second `wolf serve` on a small store (21 jobs) running beside it (the baseline), with the memory of
`wolf serve` and of its idle pre-warmed sandboxes; then, restarted with the default retention
(7 days), admissions are timed while retention deletes the old half, and the deletion rate is
read from /metrics.

    scripts/scale-bench.py target/release/wolf [N] [OUT.md]
"""
import http.client, json, os, platform, random, re, sqlite3, subprocess, sys, tempfile, threading, time, uuid

wolf = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
out = sys.argv[3] if len(sys.argv) > 3 else None
DAY_MS = 86_400_000


def serve(d, retention):
    env = dict(os.environ, WOLF_LOG="warn", WOLF_CACHE_DIR=os.path.join(d, "cache"), WOLF_RETENTION=retention)
    p = subprocess.Popen([wolf, "serve", "--listen", "127.0.0.1:0", "--workers", "2", "--data-dir",
                          os.path.join(d, "data")], env=env, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("wolf: listening on "):
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            addr = line.split()[3].removeprefix("http://")
            c = http.client.HTTPConnection(addr, timeout=120)
            for _ in range(600):
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    return p, c
                time.sleep(0.1)
            raise SystemExit("wolf serve did not become ready")
    raise SystemExit("wolf serve did not start")


def stop(p):
    p.terminate()
    p.wait()


def timed(c, method, path, body=None, want=200):
    t = time.perf_counter()
    c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
    r = c.getresponse()
    data = r.read()
    ms = (time.perf_counter() - t) * 1000
    assert r.status == want, (method, path, r.status, data[:200])
    return ms, data


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def row(name, xs):
    return f"| {name} | {len(xs)} | " + " | ".join(f"{pct(xs, q):.2f}" for q in (0.5, 0.95, 0.99)) + " |"


def uuid7(ms):
    r = random.getrandbits(74)
    v = (ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=v))


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return 0


def descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    kids = {}
    for line in out:
        if line.strip():
            a, b = map(int, line.split())
            kids.setdefault(b, []).append(a)
    todo, seen = [pid], []
    while todo:
        for k in kids.get(todo.pop(), []):
            seen.append(k)
            todo.append(k)
    return seen


BODY = json.dumps({"code": "pass", "executionEngine": "python"})

with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as e:
    # One real record, as the engine writes it.
    p, c = serve(d, "forever")
    _, first = timed(c, "POST", "/job?wait=true", BODY)
    stop(p)
    db = sqlite3.connect(os.path.join(d, "data", "wolf.db"))
    rec_text, sub_text = db.execute("SELECT record, submission FROM jobs").fetchone()
    old_id = json.loads(first)["id"]
    now = int(time.time() * 1000)
    t = time.perf_counter()
    ids = []
    with db:
        rows = []
        for i in range(n):
            # Half eight days old, half within the last day; ids in time order as UUIDv7 are.
            ms = now - 8 * DAY_MS - i * 1000 if i % 2 else now - random.randrange(DAY_MS)
            jid = uuid7(ms)
            if i % 2 == 0 and len(ids) < 100_000:
                ids.append(jid)
            rows.append((jid, "Completed", rec_text.replace(old_id, jid), sub_text))
            if len(rows) == 10_000:
                db.executemany("INSERT INTO jobs (id, status, record, submission) VALUES (?, ?, ?, ?)", rows)
                rows = []
        db.executemany("INSERT INTO jobs (id, status, record, submission) VALUES (?, ?, ?, ?)", rows)
    db.close()
    gen_s = time.perf_counter() - t
    size_mb = os.path.getsize(os.path.join(d, "data", "wolf.db")) / 2**20
    print(f"{n} records written in {gen_s:.0f} s; wolf.db {size_mb:.0f} MiB", flush=True)

    p, c = serve(d, "forever")
    # The baseline: the same requests to a server on a small store (21 jobs: a page's worth, so
    # a page there is as long as here), each right after the one to the big store, so both see
    # the same machine at the same moment.
    q, b = serve(e, "forever")
    for _ in range(21):
        _, one = timed(b, "POST", "/job?wait=true", BODY)
    one = json.loads(one)["id"]
    get_ms, get_base = [], []
    for _ in range(1000):
        get_ms.append(timed(c, "GET", f"/job/{random.choice(ids)}")[0])
        get_base.append(timed(b, "GET", f"/job/{one}")[0])
    first_page, first_base, deep_page = [], [], []
    for _ in range(200):
        first_page.append(timed(c, "GET", "/job?limit=20")[0])
        first_base.append(timed(b, "GET", "/job?limit=20")[0])
        deep_page.append(timed(c, "GET", f"/job?limit=20&offset={random.choice(ids)}")[0])
    admit, admit_base = [], []
    for _ in range(300):
        admit.append(timed(c, "POST", "/job", BODY)[0])
        admit_base.append(timed(b, "POST", "/job", BODY)[0])
        time.sleep(0.03)
    stop(q)
    time.sleep(2)
    serve_kb = rss_kb(p.pid)
    sandboxes = [(k, rss_kb(k)) for k in descendants(p.pid)]
    stop(p)

    p, c = serve(d, "7d")
    admit_during, deleted = [], []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 60:
        admit_during.append(timed(c, "POST", "/job", BODY)[0])
        time.sleep(0.03)
        if len(admit_during) % 30 == 0:
            _, m = timed(c, "GET", "/metrics")
            got = re.search(rb'wolf_retention_deleted_total\{what="job"\} (\d+)', m)
            deleted.append((time.perf_counter() - t0, int(got.group(1)) if got else 0))
    stop(p)

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
rate = deleted[-1][1] / deleted[-1][0] if deleted and deleted[-1][0] > 0 else 0
lines = [
    f"# The embedded store with {n:,} job records",
    "",
    f"Machine: {os.cpu_count()} cores, {platform.release()}; commit {commit}; `wolf serve --workers 2`",
    f"Command: `scripts/scale-bench.py {wolf} {n}`. {n:,} copies of one real record (wolf.db {size_mb:.0f} MiB,",
    f"written in {gen_s:.0f} s), half of them eight days old. Sequential requests on one keep-alive connection.",
    "",
    "With `retention = forever`; each request to the big store is followed by the same one to a",
    "second `wolf serve` on a small store (21 jobs), running beside it: the baseline rows.",
    "",
    "| request | n | p50 (ms) | p95 (ms) | p99 (ms) |",
    "|---|---|---|---|---|",
    row("GET /job/{id} (random id)", get_ms),
    row("  baseline: GET /job/{id}, 21 jobs", get_base),
    row("GET /job?limit=20 (newest)", first_page),
    row("  baseline: GET /job?limit=20, 21 jobs", first_base),
    row("GET /job?limit=20&offset={random id} (a cursor)", deep_page),
    row("POST /job (python pass), one pair every 30 ms", admit),
    row("  baseline: POST /job, 21 jobs", admit_base),
    "",
    "Restarted with the default retention (7d), while it deletes the old half (objects: none on",
    "disk for the copies, so this is the rows' cost):",
    "",
    "| request | n | p50 (ms) | p95 (ms) | p99 (ms) |",
    "|---|---|---|---|---|",
    row("POST /job during deletion", admit_during),
    "",
    f"Deleted in the first {deleted[-1][0]:.0f} s: {deleted[-1][1]:,} jobs ({rate:.0f} jobs/s, batches of 200 with 50 ms between)."
    if deleted else "No deletion was observed.",
    "",
    f"Memory: `wolf serve` RSS {serve_kb / 1024:.1f} MiB after the requests above; its descendant processes",
    f"(templates, pre-warmed sandboxes, their supervisors): {len(sandboxes)} processes, RSS "
    + ", ".join(f"{kb / 1024:.1f}" for _, kb in sandboxes) + " MiB (shared pages counted in each).",
]
text = "\n".join(lines) + "\n"
print(text)
if out:
    with open(out, "w") as f:
        f.write(text)
