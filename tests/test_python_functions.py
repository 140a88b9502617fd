"""Python retrieval rules: one hand-made case per drop reason, and what a kept function holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from processing.languages.python.functions import analyse_file, hollow_classes, import_prefilter, split_lines
from processing.packages import BIGCODEBENCH_LIBRARIES

PACKAGES = frozenset(BIGCODEBENCH_LIBRARIES)
PREFILTER = import_prefilter(BIGCODEBENCH_LIBRARIES)


def analyse(source: str, max_bytes: int = 1_000_000):
    return analyse_file(textwrap.dedent(source), PREFILTER, PACKAGES, max_bytes)


def verdicts(source: str) -> dict[str, str | None]:
    record = analyse(source)
    assert record.drop_reason is None, record
    return {f.name: f.drop_reason for f in record.functions}


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "unreadable"),
        ("import os\x00\x01\x02", "binary"),
        ("   \n\n", "empty"),
        ("import leftpad\n\ndef f(x):\n    return leftpad.pad(x)\n", "no_target_import"),
        ("import os\n\nclass A:\n    def f(self):\n        return os.sep\n", "no_top_level_function"),
        ("import os\n\ndef f(:\n    return os\n", "syntax_error"),
        ("import os\n\ndef f(x):\n    print 'hello'\n    return os.sep\n", "python2_syntax"),
        (
            "import os\n\ndef f(x):\n    try:\n        return os.stat(x)\n    except OSError, e:\n        return e\n",
            "python2_syntax",
        ),
        ("import os\n\ndef f(a):\n    return " + "-" * 100000 + "1\n", "too_deeply_nested"),
        ("import os\n\ndef f(a):\n    return " + "(" * 300 + "1" + ")" * 300 + "\n", "too_deeply_nested"),
    ],
)
def test_file_level_drop_reasons(content, reason):
    assert analyse_file(content, PREFILTER, PACKAGES, 1_000_000).drop_reason == reason


def test_too_large_files_are_dropped_before_parsing():
    assert analyse("import os\n\ndef f(x):\n    return os.sep\n", max_bytes=10).drop_reason == "too_large"


FUNCTION_CASES = """
import os
import json as js
from collections import Counter
from .sibling import helper
import not_installed_pkg_xyz
try:
    import numpy as np
except ImportError:
    np = None

LIMIT = 10


def kept(path, sep=os.sep):
    '''Uses os and json, nothing else.'''
    return js.dumps(Counter(path.split(sep)))

def no_args():
    return os.getcwd()

async def coroutine(x):
    return os.sep

def nested(x):
    def inner():
        return x
    return inner()

def local_import(x):
    import math
    return math.sqrt(x)

def generator(x):
    yield os.sep

def global_user(x):
    return x + LIMIT

def declares_global(x):
    global LIMIT
    LIMIT = x
    return x

def no_return(x):
    os.remove(x)

def returns_none(x):
    return None

def conditional(x):
    return np.array(x)

def undefined(x):
    return mystery(x) + os.sep

def relative(x):
    return helper(x) + os.sep

def unavailable(x):
    return not_installed_pkg_xyz.f(x)

def builtins_only(x):
    return len(x)

def recursive(n):
    return 1 if n <= 1 else n * recursive(n - 1) + len(os.sep)

@staticmethod
def decorated(x):
    return os.path.basename(x)

def default_uses_global(x=LIMIT):
    return os.sep * x

class Thing:
    def method(self):
        return os.sep
"""


def test_every_function_drop_reason():
    assert verdicts(FUNCTION_CASES) == {
        "kept": None,
        "no_args": "no_arguments",
        "coroutine": "async_function",
        "nested": "nested_definition",
        "local_import": "local_import",
        "generator": "generator",
        "global_user": "uses_module_globals",
        "declares_global": "uses_module_globals",
        "no_return": "no_return",
        "returns_none": "no_return",
        "conditional": "conditional_import",
        "undefined": "undefined_name",
        "relative": "relative_import",
        "unavailable": "unavailable_import",
        "builtins_only": "no_target_usage",
        "recursive": None,
        "decorated": None,
        "default_uses_global": "uses_module_globals",
        "Thing.method": "method",
    }


def test_with_a_star_import_unknown_names_may_come_from_it():
    source = "import os\nfrom os.path import *\n\ndef f(x):\n    return join(x, os.sep)\n"
    assert verdicts(source) == {"f": "star_import"}


def test_kept_function_carries_exactly_the_imports_it_uses():
    (kept,) = [f for f in analyse(FUNCTION_CASES).functions if f.name == "kept"]
    assert kept.imports == ["import os", "import json as js", "from collections import Counter"]
    assert kept.packages == ["collections", "json", "os"]
    assert kept.code.startswith(
        "import os\nimport json as js\nfrom collections import Counter\n\n\ndef kept(path, sep=os.sep):"
    )
    assert "Uses os and json" in kept.code  # source kept verbatim, docstring included


def test_kept_functions_define_alone_in_a_fresh_interpreter(tmp_path):
    record = analyse(FUNCTION_CASES)
    codes = [f.code for f in record.functions if f.drop_reason is None]
    assert len(codes) == 3
    for code in codes:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_decorator_lines_are_part_of_the_code():
    (decorated,) = [f for f in analyse(FUNCTION_CASES).functions if f.name == "decorated"]
    assert "@staticmethod\ndef decorated(x):" in decorated.code


def test_future_imports_travel_with_the_function():
    source = "from __future__ import annotations\nimport os\n\ndef f(x: os.PathLike) -> str:\n    return os.fspath(x)\n"
    (f,) = analyse(source).functions
    assert f.code.startswith("from __future__ import annotations\nimport os\n")


def test_line_numbers_survive_form_feeds():
    source = "import os\n\x0c\ndef f(x):\n    return os.sep + x\n"
    (f,) = analyse(source).functions
    assert f.lineno == 3 and f.code.endswith("def f(x):\n    return os.sep + x\n")


def test_hollowing_classes_keeps_line_numbers_and_finds_methods():
    lines = split_lines(
        "import os\n\nclass A(object):  # note\n    '''doc'''\n    def f(self):\n        return 1\n\n    async def g(self): pass\n\ndef top(x):\n    return os.sep\n"
    )
    hollowed, methods = hollow_classes(lines)
    assert len(hollowed) == len(lines)
    assert methods == {3: [("f", 5), ("g", 8)]}
    assert hollowed[9:] == lines[9:]


def test_a_misjudged_class_end_falls_back_to_a_full_parse():
    source = 'import os\n\nclass A:\n    x = """\nnot code at column 0\n"""\n    def m(self):\n        return 1\n\ndef top(x):\n    return os.sep + x\n'
    record = analyse(source)
    assert {f.name: f.drop_reason for f in record.functions} == {"A.m": "method", "top": None}
