#!/usr/bin/env bash
# Installs the Debian package on this machine (root) and checks it as an operator would, then
# purges it. CI runs it after scripts/package.sh.
#
#   scripts/package-check.sh target/debian/rrdp-proxy_<version>_<arch>.deb
#
# What it checks: the binary runs as the rrdp-proxy user the package creates; the shipped
# /etc/rrdp-proxy/rrdp-proxy.conf passes check; the unit is enabled (not started) and
# systemd-analyze verify accepts it (where systemd-analyze exists; a container without systemd
# as PID 1 can neither start nor stop the unit, so starting it is not checked); man renders
# both pages; an upgrade over the same package keeps /var/lib/rrdp-proxy; the installed binary,
# as the package's user, serves an example config (edge.conf) in front of the demo origin and
# every file its notification names has the right SHA-256; dpkg --purge removes the user and
# the state.
set -euo pipefail
deb=$(realpath "${1:?usage: scripts/package-check.sh PACKAGE.deb}")
top=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "package: FAIL: $*" >&2; exit 1; }
ok() { echo "package: ok: $*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  dpkg --purge rrdp-proxy >/dev/null 2>&1 || true
}
trap cleanup EXIT

dpkg --purge rrdp-proxy >/dev/null 2>&1 || true
dpkg -i "$deb" >/dev/null
ok "installed $(dpkg-query -W -f '${Package} ${Version}' rrdp-proxy)"

getent passwd rrdp-proxy >/dev/null || fail "no rrdp-proxy user"
runuser -u rrdp-proxy -- /usr/bin/rrdp-proxy --version >/dev/null || fail "the binary does not run as rrdp-proxy"
ok "the binary runs as the rrdp-proxy user"
[ "$(stat -c %U:%G /var/lib/rrdp-proxy)" = rrdp-proxy:rrdp-proxy ] || fail "/var/lib/rrdp-proxy is not the user's"
[ "$(stat -c %G /etc/rrdp-proxy/rrdp-proxy.conf)" = rrdp-proxy ] || fail "the config is not readable by the service's group"
runuser -u rrdp-proxy -- /usr/bin/rrdp-proxy check --config /etc/rrdp-proxy/rrdp-proxy.conf >/dev/null \
  || fail "the shipped config does not pass check"
ok "rrdp-proxy check --config /etc/rrdp-proxy/rrdp-proxy.conf"

[ -e /etc/systemd/system/multi-user.target.wants/rrdp-proxy.service ] || fail "the unit is not enabled"
ok "the unit is enabled (and not started: the operator starts it after editing the config)"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /usr/lib/systemd/system/rrdp-proxy.service || fail "systemd-analyze verify"
  ok "systemd-analyze verify accepts the unit"
  # The krill-sync replacement's timer and service, as an operator copies them.
  units=$(mktemp -d)
  cp /usr/share/doc/rrdp-proxy/examples/rrdp-proxy-sync.service /usr/share/doc/rrdp-proxy/examples/rrdp-proxy-sync.timer "$units/"
  systemd-analyze verify "$units/rrdp-proxy-sync.service" "$units/rrdp-proxy-sync.timer" \
    || fail "systemd-analyze verify (the sync timer and service)"
  rm -rf "$units"
  ok "systemd-analyze verify accepts the example sync service and timer"
else
  echo "package: systemd-analyze is not installed: the unit is not verified"
fi

for page in /usr/share/man/man1/rrdp-proxy.1.gz /usr/share/man/man5/rrdp-proxy.conf.5.gz; do
  out=$(MANWIDTH=80 man -l "$page" 2>&1 >/dev/null) || fail "man -l $page"
  [ -z "$out" ] || fail "man -l $page: $out"
done
ok "man -l renders rrdp-proxy(1) and rrdp-proxy.conf(5)"

# The installed binary, as the package's user, in front of the demo origin on an example.
sed -e 's|^tls_listen = .*|listen = ["127.0.0.1:3388"]|' -e 's|^listen = \[\]||' \
    -e '/^tls_cert/d' -e '/^tls_key/d' \
    -e 's|^admin_listen = .*|admin_listen = "127.0.0.1:3389"|' \
    -e 's|^public = .*|public = "http://127.0.0.1:3388/rrdp/"|' \
    -e 's|^upstream = .*|upstream = "http://127.0.0.1:3387/rrdp/"|' \
    /usr/share/doc/rrdp-proxy/examples/edge.conf > /etc/rrdp-proxy/edge-test.conf
runuser -u rrdp-proxy -- /usr/bin/rrdp-proxy demo --listen 127.0.0.1:3387 --interval 2s >/dev/null 2>&1 &
pids+=($!)
# The origin first: a proxy polling before it listens would retry only after its backoff
# (twice poll_interval), past this check's patience.
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:3387/rrdp/notification.xml >/dev/null && break
  sleep 0.1
done
runuser -u rrdp-proxy -- /usr/bin/rrdp-proxy --config /etc/rrdp-proxy/edge-test.conf >/tmp/rrdp-package-proxy.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:3389/healthz >/dev/null && break
  sleep 0.1
done
note=$(curl -sf http://127.0.0.1:3388/rrdp/notification.xml) || { cat /tmp/rrdp-package-proxy.log; fail "no notification served"; }
files=0
while read -r line; do
  uri=$(sed 's/.* uri="\([^"]*\)".*/\1/' <<<"$line")
  hash=$(sed 's/.* hash="\([^"]*\)".*/\1/' <<<"$line")
  got=$(curl -sf "$uri" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$hash" ] || fail "$uri has hash $got, want $hash"
  files=$((files + 1))
done < <(grep -o '<\(snapshot\|delta\) [^>]*' <<<"$note")
ok "the installed binary serves examples/edge.conf: $files files, each with its SHA-256"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
rm -f /etc/rrdp-proxy/edge-test.conf

# An upgrade (the same package again) keeps the cache.
[ -n "$(ls -A /var/lib/rrdp-proxy)" ] || fail "the example left no cache to keep"
before=$(find /var/lib/rrdp-proxy -type f | wc -l)
dpkg -i "$deb" >/dev/null
after=$(find /var/lib/rrdp-proxy -type f | wc -l)
[ "$after" = "$before" ] || fail "the upgrade changed /var/lib/rrdp-proxy ($before files, then $after)"
ok "an upgrade keeps /var/lib/rrdp-proxy ($after files)"

dpkg --purge rrdp-proxy >/dev/null
! getent passwd rrdp-proxy >/dev/null || fail "purge left the rrdp-proxy user"
[ ! -e /var/lib/rrdp-proxy ] || fail "purge left /var/lib/rrdp-proxy"
[ ! -e /etc/rrdp-proxy/rrdp-proxy.conf ] || fail "purge left the config"
ok "dpkg --purge removes the user, the state and the config"
echo "package: passed"
