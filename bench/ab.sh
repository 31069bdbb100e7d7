#!/usr/bin/env bash
# A/B of two rrdp-proxy binaries on the notification hot path, side by side with nginx: for a
# change to the serving path, "is B faster than A?" measured in one run on one machine.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY            defaults: ROUNDS=12 DURATION=4
#   ROUNDS=8 PATHQ=/rrdp/<some delta> bench/ab.sh a b
#   A_MEMORY=256MiB B_MEMORY=0 bench/ab.sh bin bin   one binary, two memory tiers
#   PATHQ=largest-delta (or smallest-delta) bench/ab.sh a b
#   A_ACCESS=off B_ACCESS=file bench/ab.sh bin bin   access log off, to stderr, or to a file
#     (`[log] access_file`); nginx's access log follows B_ACCESS (off, or to a file).
#
# Sets up the demo origin (20 MiB snapshot, 150 deltas: a 30 KB notification), A and B with
# the same configuration as bench/run.sh (one worker thread, access log off), and nginx with
# the anchor config; pins the three servers to core 0 and wrk to core 1; then alternates
# `wrk -t1 -c64` on A, B, nginx in each round. Prints, per round, req/s, p99 and CPU per
# request (the server's user + system time over the requests served), then the medians and
# the ratios B/A and B/nginx. Needs nginx, wrk, curl. Not a test: nothing fails on a figure.
set -euo pipefail
A_BIN=$(realpath "${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}")
B_BIN=$(realpath "${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}")
ROUNDS=${ROUNDS:-12}
DURATION=${DURATION:-4}
PATHQ=${PATHQ:-/rrdp/notification.xml}
A_MEMORY=${A_MEMORY:-256MiB}
B_MEMORY=${B_MEMORY:-256MiB}
A_ACCESS=${A_ACCESS:-off}
B_ACCESS=${B_ACCESS:-off}
[ "$(nproc)" -ge 2 ] || { echo "needs two cores: servers on one, wrk on the other" >&2; exit 1; }
. "$(dirname "$0")/../scripts/lib.sh"
lib_setup ab
extra_cleanup() { [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; }
ORIGIN=127.0.0.1:3311

start_demo "$B_BIN" "$ORIGIN" 60 --interval 24h --snapshot-size 20MiB --deltas 150

# The [log] table for an access-log mode: off, stderr (combined, to the process's log) or
# file (combined, [log] access_file).
log_table() {
  case $1 in
    off) printf 'level = "warn"\naccess = "off"\n' ;;
    stderr) printf 'level = "info"\naccess = "combined"\n' ;;
    file) printf 'level = "warn"\naccess = "combined"\naccess_file = "%s"\n' "$2" ;;
    *) echo "access mode $1: off, stderr or file" >&2; exit 1 ;;
  esac
}

# start_proxy NAME BINARY PORT ADMIN_PORT MEMORY_LIMIT ACCESS: prints the pid.
start_proxy() {
  mkdir -p "$work/$1"
  cat > "$work/$1/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$3"]
admin_listen = "127.0.0.1:$4"
threads = 1
upgrade_sock = "$work/$1/upgrade.sock"
[cache]
dir = "$work/$1/cache"
memory_limit = "$5"
[[repository]]
public = "http://127.0.0.1:$3/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "10s"
[log]
$(log_table "$6" "$work/$1/access.log")
EOF
  taskset -c 0 "$2" --config "$work/$1/proxy.toml" >"$work/$1/log" 2>&1 &
  echo $!
}
A_PID=$(start_proxy a "$A_BIN" 18280 19280 "$A_MEMORY" "$A_ACCESS"); pids+=("$A_PID")
B_PID=$(start_proxy b "$B_BIN" 18281 19281 "$B_MEMORY" "$B_ACCESS"); pids+=("$B_PID")
if [ "$B_ACCESS" = off ]; then nginx_access="access_log off;"; else nginx_access="access_log $work/nginx/access.log;"; fi

mkdir -p "$work/nginx/cache"
cat > "$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  $nginx_access
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy_temp;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=my_cache:10m max_size=10g inactive=60m use_temp_path=off;
  server {
    listen 127.0.0.1:28280;
    location / {
      proxy_cache my_cache;
      proxy_cache_revalidate on;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_cache_lock on;
      proxy_pass http://$ORIGIN;
    }
  }
}
EOF
taskset -c 0 nginx -c "$work/nginx/nginx.conf"
# Published, and the background gzip compression of its files done (it would eat core 0).
for port in 19280 19281; do
  for _ in $(seq 1 2400); do
    curl -sf "http://127.0.0.1:$port/status" 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; sys.exit(not r["serial"] or r.get("compressed_serial", r["serial"]) != r["serial"])' && break
    sleep 0.05
  done
done
# Every file of the repository once through each server, as clients would have it.
notif=$(curl -sf "http://$ORIGIN/rrdp/notification.xml")
files=$(grep -o '<delta [^>]*' <<<"$notif" | grep -o 'uri="[^"]*"' | cut -d'"' -f2 | sed 's#^http://[^/]*##')
for port in 18280 18281 28280; do
  for p in /rrdp/notification.xml $files; do curl -sf -o /dev/null "http://127.0.0.1:$port$p"; done
done
case $PATHQ in
  largest-delta | smallest-delta)
    sorted=$(for p in $files; do printf '%s %s\n' "$(curl -sf "http://$ORIGIN$p" | wc -c)" "$p"; done | sort -n)
    if [ "$PATHQ" = largest-delta ]; then PATHQ=$(tail -n 1 <<<"$sorted" | cut -d' ' -f2); else PATHQ=$(head -n 1 <<<"$sorted" | cut -d' ' -f2); fi
    echo "path: $PATHQ ($(curl -sf "http://$ORIGIN$PATHQ" | wc -c) bytes)"
    ;;
esac
# The worker only: the cache loader, also a child of the master, exits after a minute.
NGINX_PIDS=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" -f "worker process")

rss_kib() { local t=0; for p in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
NGINX_ALL="$(cat "$work/nginx/nginx.pid") $NGINX_PIDS"
# shellcheck disable=SC2086
echo "RSS at rest (KiB): A $(rss_kib "$A_PID") B $(rss_kib "$B_PID") nginx $(rss_kib $NGINX_ALL)"
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
# run PORT PID...: prints "req/s p99(ms) cpu-µs/request"
run() {
  local port=$1; shift
  local c0; c0=$(cpu_ticks "$@")
  taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$port$PATHQ" >"$work/wrk.out"
  local c1; c1=$(cpu_ticks "$@")
  awk -v ticks=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n = $1} /Requests\/sec/ {r = $2}
    $1 == "99%" {p = $2; if (p ~ /us$/) p = p / 1000; else if (p ~ /ms$/) p = p + 0; else p = p * 1000}
    END {printf "%.0f %.2f %.1f\n", r, p, ticks / hz * 1e6 / n}' "$work/wrk.out"
}

echo "| round | A req/s | A p99 ms | A CPU/req µs | B req/s | B p99 ms | B CPU/req µs | nginx req/s | nginx p99 ms | nginx CPU/req µs |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for i in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086
  echo "$i $(run 18280 "$A_PID") $(run 18281 "$B_PID") $(run 28280 $NGINX_PIDS)" >>"$work/rounds"
  tail -n 1 "$work/rounds" | awk '{printf "| %s |", $1; for (i = 2; i <= NF; i++) printf " %s |", $i; print ""}'
done
# shellcheck disable=SC2086
echo "RSS after the rounds (KiB): A $(rss_kib "$A_PID") B $(rss_kib "$B_PID") nginx $(rss_kib $NGINX_ALL)"
python3 - "$work/rounds" <<'PY'
import statistics as st, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
col = lambda i: [r[i] for r in rows]
med = lambda xs: st.median(xs)
print()
print("| median | A | B | nginx | B/A | B/nginx |")
print("|---|---|---|---|---|---|")
for name, i in (("req/s", 0), ("p99 ms", 1), ("CPU/req µs", 2)):
    a, b, n = col(i), col(3 + i), col(6 + i)
    print(f"| {name} | {med(a):.1f} | {med(b):.1f} | {med(n):.1f} | "
          f"{med([y / x for x, y in zip(a, b)]):.2f} | {med([y / x for x, y in zip(n, b)]):.2f} |")
PY
