#!/usr/bin/env bash
# Issue 26, item 1, as probed: an upstream whose correctly hashed snapshot holds one
# <publish> of SIZE_MIB MiB of Base64, a proxy with memory_limit 64 MiB in front of it. Prints
# the round's outcome and the proxy's peak RSS (VmHWM).
#
#   bench/huge-element.sh path/to/rrdp-proxy       (SIZE_MIB=768 by default)
set -euo pipefail
bin=$(realpath "${1:?usage: bench/huge-element.sh path/to/rrdp-proxy}")
size=${SIZE_MIB:-768}
. "$(dirname "$0")/../scripts/lib.sh"
lib_setup huge
mkdir -p "$work/origin/rrdp"
python3 - "$work/origin/rrdp" "$size" <<'PY'
import hashlib, sys, uuid
out, size = sys.argv[1], int(sys.argv[2])
session, h = str(uuid.uuid4()), hashlib.sha256()
with open(f"{out}/snapshot.xml", "wb") as f:
    def w(b):
        f.write(b); h.update(b)
    w(f'<snapshot xmlns="http://www.ripe.net/rpki/rrdp" version="1" session_id="{session}" serial="1">\n<publish uri="rsync://x/repo/big.crl">'.encode())
    chunk = b"QUJD" * 262144
    for _ in range(size):
        w(chunk)
    w(b"</publish>\n</snapshot>\n")
open(f"{out}/notification.xml", "w").write(
    f'<notification xmlns="http://www.ripe.net/rpki/rrdp" version="1" session_id="{session}" serial="1">\n'
    f'<snapshot uri="http://127.0.0.1:3399/rrdp/snapshot.xml" hash="{h.hexdigest()}"/>\n</notification>\n')
PY
(cd "$work/origin" && exec python3 -m http.server 3399 --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:3399/rrdp/notification.xml && break; sleep 0.1; done
cat > "$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:3398"]
admin_listen = "127.0.0.1:3397"
threads = 1
[cache]
dir = "$work/cache"
memory_limit = "64MiB"
[[repository]]
public = "http://127.0.0.1:3398/rrdp/"
upstream = "http://127.0.0.1:3399/rrdp/"
poll_interval = "1h"
max_file_size = "4GiB"
TOML
"$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 1 300); do
  line=$(curl -s http://127.0.0.1:3397/status | python3 -c 'import json,sys; r=json.load(sys.stdin)["repositories"][0]; print(r["polls_ok"]+r["polls_failed"], r["serial"], r["last_error"])' 2>/dev/null || true)
  case "$line" in 1\ *) break ;; esac
  sleep 1
done
echo "element: ${size} MiB of Base64; round: ${line#1 }"
grep VmHWM "/proc/$proxy/status"
