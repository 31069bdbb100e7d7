#!/usr/bin/env bash
# Load: 2,000 concurrent clients on loopback poll the notification and fetch the deltas it
# lists (now and then the snapshot) while the origin publishes a serial a second, dies, and
# comes back (as a new session). Passes when no referenced file failed, the proxy's peak RSS
# stayed under LIMIT_MIB, and its open file descriptors returned to where they were.
#
#   tests/load/run.sh [path/to/rrdp-proxy]      (env: CLIENTS=2000 DURATION=40 LIMIT_MIB=512)
set -euo pipefail
bin=$(realpath "${1:-target/release/rrdp-proxy}")
here=$(cd "$(dirname "$0")" && pwd)
CLIENTS=${CLIENTS:-2000}
DURATION=${DURATION:-40}
LIMIT_MIB=${LIMIT_MIB:-512}
. "$here/../../scripts/lib.sh"
lib_setup load
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
origin=$(free_port); port=$(free_port); admin=$(free_port)

start_origin() {
  "$bin" demo --listen "127.0.0.1:$origin" --interval 1s >>"$work/origin.log" 2>&1 &
  origin_pid=$!
  pids+=("$origin_pid")
}
cat >"$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
admin_listen = "127.0.0.1:$admin"
threads = 2
[cache]
dir = "$work/cache"
[log]
access = "off"
[[repository]]
public = "http://127.0.0.1:$port/rrdp/"
upstream = "http://127.0.0.1:$origin/rrdp/"
poll_interval = "1s"
TOML

start_origin
"$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null && break
  kill -0 "$proxy" || { cat "$work/proxy.log"; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null || { cat "$work/proxy.log"; log "never healthy"; exit 1; }
fds() { find "/proc/$proxy/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$proxy/status"; }
fds_before=$(fds)
rss_before=$(rss_kib)
log "proxy up (pid $proxy, $fds_before fds, $((rss_before / 1024)) MiB); $CLIENTS clients for ${DURATION}s"

# Peak RSS, sampled every 200 ms while the load runs.
( peak=0; while kill -0 "$proxy" 2>/dev/null; do r=$(rss_kib || echo 0); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$work/peak"; sleep 0.2; done ) &
pids+=($!)
python3 "$here/clients.py" "$port" "$CLIENTS" "$DURATION" >"$work/clients.json" &
clients=$!

# The scenario's timeline (what happens when, not a wait for an event): the origin dies a
# third of the way in and comes back at two thirds, as a new session.
sleep $((DURATION / 3))
log "origin down"
kill "$origin_pid"; wait "$origin_pid" 2>/dev/null || true
stale=$(curl -s "http://127.0.0.1:$admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["repositories"][0]["serial"])')
sleep $((DURATION / 3))
log "origin up again (serving serial $stale meanwhile)"
start_origin
wait "$clients"

# Every client connection is closed now; the proxy's descriptors must come back down (pooled
# upstream connections close after their idle time, so allow a few).
fds_after=$(fds)
for _ in $(seq 1 150); do
  fds_after=$(fds)
  [ "$fds_after" -le $((fds_before + 4)) ] && break
  sleep 0.1
done
peak_kib=$(cat "$work/peak")
serial_after=$(curl -s "http://127.0.0.1:$admin/status" | python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; print(r["session_id"], r["serial"])')
python3 - "$work/clients.json" "$fds_before" "$fds_after" "$rss_before" "$peak_kib" "$LIMIT_MIB" "$serial_after" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
fds_before, fds_after, rss_before, peak, limit = map(int, sys.argv[2:7])
print(f"| clients | notifications | files | failed files | notification errors | reconnects | fds before/after | RSS start / peak |")
print(f"|---|---|---|---|---|---|---|---|")
print(f"| {s['clients']} | {s['notifications']} | {s['files']} | {s['failures']} | {s['notification_errors']} | {s['reconnects']} | {fds_before} / {fds_after} | {rss_before//1024} / {peak//1024} MiB |")
print(f"published after the run: {sys.argv[7]}")
ok = True
if s["failures"]:
    print("FAIL: referenced files failed:", s["examples"]); ok = False
if s["notifications"] < s["clients"] or s["files"] < s["clients"]:
    print("FAIL: too little load got through"); ok = False
if peak // 1024 > limit:
    print(f"FAIL: peak RSS {peak//1024} MiB over {limit} MiB"); ok = False
if fds_after > fds_before + 4:
    print(f"FAIL: {fds_after - fds_before} file descriptors more than before"); ok = False
print("load: passed" if ok else "load: FAILED")
sys.exit(0 if ok else 1)
PY
