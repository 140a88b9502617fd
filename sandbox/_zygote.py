"""The process that lives inside one bubblewrap sandbox and runs programs.

This file is executed *inside* the sandbox as a standalone script (it is bind-mounted
read-only at ``/run/unitcoder/zygote.py``); it must only use the standard library and
must not import anything from the project.

Process tree for one program::

    zygote (preloaded heavy packages, never runs untrusted code)
      └─ monitor      fork; unshares a PID and a mount namespace; trusted
           └─ runner  fork; PID 1 of the new namespace; mounts a fresh /proc, /tmp and
                      /dev/shm, sets rlimits, drops to an unprivileged uid (or drops all
                      capabilities), then executes ``code + test_code`` and runs the tests

When the runner exits, or the monitor kills it for time, the kernel kills every process
left in its PID namespace (double-forked daemons included) and the per-program tmpfs
mounts disappear with the mount namespace.

Protocol with the host on the zygote's original stdin/stdout: frames of a 4-byte
big-endian length followed by UTF-8 JSON.  The first frame the zygote sends is a hello
(what it preloaded); then one reply per request.
"""

import builtins as _builtins
import ctypes
import gc
import json
import os
import random
import resource
import select
import signal
import struct
import sys
import time
import traceback

# --------------------------------------------------------------------------- protocol


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    body = _read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_frame(fd, obj):
    body = json.dumps(obj).encode("utf-8")
    _write_all(fd, struct.pack(">I", len(body)) + body)


# --------------------------------------------------------------------------- libc

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _prctl(option, arg):
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_all_capabilities():
    """Empty the bounding, permitted, effective and inheritable capability sets."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# --------------------------------------------------------------------------- settings

CONFIG = json.loads(sys.argv[1])
MAX_RESULT_BYTES = 4 * 1024 * 1024
SETUP_DONE = b"S"  # first byte on the result pipe: the runner finished its setup

# --------------------------------------------------------------------------- preload

# The tests are run with references captured now, before any untrusted code exists.
import linecache as _linecache  # noqa: E402
import unittest as _unittest  # noqa: E402
import unittest.mock  # noqa: E402,F401  (tests use it; import once in the zygote)

_TestCase = _unittest.TestCase
_TestSuite = _unittest.TestSuite
_TestLoader = _unittest.TestLoader
_TestResult = _unittest.TestResult
_format_exception = traceback.format_exception
_isinstance, _issubclass, _len = isinstance, issubclass, len

PRELOADED = []
PRELOAD_FAILED = {}
for _name in CONFIG["preload"]:
    try:
        __import__(_name)
        PRELOADED.append(_name)
    except BaseException as exc:  # a broken optional package must not stop the zygote
        PRELOAD_FAILED[_name] = f"{type(exc).__name__}: {exc}"[:300]
if "matplotlib.pyplot" in PRELOADED:
    try:  # load the Agg backend now rather than in every program's first figure
        sys.modules["matplotlib.pyplot"].switch_backend("Agg")
    except BaseException as exc:
        PRELOAD_FAILED["matplotlib Agg backend"] = f"{type(exc).__name__}: {exc}"[:300]


class _Result(_TestResult):
    """Records one outcome per test; lives in the zygote, not in the program."""

    def __init__(self, trace_chars):
        super().__init__()
        self.trace_chars = trace_chars
        self.records = []  # [name, outcome, trace]
        self.started = 0
        self._subtest_failed = set()

    def _trace(self, err, test):
        text = self._exc_info_to_string(err, test)
        if _len(text) > self.trace_chars:
            text = text[: self.trace_chars] + "\n... [traceback truncated]"
        return text

    def _exc_name(self, err):
        return err[0].__name__ if err and err[0] else ""

    def startTest(self, test):
        self.started += 1
        super().startTest(test)

    def addSuccess(self, test):
        if test.id() not in self._subtest_failed:
            self.records.append([test.id(), "pass", ""])

    def addFailure(self, test, err):
        self.records.append([test.id(), "fail", self._trace(err, test)])

    def addError(self, test, err):
        kind = "oom" if self._exc_name(err) == "MemoryError" else "error"
        self.records.append([str(test), kind, self._trace(err, test)])

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._subtest_failed.add(test.id())
            outcome = "fail" if _issubclass(err[0], test.failureException) else "error"
            if self._exc_name(err) == "MemoryError":
                outcome = "oom"
            self.records.append([str(subtest), outcome, self._trace(err, test)])

    def addSkip(self, test, reason):
        self.records.append([test.id(), "skip", f"skipped: {reason}"[: self.trace_chars]])

    def addExpectedFailure(self, test, err):
        self.records.append([test.id(), "pass", ""])

    def addUnexpectedSuccess(self, test):
        self.records.append([test.id(), "fail", "unexpected success of a test marked expectedFailure"])


_id, _list, _type = id, list, type
_GUARDED_CLASSES = (_TestCase, _TestSuite, _unittest.BaseTestSuite, _TestLoader, _TestResult, _Result)
_GUARDED_MODULES = ("unittest", "unittest.case", "unittest.suite", "unittest.loader", "unittest.result", "builtins")


def _machinery_snapshot():
    """Identities of everything the verdict depends on, to detect patching.

    Uses only names bound in this module, never a builtin looked up at call time: the
    program may have replaced those.
    """
    snap = {}
    for owner in _GUARDED_CLASSES:
        for key, value in _list(owner.__dict__.items()):
            snap[f"{owner.__name__}.{key}"] = _id(value)
    for key, value in _list(_builtins.__dict__.items()):
        snap[f"builtins.{key}"] = _id(value)
    for key in _GUARDED_MODULES:
        snap[f"sys.modules[{key!r}]"] = _id(sys.modules.get(key))
    return snap


_SNAPSHOT = _machinery_snapshot()
_BUILTINS_SAVED = dict(_builtins.__dict__)
_dumps = json.dumps


# Freeze everything imported so far: forked children then never touch these objects'
# pages during garbage collection, so they stay shared with the zygote.
gc.collect()
gc.freeze()

# --------------------------------------------------------------------------- runner (PID 1)


def _run_program(req, nonce, result_fd):
    """Execute code + tests in this process and write the nonce-framed result."""
    code, test_code = req["code"], req["test_code"]
    source = code.rstrip("\n") + "\n\n\n" + test_code
    filename = "program.py"
    _linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "program", "__file__": os.path.join(os.getcwd(), filename), "__builtins__": _builtins}
    out = {"load_error": None, "load_error_kind": None, "records": [], "started": 0, "tamper": []}
    load_exc = run_exc = result = None
    missing = []
    try:
        exec(compile(source, filename, "exec"), namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: the module failed to load
        load_exc = exc
    if load_exc is None:
        result = _Result(CONFIG["trace_chars"])
        try:
            loader, suite = _TestLoader(), _TestSuite()
            for cls_name in req["test_classes"]:
                cls = namespace.get(cls_name)
                if not (_isinstance(cls, type) and _issubclass(cls, _TestCase)):
                    missing.append(cls_name)
                    continue
                suite.addTest(loader.loadTestsFromTestCase(cls))
            suite(result)  # fixture errors (setUpClass, ...) arrive through addError
        except BaseException as exc:
            run_exc = exc
    # Check for tampering first, then put builtins back: what follows (formatting,
    # encoding) must not depend on what the program did to them.
    now = _machinery_snapshot()
    tamper = [key for key, value in _SNAPSHOT.items() if now.get(key) != value]
    _builtins.__dict__.update(_BUILTINS_SAVED)
    out["tamper"] = sorted(tamper)[:20]
    limit = CONFIG["trace_chars"]
    if load_exc is not None:
        trace = "".join(_format_exception(type(load_exc), load_exc, load_exc.__traceback__))
        out["load_error"] = trace[-limit:]
        out["load_error_kind"] = "oom" if isinstance(load_exc, MemoryError) else "error"
    else:
        for cls_name in missing:
            out["records"].append(
                [cls_name, "error", f"test class {cls_name} is not a unittest.TestCase after loading"]
            )
        if run_exc is not None:
            trace = "".join(_format_exception(type(run_exc), run_exc, run_exc.__traceback__))
            out["records"].append(["<test run>", "error", trace[-limit:]])
        out["records"].extend(result.records)
        out["started"] = result.started
    _write_all(result_fd, nonce + _dumps(out).encode("utf-8"))


def _exec_driver(req, nonce, result_fd):
    """The confirmation run (``sandbox/confirm.py``): a fresh interpreter, in this isolated
    process, runs the host's stdlib-only driver on program.py; the nonce travels on a pipe
    the driver reads and closes before the program's code runs. Never returns."""
    with open("program.py", "w", encoding="utf-8") as f:
        f.write(req["code"].rstrip("\n") + "\n\n\n" + req["test_code"])
    nonce_read, nonce_write = os.pipe()
    _write_all(nonce_write, nonce)
    os.close(nonce_write)
    os.set_inheritable(result_fd, True)
    os.set_inheritable(nonce_read, True)
    argv = [sys.executable, "-I", "-B", "-c", req["driver"], str(result_fd), str(nonce_read)]
    os.execv(sys.executable, argv + [json.dumps(req["test_classes"])])


def _runner_main(req, nonce, fds):
    """PID 1 of the program's namespaces. Never returns."""
    status = 70
    try:
        # If the monitor dies, so does this PID 1, and with it the whole namespace.
        # (getppid() is 0 here: the parent lives outside the new PID namespace.)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        limits = CONFIG["limits"]
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        size = f"size={limits['disk_bytes']},mode=1777"
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size)
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, size)
        uid = CONFIG["uid"]
        workdir = "/tmp/work"
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)

        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds["out_w"], 1)
        os.dup2(fds["err_w"], 2)
        result_fd = fds["res_w"]
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, 1 << 16)

        cpu = int(limits["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["disk_bytes"], limits["disk_bytes"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_procs"], limits["max_procs"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)

        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if os.getuid() == 0 or os.geteuid() == 0:
                os._exit(72)
        else:
            _drop_all_capabilities()
        os.chdir(workdir)
        # From here on, anything that goes wrong is the program's doing, not ours.
        _write_all(result_fd, SETUP_DONE)
        status = 73
        if req.get("driver"):
            _exec_driver(req, nonce, result_fd)
        # Re-seed what the zygote's modules seeded once, so programs do not share streams.
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        _run_program(req, nonce, result_fd)
        status = 0
    except BaseException:
        try:
            sys.__stderr__.write("unitcoder runner failure:\n" + traceback.format_exc())
            sys.__stderr__.flush()
        except BaseException:
            pass
    finally:
        os._exit(status)


# --------------------------------------------------------------------------- monitor


class _Head:
    """Keep the first ``limit`` bytes of a stream and count (but drop) the rest."""

    def __init__(self, limit):
        self.limit, self.data, self.total = limit, bytearray(), 0

    def feed(self, chunk):
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self):
        return self.data.decode("utf-8", "replace")


def _watch(pid, start, req, nonce, pipes):
    """Wait for the runner (PID 1 of its namespace) with the wall-clock limit; drain its output.

    Returns the report the host turns into a verdict. Runs in a trusted process: the
    zygote itself, or the monitor on the fallback path.
    """
    out_r, err_r, res_r = pipes
    limit = CONFIG["output_bytes"]
    stdout, stderr, result = _Head(limit), _Head(limit), _Head(MAX_RESULT_BYTES)
    streams = {out_r: stdout, err_r: stderr, res_r: result}
    pidfd = os.pidfd_open(pid)
    deadline = start + float(req["timeout"])
    timed_out = exited = False
    drain_until = None
    try:
        while True:
            now = time.monotonic()
            if exited:
                # The namespace died with the runner, so every writer is gone and the
                # pipes are at EOF; the bound only guards against surprises.
                if not streams or now >= drain_until:
                    break
                wait_s = drain_until - now
            elif not timed_out:
                wait_s = deadline - now
                if wait_s <= 0:
                    timed_out = True
                    os.kill(pid, signal.SIGKILL)  # PID 1 dies: the kernel kills its namespace
                    continue
            else:
                wait_s = 5.0
            fds = list(streams) if exited else [pidfd, *streams]
            ready, _, _ = select.select(fds, [], [], wait_s)
            for fd in ready:
                if fd == pidfd:
                    exited = True
                    drain_until = time.monotonic() + 1.0
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    streams[fd].feed(chunk)
                else:
                    del streams[fd]
        _, wstatus, usage = os.wait4(pid, 0)
    finally:
        os.close(pidfd)
        for fd in pipes:
            os.close(fd)
    report = {
        "infra_error": None,
        "wall_s": time.monotonic() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "timed_out": timed_out,
        "exit_code": os.waitstatus_to_exitcode(wstatus),
        "stdout": stdout.text(),
        "stdout_bytes": stdout.total,
        "stderr": stderr.text(),
        "stderr_bytes": stderr.total,
    }
    _parse_result(report, bytes(result.data), nonce, result.total)
    return report


def _start_runner(req, nonce, fork):
    """Fork the runner with ``fork`` (which puts it in fresh namespaces) and watch it."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    start = time.monotonic()
    pid = fork()
    if pid == 0:
        for fd in (out_r, err_r, res_r):
            os.close(fd)
        _runner_main(req, nonce, {"out_w": out_w, "err_w": err_w, "res_w": res_w})
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    return _watch(pid, start, req, nonce, (out_r, err_r, res_r))


# One clone() both forks and creates the runner's PID and mount namespaces, so the
# (large) zygote is copied once per program. Python has no clone(), so it is called
# through libc with the GIL held and Python's own fork hooks around it, as os.fork()
# does. It needs a known syscall number and a single-threaded zygote; otherwise the
# fallback forks a monitor that unshares and forks again.
_CLONE_NR = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


def _clone_fork():
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _pylibc.syscall(
        ctypes.c_long(_CLONE_NR),
        ctypes.c_ulong(signal.SIGCHLD | CLONE_NEWPID | CLONE_NEWNS),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    err = ctypes.get_errno()
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


def _unshare_fork():
    _check(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS), "unshare")
    return os.fork()


def _monitor_main(req, nonce, report_fd):
    """Fallback path: a forked monitor unshares, forks the runner, watches it. Never returns."""
    try:
        report = _start_runner(req, nonce, _unshare_fork)
    except BaseException:
        report = {"infra_error": traceback.format_exc()[-2000:]}
    try:
        _write_all(report_fd, json.dumps(report).encode("utf-8"))
    finally:
        os._exit(0)


def _parse_result(report, raw, nonce, total):
    """Split the result pipe's bytes into the setup marker and the nonce-framed result."""
    report["setup_done"] = raw[:1] == SETUP_DONE
    report["result"] = None
    report["result_forged"] = False
    body = raw[1:] if report["setup_done"] else raw
    if not body:
        return
    if total > MAX_RESULT_BYTES or not body.startswith(nonce):
        report["result_forged"] = True
        return
    try:
        report["result"] = json.loads(body[len(nonce) :].decode("utf-8"))
    except ValueError:
        report["result_forged"] = True


# --------------------------------------------------------------------------- zygote loop


def _serve_one(req):
    nonce = os.urandom(32).hex().encode("ascii")
    if USE_CLONE:
        return _start_runner(req, nonce, _clone_fork)
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rep_r)
        os.close(PROTO_IN)
        os.close(PROTO_OUT)
        _monitor_main(req, nonce, rep_w)
    os.close(rep_w)
    chunks = []
    guard = time.monotonic() + float(req["timeout"]) + 20.0
    while True:
        ready, _, _ = select.select([rep_r], [], [], max(guard - time.monotonic(), 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            chunks = [json.dumps({"infra_error": "program monitor did not report in time"}).encode()]
            break
        chunk = os.read(rep_r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rep_r)
    os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if not raw:
        return {"infra_error": "program monitor exited without a report"}
    return json.loads(raw.decode("utf-8"))


# The protocol uses the original stdin/stdout; everything else the zygote or a package
# prints goes to stderr so it cannot corrupt the frames.
PROTO_IN = os.dup(0)
PROTO_OUT = os.dup(1)
_null = os.open("/dev/null", os.O_RDONLY)
os.dup2(_null, 0)
os.dup2(2, 1)
os.close(_null)
os.set_inheritable(PROTO_IN, False)
os.set_inheritable(PROTO_OUT, False)


USE_CLONE = False


def main():
    global USE_CLONE
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    threads = len(os.listdir("/proc/self/task"))
    USE_CLONE = _CLONE_NR is not None and threads == 1 and not CONFIG.get("no_clone")
    _write_frame(
        PROTO_OUT,
        {
            "hello": True,
            "preloaded": PRELOADED,
            "preload_failed": PRELOAD_FAILED,
            "python": sys.version.split()[0],
            "threads": threads,
            "clone": USE_CLONE,
        },
    )
    while True:
        req = _read_frame(PROTO_IN)
        if req is None:
            return
        try:
            reply = _serve_one(req)
        except BaseException:
            reply = {"infra_error": traceback.format_exc()[-2000:]}
        _write_frame(PROTO_OUT, reply)


if __name__ == "__main__":
    main()
