"""Run every benchmark module in turn and print a summary of their medians.

Usage: ``python -m bench [--quick] [area ...]``. Each area module exposes ``main(argv)``.
Results are written by each module under ``bench/results/``.
"""

from __future__ import annotations

import importlib
import sys
import time

AREAS = ("stats", "ingest", "archiver", "sim", "metrics", "experiments", "monitors", "rca", "web")


def main(argv: list[str]) -> int:
    flags = [a for a in argv if a.startswith("-")]
    chosen = [a for a in argv if not a.startswith("-")] or list(AREAS)
    for area in chosen:
        started = time.perf_counter()
        print(f"== bench.{area}", flush=True)
        try:
            module = importlib.import_module(f"bench.{area}")
        except ModuleNotFoundError as error:
            print(f"   skipped: {error}")
            continue
        module.main(flags)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
