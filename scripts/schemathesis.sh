#!/usr/bin/env bash
# Property tests generated from Wolf's own /openapi.json (schemathesis, every check, the
# stateful phase following jobs through the document's links) against a fresh `wolf serve`.
# Called by scripts/test.sh; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
ST_VERSION=4.32.5
if ! "$T/st-venv/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  python3 -m venv "$T/st-venv"
  "$T/st-venv/bin/pip" install -q "schemathesis==$ST_VERSION"
fi
data=$(mktemp -d)
log="$data/serve.log"
# Sessions hold a sandbox each until their idle timeout: room for all the run creates.
# A webhook secret, so a schema-valid callbackUrl is accepted without a key (its deliveries to
# the generated hosts fail and are retried, away from the API's answers).
WOLF_WEBHOOK_SECRET=whsec_schemathesis "$T/debug/wolf" serve --listen 127.0.0.1:0 --data-dir "$data/data" --workers 2 --max-sessions 512 2>"$log" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 600); do  # readiness waits for the engines to be prepared
  url=$(sed -n 's/^wolf: listening on \(http:[^ ]*\).*/\1/p' "$log" | head -1)
  [[ -n "$url" ]] && curl -sf "$url/readyz" >/dev/null && break
  sleep 0.1
done
[[ -n "$url" ]] || { cat "$log" >&2; echo "error: wolf serve did not start" >&2; exit 1; }
export PYTHONPATH=scripts SCHEMATHESIS_HOOKS=schemathesis_hooks
# Every check, examples, fuzzing and the stateful phase. Bodies that repeat a file name are
# dropped by the hooks (uniqueness by one property cannot be stated in JSON Schema).
# scripts/schemathesis.toml: 410 (a session that ended) is an answer to valid data too.
"$T/st-venv/bin/st" --config-file scripts/schemathesis.toml run "$url/openapi.json" --exclude-tag judge0 --exclude-tag piston --exclude-path /job/ws --checks all --max-examples 60 --no-color \
  --phases examples,fuzzing,stateful
# The coverage phase (boundary and negative values) ignores the hooks and repeats one file up
# to maxItems: every check but "schema-valid request accepted", which that one rule defeats.
"$T/st-venv/bin/st" --config-file scripts/schemathesis.toml run "$url/openapi.json" --exclude-tag judge0 --exclude-tag piston --exclude-path /job/ws --checks all --exclude-checks positive_data_acceptance \
  --no-color --phases coverage
