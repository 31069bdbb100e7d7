#!/usr/bin/env bash
# Captures the RPKI fixture the validation tests use: real Krill output, from Krill in testbed
# mode (an embedded TA, a CA "testbed" and a child CA "child"), at two serials:
#   a/  - the testbed CA publishes ROAs R1 and R2 (plus the child's ROA)
#   b/  - R2 removed: Krill withdrew it and its next CRL revokes R2's EE certificate
# Each directory holds notification.xml and snapshot.xml; the top holds ta.cer and ta.tal.
# The tests change one thing in this output at a time (see tests/it/validation.rs).
#
# Usage: capture.sh PEERS_DIR   (Krill and krillc under PEERS_DIR/bin; run once, commit the files)
set -euo pipefail
PEERS=${1:-/opt/peers}
OUT=$(cd "$(dirname "$0")" && pwd)
LAB=$(mktemp -d)
PORT=3977
trap 'kill $pid 2>/dev/null || true; rm -rf "$LAB"' EXIT

mkdir -p "$LAB/data"
cat > "$LAB/krill.conf" <<CONF
ip = "127.0.0.1"
port = $PORT
storage_uri = "$LAB/data"
admin_token = "fixture"
log_type = "file"
log_file = "$LAB/krill.log"
[testbed]
rrdp_base_uri = "https://rrdp.test/rrdp/"
rsync_jail = "rsync://rrdp.test/repo/"
ta_aia = "rsync://rrdp.test/ta/ta.cer"
ta_uri = "https://rrdp.test/ta/ta.cer"
CONF
"$PEERS/bin/krill" --config "$LAB/krill.conf" >"$LAB/stdout.log" 2>&1 &
pid=$!
base=https://127.0.0.1:$PORT
for _ in $(seq 1 300); do curl -skf "$base/rrdp/notification.xml" >/dev/null && break; sleep 0.2; done
krillc() { KRILL_CLI_SERVER=$base/ KRILL_CLI_TOKEN=fixture "$PEERS/bin/krillc" "$@"; }

serial() { curl -skf "$base/rrdp/notification.xml" | grep -m1 -o 'serial="[0-9]*"' | tr -dc 0-9; }
# Waits for a serial newer than $1 and one more second, so that the next change is signed in
# a later second than this one (RPs order manifests by their number, then time).
wait_newer() {
  for _ in $(seq 1 300); do [ "$(serial)" -gt "$1" ] && { sleep 1.1; return 0; }; sleep 0.1; done
  echo "krill published nothing new" >&2; exit 1
}
save() {
  mkdir -p "$OUT/$1"
  curl -skf "$base/rrdp/notification.xml" > "$OUT/$1/notification.xml"
  snap=$(grep -o '<snapshot uri="[^"]*"' "$OUT/$1/notification.xml" | cut -d'"' -f2 | sed "s#^https://rrdp.test/#$base/#")
  curl -skf "$snap" > "$OUT/$1/snapshot.xml"
}

# A child CA under the testbed CA, with its own publication point in the same repository.
s=$(serial)
krillc add --ca child >/dev/null
krillc repo request --ca child > "$LAB/pub.xml"
krillc pubserver publishers add --request "$LAB/pub.xml" > "$LAB/repo.xml"
krillc repo configure --ca child --response "$LAB/repo.xml" >/dev/null
krillc parents request --ca child > "$LAB/child.xml"
krillc children add --ca testbed --child child --asn AS64500 --ipv4 10.1.0.0/16 --request "$LAB/child.xml" > "$LAB/resp.xml"
krillc parents add --ca child --parent testbed --response "$LAB/resp.xml" >/dev/null
for _ in $(seq 1 300); do krillc show --ca child | grep -q '10.1.0.0/16' && break; sleep 0.2; done
krillc roas update --ca child --add "10.1.0.0/24-24 => 64500" >/dev/null
wait_newer "$s"

s=$(serial)
krillc roas update --ca testbed --add "10.0.0.0/24-24 => 64496" --add "10.0.1.0/24-24 => 64497" >/dev/null
wait_newer "$s"
save a

s=$(serial)
krillc roas update --ca testbed --remove "10.0.1.0/24-24 => 64497" >/dev/null
wait_newer "$s"
save b

curl -skf "$base/ta/ta.cer" > "$OUT/ta.cer"
curl -skf "$base/ta/ta.tal" > "$OUT/ta.tal"
echo "captured serials: $(grep -o 'serial="[0-9]*"' "$OUT/a/notification.xml" | head -1) and $(grep -o 'serial="[0-9]*"' "$OUT/b/notification.xml" | head -1)"
