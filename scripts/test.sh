#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what the tests need, starts the
# servers they talk to, checks formatting and lints, then runs every test of the
# workspace in one cargo invocation.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== PostgreSQL (the sql step's PostgreSQL test)"
eval "$(scripts/start-postgres.sh)"
trap '"$SLUICE_TEST_POSTGRES_STOP" >/dev/null 2>&1 || true' EXIT

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace
