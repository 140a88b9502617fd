"""The process that lives inside one bubblewrap sandbox and runs programs.

This file is executed *inside* the sandbox as a standalone script (it is bind-mounted
read-only at ``/run/unitcoder/zygote.py``); it must only use the standard library and
must not import anything from the project.

Process tree for one program::

    zygote (preloaded heavy packages, never runs untrusted code)
      └─ monitor      fork; unshares PID, mount, IPC and network namespaces; trusted
           └─ runner  fork; PID 1 of the new namespaces; mounts a fresh /proc, /tmp and
                      /dev/shm, brings up its loopback, sets rlimits, drops to an
                      unprivileged uid (or drops all capabilities), installs the seccomp
                      filter, then executes ``code + test_code`` and runs the tests

(One clone() replaces the monitor where it can: see _clone_fork.) When the runner exits,
or is killed for time, the kernel kills every process left in its PID namespace
(double-forked daemons included), and the per-program tmpfs mounts, SysV IPC objects,
sockets and ports disappear with the other namespaces.

Protocol with the host on the zygote's original stdin/stdout: frames of a 4-byte
big-endian length followed by UTF-8 JSON.  The first frame the zygote sends is a hello
(what it preloaded); then one reply per request.
"""

import __future__

import _queue
import _thread
import abc
import array
import atexit
import builtins as _builtins
import collections
import ctypes
import gc
import importlib
import importlib.util
import itertools
import json
import json.encoder
import linecache as _linecache
import operator
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import time
import traceback
import types
import unittest
import unittest.async_case  # noqa: F401  (resolves unittest.IsolatedAsyncioTestCase)
import unittest.mock  # noqa: F401  (tests use it: imported once, in the zygote)
import warnings

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


# --------------------------------------------------------------------------- isolation


def _load_isolation():
    """The language-neutral setup of a program's process (``_isolation.py``, next to this file)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_isolation.py")
    spec = importlib.util.spec_from_file_location("unitcoder_isolation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_isolation = _load_isolation()


# --------------------------------------------------------------------------- settings

CONFIG = {}  # the worker's settings (argv[1]); set by main()
MAX_RESULT_BYTES = 4 * 1024 * 1024
SETUP_DONE = b"S"  # first byte on the result channel: the runner finished its setup
NONCE_CHARS = 64  # 32 random bytes in hex, sent by the zygote to the runner after the fork
PROGRAM_FILE = "program.py"  # the name the program's code and tests are compiled under
OUTCOMES = ("pass", "fail", "error", "oom", "skip")
RESULT_KEYS = ("load_error", "load_error_kind", "records", "started", "tamper")
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: classes made by Python code (mutable); built-in types are not
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag
del _feature

# Set by main() in the zygote, before any program exists (see _zygote_state).
PRELOADED, PRELOAD_FAILED = [], {}
_MACHINERY = ((), (), None, None), ()  # (its guard (see _guard), (name, module, type) of the guarded modules)
_TRUSTED_ROOTS = ()
_GADGETS = frozenset()

# --------------------------------------------------------------------------- preload


def _preload(names):
    """Import the preload set once, in the zygote; return (preloaded, failures)."""
    preloaded, failed = [], {}
    for name in names:
        try:
            __import__(name)
            preloaded.append(name)
        except BaseException as exc:  # a broken optional package must not stop the zygote
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    if "matplotlib.pyplot" in preloaded:
        try:  # load the Agg backend now rather than in every program's first figure
            sys.modules["matplotlib.pyplot"].switch_backend("Agg")
        except BaseException as exc:
            failed["matplotlib Agg backend"] = f"{type(exc).__name__}: {exc}"[:300]
    return preloaded, failed


# --------------------------------------------------------------------------- the Python runner
#
# The runner is one process (PID 1 of the program's namespaces) with two threads:
#
#   main thread    runs the program, on request, in one trusted step (_step_program):
#                  it executes the code and the tests' module, runs each test (setUp, the
#                  method, tearDown, cleanups) and compares the machinery with its
#                  baselines (identities and raw memory: no code of the program's runs
#                  there). Its only state is immutable locals. Its loop is a C iterator,
#                  map(results.put, map(step, iter(requests.get, None))): no Python frame
#                  names the queues, so nothing on this thread can report a result; the
#                  step's value reaches the driver only if the step returned.
#   driver thread  holds the nonce, asks for the run, encodes and writes the
#                  nonce-framed result and ends the process. It calls no code of the
#                  program's; no frame, object or module the program can reach leads to it.
#
# A test passes only when its step saw the test method return normally (and setUp,
# tearDown and the cleanups too); skips, expected failures and unittest's internal
# exceptions never pass. What the steps and the driver use after the program starts is
# bound in default arguments: the program can rebind this module's globals and builtins.
# An audit hook, installed before the program's code runs, refuses what would reach the
# driver or rewrite the runner, and frame access by the program's own code.


# ---- memory probes: has a guarded namespace changed, without touching its objects?
#
# Every program is a fresh fork of the zygote: reading an object's fields from Python
# (iterating a dict, taking a value) writes to the objects' reference counts, which copies
# their pages into the program, hundreds of pages for the guarded machinery. A probe reads
# raw memory instead (reading copies nothing): CPython's version tag of a dict, bumped on
# every change to it; a class's tp_mro pointer; a closure cell's content pointer; an
# object's type pointer. Only an entry whose probe moved is compared object by object.
# The layout is verified at start-up on objects of our own (_probe_layout); where it does
# not hold, every entry is compared in full (slower, as safe).

_PROBE_LAYOUT = None  # {"version": offset, "mro": offset, "cell": offset, "type": offset}, or None


def _probe_layout():
    """This interpreter's offsets of the fields the probes read, verified; None if unsure."""
    word = ctypes.sizeof(ctypes.c_void_p)

    def read(obj, offset, kind=ctypes.c_void_p):
        return kind.from_address(id(obj) + offset).value

    try:
        layout = {"type": word, "cell": 2 * word, "version": 3 * word}
        probe = {}
        ok = read(probe, layout["type"]) == id(dict)
        before = read(probe, layout["version"], ctypes.c_uint64)
        probe["key"] = 1
        after = read(probe, layout["version"], ctypes.c_uint64)
        ok = ok and after != before and read(probe, layout["version"], ctypes.c_uint64) == after
        probe["key"] = 2
        ok = ok and read(probe, layout["version"], ctypes.c_uint64) != after

        def holder(value):
            return lambda: value

        cell = holder(probe).__closure__[0]
        ok = ok and read(cell, layout["cell"]) == id(probe)

        class First:
            pass

        class Second(First):
            pass

        namespace = gc.get_referents(First.__dict__)[0]
        stamp = read(namespace, layout["version"], ctypes.c_uint64)
        First.attribute = 1
        ok = ok and type(namespace) is dict and read(namespace, layout["version"], ctypes.c_uint64) != stamp
        for offset in range(2 * word, type.__basicsize__, word):  # within the type object
            if read(First, offset) == id(First.__mro__) and read(Second, offset) == id(Second.__mro__):
                layout["mro"] = offset
                break
        return layout if ok and "mro" in layout else None
    except Exception:
        return None


def _probe(obj, field):
    """(the address of ``obj``'s ``field``, the word there now), or None without a verified layout."""
    if _PROBE_LAYOUT is None:
        return None
    if field == "version" and type(obj) is types.MappingProxyType:
        obj = gc.get_referents(obj)[0]  # the class's own dict
    address = id(obj) + _PROBE_LAYOUT[field]
    return (address, ctypes.c_uint64.from_address(address).value)


def _guard(entries, cells):
    """A guard: ``(entries, cells, addresses, words)``, the probes of the entries, then of
    the cells, in two flat arrays (0: no probe), so that checking them touches no object."""
    addresses, words = array.array("Q"), array.array("Q")
    for probe in [entry[6] for entry in entries] + [cell[2] for cell in cells]:
        addresses.append(probe[0] if probe else 0)
        words.append(probe[1] if probe else 0)
    return (tuple(entries), tuple(cells), addresses, words)


def _plain(value):
    """Data that library code caches lazily (None, numbers, strings): not guarded in libraries."""
    return value is None or type(value) in (bool, int, float, complex, str, bytes)


def _namespace_entry(label, mapping, exact, relaxed):
    """A baseline entry ``(label, mapping, keys, values, kind, mask, probe)``.

    ``mapping`` is the live namespace (a module's dict, a class's mappingproxy); ``keys``
    and ``values`` are what it held, in order. An exact entry (a class) must keep exactly
    these keys (but for ``__slotnames__``, which ``copy`` caches); a module may gain keys (``import scipy.stats`` adds ``stats``), but what it
    had must stay, in order. ``mask`` (relaxed entries) marks values that may change:
    those that were None or plain data, which libraries fill in lazily (for ``sys``,
    anything but a function: ``sys.stdout``, ``sys.argv``).

    Other entries: ``(label, class, its __mro__, None, "mro", None, probe)``
    (``__bases__`` reassigned) and ``(label, module, its type, None, "type", None, probe)``
    (``__class__`` reassigned to a module subclass). ``probe``: see _probe.
    """
    keys, values = tuple(mapping), tuple(mapping.values())
    mask = None
    if relaxed:
        loose = _plain if label != "sys" else (lambda v: _plain(v) or not callable(v))
        mask = tuple(loose(v) for v in values)
    return (label, mapping, keys, values, "exact" if exact else "prefix", mask, _probe(mapping, "version"))


def _closure_cells(value):
    """(cell, contents, probe) of a function's closure (through classmethod/staticmethod/property)."""
    funcs = [value]
    if isinstance(value, (classmethod, staticmethod)):
        funcs = [value.__func__]
    elif isinstance(value, property):
        funcs = [value.fget, value.fset, value.fdel]
    cells = []
    for func in funcs:
        if not isinstance(func, types.FunctionType):
            continue
        for cell in func.__closure__ or ():
            try:
                cells.append((cell, cell.cell_contents, _probe(cell, "cell")))
            except ValueError:  # an empty cell
                pass
    return cells


def _class_entries(cls, relaxed, stop=()):
    """Exact entries of a class and of the Python classes it derives from (not ``stop``)."""
    entries, cells = [], []
    for klass in cls.__mro__:
        if klass.__flags__ & _HEAPTYPE and klass not in stop:
            proxy = klass.__dict__
            entries.append(_namespace_entry(f"{klass.__module__}.{klass.__qualname__}", proxy, True, relaxed))
            label = f"{klass.__module__}.{klass.__qualname__}.__mro__"
            entries.append((label, klass, klass.__mro__, None, "mro", None, _probe(klass, "mro")))
            for value in proxy.values():
                cells += _closure_cells(value)
    return entries, cells


def _module_entries(name, module, classes, relaxed):
    """Entries of a module's namespace, with the classes it defines (``classes``; ``relaxed``
    or not) and the closures of its functions. A module's own None or plain values may
    change (``unittest.mock.file_spec`` is filled in by the first ``mock_open``)."""
    entries = [_namespace_entry(name, module.__dict__, False, True)]
    cells = []
    for value in tuple(module.__dict__.values()):
        if isinstance(value, types.FunctionType):
            cells += _closure_cells(value)
        elif (
            classes
            and isinstance(value, type)
            and value.__flags__ & _HEAPTYPE
            and value.__module__ == name
            and type(value) in (type, abc.ABCMeta)
        ):
            more, more_cells = _class_entries(value, relaxed, stop=(object,))
            entries += more[:2]  # the class and its __mro__; its bases are entries of their own modules
            cells += more_cells
    return entries, cells


def _machinery_baseline():
    """The test machinery as the zygote has it, before any program exists.

    builtins, every ``unittest.*`` module and ``contextlib``, with every class defined in
    them (``TestCase``, ``_Outcome``, ``_GeneratorContextManager``, the loader,
    ``mock``'s classes ...) and the closures of their functions, and the type of each
    module. Returns (guard, modules): see _guard; ``modules`` is ``(name, module, type)``
    of each guarded module (its ``sys.modules`` entry must stay).
    """
    entries, cells = _module_entries("builtins", _builtins, False, True)
    modules = [("builtins", _builtins, type(_builtins))]
    for name in sorted(sys.modules):
        module = sys.modules[name]
        if (name == "unittest" or name.startswith("unittest.") or name == "contextlib") and isinstance(
            module, types.ModuleType
        ):
            more, more_cells = _module_entries(name, module, True, False)
            entries += more
            cells += more_cells
            modules.append((name, module, type(module)))
    types_of = [
        (f"type of {name}", module, kind, None, "type", None, _probe(module, "type")) for name, module, kind in modules
    ]
    return _guard(entries + types_of, cells), tuple(modules)


def _trusted_roots():
    """Where trusted code lives inside the sandbox: the read-only Python installation, this file."""
    roots = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.abspath(__file__)),
    }
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    roots = {os.path.normpath(p) for p in roots}
    roots = {
        p for p in roots if p not in ("/", "/tmp", "/dev/shm", "/proc") and not p.startswith(("/tmp/", "/dev/shm/"))
    }
    return tuple(sorted(p.rstrip("/") + "/" for p in roots)) + ("<frozen ",)


def _frame_gadgets():
    """Code of library functions that just hand frames (or compiled code) to their caller."""
    import importlib._bootstrap as boot
    import importlib._bootstrap_external as ext
    import inspect
    import logging

    funcs = [
        inspect.currentframe,
        inspect.stack,
        inspect.trace,
        inspect.getouterframes,
        inspect.getinnerframes,
        traceback.walk_stack,
        traceback.walk_tb,
        getattr(traceback, "_walk_tb_with_full_positions", None),
        traceback.StackSummary.extract,
        getattr(traceback.StackSummary, "_extract_from_extended_frame_gen", None),
        logging.currentframe,
        boot._call_with_frames_removed,
        ext.SourceLoader.source_to_code,
        ext._compile_bytecode,
    ]
    try:
        from asyncio import base_tasks

        funcs.append(base_tasks._task_get_stack)
    except (ImportError, AttributeError):
        pass
    funcs += [ctypes.CDLL.__getattr__, ctypes.CDLL.__getitem__]  # ctypes.pythonapi.X: the asker is X's caller
    codes = set()
    for func in funcs:
        func = getattr(func, "__func__", func)
        if isinstance(func, types.FunctionType):
            codes.add(func.__code__)
    return frozenset(codes)


def _zygote_state():
    """Everything the runners share, computed once in the zygote before any program exists."""
    global _MACHINERY, _TRUSTED_ROOTS, _GADGETS, _PROBE_LAYOUT
    _PROBE_LAYOUT = _probe_layout()
    _MACHINERY = _machinery_baseline()
    _TRUSTED_ROOTS = _trusted_roots()
    _GADGETS = _frame_gadgets()


def _make_audit_hook(
    trusted_roots,
    test_code_ids,
    gadgets,
    measured=None,
    _getframe=sys._getframe,
    _get_ident=_thread.get_ident,
    _startswith=str.startswith,
    _endswith=str.endswith,
    _type=type,
    _str=str,
    _bytes=bytes,
    _int=int,
    _id=id,
    _len=len,
    _lstat=os.lstat,
    _readlink=os.readlink,
    _getcwd=os.getcwd,
    _decode=bytes.decode,
    _split=str.split,
    _join="/".join,
    _OSError=OSError,
    _RuntimeError=RuntimeError,
    _Exception=Exception,
    _FunctionType=types.FunctionType,
    _CodeType=types.CodeType,
    _set=set,
    _frozenset=frozenset,
    _issubclass=issubclass,
    _bytearray=bytearray,
    _memoryview=memoryview,
    _tobytes=memoryview.tobytes,
    _str_eq=str.__eq__,
    _bytes_in=bytes.__contains__,
    _bytearray_in=bytearray.__contains__,
):
    """The runner's audit hook (``sys.addaudithook``), installed before the program's code runs.

    Refused outright, on any thread: gc walks (they find the driver's objects), other
    threads' frames (the driver's), tracing, profiling and monitoring (they rewrite
    running code), new audit hooks (they would run on the driver's thread), and opening
    /proc/*/mem. Refused when the program's own code asks (code that is neither the
    installation's nor the tests'), directly or through a library function that only
    hands things over (``inspect.currentframe``, ``traceback.walk_stack``,
    ``ctypes.pythonapi.X`` ...): frames (``sys._getframe``, ``tb_frame``, ``gi_frame``
    ...), C API functions through ``ctypes.pythonapi`` (raw memory stays open to ctypes),
    rewriting the code or defaults of functions that are not its own, ``marshal.loads``,
    and compiling or making code that claims an installation file name. Libraries that
    do these things for their own purpose (logging, warnings, pandas, ``namedtuple``,
    ``typing``, dill's ``pythonapi``, networkx's decorators) are unaffected: the request
    comes from their own code.

    With ``measured`` (``(flag, ids of the runner's own code objects, the program's file
    name)``, when coverage is measured) it also watches, never refuses, what makes or runs
    code under the program's file name: ``compile`` and ``code.__new__`` (``code.replace``)
    with that name, ``exec`` of a code object with it that is not the runner's, and
    ``marshal`` loads of bytes that hold it as a marshalled string (or any ``marshal.load``,
    whose bytes it cannot see). The measurement attributes lines by file name, so such code could pass for the
    program's: it sets ``flag[0]``, and the program's coverage is reported empty.

    Everything it uses is bound here (the program can rebind globals and builtins).
    """
    always = _frozenset(
        {
            "gc.get_objects",
            "gc.get_referrers",
            "gc.get_referents",
            "sys._current_frames",
            "sys._current_exceptions",
            "sys.settrace",
            "sys.setprofile",
            "sys.addaudithook",
            "sys.monitoring.register_callback",
        }
    )
    frame_attrs = _frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
    function_attrs = _frozenset({"__code__", "__defaults__", "__kwdefaults__"})
    asked = _frozenset({"sys._getframe", "object.__getattr__", "object.__setattr__", "open", "ctypes.dlsym"})
    asked |= _frozenset({"ctypes.dlsym/handle"})
    asked |= _frozenset({"compile", "code.__new__", "marshal.loads"})
    observed = _frozenset()
    if measured is not None:
        flag, own_codes, program_file = measured
        name = program_file.encode("utf-8")
        # the name as marshal writes a string: its length (1 byte, short form; else 4) then its bytes
        marshalled = (len(name).to_bytes(1, "little") + name, len(name).to_bytes(4, "little") + name)
        observed = _frozenset({"compile", "code.__new__", "exec", "marshal.loads", "marshal.load"})
    watched = always | asked | observed
    # Threads inside this hook: its own lookups (frames, __code__) raise events too, and
    # are let through. So the hook runs no code the program could have replaced: only C
    # functions bound here, and methods of built-in types.
    busy = _set()

    def resolve(path):
        """The real path of an absolute ``path`` (symbolic links followed), as far as it exists."""
        parts, done, links = [p for p in _split(path, "/") if p and p != "."], [], 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            try:
                mode = _lstat("/" + _join(done + [part])).st_mode
            except _OSError:
                done.append(part)
                continue
            if mode & 0o170000 != 0o120000:  # not a symbolic link
                done.append(part)
                continue
            links += 1
            if links > 40:
                raise _OSError("too many symbolic links")
            target = _readlink("/" + _join(done + [part]))
            if _startswith(target, "/"):
                done = []
            parts = [p for p in _split(target, "/") if p and p != "."] + parts
        return "/" + _join(done)

    def trusted(code):
        name = code.co_filename
        return _id(code) in test_code_ids or (_type(name) is _str and _startswith(name, trusted_roots))

    def program_named(event, args):
        """Whether the event makes or runs code under the program's file name (see above)."""
        if event == "exec":
            code = args[0]
            return (
                _type(code) is _CodeType
                and _id(code) not in own_codes
                and _str_eq(code.co_filename, program_file) is True
            )
        if event == "marshal.load":
            return True
        if event == "marshal.loads":
            data = args[0]
            if _type(data) is _memoryview:
                data = _tobytes(data)
            if _issubclass(_type(data), _bytes):
                return _bytes_in(data, marshalled[0]) or _bytes_in(data, marshalled[1])
            if _issubclass(_type(data), _bytearray):
                return _bytearray_in(data, marshalled[0]) or _bytearray_in(data, marshalled[1])
            return True  # bytes it cannot look into
        name = args[1]  # compile, code.__new__: the file name
        if _issubclass(_type(name), _bytes):
            name = _decode(name, "utf-8", "surrogateescape")
        return _issubclass(_type(name), _str) and _str_eq(name, program_file) is True

    def program_asks():
        """Whether the program's code is behind the event: its own, or through a gadget."""
        frame = _getframe(2)  # 0: this function, 1: the hook, 2: whatever raised the event
        while frame is not None and frame.f_code in gadgets:
            frame = frame.f_back
        return frame is not None and not trusted(frame.f_code)

    def hook(event, args):
        if event not in watched:
            return
        me = _get_ident()
        if me in busy:
            return
        busy.add(me)
        try:
            if event in observed and not flag[0]:
                try:
                    if program_named(event, args):
                        flag[0] = 1
                except _Exception:
                    flag[0] = 1  # cannot tell: not trusted
            refused = ""
            if event in always:
                refused = event
            elif event == "object.__getattr__":
                if args[1] in frame_attrs and program_asks():
                    refused = f"access to {args[1]}"
            elif event == "sys._getframe":
                if program_asks():
                    refused = event
            elif event == "object.__setattr__":
                target = args[0]
                if (
                    args[1] in function_attrs
                    and _type(target) is _FunctionType
                    and trusted(target.__code__)
                    and program_asks()
                ):
                    refused = f"rewriting {args[1]} of a function that is not the program's"
            elif event == "open":
                path = args[0]  # a str or bytes (an os.PathLike of the program's own: not followed)
                if _type(path) is _bytes:
                    path = _decode(path, "utf-8", "surrogateescape")
                if _type(path) is _str:
                    try:
                        if not _startswith(path, "/"):
                            path = _getcwd() + "/" + path
                        if "/." in path or not _startswith(path, trusted_roots):
                            path = resolve(path)
                            if _startswith(path, "/proc/") and _endswith(path, "/mem"):
                                refused = "opening process memory"
                    except _Exception:
                        refused = "opening a path it cannot resolve"
            elif event == "ctypes.dlsym" or event == "ctypes.dlsym/handle":
                if _type(args[1]) is _str and _startswith(args[1], ("Py", "_Py")) and program_asks():
                    refused = "the Python C API through ctypes"
            elif event == "compile" or event == "code.__new__":
                name = args[1]
                if _type(name) is _bytes:
                    name = _decode(name, "utf-8", "surrogateescape")
                if _type(name) is _str and _startswith(name, trusted_roots) and program_asks():
                    refused = "code under an installation file name"
            elif event == "marshal.loads":
                if program_asks():
                    refused = event
        finally:
            busy.discard(me)
        if refused:
            raise _RuntimeError(f"the sandbox refuses {refused} to the program")

    return hook


# ---- steps: run on the main thread (the program's); immutable locals, no globals
#
# ``ctx`` (built by _run_program): 0 code, 1 tests' module code, 2 namespace, 3 ids of the
# tests' code objects, 4 trusted roots, 5 the real builtins dict, 6 test class names,
# 7 trace_chars, 8 the builtins module, 9 sys.modules, 10 guarded (name, module, type),
# 11 the coverage measurement (see _start_measuring) or None.


def _format_error(
    exc,
    limit,
    failure,
    _type=type,
    _str=str,
    _len=len,
    _format_exception=traceback.format_exception,
    _join="".join,
    _zygote=__file__,
    _BaseException=BaseException,
):
    """A failing part's traceback as unittest shows it: from the tests' frames on."""
    try:
        tb = exc.__traceback__
        # The runner's frames and unittest's own (marked __unittest) are not the program's.
        while tb is not None and (tb.tb_frame.f_code.co_filename == _zygote or "__unittest" in tb.tb_frame.f_globals):
            tb = tb.tb_next
        if failure:  # nor are the assert*() frames at the end
            previous, walk = None, tb
            while walk is not None and "__unittest" not in walk.tb_frame.f_globals:
                previous, walk = walk, walk.tb_next
            if previous is not None and walk is not None:
                previous.tb_next = None
        text = _join(_format_exception(_type(exc), exc, tb))
        if _type(text) is not _str:
            text = "<traceback unavailable>"
    except _BaseException:
        text = "<traceback unavailable>"
    if _len(text) > limit:
        text = text[:limit] + "\n... [traceback truncated]"
    return text


def _classify(
    exc,
    failure_exception,
    _isinstance=isinstance,
    _MemoryError=MemoryError,
    _SkipTest=unittest.SkipTest,
    _BaseException=BaseException,
):
    """The outcome of an exception a test part raised."""
    try:
        if _isinstance(exc, _SkipTest):
            return "skip"
        if _isinstance(exc, _MemoryError):
            return "oom"
        if _isinstance(exc, failure_exception):
            return "fail"
    except _BaseException:
        pass
    return "error"


def _step_load(
    ctx,
    which,
    _exec=exec,
    _isinstance=isinstance,
    _MemoryError=MemoryError,
    _BaseException=BaseException,
    _format_error=_format_error,
):
    """Execute the code (``which`` 0) or the tests' module (1) in the program's namespace."""
    try:
        _exec(ctx[which], ctx[2])
        return ("ok", "")
    except _BaseException as exc:  # SystemExit and KeyboardInterrupt included: the module failed to load
        return ("oom" if _isinstance(exc, _MemoryError) else "error", _format_error(exc, 1 << 30, False))


def _genuine(
    func,
    ctx,
    _type=type,
    _id=id,
    _str=str,
    _getattr=getattr,
    _startswith=str.startswith,
    _range=range,
    _FunctionType=types.FunctionType,
    _BaseException=BaseException,
):
    """The closure cells of ``func`` if it is a function of the tests' code in the program's
    namespace (through library decorators such as ``mock.patch``, which keep the original
    as ``__wrapped__``), else None."""
    cells = ()
    try:
        for _ in _range(8):
            if _type(func) is not _FunctionType:
                return None
            for cell in func.__closure__ or ():
                cells += ((cell, cell.cell_contents),)
            code = func.__code__
            if _id(code) in ctx[3]:
                return cells if func.__globals__ is ctx[2] and func.__builtins__ is ctx[5] else None
            if not (_type(code.co_filename) is _str and _startswith(code.co_filename, ctx[4])):
                return None
            func = _getattr(func, "__wrapped__", None)
    except _BaseException:
        pass
    return None


# The event loop of an IsolatedAsyncioTestCase (a "runner" since Python 3.11, a "loop" before).
_ASYNC_CASE = unittest.IsolatedAsyncioTestCase
if hasattr(_ASYNC_CASE, "_setupAsyncioRunner"):
    _ASYNC_RUNNER_UP, _ASYNC_RUNNER_DOWN = _ASYNC_CASE._setupAsyncioRunner, _ASYNC_CASE._tearDownAsyncioRunner
else:
    _ASYNC_RUNNER_UP, _ASYNC_RUNNER_DOWN = _ASYNC_CASE._setupAsyncioLoop, _ASYNC_CASE._tearDownAsyncioLoop

# What a test case's own attributes may not shadow or replace: the test machinery (but for
# the two settings tests set on themselves).
_TESTCASE_NAMES = frozenset(
    set(dir(unittest.IsolatedAsyncioTestCase)) | {"_type_equality_funcs", "_cleanups", "_outcome"}
) - {"maxDiff", "longMessage"}


def _class_guard(
    cls,
    tests,
    _type=type,
    _str=str,
    _frozenset=frozenset,
    _mro=type.__dict__["__mro__"].__get__,
    _class_dict=type.__dict__["__dict__"].__get__,
    _stop=(unittest.TestCase, unittest.IsolatedAsyncioTestCase, object),
    _names=_TESTCASE_NAMES,
):
    """What of a test class must stay while its tests run: its ``__mro__``, and in it and
    its bases (up to ``TestCase``, which the machinery baseline covers) the dunders, the
    test methods and anything named like the test case's machinery, with no new ones.
    Data attributes (what ``setUpClass`` sets on ``cls``) may change."""
    mro = _mro(cls)
    kept, known = (), ()
    for klass in mro:
        if klass in _stop:
            break
        namespace = _class_dict(klass)
        known += ((namespace, _frozenset(namespace)),)
        for key, value in namespace.items():
            if _type(key) is _str and (key in _names or key in tests or (key[:2] == "__" and key[-2:] == "__")):
                kept += ((namespace, key, value),)
    return (cls, mro, kept, known)


_MISSING = object()
# What Python itself adds to a class on use: ``copy`` caches __slotnames__, and reading
# __annotations__ of a class that has none stores an empty dict. Neither changes behaviour.
_CACHED_NAMES = frozenset({"__slotnames__", "__annotations__"})


def _class_guard_holds(
    guard,
    _type=type,
    _str=str,
    _mro=type.__dict__["__mro__"].__get__,
    _names=_TESTCASE_NAMES,
    _cached=_CACHED_NAMES,
    _missing=_MISSING,
):
    """Whether a test class still is as _class_guard saw it."""
    cls, mro, kept, known = guard
    if _mro(cls) is not mro:
        return False
    for namespace, key, value in kept:
        if namespace.get(key, _missing) is not value:
            return False
    for namespace, keys in known:
        for key in namespace:
            if key in keys or (_type(key) is _str and key in _cached):
                continue
            if _type(key) is not _str or key in _names or (key[:2] == "__" and key[-2:] == "__"):
                return False
    return True


def _step_collect(
    ctx,
    _type=type,
    _isinstance=isinstance,
    _issubclass=issubclass,
    _tuple=tuple,
    _hasattr=hasattr,
    _str=str,
    _mro=type.__dict__["__mro__"].__get__,
    _class_dict=type.__dict__["__dict__"].__get__,
    _BaseException=BaseException,
    _TypeError=TypeError,
    _staticmethod=staticmethod,
    _classmethod=classmethod,
    _TestCase=unittest.TestCase,
    _TestLoader=unittest.TestLoader,
    _names=unittest.TestLoader.getTestCaseNames,
    _genuine=_genuine,
    _class_guard=_class_guard,
    _format_error=_format_error,
):
    """After the tests' module loaded: the test classes and their test methods, verified.

    Returns ``(classes, records, tamper)``, ``classes`` as ``(name, class, ((test name,
    function, closure cells), ...), guard)``. A test method must be a function of the
    tests' code: a ``__build_class__`` hook, or a class or method the code swapped in,
    shows here. ``guard`` (see _class_guard) is checked before each test.
    """
    classes, records, tamper = (), (), ()
    if ctx[2].get("__builtins__") is not ctx[8]:  # the tests' functions would run with the program's builtins
        return (classes, records, ("builtins.__builtins__ (the program's module has builtins of its own)",))
    for name in ctx[6]:
        try:
            cls = ctx[2].get(name)
            if not (_isinstance(cls, _type) and _issubclass(cls, _TestCase)):
                records += ((name, "error", f"test class {name} is not a unittest.TestCase after loading"),)
                continue
            tests = _tuple(_names(_TestLoader(), cls))
            if not tests and _hasattr(cls, "runTest"):
                tests = ("runTest",)
            methods = ()
            for test in tests:
                if _type(test) is not _str:
                    raise _TypeError("a test name is not a string")
                func = None
                for klass in _mro(cls):
                    namespace = _class_dict(klass)
                    if test in namespace:
                        func = namespace[test]
                        break
                if _type(func) is _staticmethod or _type(func) is _classmethod:
                    func = func.__func__
                cells = _genuine(func, ctx)
                if cells is None:
                    tamper += (f"program.{name}.{test} (not the tests' own method)",)
                methods += ((test, func, cells or ()),)
            classes += ((name, cls, methods, _class_guard(cls, tests)),)
        except _BaseException as exc:
            records += ((f"program.{name}", "error", _format_error(exc, ctx[7], False)),)
    return (classes, records, tamper)


def _step_class(
    ctx,
    cls,
    label,
    setup,
    _getattr=getattr,
    _BaseException=BaseException,
    _format_error=_format_error,
):
    """``setUpClass`` (``setup``) or ``tearDownClass`` and the class cleanups: (records, ok)."""
    records, ok = (), False
    try:
        if _getattr(cls, "__unittest_skip__", False):
            return ((), True)
        if setup:
            cls.setUpClass()
        else:
            cls.tearDownClass()
        ok = True
    except _BaseException as exc:
        part = "setUpClass" if setup else "tearDownClass"
        records += ((f"{part} ({label})", "error", _format_error(exc, ctx[7], False)),)
    if not (ok and setup):  # class cleanups: after tearDownClass, or when setUpClass failed
        try:
            cleanups = cls._class_cleanups
            while cleanups:
                function, args, kwargs = cleanups.pop()
                try:
                    function(*args, **kwargs)
                except _BaseException as exc:
                    records += ((f"doClassCleanups ({label})", "error", _format_error(exc, ctx[7], False)),)
        except _BaseException as exc:
            records += ((f"doClassCleanups ({label})", "error", _format_error(exc, ctx[7], False)),)
    return (records, ok)


def _instance_state(test, _vars=vars, _tuple=tuple, _type=type, _dict=dict, _BaseException=BaseException):
    """The test case's attributes, as (name, value) pairs, and its type-equality table."""
    items = _tuple(_vars(test).items())
    table = ()
    for key, value in items:
        if key == "_type_equality_funcs" and _type(value) is _dict:
            table = _tuple(value.items())
    return items, table


def _shadowing(before, after, protected, _type=type, _str=str, _tuple=tuple):
    """Names of the test case's attributes that the run added or replaced among ``protected``."""
    kept = {}
    for key, value in before[0]:
        kept[key] = value
    changed = ()
    for key, value in after[0]:
        if _type(key) is not _str:
            changed += ("<an attribute name that is not a string>",)
        elif key in protected and (key not in kept or kept[key] is not value):
            changed += (key,)
    if after[1] != before[1]:
        changed += ("_type_equality_funcs",)
    return changed


def _step_test(
    ctx,
    cls,
    test_name,
    func,
    cells,
    guard,
    label,
    _type=type,
    _getattr=getattr,
    _issubclass=issubclass,
    _MethodType=types.MethodType,
    _BaseException=BaseException,
    _join=", ".join,
    _AsyncCase=unittest.IsolatedAsyncioTestCase,
    _calls=(
        (
            unittest.TestCase._callSetUp,
            unittest.TestCase._callTestMethod,
            unittest.TestCase._callTearDown,
            unittest.TestCase._callCleanup,
            None,
            None,
        ),
        (
            unittest.IsolatedAsyncioTestCase._callSetUp,
            unittest.IsolatedAsyncioTestCase._callTestMethod,
            unittest.IsolatedAsyncioTestCase._callTearDown,
            unittest.IsolatedAsyncioTestCase._callCleanup,
            _ASYNC_RUNNER_UP,
            _ASYNC_RUNNER_DOWN,
        ),
    ),
    _protected=_TESTCASE_NAMES,
    _instance_state=_instance_state,
    _shadowing=_shadowing,
    _class_guard_holds=_class_guard_holds,
    _format_error=_format_error,
    _classify=_classify,
):
    """One test: instantiate, setUp, the method, tearDown, cleanups; returns its record.

    ``pass`` only if this function saw the method return normally, and setUp, tearDown
    and every cleanup too; the test is neither skipped nor an expected failure; and the
    method is still the tests' own and the test case's machinery is not shadowed. What it
    knows lives in immutable locals, which the program cannot rebind.
    """
    limit = ctx[7]
    outcome = trace = ""
    try:
        for cell, contents in cells:
            if cell.cell_contents is not contents:
                return (label, "tamper", f"{label} (its decorator was changed)")
        if not _class_guard_holds(guard):
            return (label, "tamper", f"{label} (its test class was changed)")
        test = cls(test_name)
        is_async = _issubclass(cls, _AsyncCase)
        set_up, call_method, tear_down, call_cleanup, runner_up, runner_down = _calls[1 if is_async else 0]
        method = _getattr(test, test_name)
        bound = _type(method) is _MethodType and method.__func__ is func
        if not ((bound and (method.__self__ is test or method.__self__ is cls)) or method is func):
            return (label, "tamper", f"{label} (the test method is not the tests' own)")
        if _getattr(cls, "__unittest_skip__", False) or _getattr(method, "__unittest_skip__", False):
            why = _getattr(method, "__unittest_skip_why__", "") or _getattr(cls, "__unittest_skip_why__", "")
            return (label, "skip", f"skipped: {why}"[:limit])
        expecting = _getattr(method, "__unittest_expecting_failure__", False) or _getattr(
            test, "__unittest_expecting_failure__", False
        )
        failure = test.failureException
        before = _instance_state(test)
    except _BaseException as exc:
        return (label, "error", _format_error(exc, limit, False))
    returned = set_up_ok = tear_down_ok = cleanups_ok = False
    if is_async:
        try:
            runner_up(test)
        except _BaseException as exc:
            outcome, trace = "error", _format_error(exc, limit, False)
    if not outcome:
        try:
            set_up(test)
            set_up_ok = True
        except _BaseException as exc:
            outcome, trace = _classify(exc, failure), _format_error(exc, limit, False)
    if set_up_ok:
        try:
            before = _instance_state(test)  # what setUp prepared is the tests' doing
        except _BaseException as exc:
            outcome, trace = "error", _format_error(exc, limit, False)
        if not outcome:
            try:
                call_method(test, method)
                returned = True
            except _BaseException as exc:
                outcome, trace = _classify(exc, failure), _format_error(exc, limit, True)
        try:
            tear_down(test)
            tear_down_ok = True
        except _BaseException as exc:
            if not outcome:
                outcome, trace = _classify(exc, failure), _format_error(exc, limit, False)
    try:
        cleanups = test._cleanups
        cleanups_ok = True
        while cleanups:
            function, args, kwargs = cleanups.pop()
            try:
                call_cleanup(test, function, *args, **kwargs)
            except _BaseException as exc:
                cleanups_ok = False
                if not outcome:
                    outcome, trace = _classify(exc, failure), _format_error(exc, limit, False)
    except _BaseException as exc:
        cleanups_ok = False
        if not outcome:
            outcome, trace = "error", _format_error(exc, limit, False)
    if is_async:
        try:
            runner_down(test)
        except _BaseException as exc:
            cleanups_ok = False
            if not outcome:
                outcome, trace = "error", _format_error(exc, limit, False)
    try:
        changed = _shadowing(before, _instance_state(test), _protected)
        if _type(test) is not cls:
            changed += ("__class__",)
    except _BaseException:
        changed = ("<its attributes>",)
    if changed:
        return (label, "tamper", f"{label} (the run changed the test case's {_join(changed)})")
    if expecting:
        if returned:
            return (label, "fail", "unexpected success of a test marked expectedFailure")
        return (label, "fail", "a test marked expectedFailure never counts as passed\n" + trace)
    if returned and set_up_ok and tear_down_ok and cleanups_ok and not outcome:
        return (label, "pass", "")
    if not outcome:
        outcome, trace = "error", "the test did not complete"
    return (label, outcome, trace)


def _step_check(ctx, _BaseException=BaseException):
    """The end of the run, from the program's side: its module's builtins, ``sys.modules``."""
    tamper = ()
    try:
        if ctx[2].get("__builtins__") is not ctx[8]:
            tamper += ("builtins.__builtins__ (the program's module has builtins of its own)",)
        for name, module, _ in ctx[10]:
            if ctx[9].get(name) is not module:
                tamper += (f"sys.modules[{name!r}]",)
    except _BaseException:
        tamper += ("<the program's namespace>",)
    return tamper


# ---- checks that run no code of the program's (identities and raw memory only)


def _compare(
    guards,
    _len=len,
    _all=all,
    _map=map,
    _zip=zip,
    _enumerate=enumerate,
    _is=operator.is_,
    _or=operator.or_,
    _type=type,
    _str=str,
    _islice=itertools.islice,
    _mro=type.__dict__["__mro__"].__get__,
    _word=ctypes.c_uint64.from_address,
    _cached=_CACHED_NAMES,
    _BaseException=BaseException,
):
    """Labels of what changed since the baselines (``guards``, each made by _guard).

    Probes first (raw memory: no object is touched); an entry whose probe moved, or that
    has none, is compared by identities only, so no program code runs here either.
    """
    changed = ()
    for entries, cells, addresses, words in guards:
        count = _len(entries)
        for index, (address, word) in _enumerate(_zip(addresses, words)):
            if address and _word(address).value == word:
                continue  # untouched since the baseline
            if index >= count:
                cell, contents, _ = cells[index - count]
                try:
                    if cell.cell_contents is contents:
                        continue
                except _BaseException:
                    pass
                changed += ("<a closure of the test machinery>",)
                continue
            label, obj, keys, values, kind, mask, _ = entries[index]
            if kind == "mro":
                if _mro(obj) is not keys:
                    changed += (label,)
                continue
            if kind == "type":
                if _type(obj) is not keys:
                    changed += (label,)
                continue
            size, n = _len(obj), _len(keys)
            if size >= n and _all(_map(_is, obj, keys)):
                same = _map(_is, obj.values(), values)
                if _all(same if mask is None else _map(_or, same, mask)):
                    if size == n or kind == "prefix":
                        continue
                    if _all(_type(key) is _str and key in _cached for key in _islice(obj, n, None)):
                        continue
            name = "<added names>"
            for (key, value), base, base_value in _zip(_zip(obj, obj.values()), keys, values):
                if key is not base or value is not base_value:
                    name = base
                    break
            else:
                if size < n:
                    name = "<removed names>"
            changed += (f"{label}.{name}" if _type(name) is _str else label,)
    return changed


# ---- coverage: measured by coverage.py's C tracer, started by the runner, out of the program's reach
#
# The zygote imports coverage.py when a program first asks (``_prepare_coverage``) and sets
# up one ``Coverage`` (branch measurement of PROGRAM_FILE in the runner's directory, no
# data file); each runner then only restarts it, before the program's code exists
# (``_start_measuring``). Once the program runs, no code of coverage.py's runs: the tracer
# (C) records arcs into a dict, its file filter is replaced by ``_untraced`` (the program's
# file was decided by coverage.py itself, on an empty module compiled under its name, before
# the program existed), and the trusted step reads the dict after the tests
# (``_measured``). Nothing the program can reach leads to the measurement: the Coverage
# object and its collector are taken off coverage.py's registries, its modules off
# ``sys.modules``, the threads hook off ``threading``, and ``sys.gettrace`` (and the copy of
# sys's namespace that ``_imp.create_builtin`` restores) returns None. The audit hook
# refuses ``sys.settrace``, ``sys.setprofile`` and ``sys.monitoring`` callbacks as always,
# so the program cannot stop or replace the tracer either; and it watches for code made
# under the program's file name (see _make_audit_hook), which would pass for the program's.

WORKDIR = "/tmp/work"  # the program's working directory (``_isolation.isolate`` makes it)
_COVERAGE = None  # None: not asked yet; False: cannot measure here; else see _prepare_coverage
_ARC_MASK = (1 << 28) - 1  # coverage.py's C tracer packs an arc into one int: 28 bits a line, 2 sign bits


def _detached(func, name):
    """A copy of ``func`` with empty globals (and builtins): handed to the program, it leads
    nowhere (the original's ``__globals__`` would be this module's namespace)."""
    copy = types.FunctionType(func.__code__, {"__builtins__": {}}, name)
    copy.__qualname__ = name
    return copy


def _gettrace():
    """``sys.gettrace`` as a measured program sees it: no trace function, as without coverage."""
    return None


def _untraced(filename, frame):
    """The tracer's file filter while the program runs: no file is measured that was not
    decided on before (the program's own was), so no code of coverage.py's runs then."""
    return None


def _quiet(*args, **kwargs):
    """The tracer's warning function while the program runs: nothing on its stderr."""
    return None


def _sys_restore_dict():
    """The copy of sys's namespace that ``_imp.create_builtin`` writes back into ``sys``
    (``m_copy`` of its module definition), or None where this Python keeps none. Raises
    where what is found is not that copy (another layout: the seal would not hold)."""
    get_def = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(("PyModule_GetDef", ctypes.pythonapi))
    definition = get_def(sys)
    if not definition:
        return None
    word = ctypes.sizeof(ctypes.c_void_p)
    address = ctypes.c_void_p.from_address(definition + 4 * word).value  # head (2 words), m_init, m_index, m_copy
    if not address:
        return None
    if ctypes.c_void_p.from_address(address + word).value != id(dict):
        raise OSError("sys's module definition does not have the expected layout")
    copy = ctypes.cast(address, ctypes.py_object).value
    if copy.get("gettrace") is not sys.gettrace:
        raise OSError("sys's saved namespace does not hold sys.gettrace")
    return copy


def _prepare_coverage():
    """In the zygote, when a program first asks for coverage: import coverage.py and set up
    the measurement every runner restarts. Returns ``(coverage, its CTracer type, the
    sys.modules names it added, sys's saved namespace or None, the gettrace programs see,
    the threading module)``, or False where it cannot be (coverage.py missing, no C tracer,
    an unexpected layout): those programs are not measured."""
    global _COVERAGE
    if _COVERAGE is not None:
        return _COVERAGE
    _COVERAGE = False
    before = set(sys.modules)
    try:
        import threading

        import coverage
        from coverage.tracer import CTracer

        cov = coverage.Coverage(
            data_file=None, branch=True, include=[os.path.join(WORKDIR, PROGRAM_FILE)], config_file=False
        )
        try:
            cov.set_option("run:core", "ctrace")  # the tracer whose data _measured reads
        except Exception:
            pass  # a coverage.py without the setting: the C tracer is its default
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cov.start()  # configures everything once, here (it takes milliseconds)
            cov.stop()
        atexit.unregister(cov._atexit)
        added = tuple(sorted(name for name in set(sys.modules) - before if name.lstrip("$").startswith("coverage")))
        _COVERAGE = (cov, CTracer, added, _sys_restore_dict(), _detached(_gettrace, "gettrace"), threading)
    except BaseException:
        _COVERAGE = False
        sys.stderr.write("unitcoder zygote: coverage cannot be measured:\n" + traceback.format_exc())
    gc.freeze()  # what it imported stays shared with the programs, like the preload
    return _COVERAGE


def _start_measuring(code):
    """In the runner, before the program's code exists: restart the measurement and put it
    out of the program's reach (see above). Returns ``(coverage, data, key, flag, last
    line of the code part)`` (``data[key]``: the packed arcs of PROGRAM_FILE; ``flag``: set
    by the audit hook when code is made under that name, see _make_audit_hook), or None
    when the program cannot be measured (then it runs unmeasured)."""
    prepared = _COVERAGE
    if not prepared:
        return None
    cov, tracer_type, _, restore, gettrace, threading = prepared
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cov.start()
        # coverage.py decides on the program's file now, on an empty module of that name
        exec(compile("", PROGRAM_FILE, "exec", dont_inherit=True), {"__builtins__": {}})
        collector = cov._collector
        tracer = collector.tracers[-1]
        disposition = tracer.should_trace_cache.get(PROGRAM_FILE)
        if type(tracer) is not tracer_type or disposition is None or disposition.trace is not True:
            raise RuntimeError("the program's file is not measured")
        key, data = disposition.source_filename, collector.data
        if tracer.data is not data or type(data) is not dict or type(key) is not str:
            raise RuntimeError("unexpected tracer state")
        entry = data.get(key)
        if entry is not None:
            entry.clear()  # the empty module's entry and exit
        tracer.should_trace = _detached(_untraced, "should_trace")
        tracer.warn = _detached(_quiet, "warn")
        instances, collectors = type(cov)._instances, type(collector)._collectors
    except BaseException:
        try:
            cov.stop()
        except BaseException:
            pass
        return None
    # Off every registry the program can reach (plain container operations: nothing fails here).
    instances[:] = [item for item in instances if item is not cov]
    collectors[:] = [item for item in collectors if item is not collector]
    threading.settrace(None)  # new threads are not measured (their tracer would be the program's to find)
    sys.gettrace = gettrace
    if restore is not None:
        restore["gettrace"] = gettrace
    return (cov, data, key, bytearray(1), code.rstrip("\n").count("\n") + 1)


def _measured(
    measure,
    _type=type,
    _int=int,
    _tuple=tuple,
    _len=len,
    _set=set,
    _sorted=sorted,
    _abs=abs,
    _mask=_ARC_MASK,
    _BaseException=BaseException,
):
    """After the tests, on the program's thread: what the code part executed, read from the
    tracer's own data (no code of coverage.py's or the program's runs): ``(lines, arcs)``,
    sorted, only lines ``1..last`` (and arcs whose ends are such lines, or minus them: the
    entry and exit of a code object starting there); ``((), ())`` when code was made under
    the program's file name (it could pass for the program's); None when not measured."""
    if measure is None:
        return None
    try:
        _, data, key, flag, last = measure
        if flag[0]:
            return ((), ())
        arcs = _set()
        for item in _tuple(data.get(key) or ()):
            if _type(item) is _int:  # packed: two 28-bit lines, then their sign bits (56, 57)
                first, second = item & _mask, (item >> 28) & _mask
                if item >> 56 & 1:
                    first = -first
                if item >> 57 & 1:
                    second = -second
            elif _type(item) is _tuple and _len(item) == 2:
                first, second = item
            else:
                continue
            if _type(first) is _int and _type(second) is _int:
                arcs.add((first, second))
        lines = _sorted({n for arc in arcs for n in arc if 0 < n <= last})
        kept = _sorted(arc for arc in arcs if 0 < _abs(arc[0]) <= last and 0 < _abs(arc[1]) <= last)
        return (_tuple(lines), _tuple(kept))
    except _BaseException:
        return None


def _encode_result(
    out,
    _type=type,
    _str=str,
    _int=int,
    _join=",".join,
    _quote=json.encoder.encode_basestring_ascii,
    _repr=int.__repr__,
    _keys=RESULT_KEYS,
):
    """The result as JSON (ASCII), from its known shape only: exact str, int, None, lists of them."""

    def scalar(value):
        if _type(value) is _str:
            return _quote(value)
        if _type(value) is _int:
            return _repr(value)
        return "null"

    parts = []
    for key in _keys:
        value = out[key]
        if key == "records":
            text = "[" + _join(["[" + _join([scalar(item) for item in record]) + "]" for record in value]) + "]"
        elif key == "tamper":
            text = "[" + _join([scalar(item) for item in value]) + "]"
        else:
            text = scalar(value)
        parts.append(_quote(key) + ":" + text)
    if "coverage" in out:  # (lines, arcs), or None: only when the program was measured
        value, text = out["coverage"], "null"
        if value is not None:
            lines = _join([scalar(n) for n in value[0]])
            arcs = _join(["[" + scalar(a) + "," + scalar(b) + "]" for a, b in value[1]])
            text = '{"lines":[' + lines + '],"arcs":[' + arcs + "]}"
        parts.append('"coverage":' + text)
    return "{" + _join(parts) + "}"


def _record_ok(record, _type=type, _tuple=tuple, _str=str, _len=len, _outcomes=frozenset(OUTCOMES + ("tamper",))):
    return (
        _type(record) is _tuple
        and _len(record) == 3
        and _type(record[0]) is _str
        and _type(record[1]) is _str
        and _type(record[2]) is _str
        and record[1] in _outcomes
    )


def _step_program(
    ctx,
    guards,
    _compare=_compare,
    _load=_step_load,
    _collect=_step_collect,
    _fixture=_step_class,
    _test=_step_test,
    _check=_step_check,
    _measured=_measured,
):
    """The whole run, as one step on the program's thread: load the code, compare the
    machinery with its baselines, load the tests' module, compare again, run every test,
    check again, read the coverage measured (if any). Returns ``(load_error,
    load_error_kind, records, started, tamper, coverage)``, built from immutable locals
    only, which the program cannot rebind. (The comparisons run no code of the program's,
    so they need no other thread; one step means one hand-over between the threads per
    program.)"""
    limit = ctx[7]
    load_error = load_kind = None
    records, tamper, started = (), (), 0
    kind, trace = _load(ctx, 0)  # the code
    if kind != "ok":
        load_error, load_kind = trace[-limit:], "oom" if kind == "oom" else "error"
    tamper = _compare(guards)  # a __build_class__ hook that restores itself is still there
    if load_error is None and not tamper:
        kind, trace = _load(ctx, 1)  # the tests' module
        if kind != "ok":
            load_error, load_kind = trace[-limit:], "oom" if kind == "oom" else "error"
        tamper = _compare(guards)
    if load_error is None and not tamper:
        classes, found, broken = _collect(ctx)
        records += found
        tamper += broken
        for name, cls, methods, guard in () if tamper else classes:
            label = f"program.{name}"
            found, ready = _fixture(ctx, cls, label, True)
            records += found
            if ready:
                for test_name, func, cells in methods:
                    started += 1
                    record = _test(ctx, cls, test_name, func, cells, guard, f"{label}.{test_name}")
                    if record[1] == "tamper":
                        tamper += (record[2],)
                        break
                    records += (record,)
                found, _ = _fixture(ctx, cls, label, False)
                records += found
            if tamper:
                break
    tamper += _check(ctx) + _compare(guards)
    return (load_error, load_kind, records, started, tamper, _measured(ctx[11]))


def _step_dispatch(request, _steps=(_step_program,), _BaseException=BaseException):
    """Run a step; its value reaches the driver only if this returns."""
    try:
        return (request, _steps[request[0]](*request[1]))
    except _BaseException:
        return (request, None)


def _driver(
    result_fd,
    requests,
    results,
    ctx,
    guards,
    _read=os.read,
    _write=os.write,
    _exit=os._exit,
    _type=type,
    _tuple=tuple,
    _str=str,
    _int=int,
    _len=len,
    _encode=_encode_result,
    _record_ok=_record_ok,
    _setrecursionlimit=sys.setrecursionlimit,
    _dict=dict,
    _list=list,
    _BaseException=BaseException,
    _nonce_chars=NONCE_CHARS,
):
    """The driver thread: take the nonce, have the program's thread run the program, write
    the framed result, end the process."""
    try:
        nonce = b""
        while _len(nonce) < _nonce_chars:
            chunk = _read(result_fd, _nonce_chars - _len(nonce))
            if not chunk:
                _exit(75)
            nonce += chunk
        request = (0, (ctx, guards))
        requests.put(request)
        answer = results.get()
        value = answer[1] if _type(answer) is _tuple and _len(answer) == 2 and answer[0] is request else None
        if not (
            _type(value) is _tuple and _len(value) == 6 and _type(value[2]) is _tuple and _type(value[4]) is _tuple
        ):
            value = ("the run of the program did not complete", "error", (), 0, (), None)
        load_error, load_kind, records, started, tamper, coverage = value
        out = {
            "load_error": load_error if _type(load_error) is _str else None,
            "load_error_kind": load_kind if _type(load_error) is _str and load_kind in ("error", "oom") else None,
            "records": [r for r in records if _record_ok(r)],
            "started": started if _type(started) is _int else 0,
            "tamper": _list(_dict.fromkeys(t for t in tamper if _type(t) is _str))[:20],
        }
        if ctx[11] is not None:  # measured: the result says what it measured (None: nothing)
            out["coverage"] = coverage if _type(coverage) is _tuple and _len(coverage) == 2 else None
        _setrecursionlimit(1000)
        data = nonce + _encode(out).encode("ascii")
        while data:
            data = data[_write(result_fd, data) :]
        _exit(0)
    except _BaseException:
        _exit(76)


def _launch(
    result_fd,
    ctx,
    guards,
    requests,
    results,
    _start=_thread.start_new_thread,
    _driver=_driver,
    _step=_step_dispatch,
    _map=map,
    _iter=iter,
):
    """Start the driver; return the main thread's loop as a C iterator (this frame then ends,
    so no frame on the program's thread names the queues)."""
    _start(_driver, (result_fd, requests, results, ctx, guards))
    return _map(results.put, _map(_step, _iter(requests.get, None)))


def _receive_nonce(fd):
    """The nonce the zygote sends on the result channel right after the fork."""
    nonce = b""
    while len(nonce) < NONCE_CHARS:
        chunk = os.read(fd, NONCE_CHARS - len(nonce))
        if not chunk:
            raise OSError("the zygote sent no nonce")
        nonce += chunk
    return nonce


def _compile_program(code, test_code):
    """The code and the tests' module, compiled apart with the line numbers of one file."""
    head = code.rstrip("\n") + "\n\n\n"
    source = head + test_code
    _linecache.cache[PROGRAM_FILE] = (len(source), None, source.splitlines(True), PROGRAM_FILE)
    code_obj = compile(head, PROGRAM_FILE, "exec", dont_inherit=True)
    flags = code_obj.co_flags & _FUTURE_FLAGS
    tests_obj = compile("\n" * head.count("\n") + test_code, PROGRAM_FILE, "exec", flags, dont_inherit=True)
    return code_obj, tests_obj


def _code_objects(code):
    """``code`` and every code object nested in it."""
    found, todo = [], [code]
    while todo:
        item = todo.pop()
        found.append(item)
        todo.extend(c for c in item.co_consts if isinstance(c, types.CodeType))
    return found


_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([\w., \t]+))", re.M)


def _tests_modules(test_code, test_codes, skip):
    """Baselines of what the tests use, taken before the code runs: (guard, modules).

    The modules the tests import (imported now if need be: the tests would import them
    anyway) and every module they name, the modules that define the functions and
    classes the tests name (``numpy.testing._private.utils`` for ``assert_allclose``),
    submodules they reach by attribute (``np.testing``), and the Python classes they name
    (``pd.DataFrame``) with their bases. Values that were None or plain data may change
    (libraries fill caches in lazily); functions, classes, modules and objects may not.
    """
    wanted = set()
    for match in _IMPORT.finditer(test_code):
        if match.group(1):
            wanted.add(match.group(1))
        else:
            wanted.update(words.split()[0] for words in match.group(2).split(",") if words.split())
    for name in sorted(wanted):
        if name and not name.startswith(".") and name not in sys.modules:
            try:
                importlib.import_module(name)
            except BaseException:  # the tests will fail to import it themselves
                pass
    names = set()
    for code in test_codes:
        names.update(code.co_names)
    modules, classes = {}, {}

    def add(name):
        module = sys.modules.get(name)
        if isinstance(module, types.ModuleType) and name not in modules and name not in skip:
            modules[name] = module

    # Probe the few names the tests use; never iterate the (large) shared namespaces: touching
    # their objects' reference counts would copy the zygote's pages into every program.
    for name in wanted | {name for name in names if name in sys.modules}:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            add(".".join(parts[:i]))
    for _ in range(2):  # np -> np.testing -> assert_allclose's module
        for module in list(modules.values()):
            namespace = module.__dict__
            for attr in [attr for attr in names if attr in namespace]:
                value = namespace[attr]
                if isinstance(value, types.ModuleType):
                    add(value.__name__)
                    continue
                home = getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else None
                if isinstance(home, str):
                    add(home)
                if isinstance(value, type) and value.__flags__ & _HEAPTYPE and type(value) in (type, abc.ABCMeta):
                    classes[id(value)] = value
    entries, cells, listed = [], [], []
    for name, module in sorted(modules.items()):
        more, more_cells = _module_entries(name, module, False, True)
        entries += more
        cells += more_cells
        listed.append((name, module, type(module)))
        entries.append((f"type of {name}", module, type(module), None, "type", None, _probe(module, "type")))
    for cls in classes.values():
        more, more_cells = _class_entries(cls, True, stop=(object,))
        entries += more
        cells += more_cells
    return _guard(entries, cells), tuple(listed)


def _write_result(result_fd, out):
    """Write a result straight away (when no program code has run)."""
    data = _receive_nonce(result_fd) + json.dumps(out).encode("ascii")
    _write_all(result_fd, data)


def _run_program(req, result_fd):
    """Run ``code`` + ``test_code`` as described above. Never returns normally."""
    try:
        code_obj, tests_obj = _compile_program(req["code"], req["test_code"])
    except BaseException as exc:  # a SyntaxError the parser let through: the module does not load
        trace = "".join(traceback.format_exception_only(type(exc), exc))
        limit = int(CONFIG.get("trace_chars", 2000))
        out = {"load_error": trace[-limit:], "load_error_kind": "error", "records": [], "started": 0, "tamper": []}
        _write_result(result_fd, out)
        return
    measure = _start_measuring(req["code"]) if req.get("coverage") else None
    if _COVERAGE:  # the program sees sys.modules as before the zygote imported coverage.py
        for name in _COVERAGE[2]:
            sys.modules.pop(name, None)
    machinery, modules = _MACHINERY
    test_codes = _code_objects(tests_obj)
    tests_guard, more_modules = _tests_modules(req["test_code"], test_codes, {name for name, _, _ in modules})
    namespace = {"__name__": "program", "__file__": os.path.join(os.getcwd(), PROGRAM_FILE), "__builtins__": _builtins}
    test_code_ids = frozenset(id(c) for c in test_codes)
    ctx = (
        code_obj,
        tests_obj,
        namespace,
        test_code_ids,
        _TRUSTED_ROOTS,
        _builtins.__dict__,
        tuple(req["test_classes"]),
        int(CONFIG.get("trace_chars", 2000)),
        _builtins,
        sys.modules,
        modules + more_modules,
        measure,
    )
    guards = (machinery, tests_guard)
    sys.modules["__main__"] = types.ModuleType("__main__")  # the program sees an empty __main__, not this file
    measured = None if measure is None else (measure[3], frozenset((id(code_obj), id(tests_obj))), PROGRAM_FILE)
    sys.addaudithook(_make_audit_hook(_TRUSTED_ROOTS, test_code_ids, _GADGETS, measured))
    collections.deque(_launch(result_fd, ctx, guards, _queue.SimpleQueue(), _queue.SimpleQueue()), 0)


def _exec_driver(req, nonce, result_fd):
    """The confirmation run (``sandbox/confirm.py``): a fresh interpreter, in this isolated
    process, runs the host's stdlib-only driver on program.py; the nonce travels on a pipe
    the driver reads and closes before the program's code runs. Never returns.

    ``-I`` (isolated mode) ignores every PYTHON* variable, PYTHONHASHSEED included, so a
    request with a ``hash_seed`` runs ``-s -P -B`` instead (``-I`` but for ``-E``; no ``-P``
    before Python 3.11, where only program.py is in the directory it adds to ``sys.path``)
    with an environment from which every PYTHON* variable is removed and PYTHONHASHSEED
    set: the same isolation, with the chosen hash seed. An ``order_seed`` is the driver's
    fourth argument (it shuffles the tests)."""
    with open("program.py", "w", encoding="utf-8") as f:
        f.write(req["code"].rstrip("\n") + "\n\n\n" + req["test_code"])
    nonce_read, nonce_write = os.pipe()
    _write_all(nonce_write, nonce)
    os.close(nonce_write)
    os.set_inheritable(result_fd, True)
    os.set_inheritable(nonce_read, True)
    hash_seed, order_seed = req.get("hash_seed"), req.get("order_seed")
    flags = ["-I", "-B"] if hash_seed is None else ["-s", "-P", "-B"] if sys.version_info >= (3, 11) else ["-s", "-B"]
    argv = [sys.executable, *flags, "-c", req["driver"], str(result_fd), str(nonce_read)]
    argv.append(json.dumps(req["test_classes"]))
    if order_seed is not None:
        argv.append(str(int(order_seed)))
    if hash_seed is None:
        os.execv(sys.executable, argv)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = str(int(hash_seed))
    os.execve(sys.executable, argv, env)


def _exec_node(req, nonce, result_fd):
    """The JavaScript runner: node runs the trusted driver (``sandbox/_js_driver.mjs``) on
    the program's file, in this isolated process. The nonce travels on a pipe the driver
    reads and closes before the program's code exists; the packages folder is reached
    through a ``node_modules`` link next to the program (CommonJS and ES modules both look
    there). Never returns."""
    js = CONFIG["javascript"]
    name = "program.mjs" if req.get("module") == "esm" else "program.cjs"
    path = os.path.join(os.getcwd(), name)
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(req["code"].rstrip("\n") + "\n\n\n" + req["test_code"])
    if js.get("node_modules"):
        os.symlink(js["node_modules"], "node_modules")
    nonce_read, nonce_write = os.pipe()
    _write_all(nonce_write, nonce)
    os.close(nonce_write)
    os.set_inheritable(result_fd, True)
    os.set_inheritable(nonce_read, True)
    argv = [js["node"], *js["node_flags"], js["driver"], str(result_fd), str(nonce_read), path]
    argv += [json.dumps(req["test_locations"]), str(int(CONFIG.get("trace_chars", 2000)))]
    os.execve(js["node"], argv, dict(os.environ))


def _runner_main(req, fds):
    """PID 1 of the program's namespaces. Never returns."""
    status = 70
    try:
        limits = CONFIG["limits"]
        if req.get("cpu_seconds") is not None:  # the program's own time limit (Sandbox.verify(timeouts=...))
            limits = {**limits, "cpu_seconds": max(1, int(req["cpu_seconds"]))}
        if req.get("language") == "javascript":  # V8 reserves address space it never uses (see javascript.py)
            limits = {**limits, "memory_bytes": limits["memory_bytes"] + CONFIG["javascript"]["reserve_bytes"]}
        result_fd = _isolation.isolate(limits, CONFIG["uid"], fds)
        # From here on, anything that goes wrong is the program's doing, not ours.
        _write_all(result_fd, SETUP_DONE)
        status = 73
        if req.get("language") == "javascript":
            _exec_node(req, _receive_nonce(result_fd), result_fd)
        if req.get("driver"):
            _exec_driver(req, _receive_nonce(result_fd), result_fd)
        # Re-seed what the zygote's modules seeded once, so programs do not share streams.
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        _run_program(req, result_fd)
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


def _start_runner(req, fork):
    """Fork the runner with ``fork`` (which puts it in fresh namespaces) and watch it.

    The result channel is a socket pair: the nonce is drawn only after the fork, in this
    (trusted) process, and sent to the runner on it, so that no memory the runner
    inherited, and no frame on the stack its program runs on, holds it.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ours, theirs = socket.socketpair()
    res_r, res_w = ours.detach(), theirs.detach()
    start = time.monotonic()
    pid = fork()
    if pid == 0:
        for fd in (out_r, err_r, res_r):
            os.close(fd)
        _runner_main(req, {"out_w": out_w, "err_w": err_w, "res_w": res_w})
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    nonce = os.urandom(NONCE_CHARS // 2).hex().encode("ascii")
    try:
        _write_all(res_r, nonce)
    except OSError:
        pass  # the runner is gone already; its report says why
    return _watch(pid, start, req, nonce, (out_r, err_r, res_r))


# One clone() both forks and creates the runner's namespaces, so the
# (large) zygote is copied once per program. Python has no clone(), so it is called
# through libc with the GIL held and Python's own fork hooks around it, as os.fork()
# does. It needs a known syscall number and a single-threaded zygote; otherwise the
# fallback forks a monitor that unshares and forks again.
_CLONE_NR = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long
# On this path the IPC and network namespaces come from the zygote: it moves into fresh
# ones as soon as a program has started (the program keeps the ones it was cloned in),
# so that making them, mostly the network namespace, overlaps that program's run
# instead of delaying the next program. Each pair serves exactly one program.
_NET_IPC_UNUSED = False  # whether the zygote sits in namespaces no program has had yet


def _fresh_net_ipc():
    """Move the zygote into new IPC and network namespaces (with ``lo`` up)."""
    global _NET_IPC_UNUSED
    _isolation.unshare(_isolation.CLONE_NEWIPC | _isolation.CLONE_NEWNET)
    _isolation.loopback_up()
    _NET_IPC_UNUSED = True


def _clone_fork():
    global _NET_IPC_UNUSED
    if not _NET_IPC_UNUSED:
        _fresh_net_ipc()  # a failure here is the program's infra_error, before it exists
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _pylibc.syscall(
        ctypes.c_long(_CLONE_NR),
        ctypes.c_ulong(signal.SIGCHLD | _isolation.CLONE_NEWPID | _isolation.CLONE_NEWNS),
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
    _NET_IPC_UNUSED = False
    try:
        _fresh_net_ipc()  # for the next program
    except OSError:
        pass  # tried again before the next program, which then reports it
    return pid


def _unshare_fork():
    _isolation.unshare(_isolation.PROGRAM_NAMESPACES)
    return os.fork()


def _monitor_main(req, report_fd):
    """Fallback path: a forked monitor unshares, forks the runner, watches it. Never returns."""
    try:
        report = _start_runner(req, _unshare_fork)
    except BaseException:
        report = {"infra_error": traceback.format_exc()[-2000:]}
    try:
        _write_all(report_fd, json.dumps(report).encode("utf-8"))
    finally:
        os._exit(0)


def _coverage_shape_ok(coverage):
    """Whether a result's ``coverage`` has the shape the runner writes (see _encode_result)."""
    return coverage is None or (
        type(coverage) is dict
        and sorted(coverage) == ["arcs", "lines"]
        and type(coverage["lines"]) is list
        and all(type(n) is int for n in coverage["lines"])
        and type(coverage["arcs"]) is list
        and all(type(a) is list and len(a) == 2 and all(type(n) is int for n in a) for a in coverage["arcs"])
    )


def _result_shape_ok(result):
    """Whether ``result`` has exactly the shape the runner writes (see _driver): the keys of
    RESULT_KEYS, and ``coverage`` when the program was measured."""
    if type(result) is not dict or sorted(set(result) - {"coverage"}) != sorted(RESULT_KEYS):
        return False
    if not _coverage_shape_ok(result.get("coverage")):
        return False
    load_error, kind, records, started, tamper = (result[key] for key in RESULT_KEYS)
    return (
        (load_error is None or type(load_error) is str)
        and kind in (None, "error", "oom")
        and type(started) is int
        and started >= 0
        and type(records) is list
        and all(
            type(r) is list and len(r) == 3 and all(type(x) is str for x in r) and r[1] in OUTCOMES for r in records
        )
        and type(tamper) is list
        and all(type(t) is str for t in tamper)
    )


def _parse_result(report, raw, nonce, total):
    """Split the result channel's bytes into the setup marker and the nonce-framed result.

    Never raises: anything but one well-formed result after the nonce (other bytes, a
    frame too large, too deep or of the wrong shape) marks the result as forged.
    """
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
        result = json.loads(body[len(nonce) :].decode("utf-8"))
    except (ValueError, RecursionError, MemoryError):
        result = None
    if _result_shape_ok(result):
        report["result"] = result
    else:
        report["result_forged"] = True


# --------------------------------------------------------------------------- zygote loop


def _serve_one(req):
    _isolation.prepare()
    if req.get("coverage"):
        _prepare_coverage()  # once per zygote, before any runner needs it
    if USE_CLONE:
        return _start_runner(req, _clone_fork)
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rep_r)
        os.close(PROTO_IN)
        os.close(PROTO_OUT)
        _monitor_main(req, rep_w)
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


PROTO_IN = PROTO_OUT = None  # the protocol's descriptors; set by main()
USE_CLONE = False


def _protocol_fds():
    """The protocol uses the original stdin/stdout; everything else the zygote or a package
    prints goes to stderr, so it cannot corrupt the frames."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    return proto_in, proto_out


def main():
    global CONFIG, PROTO_IN, PROTO_OUT, PRELOADED, PRELOAD_FAILED, USE_CLONE
    CONFIG = json.loads(sys.argv[1])
    PROTO_IN, PROTO_OUT = _protocol_fds()
    PRELOADED, PRELOAD_FAILED = _preload(CONFIG["preload"])
    _zygote_state()  # the baselines and trust roots, before any program exists
    # Freeze everything imported so far: forked children then never touch these objects'
    # pages during garbage collection, so they stay shared with the zygote.
    gc.collect()
    gc.freeze()
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
