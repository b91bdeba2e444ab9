#!/bin/sh
# Checks only a real cgroup v2 / AppArmor kernel can make. Runs as root inside the guest that
# scripts/guest-suites.sh boots (never on the host: it moves itself between cgroups and loads an
# AppArmor profile). Each check prints "ok ..." or "FAIL ..."; the exit status is the failures.
CG=/sys/fs/cgroup
# Wolf itself, or (with $DELEGATE) Wolf as the only process of a delegated cgroup, as systemd
# starts a service with Delegate=yes.
W=wolf_in
wolf_in() {
  if [ -n "$DELEGATE" ]; then
    # A restart goes where the last one left its leaf (cgroup v2 refuses processes in a cgroup
    # that has controllers enabled below it), as systemd's DelegateSubgroup= does.
    into="$CG/$DELEGATE"
    [ -d "$into/wolf-supervisor" ] && into="$into/wolf-supervisor"
    sh -c 'echo $$ > "$0" && exec ./target/debug/wolf "$@"' "$into/cgroup.procs" "$@"
  else
    ./target/debug/wolf "$@"
  fi
}
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect() { # name, json, grep pattern
  if printf '%s\n' "$2" | grep -q "$3"; then ok "$1"; else fail "$1: $2"; fi
}
printf 'print(6 * 7)\n' > /tmp/p.py
printf '#include <stdlib.h>\n#include <string.h>\nint main(void){ for (;;) { char *p = malloc(1 << 20); if (!p) return 5; memset(p, 1, 1 << 20); } }\n' > /tmp/heap.c
printf 'int main(void){ volatile unsigned long x = 0; for (;;) x++; }\n' > /tmp/spin.c
printf 'import time\ntime.sleep(2)\nprint("slept")\n' > /tmp/slow.py

checks() { # placement name; the caller's cgroup is where Wolf runs
  p="$1"
  out=$($W run --engine python /tmp/p.py 2>/tmp/run.err)
  expect "$p: a job runs" "$out $(tail -3 /tmp/run.err)" '"stdout":"42\\n"'
  out=$($W run --engine c --memory-mb 32 /tmp/heap.c 2>/dev/null)
  expect "$p: memory.max and memory.events give MemoryLimitExceeded" "$out" '"verdict":"MemoryLimitExceeded"'
  expect "$p: peak memory near the limit" "$out" '"memoryKb":3[0-9][0-9][0-9][0-9]'
  out=$($W run --engine c --cpu-time-ms 300 --wall-time-ms 20000 /tmp/spin.c 2>/dev/null)
  expect "$p: cpu.stat usage gives TimeLimitExceeded" "$out" '"verdict":"TimeLimitExceeded"'
  expect "$p: CPU time accounted" "$out" '"cpuTimeMs":[1-9][0-9][0-9]'
  # While a job runs, its step cgroup has swap off and the limits; afterwards it is gone.
  $W run --engine python --memory-mb 100 /tmp/slow.py >/tmp/slow.json 2>/dev/null &
  sleep 1.5
  step=$(find $CG -name memory.max -path '*wolf*' 2>/dev/null | while read -r f; do [ "$(cat "$f")" = "104857600" ] && dirname "$f"; done | head -1)
  if [ -n "$step" ]; then
    [ "$(cat "$step/memory.swap.max")" = "0" ] && ok "$p: swap off in the step cgroup" || fail "$p: memory.swap.max $(cat "$step/memory.swap.max")"
    [ "$(cat "$step/memory.oom.group")" = "1" ] && ok "$p: the step is one OOM unit" || fail "$p: memory.oom.group"
    [ -n "$(cat "$step/cgroup.procs")" ] && ok "$p: the program is in the step cgroup" || fail "$p: empty step cgroup"
  else
    fail "$p: no step cgroup with the job's memory.max found"
  fi
  wait
  expect "$p: the slow job finished" "$(cat /tmp/slow.json)" '"stdout":"slept\\n"'
  left=$(find $CG -mindepth 2 -maxdepth 4 -type d -name '*-[0-9]*-[0-9]' -path '*wolf*' | wc -l)
  [ "$left" = 0 ] && ok "$p: every step cgroup was removed" || fail "$p: $left step cgroups left: $(find $CG -type d -path '*wolf/*')"
}

echo "== cgroup v2, Wolf in the root cgroup (a container with its own cgroup namespace)"
checks "v2 root"

echo "== cgroup v2, Wolf in a delegated subtree (systemd Delegate=yes)"
mkdir -p $CG/wolf.service
echo "+memory +pids +cpu" > $CG/cgroup.subtree_control
DELEGATE=wolf.service checks "v2 delegated"
[ -d $CG/wolf.service/wolf-supervisor ] && ok "v2 delegated: Wolf moved itself to a leaf (no internal processes)" || fail "v2 delegated: no wolf-supervisor leaf"

echo "== Landlock at this kernel's ABI"
log=$(WOLF_LOG=info WOLF_LOG_FORMAT=json $W run --engine python /tmp/p.py 2>&1 >/dev/null)
abi=$(printf '%s\n' "$log" | sed -n 's/.*"landlock_abi":\([0-9]\).*/\1/p' | head -1)
[ -n "$abi" ] && ok "Wolf reports Landlock ABI $abi: $(printf '%s\n' "$log" | grep -o 'Landlock ABI [^"]*' | head -1)" || fail "no Landlock report: $log"

echo "== AppArmor"
printf '#include <stdio.h>\n#include <errno.h>\n#include <sys/socket.h>\n#include <netinet/in.h>\nint main(void){ char l[128] = {0}; FILE *f = fopen("/proc/self/attr/current", "r"); if (f) { fgets(l, sizeof l, f); fclose(f); } int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP); printf("label %%s raw %%d errno %%d\\n", l, s, s < 0 ? errno : 0); return 0; }\n' > /tmp/aa.c
before=$($W run --engine c /tmp/aa.c 2>/dev/null)
expect "AppArmor off: a raw socket fails for want of CAP_NET_RAW (EPERM)" "$before" 'raw -1 errno 1\\n'
if command -v apparmor_parser >/dev/null && [ -d /sys/kernel/security/apparmor ]; then
  apparmor_parser -r system/sandbox/policy/apparmor/wolf-sandbox && ok "the profile loads (apparmor_parser -r)" || fail "apparmor_parser"
  log=$(WOLF_LOG=info WOLF_LOG_FORMAT=json $W run --engine c /tmp/aa.c 2>/tmp/aa.log)
  expect "the program runs confined by wolf-sandbox" "$log" 'label wolf-sandbox (enforce)'
  expect "AppArmor itself refuses the raw socket (EACCES, before the capability check)" "$log" 'raw -1 errno 13\\n'
  grep -q '"apparmor":"wolf-sandbox"' /tmp/aa.log && ok "Wolf reports the profile it applied" || fail "no AppArmor report: $(cat /tmp/aa.log)"
  # (No kernel log line: the profile's deny rules are quiet on purpose, so a hostile job cannot
  # flood the host's log.)
  expect "jobs still run under the profile" "$($W run --engine python /tmp/p.py 2>/dev/null)" '"stdout":"42\\n"'
  expect "compiled jobs still run under the profile" "$($W run --engine c /tmp/heap.c --memory-mb 32 2>/dev/null)" 'MemoryLimitExceeded'
else
  fail "AppArmor: no apparmor_parser or no securityfs in the guest"
fi

echo "guest checks: $fails failed"
exit $fails
