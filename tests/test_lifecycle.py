"""Workers: start-up checks, preloading, recycling, dying, and cleaning up after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import sandbox_processes, unit_tests, verify_one
from sandbox import Sandbox, SandboxBroken, SandboxConfig, SandboxUnavailable
from sandbox.pool import WorkerFailure, _Worker

NOOP = "def noop():\n    return None\n"
PASSING = unit_tests("self.assertIsNone(noop())")


def kill_worker(worker) -> None:
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait()


def test_missing_bwrap_stops_with_one_clear_sentence():
    with pytest.raises(SandboxUnavailable, match="not an executable file"):
        Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap")).start()


def test_broken_bwrap_stops_with_one_clear_sentence():
    with pytest.raises(SandboxUnavailable, match="bwrap failed to start a sandbox"):
        Sandbox(SandboxConfig(bwrap="/bin/false")).start()


@pytest.mark.parametrize("where", ["/tmp/ci/.venv", "/dev/shm/py"])
def test_a_python_installed_where_programs_write_stops_with_one_clear_sentence(monkeypatch, where):
    # there the runner cannot tell library code from the program's, and would refuse it what it refuses
    # programs: honest code would fail its tests instead of the run stopping
    from sandbox import bwrap

    monkeypatch.setattr(bwrap, "installation_paths", lambda: {"the virtual environment": where})
    with pytest.raises(SandboxUnavailable, match=f"the virtual environment is at {where}, under /"):
        Sandbox(SandboxConfig()).start()
    bwrap.check_installation({"site-packages": "/work/x/lib/python3.11/site-packages", "here": "/tmpfoo"})


def test_installed_heavy_packages_are_preloaded(sandbox):
    expected = [m for m in ("numpy", "pandas", "matplotlib.pyplot", "scipy", "sklearn")]
    assert sandbox.preloaded == expected
    body = "import sys\nfor name in ('numpy', 'pandas', 'matplotlib.pyplot'):\n    self.assertIn(name, sys.modules)"
    assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"


def test_preload_skips_what_is_not_installed(make_sandbox):
    pool = make_sandbox(preload=("json", "surely_not_installed_pkg"))
    assert pool.preloaded == ["json"]


def test_worker_killed_between_programs_is_replaced(make_sandbox):
    pool = make_sandbox()
    assert verify_one(pool, NOOP, PASSING).status == "pass"
    kill_worker(pool._workers[0])
    assert verify_one(pool, NOOP, PASSING).status == "pass"
    assert pool._workers[0].starts == 2


def test_worker_killed_mid_program_is_retried_not_blamed_on_the_code(make_sandbox):
    pool = make_sandbox()
    code = "import time\ndef slow():\n    time.sleep(1.5)\n    return 1\n"
    killer = threading.Timer(0.5, kill_worker, args=(pool._workers[0],))
    killer.start()
    result = verify_one(pool, code, unit_tests("self.assertEqual(slow(), 1)"))
    killer.join()
    assert result.status == "pass"
    assert pool._workers[0].starts == 2


def test_infrastructure_failure_is_sandbox_error_never_a_code_failure(make_sandbox, monkeypatch):
    pool = make_sandbox()

    def broken(self, request):
        raise WorkerFailure("simulated: the zygote vanished")

    monkeypatch.setattr(_Worker, "run", broken)
    result = verify_one(pool, NOOP, PASSING)
    assert (result.status, result.reason) == ("sandbox_error", "sandbox_internal")
    assert "simulated" in result.details


def test_persistent_infrastructure_failure_stops_the_pool(make_sandbox, monkeypatch):
    pool = make_sandbox()

    def broken(self, request):
        raise WorkerFailure("simulated: bwrap keeps dying")

    monkeypatch.setattr(_Worker, "run", broken)
    with pytest.raises(SandboxBroken, match="in a row failed for infrastructure reasons"):
        pool.verify([(NOOP, PASSING)] * 10)


def test_memory_cap_too_small_for_the_preload_is_caught_at_start():
    with pytest.raises(SandboxUnavailable, match="cannot run a program"):
        Sandbox(SandboxConfig(workers=1, preload=("numpy", "pandas"), memory_mb=64)).start()


def test_workers_are_recycled_after_n_programs(make_sandbox):
    pool = make_sandbox(recycle_after=2)
    results = pool.verify([(NOOP, PASSING)] * 5)
    assert [r.status for r in results] == ["pass"] * 5
    assert pool._workers[0].starts == 3


def test_close_leaves_no_sandbox_process():
    pool = Sandbox(SandboxConfig(workers=2, preload=())).start()
    pids = [w.proc.pid for w in pool._workers]
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="per-slot uids (to find leftovers) exist when run as root")
def test_nothing_outlives_a_killed_verifying_process(tmp_path):
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from sandbox import Sandbox, SandboxConfig
            code = "import subprocess, time\\ndef hang():\\n    subprocess.Popen(['sleep', '600'])\\n    time.sleep(600)\\n"
            tests = {PASSING!r}.replace("self.assertIsNone(noop())", "hang()")
            with Sandbox(SandboxConfig(workers=1, preload=(), timeout=600, output_bytes=54321)) as pool:
                print("started", flush=True)
                pool.verify([(code, tests)])
            """
        )
    )
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert host.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 10
    while not sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(), "the program never started"
    assert marked_processes(), "the worker's processes were not found"
    host.send_signal(signal.SIGKILL)
    host.wait()
    deadline = time.monotonic() + 5
    while (sandbox_processes() or marked_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []
    assert marked_processes() == []  # bwrap and the zygote are gone too


def marked_processes() -> list[int]:
    """Processes whose command line carries that pool's settings (bwrap, zygote)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b'"output_bytes": 54321' in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found
