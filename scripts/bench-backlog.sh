#!/usr/bin/env bash
# Backlog and memory benchmark of `sluice serve` (not a test), on a release build, against
# 127.0.0.1 only. Three phases on one fresh data directory:
#   1. backlog: starts fan-out runs of WIDTH independent steps as fast as it can until
#      BACKLOG steps were accepted (starts refused with 429 are counted, and retried
#      after their Retry-After);
#   2. latency: starts 2 × SHORT 3-step chains behind that backlog, one after the other,
#      alternately in their own lane (their application's, not the backlog's) and in the
#      `high` lane (`queue: high`), then SAME_LANE more in the backlog's own lane
#      (`queue: wide`, served after the runs queued before them), and prints how long each
#      took from its start request to its end;
#   3. memory: serves RUNS one-step runs (8 clients, honouring 429 + Retry-After) and
#      samples the server's VmRSS every tenth of them.
# Prints Markdown lines and a table for docs/benchmarks.md ("Backlog and memory").
#
#   scripts/bench-backlog.sh [RUNS=100000] [BACKLOG=100000] [SHORT=10]
# Environment: SLUICE_BIN (a built binary instead of the release build), WIDTH (steps per
# backlog run, 100), WORKERS (16), MAX_QUEUED (--max-queued-steps, the server default
# when unset), SAME_LANE (1), EXTRA_ENV (e.g. "MALLOC_ARENA_MAX=2", given to the server
# only).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-100000}"
backlog="${2:-100000}"
short="${3:-10}"
width="${WIDTH:-100}"
workers="${WORKERS:-16}"

if [[ -z "${SLUICE_BIN:-}" ]]; then
  echo "== release build" >&2
  cargo build --release -q -p sluice-cli
  SLUICE_BIN="$PWD/target/release/sluice"
fi
bin="$SLUICE_BIN"

work="$(mktemp -d)"
server=""
trap '[[ -n "$server" ]] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }; rm -rf "$work"' EXIT
export SLUICE_DATA_DIR="$work/data"
unset SLUICE_ENDPOINT SLUICE_TOKEN
token="$("$bin" tokens create bench --role administrator 2>/dev/null)"
serve_args=(serve --addr 127.0.0.1:0 --workers "$workers" --rate-limit 0)
[[ -n "${MAX_QUEUED:-}" ]] && serve_args+=(--max-queued-steps "$MAX_QUEUED")
# shellcheck disable=SC2086
env ${EXTRA_ENV:-} "$bin" "${serve_args[@]}" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do grep -q "Listening on" "$work/serve.log" && break; sleep 0.1; done
base="$(sed -n 's/^Listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log")"
[[ -n "$base" ]] || { cat "$work/serve.log" >&2; exit 1; }

python3 - "$base" "$token" "$server" "$runs" "$backlog" "$short" "$width" "${SAME_LANE:-1}" <<'PY'
import http.client, json, sys, threading, time, urllib.parse

base, token, pid = sys.argv[1], sys.argv[2], sys.argv[3]
runs, backlog, short, width, same_lane = (int(a) for a in sys.argv[4:9])
url = urllib.parse.urlparse(base)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

class Client:
    def __init__(self):
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, r.getheader("Retry-After"), (json.loads(text) if text else None)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        raise RuntimeError(f"{method} {path}: connection failed")
    def start(self, app, refused, wait=None, params=None):
        """Starts a run, waiting out 429s; returns the task document."""
        path = f"/api/v1/applications/{app}/run" + (f"?wait={wait}" if wait else "")
        while True:
            status, retry, doc = self.call("POST", path, {"params": params or {}})
            if status == 429:
                refused[0] += 1
                time.sleep(float(retry or 1))
                continue
            if status >= 300:
                raise RuntimeError(f"start {app}: {status} {doc}")
            return doc

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def queued(c):
    _, _, doc = c.call("GET", "/api/v1/dashboard")
    return sum(q["depth"] or 0 for q in doc["queues"])

def finished(c, task_id):
    while True:
        _, _, doc = c.call("GET", f"/api/v1/tasks/{task_id}")
        if doc["state"] not in ("pending", "running"):
            return doc
        time.sleep(0.05)

c = Client()
echo = lambda i, deps=(): {"id": f"S{i}", "type": "echo", "depends_on": list(deps),
                           "parameters": {"value": i}}
apps = {
    "wide": [echo(i) for i in range(width)],
    "short": [echo(0), echo(1, ["S0"]), echo(2, ["S1"])],
    "one": [echo(0)],
}
for name, steps in apps.items():
    status, _, doc = c.call("POST", "/api/v1/applications",
                            {"name": name, "author": "bench", "steps": steps})
    assert status < 300, doc

def in_parallel(n_clients, total, work):
    """Runs work(client, i) for i in 0..total over n_clients connections."""
    counter, lock = [0], threading.Lock()
    def loop():
        client = Client()
        while True:
            with lock:
                i = counter[0]
                if i >= total:
                    return
                counter[0] += 1
            work(client, i)
    threads = [threading.Thread(target=loop) for _ in range(n_clients)]
    for t in threads: t.start()
    for t in threads: t.join()

rss_start = rss_kib()
# 1. Backlog.
refused = [0]
t0 = time.time()
in_parallel(8, -(-backlog // width), lambda cl, i: cl.start("wide", refused))
backlog_secs = time.time() - t0
depth = queued(c)
print(f"backlog: {-(-backlog // width)} runs of {width} steps accepted in {backlog_secs:.1f} s, "
      f"{refused[0]} starts refused with 429 meanwhile; {depth} steps queued after", file=sys.stderr)

# 2. Short runs behind the backlog, alternately in their own lane and in `high`; then a
#    few in the backlog's lane.
lanes = {"own": {}, "high": {"queue": "high"}, "backlog's": {"queue": "wide"}}
latencies = {lane: [] for lane in lanes}
short_refused = [0]
order = [("own", "high")[i % 2] for i in range(2 * short)] + ["backlog's"] * same_lane
depth_before = {}
for lane in order:
    depth_before.setdefault(lane, queued(c))
    t = time.time()
    doc = c.start("short", short_refused, params=lanes[lane])
    done = finished(c, doc["task_id"])
    assert done["state"] == "success", done
    latencies[lane].append(time.time() - t)
depth_after = queued(c)
for lane, xs in latencies.items():
    if xs:
        print(f"short runs, {lane} lane: {', '.join(f'{x:.2f}' for x in xs)} s", file=sys.stderr)

# Let the backlog drain before measuring memory over served runs.
while queued(c) > 0:
    time.sleep(0.5)
rss_drained = rss_kib()

# 3. Memory over many one-step runs.
samples, mem_refused = [(0, rss_drained)], [0]
step = max(1, runs // 10)
t0 = time.time()
def serve_one(cl, i):
    cl.start("one", mem_refused)
    if (i + 1) % step == 0:
        samples.append((i + 1, rss_kib()))
in_parallel(8, runs, serve_one)
while queued(c) > 0:
    time.sleep(0.2)
runs_secs = time.time() - t0
samples.append((runs, rss_kib()))
samples.sort()

mib = lambda kib: f"{kib / 1024:.1f}"
print(f"- Backlog: {-(-backlog // width)} runs × {width} independent steps started in {backlog_secs:.1f} s "
      f"({refused[0]} starts answered 429 and retried); {depth} steps queued when the short runs started.")
print(f"- Short runs (3-step chains) started one after another behind it "
      f"({short_refused[0]} starts answered 429 first; {depth_after} steps still queued after them), "
      f"from start request to end:")
for lane, xs in latencies.items():
    if xs:
        xs.sort()
        print(f"  - {len(xs)} in the {lane} lane ({depth_before[lane]} steps queued before the first): "
              f"p50 {xs[len(xs) // 2]:.2f} s, max {xs[-1]:.2f} s")
print(f"- {runs} one-step runs served in {runs_secs:.1f} s by 8 clients ({mem_refused[0]} starts answered 429). "
      f"Server VmRSS: {mib(rss_start)} MiB at start, {mib(rss_drained)} MiB after the backlog drained:")
print()
print("| runs served | VmRSS (MiB) |")
print("|---|---|")
for n, kib in samples:
    print(f"| {n} | {mib(kib)} |")
growth = (samples[-1][1] - samples[len(samples) // 2][1]) * 1024 / max(1, runs - samples[len(samples) // 2][0])
print()
print(f"Growth over the second half: {growth:.0f} bytes per run.")
PY
