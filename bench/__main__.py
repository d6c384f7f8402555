"""``python -m bench [--size full|small|tiny] [--runs N] [--only S,..] [--sides A,..] [--out DIR]``.

The size also comes from ``BENCH_SIZE`` (full by default), the runs from ``BENCH_RUNS``,
the scenarios from ``BENCH_ONLY``, the sides from ``BENCH_SIDES``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.core import Sizes
from bench.harness import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=["full", "small", "tiny"],
                        default=os.environ.get("BENCH_SIZE", "full"))
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "0")) or None,
                        help="runs per figure (default: 3 full, 1 tiny)")
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--sides", default="",
                        help="comma-separated side names to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be >= 1")
    sizes = Sizes.named(args.size, args.runs)
    if args.sides:
        os.environ["BENCH_SIDES"] = args.sides
    run(sizes, args.size, args.out, [s for s in args.only.split(",") if s] or None)


if __name__ == "__main__":
    main()
