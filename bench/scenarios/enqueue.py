"""Enqueue: publish no-op tasks with no worker running; one at a time and in bulk."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable

import redis
from celery import group

from bench.core import BenchEnv, Column, Figure, Ratio, Scenario, Sizes, measured, register

Publish = Callable[[int], object]


def _sides(env: BenchEnv) -> dict[str, Publish]:
    from rq import Queue

    from bench.sides import dramatiq_app, rq_jobs
    from bench.sides.celery_apps import defaults
    from bench.sides.tw_app import build

    tw = build(broker_url=env.url, data_dir=env.dir / "data",
               database_url=f"sqlite:///{env.dir / 'taskworks.db'}")
    celery_noop = defaults(env.url).tasks["bench.noop"]
    rq_queue = Queue("default", connection=redis.Redis.from_url(env.url))

    def tw_one_at_a_time(n: int) -> None:
        for _ in range(n):
            tw.submit("bench.noop")

    def celery_one_at_a_time(n: int) -> None:
        for _ in range(n):
            celery_noop.apply_async()

    def dramatiq_send(n: int) -> None:
        for _ in range(n):
            dramatiq_app.noop.send()

    def rq_enqueue_many(n: int) -> None:
        for start in range(0, n, 1000):
            rq_queue.enqueue_many([Queue.prepare_data(rq_jobs.noop)
                                   for _ in range(min(1000, n - start))])

    def bare_pipeline(n: int) -> None:
        pipe = env.redis.pipeline(transaction=False)
        for _ in range(n):
            pipe.lpush("bare:queue", json.dumps({"id": str(uuid.uuid4()), "task": "noop",
                                                 "args": [], "kwargs": {}}))
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()

    return {
        "taskworks submit_many": lambda n: tw.submit_many("bench.noop", [[] for _ in range(n)]),
        "taskworks submit, one at a time": tw_one_at_a_time,
        "Celery apply_async, one at a time": celery_one_at_a_time,
        "Celery group apply_async": lambda n: group(
            celery_noop.s() for _ in range(n)).apply_async(),
        "Dramatiq send, one at a time": dramatiq_send,
        "RQ enqueue_many": rq_enqueue_many,
        "bare LPUSH pipeline": bare_pipeline,
    }


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    figures = []
    n = sizes.enqueue_tasks
    wanted = {s.strip() for s in os.environ.get("BENCH_SIDES", "").split(",") if s.strip()}
    for name, publish in _sides(env).items():
        if wanted and name not in wanted:
            continue
        env.reset()
        publish(min(n, sizes.warmup_tasks))  # warm-up: connections, declarations, imports
        figure = Figure("enqueue", name)
        for _ in range(sizes.runs):
            env.reset()
            with measured(env, time.process_time) as m:
                publish(n)
            figure.add(rate=n / m["wall"], wall=m["wall"], cpu_per_1k=m["cpu"] / n * 1000,
                       broker_cpu_per_1k=m["broker_cpu"] / n * 1000,
                       commands_per_task=m["commands"] / n)
        figures.append(figure)
    env.reset()
    return figures


register(Scenario(
    name="enqueue",
    title="Enqueue no-op tasks",
    measures="Messages per second published by one client process, no worker running. "
             "CPU is the client's.",
    columns=[Column("rate", "messages/s"), Column("wall", "wall s", "{:.2f}"),
             Column("cpu_per_1k", "client CPU s / 1k", "{:.3f}"),
             Column("broker_cpu_per_1k", "Valkey CPU s / 1k", "{:.3f}"),
             Column("commands_per_task", "Redis commands / message", "{:.2f}")],
    ratios=[
        Ratio("submit_many / Celery apply_async one at a time", "enqueue", "rate",
              "taskworks submit_many", "Celery apply_async, one at a time", 10.0),
        Ratio("submit_many / taskworks submit one at a time", "enqueue", "rate",
              "taskworks submit_many", "taskworks submit, one at a time", 10.0),
        Ratio("submit_many / Celery group apply_async", "enqueue", "rate",
              "taskworks submit_many", "Celery group apply_async", 1.0),
        Ratio("submit_many / Dramatiq send", "enqueue", "rate",
              "taskworks submit_many", "Dramatiq send, one at a time", 1.0),
    ],
    run=run,
    chart_metric="rate",
    chart_label="enqueue: messages/s (higher is better)",
))
