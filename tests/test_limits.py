"""Resource limits: time, CPU, memory, disk, processes, output; and nothing left running."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import sandbox_processes, unit_tests, verify_one

NOOP = "def noop():\n    return None\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="per-worker uids (to find leftovers) exist when run as root")


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


# The bypasses of the disk cap and of "core dumps are off" an attacker would try, as test
# bodies that pass when the attack fails (shared with test_unprivileged.py).
USERNS_TMPFS_ATTACK = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, so that it can write its own /proc/self/*_map
if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
    return
open("/proc/self/setgroups", "w").write("deny")
open("/proc/self/uid_map", "w").write(f"0 {uid} 1")
open("/proc/self/gid_map", "w").write(f"0 {gid} 1")
os.mkdir("big")
if libc.mount(b"tmpfs", b"big", b"tmpfs", 0, b"size=256m") != 0:
    return
for i in range(5):  # 35 MiB, in files under the largest-file cap
    with open(f"big/{i}", "wb") as f:
        for _ in range(7):
            f.write(b"x" * (1 << 20))
self.fail("35 MiB written past an 8 MiB disk cap")
"""
MEMFD_ATTACK = """
import os
try:
    fds = [os.memfd_create(f"m{i}") for i in range(5)]
    for fd in fds:  # 35 MiB, in memory files under the largest-file cap
        for _ in range(7):
            os.write(fd, b"x" * (1 << 20))
except OSError:
    return
self.fail("35 MiB held in memfds past an 8 MiB disk cap")
"""
# A core_pattern that pipes to a helper ("|/usr/lib/systemd/systemd-coredump ...") makes
# the kernel start that helper as root for a dumpable process that crashes, whatever its
# core limit, except a limit of exactly 1; a file core_pattern needs a limit of a page.
CAN_DUMP_CORE = """
def can_dump_core():
    import ctypes, resource
    dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
    return dumpable != 0 and resource.getrlimit(resource.RLIMIT_CORE)[0] != 1
"""
CORE_REENABLE_ATTACK = f"""
import ctypes, resource, subprocess, sys
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
for limits in ((0, 0), (resource.RLIM_INFINITY,) * 2):
    try:
        resource.setrlimit(resource.RLIMIT_CORE, limits)
    except (OSError, ValueError):
        pass
self.assertFalse(can_dump_core())
# an exec makes a process dumpable again: the core limit must hold on its own there
child = {CAN_DUMP_CORE!r} + "\\nimport sys; sys.exit(can_dump_core())"
self.assertEqual(subprocess.run([sys.executable, "-c", child]).returncode, 0)
"""


def test_disk_cap_holds_against_a_private_tmpfs_in_a_new_user_namespace(make_sandbox):
    pool = make_sandbox(disk_mb=8)
    result = verify_one(pool, NOOP, unit_tests(USERNS_TMPFS_ATTACK))
    assert result.status == "pass", result.details


def test_disk_cap_holds_against_memfd(make_sandbox):
    pool = make_sandbox(disk_mb=8)
    result = verify_one(pool, NOOP, unit_tests(MEMFD_ATTACK))
    assert result.status == "pass", result.details


def test_programs_cannot_reenable_core_dumps(make_sandbox):
    pool = make_sandbox()
    result = verify_one(pool, NOOP, unit_tests(CORE_REENABLE_ATTACK, setup=CAN_DUMP_CORE))
    assert result.status == "pass", result.details


@root_only
@pytest.mark.skipif(
    os.environ.get("UNITCODER_TEST_CORE_PATTERN") != "1",
    reason="changes the host's kernel.core_pattern for a moment: set UNITCODER_TEST_CORE_PATTERN=1",
)
def test_a_crash_starts_no_core_dump_helper(make_sandbox, tmp_path):
    pool = make_sandbox()
    marker = tmp_path / "helper-ran"
    pattern_file = Path("/proc/sys/kernel/core_pattern")
    saved = pattern_file.read_text()
    body = """
    import ctypes, os, resource, subprocess, sys
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass
    pid = os.fork()
    if pid == 0:
        os.abort()
    os.waitpid(pid, 0)
    subprocess.run([sys.executable, "-c", "import os; os.abort()"])
    """
    try:
        pattern_file.write_text(f"|/usr/bin/touch {marker}")
        verify_one(pool, NOOP, unit_tests(body))
        time.sleep(1)
    finally:
        pattern_file.write_text(saved)
    assert not marker.exists()
