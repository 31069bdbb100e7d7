#!/usr/bin/env bash
# How rrdp-proxy's cost grows as its work grows, and what it does when a disk fills under load
# (issue 19, part 4). Each part sets up what it needs on loopback and prints a markdown table
# for docs/benchmarks.md. bench/run.sh runs it for the parts repos, big and disk.
#
#   PARTS="repos big disk" bench/growth.sh     all parts (the default)
#   PARTS=repos REPOS="1 10 100 1000" bench/growth.sh
#       10. repositories per node: RSS at rest, CPU per poll round (unchanged, and with a new
#           serial in every repository), start-up with an empty and with a full cache
#   PARTS=big BIG=5GiB FRESH_SIZE=500MiB FRESH_SERIALS=5 VALIDATE="off warn" bench/growth.sh
#       (BIG=none: the serials only)
#       11. a BIG snapshot's first sync against downloading it with curl; then serials that
#           each bring a new FRESH_SIZE snapshot: origin publish → clients see it, against
#           downloading the serial's new files; peak RSS; phases from /status
#   PARTS=disk bench/growth.sh   (needs root: it mounts small tmpfs file systems)
#       12. the access log's disk full, and the cache's disk full, under load
#
# Needs curl, python3, wrk (disk). Benchmarks are not tests: nothing here fails on a figure.
set -euo pipefail
PARTS=${PARTS:-repos big disk}
REPOS=${REPOS:-1 10 100 1000}
BIG=${BIG:-5GiB}
FRESH_SIZE=${FRESH_SIZE:-500MiB}
FRESH_SERIALS=${FRESH_SERIALS:-5}
VALIDATE=${VALIDATE:-off warn}
DURATION=${DURATION:-10}
part() { [[ " $PARTS " == *" $1 "* ]]; }
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -q
bin=$top/target/release/rrdp-proxy
. "$top/scripts/lib.sh"
lib_setup growth
mounts=()
extra_cleanup() { for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done; }
ulimit -n 65536 2>/dev/null || true

ORIGIN=127.0.0.1:3401
P_HTTP=18280 P_ADMIN=127.0.0.1:19290

now() { date +%s.%N; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU seconds (user + system) a process has used.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
status() { curl -sf "http://$P_ADMIN/status"; }
# Waits until the proxy's /status satisfies a Python condition on `rs` (its repositories).
# Polls every 0.1 s, or every $3 s where the proxy's CPU is being measured (a /status of
# 1,000 repositories costs the proxy a few milliseconds).
wait_status() { # wait_status 'all(r["serial"] for r in rs)' [timeout seconds] [interval]
  local cond=$1 limit=${2:-3600} every=${3:-0.1} t0
  t0=$(date +%s)
  until status 2>/dev/null | python3 -c "import json,sys; rs=json.load(sys.stdin)['repositories']; sys.exit(0 if ($cond) else 1)" 2>/dev/null; do
    [ $(($(date +%s) - t0)) -lt "$limit" ] || { log "timed out waiting for: $cond"; return 1; }
    kill -0 "$proxy_pid" 2>/dev/null || { log "the proxy exited: $(tail -3 "$proxy_log")"; return 1; }
    sleep "$every"
  done
}
# Samples a process's RSS every 100 ms until the file $2 exists; writes the peak (KiB) to $3.
peak_sampler() { # peak_sampler PID STOPFILE OUT &
  local peak=0 r
  while [ ! -e "$2" ]; do r=$(rss_kib "$1"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.1; done
  echo $peak >"$3"
}
start_origin() { # start_origin ARGS...: the demo origin, waited for
  "$bin" demo --listen $ORIGIN --interval 24h "$@" >"$work/origin.log" 2>&1 &
  origin_pid=$!; pids+=("$origin_pid")
  for _ in $(seq 1 36000); do curl -sf "http://$ORIGIN/rrdp/notification.xml" >/dev/null 2>&1 && return; sleep 0.1; done
  log "the origin did not come up"; exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# proxy_config DIR N VALIDATE [ACCESS_LOG_LINES]: a configuration with N repositories, the
# access log off unless given.
proxy_config() {
  local dir=$1 n=$2 validate=$3 access=${4:-access = \"off\"} i
  mkdir -p "$dir"
  {
    printf '[server]\nlisten = ["127.0.0.1:%s"]\nadmin_listen = "%s"\nupgrade_sock = "%s/upgrade.sock"\n' "$P_HTTP" "$P_ADMIN" "$dir"
    printf '[cache]\ndir = "%s/cache"\n' "$dir"
    printf '[log]\nlevel = "info"\n%s\n' "$access"
    for i in $(seq 1 "$n"); do
      local path=rrdp/
      [ "$i" -gt 1 ] && path=rrdp-$i/
      printf '[[repository]]\npublic = "http://127.0.0.1:%s/%s"\nupstream = "http://%s/%s"\n' "$P_HTTP" "$path" "$ORIGIN" "$path"
      printf 'poll_interval = "%s"\nvalidate = "%s"\nmax_file_size = "16GiB"\n' "${POLL:-10s}" "$validate"
    done
  } >"$dir/proxy.toml"
}
start_proxy() { # start_proxy DIR: sets proxy_pid and proxy_log
  proxy_log=$1/log
  "$bin" --config "$1/proxy.toml" >>"$1/log" 2>&1 &
  proxy_pid=$!; pids+=("$proxy_pid")
}
serial_of() { curl -sf "$1" | grep -m1 -o 'serial="[0-9]*"' | tr -dc 0-9; }
f1() { python3 -c "import sys; print(f'{float(sys.argv[1]):.${2:-1}f}')" "$1"; }
machine="$(nproc --all) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"

#------------ 10. Repositories per node -------------------------------------------------------
if part repos; then
  rows=()
  for n in $REPOS; do
    log "repos: $n repositories"
    start_origin --repositories "$n"
    dir=$work/repos-$n
    proxy_config "$dir" "$n" warn
    t0=$(now); start_proxy "$dir"
    wait_status 'all(r["serial"] is not None for r in rs)'
    t_first=$(echo "$(now) - $t0" | bc)
    # At rest: every repository published, its gzip variants made.
    wait_status 'all(r.get("compressed_serial") == r["serial"] for r in rs)'
    rss=$(rss_kib "$proxy_pid")
    # Unchanged rounds: the CPU of 30 s of nothing but polling (no request to the proxy
    # meanwhile), over the rounds its repositories completed.
    polls() { status | python3 -c 'import json,sys; print(sum(r["polls_ok"] for r in json.load(sys.stdin)["repositories"]))'; }
    p0=$(polls); c0=$(cpu_s "$proxy_pid")
    sleep 30
    c1=$(cpu_s "$proxy_pid"); p1=$(polls)
    cpu_idle=$(echo "($c1 - $c0) / (($p1 - $p0) / $n)" | bc -l)
    # A new serial in every repository (the origin's post-publish hook tells the proxy at
    # once): first timed until all are published; then the next one for its CPU until all
    # are published, compressed and validated, looking only once a second.
    want=$(( $(serial_of "http://$ORIGIN/rrdp/notification.xml") + 1 ))
    t0=$(now)
    curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
    curl -sf -X POST "http://$P_ADMIN/refresh" >/dev/null
    wait_status "all(r['serial'] == $want for r in rs)"
    t_new=$(echo "$(now) - $t0" | bc)
    wait_status "all(r.get('compressed_serial') == $want and ((r.get('validation') or {}).get('last') or {}).get('serial') == $want for r in rs)"
    want=$((want + 1))
    c0=$(cpu_s "$proxy_pid")
    curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
    curl -sf -X POST "http://$P_ADMIN/refresh" >/dev/null
    wait_status "all(r['serial'] == $want and r.get('compressed_serial') == $want and ((r.get('validation') or {}).get('last') or {}).get('serial') == $want for r in rs)" 3600 1
    cpu_new=$(echo "$(cpu_s "$proxy_pid") - $c0" | bc -l)
    # Start-up with the cache full: the generations are read back from disk.
    stop "$proxy_pid"
    t0=$(now); start_proxy "$dir"
    wait_status "all(r['serial'] == $want for r in rs)"
    t_warm=$(echo "$(now) - $t0" | bc)
    stop "$proxy_pid"; stop "$origin_pid"
    [ -n "${rss_first:-}" ] || { rss_first=$rss; n_first=$n; }
    per=n/a
    [ "$n" -gt "$n_first" ] && per=$(f1 "$(echo "($rss - $rss_first) / ($n - $n_first)" | bc -l)")
    rows+=("| $n | $(echo "$rss / 1024" | bc) | $per | $(f1 "$(echo "$cpu_idle * 1000" | bc -l)") | $(f1 "$(echo "$cpu_new * 1000" | bc -l)") | $(f1 "$t_new" 2) | $(f1 "$t_first" 2) | $(f1 "$t_warm" 2) |")
  done
  cat <<EOF
Machine: $machine. Command: \`PARTS=repos REPOS="$REPOS" bench/growth.sh\` ($(date -u +%F)).
Each repository is a small demo repository of its own (\`rrdp-proxy demo --repositories N\`), \`poll_interval = "10s"\`, \`validate = "warn"\` (the default), default threads.

| 10. repositories | RSS at rest (MiB) | RSS per added repository (KiB) | CPU per unchanged poll round, all repositories (ms) | CPU for a new serial in every repository, incl. gzip and validation (ms) | new serial everywhere → all published (s) | start-up, empty cache → all published (s) | start-up, full cache → all serving (s) |
|---|---|---|---|---|---|---|---|
EOF
  printf '%s\n' "${rows[@]}"
  echo
fi

#------------ 11. Big snapshots ---------------------------------------------------------------
if part big && [ "$BIG" != none ]; then
  log "big: generating a $BIG snapshot at the origin"
  start_origin --snapshot-size "$BIG" --deltas 10
  snap=$(curl -sf "http://$ORIGIN/rrdp/notification.xml" | grep -o '<snapshot uri="[^"]*"' | cut -d'"' -f2)
  size=$(curl -s -o /dev/null -w '%{size_download}' "$snap")
  t_curl=$(curl -s -o /dev/null -w '%{time_total}' "$snap")
  rows=()
  for v in $VALIDATE; do
    log "big: first sync, validate = $v"
    dir=$work/big-$v
    POLL=1h proxy_config "$dir" 1 "$v"
    rm -f "$work/stop"; t0=$(now); start_proxy "$dir"
    peak_sampler "$proxy_pid" "$work/stop" "$work/peak" & sampler=$!
    wait_status 'all(r["serial"] is not None for r in rs)'
    t_sync=$(echo "$(now) - $t0" | bc)
    wait_status 'all(r.get("compressed_serial") == r["serial"] for r in rs)'
    t_gzip=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["repositories"][0]["compress_seconds"])')
    t_val=n/a
    if [ "$v" != off ]; then
      wait_status 'all(((r.get("validation") or {}).get("last") or {}).get("serial") == r["serial"] for r in rs)'
      t_val=$(f1 "$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["repositories"][0]["validation"]["last"]["seconds"])')")
    fi
    touch "$work/stop"; wait $sampler
    phases=$(status | python3 -c 'import json,sys; t=json.load(sys.stdin)["repositories"][0]["last_round_seconds"]; print("snapshot %.1f s, count %.1f s, deltas %.1f s, publish %.2f s" % (t["snapshot"], t["count_objects"], t["deltas"], t["publish"]))')
    rows+=("| $v | $(f1 "$t_curl") | $(f1 "$t_sync") | $(f1 "$(echo "$t_sync / $t_curl" | bc -l)" 2) | $phases | $(f1 "$t_gzip") | $t_val | $(( $(cat "$work/peak") / 1024 )) |")
    stop "$proxy_pid"; rm -rf "$dir/cache"
  done
  stop "$origin_pid"
  cat <<EOF
Machine: $machine. Command: \`PARTS=big BIG=$BIG FRESH_SIZE=$FRESH_SIZE FRESH_SERIALS=$FRESH_SERIALS VALIDATE="$VALIDATE" bench/growth.sh\` ($(date -u +%F)).

| 11. first sync of a $((size / 1048576)) MiB snapshot: validate | curl -o /dev/null (s) | rrdp-proxy: start → published (s) | ratio | phases (/status last_round_seconds) | gzip variants after publishing (s) | validation after publishing (s) | peak RSS (MiB) |
|---|---|---|---|---|---|---|---|
EOF
  printf '%s\n' "${rows[@]}"
  echo
fi
if part big; then
  log "big: $FRESH_SERIALS serials of a new $FRESH_SIZE snapshot each"
  start_origin --snapshot-size "$FRESH_SIZE" --deltas 10
  rows=()
  for v in $VALIDATE; do
    dir=$work/fresh-$v
    POLL=1h proxy_config "$dir" 1 "$v"
    start_proxy "$dir"
    wait_status 'all(r["serial"] is not None and r.get("compressed_serial") == r["serial"] for r in rs)'
    rm -f "$work/stop"
    peak_sampler "$proxy_pid" "$work/stop" "$work/peak" & sampler=$!
    lags=(); downloads=(); phases=()
    for _ in $(seq 1 "$FRESH_SERIALS"); do
      # The origin answers /advance once the new serial (and its new snapshot) is served;
      # its post-publish hook then tells the proxy, as Krill's would.
      curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
      t0=$(now)
      want=$(serial_of "http://$ORIGIN/rrdp/notification.xml")
      curl -sf -X POST "http://$P_ADMIN/refresh" >/dev/null
      while [ "$(serial_of "http://127.0.0.1:$P_HTTP/rrdp/notification.xml")" != "$want" ]; do sleep 0.02; done
      lags+=("$(echo "$(now) - $t0" | bc)")
      # The same serial's new files straight from the origin: its snapshot and its delta.
      notif=$(curl -sf "http://$ORIGIN/rrdp/notification.xml")
      s_uri=$(grep -o '<snapshot uri="[^"]*"' <<<"$notif" | cut -d'"' -f2)
      d_uri=$(grep -m1 -o '<delta [^>]*' <<<"$notif" | grep -o 'uri="[^"]*"' | cut -d'"' -f2)
      downloads+=("$(curl -s -o /dev/null -o /dev/null -w '%{time_total}\n' "$s_uri" "$d_uri" | paste -sd+ | bc)")
      phases+=("$(status | python3 -c 'import json,sys; t=json.load(sys.stdin)["repositories"][0]["last_round_seconds"]; print(t["snapshot"], t["deltas"], t["publish"], t["validate_before"])')")
      # Gzip and `warn` validation of this serial run after publishing; let them finish
      # before the next serial, so each serial is timed alone.
      wait_status "all(r.get('compressed_serial') == $want for r in rs)"
      [ "$v" = off ] || wait_status "all(((r.get('validation') or {}).get('last') or {}).get('serial') == $want for r in rs)"
    done
    touch "$work/stop"; wait $sampler
    # The store's own split of each snapshot's time (logged for objects from 64 MiB on).
    stored=$(grep -o 'download and SHA-256 [0-9.]* s, content check [0-9.]* s, fsync [0-9.]* s' "$dir/log" | tail -n "$FRESH_SERIALS" | sed -E 's/.*SHA-256 ([0-9.]+) s, content check ([0-9.]+) s, fsync ([0-9.]+) s/\1 \2 \3/' | paste -sd,)
    rows+=("$(python3 - "$v" "$(cat "$work/peak")" "${lags[*]}" "${downloads[*]}" "$stored" "${phases[@]}" <<'PY'
import statistics, sys
v, peak, lags, downs = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
st = [[float(x) for x in r.split()] for r in sys.argv[5].split(",") if r.strip()]
ph = [[float(x) for x in p.split()] for p in sys.argv[6:]]
med = statistics.median
ratios = sorted(l / d for l, d in zip(lags, downs))
cols = [med([p[i] for p in ph]) for i in range(4)]
split = ", ".join(f"{name} {med([r[i] for r in st]):.2f} s" for i, name in enumerate(["download and SHA-256", "content check", "fsync"])) if st else "n/a"
print(f"| {v} | {med(downs):.2f} | {med(lags):.2f} | {min(ratios):.2f} / {med(ratios):.2f} / {max(ratios):.2f} | "
      f"snapshot {cols[0]:.2f} s ({split}), deltas {cols[1]:.2f} s, publish {cols[2]:.2f} s | {peak // 1024} |")
PY
)")
    stop "$proxy_pid"
  done
  stop "$origin_pid"
  cat <<EOF
| 11. a new $FRESH_SIZE snapshot per serial ($FRESH_SERIALS serials): validate | downloading the serial's new files with curl, median (s) | origin publish → clients see it, median (s) | ratio (min / median / max) | phases, median (/status last_round_seconds) | peak RSS (MiB) |
|---|---|---|---|---|---|
EOF
  printf '%s\n' "${rows[@]}"
  echo
fi

#------------ 12. Full disks under load --------------------------------------------------------
# The proxy on core 0, wrk on core 1 (as bench/run.sh pins them).
wrk_rps() { taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "$1" 2>/dev/null | awk '/^Requests\/sec:/ {print $2}'; }
pin_proxy() { taskset -a -pc 0 "$proxy_pid" >/dev/null; }
metric() { curl -sf "http://$P_ADMIN/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }
if part disk; then
  [ "$(id -u)" = 0 ] || { log "disk: needs root (mount -t tmpfs)"; exit 1; }
  start_origin
  notification=http://127.0.0.1:$P_HTTP/rrdp/notification.xml
  # (a) The access log's file system full: a 1 GiB tmpfs, with room for the first run,
  # filled before the second.
  log "disk: access log on a full file system"
  mkdir -p "$work/logfs"; mount -t tmpfs -o size=1g tmpfs "$work/logfs"; mounts+=("$work/logfs")
  dir=$work/disk-log
  proxy_config "$dir" 1 warn "access = \"combined\"
access_file = \"$work/logfs/access.log\""
  start_proxy "$dir"; pin_proxy
  wait_status 'all(r["serial"] is not None for r in rs)'
  ok=$(wrk_rps "$notification")
  dd if=/dev/zero of="$work/logfs/filler" bs=64k 2>/dev/null || true
  full=$(wrk_rps "$notification")
  dropped=$(metric rrdp_proxy_access_log_dropped_total)
  stop "$proxy_pid"
  # (b) The cache's file system full: a tmpfs with room for the repository, filled once the
  # proxy has published; then the origin publishes new serials the proxy cannot store.
  log "disk: cache on a full file system"
  dir=$work/disk-cache; mkdir -p "$dir/cache"
  mount -t tmpfs -o size=64m tmpfs "$dir/cache"; mounts+=("$dir/cache")
  proxy_config "$dir" 1 warn
  curl -sf -X POST "http://$ORIGIN/advance" >/dev/null   # a serial with a delta to serve
  start_proxy "$dir"; pin_proxy
  wait_status 'all(r["serial"] is not None for r in rs)'
  notif=$(curl -sf "$notification")
  delta=$(grep -m1 -o '<delta [^>]*' <<<"$notif" | grep -o 'uri="[^"]*"' | cut -d'"' -f2)
  before_n=$(wrk_rps "$notification"); before_d=$(wrk_rps "$delta")
  kept=$(serial_of "$notification")
  dd if=/dev/zero of="$dir/cache/filler" bs=64k 2>/dev/null || true
  curl -sf -X POST "http://$ORIGIN/advance" >/dev/null
  curl -sf -X POST "http://$P_ADMIN/refresh" >/dev/null
  wait_status 'all(r["last_error"] for r in rs)' 120
  during_n=$(wrk_rps "$notification"); during_d=$(wrk_rps "$delta")
  served=$(serial_of "$notification")
  said=$(status | python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; print(r["last_error_reason"] + ": " + r["last_error"])')
  errors=$(metric rrdp_proxy_poll_errors_total)
  stop "$proxy_pid"; stop "$origin_pid"
  cat <<EOF
Machine: $machine. Command: \`PARTS=disk DURATION=$DURATION bench/growth.sh\` ($(date -u +%F)); wrk -t1 -c64 on core 1, the proxy on core 0.

| 12. full disk | before: notification req/s | disk full: notification req/s | ratio | what the node says |
|---|---|---|---|---|
| access log's file system full | $ok | $full | $(f1 "$(echo "$full / $ok" | bc -l)" 2) | \`rrdp_proxy_access_log_dropped_total\` $dropped |
| cache's file system full | $before_n | $during_n | $(f1 "$(echo "$during_n / $before_n" | bc -l)" 2) | serving serial $served (kept $kept); \`/status\` last_error: $said; \`rrdp_proxy_poll_errors_total\` $errors |

Delta hits with the cache's file system full: $during_d req/s against $before_d before ($(f1 "$(echo "$during_d / $before_d" | bc -l)" 2)×).

EOF
fi
