#!/usr/bin/env bash
# `testbed up --containers` as its users drive it: the JSON line appears, the load generator
# runs against its API unchanged while the chaos CLI cuts a manager off from NATS (a real
# partition: the container leaves the NATS network) and heals it, every job is followed to its
# result, and SIGTERM removes every container and network it made. Called by scripts/test.sh
# after scripts/containers.sh built the images (about 1 minute).
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
started=$(date +%s)
line="$T/testbed-containers.json"
log="$T/testbed-containers.log"
events="$T/testbed-containers-chaos.jsonl"
rm -f "$line" "$events"

"$T/debug/testbed" up --containers --api 1 --managers 2 >"$line" 2>"$log" &
testbed=$!
trap 'kill "$testbed" 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  grep -q '"provider"' "$line" 2>/dev/null && break
  kill -0 "$testbed" 2>/dev/null || { cat "$log" >&2; echo "error: testbed up --containers exited" >&2; exit 1; }
  sleep 0.5
done
grep -q '"provider":"containers"' "$line" || { cat "$log" >&2; echo "error: no JSON line from testbed" >&2; exit 1; }
url=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["api"][0])' "$line")
echo "testbed-containers: up at $url ($(( $(date +%s) - started )) s)" >&2

"$T/debug/chaos" cut-manager-nats --every 5s --for 6s --down 3s --stack "$line" >"$events" &
chaos=$!
"$T/debug/loadgen" --target "$url" --rps 4 --duration 8s --warmup 1s --mix python --no-write
wait "$chaos"
grep -q '"action":"inject"' "$events" || { cat "$events" >&2; echo "error: chaos injected nothing" >&2; exit 1; }
if grep -q 'FAILED\|"action":"skip"' "$events"; then
  cat "$events" >&2; echo "error: a chaos action failed" >&2; exit 1
fi
grep -q '"action":"heal"' "$events" || { cat "$events" >&2; echo "error: the partition was not healed" >&2; exit 1; }

kill -TERM "$testbed"
wait "$testbed" || { cat "$log" >&2; echo "error: testbed did not stop cleanly" >&2; exit 1; }
trap - EXIT
left=$(docker ps -aq --filter label=dev.wolf.testbed | wc -l)
nets=$(docker network ls -q --filter label=dev.wolf.testbed | wc -l)
[[ $left -eq 0 && $nets -eq 0 ]] || { echo "error: $left containers and $nets networks left behind" >&2; exit 1; }
echo "testbed-containers: load and a partition through the chaos CLI, then removed ($(( $(date +%s) - started )) s)" >&2
