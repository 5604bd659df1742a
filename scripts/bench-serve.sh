#!/usr/bin/env bash
# Load benchmark of `sluice serve` (not a test): run starts and task reads under wrk, on a
# release build, against 127.0.0.1 only. Prints a Markdown section for docs/benchmarks.md.
#
#   scripts/bench-serve.sh [DURATION_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"
connections="${2:-32}"

if ! command -v wrk >/dev/null; then
  echo "== installing wrk" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
echo "== release build" >&2
cargo build --release -q -p sluice-cli
bin="$PWD/target/release/sluice"

work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
export SLUICE_DATA_DIR="$work/data"
unset SLUICE_ENDPOINT SLUICE_TOKEN
token="$("$bin" tokens create bench --role administrator 2>/dev/null)"
# Throughput, not the per-caller limit, is measured here: turn the limit off.
"$bin" serve --addr 127.0.0.1:0 --workers 16 --rate-limit 0 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q "Listening on" "$work/serve.log" && break; sleep 0.1; done
base="$(sed -n 's/^Listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log")"

cat >"$work/app.json" <<'JSON'
{"name": "bench", "author": "bench", "steps": [{"id": "Echo", "type": "echo", "parameters": {"value": {"n": 1}}}]}
JSON
curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  --data @"$work/app.json" "$base/api/v1/applications" >/dev/null
task="$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  --data '{"params": {}}' "$base/api/v1/applications/bench/run?wait=5" | sed -n 's/.*"task_id":"\([^"]*\)".*/\1/p')"

cat >"$work/start.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"params": {"queue": "bench"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
cat >"$work/read.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
LUA

measure() { # name script url
  local out
  out="$(wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$2" "$3")"
  echo "$out" >"$work/$1.txt"
  local rps p99 total errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
  total="$(awk '/requests in/ {print $1}' <<<"$out")"
  errors="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
  echo "| $1 | \`$4\` | $rps | $p99 | $total | ${errors:-0} |"
}

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "## sluice serve under load (REST API)"
echo
echo "Machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), $connections connections, 2 threads, ${duration}s each, on 127.0.0.1, against a release build of \`sluice serve --workers 16\` on a fresh data directory, authenticated with a bearer API token. Command: \`scripts/bench-serve.sh $duration $connections\` ($(date -u +%Y-%m-%d))."
echo
echo "| workload | request | requests/s | p99 latency | requests | non-2xx |"
echo "|---|---|---|---|---|---|"
measure "run starts" "$work/start.lua" "$base/api/v1/applications/bench/run" "POST /api/v1/applications/bench/run"
measure "task reads" "$work/read.lua" "$base/api/v1/tasks/$task" "GET /api/v1/tasks/{id}"
measure "task listing" "$work/read.lua" "$base/api/v1/tasks?application=bench&limit=20" "GET /api/v1/tasks?application=bench&limit=20"
echo
echo "Run starts create the run, store it and enqueue its first step; the server's 16 workers execute the one-step runs meanwhile, so the start figure includes that background load. Reads are single-row SQLite reads plus JSON rendering."
