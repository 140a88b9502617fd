"""The pool never stops for a program's sake: every batch gets one verdict per input, every
verdict can be written, and only real infrastructure trouble counts toward stopping."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
import types

from conftest import unit_tests, verify_one
from sandbox import pool as pool_module
from sandbox.pool import _Worker
from sandbox.static import TestPlan as Plan
from sandbox.verdict import compose

ADD = "def add(a, b):\n    return a + b\n"
PASSING = unit_tests("self.assertEqual(add(1, 2), 3)")
WRONG = "def add(a, b):\n    return a - b\n"
SURROGATE = (
    "def decode(b):\n    return b.decode('utf-8', 'surrogateescape')\n",
    unit_tests("self.assertEqual(decode(b'ab\\xff'), 'ab')"),
)


def test_a_lone_surrogate_in_the_failure_is_escaped_and_encodable(sandbox):
    result = verify_one(sandbox, *SURROGATE)
    assert result.status == "fail"
    assert result.details.encode("utf-8") and "\\udcff" in result.details


def test_the_cli_writes_every_row_after_a_surrogate_failure(tmp_path):
    rows = [
        {"id": "surrogate", "code": SURROGATE[0], "test_code": SURROGATE[1]},
        {"id": "honest", "code": ADD, "test_code": PASSING},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "verify", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
         "--no_progress", "--preload", "", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in out] == [("surrogate", "fail"), ("honest", "pass")]


PLAN = Plan({"TestCases": ["test_0"]})


def test_a_result_of_the_wrong_shape_is_rejected_not_a_crash():
    for result in ([], "pass", {"records": [["t", "pass"]]}, {"records": 5}, {"started": "many"}):
        verdict = compose({"setup_done": True, "result": result}, PLAN, 10, 2000)
        assert (verdict.status, verdict.reason) == ("rejected", "forged_result"), result


def test_a_report_nested_too_deep_for_the_host_is_a_forged_result():
    read, write = os.pipe()
    body = ("[" * 100_000 + "]" * 100_000).encode()
    worker = _Worker.__new__(_Worker)
    worker.proc = types.SimpleNamespace(stdout=types.SimpleNamespace(fileno=lambda: read), poll=lambda: None)
    writer = os.fdopen(write, "wb")
    threading.Thread(target=lambda: (writer.write(struct.pack(">I", len(body)) + body), writer.close())).start()
    try:
        reply = worker._read_frame(deadline=time.monotonic() + 30)
    finally:
        os.close(read)
    assert compose(reply, PLAN, 10, 2000).reason == "forged_result"


def test_an_unexpected_host_failure_still_resolves_every_program(make_sandbox, monkeypatch):
    pool = make_sandbox()
    real = pool_module.Sandbox._run_with_retry
    calls = []

    def flaky(self, worker, request):
        calls.append(1)
        if len(calls) == 2:
            raise RecursionError("simulated: a bug in the host's handling of one reply")
        return real(self, worker, request)

    monkeypatch.setattr(pool_module.Sandbox, "_run_with_retry", flaky)
    done: list = []
    batch = threading.Thread(
        target=lambda: done.append(pool.verify([(ADD, PASSING), (ADD, PASSING), (WRONG, PASSING)]))
    )
    batch.start()
    batch.join(timeout=120)
    assert done, "verify() never returned: a program's future was left unresolved"
    assert [r.status for r in done[0]] == ["pass", "sandbox_error", "fail"]
    assert [r.status for r in pool.verify([(ADD, PASSING)])] == ["pass"]  # the worker thread is alive


def test_code_nested_too_deep_to_parse_is_an_error_verdict(sandbox):
    deep = "x = " + "(" * 5000 + "1" + ")" * 5000 + "\n" + ADD
    results = sandbox.verify([(deep, PASSING), (ADD, PASSING)])
    assert [r.status for r in results] == ["error", "pass"]
