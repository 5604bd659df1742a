"""Measures Celery on the shapes of `sluice bench` and prints one JSON object.

Started by scripts/bench-celery.sh with a worker already running; the keys and fields match
those of `sluice bench --json`, so compare.py can put both side by side.
"""

import json
import statistics
import sys
import time

from celery import chain, chord, group

from celery_tasks import echo, join, stamp

TIMEOUT = 1800


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def timed(signature):
    began = time.perf_counter()
    signature.apply_async().get(timeout=TIMEOUT, disable_sync_subtasks=False)
    return time.perf_counter() - began


def chain_of(n):
    return chain(echo.s({"n": 1}), *[echo.s() for _ in range(n - 1)])


def fan_out(n):
    # Immutable signatures: after a source task, each member gets its item, not the
    # source's result (Celery maps no group over a predecessor's output by itself).
    return chord(group(echo.si({"i": i}) for i in range(n)), join.s())


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    out = {}

    # Per-step overhead: sequential 10-step chains, each step's end minus its predecessor's.
    per_step = []
    for _ in range(100):
        began = time.time()
        stamps = chain(stamp.s([]), *[stamp.s() for _ in range(9)]).apply_async().get(timeout=TIMEOUT)
        previous = began
        for s in stamps:
            per_step.append((s - previous) * 1000)
            previous = s
    out["overhead"] = {"p50_overhead_ms": percentile(per_step, 50), "p99_overhead_ms": percentile(per_step, 99),
                       "samples": len(per_step)}

    # The shapes of `sluice bench`: a for_each over N items is a chord of N tasks into a join,
    # after a source task (Celery has no concurrency cap on a group, so all N are queued at once).
    shapes = [
        ("chain-10", 10, lambda: chain_of(10)),
        ("chain-100", 100, lambda: chain_of(100)),
        ("chain-1000", 1000, lambda: chain_of(1000)),
        ("join-50", 52, lambda: chain(echo.s(0), fan_out(50))),
        ("fan-1000", 1002, lambda: chain(echo.s(0), fan_out(1000))),
        ("fan-5000", 5002, lambda: chain(echo.s(0), fan_out(5000))),
        ("for-each-10000", 10002, lambda: chain(echo.s(0), fan_out(10000))),
    ]
    for name, steps, build in shapes:
        samples = [timed(build()) for _ in range(rounds)]
        seconds = statistics.median(samples)
        out[name] = {"total_ms": seconds * 1000, "steps": steps, "per_step_ms": seconds * 1000 / steps}
        print(f"celery {name}: {seconds:.3f} s", file=sys.stderr)

    # Throughput: 200 concurrent 10-step chains.
    runs = 200
    began = time.perf_counter()
    results = [chain_of(10).apply_async() for _ in range(runs)]
    for r in results:
        r.get(timeout=TIMEOUT)
    seconds = time.perf_counter() - began
    out["throughput"] = {"runs": runs, "steps": runs * 10, "total_ms": seconds * 1000,
                         "steps_per_second": runs * 10 / seconds}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
