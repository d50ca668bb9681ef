#!/usr/bin/env bash
# Chappie local stack without Docker: a Prefect server and an MLflow server on 127.0.0.1,
# every byte of their state under one folder.
#
#   infra/local-stack.sh start  [DIR]   start both servers (idempotent), print URLs and exports
#   infra/local-stack.sh stop   [DIR]   stop both servers (TERM, then KILL after a grace period)
#   infra/local-stack.sh status [DIR]   report which servers run and answer
#   infra/local-stack.sh env    [DIR]   print only the export lines (eval "$(... env)")
#
# DIR defaults to $CHAPPIE_STACK_DIR or ./stack. Layout under DIR:
#   prefect/prefect.db        Prefect server database (SQLite); PREFECT_HOME=DIR/prefect
#   mlflow/mlflow.db          MLflow backend store (SQLite)
#   mlflow/artifacts/         MLflow artifact store (served through the MLflow server)
#   run/{prefect,mlflow}.pid  pid of each server's process group leader
#   logs/{prefect,mlflow}.log server logs
#
# Ports: PREFECT_PORT (default 4200), MLFLOW_PORT (default 5000). Binaries come from the
# project's .venv when present, else from PATH (override with CHAPPIE_BIN=/path/to/bin).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-status}"
dir="${2:-${CHAPPIE_STACK_DIR:-./stack}}"
prefect_port="${PREFECT_PORT:-4200}"
mlflow_port="${MLFLOW_PORT:-5000}"
host=127.0.0.1
start_timeout="${CHAPPIE_STACK_TIMEOUT:-90}"

if [[ -n "${CHAPPIE_BIN:-}" ]]; then
  bin="$CHAPPIE_BIN"
elif [[ -x "$here/../.venv/bin/prefect" ]]; then
  bin="$(cd "$here/../.venv/bin" && pwd)"
else
  bin="$(dirname "$(command -v prefect || echo /usr/bin/prefect)")"
fi

die() { echo "local-stack: $*" >&2; exit 1; }

case "$cmd" in
  start|stop|status|env) ;;
  *) die "usage: $0 start|stop|status|env [DIR]" ;;
esac
[[ "$cmd" == start ]] && mkdir -p "$dir"
dir="$(realpath -m "$dir")"   # status/stop/env never create the folder
run="$dir/run"
logs="$dir/logs"

# A started stack remembers its ports; later commands reuse them unless overridden.
if [[ -f "$run/ports" && -z "${PREFECT_PORT:-}${MLFLOW_PORT:-}" ]]; then
  # shellcheck disable=SC1091
  source "$run/ports"
fi

prefect_url="http://$host:$prefect_port/api"
mlflow_url="http://$host:$mlflow_port"

print_env() {
  echo "export PREFECT_API_URL=$prefect_url"
  echo "export MLFLOW_TRACKING_URI=$mlflow_url"
}

# pid of a running server, or nothing
running_pid() {
  local f="$run/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
  fi
}

# true when something answers HTTP 200 at the URL
answers() {
  "$bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

port_free() {
  "$bin/python" - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# start NAME HEALTH_URL PORT CMD...: detached in its own session (process group) so stop
# reaches every child (uvicorn workers) with one signal.
start_one() {
  local name="$1" health="$2" port="$3"; shift 3
  local pid
  pid="$(running_pid "$name")"
  if [[ -n "$pid" ]]; then
    echo "$name: already running (pid $pid)"
    return 0
  fi
  port_free "$port" || die "$name: port $port on $host is in use by another process (set ${name^^}_PORT)"
  mkdir -p "$run" "$logs"
  setsid "$@" >>"$logs/$name.log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$run/$name.pid"
  local waited=0
  until answers "$health"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$run/$name.pid"
      tail -n 30 "$logs/$name.log" >&2 || true
      die "$name: exited during start-up (log: $logs/$name.log)"
    fi
    if (( waited >= start_timeout )); then
      stop_one "$name"
      die "$name: no answer at $health after ${start_timeout}s (log: $logs/$name.log)"
    fi
    sleep 1; waited=$((waited + 1))
  done
  echo "$name: started (pid $pid) in ${waited}s"
}

stop_one() {
  local name="$1" pid waited=0
  pid="$(running_pid "$name")"
  if [[ -z "$pid" ]]; then
    rm -f "$run/$name.pid"
    echo "$name: not running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null || pgrp_alive "$pid"; do
    if (( waited >= 20 )); then
      kill -KILL -- "-$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5; waited=$((waited + 1))
  done
  rm -f "$run/$name.pid"
  echo "$name: stopped"
}

# true while any process of the group led by $1 remains
pgrp_alive() {
  [[ -n "$(ps -o pid= -g "$1" 2>/dev/null)" ]]
}

status_one() {
  local name="$1" health="$2" pid
  pid="$(running_pid "$name")"
  if [[ -z "$pid" ]]; then
    echo "$name: stopped"
    return 1
  fi
  if answers "$health"; then
    echo "$name: running (pid $pid) at ${health%/health}"
  else
    echo "$name: process $pid alive but not answering at $health"
    return 1
  fi
}

start_mlflow() {
  mkdir -p "$dir/mlflow/artifacts"
  start_one mlflow "$mlflow_url/health" "$mlflow_port" \
    "$bin/mlflow" server --host "$host" --port "$mlflow_port" \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$dir/mlflow/mlflow.db}" \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$dir/mlflow/artifacts}" \
    --workers 1
}

case "$cmd" in
  start)
    mkdir -p "$run"
    printf 'prefect_port=%s\nmlflow_port=%s\n' "$prefect_port" "$mlflow_port" > "$run/ports"
    (
      export PREFECT_HOME="$dir/prefect"
      export PREFECT_API_DATABASE_CONNECTION_URL="${PREFECT_API_DATABASE_CONNECTION_URL:-sqlite+aiosqlite:///$dir/prefect/prefect.db}"
      export PREFECT_SERVER_ANALYTICS_ENABLED=false
      export PREFECT_API_URL="$prefect_url"
      mkdir -p "$dir/prefect"
      start_one prefect "$prefect_url/health" "$prefect_port" \
        "$bin/prefect" server start --host "$host" --port "$prefect_port"
    )
    start_mlflow
    echo
    echo "Prefect UI:  http://$host:$prefect_port"
    echo "MLflow UI:   $mlflow_url"
    echo "State under: $dir"
    echo
    echo "# export these in your shell (or: eval \"\$($0 env $dir)\"):"
    print_env
    ;;
  stop)
    stop_one mlflow
    stop_one prefect
    ;;
  status)
    rc=0
    status_one prefect "$prefect_url/health" || rc=1
    status_one mlflow "$mlflow_url/health" || rc=1
    exit "$rc"
    ;;
  env)
    print_env
    ;;
  *)
    die "usage: $0 start|stop|status|env [DIR]"
    ;;
esac
