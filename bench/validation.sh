#!/usr/bin/env bash
# What RPKI validation costs: a large, validly signed repository (examples/signed_repo.rs:
# a TA, CAS CAs, ROAs of ~2.5 KiB, every object signed with RSA-2048) served from a
# directory, rrdp-proxy in front of it twice — validate = "off", then validate = "refuse"
# with the repository's TAL (its TA certificate through a passthrough). For each: the first
# round (the whole snapshot), then SERIALS-1 Krill-like serials (one CA replaces 10 ROAs and
# re-signs its CRL and manifest), each published by replacing the notification; /status
# gives how long each round took and how long its validation took.
#
#   bench/validation.sh                       defaults: SIZE_MIB=500 CAS=20 SERIALS=6
#   SIZE_MIB=50 bench/validation.sh
#   REPO=/tmp/repo bench/validation.sh        a repository examples/signed_repo built before
#   MODES="off erik" bench/validation.sh      what server.erik costs (validate = "off" both):
#                                             each serial's Erik part (erik_seconds in
#                                             /status: in the round when its deltas continue
#                                             the Erik state, else right after it), against
#                                             the round
#
# Prints a markdown table for docs/benchmarks.md. Needs openssl, curl and python3.
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-500}
CAS=${CAS:-20}
SERIALS=${SERIALS:-6}
MODES=${MODES:-off refuse}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -q
cargo build --release -q --example signed_repo
bin=$top/target/release/rrdp-proxy
. "$top/scripts/lib.sh"
lib_setup validation
TA_PORT=3541 PUBLIC=18541 ADMIN=127.0.0.1:19541

if [ -n "${REPO:-}" ]; then
  # A repository built before (the generator's OUT directory): reused as it is.
  ln -s "$(realpath "$REPO")" "$work/repo"
  echo "(reused $REPO)" >"$work/gen.log"
  CAS=$(grep -c '<publish uri="rsync://bench.test/repo/ta/ca' "$(ls -d "$work"/repo/rrdp/*/1)/snapshot.xml")
  SERIALS=$(ls "$work"/repo/rrdp/notification-*.xml | wc -l)
else
  log "keys: a TA, $CAS CAs, one EE key"
  mkdir -p "$work/keys"
  for n in ta $(seq -f 'ca-%g' 0 $((CAS - 1))) ee; do
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/$n.pem" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$work/keys/$n.pem" -outform DER -out "$work/keys/$n.p8"
    openssl pkey -in "$work/keys/$n.pem" -pubout -outform DER -out "$work/keys/$n.spki"
  done
  log "building a ${SIZE_MIB} MiB signed repository, $SERIALS serials"
  "$top/target/release/examples/signed_repo" "$work/repo" "$work/keys" "$SIZE_MIB" "$CAS" "$SERIALS" 2>"$work/gen.log"
  tail -1 "$work/gen.log" >&2
fi
snapshot_bytes=$(stat -c %s "$(ls -d "$work"/repo/rrdp/*/1)/snapshot.xml")
# The TA certificate over HTTP, as a Publication Server's /ta/ would serve it.
(cd "$work/repo" && exec python3 -m http.server "$TA_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)

status() { curl -sf "http://$ADMIN/status"; }
field() { # field PYTHON-EXPR: evaluated on the first repository's status as `r`
  status | python3 -c "import json,sys; r=json.load(sys.stdin)['repositories'][0]; print($1)"
}

# run MODE: prints one line per serial: serial round_seconds validation_seconds verified
# from_deltas replayed rss_kib erik_seconds
run() {
  local mode=$1 settings="" server=""
  [ "$mode" = off ] && settings='validate = "off"'
  [ "$mode" = erik ] && settings='validate = "off"' && server='erik = true'
  [ "$mode" = refuse ] && settings="validate = \"refuse\"
tal = \"$work/repo/ta.tal\""
  rm -rf "$work/cache"
  cp "$work/repo/rrdp/notification-1.xml" "$work/repo/rrdp/notification.xml"
  cat >"$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$PUBLIC"]
admin_listen = "$ADMIN"
upgrade_sock = "$work/upgrade.sock"
$server
[cache]
dir = "$work/cache"
[[repository]]
public = "https://bench.test/rrdp/"
upstream = "$work/repo/rrdp/"
poll_interval = "1h"
$settings
[[passthrough]]
public = "https://bench.test/ta/"
upstream = "http://127.0.0.1:$TA_PORT/ta/"
[log]
level = "warn"
access = "off"
TOML
  "$bin" --config "$work/proxy.toml" >"$work/proxy-$mode.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for serial in $(seq 1 "$SERIALS"); do
    if [ "$serial" -gt 1 ]; then
      cp "$work/repo/rrdp/notification-$serial.xml" "$work/repo/rrdp/notification.xml"
      curl -sf -X POST "http://$ADMIN/refresh" >/dev/null
    fi
    for _ in $(seq 1 6000); do
      [ "$(field "r['serial']" 2>/dev/null)" = "$serial" ] && break
      sleep 0.1
    done
    [ "$(field "r['serial']")" = "$serial" ] || { log "$mode: serial $serial never published"; tail "$work/proxy-$mode.log" >&2; exit 1; }
    if [ "$mode" = erik ]; then
      # The first build runs right after its round: wait for it too.
      for _ in $(seq 1 6000); do
        [ "$(field "r['erik_serial']" 2>/dev/null)" = "$serial" ] && break
        sleep 0.1
      done
    fi
    local rss
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    echo "$serial $(field "r['last_publish_seconds']") $(field "(r['validation'].get('last') or {}).get('seconds', 0)") $(field "(r['validation'].get('last') or {}).get('verified', 0)") $(field "str((r['validation'].get('last') or {}).get('from_deltas', '-')).lower()") $(field "(r['validation'].get('last') or {}).get('points_replayed', '-')") $rss $(field "r.get('erik_seconds') or 0")"
    if [ "$mode" = refuse ]; then
      local found
      found=$(field "r['validation']['last']['findings']")
      [ "$found" = 0 ] || { log "refuse: serial $serial has $found findings"; field "r['validation']['last']['details'][:3]" >&2; exit 1; }
    fi
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for mode in $MODES; do
  log "mode $mode"
  run "$mode" >"$work/$mode.txt"
done

printf '\nSnapshot %s MiB (%s objects in %s CAs), %s on %s cores.\n\n' \
  "$((snapshot_bytes >> 20))" "$(grep -c '<publish ' "$(ls -d "$work"/repo/rrdp/*/1)/snapshot.xml")" "$CAS" "$(uname -m)" "$(nproc)"
if [ -f "$work/refuse.txt" ]; then
  printf '| serial | round, off (s) | round, refuse (s) | validation (s) | validation / round off | signed objects verified | from deltas | points replayed | peak RSS off / refuse (MiB) |\n'
  printf '|---|---|---|---|---|---|---|---|---|\n'
  paste -d' ' "$work/off.txt" "$work/refuse.txt" | while read -r s r0 _ _ _ _ m0 _ _ r1 v1 n1 d1 p1 m1 _; do
    ratio=$(python3 -c "print(f'{$v1 / $r0 * 100:.1f} %')")
    printf '| %s | %.2f | %.2f | %.3f | %s | %s | %s | %s | %s / %s |\n' "$s" "$r0" "$r1" "$v1" "$ratio" "$n1" "$d1" "$p1" "$((m0 / 1024))" "$((m1 / 1024))"
  done
fi
if [ -f "$work/erik.txt" ]; then
  printf '| serial | round, off (s) | round, erik (s) | Erik part (s) | Erik part / round off | peak RSS off / erik (MiB) |\n'
  printf '|---|---|---|---|---|---|\n'
  paste -d' ' "$work/off.txt" "$work/erik.txt" | while read -r s r0 _ _ _ _ m0 _ _ r1 _ _ _ _ m1 e1; do
    ratio=$(python3 -c "print(f'{$e1 / $r0:.2f}')")
    printf '| %s | %.2f | %.2f | %.3f | %s | %s / %s |\n' "$s" "$r0" "$r1" "$e1" "$ratio" "$((m0 / 1024))" "$((m1 / 1024))"
  done
fi
