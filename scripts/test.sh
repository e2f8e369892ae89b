#!/usr/bin/env bash
# The whole test suite, as the README says: formatting, lints, unit, property,
# CLI, crash and concurrency tests, and the source tests against real servers
# (PostgreSQL, MariaDB, Redis, etcd with and without TLS, an S3 server, sshd for SFTP, and
# the MongoDB wire-protocol stand-in),
# which scripts/services.sh installs and starts on 127.0.0.1 and stops after.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cc >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential openssl >/dev/null
fi

export SALVOR_SERVICES_DIR="${SALVOR_SERVICES_DIR:-/tmp/salvor-services-test}"
services=(postgres mariadb redis etcd etcd_tls s3 mongo sftp)
bash scripts/services.sh install
bash scripts/services.sh start "${services[@]}"
trap 'bash scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
set -a
# shellcheck disable=SC1091
. "$SALVOR_SERVICES_DIR/env"
set +a

cargo fmt --all -- --check
# Both builds must be clean: the default one (what `cargo run --release --
# demo` compiles) and the one with every optional source.
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
# Server tests fail rather than pass when their server is missing; make sure
# nothing in the environment asks them to skip.
unset SALVOR_TEST_SKIP_SERVICES
cargo test --workspace --all-features --no-fail-fast 2>&1
# Every fuzz target for a bounded time (a crash fails the suite; the corpus
# grows across runs in a cache outside the checkout).
bash scripts/fuzz.sh 15
