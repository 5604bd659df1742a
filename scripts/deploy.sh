#!/usr/bin/env bash
# Builds every function of template.yaml and deploys the Sluice stack with SAM, with the
# settings of one environment of infra/samconfig.toml (not run by the tests).
#
#   scripts/deploy.sh dev --guided     # first deployment: asks for JwtIssuer, JwtAudience…
#                                      # and saves the answers in infra/samconfig.toml
#   scripts/deploy.sh prod             # later deployments
#   scripts/deploy.sh dev --parameter-overrides ...   # any further `sam deploy` options
#
# Needs the SAM CLI and cargo-lambda (both in scripts/requirements-test.txt) and AWS
# credentials. `sam build` builds each function with `cargo lambda build --release`
# (BuildMethod rust-cargolambda, CodeUri functions/<name>), so what is deployed is
# exactly what the template names. Afterwards the stack's outputs are written to
# target/stack-<env>.json for `sluice --backend aws --stack-outputs FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."

env=${1:-}
if [ -z "$env" ] || [ "${env#-}" != "$env" ]; then
    echo "usage: scripts/deploy.sh dev|prod [sam deploy options]" >&2
    exit 2
fi
shift
[ -d .venv/bin ] && export PATH="$PWD/.venv/bin:$PATH"
config=(--config-file infra/samconfig.toml --config-env "$env")

cargo run --quiet -p sluice-infra -- --check
sam build "${config[@]}"
sam deploy "${config[@]}" "$@"
mkdir -p target
sam list stack-outputs "${config[@]}" --output json > "target/stack-$env.json"
echo "stack outputs: target/stack-$env.json (sluice --backend aws --stack-outputs target/stack-$env.json)"
