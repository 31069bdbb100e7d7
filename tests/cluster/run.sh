#!/usr/bin/env bash
# Scale-out: three nodes behind a round-robin load balancer (nginx from Debian, a new
# connection per request, so consecutive requests land on different nodes), polling out of
# step, in front of the demo origin publishing a new serial every ORIGIN_INTERVAL (and
# deleting the superseded snapshot at once, as Krill does); clients take a notification and
# then every file it lists. After ALIVE seconds the origin dies. Four setups:
#
#   peer fill        rrdp-proxy nodes with [cluster] peers
#   publish_delay    rrdp-proxy nodes with publish_delay, no peers
#   neither          rrdp-proxy nodes with neither
#   nginx            nginx nodes with the Krill documentation's proxy_cache setup
#
# Fails if a client saw a failed file in a setup named in MUST_PASS; the others are
# reported. The default timing is a publication server slower than the nodes' polling
# (Krill's usual case). ORIGIN_INTERVAL=2s POLL=6s DELAY=8s STAGGER=2 MUST_PASS=peer_fill is
# an origin that publishes faster than the nodes poll: there only peer fill can help.
#
#   tests/cluster/run.sh [path/to/rrdp-proxy]
#   (env: CLIENTS=8 ALIVE=25 DEAD=15 ORIGIN_INTERVAL=10s POLL=5s DELAY=7s STAGGER=1 DEATH_AFTER=1
#    MUST_PASS="peer_fill publish_delay" MODES="peer_fill publish_delay neither nginx")
set -euo pipefail
bin=$(realpath "${1:-target/release/rrdp-proxy}")
here=$(cd "$(dirname "$0")" && pwd)
CLIENTS=${CLIENTS:-8}
ALIVE=${ALIVE:-25}
DEAD=${DEAD:-15}
ORIGIN_INTERVAL=${ORIGIN_INTERVAL:-10s}
POLL=${POLL:-5s}
DELAY=${DELAY:-7s}
STAGGER=${STAGGER:-1}
MUST_PASS=${MUST_PASS:-peer_fill publish_delay}
. "$here/../../scripts/lib.sh"
lib_setup cluster
TOKEN=cluster-test-token-0123456789
origin=$(free_port); lb=$(free_port)
ports=("$(free_port)" "$(free_port)" "$(free_port)")
admins=("$(free_port)" "$(free_port)" "$(free_port)")

start_lb() {
  mkdir -p "$work/lb"
  cat >"$work/lb/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/lb/nginx.pid;
error_log $work/lb/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream nodes { server 127.0.0.1:${ports[0]}; server 127.0.0.1:${ports[1]}; server 127.0.0.1:${ports[2]}; }
  server {
    listen 127.0.0.1:$lb;
    location / {
      proxy_pass http://nodes;
      proxy_http_version 1.0;
      proxy_set_header Connection close;
      proxy_next_upstream off;
    }
  }
}
CONF
  nginx -c "$work/lb/nginx.conf" &
  pids+=($!)
}

start_origin() {
  "$bin" demo --listen "127.0.0.1:$origin" --interval "$ORIGIN_INTERVAL" >"$work/origin.log" 2>&1 &
  origin_pid=$!
  pids+=("$origin_pid")
}

origin_serial() { curl -sf "http://127.0.0.1:$origin/rrdp/notification.xml" | grep -m1 -o 'serial="[0-9]*"' || true; }

# start_node MODE I
start_node() {
  local mode=$1 i=$2 dir="$work/$1/n$2"
  mkdir -p "$dir"
  if [ "$mode" = nginx ]; then
    mkdir -p "$dir/cache" && chmod 777 "$dir" "$dir/cache"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_cache_path $dir/cache levels=1:2 keys_zone=c$i:10m max_size=1g inactive=60m use_temp_path=off;
  server {
    listen 127.0.0.1:${ports[$i]};
    location / {
      proxy_cache c$i;
      proxy_cache_revalidate on;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_cache_lock on;
      proxy_pass http://127.0.0.1:$origin;
    }
  }
}
CONF
    nginx -c "$dir/nginx.conf" &
  else
    local extra="" cluster=""
    [ "$mode" = publish_delay ] && extra="publish_delay = \"$DELAY\""
    if [ "$mode" = peer_fill ]; then
      local peers=()
      for j in 0 1 2; do [ "$j" = "$i" ] || peers+=("\"http://127.0.0.1:${ports[$j]}/\""); done
      cluster="[cluster]
peers = [$(IFS=,; echo "${peers[*]}")]
token = \"$TOKEN\""
    fi
    cat >"$dir/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:${ports[$i]}"]
admin_listen = "127.0.0.1:${admins[$i]}"
threads = 1
upgrade_sock = "$dir/upgrade.sock"
[cache]
dir = "$dir/cache"
[log]
access = "off"
[[repository]]
public = "http://127.0.0.1:$lb/rrdp/"
upstream = "http://127.0.0.1:$origin/rrdp/"
poll_interval = "$POLL"
$extra
$cluster
TOML
    "$bin" --config "$dir/proxy.toml" >"$dir/proxy.log" 2>&1 &
  fi
  node_pids+=($!)
  pids+=($!)
}

# run_mode MODE: prints a table row; returns the failure count in $failed.
run_mode() {
  local mode=$1
  node_pids=()
  start_origin
  # Staggered: the nodes start STAGGER s apart, so they poll out of step.
  # Each node is asked for the notification as it starts: an nginx node caches the serial of
  # that moment (for the 60 s the origin allows), an rrdp-proxy node polls on its own.
  for i in 0 1 2; do
    start_node "$mode" "$i"
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:${ports[$i]}/rrdp/notification.xml" >/dev/null && break
      sleep 0.1
    done
    sleep "$STAGGER"
  done
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$lb/rrdp/notification.xml" >/dev/null && break
    sleep 0.1
  done
  python3 "$here/clients.py" "$lb" "$CLIENTS" $((ALIVE + DEAD)) >"$work/$mode.json" &
  local clients=$!
  # The timeline: about ALIVE seconds in, the origin dies DEATH_AFTER (1) s after it published a serial,
  # when the nodes are most out of step (some have polled it, some not).
  sleep "$ALIVE"
  local serial now
  serial=$(origin_serial)
  for _ in $(seq 1 300); do
    now=$(origin_serial)
    [ "$now" != "$serial" ] && break
    sleep 0.05
  done
  sleep "${DEATH_AFTER:-1}"
  kill -9 "$origin_pid"; wait "$origin_pid" 2>/dev/null || true  # a crash, not a graceful stop
  local seen=()
  for i in 0 1 2; do
    seen+=("$(curl -sf "http://127.0.0.1:${ports[$i]}/rrdp/notification.xml" | grep -m1 -o ' serial="[0-9]*"' | tr -dc 0-9)")
  done
  log "$mode: origin down; nodes serve serials ${seen[*]}"
  wait "$clients"
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  failed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failures"])' "$work/$mode.json")
  python3 - "$mode" "$work/$mode.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
rate = 100.0 * s["failures"] / max(1, s["files"])
st = ", ".join(f"{k}: {v}" for k, v in sorted(s["statuses"].items())) or "-"
print(f"| {sys.argv[1]} | {s['notifications']} | {s['files']} | {s['failures']} ({rate:.2f} %) | {st} |")
PY
}

start_lb
echo "origin publishes every $ORIGIN_INTERVAL; nodes poll every $POLL, started ${STAGGER}s apart; publish_delay $DELAY; origin dies after ${ALIVE}s, clients go on for ${DEAD}s"
echo
echo "| setup | notifications | files fetched | failed files | failures by status |"
echo "|---|---|---|---|---|"
status=0
for mode in ${MODES-peer_fill publish_delay neither nginx}; do
  run_mode "$mode"
  log "$mode: $failed failed files"
  case " $MUST_PASS " in *" $mode "*) [ "$failed" = 0 ] || status=1 ;; esac
done
# A CDN in front of a node: nginx caching everything for 10 minutes unless the response says
# otherwise. It must never keep a 404, must cache immutable files, and may keep the
# notification for at most 60 s.
cdn_check() {
  node_pids=()
  start_origin
  start_node neither 0
  local cdn
  cdn=$(free_port)
  mkdir -p "$work/cdn/cache" && chmod 777 "$work/cdn" "$work/cdn/cache"
  cat >"$work/cdn/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/cdn/nginx.pid;
error_log $work/cdn/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_cache_path $work/cdn/cache levels=1:2 keys_zone=cdn:10m max_size=1g inactive=60m use_temp_path=off;
  server {
    listen 127.0.0.1:$cdn;
    location / {
      proxy_cache cdn;
      proxy_cache_valid any 10m;
      add_header X-Cache-Status \$upstream_cache_status always;
      proxy_pass http://127.0.0.1:${ports[0]};
    }
  }
}
CONF
  nginx -c "$work/cdn/nginx.conf" &
  node_pids+=($!)
  pids+=($!)
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$cdn/rrdp/notification.xml" >/dev/null && break
    sleep 0.1
  done
  head() { curl -s -o /dev/null -D - "http://127.0.0.1:$cdn$1" | tr -d '\r' | grep -i "^$2:" | cut -d' ' -f2-; }
  local missing=/rrdp/00000000-0000-4000-8000-000000000000/1/x/delta.xml
  head "$missing" X-Cache-Status >/dev/null
  local miss2 cc snap snap2 ok=pass
  miss2=$(head "$missing" X-Cache-Status)
  cc=$(head /rrdp/notification.xml Cache-Control)
  snap=$(curl -sf "http://127.0.0.1:$cdn/rrdp/notification.xml" | grep -o '<snapshot [^>]*' | sed 's|.* uri="http://[^/]*\(/[^"]*\)".*|\1|')
  head "$snap" X-Cache-Status >/dev/null
  snap2=$(head "$snap" X-Cache-Status)
  echo
  echo "| through a CDN (nginx caching everything for 10 min unless told) | seen |"
  echo "|---|---|"
  echo "| a 404, asked twice: second answer from | ${miss2:-?} (never HIT) |"
  echo "| notification Cache-Control | $cc |"
  echo "| a snapshot, asked twice: second answer from | $snap2 |"
  [ "$miss2" != HIT ] || ok=FAIL
  [ "$cc" = "max-age=60" ] || ok=FAIL
  [ "$snap2" = HIT ] || ok=FAIL
  kill -9 "$origin_pid" 2>/dev/null || true
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ "$ok" = pass ] || { echo "cdn: FAILED"; status=1; }
}
cdn_check

[ "$status" = 0 ] && echo "cluster: passed" || echo "cluster: FAILED (a mechanism let a client fail)"
exit "$status"
