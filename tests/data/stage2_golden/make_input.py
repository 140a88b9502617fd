"""Writes input.jsonl and rules.jsonl: the golden stage-2 case (every branch of the flow).

expected.jsonl was first produced by the stage 2 of commit fb1539a (before the rebuild into
steps) on this input, with ``--samples 3 --rounds 2 --keep_variants 2 --sandbox_timeout 3``
and these scripted answers; tests/test_stage2.py checks stage 2 still writes the same ids,
codes, verdicts and drop reasons. Issue 11 changed it deliberately, with ``--keep_unrefined``
added to the flags: the chat task of a row without a docstring no longer mentions one,
and every row carries ``decontaminated_against`` (every other field is as fb1539a wrote it).
"""

import json
from pathlib import Path


def tests(*bodies: str) -> str:
    methods = "".join(f"    def test_{i}(self):\n        {body}\n" for i, body in enumerate(bodies))
    return "import unittest\n\nclass TestCases(unittest.TestCase):\n" + methods


def fenced(code: str) -> str:
    return f"```python\n{code}```"


ROWS = [
    ("a", "add", "def add(a, b):\n    return a + b\n", tests("self.assertEqual(add(1, 2), 3)")),
    ("b", "sub", "def sub(a, b):\n    return a + b\n", tests("self.assertEqual(sub(3, 1), 2)")),
    ("c", "mul", "def mul(a, b):\n    return a + b\n", tests("self.assertEqual(mul(3, 2), 6)")),
    ("d", "neg", "def neg(a):\n    return -a\n", tests("self.assertEqual(neg(3), -3)")),
    ("e", "ident", "def ident(a):\n    return a\n", tests("self.assertTrue(True)")),
    ("f", "notests", "def notests(a):\n    return a\n", "import unittest\n\nx = 1\n"),
    ("g", "spin", "def spin(a):\n    while True:\n        pass\n", tests("self.assertEqual(spin(2), 4)")),
    ("h", "boom", "def boom(a):\n    raise ValueError(a)\n", tests("self.assertEqual(boom('x'), 'xx')")),
    ("i", "half", "def half(a):\n    return a\n", tests("self.assertEqual(half(4), 2)", "self.assertEqual(half(0), 0)", "self.assertEqual(half(8), 4)")),
    ("j", "total", "import numpy as np\n\n\ndef total(a):\n    return int(np.sum(a))\n", tests("self.assertEqual(total([1, 2, 3]), 6)")),
    ("k", "empty", "def empty(a):\n    return a\n", tests("self.assertEqual(empty([]), [])")),
]  # fmt: skip
REFINE = "Rewrite the Python function below as clean"
RULES = [
    {"match": [REFINE, "def neg("], "answer": fenced("def neg(a: int) -> int:\n    '''Negate.'''\n    return a\n")},
    {"match": [REFINE, "def add("], "answer": fenced("def add(a: int, b: int) -> int:\n    '''Add two numbers.'''\n    return a + b\n")},
    {"match": [REFINE, "def sub("], "answer": fenced("def sub(a, b):\n    '''Subtract.'''\n    return a - b\n")},
    {"match": [REFINE, "def total("], "answer": "No code for you."},
    {"match": [REFINE, "def spin("], "answer": fenced("def spin(a: int) -> int:\n    \"\"\"Double.\"\"\"\n    return a * 2\n")},
    {"match": [REFINE], "answer": "I would rather not."},
    {"match": ["# attempt1", "def sub("], "answer": fenced("def sub(a, b):\n    return a - b\n")},
    {"match": "def sub(", "answer": fenced("def sub(a, b):\n    # attempt1\n    return a * b\n")},
    {"match": "def mul(", "answer": "Sorry, I can't."},
    {"match": "def spin(", "answer": fenced("def spin(a):\n    return a * 2\n")},
    {"match": "def boom(", "answer": "Here:\n" + fenced("def boom(a):\n    return a + a\n")},
    {"match": ["# closer", "def half("], "answer": fenced("def half(a):\n    return a // 2\n")},
    {"match": "def half(", "answer": fenced("def half(a):\n    # closer\n    return 0 if a == 0 else a - 2\n")},
]  # fmt: skip


def write(folder: Path) -> None:
    rows = [
        {"id": i, "function_name": f, "code": c, "test_code": t, "repo": "org/r", "path": f"{f}.py",
         "licenses": ["mit"], "packages": ["numpy"] if "numpy" in c else ["os"]}
        for i, f, c, t in ROWS
    ]  # fmt: skip
    (folder / "input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "rules.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RULES))


if __name__ == "__main__":
    write(Path(__file__).parent)
