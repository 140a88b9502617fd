"""Each outcome the sandbox reports, produced by a real program in real bubblewrap."""

from conftest import unit_tests, verify_one

ADD = "def add(a, b):\n    return a + b\n"


def test_passing_program_passes_with_every_test_counted(sandbox):
    result = verify_one(sandbox, ADD, unit_tests("self.assertEqual(add(1, 2), 3)", "self.assertEqual(add(0, 0), 0)"))
    assert (result.status, result.tests_run, result.tests_passed) == ("pass", 2, 2)


def test_failing_assertion_is_fail_with_the_traceback_in_details(sandbox):
    result = verify_one(sandbox, ADD, unit_tests("self.assertEqual(add(1, 2), 3)", "self.assertEqual(add(1, 1), 3)"))
    assert (result.status, result.tests_run, result.tests_passed) == ("fail", 2, 1)
    assert "AssertionError: 2 != 3" in result.details
    assert "self.assertEqual(add(1, 1), 3)" in result.details  # source lines reach the fix prompt


def test_exception_inside_a_test_is_fail(sandbox):
    result = verify_one(sandbox, "def f(x):\n    return 1 / x\n", unit_tests("self.assertEqual(f(0), 0)"))
    assert result.status == "fail" and "ZeroDivisionError" in result.details


def test_code_that_raises_at_import_is_error(sandbox):
    result = verify_one(sandbox, "import not_a_real_package_xyz\n", unit_tests("pass"))
    assert result.status == "error" and result.reason == "load_error"
    assert "ModuleNotFoundError" in result.details


def test_code_that_does_not_parse_is_error(sandbox):
    result = verify_one(sandbox, "def f(:\n", unit_tests("pass"))
    assert result.status == "error" and result.reason == "syntax_error"


def test_tests_without_test_methods_are_rejected(sandbox):
    result = verify_one(sandbox, ADD, "import unittest\nclass TestCases(unittest.TestCase):\n    pass\n")
    assert result.status == "rejected" and result.reason == "no_tests"


def test_skipped_test_does_not_count_as_passed(sandbox):
    tests = unit_tests("self.assertEqual(add(1, 2), 3)", "self.skipTest('not today')")
    result = verify_one(sandbox, ADD, tests)
    assert (result.status, result.tests_passed) == ("fail", 1)


def test_failing_subtest_fails_its_test(sandbox):
    body = "for x in (1, 2):\n    with self.subTest(x=x):\n        self.assertEqual(add(x, 0), 1)"
    result = verify_one(sandbox, ADD, unit_tests(body))
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_setupclass_error_fails_the_class(sandbox):
    tests = (
        "import unittest\nclass TestCases(unittest.TestCase):\n"
        "    @classmethod\n    def setUpClass(cls):\n        raise RuntimeError('fixture broke')\n"
        "    def test_a(self):\n        pass\n"
    )
    result = verify_one(sandbox, ADD, tests)
    assert result.status == "fail" and "fixture broke" in result.details


def test_segfault_is_error_not_sandbox_error(sandbox):
    result = verify_one(sandbox, "import ctypes\ndef crash():\n    return ctypes.string_at(0)\n", unit_tests("crash()"))
    assert result.status == "error" and result.reason == "crashed" and "SIGSEGV" in result.details


def test_verdicts_come_back_in_input_order(sandbox):
    programs = [
        (f"def f():\n    return {i}\n", unit_tests(f"self.assertEqual(f(), {i if i % 3 else -1})")) for i in range(12)
    ]
    statuses = [r.status for r in sandbox.verify(programs)]
    assert statuses == ["fail" if i % 3 == 0 else "pass" for i in range(12)]


def test_tests_may_mock_builtins(sandbox):
    code = "def read_first_line(path):\n    with open(path) as f:\n        return f.readline()\n"
    body = (
        "from unittest import mock\n"
        "with mock.patch('builtins.open', mock.mock_open(read_data='hello\\n')):\n"
        "    self.assertEqual(read_first_line('x.txt'), 'hello\\n')"
    )
    assert verify_one(sandbox, code, unit_tests(body)).status == "pass"


def test_heavy_packages_work_inside(sandbox):
    code = (
        "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\n\n"
        "def summarize(values):\n    fig, ax = plt.subplots()\n    ax.plot(values)\n    plt.close(fig)\n"
        "    return float(pd.Series(np.asarray(values)).mean())\n"
    )
    assert verify_one(sandbox, code, unit_tests("self.assertEqual(summarize([1, 2, 3]), 2.0)")).status == "pass"
