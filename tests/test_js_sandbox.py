"""The JavaScript runner: node:test tests under the same isolation, limits and verdicts as Python.

One property per test, mirroring test_outcomes, test_isolation, test_limits and
test_forgery. The module is skipped when Node, tree-sitter or the npm packages are not
available (``python -m sandbox setup javascript`` installs the packages; the fixture below
tries it once, into the default folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tree_sitter_javascript", reason="the JavaScript sandbox needs tree-sitter-javascript")

from conftest import sandbox_processes  # noqa: E402
from sandbox import (  # noqa: E402
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
    javascript,  # noqa: E402
)

REPO = Path(__file__).resolve().parents[1]
CJS = "const { test, describe, it, before } = require('node:test');\nconst assert = require('node:assert/strict');\n\n"
ESM = "import { test, describe, it } from 'node:test';\nimport assert from 'node:assert/strict';\n\n"
ADD = "function add(a, b) {\n  return a + b;\n}\nmodule.exports = { add };\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="per-worker uids (to find leftovers) exist when run as root")


@pytest.fixture(scope="session")
def js_packages():
    """The npm packages, installed once (into the default folder, never under /tmp)."""
    try:
        javascript.find_node()
        if javascript.missing_packages():
            javascript.setup()
    except SandboxUnavailable as exc:
        pytest.skip(f"the JavaScript sandbox cannot be set up here: {exc}")
    return javascript.packages_dir()


@pytest.fixture(scope="module")
def js(js_packages):
    """One JavaScript pool for the module: two workers, short limits."""
    config = SandboxConfig(language="javascript", workers=2, timeout=4, memory_mb=512, disk_mb=16, max_procs=48)
    with Sandbox(config) as pool:
        yield pool


def leftovers(wait_s: float = 3.0) -> list[str]:
    """The sandbox's processes still alive after ``wait_s`` (the kernel kills a namespace's
    processes asynchronously once its PID 1 is gone), by command line."""
    deadline = time.monotonic() + wait_s
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    found = []
    for pid in sandbox_processes():
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def run(pool, code, tests):
    (result,) = pool.verify([{"code": code, "test_code": tests}])
    return result


# --------------------------------------------------------------------------- outcomes


def test_passing_program_passes_with_every_test_counted(js):
    tests = CJS + "test('adds', () => { assert.equal(add(1, 2), 3); });\n"
    tests += "describe('more', () => {\n  it('zero', () => { assert.equal(add(0, 0), 0); });\n"
    tests += "  it('negative', () => { assert.equal(add(-1, 1), 0); });\n});\n"
    result = run(js, ADD, tests)
    assert (result.status, result.tests_run, result.tests_passed, result.reason) == ("pass", 3, 3, None)


def test_failing_assertion_is_fail_with_the_message_in_details(js):
    tests = (
        CJS
        + "test('ok', () => { assert.equal(add(1, 2), 3); });\ntest('bad', () => { assert.equal(add(1, 2), 4); });\n"
    )
    result = run(js, ADD, tests)
    assert (result.status, result.tests_run, result.tests_passed) == ("fail", 2, 1)
    assert "FAIL: bad" in result.details and "3 !== 4" in result.details


def test_code_that_throws_at_load_is_error(js):
    result = run(js, ADD + "missing();\n", CJS + "test('t', () => { assert.equal(add(1, 2), 3); });\n")
    assert (result.status, result.reason) == ("error", "load_error")
    assert "missing is not defined" in result.details


@pytest.mark.parametrize(
    "late",
    ["setTimeout(() => { throw new Error('late'); }, 20);\n", "Promise.reject(new Error('never handled'));\n"],
)
def test_an_error_outside_any_test_is_not_a_pass_though_every_test_passed(js, late):
    # node itself would end such a program with status 1: an uncaught exception or an
    # unhandled rejection after the tests ran, which node:test reports outside any test
    result = run(js, ADD + late, CJS + "test('t', () => { assert.equal(add(1, 2), 3); });\n")
    assert result.status != "pass" and result.tests_passed == 1
    assert "(outside any test)" in result.details and "after the test ended" in result.details


def test_code_that_does_not_parse_is_error(js):
    result = run(js, "function add(a, b) { return a + ; }\n", CJS + "test('t', () => {});\n")
    assert (result.status, result.reason) == ("error", "syntax_error")


def test_timeout_is_timeout(js):
    result = run(js, "function spin() { for (;;) {} }\n", CJS + "test('t', () => { spin(); });\n")
    assert (result.status, result.reason) == ("timeout", "wall_time")


def test_exhausting_the_heap_is_oom(js):
    code = "function grow() {\n  const keep = [];\n  for (;;) keep.push(new Array(1 << 20).fill(0.5));\n}\n"
    result = run(js, code, CJS + "test('t', () => { grow(); });\n")
    assert (result.status, result.reason) == ("oom", "memory_error")


def test_a_buffer_over_the_memory_cap_is_oom(js):
    code = "function big() {\n  return Buffer.alloc(4 * 1024 * 1024 * 1024).length;\n}\n"
    result = run(js, code, CJS + "test('t', () => { big(); });\n")
    assert result.status == "oom"


def test_verdicts_come_back_in_input_order(js):
    ok = CJS + "test('t', () => { assert.equal(add(1, 1), 2); });\n"
    bad = CJS + "test('t', () => { assert.equal(add(1, 1), 3); });\n"
    results = js.verify([(ADD, ok), (ADD, bad), (ADD, ok)])
    assert [r.status for r in results] == ["pass", "fail", "pass"]


def test_a_target_package_works_by_require_and_by_import(js):
    cjs = "const _ = require('lodash');\nfunction pairs(xs) {\n  return _.chunk(xs, 2);\n}\n"
    esm = "import _ from 'lodash';\nimport { v4 } from 'uuid';\nexport function pairs(xs) {\n  return v4() && _.chunk(xs, 2);\n}\n"
    check = "test('chunks', () => { assert.deepEqual(pairs([1, 2, 3]), [[1, 2], [3]]); });\n"
    assert [r.status for r in js.verify([(cjs, CJS + check), (esm, ESM + check)])] == ["pass", "pass"]


def test_mixing_require_and_import_is_rejected(js):
    code = "import _ from 'lodash';\nexport const n = 1;\n"
    result = run(js, code, CJS + "test('t', () => { assert.equal(n, 1); });\n")
    assert (result.status, result.reason) == ("rejected", "mixed_module_formats")


# --------------------------------------------------------------------------- isolation


def test_no_network(js):
    code = (
        "const net = require('node:net');\n"
        "function reach(host, port) {\n"
        "  return new Promise((done) => {\n"
        "    const socket = net.connect(port, host);\n"
        "    socket.on('connect', () => { socket.destroy(); done('connected'); });\n"
        "    socket.on('error', (e) => done(e.code));\n"
        "  });\n"
        "}\n"
    )
    tests = CJS + "test('outside', async () => { assert.notEqual(await reach('1.1.1.1', 80), 'connected'); });\n"
    tests += "test('dns', async () => { assert.notEqual(await reach('registry.npmjs.org', 443), 'connected'); });\n"
    assert run(js, code, tests).status == "pass"


def test_packages_and_node_are_read_only(js):
    code = (
        "const fs = require('node:fs');\n"
        "function tryWrite(path) {\n"
        "  try { fs.writeFileSync(path, 'x'); return 'written'; } catch (e) { return e.code; }\n"
        "}\n"
    )
    tests = CJS + "test('package', () => { assert.equal(tryWrite(require.resolve('lodash')), 'EROFS'); });\n"
    tests += "test('node', () => { assert.equal(tryWrite(process.execPath), 'EROFS'); });\n"
    assert run(js, code, tests).status == "pass"


def test_environment_is_clean_of_host_secrets(js_packages, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("NODE_OPTIONS", "--require /etc/passwd")
    code = "function env() {\n  return JSON.stringify(process.env);\n}\n"
    tests = (
        CJS
        + "test('t', () => {\n  const e = env();\n  assert.ok(!e.includes('hf_secret_value') && !e.includes('NODE_OPTIONS'), e);\n});\n"
    )
    with Sandbox(SandboxConfig(language="javascript", workers=1, timeout=5)) as pool:
        assert run(pool, code, tests).status == "pass"


def test_each_program_has_a_private_tmp(js):
    code = (
        "const fs = require('node:fs');\n"
        "function mark() {\n"
        "  const before = fs.readdirSync('/tmp').sort();\n"
        "  fs.writeFileSync('/tmp/left-behind', 'x');\n"
        "  return before;\n"
        "}\n"
    )
    tests = CJS + "test('t', () => { assert.deepEqual(mark(), ['work']); });\n"
    results = js.verify([(code, tests)] * 4)  # two workers: each sees a fresh /tmp every time
    assert [r.status for r in results] == ["pass"] * 4


# --------------------------------------------------------------------------- limits


def test_file_size_is_capped(js):
    code = (
        "const fs = require('node:fs');\n"
        "function fill() {\n"
        "  try { fs.writeFileSync('/tmp/big', Buffer.alloc(32 * 1024 * 1024)); return 'written'; }\n"
        "  catch (e) { return e.code; }\n"
        "}\n"
    )
    result = run(js, code, CJS + "test('t', () => { assert.notEqual(fill(), 'written'); });\n")
    assert result.status == "pass", result.details


def test_process_count_is_capped(js):
    code = (
        "const cp = require('node:child_process');\n"
        "function flood() {\n"
        "  let refused = 0;\n"
        "  for (let i = 0; i < 100; i++) {\n"
        "    try {\n"
        "      const child = cp.spawn('sleep', ['30'], { stdio: 'ignore' });\n"
        "      child.on('error', () => { refused++; });\n"
        "      child.unref();\n"
        "    } catch (e) { refused++; }\n"
        "  }\n"
        "  return new Promise((done) => setTimeout(() => done(refused), 500));\n"
        "}\n"
    )
    result = run(js, code, CJS + "test('t', async () => { assert.ok((await flood()) > 0); });\n")
    assert result.status == "pass", result.details


def test_output_is_bounded(js):
    code = "function shout() {\n  for (let i = 0; i < 2000; i++) console.log('x'.repeat(1000));\n  return 1;\n}\n"
    result = run(js, code, CJS + "test('t', () => { assert.equal(shout(), 2); });\n")
    assert result.status == "fail" and len(result.details) <= js.config.details_chars


@root_only
def test_a_node_that_ignores_sigterm_is_killed_at_the_timeout(js):
    code = "process.on('SIGTERM', () => {});\nfunction hang() {\n  return new Promise(() => setInterval(() => {}, 1000));\n}\n"
    result = run(js, code, CJS + "test('t', async () => { await hang(); });\n")
    assert (result.status, result.reason) == ("timeout", "wall_time")
    assert leftovers() == []


@root_only
def test_a_child_process_left_behind_dies_with_the_program(js):
    code = (
        "const cp = require('node:child_process');\n"
        "function leave() {\n"
        "  cp.spawn('sh', ['-c', 'trap \"\" TERM; sleep 600'], { detached: true, stdio: 'ignore' }).unref();\n"
        "  return true;\n"
        "}\n"
    )
    result = run(js, code, CJS + "test('t', () => { assert.ok(leave()); });\n")
    assert result.status == "pass", result.details
    assert leftovers() == []


# --------------------------------------------------------------------------- forgery

WRONG = "function add(a, b) {\n  return a - b;\n}\n"
WRONG_TESTS = CJS + "test('adds', () => { assert.equal(add(1, 2), 3); });\n"


def test_exiting_early_with_status_zero_is_not_a_pass(js):
    result = run(js, WRONG + "process.exit(0);\n", WRONG_TESTS)
    assert (result.status, result.reason) == ("error", "exited_early")


def test_printed_test_reporter_output_is_not_a_pass(js):
    fake = "console.log('TAP version 13\\nok 1 - adds\\n1..1\\n# tests 1\\n# pass 1\\n# fail 0');\n"
    fake += "console.log(JSON.stringify({ type: 'test:pass', data: { name: 'adds', nesting: 0 } }));\n"
    assert run(js, WRONG + fake, WRONG_TESTS).status == "fail"


def test_writing_a_result_to_every_descriptor_is_rejected(js):
    forged = json.dumps(
        {"load_error": None, "load_error_kind": None, "records": [["adds", "pass", ""]], "started": 1, "tamper": []}
    )
    code = WRONG + (
        "const fs = require('node:fs');\n"
        f"for (let fd = 3; fd < 64; fd++) {{ try {{ fs.writeSync(fd, {json.dumps(forged)}); }} catch (e) {{}} }}\n"
    )
    result = run(js, code, WRONG_TESTS)
    assert (result.status, result.reason) == ("rejected", "forged_result")


@pytest.mark.parametrize(
    "patch",
    [
        "const a = require('node:assert/strict');\ntry { a.equal = () => {}; } catch (e) {}\n",
        "const a = require('node:assert');\ntry { Object.defineProperty(a.strict, 'equal', { value: () => {} }); } catch (e) {}\n",
        "const events = require('node:events');\nconst emit = events.EventEmitter.prototype.emit;\n"
        "events.EventEmitter.prototype.emit = function (type, data) {\n"
        "  return emit.call(this, type === 'test:fail' ? 'test:pass' : type, data);\n};\n",
        "Object.prototype.skip = undefined;\nObject.defineProperty(Object.prototype, 'failureType', { get() { return 'subtestsFailed'; } });\n",
        "const stream = require('node:stream');\nconst push = stream.Readable.prototype.push;\n"
        "stream.Readable.prototype.push = function (c) {\n"
        "  if (c && c.type === 'test:fail') c.type = 'test:pass';\n  return push.call(this, c);\n};\n",
        "String.prototype.slice = () => '';\nJSON.stringify = () => '{}';\nReflect.apply = () => undefined;\n",
        "process.on('exit', () => {\n  const fs = require('node:fs');\n"
        "  for (let fd = 3; fd < 32; fd++) { try { fs.writeSync(fd, 'x'); } catch (e) {} }\n});\n",
    ],
    ids=[
        "assign-assert",
        "define-assert",
        "patch-event-emitter",
        "patch-object-prototype",
        "patch-stream-push",
        "patch-intrinsics",
        "exit-handler",
    ],
)
def test_patching_the_test_machinery_at_run_time_does_not_pass(js, patch):
    assert run(js, WRONG + patch, WRONG_TESTS).status != "pass"


@pytest.mark.parametrize(
    "code, reason",
    [
        ("const t = require('node:test');\nt.test = (n, fn) => t.it(n, () => {});\n", "patches_node_test"),
        ("require = () => ({ test: () => {} });\n", "patches_module_loader"),
        ("const v8 = require('v8');\n", "imports_v8"),
        ("const { Session } = require('node:inspector');\n", "imports_inspector"),
        ("const vm = require('vm');\n", "imports_vm"),
        ("const name = 'node:' + 'test';\nrequire(name);\n", "computed_module_name"),
    ],
    ids=["node-test", "require", "v8", "inspector", "vm", "computed"],
)
def test_code_that_reaches_for_the_test_machinery_is_rejected(js, code, reason):
    result = run(js, WRONG + code, WRONG_TESTS)
    assert (result.status, result.reason) == ("rejected", reason)


@pytest.mark.parametrize(
    "declare", ["test.skip('adds', () => {});", "test.todo('adds', () => {});", "test('adds', (t) => { t.skip(); });"]
)
def test_skipped_and_todo_tests_are_not_a_pass(js, declare):
    result = run(js, ADD, CJS + declare + "\n")
    assert result.status == "fail" and result.tests_passed == 0


def test_test_code_without_tests_is_rejected(js):
    result = run(js, ADD, CJS + "assert.equal(add(1, 2), 3);\n")
    assert (result.status, result.reason) == ("rejected", "no_tests")


@pytest.mark.parametrize(
    "tests",
    [
        "for (const n of [1, 2]) test(`adds ${n}`, () => { assert.equal(add(n, 0), n); });\n",
        "const name = 'adds';\ntest(name, () => { assert.equal(add(1, 2), 3); });\n",
        "function define() {\n  test('adds', () => {});\n}\ndefine();\n",
        "test('outer', async (t) => {\n  await t.test('inner', () => { assert.ok(/a/.test('a')); });\n});\n",
    ],
    ids=["loop", "computed-name", "in-a-function", "subtest"],
)
def test_tests_that_cannot_be_counted_statically_are_rejected(js, tests):
    result = run(js, ADD, CJS + tests)
    assert (result.status, result.reason) == ("rejected", "dynamic_tests")


def test_tests_declared_elsewhere_than_counted_do_not_pass(js):
    # An alias declares a test the static count does not see: run != found, never a pass.
    tests = CJS + "const { test: check } = require('node:test');\ncheck('hidden', () => {});\n"
    tests += "test('adds', () => { assert.equal(add(1, 2), 3); });\n"
    result = run(js, ADD, tests)
    assert result.status == "fail" and "not at one of the places" in result.details


# --------------------------------------------------------------------------- setup and CLI


def test_missing_packages_make_the_sandbox_unavailable_with_the_setup_command(monkeypatch):
    monkeypatch.setenv("UNITCODER_JS_PACKAGES", str(REPO / "no-such-packages-folder"))
    with pytest.raises(SandboxUnavailable, match="python -m sandbox setup javascript"):
        Sandbox(SandboxConfig(language="javascript", workers=1)).start()


def test_setup_says_in_one_sentence_when_npm_cannot_reach_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    with pytest.raises(SandboxUnavailable, match=r"npm cannot reach the registry.*setup javascript`\.$"):
        javascript.setup(tmp_path / "packages")


def test_regular_expression_test_calls_are_not_tests(js):
    tests = CJS + "test('matches', () => { assert.ok(/^\\d+$/.test(String(add(1, 2)))); });\n"
    result = run(js, ADD, tests)
    assert (result.status, result.tests_run) == ("pass", 1)


def test_setup_twice_does_nothing_the_second_time(js_packages):
    assert javascript.setup(js_packages) is False


def test_cli_takes_the_language_from_the_flag_or_the_row(js_packages, tmp_path):
    rows = [
        {"id": "js", "code": ADD, "test_code": CJS + "test('t', () => { assert.equal(add(1, 2), 3); });\n"},
        {
            "id": "py",
            "language": "python",
            "code": "def f():\n    return 1\n",
            "test_code": "import unittest\n\nclass T(unittest.TestCase):\n    def test_f(self):\n        self.assertEqual(f(), 1)\n",
        },
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "sandbox",
        "verify",
        str(source),
        "-o",
        str(out),
        "--language",
        "javascript",
        "--workers",
        "1",
        "--preload",
        "",
        "--no_progress",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [(r["id"], r["status"]) for r in map(json.loads, out.read_text().splitlines())] == [
        ("js", "pass"),
        ("py", "pass"),
    ]
