#!/usr/bin/env bash
# Builds every function and deploys the Sluice stack with SAM (not run in CI).
#
#   scripts/deploy.sh --stack-name sluice --region eu-west-1 \
#     --jwt-issuer https://issuer.example --jwt-audience client-id \
#     [--architecture arm64|x86_64] [--result-expires 604800] [--log-level info] \
#     [--alarm-topic arn:aws:sns:...] [--admin-password-hash '$argon2id$...'] [-- extra sam deploy args]
#
# Needs cargo-lambda (pip install cargo-lambda, or scripts/requirements-test.txt), the SAM
# CLI and AWS credentials. `sam build` builds each function with `cargo lambda build
# --release` (BuildMethod rust-cargolambda); the explicit build first fails fast on a
# compile error and warms the cache.
set -euo pipefail
cd "$(dirname "$0")/.."

stack=sluice region=${AWS_REGION:-} arch=arm64 expires=604800 level=info
issuer="" audience="" topic="" admin_hash=""
while [ $# -gt 0 ]; do
    case "$1" in
        --stack-name) stack=$2; shift 2 ;;
        --region) region=$2; shift 2 ;;
        --architecture) arch=$2; shift 2 ;;
        --result-expires) expires=$2; shift 2 ;;
        --log-level) level=$2; shift 2 ;;
        --jwt-issuer) issuer=$2; shift 2 ;;
        --jwt-audience) audience=$2; shift 2 ;;
        --alarm-topic) topic=$2; shift 2 ;;
        --admin-password-hash) admin_hash=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "deploy.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$issuer" ] || [ -z "$audience" ]; then
    echo "deploy.sh: --jwt-issuer and --jwt-audience are required" >&2
    exit 2
fi
[ -d .venv/bin ] && export PATH="$PWD/.venv/bin:$PATH"

python3 scripts/template.py --check
target_flag=--arm64
[ "$arch" = x86_64 ] && target_flag=--x86-64
cargo lambda build --release "$target_flag"

retention_days=$(( (expires + 86399) / 86400 + 1 ))
sam build --beta-features
sam deploy \
    --stack-name "$stack" ${region:+--region "$region"} \
    --capabilities CAPABILITY_IAM \
    --resolve-s3 \
    --no-fail-on-empty-changeset \
    --parameter-overrides \
        "Architecture=$arch" "ResultExpiresSeconds=$expires" "OutputRetentionDays=$retention_days" \
        "LogLevel=$level" "JwtIssuer=$issuer" "JwtAudience=$audience" \
        "AlarmTopicArn=$topic" "AdminPasswordHash=$admin_hash" \
    "$@"
sam list stack-outputs --stack-name "$stack" ${region:+--region "$region"}
