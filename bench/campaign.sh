#!/usr/bin/env bash
# The hardening campaigns, longer than CI runs them (manual use):
#   bench/campaign.sh [ROUNDS] [FUZZ_SECONDS_PER_TARGET]
# Runs tests/campaign.rs with ROUNDS rounds (default 40) and a fresh seed
# each run (printed; SALVOR_CAMPAIGN_SEED=N replays one), then every fuzz
# target for FUZZ_SECONDS_PER_TARGET (default 300) through scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-40}
secs=${2:-300}
SALVOR_CAMPAIGN_ROUNDS=$rounds cargo test --release -p salvor --test campaign -- --nocapture --test-threads 1
bash scripts/fuzz.sh "$secs"
