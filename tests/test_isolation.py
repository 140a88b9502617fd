"""What a program can see and reach: only what it needs, nothing of the host's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import unit_tests, verify_one

REPO = Path(__file__).resolve().parents[1]
NOOP = "def noop():\n    return None\n"


def test_no_network_not_even_the_hosts_loopback(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        body = f"""
        import socket
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
        with self.assertRaises(OSError):
            socket.create_connection(("1.1.1.1", 53), timeout=2)
        with self.assertRaises(OSError):
            socket.getaddrinfo("pypi.org", 443)
        self.assertEqual([name for _, name in socket.if_nameindex()], ["lo"])
        """
        assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"
    finally:
        server.close()


def test_project_files_and_home_are_invisible(sandbox):
    secret_dir = tempfile.mkdtemp(dir=Path.home(), prefix=".unitcoder-secret-")
    try:
        Path(secret_dir, "token").write_text("hf_secret")
        body = f"""
        import os
        for path in ({str(REPO)!r}, {str(REPO / "sandbox" / "pool.py")!r}, {secret_dir!r}, "/etc/shadow"):
            self.assertFalse(os.path.exists(path), path)
        self.assertNotIn("daemon:", open("/etc/passwd").read())  # a generated passwd, not the host's
        """
        result = verify_one(sandbox, NOOP, unit_tests(body))
        assert result.status == "pass", result.details
    finally:
        subprocess.run(["rm", "-rf", secret_dir], check=True)


def test_programs_see_the_packages_of_the_running_environment(sandbox):
    """Inside a venv (CI's `.venv` in the project) programs import the venv's packages,
    from a neutral path, and not the base interpreter's."""
    import sys

    import numpy

    from sandbox.bwrap import VENV_INSIDE, hidden_site_packages, in_venv

    prefix = VENV_INSIDE if in_venv() else sys.prefix
    body = f"""
    import os, sys
    import numpy
    self.assertEqual(sys.prefix, {prefix!r})
    self.assertEqual(numpy.__version__, {numpy.__version__!r})
    self.assertTrue(numpy.__file__.startswith(sys.prefix + "/"), numpy.__file__)
    for path in {hidden_site_packages()!r}:
        self.assertEqual(os.listdir(path), [])
    """
    result = verify_one(sandbox, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


def test_environment_is_clean_of_host_secrets(make_sandbox, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_should_not_leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "should_not_leak")
    pool = make_sandbox()
    body = """
    import os
    self.assertNotIn("HF_TOKEN", os.environ)
    self.assertNotIn("AWS_SECRET_ACCESS_KEY", os.environ)
    self.assertFalse(any("leak" in value for value in os.environ.values()))
    self.assertEqual(os.environ["HOME"], "/tmp")
    """
    assert verify_one(pool, NOOP, unit_tests(body)).status == "pass"


def test_installed_python_is_read_only(sandbox):
    body = """
    import os, json
    target = os.path.join(os.path.dirname(json.__file__), "planted.py")
    with self.assertRaises(OSError):
        open(target, "w")
    with self.assertRaises(OSError):
        open("/usr/planted", "w")
    """
    assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"


@pytest.mark.skipif(os.geteuid() != 0, reason="the per-slot uid is used when running as root")
def test_programs_run_unprivileged_even_when_the_pipeline_is_root(sandbox):
    body = """
    import os
    self.assertNotEqual(os.getuid(), 0)
    self.assertNotEqual(os.geteuid(), 0)
    self.assertIn("CapEff:\\t0000000000000000", open("/proc/self/status").read())
    """
    assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"


def test_programs_get_the_tools_they_legitimately_need(sandbox):
    body = """
    import multiprocessing, os, ssl, subprocess, zoneinfo, datetime
    out = subprocess.run(["sh", "-c", "echo hi | tr a-z A-Z"], capture_output=True, text=True)
    self.assertEqual(out.stdout, "HI\\n")
    with multiprocessing.Pool(2) as pool:
        self.assertEqual(pool.map(abs, [-1, -2]), [1, 2])
    paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    self.assertEqual(paris.utcoffset(), datetime.timedelta(hours=2))
    self.assertTrue(os.path.isdir("/proc/self"))
    self.assertTrue(os.access(os.getcwd(), os.W_OK))
    self.assertEqual(os.path.exists("/etc/ssl/certs/ca-certificates.crt"), HOST_HAS_CA_BUNDLE)
    """
    setup = f"HOST_HAS_CA_BUNDLE = {os.path.exists('/etc/ssl/certs/ca-certificates.crt')}"
    result = verify_one(sandbox, NOOP, unit_tests(body, setup=setup))
    assert result.status == "pass", result.details


def test_each_program_starts_in_an_empty_private_directory(make_sandbox):
    pool = make_sandbox(workers=1)
    write = unit_tests(
        """
        import os
        self.assertEqual(os.listdir("."), [])
        self.assertEqual([n for n in os.listdir("/tmp") if n != "work"], [])
        open("left_behind.txt", "w").write("x")
        open("/tmp/also_left.txt", "w").write("x")
        open("/dev/shm/shm_left", "w").write("x")
        """
    )
    results = pool.verify([(NOOP, write)] * 3)  # the same worker, one after another
    assert [r.status for r in results] == ["pass"] * 3, results[-1].details


def test_module_changes_do_not_leak_into_the_next_program(make_sandbox):
    pool = make_sandbox(workers=1, preload=("numpy",))
    mutate = unit_tests(
        """
        import numpy, json, os
        self.assertFalse(hasattr(numpy, "LEAKED"))
        self.assertNotIn("LEAKED", os.environ)
        self.assertEqual(json.dumps([1]), "[1]")
        numpy.LEAKED = True
        json.dumps = lambda *a, **k: "tampered"
        os.environ["LEAKED"] = "1"
        """
    )
    # json.dumps stays tampered when the runner reports, so the first run may end in
    # error; what matters is that the second and third start clean.
    results = pool.verify([(NOOP, mutate)] * 3)
    assert all(r.status != "pass" or r.tests_passed == 1 for r in results)
    assert results[1].status == results[2].status == results[0].status
    assert "LEAKED" not in results[1].details


def test_kill_minus_one_reaches_nothing_outside_the_program(sandbox):
    sentinel = subprocess.Popen(["sleep", "60"])
    workers = [w.proc.pid for w in sandbox._workers]
    try:
        body = """
        import os, signal, subprocess
        child = subprocess.Popen(["sleep", "30"])
        subprocess.run(["kill", "-9", "-1"])  # from a child: everything it can see
        self.assertEqual(child.wait(), -signal.SIGKILL)  # it did reach its own namespace
        with self.assertRaises(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # and from the program itself: nothing left to hit
        """
        assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"
        assert sentinel.poll() is None
        assert [w.proc.pid for w in sandbox._workers] == workers
        assert all(w.proc.poll() is None for w in sandbox._workers)
        assert verify_one(sandbox, NOOP, unit_tests("pass")).status == "pass"
    finally:
        sentinel.send_signal(signal.SIGKILL)
        sentinel.wait()


def test_processes_of_other_programs_are_invisible(make_sandbox):
    pool = make_sandbox(workers=2)
    body = """
    import os, time
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    time.sleep(0.5)
    self.assertLessEqual(len(pids), 2, pids)  # itself (PID 1) and perhaps a transient child
    """
    results = pool.verify([(NOOP, unit_tests(body))] * 2)
    assert [r.status for r in results] == ["pass", "pass"], results[0].details + results[1].details


def test_threads_of_the_host_are_not_inherited(sandbox):
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        body = 'import os\nself.assertEqual(len(os.listdir("/proc/self/task")), 1)'
        assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"
    finally:
        stop.set()
