#!/usr/bin/env bash
# The worked example of a runtime from an image: a scientific Python (python3 with numpy,
# pandas and matplotlib) built from Debian's packages only, with what this machine has:
# debootstrap from the mirror apt is configured with, then `docker import` (no registry is
# needed or used). Prints the path of a `docker save` archive that `wolf runtime import` takes.
#
#   deploy/runtimes/python-ml/build.sh [ARCHIVE]      # default target/python-ml.tar
#   wolf runtime import python-ml target/python-ml.tar
#
# The image is cached by its tag: a second run only saves it (REBUILD=1 builds it again).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT="${1:-${CARGO_TARGET_DIR:-target}/python-ml.tar}"
# python3-munkres: fonttools needs scipy or munkres; with scipy come pythran, g++ and boost
# (600 MB more). fontconfig: matplotlib runs fc-list to find fonts (see docs/runtimes.md on
# why its absence aborts a program in the sandbox). gcc and libc6-dev: C extensions and C
# programs (the c-ml engine; the adversarial suite runs on this root with it).
PACKAGES="python3 python3-numpy python3-pandas python3-matplotlib python3-munkres fontconfig gcc libc6-dev"
# The tag names the package list: another list is another image, never a stale cache.
TAG="wolf/python-ml:bookworm-$(echo "$PACKAGES" | sha256sum | cut -c1-12)"

if [[ -n "${REBUILD:-}" ]] || ! docker image inspect "$TAG" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
  # The mirror this host's apt uses (deb822 or one-line sources), else Debian's own.
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$MIRROR" ]] || MIRROR=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
  ROOT=$(mktemp -d /tmp/wolf-python-ml.XXXXXX)
  started=$(date +%s)
  # (under set -e a failing command in the trap would be the script's exit status)
  trap 'umount "$ROOT/proc" 2>/dev/null || true; rm -rf "$ROOT" "$ROOT.log"' EXIT
  debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 ||
    { tail -20 "$ROOT.log" >&2; exit 1; }
  # The packages through apt inside the new root (apt resolves dependencies as Debian means
  # them; debootstrap's --include picks providers of its own and pulls in compilers), without
  # recommends.
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  mount -t proc proc "$ROOT/proc"
  { chroot "$ROOT" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -qq --no-install-recommends $PACKAGES; } \
    >>"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
  chroot "$ROOT" apt-get clean
  umount "$ROOT/proc"
  : >"$ROOT/etc/resolv.conf"
  # What a job has no use for: package lists and caches, documentation, locales but C.
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/cache/debconf/*-old \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
  find "$ROOT"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} + 2>/dev/null || true
  # matplotlib without a display: the Agg backend.
  echo "backend: Agg" >"$ROOT/etc/matplotlibrc"
  tar -C "$ROOT" --numeric-owner -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$TAG" >/dev/null
  echo "built $TAG in $(( $(date +%s) - started )) s ($(du -sh "$ROOT" | cut -f1) unpacked)" >&2
fi
mkdir -p "$(dirname "$OUT")"
docker save "$TAG" -o "$OUT"
echo "$OUT"
