"""A program cannot forge a pass: early exits, fake results and patching all fail."""

from __future__ import annotations

from conftest import unit_tests, verify_one

ANSWER_TESTS = unit_tests("self.assertEqual(answer(), 42)", "self.assertEqual(answer() + 1, 43)")


def test_sys_exit_at_import_is_error(sandbox):
    code = "import sys\nsys.exit(0)\n\ndef answer():\n    return 0\n"
    result = verify_one(sandbox, code, ANSWER_TESTS)
    assert result.status == "error" and "SystemExit" in result.details


def test_os_exit_inside_a_test_is_error(sandbox):
    result = verify_one(sandbox, "import os\n\ndef answer():\n    os._exit(0)\n", ANSWER_TESTS)
    assert (result.status, result.reason) == ("error", "exited_early")


def test_printing_a_fake_unittest_summary_is_not_a_pass(sandbox):
    code = "import sys\nprint('Ran 2 tests in 0.001s\\n\\nOK')\nprint('OK', file=sys.stderr)\n\ndef answer():\n    return 0\n"
    assert verify_one(sandbox, code, ANSWER_TESTS).status == "fail"


def test_writing_a_fake_verdict_to_every_descriptor_is_rejected(sandbox):
    code = """
import json, os

def answer():
    fake = json.dumps({"load_error": None, "records": [["t", "pass", ""], ["u", "pass", ""]],
                       "started": 2, "tamper": []}).encode()
    for name in os.listdir("/proc/self/fd"):
        for payload in (b"S" + fake, fake):
            try:
                os.write(int(name), payload)
            except OSError:
                pass
    os._exit(0)
"""
    result = verify_one(sandbox, code, ANSWER_TESTS)
    assert result.status == "rejected" and result.reason == "forged_result"


def test_statically_visible_patching_is_rejected_before_running(sandbox):
    code = "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n\ndef answer():\n    return 0\n"
    result = verify_one(sandbox, code, ANSWER_TESTS)
    assert (result.status, result.reason, result.duration_s) == ("rejected", "patches_unittest", 0.0)


def test_obfuscated_patching_is_caught_at_run_time(sandbox):
    code = (
        "mod = __import__('unit' + 'test')\n"
        "case = getattr(mod, 'Test' + 'Case')\n"
        "setattr(case, 'assert' + 'Equal', lambda *a, **k: None)\n\n"
        "def answer():\n    return 0\n"
    )
    result = verify_one(sandbox, code, ANSWER_TESTS)
    assert (result.status, result.reason) == ("rejected", "tampered_test_machinery")


def test_obfuscated_builtins_patching_is_caught_at_run_time(sandbox):
    code = "b = __import__('built' + 'ins')\nsetattr(b, 'is' + 'instance', lambda *a: True)\n\ndef answer():\n    return 0\n"
    result = verify_one(sandbox, code, ANSWER_TESTS)
    assert (result.status, result.reason) == ("rejected", "tampered_builtins")


def test_an_object_equal_to_everything_is_rejected(sandbox):
    code = (
        "class Anything:\n    def __eq__(self, other):\n        return True\n\ndef answer():\n    return Anything()\n"
    )
    result = verify_one(sandbox, code, ANSWER_TESTS)
    assert (result.status, result.reason) == ("rejected", "always_equal_object")


def test_hiding_tests_from_the_loader_is_not_a_pass(sandbox):
    # The code cannot touch the tests' class before it exists, but it can sabotage
    # collection; fewer tests ran than the test code defines, so this is no pass.
    code = (
        "loader = getattr(__import__('unit' + 'test'), 'TestLoader')\n"
        "original = loader.getTestCaseNames\n"
        "def answer():\n    return 42\n"
    )
    tests = ANSWER_TESTS + "\ndel TestCases.test_1\n"
    result = verify_one(sandbox, code, tests)
    assert result.status == "error" and result.reason == "test_count_mismatch"
    assert (result.tests_run, result.tests_passed) == (1, 1)


def test_a_test_class_replaced_by_the_code_cannot_pass(sandbox):
    code = "import unittest\n\ndef answer():\n    return 0\n"
    tests = ANSWER_TESTS + "\nTestCases = object\n"
    result = verify_one(sandbox, code, tests)
    assert result.status == "fail" and "not a unittest.TestCase" in result.details
