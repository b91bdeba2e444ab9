#!/usr/bin/env bash
# Runs the sandbox's adversarial suite and the engine's black-box tests inside a real cgroup v2
# kernel (Debian's, under qemu; see system/testkit/src/guest.rs and docs/kernels.md), plus the
# checks only a guest can make (cgroup v2 placements, AppArmor, the Landlock ABI). Called by
# scripts/test.sh after the host's suites; exits non-zero when any check fails in the guest.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
GUEST="$T/debug/wolf-guest"

if ! "$GUEST" --timeout 120 --quiet -- 'true' >/dev/null 2>"$T/guest-probe.log"; then
  if grep -q "no guest" "$T/guest-probe.log"; then
    echo "skipped: guest suites ($(grep 'no guest' "$T/guest-probe.log"))" >&2
    exit 0
  fi
  cat "$T/guest-probe.log" >&2
  exit 1
fi

# The test binaries cargo built (libtest harness: they run without cargo inside the guest).
bins() {
  cargo test -p wolf --locked --no-run --message-format=json "$@" 2>/dev/null |
    python3 -c 'import sys, json
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m.get("target", {}).get("kind") == ["test"]:
        print(m["executable"])'
}
ESCAPES=$(bins --test escapes)
LANGUAGES=$(bins --test languages)
[[ -x "$ESCAPES" && -x "$LANGUAGES" ]] || { echo "error: test binaries not found" >&2; exit 1; }

"$GUEST" --timeout 1800 -- "
set -e
echo '== kernel'; uname -r; cat /sys/fs/cgroup/cgroup.controllers; cat /sys/kernel/security/lsm; echo
echo '== adversarial suite (cgroup v2 at the root of the hierarchy)'
# WOLF_GUEST: an emulated CPU: limits a case does not set get room (tests/common run_env), and
# the accounting case widens its upper slack.
WOLF_GUEST=tcg $ESCAPES --test-threads 2
echo '== engine black-box tests'
WOLF_GUEST=tcg $LANGUAGES --test-threads 2
echo '== guest checks'
sh scripts/guest-checks.sh
"
