#!/usr/bin/env bash
# What an RP downloads to catch up after being away, directly from the origin against through
# rrdp-proxy. The demo origin behaves like Krill with its defaults at a steady pace: one new
# serial per tick, superseded files deleted at once, and the newest KEEP deltas listed (Krill
# keeps at most 2 hours of deltas: 12 at one serial per 10 minutes). The proxy polls every
# tick and keeps its delta history. An RP that last saw serial S0 comes back GAP serials later
# (18 at one serial per 10 minutes: 3 hours); it needs the notification, then either every
# delta from S0+1 (if the list reaches back that far) or the snapshot.
#
#   bench/catchup.sh                 defaults: SIZE=20MiB KEEP=12 GAP=18 (a serial every 2 s)
#   SIZE=500MiB GAP=30 bench/catchup.sh
#
# Prints a markdown table for docs/benchmarks.md. Needs curl and python3.
set -euo pipefail
SIZE=${SIZE:-20MiB}
KEEP=${KEEP:-12}
GAP=${GAP:-18}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -q
bin=$top/target/release/rrdp-proxy
. "$top/scripts/lib.sh"
lib_setup catchup
ORIGIN=127.0.0.1:3531 PUBLIC=18531 ADMIN=127.0.0.1:19531

log "generating a $SIZE repository that lists $KEEP deltas"
start_demo "$bin" "$ORIGIN" 120 --interval 2s --snapshot-size "$SIZE" --deltas "$KEEP"

cat >"$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$PUBLIC"]
admin_listen = "$ADMIN"
upgrade_sock = "$work/upgrade.sock"
[cache]
dir = "$work/cache"
[[repository]]
public = "http://127.0.0.1:$PUBLIC/rrdp/"
upstream = "http://$ORIGIN/rrdp/"
poll_interval = "200ms"
[log]
level = "warn"
access = "off"
TOML
"$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)

serial_of() { curl -sf "$1" | grep -m1 -o 'serial="[0-9]*"' | tr -dc 0-9; }
until s0=$(serial_of "http://127.0.0.1:$PUBLIC/rrdp/notification.xml") && [ -n "$s0" ]; do sleep 0.2; done
log "the RP last saw serial $s0; away for $GAP serials"
# What the RP downloads from a server: the notification, then every delta from s0+1 if the
# list reaches back that far, else the snapshot.
cat >"$work/plan.py" <<'PY'
import re, sys, urllib.request
base, s0, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(url):
    with urllib.request.urlopen(url) as r:
        return r.read()
notification = get(base + "/rrdp/notification.xml")
serial = int(re.search(rb'<notification[^>]* serial="(\d+)"', notification).group(1))
snapshot = re.search(rb'<snapshot uri="([^"]+)"', notification).group(1).decode()
deltas = {int(s): u.decode() for s, u in re.findall(rb'<delta serial="(\d+)" uri="([^"]+)"', notification)}
need = range(s0 + 1, serial + 1)
if all(n in deltas for n in need):
    files, how = [deltas[n] for n in need], f"the {len(need)} deltas"
else:
    oldest = min(deltas) if deltas else "-"
    files, how = [snapshot], f"the snapshot (deltas listed back to serial {oldest} only)"
size = len(notification) + sum(len(get(base + "/" + u.split("/", 3)[3])) for u in files)
print(f"| {name} | {serial - s0} | notification and {how} | {size:,} |")
PY
until [ "$(serial_of "http://$ORIGIN/rrdp/notification.xml")" -ge $((s0 + GAP)) ]; do sleep 0.2; done
echo "| from | serials away | what the RP downloads | bytes |"
echo "|---|---|---|---|"
python3 "$work/plan.py" "http://$ORIGIN" "$s0" "the origin"
curl -sf -X POST "http://$ADMIN/refresh" >/dev/null || true
python3 "$work/plan.py" "http://127.0.0.1:$PUBLIC" "$s0" "rrdp-proxy"
