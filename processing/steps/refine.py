"""Stage 2's refine step: ask for a clean, documented version of passing code (the
prompt shows the code and its tests) and keep it only if it keeps the function's
signature exactly and still passes the tests.

A refined version that renames, adds, removes or reorders a parameter, changes a
default or a parameter's kind fails with ``signature_changed`` (the tests may not call
every parameter, so passing them does not prove the interface is the same). A row whose
refine failed is rejected as ``refine_failed`` (``detail`` says why), unless
``keep_unrefined`` keeps its verified, unrefined code.
"""

from __future__ import annotations

from processing.generation import ANSWER_TRUNCATED, Sampling, unusable_reason, warn_truncated
from processing.languages import get_language
from processing.steps.verify import PASSING, error_excerpt, reject, rows_in_state, run_programs, set_passing

SIGNATURE_CHANGED = "signature_changed"


def refine_batch(
    batch: dict[str, list],
    *,
    generator,
    sandbox,
    template,
    sampling: Sampling,
    keep_unrefined: bool = False,
    language: str = "python",
) -> dict[str, list]:
    """``passing`` rows get ``refined``/``refine_status`` (``pass`` or why not); a failed
    refine rejects the row as ``refine_failed`` unless ``keep_unrefined``."""
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    passing = rows_in_state(out, "passing")
    if not passing:
        return out
    one = Sampling(1, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
    conversations = [
        template.conversation(code=out["code"][i], test_code=out["test_code"][i], function_name=out["function_name"][i])
        for i in passing
    ]
    answers = generator.generate(conversations, one, desc="refining", step="refine")
    why_not: dict[int, str] = {}
    candidates = []
    for i, (answer,) in zip(passing, answers):
        name = out["function_name"][i]
        code, why = lang.code_from_answer(answer, name)
        if code is None:
            why = unusable_reason(answer, why)
            out["refine_status"][i], why_not[i] = why, f"the refine answer gave no code ({why})"
            continue
        change = lang.signature_change(out["code"][i], code, name)
        if change is not None:
            out["refine_status"][i], why_not[i] = SIGNATURE_CHANGED, f"{SIGNATURE_CHANGED}: {change}"
            continue
        candidates.append((i, code))
    warn_truncated(sum(1 for i in passing if out["refine_status"][i] == ANSWER_TRUNCATED), "refine", one.max_tokens)
    verdicts = run_programs(
        sandbox, [(code, out["test_code"][i]) for i, code in candidates], desc="verifying refined code"
    )
    for (i, code), result in zip(candidates, verdicts):
        if result.status == PASSING:
            set_passing(out, i, code, result)
            out["refined"][i], out["refine_status"][i] = True, "pass"
        else:
            out["refine_status"][i] = result.status
            why_not[i] = f"the refined code does not pass its tests ({result.status}): {error_excerpt(result.details)}"
    if not keep_unrefined:
        for i, why in why_not.items():
            reject(out, i, "refine_failed", why)
    return out
