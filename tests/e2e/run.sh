#!/usr/bin/env bash
# End-to-end: real Krill (testbed mode) as origin, rrdp-proxy over TLS in front of it, and
# real Routinator, rpki-client and Fort validating through the proxy. Everything binds to
# loopback; the RPs trust a lab CA made here and are never told to skip TLS checks.
#
#   tests/e2e/run.sh [path/to/rrdp-proxy]
#
# Two generations of Relying Parties run every scenario: Debian 12's rpki-client 8.2 and
# Fort 1.5.4, and the versions operators run now, rpki-client 9.7 and Fort 1.6.6 from
# bookworm-backports (unpacked side by side under $PEERS/bpo, never installed over the
# others), plus Routinator's current release. APNIC's Erik client (../shared/lab/erik, its
# Perl modules from Debian) mirrors the same repository from the proxy's Erik relay.
#
# Needs root (it installs packages, adds rrdp.test to /etc/hosts and the lab CA to the
# system store for rpki-client). Krill and Routinator are built from crates.io into
# $PEERS (default /opt/peers) on the first run (about 10 minutes on 2 cores) and reused after.
# Prints a table (RP with its version, scenario, VRPs expected/seen, pass) and exits non-zero
# on any mismatch.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
proxy_bin=$(realpath "${1:-$top/target/release/rrdp-proxy}")
PEERS=${PEERS:-/opt/peers}
. "$top/scripts/lib.sh"
lib_setup e2e
LAB=$work   # mode 755: rpki-client drops privileges to _rpki-client
export PATH="$PEERS/bin:/usr/sbin:$PATH"
KRILL_PORT=3000
PROXY_TLS=8443
PROXY_PLAIN=8480
ERIK_LAB=${ERIK_LAB:-$top/../shared/lab/erik}
ADMIN=127.0.0.1:9443
results=()
failures=0
# The lab is kept after a failure (the RPs' logs say why) or with KEEP_LAB (or KEEP) set.
KEEP=${KEEP:-${KEEP_LAB:-}}
extra_cleanup() { [ "$failures" -eq 0 ] || KEEP=1; }

#------------ Peers ---------------------------------------------------------------------------
install_peers() {
  export DEBIAN_FRONTEND=noninteractive
  local need=()
  for p in rpki-client fort-validator openssl curl ca-certificates binutils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q "${need[@]}" >/dev/null
  fi
  mkdir -p "$PEERS"
  install_backports_rps
  if [ ! -x "$PEERS/bin/krill" ]; then
    log "building krill from crates.io (first run only)"
    cargo install -q --locked --root "$PEERS" krill
  fi
  if [ ! -x "$PEERS/bin/routinator" ]; then
    log "building routinator from crates.io (first run only)"
    # Its lock file pins a crate version the registry no longer serves: no --locked.
    cargo install -q --root "$PEERS" routinator
  fi
}

# rpki-client 9.7 and Fort 1.6.6 from Debian's bookworm-backports, unpacked into $PEERS/bpo
# beside Debian 12's packaged 8.2 and 1.5.4 (which stay installed: their package gives the
# _rpki-client user and the libraries both generations link). The suite is added with the
# archive keyring and pinned below everything, so nothing else is ever upgraded from it.
install_backports_rps() {
  [ -x "$PEERS/bpo/usr/sbin/rpki-client" ] && [ -x "$PEERS/bpo/usr/bin/fort" ] && return 0
  log "unpacking rpki-client and fort from bookworm-backports"
  local uri
  uri=$(grep -hm1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}')
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" > /etc/apt/sources.list.d/rrdp-proxy-backports.sources
  printf 'Package: *\nPin: release a=bookworm-backports\nPin-Priority: 50\n' \
    > /etc/apt/preferences.d/rrdp-proxy-backports
  apt-get update -q >/dev/null
  local debs
  debs=$(mktemp -d)
  chmod 777 "$debs"   # apt downloads as _apt
  (cd "$debs" && apt-get download -q rpki-client/bookworm-backports fort-validator/bookworm-backports >/dev/null 2>&1)
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$PEERS/bpo"; done
  rm -rf "$debs"
}

#------------ Names and TLS -------------------------------------------------------------------
setup_tls() {
  grep -q ' rrdp.test$' /etc/hosts || echo "127.0.0.1 rrdp.test" >> /etc/hosts
  mkdir -p "$LAB/tls" "$LAB/cadir"
  cd "$LAB/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=rrdp-proxy e2e lab CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout rrdp.key -out rrdp.csr -subj "/CN=rrdp.test" 2>/dev/null
  printf "subjectAltName=DNS:rrdp.test,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" > ext.cnf
  openssl x509 -req -in rrdp.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out rrdp.crt -days 30 -extfile ext.cnf 2>/dev/null
  # rpki-client and curl use the system store; Fort a hashed CA directory; Routinator a file.
  cp ca.crt /usr/local/share/ca-certificates/rrdp-proxy-e2e-lab.crt
  update-ca-certificates >/dev/null 2>&1
  cp ca.crt "$LAB/cadir/" && openssl rehash "$LAB/cadir" >/dev/null 2>&1 || c_rehash "$LAB/cadir" >/dev/null
  cd - >/dev/null
}

#------------ Krill ---------------------------------------------------------------------------
krillc() {
  KRILL_CLI_SERVER=https://localhost:$KRILL_PORT/ KRILL_CLI_TOKEN=labtoken "$PEERS/bin/krillc" "$@"
}

start_krill() {
  mkdir -p "$LAB/krill/data"
  cat > "$LAB/krill/krill.conf" <<EOF
ip = "127.0.0.1"
port = $KRILL_PORT
storage_uri = "$LAB/krill/data"
admin_token = "labtoken"
log_type = "file"
log_file = "$LAB/krill/krill.log"
# Krill lists few deltas (by default at least 5, kept 20 min to 2 h); here fewer still, so
# that the catch-up scenario leaves an RP behind by more serials than Krill lists.
rrdp_delta_files_min_nr = 2
rrdp_delta_files_min_seconds = 0
rrdp_delta_files_max_nr = 3
[testbed]
rrdp_base_uri = "https://rrdp.test:$PROXY_TLS/rrdp/"
rsync_jail = "rsync://rrdp.test/repo/"
ta_aia = "rsync://rrdp.test/ta/ta.cer"
ta_uri = "https://rrdp.test:$PROXY_TLS/ta/ta.cer"
EOF
  krill --config "$LAB/krill/krill.conf" >>"$LAB/krill/stdout.log" 2>&1 &
  krill_pid=$!
  pids+=("$krill_pid")
  for _ in $(seq 1 300); do
    curl -skf "https://127.0.0.1:$KRILL_PORT/rrdp/notification.xml" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "krill did not come up"; tail -20 "$LAB/krill/krill.log" || true; return 1
}

stop_krill() { kill "$krill_pid"; wait "$krill_pid" 2>/dev/null || true; }

krill_serial() {
  curl -skf "https://127.0.0.1:$KRILL_PORT/rrdp/notification.xml" | grep -m1 -o 'serial="[0-9]*"' | tr -dc 0-9
}

# The ROA files in Krill's current snapshot: Krill names each after the hex of its definition.
krill_roa_files() {
  local snap
  snap=$(curl -skf "https://127.0.0.1:$KRILL_PORT/rrdp/notification.xml" | grep -o '<snapshot uri="[^"]*"' \
    | cut -d'"' -f2 | sed "s#^https://rrdp.test:$PROXY_TLS/#https://127.0.0.1:$KRILL_PORT/#")
  curl -skf "$snap" | grep -o '/[0-9a-f]*\.roa"' | tr -d '/"' | sort
}

# Waits until Krill has published exactly the configured ROAs (krillc returns before Krill
# has necessarily written them to its repository).
krill_wait_roas() {
  local want d
  want=$(for d in "${definitions[@]}"; do printf '%s' "$d" | od -An -tx1 | tr -d ' \n'; echo .roa; done | sort)
  for _ in $(seq 1 300); do
    # Published: its manifest's second is the one the next change must pass.
    [ "$(krill_roa_files)" = "$want" ] && { last_change=$(date +%s); return 0; }
    sleep 0.1
  done
  log "krill never published the configured ROAs"; return 1
}

#------------ rrdp-proxy ----------------------------------------------------------------------
start_proxy() {
  mkdir -p "$LAB/proxy"
  # The TAL straight from Krill, before anything listens where its URIs point.
  [ -s "$LAB/proxy/testbed.tal" ] || curl -skf "https://127.0.0.1:$KRILL_PORT/ta/ta.tal" > "$LAB/proxy/testbed.tal"
  local upstream_lines
  if [ -n "${PROXY_SOURCE_DIR:-}" ]; then
    upstream_lines="upstream = \"$PROXY_SOURCE_DIR\""
  else
    upstream_lines="upstream = \"https://127.0.0.1:$KRILL_PORT/rrdp/\"
upstream_insecure = true          # Krill's self-signed certificate"
  fi
  cat > "$LAB/proxy/proxy.toml" <<EOF
[server]
# Plain HTTP for the Erik client (it speaks no TLS); the RPs use the TLS listener.
listen = ["127.0.0.1:$PROXY_PLAIN"]
erik = true
tls_listen = ["127.0.0.1:$PROXY_TLS"]
tls_cert = "$LAB/tls/rrdp.crt"
tls_key = "$LAB/tls/rrdp.key"
admin_listen = "$ADMIN"
[cache]
dir = "$LAB/proxy/cache"
[log]
access = "json"   # who fetched what, with which encoding (the gzip check reads it)
[[repository]]
public = "https://rrdp.test:$PROXY_TLS/rrdp/"
$upstream_lines
poll_interval = "2s"
export_rsync = "$LAB/proxy/rsync"
# Nothing an RP would reject is published: validated top-down from Krill's TAL, whose TA
# certificate comes through the passthrough below.
validate = "refuse"
tal = "$LAB/proxy/testbed.tal"
[[passthrough]]
public = "https://rrdp.test:$PROXY_TLS/ta/"
upstream = "https://127.0.0.1:$KRILL_PORT/ta/"
upstream_insecure = true
EOF
  RUST_LOG=info "$proxy_bin" --config "$LAB/proxy/proxy.toml" >>"$LAB/proxy/proxy.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  for _ in $(seq 1 100); do
    curl -sf "http://$ADMIN/status" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "rrdp-proxy did not come up"; tail -20 "$LAB/proxy/proxy.log"; return 1
}

stop_proxy() { kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; }

proxy_serial() {
  curl -sf "http://$ADMIN/status" | grep -m1 -o '"serial": [0-9]*' | tr -dc 0-9
}

# Waits for Krill to publish the configured ROAs, asks the proxy to poll, then waits until it
# serves Krill's serial.
sync_proxy() {
  krill_wait_roas
  local want
  want=$(krill_serial)
  for _ in $(seq 1 150); do
    curl -sf -X POST "http://$ADMIN/refresh" >/dev/null || true
    [ "$(proxy_serial)" = "$want" ] && return 0
    sleep 0.2
  done
  log "proxy stuck at serial $(proxy_serial), krill at $want"; return 1
}

# Waits until the gzip variants of the served serial's files are made.
wait_compressed() {
  local want
  want=$(proxy_serial)
  for _ in $(seq 1 100); do
    curl -sf "http://$ADMIN/status" | grep -qE "\"compressed_serial\": $want[^0-9]" && return 0
    sleep 0.1
  done
  log "gzip variants of serial $want never made"; return 1
}

metric() { # metric NAME-REGEX: sum of matching samples
  curl -sf "http://$ADMIN/metrics" | { grep -E "^$1" || true; } | awk '{s+=$NF} END {print s+0}'
}

#------------ Relying parties -----------------------------------------------------------------
# Each prints the VRPs as sorted "ASN,prefix,maxlen" lines.
run_routinator() {
  mkdir -p "$LAB/routinator/tals"
  cp "$LAB/tals/testbed.tal" "$LAB/routinator/tals/"
  # HOME points into the lab so no ~/.routinator.conf is read.
  { HOME="$LAB/routinator" routinator --no-rir-tals --extra-tals-dir "$LAB/routinator/tals" \
      -r "$LAB/routinator/cache" --disable-rsync --rrdp-root-cert "$LAB/tls/ca.crt" \
      --allow-dubious-hosts vrps -f csv 2>>"$LAB/routinator/log" || true; } \
    | tail -n +2 | cut -d, -f1-3 | sort
}

# The two generations of rpki-client and Fort; each instance has its own cache and log.
RPKI_CLIENTS=(/usr/sbin/rpki-client "$PEERS/bpo/usr/sbin/rpki-client")
FORTS=(/usr/bin/fort "$PEERS/bpo/usr/bin/fort")

run_rpki_client() { # run_rpki_client N: the N-th of RPKI_CLIENTS
  local dir="$LAB/rpki-client-$1"
  mkdir -p "$dir/cache" "$dir/out"
  chown -R _rpki-client "$dir" 2>/dev/null || true
  "${RPKI_CLIENTS[$1]}" -v -t "$LAB/tals/testbed.tal" -d "$dir/cache" -c -e /bin/false \
    "$dir/out" >>"$dir/log" 2>&1 || true
  tail -n +2 "$dir/out/csv" 2>/dev/null | cut -d, -f1-3 | sort
}

run_fort() { # run_fort N: the N-th of FORTS
  local dir="$LAB/fort-$1"
  mkdir -p "$dir/cache"
  { "${FORTS[$1]}" --mode=standalone --tal="$LAB/tals/testbed.tal" --local-repository="$dir/cache" \
      --rsync.enabled=false --http.ca-path="$LAB/cadir" --output.roa=- 2>>"$dir/log" || true; } \
    | { grep -E '^AS[0-9]+,' || true; } | cut -d, -f1-3 | sort
}

# Every RP instance: "routinator", "rpki-client:N", "fort:N".
RPS=(routinator rpki-client:0 rpki-client:1 fort:0 fort:1)

run_rp() { # run_rp ID: its VRPs
  case $1 in
    routinator) run_routinator ;;
    rpki-client:*) run_rpki_client "${1#*:}" ;;
    fort:*) run_fort "${1#*:}" ;;
  esac
}

rp_name() { # rp_name ID: the RP with its version, for the table
  case $1 in
    routinator) echo "routinator $(routinator --version | awk '{print $2}')" ;;
    rpki-client:*) echo "rpki-client $("${RPKI_CLIENTS[${1#*:}]}" -V 2>&1 | awk '{print $2; exit}')" ;;
    fort:*) echo "fort $("${FORTS[${1#*:}]}" --version 2>&1 | awk '{print $2; exit}')" ;;
  esac
}

#------------ Checks --------------------------------------------------------------------------
definitions=()   # the ROAs configured in Krill, as "PREFIX-MAXLEN => ASN"

# The VRPs those ROAs make, as the RPs print them: "ASN,prefix,maxlen", sorted.
expect_sorted() {
  local d
  for d in "${definitions[@]}"; do
    sed -E 's#^(.*)-([0-9]+) => ([0-9]+)$#AS\3,\1,\2#' <<<"$d"
  done | sort
}

record() { # record RP SCENARIO EXPECTED SEEN OK
  results+=("$(printf '| %-18s | %-40s | %8s | %5s | %-4s |' "$1" "$2" "$3" "$4" "$5")")
  [ "$5" = pass ] || failures=$((failures + 1))
}

check_rp() { # check_rp RP-ID SCENARIO
  local rp scenario=$2 seen want n_seen n_want
  rp=$(rp_name "$1")
  seen=$(run_rp "$1")
  want=$(expect_sorted)
  n_seen=$(grep -c . <<<"$seen" || true)
  n_want=$(grep -c . <<<"$want" || true)
  if [ "$seen" = "$want" ]; then
    record "$rp" "$scenario" "$n_want" "$n_seen" pass
  else
    record "$rp" "$scenario" "$n_want" "$n_seen" FAIL
    log "$rp / $scenario: expected"; printf '  %s\n' $want >&2
    log "$rp / $scenario: seen"; printf '  %s\n' $seen >&2
  fi
}

check_all() { for rp in "${RPS[@]}"; do check_rp "$rp" "$1"; done; }

# Krill issues a new manifest with every change, its thisUpdate in whole seconds; RFC 9286
# wants each newer than the last, and rpki-client 9.7 keeps the older manifest when two share
# a second (seen in CI: "#0B and #0A were issued at same issuance date"). So a change waits
# until the second of the previous one has passed.
last_change=0
next_second() {
  while [ "$(date +%s)" -le "$last_change" ]; do sleep 0.05; done
  last_change=$(date +%s)
}

roa_add() { # roa_add PREFIX MAXLEN ASN
  next_second
  krillc roas update --ca testbed --add "$1-$2 => $3" >/dev/null
  definitions+=("$1-$2 => $3")
}

roa_remove() {
  next_second
  krillc roas update --ca testbed --remove "$1-$2 => $3" >/dev/null
  local keep=() d
  for d in "${definitions[@]}"; do [ "$d" = "$1-$2 => $3" ] || keep+=("$d"); done
  definitions=("${keep[@]}")
}

errors_served() { metric 'rrdp_proxy_requests_total\{kind="(notification|file)",result="[a-z]+",status="(404|5[0-9][0-9])"\}'; }

#------------ The scenarios -------------------------------------------------------------------
install_peers
perl -I"$ERIK_LAB/lib" -e 'use APNIC::RPKI::Erik::Client;' \
  || { log "APNIC's Erik client cannot run (its Perl modules: $ERIK_LAB/LAB.md)"; exit 1; }
setup_tls
log "lab in $LAB"
start_krill
start_proxy
roa_add 10.0.0.0/24 24 64496
roa_add 10.1.0.0/16 20 64497
roa_add 2001:db8::/32 48 64498
sync_proxy
mkdir -p "$LAB/tals"
curl -sf "https://rrdp.test:$PROXY_TLS/ta/ta.tal" > "$LAB/tals/testbed.tal"

log "1-2: initial validation"
check_all "initial ROAs"
# The proxy validated Krill's repository from its TAL and found nothing to refuse.
validation=$(curl -sf "http://$ADMIN/status" | python3 -c 'import json,sys; v=json.load(sys.stdin)["repositories"][0]["validation"]["last"]; print(v["findings"], v["points_from_anchor"])')
ok=$([ "${validation%% *}" = 0 ] && [ "${validation##* }" -ge 2 ] && echo pass || echo FAIL)
record proxy "RPKI validation (TAL): findings, points" "0, >=2" "${validation/ /, }" "$ok"

log "3: churn"
for round in 1 2 3; do
  roa_add "10.$((10 + round)).0.0/24" 24 "$((65000 + round))"
  [ "$round" -eq 2 ] && roa_remove 10.1.0.0/16 20 64497
  sync_proxy
  check_all "churn round $round"
done
n=$(errors_served)
record proxy "no 404/5xx served for RRDP files" 0 "$n" "$([ "$n" = 0 ] && echo pass || echo FAIL)"

log "5: conditional requests"
before=$(metric 'rrdp_proxy_requests_total\{kind="notification",result="hit",status="304"\}')
check_rp routinator "second run, unchanged"
# rpki-client speaks HTTP/1.1 (over TLS here), and its conditional GET of the notification
# is a request the lean path answers (src/serve/lean.rs), not pingora's session.
lean_before=$(metric 'rrdp_proxy_lean_responses_total')
for rp in rpki-client:0 rpki-client:1; do check_rp "$rp" "second run, unchanged"; done
lean=$(( $(metric 'rrdp_proxy_lean_responses_total') - lean_before ))
after=$(metric 'rrdp_proxy_requests_total\{kind="notification",result="hit",status="304"\}')
record proxy "304s for unchanged notification" ">0" "$((after - before))" "$([ "$after" -gt "$before" ] && echo pass || echo FAIL)"
record proxy "rpki-client's requests answered by the lean path" ">0" "$lean" "$([ "$lean" -gt 0 ] && echo pass || echo FAIL)"

log "4: outage"
stop_krill
curl -sf -X POST "http://$ADMIN/refresh" >/dev/null
check_all "origin down"
stop_proxy
start_proxy
check_all "origin down, proxy restarted"
# With empty RP caches everything (TA certificate, notification, snapshot) must come from
# the proxy's own store.
rm -rf "$LAB/routinator/cache" "$LAB"/rpki-client-*/cache "$LAB"/fort-*/cache
check_all "origin down, RP caches wiped"
start_krill
roa_add 192.0.2.0/24 24 64499
sync_proxy
check_all "origin back, new ROA"
n=$(errors_served)
record proxy "no 404/5xx served (whole run)" 0 "$n" "$([ "$n" = 0 ] && echo pass || echo FAIL)"

log "6: compression"
# Each rpki-client gets gzip if it asks for it: 9.x sends "Accept-Encoding: gzip, deflate",
# the 8.2 in Debian 12 sends "Accept-Encoding: identity" and must get identity. The JSON
# access log says, per request, who asked (user agent), for what (kind) and the encoding.
gzip_in_log() { # gzip_in_log KIND UA-SUBSTRING: access-log lines of KIND for UA sent gzip
  { grep -F '"encoding":"gzip"' "$LAB/proxy/proxy.log" || true; } | { grep -F "\"kind\":\"$1\"" || true; } \
    | { grep -F "$2" || true; } | wc -l
}
for i in 0 1; do
  bin=${RPKI_CLIENTS[$i]}
  name=$(rp_name "rpki-client:$i")
  # Both generations call themselves "OpenBSD rpki-client"; they run one after the other, so
  # the lines each run adds are its own.
  ua='rpki-client'
  # (grep without -q reads all of strings' output: an early exit would fail the pipe.)
  if strings "$bin" | grep -i 'Accept-Encoding:.*gzip' >/dev/null; then asks=yes; else asks=no; fi
  rm -rf "$LAB/rpki-client-$i/cache"
  before=$(gzip_in_log snapshot "$ua")
  check_rp "rpki-client:$i" "fresh cache (gzip if it asks)"
  got=$(( $(gzip_in_log snapshot "$ua") - before ))
  if [ "$asks" = no ]; then want=0; ok=$([ "$got" = 0 ] && echo pass || echo FAIL)
  else want=">0"; ok=$([ "$got" -gt 0 ] && echo pass || echo FAIL); fi
  record "$name" "snapshot gzip-encoded (asks: $asks)" "$want" "$got" "$ok"
  # A new serial: the RP with a warm cache fetches the delta, gzip-encoded if it asks.
  # rpki-client 9.x now and then drops its state on purpose and takes the snapshot instead
  # (it logs "reinitializing"; seen in CI): that run says nothing about deltas, so a new
  # serial is made and the RP runs again, at most three times.
  before=$(gzip_in_log delta "$ua")
  for try in 0 1 2; do
    roa_add "198.51.$((100 + 3 * i + try)).0/24" 24 "$((64510 + i))"
    sync_proxy
    # The gzip variants are made in the background after publishing (until then the delta is
    # served as it is, which is correct but not what this checks): wait for them.
    wait_compressed
    lines=$(wc -l <"$LAB/rpki-client-$i/log")
    check_rp "rpki-client:$i" "new serial (delta, gzip if it asks)"
    # (grep -c, not -q: an early exit would fail the pipe.)
    reinit=$(tail -n +"$((lines + 1))" "$LAB/rpki-client-$i/log" | { grep -c reinitializing || true; })
    [ "$reinit" -gt 0 ] || break
    log "$name reinitialized on its own (a snapshot, not a delta): once more"
  done
  got=$(( $(gzip_in_log delta "$ua") - before ))
  if [ "$asks" = no ]; then want=0; ok=$([ "$got" = 0 ] && echo pass || echo FAIL)
  else want=">0"; ok=$([ "$got" -gt 0 ] && echo pass || echo FAIL); fi
  record "$name" "delta gzip-encoded (asks: $asks)" "$want" "$got" "$ok"
done
# A client that accepts gzip (curl --compressed) gets it, and the decoded body has the hash.
snap_uri=$(curl -sf "https://rrdp.test:$PROXY_TLS/rrdp/notification.xml" | grep -o '<snapshot [^>]*')
uri=$(sed 's/.* uri="\([^"]*\)".*/\1/' <<<"$snap_uri")
hash=$(sed 's/.* hash="\([^"]*\)".*/\1/' <<<"$snap_uri")
enc=$(curl -sf -o /dev/null -w '%header{content-encoding}' -H 'Accept-Encoding: gzip' "$uri" || true)
got_hash=$(curl -sf --compressed "$uri" | sha256sum | cut -d' ' -f1)
ok=$([ "$enc" = gzip ] && [ "$got_hash" = "$hash" ] && echo pass || echo FAIL)
record curl "snapshot gzip, hash after decoding" gzip "${enc:-none}" "$ok"

log "8: catch-up: RPs away for more serials than Krill lists"
# Routinator and rpki-client 9.7 are left behind while Krill publishes four serials; Krill
# lists three deltas at most, the proxy its history (as long as the deltas' total stays below
# the snapshot's size). Their next run must catch up with the proxy's deltas, not the
# snapshot (counted in the access log), and end with the right VRPs.
check_rp routinator "before the catch-up"
for round in 1 2 3 4; do
  roa_add "203.0.113.$((round * 16))/28" 28 "$((64520 + round))"
  sync_proxy
done
krill_lists=$(curl -skf "https://127.0.0.1:$KRILL_PORT/rrdp/notification.xml" | grep -c '<delta ' || true)
proxy_lists=$(curl -sf "https://rrdp.test:$PROXY_TLS/rrdp/notification.xml" | grep -c '<delta ' || true)
record proxy "deltas listed: more than Krill's $krill_lists" ">$krill_lists" "$proxy_lists" "$([ "$proxy_lists" -gt "$krill_lists" ] && echo pass || echo FAIL)"
served_to() { # served_to KIND UA-SUBSTRING: access-log lines of KIND answered 200 to UA
  { grep -F '"status":200' "$LAB/proxy/proxy.log" || true; } | { grep -F "\"kind\":\"$1\"" || true; } \
    | { grep -F "$2" || true; } | wc -l
}
for pair in "routinator|Routinator/" "rpki-client:1|rpki-client"; do
  rp=${pair%%|*} ua=${pair#*|}
  snapshots=$(served_to snapshot "$ua") deltas=$(served_to delta "$ua")
  check_rp "$rp" "catch-up after 4 serials"
  snapshots=$(( $(served_to snapshot "$ua") - snapshots )) deltas=$(( $(served_to delta "$ua") - deltas ))
  ok=$([ "$snapshots" = 0 ] && [ "$deltas" -ge 4 ] && echo pass || echo FAIL)
  record "$(rp_name "$rp")" "catch-up by deltas: snapshots, deltas" "0, >=4" "$snapshots, $deltas" "$ok"
done

log "7: krill-sync parity"
# The rsync export: each object's modification time is its own (a certificate's notBefore),
# and the tree holds one file per object of the snapshot.
want=$(proxy_serial)
for _ in $(seq 1 100); do
  curl -sf "http://$ADMIN/status" | grep -q "\"exported_serial\": $want" && break
  sleep 0.1
done
cer=$(find "$LAB/proxy/rsync/current/" -name '*.cer' -print -quit)
not_before=$(date -d "$(openssl x509 -inform DER -in "$cer" -noout -startdate | cut -d= -f2)" +%s)
mtime=$(stat -c %Y "$cer")
record proxy "rsync export: .cer mtime = notBefore" "$not_before" "$mtime" "$([ "$mtime" = "$not_before" ] && echo pass || echo FAIL)"
snap_hash=$(curl -sf "https://rrdp.test:$PROXY_TLS/rrdp/notification.xml" | grep -o '<snapshot [^>]*' | sed 's/.* hash="\([^"]*\)".*/\1/')
n_snapshot=$(grep -o '<publish ' "$LAB/proxy/cache/objects/${snap_hash:0:2}/$snap_hash" | wc -l)
n_objects=$(find "$LAB/proxy/rsync/current/" -type f | wc -l)
record proxy "rsync export: one file per object" "$n_snapshot" "$n_objects" "$([ "$n_objects" = "$n_snapshot" ] && echo pass || echo FAIL)"

# krill-sync's job in one shot: Krill's RRDP directory as the source, a static export out,
# byte for byte Krill's files.
cat > "$LAB/sync.toml" <<TOML
[server]
listen = ["127.0.0.1:1"]
[cache]
dir = "$LAB/sync/cache"
[[repository]]
public = "https://rrdp.test:$PROXY_TLS/rrdp/"
upstream = "$LAB/krill/data/repo/rrdp/"
export_rrdp = "$LAB/sync/rrdp"
TOML
code=0
RUST_LOG=warn "$proxy_bin" sync --config "$LAB/sync.toml" >/dev/null || code=$?
ok=pass
[ "$code" = 0 ] || ok=FAIL
files=0
while read -r rel; do
  files=$((files + 1))
  cmp -s "$LAB/sync/rrdp/$rel" "$LAB/krill/data/repo/rrdp/$rel" || ok=FAIL
done < <(grep -o '<\(snapshot\|delta\) [^>]*' "$LAB/sync/rrdp/notification.xml" | sed 's|.* uri="https://[^/]*/rrdp/\([^"]*\)".*|\1|')
[ "$files" -gt 0 ] || ok=FAIL
record proxy "sync from Krill's dir: $files files = Krill's" "exit 0" "exit $code" "$ok"

log "10: Erik"
# APNIC's Erik client mirrors the proxy's index of rrdp.test (Krill's rsync host): exactly the
# objects the current manifests reach (the rsync export of the same serial). After a ROA
# change, a second run fetches the index, the partition that changed, and the manifest and
# files that changed, nothing else; its mirror then holds exactly the ROAs Krill publishes,
# the ones whose VRPs the RPs report.
# Waits until the rsync export and the Erik relay both hold the served serial.
wait_exported() {
  local want
  want=$(proxy_serial)
  for _ in $(seq 1 100); do
    curl -sf "http://$ADMIN/status" | grep -q "\"exported_serial\": $want" \
      && curl -sf "http://$ADMIN/status" | grep -q "\"erik_serial\": $want" && return 0
    sleep 0.1
  done
  return 1
}
erik_client() { # erik_client RUN
  APNIC_DEBUG=1 perl -I"$ERIK_LAB/lib" "$ERIK_LAB/bin/erik-client" --cache-dir "$LAB/erik/mirror" \
    --server "127.0.0.1:$PROXY_PLAIN" --fqdn rrdp.test >"$LAB/erik/client-$1.log" 2>&1
}
erik_requests() { metric 'rrdp_proxy_requests_total\{kind="erik_(index|object)",result="[a-z]+",status="[0-9]+"\}'; }
erik_partitions() {
  curl -sf "http://127.0.0.1:$PROXY_PLAIN/.well-known/erik/index/rrdp.test" -o "$LAB/erik/index.der"
  python3 "$top/tests/erik/partitions.py" "$LAB/erik/index.der" | grep -v indexTime | sort
}
same_as_export() { diff -r "$LAB/proxy/rsync/current" "$LAB/erik/mirror/rrdp.test" >"$LAB/erik/diff-$1.txt" 2>&1; }
mkdir -p "$LAB/erik/mirror"
wait_exported || true
code=0; erik_client 1 || code=$?
ok=$([ "$code" = 0 ] && same_as_export 1 && echo pass || echo FAIL)
n=$(find "$LAB/erik/mirror/rrdp.test" -type f | wc -l)
record erik-client "mirror = rsync export ($n objects)" "exit 0" "exit $code" "$ok"
erik_partitions >"$LAB/erik/partitions-1.txt"
cp -a "$LAB/erik/mirror" "$LAB/erik/mirror-1"
roa_add 198.51.100.0/24 24 64500
sync_proxy
wait_exported || true
erik_partitions >"$LAB/erik/partitions-2.txt"
before=$(erik_requests)
code=0; erik_client 2 || code=$?
fetched=$(($(erik_requests) - before))
changed_files=$( (diff -rq "$LAB/erik/mirror-1/rrdp.test" "$LAB/erik/mirror/rrdp.test" || true) | grep -c "differ\|^Only in $LAB/erik/mirror/" || true)
changed_partitions=$(comm -13 "$LAB/erik/partitions-1.txt" "$LAB/erik/partitions-2.txt" | wc -l)
want=$((1 + changed_partitions + changed_files))
ok=$([ "$code" = 0 ] && [ "$fetched" = "$want" ] && [ "$changed_partitions" -ge 1 ] && same_as_export 2 && echo pass || echo FAIL)
record erik-client "after a ROA: index+${changed_partitions} partition(s)+${changed_files} file(s)" "$want" "$fetched" "$ok"
mirror_roas=$(find "$LAB/erik/mirror/rrdp.test" -name '*.roa' -printf '%f\n' | sort)
ok=$([ "$mirror_roas" = "$(krill_roa_files)" ] && echo pass || echo FAIL)
record erik-client "mirror's ROAs = Krill's" "$(krill_roa_files | wc -l)" "$(printf '%s\n' "$mirror_roas" | grep -c . || true)" "$ok"
check_all "after the Erik ROA"

log "9: a broken ROA between Krill and the proxy"
# Krill's RRDP directory, copied, becomes the proxy's source; a new serial is added to it with
# one ROA's signature broken. The proxy must refuse it and keep serving the last good serial:
# RPs starting from nothing get the same VRPs as before.
stop_krill
before=$(proxy_serial)
cp -a "$LAB/krill/data/repo/rrdp" "$LAB/inject"
stop_proxy
PROXY_SOURCE_DIR="$LAB/inject/" start_proxy
roa=$(python3 "$top/tests/e2e/inject.py" "$LAB/inject" "https://rrdp.test:$PROXY_TLS/rrdp/")
refused=""
for _ in $(seq 1 100); do
  curl -sf -X POST "http://$ADMIN/refresh" >/dev/null || true
  refused=$(curl -sf "http://$ADMIN/status" | python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; v=r["validation"].get("last") or {}; print("yes" if v.get("refused") and r.get("last_error_reason") == "rpki_validation" else "")')
  [ -n "$refused" ] && break
  sleep 0.2
done
named=$(curl -sf "http://$ADMIN/status" | grep -cF "$(basename "$roa")" || true)
ok=$([ -n "$refused" ] && [ "$(proxy_serial)" = "$before" ] && [ "$named" -gt 0 ] && echo pass || echo FAIL)
record proxy "broken ROA refused, serial kept" "$before" "$(proxy_serial)" "$ok"
rm -rf "$LAB/routinator/cache" "$LAB"/rpki-client-*/cache "$LAB"/fort-*/cache
check_all "broken ROA injected: previous VRPs"

printf '\n| RP                 | scenario                                 | expected |  seen | pass |\n'
printf '|--------------------|------------------------------------------|----------|-------|------|\n'
printf '%s\n' "${results[@]}"
total=${#results[@]}
echo
echo "e2e: $((total - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
