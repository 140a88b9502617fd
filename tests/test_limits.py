"""Resource limits: time, CPU, memory, disk, processes, output; and nothing left running."""

from __future__ import annotations

import os

import pytest

from conftest import sandbox_processes, unit_tests, verify_one

NOOP = "def noop():\n    return None\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="per-slot uids (to find leftovers) exist when run as root")


def test_wall_clock_timeout(make_sandbox):
    pool = make_sandbox(timeout=1.5)
    result = verify_one(pool, "import time\ndef wait():\n    time.sleep(60)\n", unit_tests("wait()"))
    assert (result.status, result.reason) == ("timeout", "wall_time")
    assert 1.5 <= result.duration_s < 5


def test_cpu_time_limit_is_timeout(make_sandbox):
    pool = make_sandbox(timeout=30, cpu_seconds=1)
    result = verify_one(pool, "def spin():\n    while True:\n        pass\n", unit_tests("spin()"))
    assert (result.status, result.reason) == ("timeout", "cpu_time")
    assert result.duration_s < 10


def test_memory_cap_raises_memory_error(make_sandbox):
    pool = make_sandbox(memory_mb=256)
    body = "with self.assertRaises(MemoryError):\n    bytearray(512 * 1024 * 1024)"
    assert verify_one(pool, NOOP, unit_tests(body)).status == "pass"


def test_program_exhausting_memory_is_oom(make_sandbox):
    pool = make_sandbox(memory_mb=256)
    code = "def hog():\n    return [bytearray(16 * 1024 * 1024) for _ in range(64)]\n"
    result = verify_one(pool, code, unit_tests("hog()"))
    assert (result.status, result.reason) == ("oom", "memory_error")


def test_writable_space_is_capped(make_sandbox):
    pool = make_sandbox(disk_mb=8)
    body = """
    chunk = b"x" * (1024 * 1024)
    for target in ("big.bin", "/tmp/big.bin", "/dev/shm/big.bin"):
        with self.assertRaises(OSError):
            with open(target, "wb") as f:
                for _ in range(32):
                    f.write(chunk)
                    f.flush()
    """
    result = verify_one(pool, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


def test_thread_cap_holds_for_root_too(make_sandbox):
    pool = make_sandbox(max_procs=16)
    body = """
    import threading, time
    started = []
    with self.assertRaises(RuntimeError):
        for _ in range(64):
            t = threading.Thread(target=time.sleep, args=(2,), daemon=True)
            t.start()
            started.append(t)
    self.assertLess(len(started), 16)
    """
    result = verify_one(pool, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


@root_only
def test_fork_bomb_is_contained_and_cleaned_up(make_sandbox):
    pool = make_sandbox(max_procs=32, timeout=3)
    code = (
        "import os, time\n"
        "def bomb():\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            time.sleep(0.01)\n"
    )
    result = verify_one(pool, code, unit_tests("bomb()"))
    assert result.status == "timeout"
    assert sandbox_processes() == []
    assert verify_one(pool, NOOP, unit_tests("pass")).status == "pass"  # the worker survived


@root_only
def test_double_forked_daemons_die_with_the_program(make_sandbox):
    pool = make_sandbox()
    code = (
        "import os, time\n"
        "def start_daemon():\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(600)\n"
        "        os._exit(0)\n"
        "    return True\n"
    )
    result = verify_one(pool, code, unit_tests("self.assertTrue(start_daemon())\nimport time; time.sleep(0.2)"))
    assert result.status == "pass"
    assert sandbox_processes() == []


@root_only
def test_timeout_kills_every_process_the_program_started(make_sandbox):
    pool = make_sandbox(timeout=1.5)
    code = (
        "import subprocess, time\n"
        "def busy():\n"
        "    subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        "    subprocess.Popen(['sh', '-c', 'while true; do :; done'])\n"
        "    time.sleep(600)\n"
    )
    assert verify_one(pool, code, unit_tests("busy()")).status == "timeout"
    assert sandbox_processes() == []


def test_output_flood_is_drained_and_bounded(make_sandbox):
    pool = make_sandbox(output_bytes=4096, timeout=20)
    body = """
    import os, sys
    line = "y" * 1023 + "\\n"
    for _ in range(50 * 1024):
        sys.stdout.write(line)
        os.write(2, line.encode())
    self.fail("flooded")
    """
    result = verify_one(pool, NOOP, unit_tests(body))
    assert result.status == "fail"
    assert len(result.details) <= pool.config.details_chars
    assert result.duration_s < 15


def test_exit_without_tests_reports_bounded_stderr(make_sandbox):
    pool = make_sandbox(output_bytes=1000)
    code = "import sys\nsys.stderr.write('E' * 100000)\nsys.stderr.flush()\nimport os\nos._exit(3)\n"
    result = verify_one(pool, code, unit_tests("pass"))
    assert (result.status, result.reason) == ("error", "exited_early")
    assert "100000 bytes" in result.details and result.details.count("E") <= 1100
