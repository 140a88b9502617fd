"""An independent second opinion on a pass.

The usual run forks a program from the zygote and runs its tests in that process with the
zygote's own ``TestResult``. A confirmation re-runs a pair that passed in a *fresh*
interpreter: inside the same per-program isolation (namespaces, mounts, limits, identity,
seccomp filter), the runner ``exec``s ``python -I -B -c DRIVER``, a different, stdlib-only
test driver (``unittest.TextTestRunner`` and its result lists), which loads the program
from a file and hands its counts back on the result channel, framed with the program's
nonce (read from a pipe the driver closes before the program's code runs). Both
verdicts must agree: a pass that the driver does not also see pass is ``rejected`` with
reason ``confirm_disagrees``. A forgery has to fool two unrelated harnesses, one of them
without any state inherited from the zygote.
"""

from __future__ import annotations

from sandbox.verdict import PASS, REJECTED, VerifyResult

# Runs as ``python -I -B -c DRIVER RESULT_FD NONCE_FD CLASSES_JSON`` in /tmp/work, where the
# runner wrote program.py. Standard library only; its result has the runner's shape.
DRIVER = r"""
import io, json, os, sys, traceback, unittest


def main(result_fd, nonce_fd, classes):
    nonce = os.read(nonce_fd, 64)
    os.close(nonce_fd)
    write, dumps = os.write, json.dumps
    out = {"load_error": None, "load_error_kind": None, "records": [], "started": 0, "tamper": []}
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    namespace = {"__name__": "program", "__file__": os.path.abspath("program.py")}
    try:
        exec(compile(source, "program.py", "exec"), namespace)
    except BaseException as exc:
        out["load_error"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
        out["load_error_kind"] = "oom" if isinstance(exc, MemoryError) else "error"
    else:
        suite = unittest.TestSuite()
        for name in classes:
            cls = namespace.get(name)
            if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
                suite.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
            else:
                out["records"].append([name, "error", "not a unittest.TestCase after loading"])
        result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
        bad = [("fail", result.failures), ("error", result.errors), ("fail", result.skipped),
               ("fail", result.expectedFailures)]
        for kind, items in bad:
            for test, text in items:
                out["records"].append([str(test), kind, str(text)[-2000:]])
        for test in result.unexpectedSuccesses:
            out["records"].append([str(test), "fail", "unexpected success"])
        passed = result.testsRun - sum(len(items) for _, items in bad) - len(result.unexpectedSuccesses)
        out["records"] += [["confirmed", "pass", ""]] * max(0, passed)
        out["started"] = result.testsRun
    write(result_fd, nonce + dumps(out).encode("utf-8"))


main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
"""


def confirm_request(request: dict) -> dict:
    """The zygote request that re-runs ``request``'s pair under the confirmation driver."""
    return {**request, "driver": DRIVER}


def agree(first: VerifyResult, second: VerifyResult) -> VerifyResult:
    """The verdict of a pair that passed once, given the confirmation's verdict."""
    if first.status != PASS or second.status == PASS:
        return first
    if second.status == "sandbox_error":
        return second  # infrastructure: never blamed on the code
    return VerifyResult(
        REJECTED,
        first.tests_run,
        first.tests_passed,
        f"passed in the sandbox's runner, but a fresh interpreter with another test driver says "
        f"{second.status}: {second.details}",
        first.duration_s,
        "confirm_disagrees",
    )
