"""A pool of long-lived bubblewrap sandboxes, each holding a zygote, verifying batches."""

from __future__ import annotations

import ast
import atexit
import json
import logging
import numbers
import os
import queue
import select
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future

from sandbox import javascript
from sandbox.bwrap import SandboxUnavailable, build_command, preflight
from sandbox.config import SandboxConfig
from sandbox.confirm import agree, confirm_request
from sandbox.static import TestPlan, count_tests, find_tampering
from sandbox.verdict import ERROR, REJECTED, VerifyResult, compose

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # importing the preload set on a loaded machine can take a while
GUARD_S = 30.0  # beyond the program's timeout, how long a silent zygote is given
MAX_ATTEMPTS = 2  # an infrastructure failure is retried once on a fresh worker
MAX_INFRA_STREAK = 3  # per worker: consecutive programs lost to infrastructure before giving up


class WorkerFailure(Exception):
    """The zygote died, hung or spoke nonsense: an infrastructure failure."""


class SandboxBroken(WorkerFailure):
    """Programs keep failing for infrastructure reasons: the pool stopped trying."""


# Checked on every worker before it takes work: the whole chain (namespaces, mounts,
# privilege drop, limits, preloaded packages under the memory cap) must run a program.
CANARY_CODE = "def canary():\n    return len(bytearray(64 * 1024 * 1024))  # some room to work under the cap\n"
CANARY_TESTS = (
    "import unittest\n\nclass TestCases(unittest.TestCase):\n"
    "    def test_canary(self):\n        self.assertEqual(canary(), 64 * 1024 * 1024)\n"
)


JS_CANARY_CODE = "function canary() {\n  return new Uint8Array(64 * 1024 * 1024).length;\n}\n"
JS_CANARY_TESTS = (
    "const { test } = require('node:test');\nconst assert = require('node:assert/strict');\n\n"
    "test('canary', () => {\n  assert.equal(canary(), 64 * 1024 * 1024);\n});\n"
)


class _Worker:
    """One bwrap sandbox with its zygote, driven by one long-lived thread."""

    def __init__(self, config: SandboxConfig, slot: int, bwrap: str, etc_dir: str):
        self.config, self.slot, self.bwrap, self.etc_dir = config, slot, bwrap, etc_dir
        self.proc: subprocess.Popen | None = None
        self.served = 0
        self.starts = 0
        self.hello: dict = {}
        self.stderr_path = os.path.join(etc_dir, f"worker-{slot}.stderr")

    # process ------------------------------------------------------------------
    def start(self) -> None:
        cmd = build_command(self.config, self.slot, os.path.join(self.etc_dir, f"etc-{self.slot}"), self.bwrap)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
        self.served = 0
        self.starts += 1
        hello = self._read_frame(time.monotonic() + START_TIMEOUT_S)
        if not hello.get("hello"):
            raise WorkerFailure(f"unexpected first frame from the zygote: {hello!r}")
        self.hello = hello
        if hello.get("threads", 1) > 1:
            logger.warning("worker %d: the zygote has %d threads after preloading", self.slot, hello["threads"])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=2)
        except Exception:
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        proc.stdout.close()

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.stderr_path) - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # protocol -----------------------------------------------------------------
    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        chunks = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise WorkerFailure("the zygote did not answer in time")
            chunk = os.read(fd, n)
            if not chunk:
                raise WorkerFailure(f"the zygote exited (code {self.proc.poll()}): {self.stderr_tail()}")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_frame(self, deadline: float) -> dict:
        (size,) = struct.unpack(">I", self._read_exact(4, deadline))
        body = self._read_exact(size, deadline)  # read whole: the stream stays in step
        try:
            return json.loads(body.decode("utf-8"))
        except RecursionError:
            # Only a program can nest a report this deep (in the result it hands back):
            # its verdict is discarded, the worker is fine.
            return {"setup_done": True, "result_forged": True}

    def run(self, request: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None or self.served >= self.config.recycle_after:
            self.stop()
            self.start()
        body = json.dumps(request).encode("utf-8")
        try:
            self.proc.stdin.write(struct.pack(">I", len(body)) + body)
            self.proc.stdin.flush()
        except OSError as exc:
            raise WorkerFailure(f"could not send the program to the zygote: {exc}") from exc
        reply = self._read_frame(time.monotonic() + float(request["timeout"]) + GUARD_S)
        self.served += 1
        return reply


_STOP = object()


class Sandbox:
    """Verify batches of ``(code, test_code)`` pairs in bubblewrap sandboxes.

    >>> with Sandbox(SandboxConfig(workers=2, timeout=5)) as sandbox:   # doctest: +SKIP
    ...     results = sandbox.verify([(code, tests)])

    Workers start on first use (or with ``start()``); ``close()`` stops them. One call
    to ``verify`` runs at a time; it is safe to call from ``datasets.map`` (see
    ``sandbox.verify_batch``, which keeps one pool per process).
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides):
        if config is None:
            config = SandboxConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a SandboxConfig or keyword settings, not both")
        self.config = config
        self._jobs: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._pid = os.getpid()
        self._infra_streak = 0
        self._broken = ""
        self.preloaded: list[str] = []

    # lifecycle ----------------------------------------------------------------
    def start(self) -> Sandbox:
        if self._threads:
            return self
        bwrap = preflight(self.config)
        self._tmp = tempfile.TemporaryDirectory(prefix="unitcoder-sandbox-")
        for slot in range(self.config.workers):
            os.makedirs(os.path.join(self._tmp.name, f"etc-{slot}"))
            self._workers.append(_Worker(self.config, slot, bwrap, self._tmp.name))
        ready: list[Future] = [Future() for _ in self._workers]
        for worker, started in zip(self._workers, ready):
            thread = threading.Thread(
                target=self._serve, args=(worker, started), name=f"sandbox-worker-{worker.slot}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        errors = [f.exception() for f in ready if f.exception() is not None]
        if errors:
            self.close()
            if isinstance(errors[0], SandboxUnavailable):
                raise errors[0]
            raise WorkerFailure(f"a sandbox worker failed to start: {errors[0]}")
        self.preloaded = self._workers[0].hello.get("preloaded", [])
        failed = self._workers[0].hello.get("preload_failed") or {}
        for name, why in failed.items():
            logger.warning("preload of %s failed inside the sandbox: %s", name, why)
        logger.info(
            "sandbox: %d workers, preloaded %s, timeout %gs, memory %d MiB, disk %d MiB, max procs %d",
            self.config.workers,
            ", ".join(self.preloaded) or "nothing",
            self.config.timeout,
            self.config.memory_mb,
            self.config.disk_mb,
            self.config.max_procs,
        )
        atexit.register(self.close)
        return self

    def close(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked copy does not own the workers
        for _ in self._threads:
            self._jobs.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self._workers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        atexit.unregister(self.close)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # the worker thread ----------------------------------------------------------
    def _serve(self, worker: _Worker, started: Future) -> None:
        # The bwrap processes are children of this thread: bwrap's --die-with-parent
        # fires when the thread that spawned it ends, so the thread lives as long as
        # the pool, and workers are (re)started from here only.
        try:
            worker.start()
            self._canary(worker)
        except BaseException as exc:
            worker.stop()
            started.set_exception(exc)
            return
        started.set_result(True)
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                request, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                if self._broken:
                    future.set_result({"infra_error": f"the sandbox gave up: {self._broken}"})
                    continue
                try:
                    future.set_result(self._run_with_retry(worker, request))
                except BaseException as exc:  # every future is resolved, whatever happens here
                    logger.exception("worker %d: unexpected failure while serving a program", worker.slot)
                    future.set_result({"infra_error": f"the sandbox failed unexpectedly: {type(exc).__name__}: {exc}"})
                    worker.stop()
        finally:
            worker.stop()

    def _canary(self, worker: _Worker) -> None:
        if self.config.language == "javascript":
            js_plan = javascript.prepare(JS_CANARY_CODE, JS_CANARY_TESTS)
            plan = js_plan.test_plan()
            request = {"code": JS_CANARY_CODE, "test_code": JS_CANARY_TESTS, "timeout": 60}
            request.update(self._js_request(js_plan))
        else:
            plan = count_tests(ast.parse(CANARY_TESTS))
            request = {
                "code": CANARY_CODE,
                "test_code": CANARY_TESTS,
                "test_classes": list(plan.classes),
                "timeout": 60,
            }
        verdict = compose(worker.run(request), plan, 60, 2000)
        if not verdict.passed:
            first = (verdict.details or verdict.status).strip().splitlines()
            raise SandboxUnavailable(
                f"the sandbox starts but cannot run a program ({verdict.status}: {first[-1] if first else ''}); "
                "check --memory_mb against the preloaded packages, and that this kernel allows mount and PID namespaces."
            )

    def _run_with_retry(self, worker: _Worker, request: dict) -> dict:
        """Run one program; infrastructure trouble is retried once on a fresh worker."""
        reply: dict = {}
        for attempt in range(MAX_ATTEMPTS):
            try:
                reply = worker.run(request)
            except (WorkerFailure, OSError, ValueError) as exc:
                reply = {"infra_error": f"the sandbox worker failed: {exc}"}
            if not reply.get("infra_error") and reply.get("setup_done"):
                self._infra_streak = 0
                return reply
            if not reply.get("infra_error"):
                reply["infra_error"] = (
                    f"the program's sandbox could not be set up (exit code {reply.get('exit_code')})\n"
                    + (reply.get("stderr") or "")[-2000:]
                )
            tail = worker.stderr_tail()
            if tail:
                reply["infra_error"] += f"\n--- worker stderr ---\n{tail}"
            logger.warning(
                "worker %d: infrastructure failure (attempt %d of %d), restarting it: %s",
                worker.slot,
                attempt + 1,
                MAX_ATTEMPTS,
                reply["infra_error"].splitlines()[0],
            )
            worker.stop()
        self._infra_streak += 1
        if self._infra_streak >= MAX_INFRA_STREAK * self.config.workers and not self._broken:
            self._broken = (
                f"{self._infra_streak} programs in a row failed for infrastructure reasons; last: "
                + reply["infra_error"].strip().splitlines()[0]
            )
        return reply

    # the API ----------------------------------------------------------------------
    def verify(
        self,
        pairs: Iterable[tuple[str, str] | dict],
        *,
        progress: bool = False,
        desc: str = "verifying",
        confirm: bool | None = None,
        timeouts: Sequence[float] | None = None,
        coverage: bool = False,
    ) -> list[VerifyResult]:
        """Run each ``(code, test_code)`` pair (or dict with those keys) and return verdicts in order.

        With ``confirm`` (default: the config's), every pass is re-run by the independent
        driver (``sandbox.confirm``) and must pass there too (else ``confirm_disagrees``).
        ``timeouts`` (one per pair, seconds) replace the config's ``timeout`` as each pair's
        wall clock, and the CPU-time limit with it unless ``cpu_seconds`` is set: a mutant
        that loops forever costs its own limit, not the pool's. With ``coverage``, the runner
        measures which lines and arcs of the code part ran (``VerifyResult.coverage``); the
        verdicts are the same as without it."""
        confirm = self.config.confirm if confirm is None else confirm
        if confirm and not self.config.has_second_opinion:
            raise ValueError(
                f"confirm (the independent Python driver) is for Python programs, not {self.config.language}"
            )
        items = [(p["code"], p["test_code"]) if isinstance(p, dict) else tuple(p) for p in pairs]
        limits = self._timeouts(timeouts, len(items))
        with self._lock:
            self._check_process()
            results = self._run(items, progress, desc, driver=False, timeouts=limits, coverage=bool(coverage))
            if confirm:
                passing = [i for i, r in enumerate(results) if r.passed]
                second = self._run(
                    [items[i] for i in passing],
                    progress,
                    f"{desc} (confirming)",
                    driver=True,
                    timeouts=None if limits is None else [limits[i] for i in passing],
                )
                for i, verdict in zip(passing, second):
                    results[i] = agree(results[i], verdict)
        return results

    def confirm(
        self,
        pairs: Iterable[tuple[str, str] | dict],
        *,
        progress: bool = False,
        desc: str = "confirming",
        hash_seed: int | None = None,
        order_seed: int | None = None,
        timeouts: Sequence[float] | None = None,
    ) -> list[VerifyResult]:
        """Run each pair under the independent driver only (a fresh interpreter, another test
        runner); a caller holding an earlier pass combines both with ``sandbox.confirm.agree``.

        ``hash_seed`` (0 to 2**32-1) is the fresh interpreter's ``PYTHONHASHSEED`` (default:
        random); ``order_seed`` shuffles the test methods, across and within classes, with
        ``random.Random(order_seed)`` (default: unittest's alphabetical order). Run twice with
        other seeds, a pair whose tests depend on hashing or on their order shows it.
        ``timeouts`` as in ``verify``."""
        if not self.config.has_second_opinion:
            raise ValueError(
                f"confirm (the independent Python driver) is for Python programs, not {self.config.language}"
            )
        items = [(p["code"], p["test_code"]) if isinstance(p, dict) else tuple(p) for p in pairs]
        limits = self._timeouts(timeouts, len(items))
        confirm_request({}, hash_seed, order_seed)  # bad seeds raise here, before anything runs
        with self._lock:
            self._check_process()
            return self._run(
                items, progress, desc, driver=True, timeouts=limits, hash_seed=hash_seed, order_seed=order_seed
            )

    @staticmethod
    def _timeouts(timeouts: Sequence[float] | None, count: int) -> list[float] | None:
        """``timeouts`` checked (one positive, finite number of seconds per pair), or None."""
        if timeouts is None:
            return None
        limits = list(timeouts)
        if len(limits) != count:
            raise ValueError(f"timeouts must give one limit per pair: {len(limits)} for {count} pairs")
        for limit in limits:
            if isinstance(limit, bool) or not isinstance(limit, numbers.Real) or not 0 < limit < float("inf"):
                raise ValueError(f"every timeout must be a positive number of seconds, got {limit!r}")
        return [float(limit) for limit in limits]

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("this Sandbox was created in another process; create one per process")
        self.start()

    def _run(
        self,
        items: list[tuple[str, str]],
        progress: bool,
        desc: str,
        driver: bool,
        *,
        timeouts: list[float] | None = None,
        coverage: bool = False,
        hash_seed: int | None = None,
        order_seed: int | None = None,
    ) -> list[VerifyResult]:
        results: list[VerifyResult | None] = [None] * len(items)
        pending: list[tuple[int, TestPlan, Future, int]] = []
        for index, (code, test_code) in enumerate(items):
            plan_or_verdict = self._prepare(code, test_code)
            if isinstance(plan_or_verdict, VerifyResult):
                results[index] = plan_or_verdict
                continue
            extra = {}
            if isinstance(plan_or_verdict, javascript.JsPlan):
                extra = self._js_request(plan_or_verdict)
                plan_or_verdict = plan_or_verdict.test_plan()
            plan = plan_or_verdict
            future: Future = Future()
            request = {
                "code": code,
                "test_code": test_code,
                "test_classes": list(plan.classes),
                "timeout": self.config.timeout,
                **extra,
            }
            cpu_limit = self.config.effective_cpu_seconds
            if timeouts is not None:  # (only then: the requests of a plain call stay as they were)
                request["timeout"] = timeouts[index]
                cpu_limit = self.config.cpu_seconds_for(timeouts[index])
                request["cpu_seconds"] = cpu_limit
            if coverage and not driver and not extra:  # (coverage is measured for Python programs only)
                request["coverage"] = True
            if driver:
                request = confirm_request(request, hash_seed, order_seed)
            self._jobs.put((request, future))
            pending.append((index, plan, future, cpu_limit))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc=desc, unit="prog")
            bar.update(len(items) - len(pending))
        for index, plan, future, cpu_limit in pending:
            report = future.result()
            results[index] = compose(report, plan, cpu_limit, self.config.details_chars)
            if self.config.language == "javascript":
                results[index] = javascript.compose_js(report, results[index], self.config.details_chars)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if self._broken:
            raise SandboxBroken(self._broken)
        return results  # type: ignore[return-value]

    @staticmethod
    def _js_request(plan: javascript.JsPlan) -> dict:
        """What a JavaScript program's request carries besides its source."""
        return {"language": "javascript", "module": plan.module, "test_locations": [list(p) for p in plan.locations]}

    def _prepare(self, code: str, test_code: str) -> TestPlan | javascript.JsPlan | VerifyResult:
        """Static checks on the host: parse, count tests, refuse tampering code."""
        if not isinstance(code, str) or not isinstance(test_code, str):
            return VerifyResult(REJECTED, details="code and test_code must both be strings", reason="bad_input")
        if self.config.language == "javascript":
            return javascript.prepare(code, test_code)
        try:
            code_tree = ast.parse(code)
        except (SyntaxError, ValueError) as exc:
            return VerifyResult(ERROR, details=f"code does not parse: {exc}", reason="syntax_error")
        except (RecursionError, MemoryError):
            return VerifyResult(ERROR, details="code is nested too deeply to parse", reason="syntax_error")
        try:
            test_tree = ast.parse(test_code)
        except (SyntaxError, ValueError) as exc:
            return VerifyResult(ERROR, details=f"test_code does not parse: {exc}", reason="test_syntax_error")
        except (RecursionError, MemoryError):
            return VerifyResult(ERROR, details="test_code is nested too deeply to parse", reason="test_syntax_error")
        try:
            return self._plan(code_tree, test_tree)
        except RecursionError:
            return VerifyResult(ERROR, details="the code is nested too deeply to check", reason="syntax_error")

    def _plan(self, code_tree: ast.Module, test_tree: ast.Module) -> TestPlan | VerifyResult:
        plan = count_tests(test_tree)
        if plan.count == 0:
            return VerifyResult(
                REJECTED, details="test_code defines no unittest.TestCase test method", reason="no_tests"
            )
        tampering = find_tampering(code_tree)
        if tampering is not None:
            return VerifyResult(REJECTED, details=tampering.message, reason=tampering.reason)
        return plan


def verify(pairs: Sequence[tuple[str, str] | dict], config: SandboxConfig | None = None, **kw) -> list[VerifyResult]:
    """One-shot helper: start a pool, verify ``pairs``, stop the pool."""
    with Sandbox(config) as sandbox:
        return sandbox.verify(pairs, **kw)


_DEFAULT: Sandbox | None = None


def default_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """A pool per process, rebuilt after a fork or when the settings change."""
    global _DEFAULT
    config = config or SandboxConfig()
    if _DEFAULT is None or _DEFAULT._pid != os.getpid() or _DEFAULT.config != config:
        if _DEFAULT is not None and _DEFAULT._pid == os.getpid():
            _DEFAULT.close()
        _DEFAULT = Sandbox(config).start()
    return _DEFAULT


def verify_batch(
    batch: dict[str, list],
    *,
    code_column: str = "code",
    test_column: str = "test_code",
    prefix: str = "verify_",
    config: SandboxConfig | None = None,
) -> dict[str, list]:
    """A ``datasets.map(batched=True)`` function: add ``{prefix}status`` and friends.

    Uses one pool per process (so it works with ``num_proc``); pass an explicit
    ``new_fingerprint`` to ``map``, since a sandbox cannot be hashed.
    """
    results = default_sandbox(config).verify(list(zip(batch[code_column], batch[test_column])))
    keys = [key for key in VerifyResult.__dataclass_fields__ if key != "coverage"]  # (never measured here)
    out: dict[str, list] = {f"{prefix}{key}": [] for key in keys}
    for result in results:
        for key in keys:
            out[f"{prefix}{key}"].append(getattr(result, key))
    return out
