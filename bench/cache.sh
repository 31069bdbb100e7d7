#!/usr/bin/env bash
# Benchmark of the durable cache (not a test): memory while serving a large snapshot to many
# clients at once, and start-up time with about 1 GB cached and the origin down.
#
#   bench/cache.sh [SNAPSHOT_SIZE] [CLIENTS]      defaults: 500MiB 50
#
# Builds the release binary, runs the demo origin with a large repository on loopback, and
# prints a markdown table for docs/benchmarks.md.
set -euo pipefail
size=${1:-500MiB}
clients=${2:-50}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -q
bin=$top/target/release/rrdp-proxy
. "$top/scripts/lib.sh"
lib_setup cache
ORIGIN=127.0.0.1:3101 PORT=8181 ADMIN=127.0.0.1:9191

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
wait_healthy() {
  for _ in $(seq 1 6000); do
    curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "never healthy" >&2; return 1
}

"$bin" demo --listen $ORIGIN --interval 1h --snapshot-size "$size" --deltas 150 >"$work/origin.log" 2>&1 &
origin=$!; pids+=("$origin")
for _ in $(seq 1 1200); do curl -sf "http://$ORIGIN/rrdp/notification.xml" >/dev/null 2>&1 && break; sleep 0.1; done

cat > "$work/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
admin_listen = "$ADMIN"
threads = 2
[cache]
dir = "$work/cache"
memory_limit = "256MiB"
[[repository]]
public = "http://127.0.0.1:$PORT/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "1h"
EOF

start=$(date +%s.%N)
RUST_LOG=warn "$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
proxy=$!; pids+=("$proxy")
wait_healthy
first_sync=$(echo "$(date +%s.%N) - $start" | bc)
rest_rss=$(rss_kib $proxy)

snap=$(curl -sf "http://127.0.0.1:$PORT/rrdp/notification.xml" | grep -o '<snapshot uri="[^"]*"' | cut -d'"' -f2)
snap_bytes=$(curl -sfI "$snap" | awk 'tolower($1)=="content-length:" {print $2+0}')

# $clients concurrent downloads of the snapshot; sample RSS while they run.
peak=0
t0=$(date +%s.%N)
for _ in $(seq 1 "$clients"); do curl -sf -o /dev/null "$snap" & done
while [ "$(jobs -rp | grep -vc -e "^$origin$" -e "^$proxy$")" -gt 0 ]; do
  r=$(rss_kib $proxy); [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.1
done
t1=$(date +%s.%N)
elapsed=$(echo "$t1 - $t0" | bc)
throughput=$(echo "scale=0; $snap_bytes * $clients / $elapsed / 1048576" | bc)

# About 1 GB cached: a second serial brings a new snapshot, the old one stays (retain).
curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
want=$(curl -sf "http://$ORIGIN/rrdp/notification.xml" | grep -m1 -o 'serial="[0-9]*"' | tr -dc 0-9)
for _ in $(seq 1 1200); do
  curl -sf -X POST "http://$ADMIN/refresh" >/dev/null
  before=$(curl -sf "http://$ADMIN/status" | grep -o '"serial": [0-9]*' | tr -dc 0-9)
  [ "$before" = "$want" ] && break
  sleep 0.25
done
cached_mb=$(du -sm "$work/cache" | cut -f1)
kill $proxy; wait $proxy 2>/dev/null || true
kill $origin; wait $origin 2>/dev/null || true

# Start-up with the origin down: until the stored generation is verified and served.
start=$(date +%s.%N)
RUST_LOG=warn "$bin" --config "$work/proxy.toml" >>"$work/proxy.log" 2>&1 &
proxy=$!; pids+=("$proxy")
wait_healthy
startup=$(echo "$(date +%s.%N) - $start" | bc)
startup_rss=$(rss_kib $proxy)

cat <<EOF
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)
Command: bench/cache.sh $size $clients

| figure | value |
|---|---|
| snapshot size | $((snap_bytes / 1048576)) MiB (+150 deltas of 1 KiB–1 MiB) |
| first sync (fetch, verify, store, publish) | $(printf '%.1f' "$first_sync") s |
| RSS at rest, repository cached | $((rest_rss / 1024)) MiB |
| peak RSS, $clients clients downloading the snapshot at once | $((peak / 1024)) MiB |
| aggregate throughput to those clients | $throughput MiB/s |
| cache on disk at restart | $cached_mb MiB (serial $before) |
| start-up with the origin down, until /healthz is 200 | $(printf '%.2f' "$startup") s |
| RSS after start-up | $((startup_rss / 1024)) MiB |
EOF
