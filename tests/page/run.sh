#!/usr/bin/env bash
# The operator's page (GET / on the admin listener) in a real browser. Headless Chromium
# (Debian package chromium) loads it against a proxy in front of the demo origin, and the
# test reads the rendered DOM (--dump-dom):
#   1. the current serial is shown for the repository;
#   2. everything from the upstream and the config is text: a second repository, whose name
#      has a quote, fronts a hostile upstream that sends `Content-Encoding: <script>…` (echoed
#      in the error message); the page shows the message as text and no element is injected;
#   3. with the demo origin down, the repository shows the error state with its reason;
#   4. with server.erik, the demo's Erik index (partitions, manifests, indexTime).
# Screenshots are kept, their paths printed (CI log artefacts); docs/page.png is one of them.
#
#   tests/page/run.sh [path/to/rrdp-proxy] [screenshot-dir]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$top/target/debug/rrdp-proxy}")
shots=$(realpath -m "${2:-$top/target/page-screenshots}")
mkdir -p "$shots"
. "$top/scripts/lib.sh"
lib_setup page
ORIGIN=127.0.0.1:3421 HOSTILE=127.0.0.1:3422 PUBLIC=18491 ADMIN=127.0.0.1:19491

browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "page: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
# As the lab runs it: headless, no sandbox (root), and nothing that reaches for the network.
chrome() {
  "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chrome" --virtual-time-budget=4000 "$@" 2>>"$work/chrome.log"
}

"$bin" demo --listen "$ORIGIN" --interval 24h >"$work/origin.log" 2>&1 &
demo_pid=$!
pids+=("$demo_pid")
# An upstream that answers everything with a Content-Encoding it was never asked for.
cat >"$work/hostile.py" <<'PY'
import http.server, sys
host, port = sys.argv[1].split(":")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Encoding", "<script>document.title='pwned'</script>")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"<x")
    def log_message(self, *args):
        pass
http.server.HTTPServer((host, int(port)), H).serve_forever()
PY
python3 "$work/hostile.py" "$HOSTILE" >"$work/hostile.log" 2>&1 &
pids+=($!)

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
poll_interval = "1s"
tal = "$top/demo.tal"
[[repository]]
public = "http://it's.test:$PUBLIC/hostile/"
upstream = "http://$HOSTILE/hostile/"
poll_interval = "1s"
TOML
"$bin" check --config "$work/proxy.toml" >/dev/null
RUST_LOG=warn "$bin" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)

status() { curl -sf "http://$ADMIN/status" || true; }
# Waits (bounded) until /status satisfies a Python expression over it (`s`).
wait_status() {
  for _ in $(seq 1 200); do
    if status | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "timed out waiting for: $1"; status >&2; return 1
}
# (The hostile upstream's own error, not a refused connection while it starts.)
wait_status 's["repositories"][0]["serial"] is not None and "Content-Encoding" in (s["repositories"][1]["last_error"] or "") and s["repositories"][0]["validation"].get("last") and s["erik"]["fqdns"]'
serial=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["repositories"][0]["serial"])')

log "1-2: the page with the repository current and a hostile upstream"
chrome --dump-dom "http://$ADMIN/" >"$work/dom-up.html"
rc=0; grep -q "data-serial=\"$serial\"" "$work/dom-up.html" || rc=$?
check "the current serial ($serial) is shown" $rc
rc=0; grep -q 'class="state ok"' "$work/dom-up.html" || rc=$?
check "the current repository is marked current" $rc
rc=0; grep -qF "&lt;script&gt;document.title='pwned'&lt;/script&gt;" "$work/dom-up.html" || rc=$?
check "the hostile error message is shown as text" $rc
rc=0; grep -qF "data-public=\"http://it's.test:$PUBLIC/hostile/\"" "$work/dom-up.html" || rc=$?
check "the name with a quote is shown as it is" $rc
rc=0; grep -qF 'nothing an RP would reject in 3 publication point(s) (3 from a TAL)' "$work/dom-up.html" || rc=$?
check "RPKI validation's result is shown (the demo's signed tree, from demo.tal)" $rc
rc=0; grep -qE 'Erik index demo.test</dt><dd>[0-9]+ partition\(s\), 3 manifest\(s\)' "$work/dom-up.html" || rc=$?
check "the Erik index of demo.test is shown (server.erik)" $rc
n=$(grep -o '<script' "$work/dom-up.html" | wc -l)
rc=0; { [ "$n" = 1 ] && ! grep -q 'pwned</title>' "$work/dom-up.html"; } || rc=1
check "no element was injected (script elements: $n, the page's own)" $rc
chrome --screenshot="$shots/page-current.png" --window-size=1100,1500 "http://$ADMIN/" >/dev/null
log "screenshot: $shots/page-current.png"

log "3: the origin down"
kill "$demo_pid"; wait "$demo_pid" 2>/dev/null || true
curl -sf -X POST "http://$ADMIN/refresh" >/dev/null
wait_status 's["repositories"][0]["last_error"]'
chrome --dump-dom "http://$ADMIN/" >"$work/dom-down.html"
rc=0
python3 - "$work/dom-down.html" "$serial" <<'PY' || rc=$?
import re, sys
dom, serial = open(sys.argv[1]).read(), sys.argv[2]
# The first repository's section: its serial still served, the failing state, the reason.
start = dom.index('<section class="repo"')
section = dom[start:dom.index("</section>", start)]
assert f'data-serial="{serial}"' in section, "the serial is still served"
assert 'class="state bad"' in section, "the error state"
assert re.search(r'class="error"[^>]*>.*?transport', section, re.S), "the reason"
PY
check "with the origin down: the error state and its reason, the serial still served" $rc
rc=0
python3 - "$work/dom-down.html" <<'PY' || rc=$?
import re, sys
dom = open(sys.argv[1]).read()
# The headline says both: served, and how many upstreams are failing since when (it said
# "Healthy: every repository is served" in green above a failing upstream).
head = re.search(r'<p id="overall"[^>]*class="([^"]*)"[^>]*>(.*?)</p>|<p[^>]*class="([^"]*)"[^>]*id="overall"[^>]*>(.*?)</p>', dom, re.S)
assert head, "the headline"
cls, text = (head.group(1) or head.group(3)), (head.group(2) or head.group(4))
assert "upstreams failing since" in text or "upstream failing since" in text, text
assert "served" in text, text
assert "state ok" not in cls, cls
PY
check "the headline says the repositories are served and the upstreams failing, since when" $rc
chrome --screenshot="$shots/page-origin-down.png" --window-size=1100,1500 "http://$ADMIN/" >/dev/null
log "screenshot: $shots/page-origin-down.png"

echo "page: $passed passed, $failed failed"
[ "$failed" = 0 ]
