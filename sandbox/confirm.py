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

The same driver is the flakiness probe (``Sandbox.confirm(hash_seed=..., order_seed=...)``):
a fresh interpreter is the only place where the hash seed can differ from the zygote's, and
the driver can run the tests in another order (see ``confirm_request``).
"""

from __future__ import annotations

from sandbox.verdict import PASS, REJECTED, VerifyResult

# Runs as ``python -I -B -c DRIVER RESULT_FD NONCE_FD CLASSES_JSON [ORDER_SEED]`` in
# /tmp/work, where the runner wrote program.py (with a hash seed: ``-s -P -B`` and an
# environment holding no PYTHON* variable but PYTHONHASHSEED, see _zygote._exec_driver).
# Standard library only; its result has the runner's shape. With an order seed, every test
# of every class, in unittest's order (classes as the tests define them, methods
# alphabetical), is shuffled by ``random.Random(ORDER_SEED).shuffle`` (bound before the
# program's code runs) and run in that order; unittest runs a class's fixtures around each
# run of consecutive tests of that class.
DRIVER = r"""
import io, json, os, sys, traceback, unittest


def main(result_fd, nonce_fd, classes, order_seed=None):
    nonce = os.read(nonce_fd, 64)
    os.close(nonce_fd)
    write, dumps = os.write, json.dumps
    shuffle = None
    if order_seed is not None:
        import random

        shuffle = random.Random(order_seed).shuffle
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
        if shuffle is not None:
            tests = [test for group in suite for test in group]
            shuffle(tests)
            suite = unittest.TestSuite(tests)
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


main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), *map(int, sys.argv[4:5]))
"""

HASH_SEED_MAX = 2**32 - 1  # PYTHONHASHSEED's range


def confirm_request(request: dict, hash_seed: int | None = None, order_seed: int | None = None) -> dict:
    """The zygote request that re-runs ``request``'s pair under the confirmation driver:
    in a fresh interpreter whose ``PYTHONHASHSEED`` is ``hash_seed`` (default: a random
    hash seed, as ``-I`` gives), running the tests in the order ``order_seed`` shuffles
    them into (default: unittest's order)."""
    out = {**request, "driver": DRIVER}
    if hash_seed is not None:
        if type(hash_seed) is not int or not 0 <= hash_seed <= HASH_SEED_MAX:
            raise ValueError(f"hash_seed must be an int from 0 to {HASH_SEED_MAX}, got {hash_seed!r}")
        out["hash_seed"] = hash_seed
    if order_seed is not None:
        if type(order_seed) is not int:
            raise ValueError(f"order_seed must be an int, got {order_seed!r}")
        out["order_seed"] = order_seed
    return out


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
