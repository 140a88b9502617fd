"""Stage 2's first step: start each row's progress columns and verify its code against its tests.

Progress lives in columns (see ``processing.schema.STAGE2_WORK_COLUMNS``): ``state`` is
``passing`` (``code`` passes its tests), ``failing`` (``current_code`` fails with
``current_error``; a fix round may repair it) or ``rejected`` (``drop_reason``, ``detail``).

Every step runs programs through ``run_programs``: a ``sandbox_error`` (the sandbox
failed, not the code) is retried, and one that persists stops the run
(``WorkerFailure``, exit 1, resumable); it never becomes a row's outcome.
"""

from __future__ import annotations

import logging
import re

from processing.schema import STAGE2_WORK_COLUMNS
from sandbox import WorkerFailure

logger = logging.getLogger(__name__)
PASSING = "pass"
SANDBOX_ERROR = "sandbox_error"
FIXABLE = frozenset({"fail", "error", "timeout", "oom"})
ERROR_EXCERPT = 1500
SANDBOX_RETRIES = 2  # on top of the pool's own retry on a fresh worker


def run_programs(
    sandbox,
    pairs: list[tuple[str, str]],
    *,
    desc: str,
    confirm: bool | None = None,
    timeouts: list[float] | None = None,
    second_opinion: dict | None = None,
    **options,
) -> list:
    """Verdicts of ``(code, test_code)`` pairs in order, none of them a ``sandbox_error``.

    Pairs whose verdict is a sandbox error run again (``SANDBOX_RETRIES`` times); if one
    still fails for infrastructure reasons, ``WorkerFailure`` stops the run. ``confirm``
    (when given) asks the sandbox for its second opinion on every pass; ``timeouts`` (one
    per pair) replace the sandbox's time limit; ``second_opinion`` (the keywords of
    ``Sandbox.confirm``, such as a hash seed) runs the pairs under the independent driver
    only; other ``options`` go to ``Sandbox.verify`` (``coverage=True``)."""
    if confirm is not None:
        options["confirm"] = confirm

    def run(indices: list[int], label: str) -> list:
        chosen = [pairs[i] for i in indices]
        limits = {} if timeouts is None else {"timeouts": [timeouts[i] for i in indices]}
        if second_opinion is not None:
            return list(sandbox.confirm(chosen, progress=True, desc=label, **second_opinion, **limits))
        return list(sandbox.verify(chosen, progress=True, desc=label, **options, **limits))

    results = run(list(range(len(pairs))), desc) if pairs else []
    for retry in range(1, SANDBOX_RETRIES + 1):
        again = [i for i, result in enumerate(results) if result.status == SANDBOX_ERROR]
        if not again:
            return results
        logger.warning("%s: %d programs met a sandbox error; running them again (retry %d)", desc, len(again), retry)
        for i, result in zip(again, run(again, f"{desc} (retry {retry})")):
            results[i] = result
    failed = [result for result in results if result.status == SANDBOX_ERROR]
    if failed:
        raise WorkerFailure(
            f"{len(failed)} programs met a sandbox error {SANDBOX_RETRIES + 1} times while {desc}: "
            + (failed[0].details or "").strip()[:300]
        )
    return results


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
    results = run_programs(sandbox, list(zip(batch["code"], batch["test_code"])), desc="verifying")
    for i, result in enumerate(results):
        if result.status == PASSING:
            set_passing(out, i, out["code"][i], result)
        elif result.status in FIXABLE:
            out["state"][i], out["current_error"][i] = "failing", result.details
        else:  # rejected by the sandbox's static checks (tampering, no tests)
            reject(out, i, result.reason or result.status, result.details)
    return out
