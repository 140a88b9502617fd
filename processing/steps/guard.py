"""Stage 2's test guard: reject rows whose tests also pass against a trivially wrong body."""

from __future__ import annotations

from processing.languages import get_language
from processing.steps.verify import PASSING, reject, rows_in_state, run_programs


def guard_batch(batch: dict[str, list], *, sandbox, language: str = "python") -> dict[str, list]:
    """``passing`` rows whose tests pass against a stub body (``return None``, ``raise``)
    become ``rejected`` with ``vacuous_tests``."""
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    pairs, owners = [], []
    for i in rows_in_state(out, "passing"):
        for stub in lang.stub_implementations(out["code"][i], out["function_name"][i]):
            pairs.append((stub, out["test_code"][i]))
            owners.append(i)
    for i, result in zip(owners, run_programs(sandbox, pairs, desc="checking the tests bite")):
        if result.status == PASSING and out["state"][i] == "passing":
            reject(out, i, "vacuous_tests", "the tests pass against a trivially wrong body")
    return out
