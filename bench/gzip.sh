#!/usr/bin/env bash
# How long the background gzip of a new snapshot takes, for one or more rrdp-proxy binaries
# against the same demo origin: the time from the serial being published (`serial` in
# /status) to its gzip variants being made (`compressed_serial`). Each binary runs ROUNDS
# times with a fresh cache, alternating.
#
#   bench/gzip.sh BINARY...            defaults: SIZE=100MiB ROUNDS=3
#
# Prints one line per run and the median per binary. Needs curl and python3.
set -euo pipefail
SIZE=${SIZE:-100MiB}
ROUNDS=${ROUNDS:-3}
[ $# -ge 1 ] || { echo "usage: bench/gzip.sh BINARY..." >&2; exit 1; }
. "$(dirname "$0")/../scripts/lib.sh"
lib_setup gzip
ORIGIN=127.0.0.1:3541 PUBLIC=18541 ADMIN=127.0.0.1:19541

start_demo "$1" "$ORIGIN" 120 --interval 24h --snapshot-size "$SIZE" --deltas 1

field() { curl -sf "http://$ADMIN/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['repositories'][0]['$1'])" 2>/dev/null || echo None; }
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$work/cache"
    cat >"$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$PUBLIC"]
admin_listen = "$ADMIN"
upgrade_sock = "$work/upgrade.sock"
[cache]
dir = "$work/cache"
[[repository]]
public = "http://127.0.0.1:$PUBLIC/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "1h"
[log]
level = "warn"
access = "off"
TOML
    "$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
    pid=$!
    until [ "$(field serial)" != None ]; do sleep 0.02; done
    t0=$(date +%s.%N)
    until [ "$(field compressed_serial)" != None ]; do sleep 0.02; done
    t1=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$bin $(python3 -c "print(f'{$t1 - $t0:.2f}')")" | tee -a "$work/times"
  done
done
echo "median seconds from publish to gzip variants made ($SIZE snapshot):"
python3 - "$work/times" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    b, t = line.split()
    times.setdefault(b, []).append(float(t))
for b, ts in times.items():
    print(f"  {b}: {statistics.median(ts):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in ts)})")
PY
