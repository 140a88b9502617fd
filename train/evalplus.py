"""HumanEval+ and MBPP+ (EvalPlus): problems with EvalPlus's base and extra ("plus") test inputs.

The data is EvalPlus's own release file, in its jsonl schema (``HumanEvalPlus-v0.1.10.jsonl``,
``MbppPlus-v0.2.0.jsonl``, plain or gzipped; one task per line with ``task_id``,
``prompt``, ``entry_point``, ``canonical_solution``, ``base_input``, ``plus_input``,
``atol``), given with ``--humanevalplus_file`` / ``--mbppplus_file``. EvalPlus downloads
these files from its GitHub releases; we read a local copy and never download.

Tests work as EvalPlus's differential testing does (``evalplus/eval/__init__.py``,
Apache-2.0; the code here is ours): each input is given to the canonical solution and
to the candidate, and the outputs must be equal, or, when ``atol`` is set or the expected
output is a float (then ``atol`` = 1e-6), the same type and close (numpy's
``assert_allclose``, rtol 1e-7). HumanEval/32 (``find_zero``) uses EvalPlus's special
oracle (the polynomial at the answer is within ``atol`` of zero). The base inputs and the
plus inputs are two separate programs, as in EvalPlus: a sample passes "base" when the
base inputs pass and "plus" when both do.

Not covered: the canonical solution runs in the same sandboxed process as the candidate
(EvalPlus computes expected outputs in a trusted process beforehand), so a candidate that
patches a module the canonical solution uses can change the expected outputs; MBPP+'s
per-task input deserialisation (tuples and sets that JSON cannot hold) and its special
oracles are not reproduced, so a few MBPP+ tasks are stricter or looser here than in
EvalPlus.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from processing.evalsets import BenchmarkUnavailable

# EvalPlus, evalplus/eval/__init__.py (Apache-2.0): per input max(min_time_limit, 4 x ground
# truth), min_time_limit = 4 s (evalplus/config.py); the whole program min(60, their sum) + 1.
EVALPLUS_MIN_TIME_LIMIT_S = 4.0
EVALPLUS_TIMEOUT_PER_TASK_S = 60.0
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input")


def time_limit(inputs: int) -> float:
    """The whole-program limit for ``inputs`` inputs (ground-truth times taken as small)."""
    return min(EVALPLUS_TIMEOUT_PER_TASK_S, EVALPLUS_MIN_TIME_LIMIT_S * max(1, inputs)) + 1


def read_rows(path: str | Path, benchmark: str) -> list[dict]:
    """The tasks of an EvalPlus release file; BenchmarkUnavailable when it cannot be read,
    ValueError naming the line when a task lacks a field."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkUnavailable(f"{benchmark}: {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
            missing = [name for name in FIELDS if name not in row]
            if missing:
                raise ValueError(f"{path} line {number}: not EvalPlus's schema, missing {', '.join(missing)}")
            rows.append(row)
    if not rows:
        raise BenchmarkUnavailable(f"{benchmark}: {path} holds no task")
    return rows


def differential_test(canonical: str, entry_point: str, inputs: list, atol: float) -> str:
    """A ``TestCases`` module that checks the candidate (the program's ``entry_point``)
    against the canonical solution on ``inputs``."""
    return f"""import copy
import unittest

_CANONICAL = {canonical!r}
_ENTRY_POINT = {entry_point!r}
_INPUTS = {inputs!r}
_ATOL = {float(atol or 0)!r}


def _is_floats(value):
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(isinstance(item, float) for item in value)
    return False


def _poly(xs, x):
    return sum(coefficient * x**power for power, coefficient in enumerate(xs))


def _check(args, out, expected):
    if _ENTRY_POINT == "find_zero":  # EvalPlus's oracle for HumanEval/32
        assert abs(_poly(*args, out)) <= _ATOL, f"find_zero{{tuple(args)!r}} = {{out!r}} is not a root"
        return
    if out == expected:
        return
    atol = 1e-6 if _ATOL == 0 and _is_floats(expected) else _ATOL
    assert atol != 0, f"{{_ENTRY_POINT}}(*{{args!r}}) returned {{out!r}}, expected {{expected!r}}"
    assert type(out) is type(expected), f"{{_ENTRY_POINT}}(*{{args!r}}) returned a {{type(out).__name__}}"
    if isinstance(expected, (list, tuple)):
        assert len(out) == len(expected), f"{{_ENTRY_POINT}}(*{{args!r}}) returned {{len(out)}} items"
    import numpy

    numpy.testing.assert_allclose(out, expected, rtol=1e-07, atol=atol)


class TestCases(unittest.TestCase):
    def test_inputs(self):
        candidate = globals()[_ENTRY_POINT]
        reference = {{}}
        exec(compile(_CANONICAL, "canonical.py", "exec"), reference)
        for args in _INPUTS:
            expected = reference[_ENTRY_POINT](*copy.deepcopy(args))
            _check(args, candidate(*copy.deepcopy(args)), expected)
"""
