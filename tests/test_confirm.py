"""The independent second opinion: a pass is re-run in a fresh interpreter by another driver."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import unit_tests

ADD = "def add(a, b):\n    return a + b\n"
TESTS = unit_tests("self.assertEqual(add(1, 2), 3)", "self.assertEqual(add(2, 2), 4)")
# Right only under the zygote's runner (whose argv names zygote.py): a pass only one harness sees.
HARNESS_AWARE = "import sys\n\ndef add(a, b):\n    return a + b if 'zygote' in ' '.join(sys.argv) else 0\n"


def test_an_honest_pass_is_confirmed_and_a_wrong_program_still_fails(make_sandbox):
    pool = make_sandbox(confirm=True)
    good, wrong = pool.verify([(ADD, TESTS), ("def add(a, b):\n    return a - b\n", TESTS)])
    assert (good.status, good.tests_passed) == ("pass", 2)
    assert wrong.status == "fail"


def test_a_pass_the_fresh_interpreter_does_not_see_is_rejected(make_sandbox):
    pool = make_sandbox(confirm=True)
    (result,) = pool.verify([(HARNESS_AWARE, TESTS)])
    assert (result.status, result.reason) == ("rejected", "confirm_disagrees")
    (unconfirmed,) = pool.verify([(HARNESS_AWARE, TESTS)], confirm=False)
    assert unconfirmed.status == "pass"  # the first opinion alone is fooled


def test_the_driver_counts_skips_and_expected_failures_as_not_passed(make_sandbox):
    pool = make_sandbox()
    tests = (
        "import unittest\n\nclass TestCases(unittest.TestCase):\n"
        "    def test_0(self):\n        self.assertEqual(add(1, 2), 3)\n"
        "    @unittest.expectedFailure\n    def test_1(self):\n        self.assertEqual(add(1, 2), 4)\n"
        "    def test_2(self):\n        self.skipTest('later')\n"
    )
    (result,) = pool.confirm([(ADD, tests)])
    assert (result.status, result.tests_run, result.tests_passed) == ("fail", 3, 1)


def test_the_cli_confirms_with_a_flag(tmp_path):
    rows = [
        {"id": "aware", "code": HARNESS_AWARE, "test_code": TESTS},
        {"id": "honest", "code": ADD, "test_code": TESTS},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [sys.executable, "-m", "sandbox", "verify", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
               "--no_progress", "--preload", "", "--workers", "1", "--confirm"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in out] == [("aware", "rejected"), ("honest", "pass")]
    assert out[0]["details"].startswith("confirm_disagrees")
