"""Scoring generated programs in the sandbox, and the pass@k they add up to.

Shared by ``train/evaluate.py`` and the ``evaluate`` metric module in
``train/metrics/sandboxed_code_eval``: both hand over candidate programs with their
tests, get one verdict per candidate, and report pass@k with the unbiased estimator.

A candidate whose verification failed for reasons of the machine (``sandbox_error``)
or whose generation failed is *not* counted as wrong: it is left out of ``n`` for its
problem and counted apart, so that an infrastructure problem never lowers a score.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sandbox.static import count_tests
from sandbox.verdict import PASS, SANDBOX_ERROR, VerifyResult


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021).

    ``n`` samples were drawn, ``c`` of them pass. Computed as a product, which stays
    exact enough for large n where the binomials themselves would overflow floats.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[str, float | None]:
    """``{"pass@k": mean over problems}`` from (n, c) per problem; problems with n < k do
    not take part in that k's mean, and a k no problem has enough samples for is None."""
    counts = list(counts)
    out: dict[str, float | None] = {}
    for k in ks:
        values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
        out[f"pass@{k}"] = sum(values) / len(values) if values else None
    return out


def as_unittest(reference: str) -> str:
    """A ``TestCases`` module for a reference test.

    A reference that already defines ``unittest`` test methods (our data, BigCodeBench)
    is used as it is. Anything else is a script in the style of the ``code_eval`` metric
    (``assert f(1) == 2`` lines, or ``def check(candidate): ...`` followed by a call),
    which ran appended to the candidate: it becomes one test method that executes it in
    the program's own namespace, so it sees what the candidate defines.
    """
    try:
        if count_tests(ast.parse(reference)).count > 0:
            return reference
    except (SyntaxError, ValueError):
        pass  # reported by the sandbox as it runs the script below
    return (
        "import unittest\n\n"
        f"_REFERENCE = {reference!r}\n\n\n"
        "class TestCases(unittest.TestCase):\n"
        "    def test_reference(self):\n"
        "        exec(compile(_REFERENCE, 'reference.py', 'exec'), globals())\n"
    )


@dataclass
class Outcome:
    """The verdict on one sample; ``counted`` is False for infrastructure failures."""

    status: str
    passed: bool
    counted: bool
    details: str = ""
    tests_run: int = 0
    tests_passed: int = 0
    duration_s: float = 0.0

    @classmethod
    def from_result(cls, result: VerifyResult) -> Outcome:
        return cls(
            status=result.status,
            passed=result.status == PASS,
            counted=result.status != SANDBOX_ERROR,
            details=result.details,
            tests_run=result.tests_run,
            tests_passed=result.tests_passed,
            duration_s=round(result.duration_s, 3),
        )

    @classmethod
    def not_generated(cls, why: str = "the model gave no answer for this sample") -> Outcome:
        return cls(status="generation_failed", passed=False, counted=False, details=why)


@dataclass
class ProblemScore:
    n: int = 0  # counted samples
    correct: int = 0
    uncounted: int = 0  # infrastructure or generation failures
    statuses: dict[str, int] = field(default_factory=dict)


def score_candidates(
    sandbox,
    candidates: Sequence[Sequence[str | None]],
    tests: Sequence[str],
    desc: str = "scoring",
) -> list[list[Outcome]]:
    """Run every candidate of problem i against ``tests[i]`` (one sandbox batch) and return
    the outcomes, shaped like ``candidates``. None candidates are generation failures."""
    if len(candidates) != len(tests):
        raise ValueError(f"{len(candidates)} candidate lists but {len(tests)} tests")
    pairs, where = [], []
    for i, (samples, test) in enumerate(zip(candidates, tests)):
        for j, code in enumerate(samples):
            if code is not None:
                pairs.append((code, test))
                where.append((i, j))
    outcomes: list[list[Outcome]] = [[Outcome.not_generated() for _ in samples] for samples in candidates]
    results = sandbox.verify(pairs, progress=True, desc=desc) if pairs else []
    for (i, j), result in zip(where, results):
        outcomes[i][j] = Outcome.from_result(result)
    return outcomes


def problem_score(outcomes: Sequence[Outcome]) -> ProblemScore:
    score = ProblemScore()
    for outcome in outcomes:
        score.statuses[outcome.status] = score.statuses.get(outcome.status, 0) + 1
        if outcome.counted:
            score.n += 1
            score.correct += outcome.passed
        else:
            score.uncounted += 1
    return score
