"""Stage 2's refine step: ask for a clean version of passing code; keep it only if it still passes."""

from __future__ import annotations

from processing.generation import Sampling
from processing.languages import get_language
from processing.steps.verify import PASSING, rows_in_state, set_passing


def refine_batch(
    batch: dict[str, list], *, generator, sandbox, template, sampling: Sampling, language: str = "python"
) -> dict[str, list]:
    """``passing`` rows get ``refined``/``refine_status``; a refined version that fails is
    not kept (the verified code stays)."""
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    passing = rows_in_state(out, "passing")
    if not passing:
        return out
    one = Sampling(1, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
    conversations = [template.conversation(code=out["code"][i], function_name=out["function_name"][i]) for i in passing]
    answers = generator.generate(conversations, one, desc="refining")
    candidates = []
    for i, (answer,) in zip(passing, answers):
        code, why = lang.code_from_answer(answer, out["function_name"][i])
        if code is None:
            out["refine_status"][i] = why
        else:
            candidates.append((i, code))
    verdicts = sandbox.verify(
        [(code, out["test_code"][i]) for i, code in candidates], progress=True, desc="verifying refined code"
    )
    for (i, code), result in zip(candidates, verdicts):
        if result.status == PASSING:
            set_passing(out, i, code, result)
            out["refined"][i], out["refine_status"][i] = True, "pass"
        else:
            out["refine_status"][i] = result.status  # the unrefined code stays
    return out
