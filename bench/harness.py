"""Run the scenarios against one embedded Valkey and write the report."""

from __future__ import annotations

import os
import signal
import time
import traceback
from pathlib import Path

from bench.core import SCENARIOS, BenchEnv, Figure, Sizes


def _exit_on_term(signum: int, _frame: object) -> None:
    # SIGTERM (a timeout, Ctrl-C in make) unwinds like an exception: workers and Valkey stop
    raise SystemExit(128 + signum)


def run(sizes: Sizes, size_name: str, out: Path, only: list[str] | None = None) -> Path:
    signal.signal(signal.SIGTERM, _exit_on_term)
    # the with block deletes the run's directory (AOF, SQLite store) on every way out:
    # a failed scenario, an unknown name, SIGTERM, Ctrl-C
    with BenchEnv() as env:
        # the side modules (Dramatiq's broker) and worker processes read the URL from here
        os.environ["BENCH_BROKER_URL"] = env.url
        from bench import machine, report
        from bench.scenarios import load_all

        load_all()
        unknown = sorted(set(only or ()) - set(SCENARIOS))
        if unknown:
            raise SystemExit(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
        chosen = [s for name, s in SCENARIOS.items() if not only or name in only]
        began = time.monotonic()
        figures: list[Figure] = []
        failed: dict[str, str] = {}
        valkey = str(env.redis.info("server").get("valkey_version")
                     or env.redis.info("server").get("redis_version"))
        described = machine.describe(valkey)
        for scenario in chosen:
            print(f"[bench] {scenario.name} ...", flush=True)
            t0 = time.monotonic()
            try:
                found = scenario.run(env, sizes)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                failed[scenario.name] = f"{type(exc).__name__}: {exc}"[:500]
                env.reset()
                continue
            figures += found
            for figure in found:
                summary = ", ".join(f"{k}={figure.median(k):.3g}" for k in figure.samples)
                print(f"[bench]   {figure.side}: {summary}", flush=True)
            print(f"[bench] {scenario.name} done in {time.monotonic() - t0:.0f} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    elapsed = time.monotonic() - began
    md = out / "latest.md"
    md.write_text(report.markdown(chosen, figures, described, sizes, size_name, elapsed,
                                  failed))
    report.chart(chosen, figures, out / "latest.png")
    (out / "latest.raw.json").write_text(report.raw(figures, described, sizes))
    print(f"[bench] wrote {md}", flush=True)
    if failed:
        raise SystemExit(f"[bench] failed scenarios: {', '.join(failed)}")
    return md
