#!/usr/bin/env bash
# A reliability soak: the real exporter under steady TCP churn, with the collector down
# for the middle half of the run and the spool's filesystem full for part of that
# outage. At the end every record of the churn must be in the collector's output once,
# or counted by a policy drop of the exporter (docs/reliability.md).
#
#   benches/soak.sh [DURATION_S] [CONN_PER_S]      (as root; defaults 600 s, 5000 conn/s)
#
# Each loopback connection yields two records (client and server socket), so 5,000
# connections/s is 10,000 records/s. Timeline (fractions of DURATION_S):
#   0.25  collector stopped          0.40  spool filesystem filled (a filler file)
#   0.50  filler removed             0.75  collector started again
# then the churn ends, the exporter drains its spool, metrics are read, and it is
# stopped with SIGTERM (anything it leaves spooled is sent by a second, short run).
# Exits non-zero when a churn record is missing without being counted by a policy
# drop, when anything was dropped for another reason, when a record arrived twice, when
# the exporter died or exited non-zero, or when the churn fell short of its rate.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
duration=${1:-600}
rate=${2:-5000}
connections=$((duration * rate))
work=${SOAK_DIR:-/tmp/flowexporter-soak}
spool_mb=${SOAK_SPOOL_MB:-256}
port=${SOAK_PORT:-19000}
metrics_port=${SOAK_METRICS_PORT:-19090}
window=${SOAK_WINDOW:-60s}

if [ -z "${SOAK_NO_BUILD:-}" ]; then
  cargo build --release -p flowexporter-bin -p flowexporter-loadgen >&2
  cargo build --release -p flowcollector >&2
fi
bin=target/release

cleanup() {
  set +e
  [ -n "${exporter_pid:-}" ] && kill "$exporter_pid" 2>/dev/null
  [ -n "${collector_pid:-}" ] && kill "$collector_pid" 2>/dev/null
  [ -n "${churn_pid:-}" ] && kill "$churn_pid" 2>/dev/null
  wait 2>/dev/null
  mountpoint -q "$work/spool" && umount "$work/spool"
}
trap cleanup EXIT

rm -rf "$work"
mkdir -p "$work/spool" "$work/journal"
mount -t tmpfs -o "size=${spool_mb}m" tmpfs "$work/spool"

log() { printf '[%s %4ss] %s\n' "$(date -u +%H:%M:%S)" "$SECONDS" "$*" >&2; }

start_collector() {
  "$bin/flowcollector" --listen "127.0.0.1:$port" --out "$work/out.jsonl" --hold-back 5s \
    >>"$work/collector.log" 2>&1 &
  collector_pid=$!
}

metric() { # sum of a metric family's samples in the last scrape
  awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }' "$work/metrics.txt"
}

start_exporter() { # $1: how many "tracing" lines the log holds once this one runs
  "$bin/flowexporter" run --collector "http://127.0.0.1:$port" --window "$window" \
    --spool-dir "$work/spool" --journal-dir "$work/journal" \
    --metrics-addr "127.0.0.1:$metrics_port" >>"$work/exporter.log" 2>&1 &
  exporter_pid=$!
  for _ in $(seq 100); do
    [ "$(grep -c "tracing TCP closes" "$work/exporter.log")" -ge "$1" ] && return
    sleep 0.1
  done
  echo "FAIL: the exporter did not start; see $work/exporter.log" >&2
  exit 1
}

alive() {
  kill -0 "$exporter_pid" 2>/dev/null || { echo "FAIL: the exporter died ($1)" >&2; exit 1; }
}

stop_exporter() {
  kill -TERM "$exporter_pid"
  local status=0
  wait "$exporter_pid" || status=$?
  exporter_pid=
  [ "$status" -eq 0 ] || { echo "FAIL: the exporter exited with status $status" >&2; exit 1; }
}

at() { while [ "$SECONDS" -lt "$1" ]; do sleep 1; done; }

SECONDS=0
start_collector
start_exporter 1
log "exporter running; churn of $connections connections at $rate/s, window $window"
"$bin/flowexporter-loadgen" churn --connections "$connections" --rate "$rate" \
  >"$work/churn.txt" 2>&1 &
churn_pid=$!

at $((duration / 4)); alive "before the outage"
kill "$collector_pid"; wait "$collector_pid" || true; collector_pid=
log "collector stopped"
at $((duration * 2 / 5)); alive "during the outage"
fill_mb=$(df -m --output=avail "$work/spool" | tail -1)
dd if=/dev/zero of="$work/spool/filler" bs=1M count="$fill_mb" status=none 2>/dev/null || true
log "spool filesystem filled ($(df -h --output=avail "$work/spool" | tail -1 | tr -d ' ') left)"
at $((duration / 2)); alive "with the disk full"
rm -f "$work/spool/filler"
log "filler removed"
at $((duration * 3 / 4)); alive "after the disk full"
start_collector
log "collector started again"
wait "$churn_pid"; churn_pid=
alive "after the churn"
log "churn done: $(tail -1 "$work/churn.txt")"

# Drain: until nothing is spooled or held in memory (the metrics scrapes are TCP
# connections too, so the batcher is never quite empty).
drained=
for _ in $(seq 120); do
  alive "while draining"
  curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" \
    || { echo "FAIL: the metrics endpoint does not answer" >&2; exit 1; }
  if [ "$(metric flowexporter_spool_files)" -eq 0 ] && [ "$(metric flowexporter_sink_memory_chunks)" -eq 0 ]; then
    drained=1
    break
  fi
  sleep 5
done
[ -n "$drained" ] || { echo "FAIL: the spool did not drain in 600 s" >&2; exit 1; }
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt"
stop_exporter
log "exporter stopped: $(grep -o 'stopped.*' "$work/exporter.log" | tail -1 | cut -c1-160)"
left=$(find "$work/spool" -maxdepth 1 -name '*.chunk' | wc -l)
if [ "$left" -gt 0 ]; then
  log "$left chunks left spooled at the stop: a second run sends them"
  start_exporter 2
  for _ in $(seq 60); do
    [ "$(find "$work/spool" -maxdepth 1 -name '*.chunk' | wc -l)" -eq 0 ] && break
    sleep 1
  done
  stop_exporter
fi
sleep 2
kill "$collector_pid"; wait "$collector_pid" || true; collector_pid=

server_port=$(grep -o 'server port [0-9]*' "$work/churn.txt" | awk '{print $3}')
made=$(awk '/connections in/ {print $1}' "$work/churn.txt")
achieved=$(awk '/connections in/ {print $6}' "$work/churn.txt")
python3 "$here/soak_account.py" "$work" "$made" "$server_port" "$achieved" "$rate"
