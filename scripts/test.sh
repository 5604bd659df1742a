#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what the tests need, starts the
# servers they talk to, checks formatting and lints, then runs every test of the
# workspace in one cargo invocation.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every server started below registers its stop command here; all stop on exit, newest
# first.
stops=()
stop_servers() {
    local i
    for ((i = ${#stops[@]} - 1; i >= 0; i--)); do
        "${stops[i]}" >/dev/null 2>&1 || true
    done
}
trap stop_servers EXIT

echo "== PostgreSQL (the sql step's PostgreSQL test)"
eval "$(scripts/start-postgres.sh)"
stops+=("$SLUICE_TEST_POSTGRES_STOP")

echo "== MariaDB (the sql step's MySQL/MariaDB test)"
eval "$(scripts/start-mariadb.sh)"
stops+=("$SLUICE_TEST_MYSQL_STOP")

echo "== OpenSSH server (the ssh_command step's tests)"
eval "$(scripts/start-sshd.sh)"
stops+=("$SLUICE_TEST_SSH_STOP")

echo "== Python tools (moto, cfn-lint, aws-sam-translator, aws-sam-cli, cargo-lambda) in .venv/"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
export PATH="$PWD/.venv/bin:$PATH"

echo "== moto (AWS services for sluice-aws and the --backend aws tests)"
eval "$(scripts/start-moto.sh)"
stops+=("$SLUICE_TEST_MOTO_STOP")

echo "== ChromeDriver and headless Chromium (the web console's browser tests)"
eval "$(scripts/start-chromedriver.sh)"
stops+=("$SLUICE_TEST_WEBDRIVER_STOP")

echo "== geckodriver and headless Firefox (the same browser tests in Firefox; geckodriver is built into target/tools/ once)"
eval "$(scripts/start-geckodriver.sh)"
stops+=("$SLUICE_TEST_GECKODRIVER_STOP")

echo "== template.yaml (generated from infra/functions.toml and the step types; lints clean as CloudFormation sees it)"
# `sluice infra --check`: also checks the function list against the step registry and the
# step catalogue, which in this repository is shared/steps/catalogue.json.
cargo run --quiet -- infra --check --catalogue-out shared/steps/catalogue.json
cfn-lint template.yaml
# Some rules (E3505: a queue's visibility against its consumer's timeout) only see the
# resources the SAM transform creates: lint the translated template too.
mkdir -p target/sam
python3 infra/sam-translate.py template.yaml > target/sam/translated.json
cfn-lint -a cfn_lint_serverless.rules -- target/sam/translated.json

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The libraries' rustdoc (the step SDK's is a step author's reference) builds without a
# warning; its examples run as doc tests below.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib --quiet

echo "== tests"
cargo test --workspace

echo "== sam build (a step function and the api function, arm64)"
# Without --release by default: the same template, CodeUri, Metadata, workspace and
# arm64 cross build as a deployment's `sam build`, minus the release profile's LTO
# (measured on 2 busy cores: 6 minutes for both instead of 23).
# SLUICE_SAM_BUILD=release builds exactly what a deployment builds.
if [ "${SLUICE_SAM_BUILD:-debug}" = debug ]; then
    export SAM_BUILD_MODE=debug
fi
scripts/sam-build-check.sh EchoFunction ApiFunction
