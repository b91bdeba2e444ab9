#!/bin/sh
# Wolf's container entrypoint: give the jail a cgroup tree of its own, then run the command.
#
# Docker mounts the container's cgroups read-only unless it is --privileged. With
# CAP_SYS_ADMIN (and no more) this script makes a cgroup namespace rooted at the container's
# own cgroup (so nothing above it, nothing of the host's, is reachable), mounts fresh
# hierarchies there — writable, delegated — and only then starts Wolf. Where that is not
# possible it stops with the reason: Wolf never runs a job with a sandbox layer missing
# (`wolf check` below proves every layer before the service starts). docs/containers.md.
set -eu

# Only the commands that run jobs need the jail (an API, `wolf migrate`... do not);
# WOLF_JAIL=1 prepares it for any command (a test suite that starts `wolf run` itself).
cmd="$(basename "${1:-}") ${2:-}"
case "$cmd" in
  "wolf serve" | "wolf manager" | "wolf run" | "wolf check" | "wolf bench") ;;
  *) [ "${WOLF_JAIL:-}" = 1 ] || exec "$@" ;;
esac

if [ "${WOLF_SKIP_CGROUP_SETUP:-}" != 1 ] && [ "${WOLF_IN_CGROUPNS:-}" != 1 ]; then
  # Where Wolf makes its cgroups: the memory hierarchy (v1) or the unified tree (v2).
  probe=/sys/fs/cgroup
  [ -d /sys/fs/cgroup/memory ] && probe=/sys/fs/cgroup/memory
  if mkdir "$probe/.wolf-probe" 2>/dev/null; then
    rmdir "$probe/.wolf-probe"                  # already writable (a delegated tree)
  else
    if ! unshare --cgroup true 2>/dev/null; then
      echo "wolf-entrypoint: cannot make a cgroup namespace: the container needs CAP_SYS_ADMIN (--cap-add SYS_ADMIN)" >&2
      exit 70
    fi
    export WOLF_IN_CGROUPNS=1
    exec unshare --cgroup -- "$0" "$@"
  fi
fi

if [ "${WOLF_IN_CGROUPNS:-}" = 1 ]; then
  # What the container had: one cgroup2 mount (v2) or a hierarchy per controller (v1).
  # (mountinfo: the mount point is field 5, the type is the field after the "-" separator)
  mounts() { awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1), $5; break } }' /proc/self/mountinfo; }
  v2=$(mounts | awk '$1 == "cgroup2" && $2 == "/sys/fs/cgroup" {print "yes"}')
  ctrls=$(mounts | awk '$1 == "cgroup" {sub("/sys/fs/cgroup/", "", $2); print $2}')
  fail() { echo "wolf-entrypoint: $1 (see docs/containers.md for the settings)" >&2; exit 70; }
  if [ -n "$v2" ]; then
    umount /sys/fs/cgroup 2>/dev/null || true
    mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null ||
      mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2 in the namespace"
  else
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup /sys/fs/cgroup || fail "cannot mount a tmpfs on /sys/fs/cgroup"
    for c in $ctrls; do
      [ "$c" = unified ] && continue
      mkdir -p "/sys/fs/cgroup/$c"
      case "$c" in
        systemd) opts="none,name=systemd" ;;
        *) opts="$c" ;;
      esac
      mount -t cgroup -o "$opts,nosuid,nodev,noexec" cgroup "/sys/fs/cgroup/$c" || fail "cannot mount the $c hierarchy"
    done
  fi
  unset WOLF_IN_CGROUPNS
fi

# Every layer of the jail, proven on this host before the service takes a job.
if { [ "$cmd" = "wolf serve" ] || [ "$cmd" = "wolf manager" ]; } && [ "${WOLF_SKIP_CHECK:-}" != 1 ]; then
  wolf check >&2 || { echo "wolf-entrypoint: a sandbox layer cannot be applied here; not starting" >&2; exit 70; }
fi
exec "$@"
