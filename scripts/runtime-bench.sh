#!/usr/bin/env bash
# What a runtime from an image costs, measured in one run: the same trivial job (busybox `sh`
# running `true`) on the host's root and on an image runtime's root (FROM scratch + Debian's
# static busybox, built here), interleaved, through `wolf serve` with one worker; then, when
# given the python-ml archive, that image's import (time and disk).
#
#   scripts/runtime-bench.sh [RUNS] [PYTHON_ML_ARCHIVE]     # writes results/DATE-runtimes.md
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-300}"
ML="${2:-}"
T="${CARGO_TARGET_DIR:-target}"
WOLF="$T/release/wolf"
[[ -x "$WOLF" ]] || WOLF="$T/debug/wolf"
echo "binary: $WOLF" >&2
TMP=$(mktemp -d /tmp/wolf-runtime-bench.XXXXXX)
cleanup() { [[ -n "${SERVE:-}" ]] && kill "$SERVE" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

mkdir -p "$TMP/ctx"
cp /bin/busybox "$TMP/ctx/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\n' >"$TMP/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t wolf-bench/busybox:1 "$TMP/ctx" >/dev/null
docker save wolf-bench/busybox:1 -o "$TMP/bb.tar"
cat >"$TMP/wolf.toml" <<TOML
data_dir = "$TMP/data"

[[language]]
name = "bb-host"
source = "main.sh"
run = ["/bin/busybox", "sh", "main.sh"]
version = ["/bin/busybox"]
requires = ["/bin/busybox"]

[[language]]
name = "bb-image"
runtime = "bb"
source = "main.sh"
run = ["/bin/busybox", "sh", "main.sh"]
version = ["/bin/busybox"]
requires = ["/bin/busybox"]
TOML
export WOLF_CONFIG="$TMP/wolf.toml"
"$WOLF" runtime import bb "$TMP/bb.tar" >/dev/null
ML_LINE=""
if [[ -n "$ML" ]]; then
  started=$(date +%s%N)
  "$WOLF" runtime import python-ml "$ML" >"$TMP/ml.json"
  secs=$(( ($(date +%s%N) - started) / 1000000 ))
  ML_LINE=$(python3 - "$TMP/ml.json" "$secs" "$ML" "$TMP/data/runtimes" <<'PY'
import json, os, subprocess, sys
info = json.load(open(sys.argv[1]))
du = subprocess.run(["du", "-sm", sys.argv[4]], capture_output=True, text=True).stdout.split()[0]
size = os.path.getsize(sys.argv[3]) >> 20
print(f"| python-ml import (`wolf runtime import`, a {size} MB docker archive) | {int(sys.argv[2]) / 1000:.1f} s | "
      f"{info['bytes'] >> 20} MB of files, {info['entries']} entries; store {du} MB (blobs and root) |")
PY
)
fi
WOLF_LOG=warn "$WOLF" serve --listen 127.0.0.1:0 --workers "${WORKERS:-2}" --data-dir "$TMP/data" 2>"$TMP/serve.log" &
SERVE=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/serve.log" && break; sleep 0.1; done
URL=$(sed -n 's/^wolf: listening on \([^ ]*\).*/\1/p' "$TMP/serve.log" | head -1)
python3 - "$URL" "$RUNS" "$ML_LINE" "$WOLF" <<'PY'
import http.client, json, os, platform, subprocess, sys, time, urllib.parse
url, runs, ml_line, wolf = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
u = urllib.parse.urlparse(url)
engines = {"host root (`bb-host`)": "bb-host", "image runtime (`bb-image`)": "bb-image"}
conns = {k: http.client.HTTPConnection(u.hostname, u.port, timeout=60) for k in engines}
samples = {k: [] for k in engines}
def once(name):
    c = conns[name]
    t = time.perf_counter()
    c.request("POST", "/job?wait=true", json.dumps({"code": "true", "executionEngine": engines[name]}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); body = json.loads(r.read())
    ms = (time.perf_counter() - t) * 1000
    assert r.status == 200 and body["result"]["verdict"] == "Accepted", body
    return ms
for name in engines:  # warm-up
    for _ in range(10):
        once(name)
for _ in range(runs):
    for name in engines:
        samples[name].append(once(name))
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p / 100 * len(v)))]
host = samples["host root (`bb-host`)"]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lines = [f"# Runtimes from images: cost ({time.strftime('%Y-%m-%d')})", "",
         f"Machine: {platform.node()}, {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
         f"Linux {platform.release()}; commit {commit}; binary {wolf}.", "",
         f"`scripts/runtime-bench.sh {runs}`: `POST /job?wait=true` of busybox `sh` running `true`, {runs} runs each, "
         f"interleaved, one keep-alive connection per case, `wolf serve` with {os.environ.get('WORKERS', '2')} workers (the default here: one per core). The host job takes the worker's "
         "pre-warmed sandbox; the runtime job takes its runtime's spare (prepared ahead).", "",
         "| case | p50 ms | p95 ms | p99 ms | p50 vs host |", "|---|---|---|---|---|"]
for name, v in samples.items():
    lines.append(f"| {name} | {pct(v, 50):.2f} | {pct(v, 95):.2f} | {pct(v, 99):.2f} | {pct(v, 50) / pct(host, 50):.2f}× |")
if ml_line:
    lines += ["", "| import | time | size |", "|---|---|---|", ml_line]
text = "\n".join(lines) + "\n"
print(text)
open(f"results/{time.strftime('%Y-%m-%d')}-runtimes.md", "w").write(text)
PY
