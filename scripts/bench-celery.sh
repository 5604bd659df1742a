#!/usr/bin/env bash
# Sluice beside Celery (not a test): the shapes of issue-sized runs measured on both in one
# run, on this machine, with a release build of Sluice and Celery 5.7 (prefork worker, one
# process per core) on RabbitMQ with a Redis result backend, all on 127.0.0.1.
# Installs what it needs (Debian's rabbitmq-server and redis-server, Celery from PyPI into
# target/bench-celery-venv), starts the servers in a temporary directory and stops them.
#
#   scripts/bench-celery.sh [ROUNDS]
#
# ROUNDS (default 3) runs every shape of `sluice bench` that many times on each side,
# alternating Sluice and Celery, and reports medians.
# Prints a Markdown table for docs/benchmarks.md on stdout; progress goes to stderr.
# SLUICE_BIN=PATH measures that binary instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
script=bench-celery
# shellcheck source=scripts/servers.sh
. scripts/servers.sh

command -v redis-server >/dev/null && command -v rabbitmq-server >/dev/null \
    || apt_install redis-server rabbitmq-server
venv=target/bench-celery-venv
if [ ! -x "$venv/bin/celery" ]; then
    log "installing Celery into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'celery[redis]==5.7.0' >&2
fi
# SLUICE_BIN: a sluice binary to measure instead of building this checkout's release one.
if [ -n "${SLUICE_BIN:-}" ]; then
    sluice="$SLUICE_BIN"
else
    log "release build of sluice"
    cargo build --release -q -p sluice-cli >&2
    sluice="$PWD/target/release/sluice"
fi

work="$(mktemp -d /tmp/sluice-celery.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "${rabbitmq_bin:-}" ] && "$rabbitmq_bin/rabbitmqctl" -q stop >/dev/null 2>&1 || true
    # The Erlang port mapper daemonizes itself: stop the one of this run's port.
    [ -n "${ERL_EPMD_PORT:-}" ] && epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)

# RabbitMQ in its own directory, on loopback ports only.
amqp_port=$(free_port)
export HOME="$work" ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$(free_port)
export RABBITMQ_NODENAME="bench$$@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT=$(free_port)
export RABBITMQ_MNESIA_BASE="$work/mnesia" RABBITMQ_LOG_BASE="$work/log"
export RABBITMQ_ENABLED_PLUGINS_FILE="$work/enabled_plugins" RABBITMQ_CONFIG_FILE="$work/rabbitmq"
export RABBITMQ_PID_FILE="$work/rabbitmq.pid"
# Erlang's schedulers spin while idle by default, taking a core from whichever side is
# being measured; they sleep instead here.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
# The packaged wrappers switch to the rabbitmq user, who cannot read this directory: run
# the server's own scripts as the caller.
rabbitmq_bin=/usr/lib/rabbitmq/bin
echo "[]." >"$work/enabled_plugins"
echo "loopback_users.guest = true" >"$work/rabbitmq.conf"
"$rabbitmq_bin/rabbitmq-server" >"$work/rabbitmq.out" 2>&1 &
pids+=($!)
log "waiting for RabbitMQ on 127.0.0.1:$amqp_port"
# The CLI's own Erlang node fails to start ("nodistribution") while the server's port
# mapper is not up yet, as on a cold first start: try again for a while.
for attempt in $(seq 1 30); do
    "$rabbitmq_bin/rabbitmqctl" -q wait --timeout 120 "$RABBITMQ_PID_FILE" >&2 && break
    [ "$attempt" -lt 30 ] || { log "RabbitMQ did not start; its output:"; cat "$work/rabbitmq.out" >&2; exit 1; }
    sleep 2
done

export BENCH_BROKER_URL="amqp://guest:guest@127.0.0.1:$amqp_port//"
export BENCH_RESULT_BACKEND="redis://127.0.0.1:$redis_port/0"
export PYTHONPATH="$PWD/scripts/bench"
"$venv/bin/celery" -A celery_tasks worker --pool prefork --concurrency "$(nproc)" \
    --loglevel WARNING >"$work/worker.log" 2>&1 &
pids+=($!)
"$venv/bin/celery" -A celery_tasks inspect ping --timeout 30 >/dev/null 2>&1 \
    || { sleep 5; "$venv/bin/celery" -A celery_tasks inspect ping --timeout 60 >&2; }

for round in $(seq 1 "$rounds"); do
    log "round $round/$rounds: sluice"
    "$sluice" bench --json >"$work/sluice-$round.json"
    log "round $round/$rounds: celery"
    "$venv/bin/python" scripts/bench/celery_bench.py 1 >"$work/celery-$round.json"
done

"$venv/bin/python" scripts/bench/compare.py "$work" "$rounds"
