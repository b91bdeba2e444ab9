#!/usr/bin/env bash
# Wolf in containers, tested on this machine's Docker engine (no registry: every image is built
# here by scripts/images.sh). Called by scripts/test.sh.
#
# 1. The adversarial sandbox suite inside the wolf image, in a container that is NOT
#    privileged: seven capabilities and deploy/docker/seccomp.json, as docs/containers.md says.
# 2. The same container with Docker's default seccomp profile: Wolf refuses to start (a layer
#    cannot be applied), it does not run jobs without it.
# 3. `compose up` of deploy/compose (3 NATS nodes, PostgreSQL, S3, 2 APIs, 2 managers,
#    Prometheus), one job through each API, Prometheus scraping both managers, `compose down`.
# 4. The Kubernetes manifests validate against the API's schemas (kubernetes-validate, PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
REPO="$PWD"
started=$(date +%s)
step() { echo "containers: $* ($(( $(date +%s) - started )) s)" >&2; }

./scripts/images.sh
step "images built"
# The settings docs/containers.md gives: seven capabilities, Wolf's seccomp profile, no new privileges.
JAIL=(--cap-drop ALL --cap-add SYS_ADMIN --cap-add SETPCAP --cap-add SETUID --cap-add SETGID --cap-add CHOWN
  --cap-add DAC_OVERRIDE --cap-add KILL --security-opt "seccomp=$REPO/deploy/docker/seccomp.json" --security-opt no-new-privileges)

# 1. The suite's test binary, run inside the image with this checkout mounted at its own path
#    (the binary names target/debug/wolf by that path).
ESCAPES=$(cargo test -p wolf --test escapes --no-run --locked --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "escapes":
        print(m["executable"])')
[[ -x "$ESCAPES" ]] || { echo "error: no escapes test binary" >&2; exit 1; }
docker run --rm "${JAIL[@]}" -e WOLF_JAIL=1 -e WOLF_LOG=warn \
  -v "$REPO:$REPO" -w "$REPO/system/wolf" wolf/wolf:local \
  "$ESCAPES" --test-threads 2 -q
step "the adversarial suite passed in a non-privileged container"

# 2. Without the seccomp profile (Docker's default refuses pivot_root): refused, with the reason.
set +e
out=$(docker run --rm --cap-drop ALL --cap-add SYS_ADMIN --cap-add SETPCAP --cap-add SETUID --cap-add SETGID \
  --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add KILL -e WOLF_LOG=warn wolf/wolf:local 2>&1)
rc=$?
set -e
if [[ $rc -eq 0 ]] || ! grep -q "not starting" <<<"$out"; then
  echo "error: Wolf started with a sandbox layer missing (rc $rc): $out" >&2
  exit 1
fi
set +e
out=$(docker run --rm -e WOLF_LOG=warn wolf/wolf:local 2>&1)
rc=$?
set -e
if [[ $rc -eq 0 ]] || ! grep -q "CAP_SYS_ADMIN" <<<"$out"; then
  echo "error: Wolf without CAP_SYS_ADMIN did not stop with the reason (rc $rc): $out" >&2
  exit 1
fi
step "refused to start without the profile or the capability"

# 3. compose up, 401 without a key, a key made in one API's container, a job through each API
#    with it, compose down.
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export WOLF_PORT WOLF_PORT_2 PROMETHEUS_PORT
WOLF_PORT=$(free_port); WOLF_PORT_2=$(free_port); PROMETHEUS_PORT=$(free_port)
export NATS_IMAGE=wolf/nats:local POSTGRES_IMAGE=wolf/postgres:local PROMETHEUS_IMAGE=wolf/prometheus:local
export WOLF_SECCOMP_PROFILE="$REPO/deploy/docker/seccomp.json"
PROJECT="wolf-ci-$$"
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f deploy/compose/docker-compose.yml "$@"; }
trap 'compose logs --no-color > "$T/compose.log" 2>&1 || true; compose down -v >/dev/null 2>&1 || true' EXIT
compose up -d --no-build >/dev/null 2>&1 || { compose up -d --no-build; exit 1; }
for port in "$WOLF_PORT" "$WOLF_PORT_2"; do
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 1
  done
done
# The APIs listen beyond loopback: keys are required by default. One key, made in one API's
# container (PostgreSQL holds it), is valid on both.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WOLF_PORT/job")
[[ "$code" == 401 ]] || { echo "error: compose API without a key answered $code, not 401" >&2; exit 1; }
KEY=$(compose exec -T api-1 wolf keys create --name ci 2>/dev/null)
[[ "$KEY" == wolf_* ]] || { echo "error: wolf keys create in api-1 printed no key" >&2; exit 1; }
for port in "$WOLF_PORT" "$WOLF_PORT_2"; do
  out=$(curl -fsS -X POST "http://127.0.0.1:$port/job?wait=true&timeout=60" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $KEY" -d '{"code": "print(6 * 7)", "executionEngine": "python"}')
  id=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["result"]["verdict"] == "Accepted", r; print(r["id"])' "$out")
  [[ "$(curl -fsS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$port/job/$id/output")" == "42" ]] ||
    { echo "error: job $id: $out" >&2; exit 1; }
done
for _ in $(seq 1 30); do
  up=$(curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/targets" |
    python3 -c 'import json, sys; print(sum(t["health"] == "up" for t in json.load(sys.stdin)["data"]["activeTargets"]))' || echo 0)
  [[ "$up" -ge 4 ]] && break
  sleep 1
done
[[ "$up" -ge 4 ]] || { echo "error: Prometheus scrapes $up of 4 targets" >&2; exit 1; }
compose down -v >/dev/null 2>&1
trap - EXIT
step "compose: up, 401 without a key, a job through each API with one key, 4 of 4 targets scraped, down"

# 4. The Kubernetes manifests, offline, against the schemas kubernetes-validate ships.
[[ -x "$T/k8s-venv/bin/kubernetes-validate" ]] || {
  python3 -m venv "$T/k8s-venv"
  "$T/k8s-venv/bin/pip" install -q "kubernetes-validate==1.34.1"
}
"$T/k8s-venv/bin/kubernetes-validate" --strict --kubernetes-version 1.34.0 deploy/kubernetes/*.yaml
step "the Kubernetes manifests validate"
