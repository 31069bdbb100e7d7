#!/usr/bin/env bash
# rrdp-proxy against nginx with the proxy_cache setup the Krill documentation proposes, on
# the same origin (the demo Publication Server with a large repository), driven by the same
# load generator (wrk), alternating A B A B over several rounds so machine drift cancels.
# The hits (1-3) also run against a third server, C: the same nginx serving the same
# repository as static files (sendfile, open_file_cache), as krill-sync deployments do; the
# files are rrdp-proxy's own export_rrdp of it (a one-shot `rrdp-proxy sync`).
# Prints markdown for docs/benchmarks.md: each figure as the ratio rrdp-proxy/nginx with
# min/median/max over the rounds, plus absolute figures.
#
#   bench/run.sh                       defaults: ROUNDS=3 DURATION=10 SIZE=500MiB DELTAS=150
#   ROUNDS=5 DURATION=20 bench/run.sh
#   PARTS="tls" SIZE=50MiB bench/run.sh  one part only: hits (1-3, 6), storm (4), fresh (5),
#                                      tls (7), syscalls (8), idle (9); the parts with a setup
#                                      of their own run bench/growth.sh: repos (10), big (11),
#                                      disk (12)
#   LOGS=on bench/run.sh               both servers write an access log to a file (combined
#                                      format): rrdp-proxy `[log] access_file`, nginx `access_log`
#
# Needs nginx, wrk, openssl, curl and python3 (tests/e2e/run.sh or shared/lab install them);
# the tls part also h2load (Debian nghttp2-client).
# Benchmarks are not tests: nothing here fails on a slow figure.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SIZE=${SIZE:-500MiB}
DELTAS=${DELTAS:-150}
FRESH_SERIALS=${FRESH_SERIALS:-20}
# With two or more cores the servers share core 0 and the load generators run on core 1, so
# neither side steals the other's CPU and rounds vary less (PIN=0 turns this off).
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  on_server=(taskset -c 0); on_load=(taskset -c 1); pinning="servers pinned to core 0, load generators to core 1"
  # This script and all it starts (the RSS sampler, curl, the origin) stay off the servers'
  # core too: a sampler forking awk every 100 ms on core 0 was a few percent of a server.
  taskset -pc 1 $$ >/dev/null
else
  on_server=(); on_load=(); pinning="not pinned"
fi
NGINX_FRESH_SERIALS=${NGINX_FRESH_SERIALS:-3}
PARTS=${PARTS:-hits storm fresh tls syscalls idle repos big disk}
LOGS=${LOGS:-off}
part() { [[ " $PARTS " == *" $1 "* ]]; }
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -q
# 10k idle connections need as many descriptors, in both servers (they inherit this).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The parts with a setup of their own (many repositories, big snapshots, full disks).
growth=""
for p in repos big disk; do part $p && growth+=" $p"; done
if [ -n "$growth" ]; then PARTS="$growth" bench/growth.sh; fi
shared=""
for p in hits storm fresh tls syscalls idle; do part $p && shared+=" $p"; done
[ -n "$shared" ] || exit 0
bin=$top/target/release/rrdp-proxy
. "$top/scripts/lib.sh"
lib_setup bench
extra_cleanup() { [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; }

ORIGIN=127.0.0.1:3201
P_HTTP=18080 P_TLS=18443 P_ADMIN=127.0.0.1:19090
N_HTTP=28080 N_TLS=28443
N_STATIC=28081 N_STATIC_TLS=28444

#------------ TLS -----------------------------------------------------------------------------
mkdir -p "$work/tls" && cd "$work/tls"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" > ext.cnf
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext.cnf 2>/dev/null
cd "$top"

#------------ Origin, rrdp-proxy, nginx --------------------------------------------------------
log "generating a $SIZE repository with $DELTAS deltas"
"$bin" demo --listen $ORIGIN --interval 24h --snapshot-size "$SIZE" --deltas "$DELTAS" >"$work/origin.log" 2>&1 &
origin_pid=$!; pids+=("$origin_pid")
for _ in $(seq 1 1200); do curl -sf "http://$ORIGIN/rrdp/notification.xml" >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$work/proxy"
cat > "$work/proxy/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_HTTP"]
tls_listen = ["127.0.0.1:$P_TLS"]
tls_cert = "$work/tls/srv.crt"
tls_key = "$work/tls/srv.key"
admin_listen = "$P_ADMIN"
threads = 1                      # nginx: worker_processes 1
upgrade_sock = "$work/proxy/upgrade.sock"
[cache]
dir = "$work/proxy/cache"
memory_limit = "256MiB"
[[repository]]
public = "http://127.0.0.1:$P_HTTP/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "10s"
[log]
level = "warn"
$(if [ "$LOGS" = on ]; then printf 'access = "combined"\naccess_file = "%s"' "$work/proxy/access.log"; else echo 'access = "off"                   # nginx: access_log off'; fi)
EOF
"${on_server[@]}" "$bin" --config "$work/proxy/proxy.toml" >"$work/proxy/log" 2>&1 &
proxy_pid=$!; pids+=("$proxy_pid")

mkdir -p "$work/nginx/cache"
cat > "$work/nginx/nginx.conf" <<EOF
# shared/lab/nginx-anchor.conf with this run's paths and ports, and a plain listener too.
user root;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
worker_rlimit_nofile 30000;
events { worker_connections 20000; }
http {
  $(if [ "$LOGS" = on ]; then echo "access_log $work/nginx/access.log;"; else echo "access_log off;"; fi)
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy_temp;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=my_cache:10m max_size=10g inactive=60m use_temp_path=off;
  server {
    listen 127.0.0.1:$N_HTTP;
    listen 127.0.0.1:$N_TLS ssl http2;
    server_name localhost;
    ssl_certificate $work/tls/srv.crt;
    ssl_certificate_key $work/tls/srv.key;
    location / {
      proxy_cache my_cache;
      proxy_cache_revalidate on;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_cache_lock on;
      proxy_pass http://$ORIGIN;
    }
  }
  # C: the repository as static files (rrdp-proxy's export_rrdp of it), as krill-sync
  # deployments serve it.
  server {
    listen 127.0.0.1:$N_STATIC;
    listen 127.0.0.1:$N_STATIC_TLS ssl http2;
    server_name localhost;
    ssl_certificate $work/tls/srv.crt;
    ssl_certificate_key $work/tls/srv.key;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    location /rrdp/ {
      alias $work/static/;
    }
  }
}
EOF
# The static tree: rrdp-proxy's own export of the repository (its one-shot sync), written
# before anything is measured.
export_static "$bin" "$ORIGIN" "$N_STATIC"
"${on_server[@]}" nginx -c "$work/nginx/nginx.conf"
nginx_pids() { pgrep -f "nginx.*$work/nginx/nginx.conf"; pgrep -P "$(cat "$work/nginx/nginx.pid")"; }

for _ in $(seq 1 6000); do curl -sf "http://$P_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
# Then its background gzip compression of the 500 MB snapshot, which would share core 0
# with the first round.
for _ in $(seq 1 6000); do
  curl -sf "http://$P_ADMIN/status" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; sys.exit(r.get("compressed_serial", r["serial"]) != r["serial"])' && break
  sleep 0.05
done
log "rrdp-proxy published; warming nginx with the same files"
notif=$(curl -sf "http://$ORIGIN/rrdp/notification.xml")
paths=$(grep -o 'uri="[^"]*"' <<<"$notif" | cut -d'"' -f2 | sed 's#^http://[^/]*##')
for p in /rrdp/notification.xml $paths; do
  curl -sf -o /dev/null "http://127.0.0.1:$N_HTTP$p"
  curl -sf -o /dev/null "http://127.0.0.1:$P_HTTP$p"
done
snapshot=$(grep -o '<snapshot uri="[^"]*"' <<<"$notif" | cut -d'"' -f2 | sed 's#^http://[^/]*##')
# The largest delta (up to 1 MiB) and the smallest (a few KiB, like most of Krill's).
by_size=$(for p in $(grep -o '<delta [^>]*' <<<"$notif" | grep -o 'uri="[^"]*"' | cut -d'"' -f2 | sed 's#^http://[^/]*##'); do
  printf '%s %s\n' "$(curl -sfI "http://127.0.0.1:$P_HTTP$p" | awk 'tolower($1)=="content-length:" {print $2+0}')" "$p"
done | sort -n)
delta=$(tail -1 <<<"$by_size"); small=$(head -1 <<<"$by_size")
delta_size=${delta%% *}; delta=${delta#* }
small_size=${small%% *}; small=${small#* }
snap_size=$(curl -sfI "http://127.0.0.1:$P_HTTP$snapshot" | awk 'tolower($1)=="content-length:" {print $2+0}')
for p in /rrdp/notification.xml "$snapshot" "$delta" "$small"; do
  curl -sf -o /dev/null "http://127.0.0.1:$N_STATIC$p" || { log "static: $p is not in the export"; exit 1; }
done

#------------ Measuring -----------------------------------------------------------------------
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $t; }
# Samples the summed RSS of the given pids every 100 ms while a command runs; prints the peak.
peak_rss_during() { # peak_rss_during "PIDS" CMD...
  local watched=$1; shift
  "$@" & local job=$! peak=0 r
  while kill -0 $job 2>/dev/null; do r=$(rss_kib $watched); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.1; done
  wait $job
  echo $peak >"$work/peak"
}
# wrk: requests/s and p99 latency in ms.
wrk_run() { # wrk_run URL [WRK_ARGS...] -> "reqs p99ms"
  local url=$1; shift
  "${on_load[@]}" wrk -t1 -c64 -d"${DURATION}s" --latency "$@" "$url" >"$work/wrk.out" 2>&1
  local reqs p99
  reqs=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$work/wrk.out")
  echo "$reqs $p99"
}
download8() { # download8 BASEURL: 8 concurrent downloads of the snapshot; prints MiB/s
  local t0 t1 i
  t0=$(date +%s.%N)
  for i in 1 2 3 4 5 6 7 8; do "${on_load[@]}" curl -sf -o /dev/null "$1$snapshot" & done
  wait $(jobs -p | grep -v -e "^$origin_pid$" -e "^$proxy_pid$") 2>/dev/null || true
  t1=$(date +%s.%N)
  echo "scale=1; 8 * $snap_size / ($t1 - $t0) / 1048576" | bc
}
stats() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(d.get(p,0) for p in sys.argv[1:]))' "$@"; }
# min/median/max of the ratios a/b for arrays given as "a1 a2 ..." "b1 b2 ...".
ratios() {
  python3 - "$1" "$2" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
r = sorted(x / y for x, y in zip(a, b) if y > 0)
print(f"{min(r):.2f} / {statistics.median(r):.2f} / {max(r):.2f}" if r else "n/a")
PY
}
median() { python3 -c 'import statistics,sys; print(f"{statistics.median([float(x) for x in sys.argv[1:]]):.1f}")' "$@"; }

declare -A A B C
proxy_rss_rest=$(rss_kib $proxy_pid)
nginx_rss_rest=$(rss_kib $(nginx_pids))

for round in $(seq 1 "$ROUNDS"); do
  part hits || break
  log "round $round/$ROUNDS"
  for side in A B C; do
    case $side in
      A) h=$P_HTTP; t=$P_TLS; watched=$proxy_pid ;;
      B) h=$N_HTTP; t=$N_TLS; watched=$(nginx_pids | tr '\n' ' ') ;;
      C) h=$N_STATIC; t=$N_STATIC_TLS; watched=$(nginx_pids | tr '\n' ' ') ;;
    esac
    peak_rss_during "$watched" wrk_run "http://127.0.0.1:$h/rrdp/notification.xml" >"$work/res"
    read -r reqs p99 <"$work/res"
    eval "$side[n_reqs]+=\" $reqs\"; $side[n_p99]+=\" $p99\"; $side[n_rss]+=\" $(cat "$work/peak")\""
    read -r reqs p99 < <(wrk_run "https://127.0.0.1:$t/rrdp/notification.xml")
    eval "$side[t_reqs]+=\" $reqs\"; $side[t_p99]+=\" $p99\""
    read -r reqs p99 < <(wrk_run "http://127.0.0.1:$h$delta")
    eval "$side[d_reqs]+=\" $reqs\"; $side[d_p99]+=\" $p99\""
    read -r reqs p99 < <(wrk_run "http://127.0.0.1:$h$small")
    eval "$side[sd_reqs]+=\" $reqs\"; $side[sd_p99]+=\" $p99\""
    peak_rss_during "$watched" download8 "http://127.0.0.1:$h" >"$work/res"
    eval "$side[s_mibs]+=\" $(cat "$work/res")\"; $side[s_rss]+=\" $(cat "$work/peak")\""
  done
done

#------------ TLS and HTTP/2 ------------------------------------------------------------------
# wrk over TLS 1.3 with keep-alive; wrk with "Connection: close" (a new connection, so a full
# TLS handshake, per request, as many RPs behave); h2load over HTTP/2 (64 connections, 10
# streams each).
h2_run() { # h2_run URL -> req/s over HTTP/2
  "${on_load[@]}" h2load -c64 -m10 -D "$DURATION" "$1" >"$work/h2.out" 2>&1 || true
  awk '/^finished in/ {gsub(",", "", $4); print $4}' "$work/h2.out"
}
for round in $(seq 1 "$ROUNDS"); do
  part tls || break
  command -v h2load >/dev/null || { log "tls: h2load is missing (apt-get install nghttp2-client)"; exit 1; }
  log "tls round $round/$ROUNDS"
  for side in A B; do
    if [ $side = A ]; then t=$P_TLS; else t=$N_TLS; fi
    read -r reqs _ < <(wrk_run "https://127.0.0.1:$t/rrdp/notification.xml")
    eval "$side[tk_n]+=\" $reqs\""
    read -r reqs _ < <(wrk_run "https://127.0.0.1:$t$delta")
    eval "$side[tk_d]+=\" $reqs\""
    read -r reqs p99 < <(wrk_run "https://127.0.0.1:$t/rrdp/notification.xml" -H "Connection: close")
    eval "$side[hs]+=\" $reqs\"; $side[hs_p99]+=\" $p99\""
    eval "$side[h2_n]+=\" $(h2_run "https://127.0.0.1:$t/rrdp/notification.xml")\""
    eval "$side[h2_d]+=\" $(h2_run "https://127.0.0.1:$t$delta")\""
  done
done

#------------ Syscalls per 10k requests -------------------------------------------------------
# strace -c on every thread of each server while h2load (HTTP/1.1) makes exactly 10,000
# requests over 64 keep-alive connections; prints per-syscall counts side by side.
# strace slows the servers down: these are counts, not timings.
strace_count() { # strace_count OUT URL PID: strace -p takes every thread of PID, -f new ones
  local out=$1 url=$2 pid=$3
  strace -c -f -o "$out" -p "$pid" 2>"$out.err" &
  local sp=$!
  for _ in $(seq 1 200); do grep -q attached "$out.err" 2>/dev/null && break; sleep 0.05; done
  "${on_load[@]}" h2load --h1 -n 10000 -c 64 "$url" >"$out.h2load" 2>&1
  kill -INT $sp; wait $sp 2>/dev/null || true
}
syscall_table() { # syscall_table TITLE PROXY_OUT NGINX_OUT
  python3 - "$@" <<'PY2'
import sys
title, files = sys.argv[1], sys.argv[2:]
counts = []
for f in files:
    c = {}
    for line in open(f):
        p = line.split()
        if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
            c[p[-1]] = int(p[3])
    counts.append(c)
names = sorted(set(counts[0]) | set(counts[1]), key=lambda n: -(counts[0].get(n, 0) + counts[1].get(n, 0)))
print(f"| {title}: syscall | rrdp-proxy calls per 10k requests | nginx calls per 10k requests |")
print("|---|---|---|")
for n in names:
    a, b = counts[0].get(n, 0), counts[1].get(n, 0)
    if a + b >= 10:
        print(f"| {n} | {a} | {b} |")
print(f"| **total** | **{sum(counts[0].values())}** | **{sum(counts[1].values())}** |")
print()
PY2
}
if part syscalls; then
  command -v strace >/dev/null && command -v h2load >/dev/null || { log "syscalls: needs strace and h2load (nghttp2-client)"; exit 1; }
  log "syscalls: strace -c per 10k requests"
  for what in notification small; do
    [ $what = notification ] && p=/rrdp/notification.xml || p=$small
    strace_count "$work/sc-proxy-$what" "http://127.0.0.1:$P_HTTP$p" $proxy_pid
    strace_count "$work/sc-nginx-$what" "http://127.0.0.1:$N_HTTP$p" $(pgrep -P "$(cat "$work/nginx/nginx.pid")")
  done
fi

#------------ Idle keep-alive connections -----------------------------------------------------
# RSS of each server with 1k and 10k idle keep-alive connections (each has served one
# notification), against its RSS with none.
idle_rss=()
if part idle; then
  for n in 1000 10000; do
    for side in A B; do
      if [ $side = A ]; then port=$P_HTTP; watched=$proxy_pid; else port=$N_HTTP; watched=$(nginx_pids | tr '\n' ' '); fi
      before=$(rss_kib $watched)
      coproc IDLE { python3 bench/idle.py 127.0.0.1 "$port" /rrdp/notification.xml "$n"; }
      read -r ready count <&"${IDLE[0]}" || { log "idle: $n connections to $side failed"; exit 1; }
      [ "$ready" = ready ] && [ "$count" = "$n" ] || { log "idle: $side: $ready $count"; exit 1; }
      after=$(rss_kib $watched)
      exec {IDLE[1]}>&-; wait "$IDLE_PID" 2>/dev/null || true
      idle_rss+=("$n $side $before $after")
    done
  done
fi

#------------ New-serial storm ----------------------------------------------------------------
if part storm; then
log "new-serial storm: 200 clients per server"
curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
new=$(curl -sf "http://$ORIGIN/rrdp/notification.xml")
new_snap=$(grep -o '<snapshot uri="[^"]*"' <<<"$new" | cut -d'"' -f2 | sed 's#^http://[^/]*##')
new_delta=$(grep -m1 -o '<delta [^>]*' <<<"$new" | grep -o 'uri="[^"]*"' | cut -d'"' -f2 | sed 's#^http://[^/]*##')
before=$(curl -sf "http://$ORIGIN/_stats" | stats "$new_snap" "$new_delta")
storm_p=$(python3 bench/storm.py "http://127.0.0.1:$P_HTTP/rrdp/" 200 "$new_delta" "$new_snap")
mid=$(curl -sf "http://$ORIGIN/_stats" | stats "$new_snap" "$new_delta")
storm_n=$(python3 bench/storm.py "http://127.0.0.1:$N_HTTP/rrdp/" 200 "$new_delta" "$new_snap")
after=$(curl -sf "http://$ORIGIN/_stats" | stats "$new_snap" "$new_delta")
origin_p=$((mid - before)); origin_n=$((after - mid))
err_p=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$storm_p")
err_n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$storm_n")
fi

#------------ Freshness -----------------------------------------------------------------------
# (grep -m1, not head: under pipefail a closed pipe would end the script.)
serial_of() { curl -sf "$1" | grep -m1 -o 'serial="[0-9]*"' | tr -dc 0-9; }
# Publishes a serial at the origin, then times until the server at $1 serves it. With $2 =
# refresh, the origin's "post-publish hook" tells rrdp-proxy at once.
lag() {
  local url=$1 hook=${2:-} want t0 t1
  curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
  t0=$(date +%s.%N)
  want=$(serial_of "http://$ORIGIN/rrdp/notification.xml")
  [ "$hook" = refresh ] && curl -sf -X POST "http://$P_ADMIN/refresh" >/dev/null
  while [ "$(serial_of "$url")" != "$want" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
lags_p=(); lags_r=(); lags_n=()
if part fresh; then
log "freshness: $FRESH_SERIALS serials through rrdp-proxy (poll_interval 10s), then with POST /refresh"
for _ in $(seq 1 "$FRESH_SERIALS"); do lags_p+=("$(lag "http://127.0.0.1:$P_HTTP/rrdp/notification.xml")"); done
for _ in $(seq 1 "$FRESH_SERIALS"); do lags_r+=("$(lag "http://127.0.0.1:$P_HTTP/rrdp/notification.xml" refresh)"); done
log "freshness: $NGINX_FRESH_SERIALS serials through nginx (up to a minute each)"
for _ in $(seq 1 "$NGINX_FRESH_SERIALS"); do lags_n+=("$(lag "http://127.0.0.1:$N_HTTP/rrdp/notification.xml")"); done
fi

#------------ Report --------------------------------------------------------------------------
mib() { echo $(( $1 / 1024 )); }
cat <<EOF
Machine: $(nproc --all) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); nginx $(nginx -v 2>&1 | cut -d/ -f2), wrk -t1 -c64 -d${DURATION}s, one worker each, loopback, $pinning.
Command: \`LOGS=$LOGS ROUNDS=$ROUNDS DURATION=$DURATION SIZE=$SIZE DELTAS=$DELTAS FRESH_SERIALS=$FRESH_SERIALS NGINX_FRESH_SERIALS=$NGINX_FRESH_SERIALS PARTS='$PARTS' bench/run.sh\` ($(date -u +%F))
Repository: snapshot $((snap_size / 1048576)) MiB, $DELTAS deltas, the largest $((delta_size / 1024)) KiB.

EOF
if part hits; then
cat <<EOF
| scenario | figure | rrdp-proxy/nginx (min / median / max over $ROUNDS rounds) | rrdp-proxy median | nginx median |
|---|---|---|---|---|
| 1. notification hits, HTTP/1.1, 64 conns | req/s | $(ratios "${A[n_reqs]}" "${B[n_reqs]}") | $(median ${A[n_reqs]}) | $(median ${B[n_reqs]}) |
| 1. notification hits, HTTP/1.1, 64 conns | p99 latency (ms) | $(ratios "${A[n_p99]}" "${B[n_p99]}") | $(median ${A[n_p99]}) | $(median ${B[n_p99]}) |
| 1. notification hits, TLS, 64 conns | req/s | $(ratios "${A[t_reqs]}" "${B[t_reqs]}") | $(median ${A[t_reqs]}) | $(median ${B[t_reqs]}) |
| 1. notification hits, TLS, 64 conns | p99 latency (ms) | $(ratios "${A[t_p99]}" "${B[t_p99]}") | $(median ${A[t_p99]}) | $(median ${B[t_p99]}) |
| 2. $((delta_size / 1024)) KiB delta hits | req/s | $(ratios "${A[d_reqs]}" "${B[d_reqs]}") | $(median ${A[d_reqs]}) | $(median ${B[d_reqs]}) |
| 2. $((small_size / 1024)) KiB delta hits (the smallest) | req/s | $(ratios "${A[sd_reqs]}" "${B[sd_reqs]}") | $(median ${A[sd_reqs]}) | $(median ${B[sd_reqs]}) |
| 2. $((small_size / 1024)) KiB delta hits (the smallest) | p99 latency (ms) | $(ratios "${A[sd_p99]}" "${B[sd_p99]}") | $(median ${A[sd_p99]}) | $(median ${B[sd_p99]}) |
| 3. snapshot to 8 clients at once | MiB/s | $(ratios "${A[s_mibs]}" "${B[s_mibs]}") | $(median ${A[s_mibs]}) | $(median ${B[s_mibs]}) |
| 3. snapshot to 8 clients at once | peak RSS (MiB) | $(ratios "${A[s_rss]}" "${B[s_rss]}") | $(( $(median ${A[s_rss]} | cut -d. -f1) / 1024 )) | $(( $(median ${B[s_rss]} | cut -d. -f1) / 1024 )) |
| 6. memory under scenario 1 | peak RSS (MiB) | $(ratios "${A[n_rss]}" "${B[n_rss]}") | $(( $(median ${A[n_rss]} | cut -d. -f1) / 1024 )) | $(( $(median ${B[n_rss]} | cut -d. -f1) / 1024 )) |
| 6. memory at rest, repository cached | RSS (MiB) | $(ratios "$proxy_rss_rest" "$nginx_rss_rest") | $(mib "$proxy_rss_rest") | $(mib "$nginx_rss_rest") |

| against nginx serving the same files statically (C) | figure | rrdp-proxy/nginx static (min / median / max over $ROUNDS rounds) | rrdp-proxy median | nginx static median |
|---|---|---|---|---|
| 1. notification hits, HTTP/1.1, 64 conns | req/s | $(ratios "${A[n_reqs]}" "${C[n_reqs]}") | $(median ${A[n_reqs]}) | $(median ${C[n_reqs]}) |
| 1. notification hits, TLS, 64 conns | req/s | $(ratios "${A[t_reqs]}" "${C[t_reqs]}") | $(median ${A[t_reqs]}) | $(median ${C[t_reqs]}) |
| 2. $((delta_size / 1024)) KiB delta hits | req/s | $(ratios "${A[d_reqs]}" "${C[d_reqs]}") | $(median ${A[d_reqs]}) | $(median ${C[d_reqs]}) |
| 2. $((small_size / 1024)) KiB delta hits (the smallest) | req/s | $(ratios "${A[sd_reqs]}" "${C[sd_reqs]}") | $(median ${A[sd_reqs]}) | $(median ${C[sd_reqs]}) |
| 3. snapshot to 8 clients at once | MiB/s | $(ratios "${A[s_mibs]}" "${C[s_mibs]}") | $(median ${A[s_mibs]}) | $(median ${C[s_mibs]}) |

EOF
fi
if part storm || part fresh; then
cat <<EOF
| scenario | rrdp-proxy | nginx |
|---|---|---|
EOF
fi
if part storm; then
cat <<EOF
| 4. new-serial storm, 200 clients: origin requests for the new snapshot + delta | $origin_p (for 2 files) | $origin_n (for 2 files) |
| 4. new-serial storm: client errors | $err_p | $err_n |
EOF
fi
if part fresh; then
cat <<EOF
| 5. freshness: origin publish → clients see it, median | $(median "${lags_p[@]}") s (poll_interval 10 s; $FRESH_SERIALS serials) | $(median "${lags_n[@]}") s ($NGINX_FRESH_SERIALS serials) |
| 5. freshness with the post-publish hook (POST /refresh), median | $(median "${lags_r[@]}") s ($FRESH_SERIALS serials) | – |
EOF
fi
if part tls; then
cat <<EOF
| 7. TLS 1.3 and HTTP/2, 64 conns | figure | rrdp-proxy/nginx (min / median / max over $ROUNDS rounds) | rrdp-proxy median | nginx median |
|---|---|---|---|---|
| notification hits, TLS keep-alive | req/s | $(ratios "${A[tk_n]}" "${B[tk_n]}") | $(median ${A[tk_n]}) | $(median ${B[tk_n]}) |
| $((delta_size / 1024)) KiB delta hits, TLS keep-alive | req/s | $(ratios "${A[tk_d]}" "${B[tk_d]}") | $(median ${A[tk_d]}) | $(median ${B[tk_d]}) |
| notification, new TLS connection per request | handshakes (req)/s | $(ratios "${A[hs]}" "${B[hs]}") | $(median ${A[hs]}) | $(median ${B[hs]}) |
| notification, new TLS connection per request | p99 latency (ms) | $(ratios "${A[hs_p99]}" "${B[hs_p99]}") | $(median ${A[hs_p99]}) | $(median ${B[hs_p99]}) |
| notification hits, HTTP/2 (10 streams per conn) | req/s | $(ratios "${A[h2_n]}" "${B[h2_n]}") | $(median ${A[h2_n]}) | $(median ${B[h2_n]}) |
| $((delta_size / 1024)) KiB delta hits, HTTP/2 | req/s | $(ratios "${A[h2_d]}" "${B[h2_d]}") | $(median ${A[h2_d]}) | $(median ${B[h2_d]}) |
EOF
fi
if part syscalls; then
  syscall_table "8. notification.xml" "$work/sc-proxy-notification" "$work/sc-nginx-notification"
  syscall_table "8. $((small_size / 1024)) KiB delta" "$work/sc-proxy-small" "$work/sc-nginx-small"
fi
if part idle; then
  # nginx allocates its connection structures for all worker_connections (20,000 here) at
  # start, so its RSS barely moves; the totals compare, and the last column is their ratio.
  echo "| 9. idle keep-alive connections | rrdp-proxy RSS (MiB) | per connection (KiB) | nginx RSS (MiB) | per connection (KiB) | rrdp-proxy/nginx RSS with them |"
  echo "|---|---|---|---|---|---|"
  for n in 1000 10000; do
    python3 - "$n" "${idle_rss[@]}" <<'PY2'
import sys
n = sys.argv[1]
rows = {r.split()[1]: [int(x) for x in r.split()[2:]] for r in sys.argv[2:] if r.split()[0] == n}
(pa, pb), (na, nb) = rows["A"], rows["B"]
pp, np_ = (pb - pa) / int(n), (nb - na) / int(n)
print(f"| {int(n):,} | {pa/1024:.0f} → {pb/1024:.0f} | {pp:.1f} | {na/1024:.0f} → {nb/1024:.0f} | {np_:.1f} | {pb/nb:.2f} |")
PY2
  done
  echo
fi
cat <<EOF

RSS for nginx is master + worker. Memory at rest is one sample after warm-up. Freshness
includes the demo origin generating a new $SIZE snapshot per serial before it answers.
EOF
