"""The Celery side of scripts/bench-celery.sh: no-op steps shaped like Sluice's `echo`.

Each step returns what it was given, so a chain passes its JSON from step to step as a
Sluice application does; `stamp` appends the wall-clock time at which the step finished,
which is how the per-step overhead is measured on both sides (a step's end minus its
predecessor's end).
"""

import os
import time

from celery import Celery

app = Celery(
    "sluice_bench",
    broker=os.environ["BENCH_BROKER_URL"],
    backend=os.environ["BENCH_RESULT_BACKEND"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task
def echo(value=None):
    return value


@app.task
def stamp(stamps):
    stamps.append(time.time())
    return stamps


@app.task
def join(results):
    return len(results)
