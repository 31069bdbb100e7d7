#!/usr/bin/env bash
# Builds the Debian package: the release binary, the man pages it prints, then cargo deb
# (installed from crates.io if missing). Prints the package's path.
#
#   scripts/package.sh            -> target/debian/rrdp-proxy_<version>-1_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked >&2
mkdir -p target/man
target/release/rrdp-proxy man --section 1 | gzip -9n > target/man/rrdp-proxy.1.gz
target/release/rrdp-proxy man --section 5 | gzip -9n > target/man/rrdp-proxy.conf.5.gz
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb >&2
# Stripped: the release profile keeps line tables for profiling (debug = 1), not needed on
# an operator's machine.
cargo deb --no-build --locked --strip -p rrdp-proxy >&2
ls target/debian/rrdp-proxy_*.deb | tail -1
