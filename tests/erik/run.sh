#!/usr/bin/env bash
# The Erik relay (`server.erik`) against code nobody here wrote: APNIC's Erik client and
# reference relay (Perl, ../shared/lab/erik; Debian's Perl modules, installed by .ci/run).
#   1. erik-client, pointed at the proxy in front of the demo, mirrors exactly the objects
#      the demo's manifests reach: the proxy's own export_rsync tree of the same serial
#      (less the TA certificate, which no manifest lists);
#   2. APNIC's erik-updater, run over that mirror, makes the same partitions as the proxy,
#      byte for byte (same ManifestRefs, in the same order); the two indexes name the same
#      partitions and the same indexTime, and differ at most in the order of the partition
#      list, which the draft leaves open (the reference lists them in Perl's hash order);
#   3. a second client run against an unchanged index fetches nothing but the index.
#
#   tests/erik/run.sh [path/to/rrdp-proxy]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$top/target/debug/rrdp-proxy}")
lab=${ERIK_LAB:-$top/../shared/lab/erik}
. "$top/scripts/lib.sh"
lib_setup erik
[ -d "$lab/lib/APNIC" ] || { log "APNIC's Erik client is not at $lab (ERIK_LAB)"; exit 1; }
perl -I"$lab/lib" -e 'use APNIC::RPKI::Erik::Client; use APNIC::RPKI::Erik::Updater;' \
  || { log "the Erik lab's Perl modules are missing (see $lab/LAB.md)"; exit 1; }

ORIGIN=127.0.0.1:$(free_port) PUBLIC=$(free_port) ADMIN=127.0.0.1:$(free_port)
start_demo "$bin" "$ORIGIN" 20 --interval 24h

cat >"$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$PUBLIC"]
admin_listen = "$ADMIN"
threads = 1
upgrade_sock = "$work/upgrade.sock"
erik = true
[cache]
dir = "$work/cache"
[[repository]]
public = "http://127.0.0.1:$PUBLIC/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "1h"
validate = "refuse"
tal = "$top/demo.tal"
export_rsync = "$work/export"
TOML
RUST_LOG=info "$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)
indexed() { curl -sf "http://$ADMIN/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["erik"]["fqdns"] and s["repositories"][0]["exported_serial"] else 1)'; }
until_ok 30 indexed || { log "no Erik index"; tail -20 "$work/proxy.log" >&2; exit 1; }

mkdir -p "$work/mirror" "$work/httpd"
client() {
  APNIC_DEBUG=1 perl -I"$lab/lib" "$lab/bin/erik-client" --cache-dir "$work/mirror" \
    --server "127.0.0.1:$PUBLIC" --fqdn demo.test >"$work/client-$1.log" 2>&1
}
# Erik requests the proxy answered, from /metrics.
requests() {
  curl -sf "http://$ADMIN/metrics" | awk '/^rrdp_proxy_requests_total\{.*kind="erik_/ { n += $NF } END { print n + 0 }'
}

# 1. The client's mirror is the repository the manifests reach.
before=$(requests)
rc=0; client 1 || rc=$?
check "erik-client mirrors the proxy (exit $rc)" $rc
first=$(($(requests) - before))
rc=0
diff -r -x ta.cer "$work/export/current" "$work/mirror/demo.test" >"$work/diff.txt" 2>&1 || rc=1
n=$(find "$work/mirror/demo.test" -type f | wc -l)
check "the mirror is the export_rsync tree of the same serial, less ta.cer ($n objects)" $rc
[ $rc = 0 ] || head -20 "$work/diff.txt" >&2

# 2. The reference relay over the same objects.
rc=0
perl -I"$lab/lib" "$lab/bin/erik-updater" --cache-dir "$work/mirror" --httpd-dir "$work/httpd" \
  >"$work/updater.log" 2>&1 || rc=$?
check "erik-updater runs over the mirror (exit $rc)" $rc
curl -sf "http://127.0.0.1:$PUBLIC/.well-known/erik/index/demo.test" -o "$work/ours.der"
cp "$work/httpd/.well-known/erik/index/demo.test" "$work/theirs.der"
# The partition lists: each partition by the name it is served under, and the indexTime.
partitions() { python3 "$top/tests/erik/partitions.py" "$1"; }
partitions "$work/ours.der" >"$work/ours.txt"
partitions "$work/theirs.der" >"$work/theirs.txt"
rc=0; diff <(sort "$work/ours.txt") <(sort "$work/theirs.txt") >&2 || rc=1
check "the reference's index names the same partitions and indexTime ($(grep -vc indexTime "$work/ours.txt") partitions; order: ours by AKI octet, theirs $(cmp -s "$work/ours.txt" "$work/theirs.txt" && echo the same || echo another))" $rc
rc=0
while read -r name; do
  [ "${name%% *}" = indexTime ] && continue
  curl -sf "http://127.0.0.1:$PUBLIC/.well-known/ni/sha-256/$name" -o "$work/p.der" || rc=1
  cmp -s "$work/p.der" "$work/httpd/.well-known/ni/sha-256/$name" || rc=1
done <"$work/ours.txt"
check "each partition is byte for byte the reference's (same ManifestRefs, same order)" $rc

# 3. Nothing changed: a second run asks for the index and nothing else.
before=$(requests)
rc=0; client 2 || rc=$?
again=$(($(requests) - before))
rc2=0; [ "$again" = 1 ] || rc2=1
check "a second run against the same index fetches only the index ($again request(s), the first run $first)" $((rc | rc2))

log "$passed passed, $failed failed"
[ "$failed" = 0 ]
