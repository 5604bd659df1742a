#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what the tests need, starts the
# servers they talk to, checks formatting and lints, then runs every test of the
# workspace in one cargo invocation.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== PostgreSQL (the sql step's PostgreSQL test)"
eval "$(scripts/start-postgres.sh)"
trap '"$SLUICE_TEST_POSTGRES_STOP" >/dev/null 2>&1 || true' EXIT

echo "== Python tools (moto, cfn-lint, cargo-lambda) in .venv/"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
export PATH="$PWD/.venv/bin:$PATH"

echo "== moto (AWS services for sluice-aws and the --backend aws tests)"
eval "$(scripts/start-moto.sh)"
trap '"$SLUICE_TEST_MOTO_STOP" >/dev/null 2>&1 || true; "$SLUICE_TEST_POSTGRES_STOP" >/dev/null 2>&1 || true' EXIT

echo "== template.yaml (agrees with functions/, lints clean)"
python3 scripts/template.py --check
cfn-lint template.yaml

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace
