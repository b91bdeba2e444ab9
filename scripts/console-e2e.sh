#!/usr/bin/env bash
# The web console end to end in headless Chromium (Debian's chromium and chromium-driver, never
# a downloaded browser; selenium from PyPI): scripts/console_e2e.py. Screenshots go to $1
# (default target/console; `scripts/console-e2e.sh docs/console` refreshes the README's).
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
OUT="${1:-$T/console}"
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[[ -x "$T/console-venv/bin/python" ]] || python3 -m venv "$T/console-venv"
"$T/console-venv/bin/pip" install -q selenium==4.50.0
# Selenium must not fetch a driver or a browser: the paths are given, and it stays offline.
export SE_OFFLINE=true
"$T/console-venv/bin/python" scripts/console_e2e.py "$T/debug/wolf" "$OUT"
