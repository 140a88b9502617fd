"""Stage 2's confirmation: every row about to be published gets a second opinion.

The sandbox re-runs each passing row's final code in a fresh interpreter with an
independent test driver (``sandbox.confirm``); a row that does not pass there too is
rejected as ``confirm_disagrees``. An infrastructure failure stops the run (resumable):
it is never counted against the code.
"""

from __future__ import annotations

from processing.steps.verify import PASSING, reject, rows_in_state
from sandbox import WorkerFailure

SANDBOX_ERROR = "sandbox_error"


def confirm_batch(batch: dict[str, list], *, sandbox) -> dict[str, list]:
    out = {key: list(values) for key, values in batch.items()}
    passing = rows_in_state(out, "passing")
    verdicts = sandbox.confirm([(out["code"][i], out["test_code"][i]) for i in passing], progress=True)
    for i, verdict in zip(passing, verdicts):
        if verdict.status == SANDBOX_ERROR:
            raise WorkerFailure(f"the sandbox failed while confirming a row: {verdict.details[:300]}")
        if verdict.status != PASSING:
            reject(
                out, i, "confirm_disagrees",
                f"a fresh interpreter with another test driver says {verdict.status}: {verdict.details}",
            )  # fmt: skip
    return out
