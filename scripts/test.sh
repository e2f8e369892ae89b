#!/usr/bin/env bash
# The whole test suite, as the README says: formatting, lints, unit, property,
# CLI, crash and concurrency tests, and the source tests against real servers
# (PostgreSQL, MariaDB, Redis, etcd, and the MongoDB wire-protocol stand-in),
# which scripts/services.sh installs and starts on 127.0.0.1 and stops after.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cc >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential openssl >/dev/null
fi

export SALVOR_SERVICES_DIR="${SALVOR_SERVICES_DIR:-/tmp/salvor-services-test}"
export SALVOR_SERVICES_NO_S3=1 # no test uses S3 yet
services=(postgres mariadb redis etcd mongo)
bash scripts/services.sh install
bash scripts/services.sh start "${services[@]}"
trap 'bash scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
set -a
# shellcheck disable=SC1091
. "$SALVOR_SERVICES_DIR/env"
set +a

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast 2>&1
