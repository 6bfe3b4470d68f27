#!/usr/bin/env bash
# Distributed queries on one machine: `kubestep analyze` (every section) and `analyze causality`
# on the local engine, then on a stock Ballista 55 cluster with one executor and with two, from
# the local directory and from an S3-compatible bucket (moto on loopback), in one run.
#
#   bash benches/ballista.sh [RECORDING [SESSION]]
#
# RECORDING defaults to a fresh `mixed` recording of KUBESTEP_BENCH_EVENTS (1,000,000) events in
# session `bench`. Each executor gets one core (`taskset`) and one task slot, so "two executors"
# is twice the compute of "one", as two machines would be; the client (`kubestep`) and the
# scheduler share the machine with them. Every figure is the median of 3 wall times, process start
# included. Needs the release binary (`cargo build --release`), moto as `.ci/test` installs it, and
# Ballista binaries: `.ci/test` builds its own at opt-level 1, enough for the tests but not for
# figures, so install default-release ones elsewhere for a benchmark
# (`cargo install --locked --root DIR ballista-scheduler@55.0.0 ballista-executor@55.0.0`) and
# point KUBESTEP_BALLISTA_BIN at DIR/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$HOME/.cache/kubestep-target}"
kubestep="$target/release/kubestep"
bin="${KUBESTEP_BALLISTA_BIN:-$HOME/.cache/kubestep-ballista/bin}"
moto="${KUBESTEP_MOTO_SERVER:-$HOME/.cache/kubestep-moto/bin/moto_server}"
for program in "$kubestep" "$bin/ballista-scheduler" "$bin/ballista-executor" "$moto"; do
  [ -x "$program" ] || { echo "missing $program (cargo build --release; bash .ci/test installs the rest)" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

data="${1:-}"
session="${2:-bench}"
if [ -z "$data" ]; then
  data="$work/recording"
  echo "== generating ${KUBESTEP_BENCH_EVENTS:-1000000} events of the mixed scenario"
  "$kubestep" simulate --scenario mixed --seed 1 --events "${KUBESTEP_BENCH_EVENTS:-1000000}" --out "$work/mixed.log"
  "$kubestep" import -q -d "$data" --session "$session" "$work/mixed.log" >/dev/null
  rm "$work/mixed.log"
fi
data="$(cd "$data" && pwd)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The bucket: the same files uploaded as they are.
s3_port=$(free_port)
"$moto" -H 127.0.0.1 -p "$s3_port" >/dev/null 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
until curl -sf -X PUT "$AWS_ENDPOINT/bench" >/dev/null; do sleep 0.2; done
python3 - "$data" "$AWS_ENDPOINT" <<'EOF'
import os, sys, urllib.request
root, endpoint = sys.argv[1], sys.argv[2]
for base, _, files in os.walk(root):
    for name in files:
        path = os.path.join(base, name)
        key = "rec/" + os.path.relpath(path, root)
        with open(path, "rb") as f:
            # An explicit type: urllib's default (a form) makes the server parse the body as one.
            request = urllib.request.Request(f"{endpoint}/bench/{key}", data=f.read(), method="PUT",
                                             headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request).read()
EOF
bucket="s3://bench/rec"

scheduler_port=$(free_port)
"$bin/ballista-scheduler" --bind-host 127.0.0.1 --external-host 127.0.0.1 --bind-port "$scheduler_port" \
  --task-distribution round-robin >"$work/scheduler.log" 2>&1 &
pids+=($!)
engine="ballista://127.0.0.1:$scheduler_port"

start_executor() { # N CORE
  local ports=($(free_port) $(free_port) $(free_port))
  mkdir -p "$work/executor-$1"
  taskset -c "$2" "$bin/ballista-executor" --scheduler-host 127.0.0.1 --scheduler-port "$scheduler_port" \
    --bind-host 127.0.0.1 --external-host 127.0.0.1 --bind-port "${ports[0]}" --bind-grpc-port "${ports[1]}" \
    --bind-health-port "${ports[2]}" --vcores 1 --scheduler-connect-timeout-seconds 30 --work-dir "$work/executor-$1" >"$work/executor-$1.log" 2>&1 &
  pids+=($!)
}
wait_executors() { # COUNT
  until [ "$(curl -sf "http://127.0.0.1:$scheduler_port/api/executors" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" = "$1" ]; do
    sleep 0.2
  done
}

# median WHAT ARGS...: the median wall time of 3 runs, in seconds.
median() {
  local times=()
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N)
    "$kubestep" "$@" >/dev/null
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}

declare -A seconds
measure() { # LABEL ENGINE DATA
  seconds["$1 analyze"]=$(median analyze "$session" -d "$3" --engine "$2")
  seconds["$1 causality"]=$(median analyze causality --session "$session" -d "$3" --engine "$2")
}

echo "== local engine"
measure "local/dir" local "$data"
measure "local/s3" local "$bucket"
echo "== one executor"
start_executor 1 0
wait_executors 1
measure "1 executor/dir" "$engine" "$data"
measure "1 executor/s3" "$engine" "$bucket"
echo "== two executors"
start_executor 2 1
wait_executors 2
measure "2 executors/dir" "$engine" "$data"
measure "2 executors/s3" "$engine" "$bucket"

ratio() { echo "scale=2; $1 / $2" | bc; }
printf '\n%-18s %-10s %10s %10s %12s\n' engine command directory bucket bucket/dir
for label in local "1 executor" "2 executors"; do
  for command in analyze causality; do
    dir=${seconds["$label/dir $command"]}
    s3=${seconds["$label/s3 $command"]}
    printf '%-18s %-10s %9.2fs %9.2fs %11sx\n' "$label" "$command" "$dir" "$s3" "$(ratio "$s3" "$dir")"
  done
done
echo
for command in analyze causality; do
  one=${seconds["1 executor/dir $command"]}
  two=${seconds["2 executors/dir $command"]}
  local_s=${seconds["local/dir $command"]}
  echo "$command: 1 -> 2 executors $(ratio "$one" "$two")x faster; 2 executors vs local $(ratio "$two" "$local_s")x the time"
done
