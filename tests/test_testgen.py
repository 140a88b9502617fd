"""Cutting a usable unittest module out of a model's answer, and the prompt template."""

from __future__ import annotations

import re

import pytest

from processing.languages import PromptTemplate
from processing.languages.python import parse_test_answer

TESTS = "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(add(1, 2), 3)\n"


@pytest.mark.parametrize(
    "answer",
    [
        f"```python\n{TESTS}```",
        f"Sure! Here are the tests:\n\n```python\n{TESTS}```\n\nThese cover the basics.",
        f"Here you go:\n{TESTS}\nHope this helps!",
        f"```py\n{TESTS}",  # unclosed fence
        f"```python\nimport math\n```\nand the tests:\n```python\n{TESTS}```",
    ],
)
def test_tests_are_found_in_chatty_answers(answer):
    parsed = parse_test_answer(answer, "add")
    assert parsed.drop_reason is None
    assert "class TestCases(unittest.TestCase):" in parsed.test_code and "Hope" not in parsed.test_code


def test_tests_split_over_blocks_are_joined():
    answer = "```python\nimport unittest\nclass A(unittest.TestCase):\n    def test_x(self):\n        pass\n```\n```python\nclass B(unittest.TestCase):\n    def test_y(self):\n        pass\n```"
    parsed = parse_test_answer(answer, "f")
    assert "class A" in parsed.test_code and "class B" in parsed.test_code


def test_importing_the_function_from_a_module_is_removed():
    answer = "```python\nimport unittest\nfrom solution import add\n\nclass TestCases(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(add(1, 1), 2)\n```"
    parsed = parse_test_answer(answer, "add")
    assert parsed.drop_reason is None and "solution" not in parsed.test_code


def test_missing_unittest_import_is_added():
    answer = "class TestCases(unittest.TestCase):\n    def test_a(self):\n        self.assertTrue(add(1, 1))\n"
    parsed = parse_test_answer(answer, "add")
    assert parsed.test_code.startswith("import unittest\n")


@pytest.mark.parametrize(
    "answer, reason",
    [
        (None, "no_answer"),
        ("   ", "no_code"),
        ("I cannot help with that.", "unparseable_tests"),
        ("```python\ndef test_add():\n    assert add(1, 2) == 3\n```", "no_test_methods"),
        (
            "```python\nimport unittest\nclass TestCases(unittest.TestCase):\n    def helper(self):\n        pass\n```",
            "no_test_methods",
        ),
        (f"```python\ndef add(a, b):\n    return 3\n\n{TESTS}```", "redefines_function"),
        (f"```python\nadd = lambda a, b: 3\n{TESTS}```", "redefines_function"),
    ],
)
def test_unusable_answers_are_dropped_with_a_reason(answer, reason):
    parsed = parse_test_answer(answer, "add")
    assert (parsed.test_code, parsed.drop_reason) == (None, reason)


def test_prompt_template_fills_code_with_braces_and_hashes_its_text(tmp_path):
    (tmp_path / "t_system.txt").write_text("system text")
    (tmp_path / "t_user.txt").write_text("Test {function_name}:\n{code}")
    template = PromptTemplate.load("t", tmp_path)
    messages = template.conversation(code="def f(d):\n    return {k: 1 for k in d}\n", function_name="f")
    assert messages[1]["content"] == "Test f:\ndef f(d):\n    return {k: 1 for k in d}\n"
    (tmp_path / "t_user.txt").write_text("Test {function_name}, please:\n{code}")
    assert PromptTemplate.load("t", tmp_path).hash != template.hash


@pytest.mark.parametrize(
    "name, values",
    [
        ("unit_test", {"code": "CODE", "function_name": "NAME"}),
        ("fix", {"code": "CODE", "test_code": "TESTS", "error": "TRACE", "function_name": "NAME"}),
        ("refine", {"code": "CODE", "test_code": "TESTS", "function_name": "NAME"}),
    ],
)
def test_shipped_prompts_use_exactly_the_values_their_step_fills(name, values):
    """A misspelt or missing placeholder in a template would send the model a literal
    ``{...}`` or leave out the code: every value the step passes lands, nothing else is left."""
    system, user = (m["content"] for m in PromptTemplate.load(name).conversation(**values))
    assert all(value in user for value in values.values())
    assert not re.search(r"\{[a-z_]+\}", system + user)
