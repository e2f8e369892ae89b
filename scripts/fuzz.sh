#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (default 20 s each) and
# prints executions and findings per target; exits non-zero on any crash.
# Installs cargo-fuzz once per machine (~/.cargo/bin) and builds into a cache
# outside the checkout ($SALVOR_FUZZ_CACHE), so a clean clone does not rebuild
# the instrumented binaries from nothing; the corpus is kept there too, so
# each run starts where the last one stopped.
# cargo-fuzz needs nightly rustc flags; RUSTC_BOOTSTRAP lets the machine's
# one stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
cache=${SALVOR_FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/salvor-fuzz}
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
  CARGO_BUILD_JOBS=2 nice -n 10 cargo install cargo-fuzz --locked --quiet
fi
mkdir -p "$cache/target"
targets=$(cargo fuzz list)
# shellcheck disable=SC2086
cargo fuzz build -O --target-dir "$cache/target" $targets >/dev/null 2>&1 \
  || cargo fuzz build -O --target-dir "$cache/target"
failed=0
for t in $targets; do
  corpus="$cache/corpus/$t"
  mkdir -p "$corpus" fuzz/artifacts/"$t"
  log=$(mktemp)
  if cargo fuzz run -O --target-dir "$cache/target" "$t" "$corpus" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH; failed=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $t: $result, $execs executions in ${secs}s, corpus $(find "$corpus" -type f | wc -l)"
  if [ $result = CRASH ]; then tail -n 40 "$log"; fi
  rm -f "$log"
done
exit $failed
