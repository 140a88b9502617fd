"""What the test-quality step asks of the sandbox: per-program time limits, coverage measured
inside the sandbox (and out of the program's reach), and a re-seeded, re-ordered second run."""

from __future__ import annotations

import importlib.util
import io
import json
import random
import re
import subprocess
import sys
import textwrap
import time
import unittest

import coverage
import pytest

from conftest import unit_tests
from sandbox.bwrap import ZYGOTE_SOURCE
from sandbox.coverage_report import summarize

LOOP = "def spin():\n    while True:\n        pass\n"
LOOP_TESTS = unit_tests("spin()")
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = unit_tests("self.assertEqual(add(1, 2), 3)")

# A function with a branch its tests never take (line 5), and a docstring (not a statement).
SIGN = '''def sign(x):
    """The sign of x, as 1 or -1."""
    if x > 0:
        return 1
    return -1
'''
SIGN_TESTS = unit_tests("self.assertEqual(sign(5), 1)", "self.assertEqual(sign(7), 1)")
UNTESTED = 5  # `return -1`


def outcome(result):
    """A verdict without its timing: what must not change when coverage is measured."""
    return (result.status, result.reason, result.tests_run, result.tests_passed, result.details)


# --------------------------------------------------------------------------- per-program time limits


def test_a_program_s_own_time_limit_replaces_the_pool_s(sandbox):
    start = time.monotonic()
    looping, honest, also = sandbox.verify(
        [(LOOP, LOOP_TESTS), (ADD, ADD_TESTS), (SIGN, SIGN_TESTS)], timeouts=[1.0, 8, 8]
    )
    elapsed = time.monotonic() - start
    assert looping.status == "timeout" and looping.reason in ("wall_time", "cpu_time")
    assert looping.duration_s < 2.5 and elapsed < 4  # the pool's limit is 8 s
    assert (honest.status, honest.tests_passed) == ("pass", 1)
    assert (also.status, also.tests_passed) == ("pass", 2)


def test_time_limits_follow_their_pairs_past_statically_rejected_ones(sandbox):
    static_reject = ("import unittest\nunittest.TestCase.assertEqual = lambda *a: None\n", ADD_TESTS)
    verdicts = sandbox.verify([static_reject, (ADD, ADD_TESTS), (LOOP, LOOP_TESTS)], timeouts=[30, 8, 1.0])
    assert [v.status for v in verdicts] == ["rejected", "pass", "timeout"]
    assert verdicts[2].duration_s < 2.5


def test_the_confirmation_driver_takes_time_limits_too(sandbox):
    start = time.monotonic()
    looping, honest = sandbox.confirm([(LOOP, LOOP_TESTS), (ADD, ADD_TESTS)], timeouts=[1.0, 8])
    assert looping.status == "timeout" and time.monotonic() - start < 4
    assert honest.status == "pass"


def test_an_explicit_cpu_limit_stays_while_the_wall_clock_is_the_program_s(make_sandbox):
    pool = make_sandbox(timeout=30, cpu_seconds=1)
    (result,) = pool.verify([(LOOP, LOOP_TESTS)], timeouts=[20])
    assert (result.status, result.reason) == ("timeout", "cpu_time")
    assert result.duration_s < 5


@pytest.mark.parametrize(
    "timeouts", [[1.0], [1.0, 0], [1.0, -2], [1.0, float("nan")], [1.0, float("inf")], [1.0, True]]
)
def test_time_limits_must_be_one_positive_number_per_pair(sandbox, timeouts):
    with pytest.raises(ValueError):
        sandbox.verify([(ADD, ADD_TESTS), (ADD, ADD_TESTS)], timeouts=timeouts)
    with pytest.raises(ValueError):
        sandbox.confirm([(ADD, ADD_TESTS), (ADD, ADD_TESTS)], timeouts=timeouts)


# --------------------------------------------------------------------------- coverage


def host_coverage(tmp_path, code, test_code):
    """What coverage.py itself records, on the host, for the code part of the same program
    compiled the way the runner compiles it (code and tests apart, one file's line numbers)."""
    path = tmp_path / "program.py"
    head = code.rstrip("\n") + "\n\n\n"
    path.write_text(head + test_code)
    measure = coverage.Coverage(data_file=None, branch=True, include=[str(path)], config_file=False)
    namespace = {"__name__": "program"}
    measure.start()
    try:
        exec(compile(head, str(path), "exec"), namespace)
        exec(compile("\n" * head.count("\n") + test_code, str(path), "exec"), namespace)
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(namespace["TestCases"])
        unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    finally:
        measure.stop()
    last = head.count("\n") - 2
    data = measure.get_data()
    arcs = sorted([a, b] for a, b in data.arcs(str(path)) if 0 < abs(a) <= last and 0 < abs(b) <= last)
    return {"lines": sorted(n for n in data.lines(str(path)) if n <= last), "arcs": arcs}


def test_coverage_reports_the_lines_and_arcs_that_ran(sandbox, tmp_path):
    (result,) = sandbox.verify([(SIGN, SIGN_TESTS)], coverage=True)
    assert result.status == "pass"
    assert result.coverage["lines"] == [1, 3, 4]  # the def runs when the code loads; no docstring
    arcs = {tuple(arc) for arc in result.coverage["arcs"]}
    assert {(-1, 1), (-1, 3), (3, 4), (4, -1)} <= arcs and (3, UNTESTED) not in arcs
    if sys.gettrace() is None:  # (not under a host-side coverage run of the test suite)
        assert result.coverage == host_coverage(tmp_path, SIGN, SIGN_TESTS)


def test_summarize_names_the_untested_branch(sandbox):
    (result,) = sandbox.verify([(SIGN, SIGN_TESTS)], coverage=True)
    report = summarize(SIGN, result.coverage["lines"], result.coverage["arcs"], 1, 5)
    assert report == {
        "line_coverage": 3 / 4,
        "branch_coverage": 0.5,
        "uncovered_lines": [UNTESTED],
        "statements": 4,
        "branches": 2,
    }
    body = summarize(SIGN, result.coverage["lines"], result.coverage["arcs"], 3, 5)
    assert (body["line_coverage"], body["uncovered_lines"]) == (2 / 3, [UNTESTED])


def test_summarize_gives_the_figures_coverage_report_gives(tmp_path):
    code = textwrap.dedent('''\
        import math


        def walk(x, items):
            """Doc
            string."""
            total = 0
            for item in items:
                if item > x and (
                    item < 100
                ):
                    total += item
                elif item == x:
                    continue
                else:
                    break
            try:
                total += 1 / x
            except ZeroDivisionError:
                total = math.inf
            return total if x else -1


        def unused(a):  # pragma: no cover
            return a
        ''')
    tests = unit_tests("self.assertEqual(walk(1, [2, 1, 0]), 3.0)")
    measured = host_coverage(tmp_path, code, tests)
    path = tmp_path / "program.py"
    path.write_text(code)  # coverage.py's own report, on the code part alone
    measure = coverage.Coverage(data_file=None, branch=True, config_file=False)
    data = measure.get_data()
    data.add_arcs({str(path): [tuple(arc) for arc in measured["arcs"]]})
    measure.json_report(morfs=[str(path)], outfile=str(tmp_path / "report.json"))
    expected = json.loads((tmp_path / "report.json").read_text())["files"]
    (summary,) = [entry["summary"] for entry in expected.values()]
    (missing,) = [entry["missing_lines"] for entry in expected.values()]
    report = summarize(code, measured["lines"], measured["arcs"], 1, len(code.splitlines()))
    assert report["statements"] == summary["num_statements"]
    assert report["branches"] == summary["num_branches"]
    assert round(report["line_coverage"] * report["statements"]) == summary["covered_lines"]
    assert round(report["branch_coverage"] * report["branches"]) == summary["covered_branches"]
    assert report["uncovered_lines"] == missing and report["uncovered_lines"]


def test_coverage_is_none_unless_asked(sandbox):
    (result,) = sandbox.verify([(SIGN, SIGN_TESTS)])
    assert result.coverage is None and result.to_dict()["coverage"] is None
    (measured,) = sandbox.verify([(SIGN, SIGN_TESTS)], coverage=True)
    assert measured.to_dict()["coverage"]["lines"] == [1, 3, 4]
    (again,) = sandbox.verify([(SIGN, SIGN_TESTS)])  # the same workers, which measured before
    assert again.coverage is None


def test_coverage_is_none_when_the_run_did_not_finish(sandbox):
    (looping,) = sandbox.verify([(LOOP, LOOP_TESTS)], coverage=True, timeouts=[1.0])
    assert (looping.status, looping.coverage) == ("timeout", None)


VERDICT_PROGRAMS = [
    (SIGN, SIGN_TESTS),  # pass
    (SIGN, unit_tests("self.assertEqual(sign(-3), 1)")),  # fail
    ("def sign(x):\n    return 1\n\nraise ValueError('at import')\n", SIGN_TESTS),  # error (load_error)
    (
        "case = getattr(__import__('unit' + 'test'), 'Test' + 'Case')\n"
        "setattr(case, '__unittest_expecting' + '_failure__', True)\n\ndef sign(x):\n    return 0\n",
        SIGN_TESTS,
    ),  # rejected at run time (tampered_test_machinery)
    ("import unittest\nunittest.TestCase.assertEqual = lambda *a: None\n" + SIGN, SIGN_TESTS),  # rejected statically
    ("import sys\n\ndef traced():\n    return sys.gettrace()\n", unit_tests("self.assertIsNone(traced())")),  # pass
    (
        "import numpy as np\n\ndef total(n):\n    return int(np.arange(n).sum())\n",
        unit_tests("self.assertEqual(total(4), 6)"),
    ),
]


def test_verdicts_are_the_same_with_and_without_coverage(sandbox):
    plain = sandbox.verify(VERDICT_PROGRAMS)
    measured = sandbox.verify(VERDICT_PROGRAMS, coverage=True)
    assert [outcome(r) for r in measured] == [outcome(r) for r in plain]
    statuses = [r.status for r in plain]
    assert statuses == ["pass", "fail", "error", "rejected", "rejected", "pass", "pass"]
    assert [r.coverage is not None for r in measured] == [True, True, True, False, False, True, True]
    assert measured[2].coverage["lines"] == [1, 4]  # it ran up to the raise
    assert measured[6].coverage["lines"] == [1, 3, 4]  # numpy's own lines are not the program's


# What a program may try against the measurement; each runs before the tests call sign(5),
# so line 5 of SIGN must stay unrun, and the lines the tests run after it must be measured.
HIDING = {
    "settrace": """
        import sys
        try:
            sys.settrace(None)
        except RuntimeError:
            pass
        try:
            sys.setprofile(None)
        except RuntimeError:
            pass
        """,
    "coverage_api": """
        try:
            import coverage
            current = coverage.Coverage.current()
            if current is not None:
                current.stop()
            for klass in object.__subclasses__():
                for instance in list(getattr(klass, '_instances', None) or []):
                    instance.stop()
            mine = coverage.Coverage(data_file=None)
            mine.start()
            mine.stop()
        except Exception:
            pass
        """,
    "monitoring": """
        import sys
        monitoring = getattr(sys, 'monitoring', None)
        if monitoring is not None:
            for tool in range(6):
                try:
                    monitoring.set_events(tool, 0)
                    monitoring.register_callback(tool, monitoring.events.LINE, None)
                    monitoring.free_tool_id(tool)
                except Exception:
                    pass
        """,
    "gettrace": """
        import _imp, importlib, importlib.util, sys
        importlib.reload(sys)
        _imp.create_builtin(importlib.util.find_spec('sys'))  # puts sys's saved namespace back
        tracer = sys.gettrace()
        if tracer is not None:
            tracer.stop()
        """,
}


@pytest.mark.parametrize("attempt", sorted(HIDING))
def test_a_program_cannot_stop_the_measurement(sandbox, attempt):
    code = textwrap.dedent(HIDING[attempt]) + "\n\n" + SIGN
    offset = code.count("\n") - SIGN.count("\n")
    (plain,) = sandbox.verify([(code, SIGN_TESTS)])
    (result,) = sandbox.verify([(code, SIGN_TESTS)], coverage=True)
    assert outcome(result) == outcome(plain) and result.status == "pass"
    lines = result.coverage["lines"]
    assert offset + 3 in lines and offset + 4 in lines  # measured after the attempt
    assert offset + UNTESTED not in lines


FAKING = {
    "gettrace_data": """
        import _imp, importlib.util, sys
        _imp.create_builtin(importlib.util.find_spec('sys'))
        tracer = sys.gettrace()
        if tracer is not None:
            for lines in tracer.data.values():
                lines.update(range(1, 1000))
        """,
    "compile": """
        exec(compile('\\n' * (LINE - 1) + 'pass', 'program.py', 'exec'))
        """,
    "code_replace": """
        exec(compile('\\n' * (LINE - 1) + 'pass', 'elsewhere.py', 'exec').replace(co_filename='program.py'))
        """,
    "fix_co_filename": """
        import _imp
        made = compile('\\n' * (LINE - 1) + 'pass', 'elsewhere.py', 'exec')
        _imp._fix_co_filename(made, 'program.py')
        exec(made)
        """,
    "marshal": """
        import marshal
        made = marshal.dumps(compile('\\n' * (LINE - 1) + 'pass', 'abcdefg.py', 'exec'))
        exec(marshal.loads(made.replace(b'abcdefg.py', b'program.py')))
        """,
}


@pytest.mark.parametrize("attempt", sorted(FAKING))
def test_a_program_cannot_make_unrun_lines_appear_run(sandbox, attempt):
    attempt_code = textwrap.dedent(FAKING[attempt]).strip("\n") + "\n\n\n"
    untested = 1 + attempt_code.count("\n") + UNTESTED  # SIGN's untested line, after `LINE = ...` and the attempt
    code = f"LINE = {untested}\n" + attempt_code + SIGN
    assert code.splitlines()[untested - 1] == "    return -1"
    (plain,) = sandbox.verify([(code, SIGN_TESTS)])
    (result,) = sandbox.verify([(code, SIGN_TESTS)], coverage=True)
    assert outcome(result) == outcome(plain)
    assert result.status == ("error" if attempt == "marshal" else "pass")  # (the program may not marshal.loads)
    assert untested not in result.coverage["lines"]
    assert all(untested not in arc for arc in result.coverage["arcs"])


def test_code_made_under_the_program_s_name_forfeits_its_coverage(sandbox):
    code = "exec(compile('\\n' * 9 + 'pass', 'program.py', 'exec'))\n\n" + SIGN
    (result,) = sandbox.verify([(code, SIGN_TESTS)], coverage=True)
    assert result.status == "pass" and result.coverage == {"lines": [], "arcs": []}
    honest = "exec(compile('pass', 'elsewhere.py', 'exec'))\n\n" + SIGN  # other names are fine
    (result,) = sandbox.verify([(honest, SIGN_TESTS)], coverage=True)
    assert result.coverage["lines"] == [1, 3, 5, 6]


def test_the_cli_writes_coverage_with_a_flag(tmp_path):
    rows = [{"id": "sign", "code": SIGN, "test_code": SIGN_TESTS}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [sys.executable, "-m", "sandbox", "verify", str(tmp_path / "in.jsonl"), "--no_progress",
            "--preload", "", "--workers", "1"]  # fmt: skip
    for flag, out in (([], "plain.jsonl"), (["--coverage"], "measured.jsonl")):
        proc = subprocess.run(base + ["-o", str(tmp_path / out), *flag], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    (plain,) = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    (measured,) = [json.loads(line) for line in (tmp_path / "measured.jsonl").read_text().splitlines()]
    assert "coverage" not in plain and plain["status"] == measured["status"] == "pass"
    assert measured["coverage"]["lines"] == [1, 3, 4]


def load_zygote():
    spec = importlib.util.spec_from_file_location("unitcoder_zygote_quality", ZYGOTE_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_result_channel_carries_coverage_only_in_its_own_shape():
    zygote = load_zygote()
    out = {"load_error": None, "load_error_kind": None, "records": [["t", "pass", ""]], "started": 1, "tamper": []}
    assert json.loads(zygote._encode_result(out)) == out  # unmeasured: as before
    measured = json.loads(zygote._encode_result({**out, "coverage": ((1, 3), ((-1, 1), (1, 3)))}))
    assert measured["coverage"] == {"lines": [1, 3], "arcs": [[-1, 1], [1, 3]]}
    assert zygote._result_shape_ok(measured) and zygote._result_shape_ok({**out, "coverage": None})
    for bad in ({"lines": [1], "arcs": [[1]]}, {"lines": ["1"], "arcs": []}, {"lines": []}, [1, 2]):
        assert not zygote._result_shape_ok({**out, "coverage": bad})


# --------------------------------------------------------------------------- a re-seeded, re-ordered second run


def recorded_hash(sandbox, seed):
    """``hash("some string")`` in the driver's fresh interpreter under ``seed``, from a first run."""
    tests = unit_tests("self.fail('hash=%d' % hash('some string'))")
    (first,) = sandbox.confirm([(ADD, tests)], hash_seed=seed)
    return int(re.search(r"hash=(-?\d+)", first.details).group(1))


def test_the_hash_seed_reaches_the_fresh_interpreter(sandbox):
    value = recorded_hash(sandbox, 12345)
    tests = unit_tests(f"self.assertEqual(hash('some string'), {value})")
    same, other, default = [sandbox.confirm([(ADD, tests)], hash_seed=seed)[0] for seed in (12345, 54321, None)]
    assert same.status == "pass"
    assert other.status == "fail" and default.status == "fail"
    assert recorded_hash(sandbox, 12345) == value  # the same seed, the same hashes


def test_the_hash_seeded_interpreter_is_as_isolated_as_the_default_one(sandbox):
    check = """
        import os, sys
        self.assertEqual(os.environ.get('PYTHONHASHSEED'), __SEED__)
        self.assertEqual(sorted(k for k in os.environ if k.startswith('PYTHON')), __VARIABLES__)
        self.assertTrue(sys.flags.no_user_site and sys.flags.safe_path and sys.flags.dont_write_bytecode)
        self.assertNotIn('', sys.path)
        self.assertNotIn(os.getcwd(), sys.path)
        """
    seeded = check.replace("__SEED__", "'7'").replace("__VARIABLES__", "['PYTHONHASHSEED']")
    default = check.replace("__SEED__", "None").replace("__VARIABLES__", "['PYTHONDONTWRITEBYTECODE']")  # -I ignores it
    (seeded_run,) = sandbox.confirm([(ADD, unit_tests(seeded))], hash_seed=7)
    (default_run,) = sandbox.confirm([(ADD, unit_tests(default))])
    assert (seeded_run.status, default_run.status) == ("pass", "pass"), seeded_run.details + default_run.details


def reversing_seed(count):
    """An order seed under which the driver runs ``count`` tests in exactly the reverse order."""
    for seed in range(10_000):
        order = list(range(count))
        random.Random(seed).shuffle(order)
        if order == list(range(count))[::-1]:
            return seed
    raise AssertionError("no such seed")


ORDER_CODE = "SEEN = []\n\ndef note(x):\n    SEEN.append(x)\n    return len(SEEN)\n"
WITHIN = unit_tests("self.assertEqual(note('a'), 1)", "self.assertEqual(SEEN, ['a'])")  # test_0, test_1
ACROSS = (
    "import unittest\n\nclass Writes(unittest.TestCase):\n    def test_write(self):\n        note('a')\n\n"
    "class Reads(unittest.TestCase):\n    def test_read(self):\n        self.assertEqual(SEEN, ['a'])\n"
)


@pytest.mark.parametrize("tests", [WITHIN, ACROSS], ids=["within_a_class", "across_classes"])
def test_an_order_seed_shows_tests_that_depend_on_their_order(sandbox, tests):
    seed = reversing_seed(2)
    (alphabetical,) = sandbox.confirm([(ORDER_CODE, tests)])
    (shuffled,) = sandbox.confirm([(ORDER_CODE, tests)], order_seed=seed)
    (again,) = sandbox.confirm([(ORDER_CODE, tests)], order_seed=seed)
    assert (alphabetical.status, alphabetical.tests_passed) == ("pass", 2)
    assert (shuffled.status, shuffled.tests_run) == ("fail", 2)
    assert outcome(again) == outcome(shuffled)  # deterministic
    (verified,) = sandbox.verify([(ORDER_CODE, tests)])
    assert verified.status == "pass"  # the forked runner's order is unittest's


def test_independent_tests_pass_in_any_order_under_any_hash_seed(sandbox):
    tests = unit_tests(*[f"self.assertEqual(add({i}, 1), {i + 1})" for i in range(6)])
    verdicts = [sandbox.confirm([(ADD, tests)], hash_seed=seed, order_seed=seed)[0] for seed in (1, 2, 3)]
    assert [(v.status, v.tests_passed) for v in verdicts] == [("pass", 6)] * 3


@pytest.mark.parametrize("seeds", [{"hash_seed": -1}, {"hash_seed": 2**32}, {"hash_seed": "1"}, {"order_seed": 1.5}])
def test_seeds_must_be_integers_in_range(sandbox, seeds):
    with pytest.raises(ValueError):
        sandbox.confirm([(ADD, ADD_TESTS)], **seeds)
