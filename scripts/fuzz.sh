#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through cargo-fuzz) of the parsers that read untrusted
# input: the notification parser, the snapshot/delta check, the config parser, and the RPKI
# objects (parsed and validated with the rpki crate).
# Seeds are real Krill output (fuzz/seeds/); each target runs for a bounded time.
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
#
# A crash stops the run with libFuzzer's report; the input is left in fuzz/artifacts/<target>/.
# Copy it to fuzz/regressions/<target>/ so `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(notification content config objects erik)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo-fuzz passes -Z flags; this machine has only the stable toolchain, which accepts them
# with RUSTC_BOOTSTRAP. No sanitizer: the code under test is safe Rust, and ASan would
# rebuild every dependency for nothing; panics and assertion failures are what we look for.
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  corpus=$(mktemp -d /tmp/rrdp-fuzz-"$t".XXXXXX)
  log=$(mktemp /tmp/rrdp-fuzz-"$t".XXXXXX.log)
  echo "fuzz: $t for ${secs}s" >&2
  if ! cargo fuzz run --sanitizer none "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED (log $log)" >&2
    exit 1
  fi
  runs=$(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $t: no crash in $runs runs; corpus grew to $(find "$corpus" -type f | wc -l) inputs" >&2
  rm -rf "$corpus" "$log"
done
