# What the test scenarios (tests/*/run.sh) and the benchmarks (bench/*.sh) all set up the same
# way, sourced by each: a scratch directory, the processes to stop at exit, a log line with
# the script's name, free ports, pass/fail counting, and waiting for another process.
#
#   . "$(dirname "$0")/../scripts/lib.sh"     (from bench/)
#   . "$(dirname "$0")/../../scripts/lib.sh"  (from tests/<name>/)
#   lib_setup NAME
#
# After lib_setup: $work (a new /tmp/rrdp-NAME.XXXXXX, mode 755), the array pids (add every
# background process: it is killed at exit), and the functions below. At exit the processes
# are stopped, then `extra_cleanup` runs if the script defines one, and $work is removed unless
# KEEP is set in the environment (then its path is logged).

lib_setup() {
  LIB_NAME=$1
  work=$(mktemp -d "/tmp/rrdp-$1.XXXXXX")
  chmod 755 "$work"
  pids=()
  passed=0
  failed=0
  trap lib_cleanup EXIT
}

lib_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # After the processes are gone: what they held (a mount, a pid file's server) is free.
  if declare -F extra_cleanup >/dev/null; then extra_cleanup || true; fi
  if [ -n "${KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}

log() { printf '[%s %s] %s\n' "$LIB_NAME" "$(date +%T)" "$*" >&2; }

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# check NAME EXIT-CODE: counts and logs one check.
check() {
  if [ "$2" = 0 ]; then passed=$((passed + 1)); log "pass: $1"; else failed=$((failed + 1)); log "FAIL: $1"; fi
}

# until_ok SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds (another process
# gives no event to await); fails after SECONDS.
until_ok() {
  local n=$(($1 * 5)); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# start_demo BIN ADDR SECONDS [ARGS...]: the demo Publication Server (`BIN demo --listen ADDR
# ARGS...`, its log in $work/origin.log), stopped at exit; returns once it serves its
# notification, or fails after SECONDS.
start_demo() {
  local bin=$1 addr=$2 seconds=$3; shift 3
  "$bin" demo --listen "$addr" "$@" >"$work/origin.log" 2>&1 &
  pids+=($!)
  until_ok "$seconds" curl -sf "http://$addr/rrdp/notification.xml" \
    || { log "the demo origin on $addr never answered"; return 1; }
}

# export_static BIN ORIGIN_ADDR PORT: the demo origin's repository as static files in
# $work/static, rrdp-proxy's own export of it (its one-shot sync, `export_rrdp`), its URIs
# under http://127.0.0.1:PORT/rrdp/, for nginx to serve as a krill-sync deployment would.
export_static() {
  local bin=$1 origin=$2 port=$3
  cat > "$work/static.toml" <<EOF
[server]
listen = ["127.0.0.1:1"]
[cache]
dir = "$work/static-cache"
[[repository]]
public = "http://127.0.0.1:$port/rrdp/"
upstream = "http://$origin/rrdp/"
export_rrdp = "$work/static"
[log]
level = "warn"
EOF
  "$bin" sync --config "$work/static.toml" >"$work/static.log" 2>&1 \
    || { log "the static export failed"; cat "$work/static.log" >&2; return 1; }
}
