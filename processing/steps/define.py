"""Stage 1's define check: does each kept function's ``code`` define on its own?

A kept row's ``code`` (its import lines, then the function) is meant to run alone. Some
does not even define: an import that fails further down (a module that needs a package
that is not installed), a decorator that raises (a library registry that refuses a name
it already holds). Each function is run in the sandbox as a *define-only* program: its
``code`` followed by a ``unittest`` module whose one test does nothing, so the code runs
at module level and an import or decorator failure is an ``error`` verdict with the
traceback. Anything but ``pass`` drops the row as ``does_not_define``, with the exception
(or the sandbox's reason for refusing the code) in ``detail``. ``sandbox_error`` is the
machine's trouble, not the code's: those programs are run again, and if they keep
failing the step raises ``WorkerFailure`` rather than drop a row (``run_programs`` of
``processing.steps.verify``, as in stage 2).

Shared verdicts: when defining a function can run nothing but its import lines (no
decorator; defaults and annotations only literals and names those lines bind or
builtins; it compiles here and passes the sandbox's static checks; its name is no dunder
and none that ``unittest`` looks up in a module), its program succeeds exactly when the same import
lines succeed, so functions with the same import lines share one program's verdict
(``define_shared``). On library code that is about half the programs.

Batches: the remaining programs run ``BATCH`` at a time as one program, their codes one
after the other (each defines only its own names, from its own import lines: stage 1
keeps only functions whose every free name is bound by their own code). A batch that
passes passes each of its programs; one that does not (an import or decorator failing, a
registry refusing a name another member of the batch registered first, a refusal by the
sandbox's static checks, a timeout) runs again without the member its traceback points at
(or in halves), down to single programs, whose verdicts are the ones that count: a
failure is always a program's own. This cuts the
sandbox's fixed cost per program (a fork and its namespaces) by the batch size.

Other languages (``language``): the define-only program is the code followed by the
language's ``DEFINE_TESTS`` (for JavaScript one ``node:test`` test that does nothing);
shared verdicts and batches are Python's reasoning (its ``ast``, its tracebacks), so
every row of another language runs its own program.
"""

from __future__ import annotations

import ast
import builtins
import re
import warnings

from processing.languages import get_language, python
from processing.steps.verify import run_programs
from sandbox.static import find_tampering
from sandbox.verdict import PASS, REJECTED, VerifyResult

DROP_REASON = "does_not_define"
DEFINE_TESTS = python.DEFINE_TESTS  # what batches of Python programs end with
DETAIL_CHARS = 500
BATCH = 32  # programs per batch program (see the module docstring)
# Module-level names the define program's test module, or unittest, reads: a function so
# named could change what the program does, so it always gets a program of its own.
RESERVED_NAMES = frozenset({"unittest", "TestDefines", "load_tests", "setUpModule", "tearDownModule"})
BUILTIN_NAMES = frozenset(dir(builtins))
_NUMBER = (int, float, complex)


def define_batch(
    batch: dict[str, list],
    *,
    sandbox,
    share: bool = True,
    batched: bool = True,
    verdicts: dict | None = None,
    desc: str = "checking that functions define",
    language: str = "python",
) -> dict[str, list]:
    """Column ``code`` in (and ``drop_reason``/``detail`` if present: rows already dropped
    are not checked); the same columns out with ``drop_reason`` and ``detail`` set on the
    rows that do not define, plus ``define_status`` (the verdict's status, None where not
    checked) and ``define_shared`` (the verdict came from another row's program).

    ``share=False`` runs every row's own program; ``batched=False`` runs each program alone
    (no batches). ``verdicts``, a dict the caller keeps
    across batches (of one sandbox configuration), carries shared verdicts to later batches.
    ``language``: the rows' language (the sandbox must run it); only Python's programs are
    shared and batched (module docstring).
    """
    tests = get_language(language).DEFINE_TESTS
    if language != "python":
        share = batched = False
    codes = batch["code"]
    n = len(codes)
    reasons = list(batch.get("drop_reason") or [None] * n)
    details = list(batch.get("detail") or [None] * n)
    known = {} if verdicts is None else verdicts
    programs: dict[str, int] = {}  # header -> index of its program in pairs
    pairs: list[tuple[str, str]] = []
    owners: list[int | str | None] = [None] * n  # a program's index, or the header of a known verdict
    shared = [False] * n
    for i, code in enumerate(codes):
        if reasons[i] is not None:
            continue
        header = definition_header(code) if share else None
        if header is None:
            owners[i] = len(pairs)
            pairs.append((code, tests))
        elif header in known:
            owners[i], shared[i] = header, True
        elif header in programs:
            owners[i], shared[i] = programs[header], True
        else:
            owners[i] = programs[header] = len(pairs)
            pairs.append((code, tests))
    results = run_in_batches(sandbox, pairs, desc) if batched else run_programs(sandbox, pairs, desc=desc)
    for header, index in programs.items():
        known[header] = results[index]
    statuses: list[str | None] = [None] * n
    for i, owner in enumerate(owners):
        if owner is None:
            continue
        result = known[owner] if isinstance(owner, str) else results[owner]
        statuses[i] = result.status
        if result.status != PASS:
            reasons[i], details[i] = DROP_REASON, failure_detail(result)
    return {**batch, "drop_reason": reasons, "detail": details, "define_status": statuses, "define_shared": shared}


def run_in_batches(sandbox, pairs: list[tuple[str, str]], desc: str) -> list:
    """Verdicts of define-only ``pairs``, in order: ``BATCH`` codes at a time as one program.
    A batch that does not pass runs again without the member its traceback points at, which
    runs alone (or, when no line is named, in halves), down to single programs, whose
    verdicts are the ones a failing program gets (module docstring). Every round takes at
    least one member out of a failing batch, so it ends."""
    results: list = [None] * len(pairs)
    alone = {i for i, (code, _) in enumerate(pairs) if "__future__" in code}  # must open a module
    batchable = [i for i in range(len(pairs)) if i not in alone]
    groups = [[i] for i in sorted(alone)]  # single programs from the first round on
    groups += [batchable[start : start + BATCH] for start in range(0, len(batchable), BATCH)]
    round_ = 0
    while groups:
        round_ += 1
        single = [group for group in groups if len(group) == 1]
        joined = [group for group in groups if len(group) > 1]
        programs = [("\n\n".join(pairs[i][0].rstrip("\n") for i in group) + "\n", DEFINE_TESTS) for group in joined]
        programs += [pairs[group[0]] for group in single]
        groups = []
        verdicts = run_programs(sandbox, programs, desc=f"{desc} (round {round_})")
        for group, verdict in zip(joined + single, verdicts):
            if len(group) == 1:
                results[group[0]] = verdict
            elif verdict.status == PASS:
                for i in group:
                    results[i] = VerifyResult(PASS, verdict.tests_run, verdict.tests_passed, "", verdict.duration_s)
            else:
                culprit = _culprit(verdict, group, pairs)
                if culprit is not None:  # its own program next, the others again as a batch
                    groups += [[culprit], [i for i in group if i != culprit]]
                else:
                    half = (len(group) + 1) // 2
                    groups += [group[:half], group[half:]]
    return results


_PROGRAM_LINE = re.compile(r'File "[^"]*program\.py", line (\d+)')


def _culprit(verdict, group: list[int], pairs: list[tuple[str, str]]) -> int | None:
    """The member of a failed batch whose lines hold the program's first traceback frame
    (the module-level statement that raised), or None when the verdict names no line."""
    found = _PROGRAM_LINE.search(verdict.details or "")
    if not found:
        return None
    line, start = int(found.group(1)), 1
    for i in group:
        lines = pairs[i][0].rstrip("\n").count("\n") + 1
        if start <= line < start + lines:
            return i
        start += lines + 1  # the blank line that joins two members
    return None


def failure_detail(result) -> str:
    """A short excerpt of a verdict other than ``pass``: the exception (type and message)
    and where it was raised, or the status and the sandbox's reason; at most
    ``DETAIL_CHARS`` characters."""
    text = (result.details or "").strip()
    if result.status == REJECTED:
        return _bounded(f"rejected by the sandbox ({result.reason}): {text}")
    traceback = re.split(r"\n--- (?:stderr|stdout) \(", text)[0].strip()
    lines = traceback.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if not frames:
        return _bounded(f"{result.status} ({result.reason}): {text}" if result.reason else f"{result.status}: {text}")
    last = frames[-1]
    tail = lines[last + 1 :]
    start = next((j for j, line in enumerate(tail) if line and not line[0].isspace()), len(tail))
    exception = "\n".join(tail[start:]).strip() or result.status
    source = tail[0].strip() if start > 0 else ""
    where = _bounded(lines[last].strip() + (f": {source}" if source else ""), 160)
    return _bounded(exception, DETAIL_CHARS - len(where) - 6) + f"\n  at {where}"


def _bounded(text: str, limit: int = DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def definition_header(code: str) -> str | None:
    """The text of ``code`` before its ``def`` when defining it runs nothing but that text
    (import lines), else None: then programs with the same header have the same verdict."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not tree.body:
        return None
    *head, func = tree.body
    if type(func) is not ast.FunctionDef or func.decorator_list:
        return None
    if func.name in RESERVED_NAMES or (func.name.startswith("__") and func.name.endswith("__")):
        return None  # a name the program's own machinery reads (__name__, setUpModule, ...)
    if not all(type(node) in (ast.Import, ast.ImportFrom) for node in head):
        return None
    bound = set(BUILTIN_NAMES)
    lazy_annotations = False
    for node in head:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            lazy_annotations |= any(alias.name == "annotations" for alias in node.names)
            continue
        for alias in node.names:
            if alias.name == "*":
                return None
            bound.add(alias.asname or alias.name.split(".")[0])
    args = func.args
    evaluated = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    if not lazy_annotations:
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        evaluated += [p.annotation for p in params if p is not None and p.annotation is not None]
        if func.returns is not None:
            evaluated.append(func.returns)
    if not all(_inert(node, bound) for node in evaluated):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are the program's own business
            compile(tree, "program.py", "exec", dont_inherit=True)  # the compiler's own checks (symbol table)
        if find_tampering(tree) is not None:
            return None  # the sandbox refuses this code before running it
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return "".join(code.splitlines(keepends=True)[: func.lineno - 1])


def _inert(node: ast.expr, bound: set[str]) -> bool:
    """Whether evaluating ``node`` cannot fail: a literal, a bound name, or tuples of them."""
    kind = type(node)
    if kind is ast.Constant:
        return True
    if kind is ast.Name:
        return node.id in bound
    if kind is ast.Tuple:
        return all(_inert(element, bound) for element in node.elts)
    if kind is ast.UnaryOp and type(node.op) in (ast.USub, ast.UAdd):
        return type(node.operand) is ast.Constant and isinstance(node.operand.value, _NUMBER)
    return False


def imported_modules(code: str) -> set[str]:
    """Top-level names of the modules ``code``'s own module-level imports import."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def preload_for(codes: list[str], candidates: tuple[str, ...]) -> tuple[str, ...]:
    """The ``candidates`` (the sandbox's preload modules) whose top-level package ``codes`` import."""
    used = set().union(*(imported_modules(code) for code in codes)) if codes else set()
    return tuple(name for name in candidates if name.split(".")[0] in used)
