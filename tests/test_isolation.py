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


@pytest.mark.skipif(os.geteuid() != 0, reason="programs switch to a uid of their own only when running as root")
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
        # the program's thread and the runner's driver thread: none of the host's
        body = 'import os\nself.assertEqual(len(os.listdir("/proc/self/task")), 2)'
        assert verify_one(sandbox, NOOP, unit_tests(body)).status == "pass"
    finally:
        stop.set()


# ---------------------------------------------------------------------------- the seccomp filter

# name: (x86_64 number, aarch64 number, arguments, errno the program gets). The arguments
# are harmless: were the call let through, it would fail differently (EFAULT, ESRCH,
# EBADF, EINVAL) or succeed, so only a refusal gives the expected errno.
SIGCHLD = 17
REFUSED_SYSCALLS = {
    "add_key": (248, 217, (0, 0, 0, 0, 0), "EPERM"),
    "request_key": (249, 218, (0, 0, 0, 0), "EPERM"),
    "keyctl": (250, 219, (0, -3, 0), "EPERM"),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "unshare(CLONE_NEWUSER)": (272, 97, (0x10000000,), "EPERM"),
    "unshare(CLONE_NEWNET)": (272, 97, (0x40000000,), "EPERM"),
    "clone(CLONE_NEWUSER)": (56, 220, (0x10000000 | SIGCHLD, 0, 0, 0, 0), "EPERM"),
    "clone3": (435, 435, (0, 0), "ENOSYS"),
    "setns": (308, 268, (-1, 0), "EPERM"),
    "mount": (165, 40, (0, 0, 0, 0, 0), "EPERM"),
    "open_tree": (428, 428, (-100, 0, 0), "EPERM"),
    "ptrace(PTRACE_ATTACH)": (101, 117, (16, 0x7FFFFFFF, 0, 0), "EPERM"),
    "process_vm_readv": (310, 270, (0x7FFFFFFF, 0, 0, 0, 0, 0), "EPERM"),
    "kcmp": (312, 272, (1, 1, 0, 0, 0), "EPERM"),
    "pidfd_getfd": (438, 438, (-1, 0, 0), "EPERM"),
    "bpf": (321, 280, (0, 0, 0), "EPERM"),
    "perf_event_open": (298, 241, (0, 0, -1, -1, 0), "EPERM"),
    "userfaultfd": (323, 282, (1,), "EPERM"),  # UFFD_USER_MODE_ONLY, allowed to anyone
    "io_uring_setup": (425, 425, (0, 0), "EPERM"),
    "name_to_handle_at": (303, 264, (-100, 0, 0, 0, 0), "EPERM"),
    "kexec_load": (246, 104, (0, 0, 0, 0), "EPERM"),
    "init_module": (175, 105, (0, 0, 0), "EPERM"),
    "memfd_create": (319, 279, (b"m", 0), "ENOSYS"),
}


@pytest.mark.parametrize("name", list(REFUSED_SYSCALLS))
def test_the_seccomp_filter_refuses(sandbox, name):
    x86_64, aarch64, args, error = REFUSED_SYSCALLS[name]
    body = f"""
    import ctypes, errno, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {{"x86_64": {x86_64}, "aarch64": {aarch64}}}[os.uname().machine]
    args = [a if isinstance(a, bytes) else ctypes.c_long(a) for a in {args!r}]
    ret = libc.syscall(ctypes.c_long(nr), *args)
    if ret == 0 and nr in (56, 220):
        os._exit(0)  # a clone let through: this is the child
    self.assertEqual((ret, errno.errorcode.get(ctypes.get_errno())), (-1, {error!r}))
    """
    result = verify_one(sandbox, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


def test_what_a_program_execs_stays_under_the_filter(sandbox):
    """Like a runner for another language would be: the filter survives execve."""
    child = "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x10000000) == 0)"
    body = f"""
    import subprocess, sys
    self.assertEqual(subprocess.run([sys.executable, "-c", {child!r}]).returncode, 0)
    """
    result = verify_one(sandbox, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


def test_programs_cannot_trace_their_own_processes(sandbox):
    body = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    pid = os.fork()
    if pid == 0:
        # as an attacker would: make itself dumpable (traceable), then ask to be traced
        libc.prctl(4, 1, 0, 0, 0)
        os._exit(0 if libc.ptrace(ctypes.c_long(0), 0, None, None) == 0 else 1)  # PTRACE_TRACEME
    self.assertEqual(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), 1)
    """
    result = verify_one(sandbox, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


def test_honest_programs_run_under_the_filter(sandbox):
    body = """
    import concurrent.futures, multiprocessing, os, socket, subprocess, tempfile, threading
    import numpy as np, pandas as pd, matplotlib.pyplot as plt, scipy.stats, sklearn.linear_model
    x = np.arange(20.0)
    model = sklearn.linear_model.LinearRegression().fit(x.reshape(-1, 1), 3 * x + 1)
    self.assertAlmostEqual(float(model.coef_[0]), 3.0)
    self.assertEqual(pd.DataFrame({"a": x}).a.sum(), 190.0)
    self.assertLess(scipy.stats.norm.cdf(0) - 0.5, 1e-12)
    plt.plot(x, x ** 2)
    plt.savefig("plot.png")
    self.assertGreater(os.path.getsize("plot.png"), 0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        self.assertEqual(list(pool.map(abs, [-1, -2])), [1, 2])
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        self.assertEqual(list(pool.map(abs, [-1, -2])), [1, 2])
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        self.assertEqual(pool.map(abs, [-3]), [3])
    self.assertEqual(subprocess.run(["sh", "-c", "echo ok"], capture_output=True, text=True).stdout, "ok\\n")
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: server.accept()[0].sendall(b"hi"), daemon=True).start()
    with socket.create_connection(server.getsockname()) as client:
        self.assertEqual(client.recv(2), b"hi")
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"x")
    """
    result = verify_one(sandbox, NOOP, unit_tests(body))
    assert result.status == "pass", result.details


# ---------------------------------------------------------------------------- the filter itself, on both architectures


def run_filter(code: bytes, nr: int, arch: int, args: tuple = ()) -> int:
    """Classic BPF, as the kernel runs a seccomp filter over ``struct seccomp_data``."""
    import struct

    words = list(args) + [0] * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *[w & (2**64 - 1) for w in words])
    program = [struct.unpack("=HBBI", code[i : i + 8]) for i in range(0, len(code), 8)]
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = program[pc]
        pc += 1
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op in (0x15, 0x35, 0x45):  # jeq, jge, jset
            taken = acc == k if op == 0x15 else acc >= k if op == 0x35 else bool(acc & k)
            pc += jt if taken else jf
        elif op == 0x06:  # ret k
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {op:#x}")


ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x50001, 0x50026
ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
COMMON = {  # name: (x86_64, aarch64)
    "read": (0, 63),
    "write": (1, 64),
    "getpid": (39, 172),
    "clone": (56, 220),
    "unshare": (272, 97),
    "prctl": (157, 167),
    "setrlimit": (160, 164),
    "prlimit64": (302, 261),
    "seccomp": (317, 277),
}


@pytest.mark.parametrize("machine", list(ARCHES))
def test_the_filter_decides_by_syscall_and_argument_on(machine):
    from sandbox import _isolation

    code = _isolation.seccomp_filter(machine)
    arch, column = ARCHES[machine], 0 if machine == "x86_64" else 1

    def decide(name, *args):
        nr = COMMON[name][column] if name in COMMON else _isolation.SYSCALLS[name][column]
        return run_filter(code, nr, arch, args)

    for name, numbers in _isolation.SYSCALLS.items():
        if numbers[column] is not None and name not in _isolation.BY_ARGUMENT:
            assert decide(name) == (ENOSYS if name in _isolation.NOT_IMPLEMENTED else EPERM), name
    assert decide("read") == decide("write") == decide("getpid") == decide("seccomp", 1, 0, 0) == ALLOW
    assert decide("clone", 0x003D0F00) == ALLOW  # a thread (glibc's flags)
    assert decide("clone", 0x01200011) == ALLOW  # fork
    for flag in (0x10000000, 0x40000000, 0x20000000, 0x00020000):  # NEWUSER, NEWNET, NEWPID, NEWNS
        assert decide("clone", 0x11 | flag) == EPERM
        assert decide("unshare", flag) == EPERM
    assert decide("unshare", 0x80) == EPERM  # CLONE_NEWTIME
    assert decide("unshare", 0x400) == ALLOW  # CLONE_FILES
    assert decide("prctl", 4, 0) == ALLOW  # PR_SET_DUMPABLE 0
    assert decide("prctl", 4, 1) == decide("prctl", 4, 1 << 32) == EPERM
    assert decide("prctl", 15, 12345) == ALLOW  # PR_SET_NAME
    assert decide("setrlimit", 4, 1) == EPERM  # RLIMIT_CORE
    assert decide("setrlimit", 7, 1) == ALLOW  # RLIMIT_NOFILE
    assert decide("prlimit64", 0, 4, 0, 1000) == ALLOW  # reading the core limit
    assert decide("prlimit64", 0, 4, 1000, 0) == decide("prlimit64", 0, 4, 1 << 40, 0) == EPERM
    assert decide("prlimit64", 0, 7, 1000, 0) == ALLOW
    assert run_filter(code, 1, 0x40000003) == ENOSYS  # i386 (int 0x80): every call
    if machine == "x86_64":
        assert run_filter(code, 0x40000000 | 39, arch) == ENOSYS  # the x32 ABI


def test_the_filter_is_refused_on_an_architecture_it_has_no_table_for():
    from sandbox import _isolation

    assert _isolation.seccomp_filter("ppc64le") is None


HEADERS = {
    "x86_64": ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"),
    "aarch64": ("/usr/include/asm-generic/unistd.h",),
}


@pytest.mark.parametrize("machine", list(HEADERS))
def test_the_filters_syscall_numbers_match_the_kernel_headers(machine):
    import re

    from sandbox import _isolation

    header = next((path for path in HEADERS[machine] if os.path.exists(path)), None)
    if header is None:
        pytest.skip(f"no kernel headers for {machine} here")
    text = Path(header).read_text()
    numbers = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", text)}
    column = 0 if machine == "x86_64" else 1
    for name, nrs in _isolation.SYSCALLS.items():
        if nrs[column] is not None and name in numbers:
            assert nrs[column] == numbers[name], name
    assert _isolation.NR_SECCOMP[column] == numbers["seccomp"]
    missing = [n for n, nrs in _isolation.SYSCALLS.items() if nrs[column] is not None and n not in numbers]
    assert set(missing) <= {"open_tree_attr"}, missing  # newer than these headers
