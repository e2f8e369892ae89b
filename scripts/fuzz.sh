#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (default 20 s each) and
# prints executions and findings per target; exits non-zero on any crash.
# Installs cargo-fuzz once per machine (~/.cargo/bin, outside the checkout).
# cargo-fuzz needs nightly rustc flags; RUSTC_BOOTSTRAP lets the machine's
# one stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
  CARGO_BUILD_JOBS=2 nice -n 10 cargo install cargo-fuzz --locked --quiet
fi
targets=$(cargo fuzz list)
cargo fuzz build -O $targets >/dev/null 2>&1 || cargo fuzz build -O
failed=0
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  if cargo fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH; failed=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $t: $result, $execs executions in ${secs}s, corpus $(ls "fuzz/corpus/$t" | wc -l)"
  if [ $result = CRASH ]; then tail -n 40 "$log"; fi
  rm -f "$log"
done
exit $failed
