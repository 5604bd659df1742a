"""Puts the rounds of `sluice bench --json` and celery_bench.py side by side.

    compare.py WORKDIR ROUNDS   (files WORKDIR/sluice-N.json and WORKDIR/celery-N.json)

Prints a Markdown table of the medians over the rounds.
"""

import json
import os
import platform
import statistics
import sys
from pathlib import Path

work, rounds = Path(sys.argv[1]), int(sys.argv[2])


def load(engine):
    return [json.loads((work / f"{engine}-{n}.json").read_text()) for n in range(1, rounds + 1)]


def median(docs, shape, field):
    values = [d[shape][field] for d in docs if isinstance(d.get(shape, {}).get(field), (int, float))]
    return statistics.median(values) if values else None


def total(ms):
    if ms is None:
        return "—"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def per_step(ms):
    return "—" if ms is None else f"{ms:.3f} ms"


def faster(celery, sluice):
    return "—" if not celery or not sluice else f"{celery / sluice:.1f}×"


sluice, celery = load("sluice"), load("celery")
print(f"{rounds} alternating rounds, medians; {platform.machine()}, {os.cpu_count()} cores.\n")
print("| shape | Sluice total | Sluice per step | Celery total | Celery per step | Sluice faster by |")
print("|---|---|---|---|---|---|")
for shape in ["chain-10", "chain-100", "chain-1000", "join-50", "fan-1000", "fan-5000", "for-each-10000"]:
    s_total, c_total = median(sluice, shape, "total_ms"), median(celery, shape, "total_ms")
    print(f"| {shape} | {total(s_total)} | {per_step(median(sluice, shape, 'per_step_ms'))} "
          f"| {total(c_total)} | {per_step(median(celery, shape, 'per_step_ms'))} | {faster(c_total, s_total)} |")
s_p50, c_p50 = median(sluice, "overhead", "p50_overhead_ms"), median(celery, "overhead", "p50_overhead_ms")
print(f"| per-step overhead p50 (10-step chains) | | {per_step(s_p50)} | | {per_step(c_p50)} | {faster(c_p50, s_p50)} |")
s_tp, c_tp = median(sluice, "throughput", "steps_per_second"), median(celery, "throughput", "steps_per_second")
ratio = "—" if not s_tp or not c_tp else f"{s_tp / c_tp:.1f}×"
print(f"| throughput, 200 concurrent 10-step runs | {s_tp or 0:,.0f} steps/s | | {c_tp or 0:,.0f} steps/s | | {ratio} |")
peaks = [max((v.get("peak_rss_mib") or 0) for v in d.values() if isinstance(v, dict)) for d in sluice]
print(f"\nSluice's peak RSS (largest shape, median of rounds): {statistics.median(peaks):.0f} MiB.")
