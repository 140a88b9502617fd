"""Stage 2's first step: start each row's progress columns and verify its code against its tests.

Progress lives in columns (see ``processing.schema.STAGE2_WORK_COLUMNS``): ``state`` is
``passing`` (``code`` passes its tests), ``failing`` (``current_code`` fails with
``current_error``; a fix round may repair it) or ``rejected`` (``drop_reason``, ``detail``).
"""

from __future__ import annotations

import re

from processing.schema import STAGE2_WORK_COLUMNS

PASSING = "pass"
FIXABLE = frozenset({"fail", "error", "timeout", "oom"})
ERROR_EXCERPT = 1500


def error_excerpt(details: str | None) -> str:
    text = re.sub(r"\n{3,}", "\n\n", details or "").strip()
    return text[:ERROR_EXCERPT]


def attempt(round_: int, sample: int, status: str, error: str = "") -> dict:
    """One entry of a row's ``attempts`` history."""
    return {"round": round_, "sample": sample, "status": status, "error": error_excerpt(error)}


def set_passing(batch: dict[str, list], i: int, code: str, result) -> None:
    """Row ``i`` now passes with ``code``; its verdict columns come from ``result``."""
    batch["state"][i] = "passing"
    batch["code"][i] = code
    batch["tests_run"][i] = result.tests_run
    batch["tests_passed"][i] = result.tests_passed
    batch["verify_duration_s"][i] = result.duration_s


def reject(batch: dict[str, list], i: int, reason: str, detail: str) -> None:
    batch["state"][i] = "rejected"
    batch["drop_reason"][i] = reason
    batch["detail"][i] = detail


def rows_in_state(batch: dict[str, list], state: str) -> list[int]:
    return [i for i, s in enumerate(batch["state"]) if s == state]


def verify_batch(batch: dict[str, list], *, sandbox) -> dict[str, list]:
    """Input columns (``code``, ``test_code``, ...) in; the same plus the progress columns out."""
    n = len(batch["code"])
    out = dict(batch)
    out.update({name: [None] * n for name in STAGE2_WORK_COLUMNS})
    out.update(
        original_code=list(batch["code"]),
        code=list(batch["code"]),
        current_code=list(batch["code"]),
        attempts=[[] for _ in range(n)],
        fix_rounds=[0] * n,
        variants=[[] for _ in range(n)],
        refined=[False] * n,
        refine_status=["skipped"] * n,
        tests_run=[None] * n,
        tests_passed=[None] * n,
        verify_duration_s=[None] * n,
    )
    results = sandbox.verify(list(zip(batch["code"], batch["test_code"])), progress=True, desc="verifying")
    for i, result in enumerate(results):
        if result.status == PASSING:
            set_passing(out, i, out["code"][i], result)
        elif result.status in FIXABLE:
            out["state"][i], out["current_error"][i] = "failing", result.details
        else:  # rejected by the sandbox (tampering, no tests) or infrastructure trouble
            reject(out, i, result.reason or result.status, result.details)
    return out
