#!/usr/bin/env bash
# Starts moto's server (AWS services in one process, for the tests) on 127.0.0.1 on a free
# port and prints the lines to eval:
#
#   eval "$(scripts/start-moto.sh)"
#   cargo test -p sluice-aws
#   "$SLUICE_TEST_MOTO_STOP"
#
# Prints AWS_ENDPOINT_URL, dummy credentials and region (nothing here reaches real AWS),
# and SLUICE_TEST_MOTO_STOP. Expects moto in .venv/ (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d /tmp/sluice-moto.XXXXXX)
# moto's server with its DynamoDB writes and SQS queue operations made atomic, as AWS's are
# (see the script).
.venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "start-moto: the moto server exited; its log:" >&2
        cat "$dir/moto.log" >&2
        exit 1
    fi
    sleep 0.2
done
cat >"$dir/stop.sh" <<STOP
#!/usr/bin/env bash
kill $pid 2>/dev/null || true
rm -rf "$dir"
STOP
chmod +x "$dir/stop.sh"
echo "start-moto: moto on 127.0.0.1:$port (log $dir/moto.log)" >&2
echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port"
echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing"
echo "export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
echo "export AWS_EC2_METADATA_DISABLED=true"
echo "export SLUICE_TEST_MOTO_STOP=$dir/stop.sh"
