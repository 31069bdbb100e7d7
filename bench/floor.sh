#!/usr/bin/env bash
# The floors under the small-file hit path (issue 31): rrdp-proxy against nginx serving the
# same files statically, beside two servers that answer the same bytes and do nothing else
# (examples/floor.rs): a bare tokio loop (read, one write of the prebuilt response: below it
# there is only the kernel) and a stock pingora HttpServerApp (pingora's own per-request
# cost). Where the tokio floor itself is under a goal, no change in user space reaches it.
#
#   bench/floor.sh                     defaults: ROUNDS=6 DURATION=4 SIZE=20MiB DELTAS=150
#
# Sets up the demo origin, rrdp-proxy (one worker thread, access log off) and nginx serving
# rrdp-proxy's own export of the repository (sendfile, tcp_nopush, open_file_cache; one
# worker); the floor servers answer with the exact response rrdp-proxy gives (its header and
# body). For the notification (30 KB) and the smallest delta, each round runs
# `wrk -t1 -c64` on each server in turn; servers are pinned to core 0, wrk to core 1.
# Prints per path the median req/s, CPU per request of each server and of wrk, and each
# against nginx static. Needs nginx, wrk, curl, python3. Not a test: nothing fails on a figure.
set -euo pipefail
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-4}
SIZE=${SIZE:-20MiB}
DELTAS=${DELTAS:-150}
[ "$(nproc)" -ge 2 ] || { echo "needs two cores: servers on one, wrk on the other" >&2; exit 1; }
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -q --bin rrdp-proxy --example floor
bin=$top/target/release/rrdp-proxy
floor=$top/target/release/examples/floor
. "$top/scripts/lib.sh"
lib_setup floor
extra_cleanup() { [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; }
cores=$(nproc)
taskset -pc 1 $$ >/dev/null
ORIGIN=127.0.0.1:3411 PROXY=18480 ADMIN=127.0.0.1:19480 STATIC=28480 TOKIO=28481 PINGORA=28482

start_demo "$bin" "$ORIGIN" 120 --interval 24h --snapshot-size "$SIZE" --deltas "$DELTAS"
mkdir -p "$work/proxy"
cat > "$work/proxy/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$PROXY"]
admin_listen = "$ADMIN"
threads = 1
upgrade_sock = "$work/proxy/upgrade.sock"
[cache]
dir = "$work/proxy/cache"
memory_limit = "256MiB"
[[repository]]
public = "http://127.0.0.1:$PROXY/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "10s"
[log]
level = "warn"
access = "off"
EOF
taskset -c 0 "$bin" --config "$work/proxy/proxy.toml" >"$work/proxy/log" 2>&1 &
proxy_pid=$!; pids+=("$proxy_pid")

export_static "$bin" "$ORIGIN" "$STATIC"
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$STATIC;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    location /rrdp/ { alias $work/static/; }
  }
}
EOF
taskset -c 0 nginx -c "$work/nginx/nginx.conf"
for _ in $(seq 1 2400); do
  curl -sf "http://$ADMIN/status" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; sys.exit(not r["serial"] or r.get("compressed_serial", r["serial"]) != r["serial"])' && break
  sleep 0.05
done
notif=$(curl -sf "http://127.0.0.1:$PROXY/rrdp/notification.xml")
small=$(for p in $(grep -o '<delta [^>]*' <<<"$notif" | grep -o 'uri="[^"]*"' | cut -d'"' -f2 | sed 's#^http://[^/]*##'); do
  printf '%s %s\n' "$(curl -sf "http://127.0.0.1:$PROXY$p" | wc -c)" "$p"
done | sort -n | head -n 1 | cut -d' ' -f2)
NGINX_PIDS=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" -f "worker process")
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
# run PORT PATH PID...: prints "req/s cpu-µs/request wrk-cpu-µs/request" (the server's
# user + system time, and the load generator's, over the requests served)
run() {
  local port=$1 path=$2; shift 2
  local c0; c0=$(cpu_ticks "$@")
  # wrk's own CPU (user and system seconds), from bash's `time`.
  local TIMEFORMAT='%U %S'
  { time taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$port$path" >"$work/wrk.out"; } 2>"$work/wrk.time"
  local w; w=$(awk -v hz="$(getconf CLK_TCK)" '{print ($1 + $2) * hz}' "$work/wrk.time")
  local c1; c1=$(cpu_ticks "$@")
  awk -v ticks=$((c1 - c0)) -v wticks="$w" -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%.0f %.1f %.1f\n", r, ticks / hz * 1e6 / n, wticks / hz * 1e6 / n}' "$work/wrk.out"
}

echo "Machine: $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | awk '{print $1, $2}')), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); $(nginx -v 2>&1 | cut -d/ -f2 | sed 's/^/nginx /'); wrk -t1 -c64 -d${DURATION}s; servers pinned to core 0, wrk to core 1."
echo "Command: \`ROUNDS=$ROUNDS DURATION=$DURATION SIZE=$SIZE DELTAS=$DELTAS bench/floor.sh\` ($(date +%F))"
echo
for path in /rrdp/notification.xml "$small"; do
  # The exact response rrdp-proxy gives, for the floor servers to give.
  python3 - "$PROXY" "$path" >"$work/response" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(f"GET {sys.argv[2]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
out = b""
while chunk := s.recv(65536):
    out += chunk
# As a kept-alive request gets it: pingora answers those with "Connection: keep-alive".
kept = out.replace(b"\r\nConnection: close\r\n", b"\r\nConnection: keep-alive\r\n", 1)
assert kept != out, "the response names Connection: close"
sys.stdout.buffer.write(kept)
PY
  size=$(curl -sf "http://127.0.0.1:$STATIC$path" | wc -c)
  [ "$size" = "$(curl -sf "http://127.0.0.1:$PROXY$path" | wc -c)" ] || { log "$path differs between rrdp-proxy and the export"; exit 1; }
  taskset -c 0 "$floor" tokio "127.0.0.1:$TOKIO" "$work/response" >"$work/tokio.log" 2>&1 &
  tokio_pid=$!
  taskset -c 0 "$floor" pingora "127.0.0.1:$PINGORA" "$work/response" >"$work/pingora.log" 2>&1 &
  pingora_pid=$!
  pids+=("$tokio_pid" "$pingora_pid")
  until_ok 30 curl -sf -o /dev/null "http://127.0.0.1:$TOKIO$path"
  until_ok 30 curl -sf -o /dev/null "http://127.0.0.1:$PINGORA$path"
  for port in $TOKIO $PINGORA $STATIC $PROXY; do
    [ "$(curl -sf "http://127.0.0.1:$port$path" | wc -c)" = "$size" ] || { log "port $port: wrong body for $path"; exit 1; }
  done
  : >"$work/rounds"
  for _ in $(seq 1 "$ROUNDS"); do
    # shellcheck disable=SC2086
    echo "$(run $PROXY "$path" "$proxy_pid") $(run $STATIC "$path" $NGINX_PIDS) $(run $TOKIO "$path" "$tokio_pid") $(run $PINGORA "$path" "$pingora_pid")" >>"$work/rounds"
  done
  kill "$tokio_pid" "$pingora_pid"; wait "$tokio_pid" "$pingora_pid" 2>/dev/null || true
  python3 - "$work/rounds" "$path" "$size" <<'PY'
import statistics as st, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
names = ["rrdp-proxy", "nginx static", "tokio floor", "pingora floor"]
print(f"{sys.argv[2]} ({int(sys.argv[3]):,} bytes), {len(rows)} rounds:")
print()
print("| server | req/s (median) | server CPU/req µs (median) | its core busy | wrk CPU/req µs | against nginx static, req/s (min / median / max) | against nginx static, CPU/req |")
print("|---|---|---|---|---|---|---|")
for i, name in enumerate(names):
    rs = [r[3 * i] for r in rows]
    cpu = [r[3 * i + 1] for r in rows]
    wrk = [r[3 * i + 2] for r in rows]
    ratio = sorted(r[3 * i] / r[3] for r in rows)
    cpu_ratio = st.median([r[3 * i + 1] / r[4] for r in rows])
    busy = st.median([r[3 * i] * r[3 * i + 1] / 1e6 for r in rows])
    print(f"| {name} | {st.median(rs):,.0f} | {st.median(cpu):.1f} | {busy:.2f} | {st.median(wrk):.1f} | "
          f"{ratio[0]:.2f} / {st.median(ratio):.2f} / {ratio[-1]:.2f} | {cpu_ratio:.2f} |")
print()
PY
done
