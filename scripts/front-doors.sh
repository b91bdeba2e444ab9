#!/usr/bin/env bash
# The compatible front doors in both modes, a fresh `wolf serve` then the distributed testbed
# (two APIs, one manager, JetStream, PostgreSQL, S3; the clients talk to the second API): the
# official Judge0 Python SDK (PyPI judge0 0.0.8) unchanged (scripts/judge0_sdk.py), and
# requests shaped as the npm piston-client sends them (scripts/piston_client.py). Called by
# scripts/test.sh; exits non-zero on any failed check.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
if ! "$T/judge0-venv/bin/python" -c 'import judge0' 2>/dev/null; then
  python3 -m venv "$T/judge0-venv"
  "$T/judge0-venv/bin/pip" install -q "judge0==0.0.8"
fi
work=$(mktemp -d)
serve="" testbed=""
cleanup() {
  for p in $serve $testbed; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $serve $testbed; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The embedded run's clients talk to the doors' own listeners (Judge0's API at the root of its
# port, Piston's under /api/v2/ of its port, as clients given only a host and port see them);
# the doors mounted on the main listener are checked against the testbed below.
"$T/debug/wolf" serve --listen 127.0.0.1:0 --judge0-listen 127.0.0.1:0 --piston-listen 127.0.0.1:0 \
  --data-dir "$work/data" --workers 2 2>"$work/serve.log" &
serve=$!
url=""
for _ in $(seq 1 600); do  # readiness waits for the engines to be prepared
  url=$(sed -n 's/^wolf: listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log" | head -1)
  [[ -n "$url" ]] && curl -sf "$url/readyz" >/dev/null && break
  sleep 0.1
done
[[ -n "$url" ]] || { cat "$work/serve.log" >&2; echo "error: wolf serve did not start" >&2; exit 1; }
j0=$(sed -n 's/^wolf: judge0 listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log" | head -1)
[[ -n "$j0" ]] || { cat "$work/serve.log" >&2; echo "error: no judge0 listener" >&2; exit 1; }
echo "judge0 SDK against wolf serve's judge0 listener ($j0)"
"$T/judge0-venv/bin/python" scripts/judge0_sdk.py "$j0"
pi=$(sed -n 's/^wolf: piston listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log" | head -1)
[[ -n "$pi" ]] || { cat "$work/serve.log" >&2; echo "error: no piston listener" >&2; exit 1; }
echo "piston client against wolf serve's piston listener ($pi)"
python3 scripts/piston_client.py "$pi"

"$T/debug/testbed" up --api 2 --managers 1 --dir "$work/testbed" >"$work/testbed.json" 2>"$work/testbed.log" &
testbed=$!
for _ in $(seq 1 600); do
  [[ -s "$work/testbed.json" ]] && break
  kill -0 "$testbed" 2>/dev/null || { cat "$work/testbed.log" >&2; exit 1; }
  sleep 0.2
done
url=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["api"][1])' "$work/testbed.json")
echo "judge0 SDK against the testbed's second API ($url)"
"$T/judge0-venv/bin/python" scripts/judge0_sdk.py "$url/judge0"
echo "piston client against the testbed's second API ($url)"
python3 scripts/piston_client.py "$url"
