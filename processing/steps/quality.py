"""Stage 2's quality step: how strong each verified row's tests are, measured in the sandbox.

For every ``passing`` row, in this order:

1. **Flakiness.** The pair runs again under the sandbox's independent driver in a fresh
   interpreter with another ``PYTHONHASHSEED`` and the test methods in a shuffled order
   (``Sandbox.confirm(hash_seed=..., order_seed=...)``; a forked runner would inherit the
   zygote's hash seed). A verdict that is not ``pass`` rejects the row as ``flaky_tests``.
   Other languages have no second driver: their pair runs again the same way (a fresh
   ``node`` per run, so state does not carry over; time, randomness and races show).
2. **Mutation score.** At most ``max_mutants`` mutants of ``code`` (the language's AST
   operators, a seeded sample: ``languages/python/mutants.py``) run against the tests, each
   with a time limit of max(1 s, 5 x the verified run's time). A mutant is killed when the
   tests do not pass on it (a timeout kills too); a mutant that does not parse or equals
   the code is never made, so it is never counted. ``mutation_score`` = killed / mutants,
   ``surviving_mutants`` holds up to three survivors as unified diffs.
3. **Coverage.** The pair runs once more with coverage measured inside the sandbox
   (started by the runner before the code runs); ``line_coverage``, ``branch_coverage``
   and ``uncovered_lines`` describe the target function's lines, as ``coverage report``
   counts them. Python only: other languages' rows keep these columns None.
4. **Strengthening** (``--strengthen_rounds``, ``processing.steps.strengthen``): rows with
   survivors get new tests that kill them; a row whose tests grew goes through the stub
   guard again and is measured again (``strengthened`` counts its rounds).
5. **Filters.** A row under ``min_mutation_score`` or ``min_line_coverage`` (defaults 0:
   measure, do not filter) is rejected as ``weak_tests`` with its scores in ``detail``.

Rows that are not ``passing`` pass through with the quality columns empty (None).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from processing.languages import get_language
from processing.steps.verify import PASSING, reject, rows_in_state, run_programs

FLAKY = "flaky_tests"
WEAK = "weak_tests"
SURVIVORS_SHOWN = 3
MIN_MUTANT_TIMEOUT_S = 1.0
MUTANT_TIME_FACTOR = 5.0
COVERAGE_MIN_TIMEOUT_S = 10.0
COVERAGE_TIME_FACTOR = 20.0
QUALITY_COLUMNS = (
    "strengthened",
    "mutation_score",
    "mutants",
    "mutants_killed",
    "surviving_mutants",
    "line_coverage",
    "branch_coverage",
    "uncovered_lines",
)


LIST_COLUMNS = ("surviving_mutants", "uncovered_lines")


def empty_quality(batch: dict[str, list]) -> dict[str, list]:
    """The quality columns, empty, for every row of ``batch`` (a step that measured nothing)."""
    n = len(batch["code"])
    out = dict(batch)
    for name in QUALITY_COLUMNS:
        if name in LIST_COLUMNS:
            out[name] = [[] for _ in range(n)]
        else:
            out[name] = [0 if name == "strengthened" else None] * n
    return out


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose, from the run's seed (the same on every machine), below 2**31."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:4], "big") >> 1


def flaky_batch(batch: dict[str, list], *, sandbox, seed: int = 0) -> dict[str, list]:
    """``passing`` rows whose pair does not pass again in a fresh interpreter with another hash
    seed and another test order become ``rejected`` with ``flaky_tests``. One sandbox call per
    chunk; the hash seed (never 0) and the order come from the run's seed alone, so the
    verdicts do not depend on how the rows were cut into chunks."""
    out = {key: list(values) for key, values in batch.items()}
    rows = rows_in_state(out, "passing")
    if not rows:
        return out
    second = sandbox.config.has_second_opinion
    second_opinion = {"hash_seed": derived_seed(seed, "hash seed") + 1, "order_seed": derived_seed(seed, "test order")}
    verdicts = run_programs(
        sandbox,
        [(out["code"][i], out["test_code"][i]) for i in rows],
        desc="checking for flaky tests",
        second_opinion=second_opinion if second else None,
    )
    for i, result in zip(rows, verdicts):
        if result.status != PASSING:
            reject(
                out,
                i,
                FLAKY,
                f"the tests gave {result.status} on a second run"
                + (" with another hash seed and test order: " if second else ": ")
                + (result.details or "").strip()[:500],
            )
    return out


def time_limit(duration_s: float | None, factor: float, floor: float) -> float:
    """A program's time limit from its verified run: ``factor`` times as long, at least ``floor``."""
    return max(floor, factor * (duration_s or 0.0))


def mutant_timeout(duration_s: float | None) -> float:
    return time_limit(duration_s, MUTANT_TIME_FACTOR, MIN_MUTANT_TIMEOUT_S)


def mutation_batch(
    batch: dict[str, list],
    *,
    sandbox,
    max_mutants: int = 20,
    seed: int = 0,
    language: str = "python",
    rows: list[int] | None = None,
    survivors: dict[int, list] | None = None,
) -> dict[str, list]:
    """The mutation columns of every ``passing`` row (or of ``rows``), one sandbox batch for
    them all. ``survivors``, when given, receives each measured row's surviving mutants."""
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    pairs, timeouts, mutants_of = [], [], {}
    for i in rows_in_state(out, "passing") if rows is None else rows:
        mutants = lang.sample_mutants(out["code"][i], max_mutants, seed)
        mutants_of[i] = mutants
        limit = mutant_timeout(out["verify_duration_s"][i])
        for mutant in mutants:
            pairs.append((mutant.code, out["test_code"][i]))
            timeouts.append(limit)
    verdicts = iter(run_programs(sandbox, pairs, desc="running mutants", timeouts=timeouts))
    for i, mutants in mutants_of.items():
        alive = [mutant for mutant in mutants if next(verdicts).status == PASSING]
        total = len(mutants)
        out["mutants"][i] = total
        out["mutants_killed"][i] = total - len(alive)
        out["mutation_score"][i] = round((total - len(alive)) / total, 4) if total else None
        out["surviving_mutants"][i] = [m.diff(out["code"][i]) for m in alive[:SURVIVORS_SHOWN]]
        if survivors is not None:
            survivors[i] = alive
    return out


def coverage_batch(
    batch: dict[str, list], *, sandbox, language: str = "python", rows: list[int] | None = None
) -> dict[str, list]:
    """The coverage columns of every ``passing`` row (or of ``rows``): the target function's
    lines, measured in the sandbox while its tests run."""
    from sandbox.coverage_report import summarize  # (imports coverage's parser: only when measuring)

    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    if not sandbox.config.measures_coverage:
        return out  # the sandbox measures coverage of Python programs only: the columns stay None
    rows = rows_in_state(out, "passing") if rows is None else rows
    verdicts = run_programs(
        sandbox,
        [(out["code"][i], out["test_code"][i]) for i in rows],
        desc="measuring coverage",
        coverage=True,
        # tracing slows tight loops several times over: a verified pair gets room for that
        timeouts=[time_limit(out["verify_duration_s"][i], COVERAGE_TIME_FACTOR, COVERAGE_MIN_TIMEOUT_S) for i in rows],
    )
    for i, verdict in zip(rows, verdicts):
        span = lang.function_lines(out["code"][i], out["function_name"][i])
        if verdict.coverage is None or span is None:
            continue  # not measured: the columns stay None (and a coverage threshold rejects the row)
        report = summarize(out["code"][i], verdict.coverage["lines"], verdict.coverage["arcs"], *span)
        out["line_coverage"][i] = round(report["line_coverage"], 4)
        branch = report["branch_coverage"]
        out["branch_coverage"][i] = None if branch is None else round(branch, 4)
        out["uncovered_lines"][i] = list(report["uncovered_lines"])
    return out


def weak_tests_batch(
    batch: dict[str, list], *, min_mutation_score: float = 0.0, min_line_coverage: float = 0.0
) -> dict[str, list]:
    """``passing`` rows under either threshold become ``rejected`` with ``weak_tests``."""
    out = {key: list(values) for key, values in batch.items()}
    if min_mutation_score <= 0 and min_line_coverage <= 0:
        return out
    for i in rows_in_state(out, "passing"):
        score, coverage = out["mutation_score"][i], out["line_coverage"][i]
        below = []
        if min_mutation_score > 0 and score is not None and score < min_mutation_score:
            below.append(f"mutation score {score:.2f} < {min_mutation_score}")
        if min_line_coverage > 0 and coverage is None:
            below.append(f"line coverage could not be measured (a threshold of {min_line_coverage} needs it)")
        elif min_line_coverage > 0 and coverage < min_line_coverage:
            below.append(f"line coverage {coverage:.2f} < {min_line_coverage}")
        if below:
            reject(out, i, WEAK, "; ".join(below))
    return out


def quality_batch(
    batch: dict[str, list],
    *,
    sandbox,
    max_mutants: int = 20,
    seed: int = 0,
    min_mutation_score: float = 0.0,
    min_line_coverage: float = 0.0,
    language: str = "python",
    strengthen: Callable[[dict[str, list], int, dict[int, list]], tuple[dict[str, list], set[int]]] | None = None,
    strengthen_rounds: int = 0,
    guard: Callable[[dict[str, list]], dict[str, list]] | None = None,
) -> dict[str, list]:
    """Flakiness, mutation score and coverage, then the strengthening rounds (``strengthen``,
    a round function that returns the batch and the rows whose tests grew: those go through
    ``guard`` and are measured again), then the filters (module docstring)."""
    batch = empty_quality(batch)
    batch = flaky_batch(batch, sandbox=sandbox, seed=seed)
    survivors: dict[int, list] = {}
    measure = {"sandbox": sandbox, "max_mutants": max_mutants, "seed": seed, "language": language}
    batch = mutation_batch(batch, **measure, survivors=survivors)
    batch = coverage_batch(batch, sandbox=sandbox, language=language)
    for round_ in range(1, strengthen_rounds + 1 if strengthen else 1):
        batch, grown = strengthen(batch, round_, survivors)
        if not grown:
            break
        if guard is not None:
            batch = guard(batch)  # the grown tests must still fail against stub bodies
        again = [i for i in sorted(grown) if batch["state"][i] == "passing"]
        batch = mutation_batch(batch, **measure, rows=again, survivors=survivors)
        batch = coverage_batch(batch, sandbox=sandbox, language=language, rows=again)
    return weak_tests_batch(batch, min_mutation_score=min_mutation_score, min_line_coverage=min_line_coverage)
