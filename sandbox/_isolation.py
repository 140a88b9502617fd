"""Isolation of one program's process, for any language: what the sandbox does before a test runs.

Standalone, standard library only, and nothing happens at import. Inside the sandbox the
zygote loads it from the file next to itself (bound read-only at
``/run/unitcoder/_isolation.py``); tests import it as ``sandbox._isolation``.

The zygote clones each program's first process into fresh PID and mount namespaces
(and IPC and network namespaces made for it alone, see ``_zygote._clone_fork``); that
process calls :func:`isolate`, which finishes the job: private ``/proc``, ``/tmp`` and
``/dev/shm``, a loopback of its own, rlimits, an unprivileged identity with no
capabilities, no core dumps, and last a seccomp filter. All of it holds for the process
and for everything it forks or execs. The Python runner then runs the tests in-process;
a runner for another language calls :func:`isolate` the same way and ``os.execve``s its
test driver (a compiler, ``node``, ...), which stays under every one of these limits.
"""

import ctypes
import os
import resource
import signal
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# What each program gets fresh: processes, mounts, SysV IPC / POSIX message queues, and
# the network (sockets, ports and their TIME_WAIT states, a loopback of its own).
PROGRAM_NAMESPACES = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
# The one core limit that stops every core dump: a core_pattern that pipes to a helper
# ignores the limit, except the value 1, at which the kernel aborts the dump; and one
# byte is less than the smallest core file.
RLIMIT_CORE_VALUE = 1


def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags):
    check(_libc.unshare(flags), "unshare")


def mount(source, target, fstype, flags, data=None):
    check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def prctl(option, arg):
    check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities():
    """Empty the bounding, permitted, effective and inheritable capability sets."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    check(_libc.capset(ctypes.byref(header), data), "capset")


def loopback_up():
    """Bring up ``lo`` of this network namespace (the kernel gives it 127.0.0.1 and ::1)."""
    fd = _libc.socket(2, 2, 0)  # AF_INET, SOCK_DGRAM: any socket will do for the ioctl
    if fd < 0:
        check(-1, "socket")
    try:
        ifreq = ctypes.create_string_buffer(struct.pack("16sH", b"lo", 0x1 | 0x40), 40)  # IFF_UP | IFF_RUNNING
        check(_libc.ioctl(fd, 0x8914, ifreq), "ioctl(SIOCSIFFLAGS lo)")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- seccomp
#
# Installed last, after the namespaces, mounts, limits and identity are set (the zygote
# and this setup need mount, unshare and friends; the program must not). A deny list in
# classic BPF, built by hand (there is no libseccomp binding in the sandbox).

# Syscall numbers (x86_64, aarch64), from the kernel's unistd tables.
SYSCALLS = {
    # the kernel keyring: keys outlive processes and are shared per uid
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    # namespaces and mounts: a user namespace would give back every capability
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "open_tree_attr": (467, 467),
    # reaching into other processes
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    # kernel attack surface no test needs
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "fanotify_init": (300, 262),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "lookup_dcookie": (212, 18),
    "memfd_secret": (447, 447),
    # the machine's state
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "syslog": (103, 116),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "vhangup": (153, 58),
    "iopl": (172, None),
    "ioperm": (173, None),
    # answered "not implemented", so that callers fall back: clone3 hides its flags from
    # the filter (glibc then uses clone, checked below); memfd_create makes memory files
    # outside the capped /tmp and /dev/shm
    "clone3": (435, 435),
    "memfd_create": (319, 279),
    # decided by their arguments
    "clone": (56, 220),
    "unshare": (272, 97),
    "prctl": (157, 167),
    "setrlimit": (160, 164),
    "prlimit64": (302, 261),
}
NOT_IMPLEMENTED = ("clone3", "memfd_create")
BY_ARGUMENT = ("clone", "unshare", "prctl", "setrlimit", "prlimit64")
AUDIT_ARCH = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}  # value, column in SYSCALLS
NR_SECCOMP = (317, 277)  # allowed: a filter the program adds can only refuse more
NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
X32_SYSCALL_BIT = 0x40000000


def seccomp_filter(machine):
    """The filter for ``machine`` (``os.uname().machine``), as packed ``sock_filter``s.

    Pure (no syscalls), so it can be checked outside a sandbox. None on an architecture
    without a syscall table here.
    """
    if machine not in AUDIT_ARCH:
        return None
    arch, column = AUDIT_ARCH[machine]
    numbers = {name: nrs[column] for name, nrs in SYSCALLS.items() if nrs[column] is not None}
    program, fixups, labels = [], [], {}

    def op(code, k=0):
        program.append([code, 0, 0, k])

    def jump(code, k, jt=None, jf=None):  # jt, jf: labels; None falls through
        for field, target in ((1, jt), (2, jf)):
            if target is not None:
                fixups.append((len(program), field, target))
        op(code, k)

    def load(offset):
        op(0x20, offset)  # BPF_LD | BPF_W | BPF_ABS, from struct seccomp_data

    def ret(value):
        op(0x06, value)  # BPF_RET | BPF_K

    def label(name):
        labels[name] = len(program)

    jeq, jge, jset = 0x15, 0x35, 0x45  # BPF_JMP | BPF_{JEQ,JGE,JSET} | BPF_K

    def arg_lo(i):  # seccomp_data.args[i], low word (both architectures are little-endian)
        return 16 + 8 * i

    def arg_hi(i):
        return 20 + 8 * i

    load(4)  # seccomp_data.arch: another calling convention (int 0x80) gets nothing
    jump(jeq, arch, jf="enosys")
    load(0)  # seccomp_data.nr
    if machine == "x86_64":
        jump(jge, X32_SYSCALL_BIT, jt="enosys")  # the x32 ABI
    for name, nr in numbers.items():
        if name in BY_ARGUMENT:
            jump(jeq, nr, jt=name)
        else:
            jump(jeq, nr, jt="enosys" if name in NOT_IMPLEMENTED else "eperm")
    ret(SECCOMP_RET_ALLOW)

    label("clone")  # clone(flags, ...): no new namespace (CLONE_NEWTIME has no bit here)
    load(arg_lo(0))
    jump(jset, NAMESPACE_FLAGS, jt="eperm", jf="allow")
    label("unshare")  # unshare(flags)
    load(arg_lo(0))
    jump(jset, NAMESPACE_FLAGS | CLONE_NEWTIME, jt="eperm", jf="allow")
    label("prctl")  # prctl(PR_SET_DUMPABLE, nonzero)
    load(arg_lo(0))
    jump(jeq, PR_SET_DUMPABLE, jf="allow")
    load(arg_lo(1))
    jump(jeq, 0, jf="eperm")
    load(arg_hi(1))
    jump(jeq, 0, jt="allow", jf="eperm")
    label("setrlimit")  # setrlimit(RLIMIT_CORE, ...): lowering it to 0 re-enables piped dumps
    load(arg_lo(0))
    jump(jeq, resource.RLIMIT_CORE, jt="eperm", jf="allow")
    label("prlimit64")  # prlimit64(pid, RLIMIT_CORE, new != NULL, old)
    load(arg_lo(1))
    jump(jeq, resource.RLIMIT_CORE, jf="allow")
    load(arg_lo(2))
    jump(jeq, 0, jf="eperm")
    load(arg_hi(2))
    jump(jeq, 0, jt="allow", jf="eperm")
    label("allow")
    ret(SECCOMP_RET_ALLOW)
    label("eperm")
    ret(SECCOMP_RET_ERRNO | EPERM)
    label("enosys")
    ret(SECCOMP_RET_ERRNO | ENOSYS)

    for index, field, name in fixups:
        offset = labels[name] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"seccomp filter: the jump to {name} is out of range")
        program[index][field] = offset
    return b"".join(struct.pack("=HBBI", *ins) for ins in program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PREPARED = None  # (filter buffer, sock_fprog, seccomp syscall number)


def prepare():
    """What every program's :func:`isolate` shares; once, in the zygote, before any program.

    Builds the seccomp filter (failing on an architecture without a syscall table, so
    that no program runs unfiltered), and joins a new, empty session keyring so that
    programs possess none of the host's keys (the filter keeps them from touching keys;
    ``/proc/keys`` would still list the descriptions of those they possess).
    """
    global _PREPARED
    if _PREPARED is not None:
        return
    machine = os.uname().machine
    code = seccomp_filter(machine)
    if code is None:
        raise OSError(f"no seccomp filter for the {machine} architecture (x86_64 and aarch64 are supported)")
    column = AUDIT_ARCH[machine][1]
    buf = ctypes.create_string_buffer(code, len(code))
    _PREPARED = (buf, _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p)), NR_SECCOMP[column])
    _libc.syscall(ctypes.c_long(SYSCALLS["keyctl"][column]), ctypes.c_long(1), None)  # KEYCTL_JOIN_SESSION_KEYRING


def install_seccomp():
    """Install the filter on this process (after no_new_privs); raise if it cannot be."""
    prepare()
    _, prog, nr = _PREPARED
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_SPEC_ALLOW: the filter must not also
    # switch on the speculative-store-bypass mitigation, which slows the program down.
    for flags in (4, 0):
        if _libc.syscall(ctypes.c_long(nr), ctypes.c_long(1), ctypes.c_long(flags), ctypes.byref(prog)) == 0:
            return
        if ctypes.get_errno() != 22:  # EINVAL: a kernel without the flag
            break
    check(-1, "seccomp")


# --------------------------------------------------------------------------- one program


def isolate(limits, uid, fds):
    """Make this process, PID 1 of the program's fresh namespaces, the program's sandbox.

    ``limits`` as ``SandboxConfig.limits()`` gives them; ``uid`` the program's uid (as
    root) or None (an ordinary user's sandbox: drop every capability instead);
    ``fds`` the write ends of the program's stdout, stderr and result pipes. Returns
    the result descriptor. Raises if any step fails: a program never runs half-isolated.
    """
    # If the parent dies, so does this PID 1, and with it the whole namespace.
    # (getppid() is 0 here: the parent lives outside the new PID namespace.)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    size = f"size={limits['disk_bytes']},mode=1777"
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, size)
    loopback_up()  # already up where the zygote made the network namespace
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
    # The hard limit cannot be raised without privilege; the filter refuses setting it
    # at all (0 would re-enable piped dumps).
    resource.setrlimit(resource.RLIMIT_CORE, (RLIMIT_CORE_VALUE, RLIMIT_CORE_VALUE))
    prctl(PR_SET_NO_NEW_PRIVS, 1)

    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            os._exit(72)
    else:
        drop_all_capabilities()
    prctl(PR_SET_DUMPABLE, 0)  # the filter keeps it so; an exec resets it, the core limit holds regardless
    os.chdir(workdir)
    install_seccomp()
    return result_fd
