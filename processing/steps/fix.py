"""Stage 2's fix round: ask for fixed *code* (never tests) given the failing tests' trace.

One generation call per round over every failing row of the batch, ``samples`` answers
each; every candidate is verified in one sandbox batch. A row with a passing candidate
becomes ``passing`` (extra passing candidates go to ``variants``); one still failing
carries its best attempt (most tests passed) and its error into the next round. A row
whose every answer says its prompt does not fit the model's context is rejected as
``prompt_too_long`` at once (the next round would send the same prompt); an answer cut by
``--fix_max_tokens`` that gives no code is recorded as an ``answer_truncated`` attempt.
"""

from __future__ import annotations

from processing.generation import (
    ANSWER_TRUNCATED,
    PROMPT_TOO_LONG,
    TOO_LONG_DETAIL,
    Sampling,
    unusable_reason,
    warn_truncated,
)
from processing.languages import get_language
from processing.steps.verify import PASSING, attempt, error_excerpt, reject, rows_in_state, run_programs, set_passing


def fix_conversation(template, code: str, test_code: str, error: str | None, function_name: str) -> list[dict]:
    return template.conversation(
        code=code, test_code=test_code, error=error or "(no details)", function_name=function_name
    )


def fix_round_batch(
    batch: dict[str, list],
    *,
    round_: int,
    generator,
    sandbox,
    template,
    sampling: Sampling,
    samples: int,
    keep_variants: int,
    language: str = "python",
) -> dict[str, list]:
    """Round ``round_`` (1-based) over the ``failing`` rows; other rows pass through unchanged."""
    lang = get_language(language)
    failing = rows_in_state(batch, "failing")
    if not failing:
        return batch
    out = {key: list(values) for key, values in batch.items()}
    out["attempts"] = [list(a) for a in batch["attempts"]]
    # Seeds move on each round: a pair whose prompt did not change gets new samples.
    fix_sampling = Sampling(
        samples, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed + 1000 * round_
    )
    conversations = [
        fix_conversation(
            template, out["current_code"][i], out["test_code"][i], out["current_error"][i], out["function_name"][i]
        )
        for i in failing
    ]
    answers = generator.generate(conversations, fix_sampling, desc=f"fix round {round_}", step="fix")
    candidates: list[tuple[int, int, str]] = []
    for i, answers_of_row in zip(failing, answers):
        if all(answer.prompt_too_long for answer in answers_of_row):
            # the same prompt comes back next round (nothing changed): no round can help
            reject(out, i, PROMPT_TOO_LONG, TOO_LONG_DETAIL)
            continue
        for index, answer in enumerate(answers_of_row):
            code, why = lang.code_from_answer(answer, out["function_name"][i])
            if code is None:
                out["attempts"][i].append(attempt(round_, index, unusable_reason(answer, why)))
            else:
                candidates.append((i, index, code))
    warn_truncated(
        sum(1 for i in failing for a in out["attempts"][i] if a["round"] == round_ and a["status"] == ANSWER_TRUNCATED),
        "fix",
        sampling.max_tokens,
    )
    verdicts = run_programs(
        sandbox, [(code, out["test_code"][i]) for i, _, code in candidates], desc=f"verifying round {round_}"
    )
    best: dict[int, tuple] = {}
    passed: dict[int, list[tuple]] = {}
    for (i, index, code), result in zip(candidates, verdicts):
        out["attempts"][i].append(attempt(round_, index, result.status, result.details))
        if result.status == PASSING:
            passed.setdefault(i, []).append((code, result))
        elif i not in best or result.tests_passed > best[i][1].tests_passed:
            best[i] = (code, result)
    for i in failing:
        if i in passed:
            (code, result), *others = passed[i]
            set_passing(out, i, code, result)
            out["fix_rounds"][i] = round_
            out["variants"][i] = [c for c, _ in others][: keep_variants - 1]
        elif i in best:
            out["current_code"][i], latest = best[i]
            out["current_error"][i] = latest.details
    return out


def give_up_batch(batch: dict[str, list]) -> dict[str, list]:
    """After the last round: rows still failing are rejected as ``not_fixed``."""
    out = {key: list(values) for key, values in batch.items()}
    for i in rows_in_state(out, "failing"):
        reject(out, i, "not_fixed", error_excerpt(out["current_error"][i]))
    return out
