"""The zygote's parts, imported from the file itself (it is a standalone script that does
nothing at import), and its fallback path (unshare + fork) run end to end."""

from __future__ import annotations

import ast
import dis
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import types

import pytest

from conftest import unit_tests
from sandbox.bwrap import ZYGOTE_SOURCE, build_command, find_bwrap
from sandbox.config import SandboxConfig
from sandbox.static import count_tests
from sandbox.verdict import compose


def load_zygote():
    spec = importlib.util.spec_from_file_location("unitcoder_zygote_under_test", ZYGOTE_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def zygote():
    return load_zygote()


NONCE = b"ab" * 32
GOOD = {"load_error": None, "load_error_kind": None, "records": [["t", "pass", ""]], "started": 1, "tamper": []}


def parse(zygote, body: bytes, nonce: bytes = NONCE, setup: bytes = b"S") -> dict:
    raw = setup + body
    report = {}
    zygote._parse_result(report, raw, nonce, len(raw))
    return report


# --------------------------------------------------------------------------- import


def test_importing_the_zygote_does_nothing(zygote):
    before = (os.fstat(0), os.fstat(1), sys.argv[:])
    again = load_zygote()
    assert (os.fstat(0), os.fstat(1), sys.argv) == before
    assert (again.CONFIG, again.PROTO_IN, again.PROTO_OUT, again.PRELOADED) == ({}, None, None, [])


# --------------------------------------------------------------------------- the result frame


def test_a_well_formed_result_is_read(zygote):
    report = parse(zygote, NONCE + json.dumps(GOOD).encode())
    assert (report["setup_done"], report["result_forged"], report["result"]) == (True, False, GOOD)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        None,
        "pass",
        dict(GOOD, records=[]) | {"extra": 1},
        {k: v for k, v in GOOD.items() if k != "tamper"},
        dict(GOOD, records=[["t", "pass"]]),
        dict(GOOD, records=[["t", "passed", ""]]),
        dict(GOOD, records=[["t", "pass", 3]]),
        dict(GOOD, records="pass"),
        dict(GOOD, started=-1),
        dict(GOOD, started=1.5),
        dict(GOOD, tamper=[1]),
        dict(GOOD, load_error=[]),
        dict(GOOD, load_error_kind="fine"),
    ],
)
def test_a_result_of_the_wrong_shape_is_forged(zygote, payload):
    report = parse(zygote, NONCE + json.dumps(payload).encode())
    assert (report["result_forged"], report["result"]) == (True, None)


def test_a_deeply_nested_result_is_forged_not_an_exception(zygote):
    report = parse(zygote, NONCE + b"[" * 200_000 + b"]" * 200_000)
    assert (report["result_forged"], report["result"]) == (True, None)


@pytest.mark.parametrize(
    "body",
    [
        b"x" + NONCE + json.dumps(GOOD).encode(),
        b"cd" * 32 + json.dumps(GOOD).encode(),
        NONCE + b"\xff\xfe",
        NONCE + b"{",
    ],
    ids=["bytes-before", "wrong-nonce", "not-utf8", "not-json"],
)
def test_anything_but_the_framed_result_is_forged(zygote, body):
    assert parse(zygote, body)["result_forged"] is True


def test_an_empty_channel_after_setup_is_no_result_not_forgery(zygote):
    report = parse(zygote, b"")
    assert (report["setup_done"], report["result_forged"], report["result"]) == (True, False, None)


def test_an_oversized_result_is_forged(zygote):
    raw = b"S" + NONCE + json.dumps(GOOD).encode()
    report = {}
    zygote._parse_result(report, raw, NONCE, zygote.MAX_RESULT_BYTES + 1)
    assert report["result_forged"] is True


@pytest.mark.parametrize("text", ["plain", "caf\u00e9 \u2713", "lone \udcff surrogate", 'quote " and \\ and \n'])
def test_the_result_encoder_writes_json_the_parser_reads_back(zygote, text):
    out = dict(GOOD, records=[["program.T.test_0", "fail", text]], load_error=None, tamper=[text])
    encoded = zygote._encode_result(out)
    encoded.encode("ascii")  # the runner writes pure ASCII
    report = parse(zygote, NONCE + encoded.encode("ascii"))
    assert report["result"] == json.loads(json.dumps(out))


# --------------------------------------------------------------------------- the snapshot comparison


def make_class_and_module():
    module = types.ModuleType("unitcoder_fake_module")

    class Root:
        pass

    class Thing(Root):
        def method(self):
            return 1

    Thing.__module__ = module.__name__
    module.Thing, module.helper, module.cache = Thing, len, None
    return module, Thing


def baseline(zygote, module, Thing):
    entries, cells = zygote._module_entries(module.__name__, module, False, True)
    more, more_cells = zygote._class_entries(Thing, False, stop=(object,))
    typed = ("type of m", module, type(module), None, "type", None, zygote._probe(module, "type"))
    return (zygote._guard(entries + more + [typed], cells + more_cells),)


@pytest.fixture(params=["memory probes", "full comparison"])
def probes(request, zygote):
    """Both ways the comparison runs: through memory probes, and object by object."""
    layout = zygote._probe_layout() if request.param == "memory probes" else None
    if request.param == "memory probes":
        assert layout is not None  # CPython 3.11: the layout is known and verified
    saved, zygote._PROBE_LAYOUT = zygote._PROBE_LAYOUT, layout
    yield
    zygote._PROBE_LAYOUT = saved


@pytest.mark.parametrize(
    "change, changed",
    [
        (lambda m, T: None, False),
        (lambda m, T: setattr(m, "helper", max), True),
        (lambda m, T: setattr(m, "cache", {"filled": "lazily"}), False),
        (lambda m, T: setattr(m, "submodule", types.ModuleType("x")), False),
        (lambda m, T: delattr(m, "helper"), True),
        (lambda m, T: setattr(T, "method", lambda self: 2), True),
        (lambda m, T: setattr(T, "__getattribute__", lambda self, name: None), True),
        (lambda m, T: setattr(T, "__slotnames__", []), False),
        (lambda m, T: T.__annotations__, False),
        (lambda m, T: setattr(T, "__bases__", (type("Other", (), {}),)), True),
        (lambda m, T: setattr(m, "__class__", type("Sub", (types.ModuleType,), {})), True),
    ],
    ids=[
        "nothing",
        "function-replaced",
        "lazy-cache-filled",
        "submodule-added",
        "function-removed",
        "method-replaced",
        "dunder-added-to-class",
        "copy-cache-on-class",
        "annotations-read",
        "bases-reassigned",
        "module-class-swapped",
    ],
)
def test_the_comparison_sees_behaviour_changes_and_only_those(zygote, probes, change, changed):
    module, Thing = make_class_and_module()
    guards = baseline(zygote, module, Thing)
    change(module, Thing)
    assert bool(zygote._compare(guards)) is changed


def test_the_comparison_sees_a_rewritten_closure(zygote, probes):
    def outer():
        value = 1

        def inner():
            return value

        return inner

    module, Thing = make_class_and_module()
    module.closure = outer()
    guards = baseline(zygote, module, Thing)
    module.closure.__closure__[0].cell_contents = 2
    assert zygote._compare(guards) == ("<a closure of the test machinery>",)


def test_the_machinery_baseline_covers_every_unittest_and_contextlib_class(zygote):
    import contextlib
    import unittest.case

    (entries, _, _, _), modules = zygote._machinery_baseline()
    labels = {label for label, *_ in entries}
    expected = {"unittest.case.TestCase", "unittest.case._Outcome", "unittest.suite.TestSuite"}
    expected |= {"contextlib._GeneratorContextManager", "unittest.case._AssertRaisesContext", "builtins"}
    assert expected <= labels
    assert {("unittest.case", unittest.case), ("contextlib", contextlib)} <= {(n, m) for n, m, _ in modules}


# --------------------------------------------------------------------------- what runs after the program starts

AFTER_START = [
    "_step_program",
    "_step_load",
    "_step_collect",
    "_class_guard",
    "_class_guard_holds",
    "_step_class",
    "_instance_state",
    "_shadowing",
    "_step_test",
    "_step_check",
    "_step_dispatch",
    "_format_error",
    "_classify",
    "_genuine",
    "_compare",
    "_encode_result",
    "_record_ok",
    "_driver",
    "_launch",
]


def nested_code(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from nested_code(const)


@pytest.mark.parametrize("name", AFTER_START + ["<audit hook>"])
def test_runner_code_that_runs_after_the_program_starts_looks_up_no_global_name(zygote, name):
    # The program can rebind the zygote's globals and builtins; what the runner does after
    # the program started must use only what it bound (in default arguments) before.
    if name == "<audit hook>":
        code = zygote._make_audit_hook((), frozenset(), frozenset()).__code__
    else:
        code = getattr(zygote, name).__code__
    lookups = [
        ins.argval
        for each in nested_code(code)
        for ins in dis.get_instructions(each)
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL")
    ]
    assert lookups == []


# --------------------------------------------------------------------------- the audit hook

HOOK_PROBE = r"""
import importlib.util, json, sys, types
spec = importlib.util.spec_from_file_location("z", sys.argv[1])
z = importlib.util.module_from_spec(spec); spec.loader.exec_module(z)
z._zygote_state()
results = {}
program = compile(sys.argv[2], "program.py", "exec")
tests = compile("def test_frames():\n    return sys._getframe().f_code.co_name\n", "program.py", "exec")
ids = frozenset(id(c) for c in [tests] + [c for c in tests.co_consts if isinstance(c, types.CodeType)])
sys.addaudithook(z._make_audit_hook(z._TRUSTED_ROOTS, ids, z._GADGETS))
namespace = {"__name__": "program", "results": results}
exec(tests, namespace)
exec(program, namespace)
print(json.dumps(results))
"""

PROGRAM = r"""
import collections, ctypes, gc, inspect, logging, os, sys, traceback, typing, warnings, json

def attempt(name, action):
    try:
        action()
        results[name] = "allowed"
    except RuntimeError as exc:
        results[name] = "refused" if "sandbox refuses" in str(exc) else f"error: {exc}"
    except Exception as exc:
        results[name] = f"error: {type(exc).__name__}: {exc}"

def tb_frame():
    try:
        1 / 0
    except ZeroDivisionError as exc:
        return exc.__traceback__.tb_frame

def generator_frame():
    def gen():
        yield
    g = gen()
    return g.gi_frame

def proc_mem():
    os.symlink("/proc/self/mem", "/tmp/unitcoder-hook-probe-mem-" + str(os.getpid()))
    try:
        open("/tmp/unitcoder-hook-probe-mem-" + str(os.getpid()), "rb").close()
    finally:
        os.unlink("/tmp/unitcoder-hook-probe-mem-" + str(os.getpid()))

def proc_mem_through_the_installation():
    open(os.path.dirname(os.__file__) + "/../../../../../../../../proc/self/mem", "rb").close()

def rewrite_library_function():
    json.dumps.__code__ = (lambda *a, **k: "").__code__

def format_exc():
    try:
        1 / 0
    except ZeroDivisionError:
        assert "ZeroDivisionError" in traceback.format_exc()

attempt("sys._getframe", lambda: sys._getframe())
attempt("inspect.currentframe", lambda: inspect.currentframe())
attempt("inspect.stack", lambda: inspect.stack())
attempt("traceback.walk_stack", lambda: next(traceback.walk_stack(None)))
attempt("tb_frame", tb_frame)
attempt("gi_frame", generator_frame)
attempt("gc.get_objects", lambda: gc.get_objects())
attempt("gc.get_referrers", lambda: gc.get_referrers(attempt))
attempt("sys._current_frames", lambda: sys._current_frames())
attempt("sys.settrace", lambda: sys.settrace(lambda *a: None))
attempt("sys.setprofile", lambda: sys.setprofile(lambda *a: None))
attempt("ctypes.pythonapi", lambda: ctypes.pythonapi.PyFrame_LocalsToFast)
attempt("proc-self-mem", proc_mem)
attempt("proc-self-mem-dotdot", proc_mem_through_the_installation)
attempt("compile-as-a-library", lambda: compile("x = 1", logging.__file__, "exec"))
attempt("code-as-a-library", lambda: attempt.__code__.replace(co_filename=logging.__file__))
attempt("rewrite-library-function", rewrite_library_function)
hooked = []
sys.addaudithook(lambda event, args: hooked.append(event))
sys.audit("unitcoder.probe")
results["sys.addaudithook"] = "refused" if not hooked else "allowed"
attempt("namedtuple", lambda: collections.namedtuple("P", "x y"))
attempt("TypeVar", lambda: typing.TypeVar("T"))
attempt("logging", lambda: logging.getLogger("probe").warning("x"))
attempt("warnings", lambda: warnings.warn("x"))
attempt("traceback.format_exc", format_exc)
attempt("traceback.print_stack", lambda: traceback.print_stack(file=open(os.devnull, "w")))
attempt("test-code-frames", lambda: test_frames())
attempt("open-a-file", lambda: open(os.devnull).close())
attempt("own-function-defaults", lambda: setattr(attempt, "__defaults__", None))
attempt("library-pythonapi", lambda: __import__("dill"))  # dill takes ctypes.pythonapi.PyCapsule_New
attempt("library-defaults", lambda: __import__("networkx"))  # its decorators set __defaults__
"""

REFUSED = [
    "sys._getframe",
    "inspect.currentframe",
    "inspect.stack",
    "traceback.walk_stack",
    "tb_frame",
    "gi_frame",
    "gc.get_objects",
    "gc.get_referrers",
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
    "ctypes.pythonapi",
    "proc-self-mem",
    "proc-self-mem-dotdot",
    "compile-as-a-library",
    "code-as-a-library",
    "rewrite-library-function",
    "sys.addaudithook",
]
ALLOWED = [
    "namedtuple",
    "TypeVar",
    "logging",
    "warnings",
    "traceback.format_exc",
    "traceback.print_stack",
    "test-code-frames",
    "open-a-file",
    "own-function-defaults",
    "library-pythonapi",
    "library-defaults",
]


@pytest.fixture(scope="module")
def hook_results():
    proc = subprocess.run(
        [sys.executable, "-c", HOOK_PROBE, str(ZYGOTE_SOURCE), PROGRAM],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what", REFUSED)
def test_the_audit_hook_refuses_the_program(hook_results, what):
    assert hook_results[what] == "refused"


@pytest.mark.parametrize("what", ALLOWED)
def test_the_audit_hook_lets_honest_code_be(hook_results, what):
    assert hook_results[what] == "allowed"


# --------------------------------------------------------------------------- the fallback path


def frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def read_frame(stream, deadline: float) -> dict:
    def exact(n):
        data = b""
        while len(data) < n:
            assert time.monotonic() < deadline, "the zygote did not answer in time"
            chunk = os.read(stream.fileno(), n - len(data))
            assert chunk, "the zygote exited"
            data += chunk
        return data

    (size,) = struct.unpack(">I", exact(4))
    return json.loads(exact(size))


@pytest.fixture(scope="module")
def fallback_zygote():
    """A worker's zygote started with the clone() path switched off (``no_clone``)."""
    config = SandboxConfig(workers=1, timeout=8, preload=())
    with tempfile.TemporaryDirectory(prefix="unitcoder-fallback-") as work:
        etc = os.path.join(work, "etc-0")
        os.makedirs(etc)
        cmd = build_command(config, 0, etc, find_bwrap(config.bwrap))
        settings = json.loads(cmd[-1])
        settings["no_clone"] = True
        cmd[-1] = json.dumps(settings)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            hello = read_frame(proc.stdout, time.monotonic() + 120)

            def run(code: str, tests: str):
                plan = count_tests(ast.parse(tests))
                request = {"code": code, "test_code": tests, "test_classes": list(plan.classes), "timeout": 8}
                proc.stdin.write(frame(request))
                proc.stdin.flush()
                return compose(read_frame(proc.stdout, time.monotonic() + 60), plan, 8, 4000)

            yield hello, run
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)


def test_the_fallback_zygote_does_not_clone(fallback_zygote):
    hello, _ = fallback_zygote
    assert hello["hello"] is True and hello["clone"] is False


@pytest.mark.parametrize(
    "code, status",
    [
        ("def answer():\n    return 42\n", "pass"),
        ("def answer():\n    return 0\n", "fail"),
        (
            "def answer():\n    raise [c for c in Exception.__subclasses__() if c.__name__ == '_ShouldStop'][0]()\n",
            "fail",
        ),
    ],
    ids=["right", "wrong", "should-stop"],
)
def test_the_fallback_path_gives_the_same_verdicts(fallback_zygote, code, status):
    _, run = fallback_zygote
    assert run(code, unit_tests("self.assertEqual(answer(), 42)")).status == status


def test_the_fallback_path_rejects_a_forged_result(fallback_zygote):
    _, run = fallback_zygote
    code = textwrap.dedent(
        """
        import json, os
        def answer():
            fake = json.dumps({"load_error": None, "load_error_kind": None, "records": [["t", "pass", ""]],
                               "started": 1, "tamper": []}).encode()
            for name in os.listdir("/proc/self/fd"):
                try:
                    os.write(int(name), fake)
                except OSError:
                    pass
            os._exit(0)
        """
    )
    result = run(code, unit_tests("self.assertEqual(answer(), 42)"))
    assert (result.status, result.reason) == ("rejected", "forged_result")
