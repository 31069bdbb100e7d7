#!/usr/bin/env bash
# The example configs in etc/, each started as an operator would start it, against the demo
# origin and each other. Only addresses, ports and paths change (and the TLS certificate is
# made here); every other key is the example's own:
#   krill-tls.conf     a TLS listener, validate = "refuse" with demo.tal standing in for
#                      Krill's TAL, the /ta/ passthrough; its upstream is the demo (plain HTTP
#                      here, as the demo speaks no TLS).
#   edge.conf          fed by the krill-tls node over HTTPS (tiered), trusting the test's
#                      certificate with upstream_ca.
#   cluster-node.conf  three nodes naming each other as peers, with the token and the publish
#                      barrier; the upstream list is the demo, then an address where nothing
#                      listens.
#   krill-sync.conf    the one-shot `sync` from a directory in Krill's layout (written from
#                      the krill-tls node), with export_rrdp, export_rsync and validation.
# Each serves (or exports) a notification whose every file has its SHA-256.
#
#   tests/examples/run.sh [path/to/rrdp-proxy]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$top/target/debug/rrdp-proxy}")
. "$top/scripts/lib.sh"
lib_setup examples

# verified BASE [FETCH [CURL-ARGS...]]: the notification at BASE, whose files must all be named
# under BASE, each fetched and checked against its hash; FETCH (default BASE) is where BASE's
# paths are asked for (a node behind a TLS load balancer). Prints the serial.
verified() {
  local base=$1 fetch=${2:-$1} n uri hash got files=0
  local args=("${@:3}")
  n=$(curl -sf "${args[@]}" "${fetch}notification.xml") || return 1
  while read -r line; do
    files=$((files + 1))
    uri=$(sed 's/.* uri="\([^"]*\)".*/\1/' <<<"$line")
    hash=$(sed 's/.* hash="\([^"]*\)".*/\1/' <<<"$line")
    [ "${uri#"$base"}" != "$uri" ] || { log "$uri is not under $base"; return 1; }
    got=$(curl -sf "${args[@]}" "$fetch${uri#"$base"}" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$hash" ] || { log "$uri has hash $got, want $hash"; return 1; }
  done < <(grep -o '<\(snapshot\|delta\) [^>]*' <<<"$n")
  [ "$files" -gt 0 ] || { log "${fetch}notification.xml names no file"; return 1; }
  grep -m1 -o ' serial="[0-9]*"' <<<"$n" | tr -dc 0-9
}

# validated ADMIN: the first repository's last validation refused nothing and found nothing,
# with the demo's three publication points reached from the TAL.
validated() {
  curl -sf "http://$1/status" | python3 -c '
import json, sys
v = json.load(sys.stdin)["repositories"][0]["validation"]
last = v["last"]
sys.exit(0 if v["mode"] == "refuse" and last and not last["refused"]
         and last["findings"] == 0 and last["points_from_anchor"] == 3 else 1)'
}

# instance NAME EXAMPLE SED-ARGS...: the example with the replacements every instance needs
# (its cache, the admin port, /etc/rrdp-proxy/) and SED-ARGS; checked; the path printed.
instance() {
  local name=$1 example=$2; shift 2
  mkdir -p "$work/$name"
  sed -e "s|/var/lib/rrdp-proxy\"|$work/$name/cache\"|" \
      -e "s|/etc/rrdp-proxy/|$work/etc/|g" \
      "$@" "$top/etc/$example" >"$work/$name/proxy.toml"
  # (Inside $(…) errexit is off: the failure is returned explicitly.)
  "$bin" check --config "$work/$name/proxy.toml" >/dev/null \
    || { log "$example: rrdp-proxy check refused it as instantiated"; return 1; }
  echo "$work/$name/proxy.toml"
}

start() { # start NAME CONFIG
  RUST_LOG=info "$bin" --config "$2" >"$work/$1/proxy.log" 2>&1 &
  pids+=($!)
}

show_logs() { for f in "$work"/*/proxy.log; do log "$f:"; tail -n 20 "$f" >&2; done; }

#------------ The origin and the files the examples name ----------------------------------------
D=$(free_port) DEAD=$(free_port)
"$bin" demo --listen "127.0.0.1:$D" --interval 1h >"$work/demo.log" 2>&1 &
pids+=($!)
mkdir -p "$work/etc"
cp "$top/demo.tal" "$work/etc/ta.tal"
# A CA, and one certificate from it for the TLS nodes, for their names and 127.0.0.1 (the
# edge reaches its parent by address); the edge's upstream_ca and the test's curl trust the CA.
(
  cd "$work/etc"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=examples-test-ca \
    -keyout ca.key -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj /CN=rrdp.example.net -keyout privkey.pem -out leaf.csr
  printf 'subjectAltName=DNS:rrdp.example.net,DNS:rrdp-edge1.example.net,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile leaf.ext -out leaf.pem
  cat leaf.pem ca.pem >fullchain.pem
  cp ca.pem krill-ca.pem
) 2>/dev/null
tls=(--cacert "$work/etc/ca.pem")
until_ok 20 curl -sf "http://127.0.0.1:$D/rrdp/notification.xml" \
  || { log "the demo origin never answered"; cat "$work/demo.log" >&2; exit 1; }

#------------ krill-tls.conf ----------------------------------------------------------------------
P1=$(free_port) A1=$(free_port)
log "krill-tls.conf: TLS on $P1, validating from the TAL, in front of the demo"
# Krill's https://127.0.0.1:3000/ is the demo's plain HTTP here: no upstream_ca for it.
cfg=$(instance krill-tls krill-tls.conf \
  -e "s|\"0.0.0.0:443\", \"\[::\]:443\"|\"127.0.0.1:$P1\"|" \
  -e "s|127.0.0.1:9090|127.0.0.1:$A1|" \
  -e "s|https://rrdp.example.net/|https://127.0.0.1:$P1/|g" \
  -e "s|https://127.0.0.1:3000/|http://127.0.0.1:$D/|" \
  -e "/^upstream_ca/d")
start krill-tls "$cfg"
rc=0; until_ok 30 verified "https://127.0.0.1:$P1/rrdp/" "" "${tls[@]}" || rc=1
check "krill-tls.conf serves a verified notification over TLS" $rc
rc=0; until_ok 10 validated "127.0.0.1:$A1" || rc=1
check "krill-tls.conf validated it from the TAL (refuse, no findings, 3 points from the anchor)" $rc
rc=0; curl -sf "${tls[@]}" "https://127.0.0.1:$P1/ta/ta.cer" | cmp -s - <(curl -sf "http://127.0.0.1:$D/ta/ta.cer") || rc=1
check "krill-tls.conf passes /ta/ta.cer through" $rc

#------------ edge.conf ---------------------------------------------------------------------------
P2=$(free_port) A2=$(free_port)
log "edge.conf: TLS on $P2, fed by the krill-tls node"
cfg=$(instance edge edge.conf \
  -e "s|\"0.0.0.0:443\", \"\[::\]:443\"|\"127.0.0.1:$P2\"|" \
  -e "s|127.0.0.1:9090|127.0.0.1:$A2|" \
  -e "s|https://rrdp-edge1.example.net/|https://127.0.0.1:$P2/|" \
  -e "s|^upstream = \"https://rrdp.example.net/rrdp/\"|upstream = \"https://127.0.0.1:$P1/rrdp/\"\nupstream_ca = \"$work/etc/ca.pem\"|")
start edge "$cfg"
parent=$(verified "https://127.0.0.1:$P1/rrdp/" "" "${tls[@]}" || true)
edge_serves() { test "$(verified "https://127.0.0.1:$P2/rrdp/" "" "${tls[@]}")" = "$1"; }
rc=0; until_ok 30 edge_serves "$parent" || rc=1
check "edge.conf serves its parent's serial ($parent), every file verified, under its own name" $rc

#------------ cluster-node.conf -------------------------------------------------------------------
N=() A=()
for i in 0 1 2; do N+=("$(free_port)"); A+=("$(free_port)"); done
log "cluster-node.conf: three nodes on ${N[*]}, publish_delay as the example has it"
for i in 0 1 2; do
  peers=""
  for j in 0 1 2; do [ "$j" = "$i" ] || peers+="\"http://127.0.0.1:${N[$j]}/\", "; done
  cfg=$(instance "node$i" cluster-node.conf \
    -e "s|\"0.0.0.0:80\", \"\[::\]:80\"|\"127.0.0.1:${N[$i]}\"|" \
    -e "s|127.0.0.1:9090|127.0.0.1:${A[$i]}|" \
    -e "s|https://pub1.example.net/rrdp/|http://127.0.0.1:$D/rrdp/|" \
    -e "s|https://pub2.example.net/rrdp/|http://127.0.0.1:$DEAD/rrdp/|" \
    -e "s|^peers = .*|peers = [${peers%, }]|")
  start "node$i" "$cfg"
done
published() { # published ADMIN SERIAL
  test "$(curl -sf "http://$1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["repositories"][0]["serial"])')" = "$2"
}
want=$(curl -sf "http://127.0.0.1:$D/rrdp/notification.xml" | grep -m1 -o ' serial="[0-9]*"' | tr -dc 0-9)
for i in 0 1 2; do
  # The publish barrier (20 s in the example) holds the first serial back that long.
  rc=0; until_ok 60 published "127.0.0.1:${A[$i]}" "$want" || rc=1
  [ "$rc" = 0 ] && { verified "https://rrdp.example.net/rrdp/" "http://127.0.0.1:${N[$i]}/rrdp/" \
    -H "Host: rrdp.example.net" >/dev/null || rc=1; }
  check "cluster node $i publishes serial $want, every file verified" $rc
done
# The peers' object endpoint: the token opens it, nothing else does.
snap=$(curl -sf "http://127.0.0.1:$D/rrdp/notification.xml" | grep -o '<snapshot [^>]*' | sed 's/.* hash="\([^"]*\)".*/\1/')
token=$(sed -n 's/^token = "\([^"]*\)".*/\1/p' "$work/node0/proxy.toml")
rc=0; got=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:${N[1]}/.well-known/rrdp-proxy/object/$snap" | sha256sum | cut -d' ' -f1) || rc=1
[ "$got" = "$snap" ] || rc=1
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${N[1]}/.well-known/rrdp-proxy/object/$snap")
[ "$code" = 404 ] || rc=1
check "a cluster node gives a peer an object for the token (and 404 without it: $code)" $rc

#------------ krill-sync.conf ---------------------------------------------------------------------
log "krill-sync.conf: the one-shot sync from a directory in Krill's layout"
# Krill's RRDP directory: its notification (naming its rrdp_base_uri) and the files under it,
# taken from the krill-tls node.
src="$work/krill-rrdp"
mkdir -p "$src"
n=$(curl -sf "${tls[@]}" "https://127.0.0.1:$P1/rrdp/notification.xml")
while read -r uri; do
  rel=${uri#"https://127.0.0.1:$P1/rrdp/"}
  mkdir -p "$src/$(dirname "$rel")"
  curl -sf "${tls[@]}" -o "$src/$rel" "$uri"
done < <(grep -o ' uri="[^"]*"' <<<"$n" | sed 's/ uri="\(.*\)"/\1/')
sed "s|https://127.0.0.1:$P1/rrdp/|https://rrdp.example.net/rrdp/|g" <<<"$n" >"$src/notification.xml"
cfg=$(instance sync krill-sync.conf \
  -e "s|/var/lib/krill/data/repo/rrdp/|$src/|" \
  -e "s|/var/www/rrdp|$work/www/rrdp|" \
  -e "s|/var/lib/rrdp-proxy-rsync|$work/rsync|")
rc=0; "$bin" sync --config "$cfg" >"$work/sync/proxy.log" 2>&1 || rc=$?
check "krill-sync.conf: rrdp-proxy sync exits 0" $rc
rc=0
out="$work/www/rrdp"
while read -r line; do
  uri=$(sed 's/.* uri="\([^"]*\)".*/\1/' <<<"$line")
  hash=$(sed 's/.* hash="\([^"]*\)".*/\1/' <<<"$line")
  got=$(sha256sum "$out/${uri#https://rrdp.example.net/rrdp/}" 2>/dev/null | cut -d' ' -f1 || true)
  [ "$got" = "$hash" ] || { log "$uri: exported with hash ${got:-none}, want $hash"; rc=1; }
done < <(grep -o '<\(snapshot\|delta\) [^>]*' "$out/notification.xml" 2>/dev/null || echo missing)
check "krill-sync.conf: export_rrdp holds the notification and its files, hashes verified" $rc
rc=0; roas=$(find "$work/rsync/current/" -name '*.roa' 2>/dev/null | wc -l); [ "$roas" -gt 0 ] || rc=1
check "krill-sync.conf: export_rsync holds the objects ($roas ROAs)" $rc

[ "$failed" = 0 ] || show_logs
echo "examples: $passed passed, $failed failed"
[ "$failed" = 0 ]
