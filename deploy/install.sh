#!/usr/bin/env bash
# Install Wolf on this Linux host for one role, with its configuration and systemd units.
#
#   install.sh --role ROLE [--env-file FILE] [--bin-dir DIR] [--prefix DIR] [--no-systemd] [--stop]
#
# Roles: api, manager, nats, postgres, monitoring, loadgen, and single (nats + postgres + an S3
# server + api + manager on one host: the distributed mode on one machine).
#   --env-file FILE  KEY=VALUE lines merged into <prefix>/etc/wolf/wolf.env (WOLF_NATS_URL,
#                    WOLF_DATABASE_URL, WOLF_S3_*, NATS_ROUTES, ...); cloud-init writes it.
#   --bin-dir DIR    take wolf, loadgen, wolf-s3 from DIR; default: <release>/bin if this script
#                    came in a release tarball, else build them with cargo (rustup if needed).
#   --prefix DIR     install under DIR instead of / (tests).
#   --no-systemd     no systemd here (containers, CI): run each unit's ExecStart directly, as
#                    its User, with its EnvironmentFile; pids in <prefix>/run/wolf.
#   --stop           with --no-systemd: stop what an earlier run started.
set -euo pipefail

ROLE="" ENV_IN="" BIN_DIR="" PREFIX="" SYSTEMD=1 STOP=0
while (($#)); do
  case "$1" in
    --role) ROLE="$2"; shift 2 ;;
    --env-file) ENV_IN="$2"; shift 2 ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --prefix) PREFIX="${2%/}"; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --stop) STOP=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(dirname "$HERE")"
RUN="$PREFIX/run/wolf"
LOG="$PREFIX/var/log/wolf"
say() { echo "wolf-install: $*" >&2; }
die() { say "$*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (it creates users, units, cgroups)"

units_of() {
  case "$1" in
    api) echo wolf-api ;;
    manager) echo wolf-manager ;;
    nats) echo wolf-nats ;;
    postgres) echo wolf-postgres ;;
    single) echo wolf-nats wolf-postgres wolf-s3 wolf-api wolf-manager ;;
    monitoring|loadgen) echo "" ;;
    *) die "unknown role '$1' (api, manager, nats, postgres, monitoring, loadgen, single)" ;;
  esac
}

# --- stop (no-systemd) ------------------------------------------------------------------
if ((STOP)); then
  [[ -n "$ROLE" ]] || die "--stop needs --role"
  for unit in $(units_of "$ROLE" | tr ' ' '\n' | tac); do
    pidf="$RUN/$unit.pid"
    [[ -f "$pidf" ]] || continue
    pid="$(cat "$pidf")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidf"
    say "stopped $unit ($pid)"
  done
  exit 0
fi
[[ -n "$ROLE" ]] || die "--role is required"
UNITS="$(units_of "$ROLE")"

# --- packages ---------------------------------------------------------------------------
pkgs=()
case "$ROLE" in
  nats|single) command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || pkgs+=(nats-server) ;;
esac
case "$ROLE" in
  postgres|single) ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || pkgs+=(postgresql) ;;
esac
case "$ROLE" in
  manager|single) command -v g++ >/dev/null || pkgs+=(g++); [[ -x /usr/bin/python3 ]] || pkgs+=(python3) ;;
  monitoring) command -v prometheus >/dev/null || pkgs+=(prometheus) ;;
  loadgen) command -v aws >/dev/null || pkgs+=(awscli) ;;
esac
if ((${#pkgs[@]})); then
  say "installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if [[ "$ROLE" == postgres || "$ROLE" == single ]]; then
  PGBIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")"
  # The packaged cluster is not Wolf's: Wolf runs its own (wolf-postgres.service).
  if ((SYSTEMD)) && systemctl is-enabled --quiet postgresql 2>/dev/null; then systemctl disable --now postgresql || true; fi
else
  PGBIN=/usr/lib/postgresql/15/bin
fi

# --- binaries ---------------------------------------------------------------------------
if [[ -z "$BIN_DIR" ]]; then
  if [[ -x "$SRC/bin/wolf" ]]; then
    BIN_DIR="$SRC/bin"
  else
    if ! command -v cargo >/dev/null; then
      say "installing the Rust toolchain (rustup)"
      command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl build-essential >/dev/null; }
      curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
      # shellcheck disable=SC1091
      source "$HOME/.cargo/env"
    fi
    say "building wolf (release)"
    (cd "$SRC" && cargo build --release --locked -q -p wolf -p loadgen -p wolf-testkit)
    BIN_DIR="$SRC/target/release"
  fi
fi
[[ -x "$BIN_DIR/wolf" ]] || die "no wolf binary in $BIN_DIR"
install -d "$PREFIX/usr/local/bin" "$PREFIX/etc/wolf" "$PREFIX/etc/systemd/system" "$RUN" "$LOG" \
  "$PREFIX/var/lib/wolf"
for b in wolf loadgen wolf-s3 testbed; do
  [[ -x "$BIN_DIR/$b" ]] && install -m 0755 "$BIN_DIR/$b" "$PREFIX/usr/local/bin/$b"
done
id wolf >/dev/null 2>&1 || useradd --system --home-dir /var/lib/wolf --shell /usr/sbin/nologin wolf

# --- configuration ----------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ENV_OUT="$PREFIX/etc/wolf/wolf.env"
{
  echo "# Written by deploy/install.sh (role $ROLE). systemd EnvironmentFile syntax."
  if [[ "$ROLE" == single ]]; then
    NATS_PORT="$(free_port)"; PG_PORT="$(free_port)"; S3_PORT="$(free_port)"
    echo "NATS_PORT=$NATS_PORT"
    echo "WOLF_PG_PORT=$PG_PORT"
    echo "WOLF_PG_LISTEN=127.0.0.1"
    echo "WOLF_S3_PORT=$S3_PORT"
    echo "WOLF_NATS_URL=nats://127.0.0.1:$NATS_PORT"
    echo "WOLF_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "WOLF_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "WOLF_S3_BUCKET=wolf"
    echo "WOLF_S3_REGION=us-east-1"
    echo "AWS_ACCESS_KEY_ID=wolf-single"
    echo "AWS_SECRET_ACCESS_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "WOLF_API_LISTEN=127.0.0.1:$(free_port)"
    echo "WOLF_MANAGER_LISTEN=127.0.0.1:$(free_port)"
  else
    echo "NATS_PORT=4222"
    echo "WOLF_PG_PORT=5432"
    echo "WOLF_PG_LISTEN=*"
    echo "WOLF_API_LISTEN=0.0.0.0:8080"
    echo "WOLF_MANAGER_LISTEN=0.0.0.0:9100"
  fi
  echo "WOLF_LOG=info"
  [[ -n "$ENV_IN" ]] && grep -E '^[A-Z_][A-Z0-9_]*=' "$ENV_IN"
} > "$ENV_OUT.new"
# Later lines win: keep the last value of each key.
tac "$ENV_OUT.new" | awk -F= '!seen[$1]++' | tac > "$ENV_OUT"
rm -f "$ENV_OUT.new"
chmod 0640 "$ENV_OUT"
chgrp wolf "$ENV_OUT"
set -a
# shellcheck disable=SC1090
source "$ENV_OUT"
set +a

if [[ "$UNITS" == *wolf-nats* ]]; then
  install -d -o wolf -g wolf "$PREFIX/var/lib/wolf/nats"
  {
    echo "# Written by deploy/install.sh."
    echo "server_name: ${NATS_NODE_NAME:-$(hostname -s)}"
    echo "listen: ${NATS_LISTEN:-0.0.0.0}:${NATS_PORT}"
    echo "max_payload: 8388608"
    echo "jetstream { store_dir: \"$PREFIX/var/lib/wolf/nats\" }"
    if [[ -n "${NATS_ROUTES:-}" ]]; then
      echo "cluster {"
      echo "  name: wolf"
      echo "  listen: 0.0.0.0:6222"
      echo "  routes: [$(echo "$NATS_ROUTES" | sed 's/,/, /g')]"
      echo "}"
    fi
  } > "$PREFIX/etc/wolf/nats.conf"
fi
if [[ "$UNITS" == *wolf-postgres* ]]; then
  install -d -o postgres -g postgres -m 0700 "$PREFIX/var/lib/wolf/pg"
  chown postgres "$RUN"
  if [[ ! -f "$PREFIX/var/lib/wolf/pg/PG_VERSION" ]]; then
    runuser -u postgres -- "$PGBIN/initdb" -D "$PREFIX/var/lib/wolf/pg" -U postgres -A trust -E UTF8 --locale=C >/dev/null
    # Testbed-grade access: trust inside the private network (set WOLF_PG_ALLOW to its CIDR).
    [[ -n "${WOLF_PG_ALLOW:-}" ]] && echo "host all all ${WOLF_PG_ALLOW} trust" >> "$PREFIX/var/lib/wolf/pg/pg_hba.conf"
  fi
fi
if [[ "$UNITS" == *wolf-s3* ]]; then
  install -d -o wolf -g wolf "$PREFIX/var/lib/wolf/s3" "$PREFIX/var/lib/wolf/s3/${WOLF_S3_BUCKET:-wolf}"
fi
[[ "$UNITS" == *wolf-manager* ]] && install -d "$PREFIX/var/lib/wolf/manager"

# --- units ------------------------------------------------------------------------------
for unit in $UNITS; do
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@PGBIN@|$PGBIN|g" "$HERE/systemd/$unit.service" \
    > "$PREFIX/etc/systemd/system/$unit.service"
done

wait_port() { # host:port, seconds
  local hp="$1" n="${2:-60}"
  for _ in $(seq 1 $((n * 10))); do
    (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Start a unit without systemd: its ExecStart (with ${VAR}s from its EnvironmentFile), as its User.
start_direct() {
  local unit="$1" file="$PREFIX/etc/systemd/system/$1.service" exec user
  exec="$(sed -n 's/^ExecStart=//p' "$file")"
  user="$(sed -n 's/^User=//p' "$file")"
  local -a argv
  eval "argv=($exec)"
  local -a run=(setsid)
  [[ -n "$user" && "$user" != root ]] && run+=(runuser -u "$user" --)
  # Environment= lines, and the state directory systemd would create.
  local -a envs=()
  while IFS= read -r kv; do envs+=("$kv"); done < <(sed -n 's/^Environment=//p' "$file")
  ((${#envs[@]})) && run+=(env "${envs[@]}")
  local state
  state="$(sed -n 's/^StateDirectory=//p' "$file")"
  [[ -n "$state" ]] && install -d -o "${user:-root}" "$PREFIX/var/lib/$state"
  touch "$LOG/$unit.log"; chmod 0666 "$LOG/$unit.log"
  "${run[@]}" "${argv[@]}" >>"$LOG/$unit.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$unit.pid"
  say "started $unit (pid $!): ${argv[*]}"
}

for unit in $UNITS; do
  if ((SYSTEMD)); then
    systemctl daemon-reload
    systemctl enable --now "$unit"
  else
    start_direct "$unit"
  fi
  case "$unit" in
    wolf-nats) wait_port "127.0.0.1:$NATS_PORT" 30 || die "nats-server did not start (see $LOG)" ;;
    wolf-postgres)
      wait_port "127.0.0.1:$WOLF_PG_PORT" 60 || die "PostgreSQL did not start (see $LOG)"
      for _ in $(seq 1 100); do runuser -u postgres -- "$PGBIN/psql" -h 127.0.0.1 -p "$WOLF_PG_PORT" -U postgres -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
      ;;
    wolf-s3) wait_port "127.0.0.1:$WOLF_S3_PORT" 30 || die "the S3 server did not start (see $LOG)" ;;
    wolf-api) wait_port "$(echo "$WOLF_API_LISTEN" | sed 's/^0.0.0.0/127.0.0.1/')" 60 || die "wolf api did not start (see $LOG)" ;;
    wolf-manager) wait_port "$(echo "$WOLF_MANAGER_LISTEN" | sed 's/^0.0.0.0/127.0.0.1/')" 60 || die "wolf manager did not start (see $LOG)" ;;
  esac
  if [[ "$unit" == wolf-postgres && "$ROLE" == single ]] || [[ "$ROLE" == api && "${WOLF_MIGRATE:-0}" == 1 ]] ; then
    for i in $(seq 1 60); do
      "$PREFIX/usr/local/bin/wolf" migrate >/dev/null 2>&1 && break
      [[ $i == 60 ]] && die "wolf migrate failed"
      sleep 1
    done
    say "schema migrated"
  fi
done

# --- monitoring ---------------------------------------------------------------------------
if [[ "$ROLE" == monitoring ]]; then
  install -d /etc/prometheus /var/lib/wolf/dashboards /etc/grafana/provisioning/dashboards /etc/grafana/provisioning/datasources
  targets() { echo "$1" | tr ',' '\n' | sed '/^$/d; s/.*/          - "&"/'; }
  {
    echo "# Written by deploy/install.sh from dashboards/prometheus.yml."
    echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
    echo "scrape_configs:"
    echo "  - job_name: wolf-api"
    echo "    static_configs:"
    echo "      - targets:"
    targets "${WOLF_API_TARGETS:-}"
    echo "  - job_name: wolf-manager"
    echo "    static_configs:"
    echo "      - targets:"
    targets "${WOLF_MANAGER_TARGETS:-}"
  } > /etc/prometheus/prometheus.yml
  cp "$SRC/dashboards/"*.json /var/lib/wolf/dashboards/
  cp "$SRC/dashboards/provisioning/dashboards/"*.yaml /etc/grafana/provisioning/dashboards/
  cp "$SRC/dashboards/provisioning/datasources/"*.yaml /etc/grafana/provisioning/datasources/
  if ((SYSTEMD)); then systemctl restart prometheus || true; fi
fi
say "role $ROLE installed under ${PREFIX:-/}"
