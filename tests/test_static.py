import ast

import pytest

from sandbox.static import count_tests, find_tampering


def plan(source: str):
    return count_tests(ast.parse(source))


def test_counts_test_methods_of_testcase_classes_only():
    source = """
import unittest
class Helper:
    def test_not_collected(self): pass
class TestCases(unittest.TestCase):
    def test_a(self): pass
    def test_b(self): pass
    def helper(self): pass
"""
    assert plan(source).classes == {"TestCases": ["test_a", "test_b"]}


def test_counts_inherited_and_mixin_tests_like_the_loader():
    source = """
from unittest import TestCase
class Mixin:
    def test_shared(self): pass
class Base(Mixin, TestCase):
    def test_base(self): pass
class Child(Base):
    def test_child(self): pass
"""
    result = plan(source)
    assert result.classes == {"Base": ["test_base", "test_shared"], "Child": ["test_base", "test_child", "test_shared"]}
    assert result.count == 5


def test_no_testcase_means_zero_tests():
    assert plan("def test_x():\n    assert True\n").count == 0


@pytest.mark.parametrize(
    "code, reason",
    [
        ("import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n", "patches_unittest"),
        ("from unittest import TestCase\nsetattr(TestCase, 'run', None)\n", "patches_unittest"),
        ("import unittest as u\ndel u.TestLoader.getTestCaseNames\n", "patches_unittest"),
        ("unittest = object()\n", "patches_unittest"),
        ("import builtins\nbuiltins.len = lambda x: 0\n", "patches_builtins"),
        ("__builtins__['print'] = None\n", "patches_builtins"),
        ("from unittest import mock\nmock.patch('builtins.print').start()\n", "patches_builtins"),
        ("import sys\nsys.modules['unittest'] = None\n", "patches_sys_modules"),
        ("import sys\nsys.modules.pop('unittest')\n", "patches_sys_modules"),
        ("from sys import modules\nmodules['json'] = 1\n", "patches_sys_modules"),
        ("class Anything:\n    def __eq__(self, other):\n        return True\n", "always_equal_object"),
    ],
)
def test_tampering_is_found_with_its_reason(code, reason):
    found = find_tampering(ast.parse(code))
    assert found is not None and found.reason == reason


@pytest.mark.parametrize(
    "code",
    [
        "import os, sys\ndef f(p):\n    sys.path.append(p)\n    return os.path.join(p, 'x')\n",
        "import sys\ndef f():\n    return sys.modules[__name__]\n",
        "class Point:\n    def __eq__(self, other):\n        return (self.x, self.y) == (other.x, other.y)\n",
        "def f(xs):\n    return len(xs)\n",
    ],
)
def test_ordinary_code_is_not_flagged(code):
    assert find_tampering(ast.parse(code)) is None
