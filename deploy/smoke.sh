#!/usr/bin/env bash
# Run the install path for real on this host: a single-host distributed deployment (NATS,
# PostgreSQL, S3 server, wolf api, wolf manager) installed by deploy/install.sh under a scratch
# prefix without systemd, one job through it, then stop everything. CI runs this.
#
#   deploy/smoke.sh BIN_DIR
set -euo pipefail
BIN_DIR="$(cd "${1:?usage: smoke.sh BIN_DIR}" && pwd)"
HERE="$(cd "$(dirname "$0")" && pwd)"
PREFIX="$(mktemp -d /tmp/wolf-deploy.XXXXXX)"
chmod 0755 "$PREFIX"
cleanup() {
  "$HERE/install.sh" --role single --prefix "$PREFIX" --no-systemd --stop || true
  rm -rf "$PREFIX"
}
trap cleanup EXIT
"$HERE/install.sh" --role single --bin-dir "$BIN_DIR" --prefix "$PREFIX" --no-systemd
set -a
# shellcheck disable=SC1091
source "$PREFIX/etc/wolf/wolf.env"
set +a
API="http://$WOLF_API_LISTEN"
body='{"code": "#include <bits/stdc++.h>\nusing namespace std;\n\nint main() {\n    cout << \"Hello World\";\n    return 0;\n}", "executionEngine": "c++"}'
rec="$(curl -fsS -X POST "$API/job?wait=true&timeout=120" -H 'Content-Type: application/json' -d "$body")"
echo "$rec" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="Completed" and r["result"]["verdict"]=="Accepted", r; print("smoke: job", r["id"], r["status"])'
id="$(echo "$rec" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
out="$(curl -fsS "$API/job/$id/output")"
[[ "$out" == "Hello World" ]] || { echo "smoke: unexpected output: $out" >&2; exit 1; }
# The units as installed, checked by systemd's own parser where it is available.
if command -v systemd-analyze >/dev/null; then
  for u in "$PREFIX"/etc/systemd/system/*.service; do
    if ! msg="$(systemd-analyze verify "$u" 2>&1)"; then
      # Without a running systemd, verify still parses; only real errors fail the smoke test.
      if echo "$msg" | grep -qiE 'unknown (key|section)|invalid|failed to parse|bad'; then
        echo "smoke: $u: $msg" >&2; exit 1
      fi
    fi
  done
  echo "smoke: systemd-analyze verify parsed the units"
fi
echo "smoke: the install path works: output '$out'"
