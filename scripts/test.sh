#!/usr/bin/env bash
# The whole test suite, as the README says: formatting, lints, unit, property,
# CLI and crash tests, and the service tests against real servers that
# scripts/services.sh installs and starts on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace 2>&1
