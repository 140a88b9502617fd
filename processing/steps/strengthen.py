"""Stage 2's strengthening round (``--strengthen_rounds``, opt in): tests grow where mutants survive.

For each ``passing`` row with a surviving mutant (``processing.steps.quality``), the model
is shown the code, its tests and one survivor (as a diff) and asked for a new test class
that passes on the code and fails on the mutant (one generation call per round per
chunk). A new class is kept only if, appended to the row's tests, the tests still pass on
``code`` and kill at least one of the row's surviving mutants in the sandbox; the
existing tests are never edited (the answer may not rebind a name they bind). The row's
``strengthened`` count grows; its scores are measured again by the caller, and the stub
guard and the as-published checks see the grown tests before the row is written.
"""

from __future__ import annotations

from processing.generation import Sampling
from processing.languages import get_language
from processing.steps.quality import mutant_timeout
from processing.steps.verify import PASSING, rows_in_state, run_programs


def strengthen_batch(
    batch: dict[str, list],
    *,
    generator,
    sandbox,
    template,
    sampling: Sampling,
    round_: int,
    survivors: dict[int, list],
    language: str = "python",
) -> tuple[dict[str, list], set[int]]:
    """One round over the rows with survivors (``survivors[i]``: the row's surviving ``Mutant``
    objects). Returns the batch and the rows whose tests grew."""
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    rows = [i for i in rows_in_state(out, "passing") if survivors.get(i)]
    if not rows:
        return out, set()
    class_name = f"TestStrengthened{round_}"
    one = Sampling(1, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed + 1000 * round_)
    conversations = [
        template.conversation(
            code=out["code"][i],
            test_code=out["test_code"][i],
            function_name=out["function_name"][i],
            mutant=survivors[i][0].diff(out["code"][i]),
            class_name=class_name,
        )
        for i in rows
    ]
    answers = generator.generate(conversations, one, desc=f"strengthening round {round_}", step="strengthen")
    grown: dict[int, str] = {}
    for i, (answer,) in zip(rows, answers):
        parsed = lang.parse_test_answer(answer, out["function_name"][i], code=out["code"][i])
        if parsed.test_code is None:
            continue
        if lang.bound_names(parsed.test_code) & lang.bound_names(out["test_code"][i]):
            continue  # it would replace a test or helper the row already has: tests only grow
        grown[i] = out["test_code"][i].rstrip("\n") + "\n\n\n" + parsed.test_code
    # the grown tests must pass on the code ...
    order = list(grown)
    on_code = run_programs(sandbox, [(out["code"][i], grown[i]) for i in order], desc="checking new tests")
    passing = [i for i, verdict in zip(order, on_code) if verdict.status == PASSING]
    # ... and kill at least one survivor the old tests let through
    pairs, owners, limits = [], [], []
    for i in passing:
        for mutant in survivors[i]:
            pairs.append((mutant.code, grown[i]))
            owners.append(i)
            limits.append(mutant_timeout(out["verify_duration_s"][i]))  # as when the mutants first ran
    kills: set[int] = set()
    verdicts = run_programs(sandbox, pairs, desc="new tests against survivors", timeouts=limits)
    for i, verdict in zip(owners, verdicts):
        if verdict.status != PASSING:
            kills.add(i)
    for i in kills:
        out["test_code"][i] = grown[i]
        out["strengthened"][i] = (out["strengthened"][i] or 0) + 1
    return out, kills
