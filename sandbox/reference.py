"""A plain fresh-interpreter run of one program, with no sandbox at all.

This is the yardstick the sandbox is compared with (its verdicts must agree, and the
throughput benchmark measures against it). It runs the program with the host's full
privileges: use it only on trusted code such as HumanEval's canonical solutions.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from sandbox.static import count_tests
from sandbox.verdict import ERROR, FAIL, PASS, TIMEOUT, VerifyResult

_DRIVER = r"""
import importlib.util, json, sys, unittest
out_path, classes = sys.argv[1], json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("program", "program.py")
module = importlib.util.module_from_spec(spec)
try:
    spec.loader.exec_module(module)
except BaseException as exc:
    json.dump({"load_error": repr(exc)}, open(out_path, "w"))
    raise SystemExit(0)
suite = unittest.TestSuite()
loader = unittest.TestLoader()
for name in classes:
    suite.addTest(loader.loadTestsFromTestCase(getattr(module, name)))
result = unittest.TestResult()
suite.run(result)
json.dump({"run": result.testsRun, "failures": len(result.failures), "errors": len(result.errors),
           "skipped": len(result.skipped), "unexpected": len(result.unexpectedSuccesses)}, open(out_path, "w"))
"""


# CPython 3.11's AST validator keeps its recursion depth per interpreter, not per thread:
# two threads parsing at once can fail with "AST constructor recursion depth mismatch".
_PARSE_LOCK = threading.Lock()


def run_fresh(code: str, test_code: str, timeout: float = 10.0, python: str | None = None) -> VerifyResult:
    """Run ``code`` + ``test_code`` in a new ``python`` process and return its verdict."""
    with _PARSE_LOCK:
        plan = count_tests(ast.parse(test_code))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="unitcoder-fresh-") as work:
        with open(os.path.join(work, "program.py"), "w") as f:
            f.write(code.rstrip("\n") + "\n\n\n" + test_code)
        out_path = os.path.join(work, "result.json")
        env = dict(os.environ, MPLBACKEND="Agg")
        try:
            subprocess.run(
                [python or sys.executable, "-c", _DRIVER, out_path, json.dumps(list(plan.classes))],
                cwd=work,
                env=env,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return VerifyResult(TIMEOUT, duration_s=time.monotonic() - start, reason="wall_time")
        duration = time.monotonic() - start
        try:
            with open(out_path) as f:
                outcome = json.load(f)
        except (OSError, ValueError):
            return VerifyResult(ERROR, details="no result", duration_s=duration, reason="exited_early")
    if "load_error" in outcome:
        return VerifyResult(ERROR, details=outcome["load_error"], duration_s=duration, reason="load_error")
    bad = outcome["failures"] + outcome["errors"] + outcome["skipped"] + outcome["unexpected"]
    passed = outcome["run"] - bad
    status = PASS if bad == 0 and outcome["run"] == plan.count else FAIL
    return VerifyResult(status, outcome["run"], passed, duration_s=duration)
