"""Python-specific retrieval: which files to parse, which functions to keep, and why not.

Everything that knows Python syntax lives here (a second language gets a module of its
own): a cheap text prefilter on import lines, then ``ast`` on files that pass it, then
one verdict per top-level function. A kept function is self-contained: every free name
(in its body, annotations, defaults and decorators) is a parameter, a local, a builtin
or an absolute import of its file, and it uses at least one target package. Its
``code`` is exactly the import lines it uses followed by its source, so it defines on
its own in a fresh interpreter.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import re
from dataclasses import dataclass, field

from processing.languages.common import file_gate
from processing.packages import importable

BUILTIN_NAMES = frozenset(dir(builtins)) | {"__name__", "__doc__"}
TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\S")


def tokens(source: str) -> list[str]:
    """The tokens dedup and decontamination compare (names, numbers, single symbols)."""
    return TOKEN_RE.findall(source)


def normalized_tokens(source: str) -> list[str]:
    """Tokens of the source as ``ast.unparse`` prints it (no comments, one formatting), as
    kept functions' tokens are made; source that does not parse is tokenised as it is."""
    try:
        source = ast.unparse(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError):
        pass
    return tokens(source)


# Top-level def with at least one parameter (not "()" and not "(self" only matters later).
TOP_LEVEL_DEF_RE = re.compile(r"^def\s+\w+\s*\(\s*[^)\s]", re.MULTILINE)


def import_prefilter(packages: tuple[str, ...]) -> re.Pattern:
    """A regex that finds an import line of any target package."""
    alternatives = "|".join(sorted((re.escape(p) for p in packages), key=len, reverse=True))
    return re.compile(
        rf"^[ \t]*(?:from[ \t]+(?:{alternatives})\b|import[ \t]+(?:[\w.]+[ \t]*,[ \t]*)*(?:{alternatives})\b)", re.M
    )


@dataclass
class Binding:
    """A name bound by a top-level import statement."""

    line: str  # the import statement that binds only this name, e.g. "import numpy as np"
    module: str  # top-level module, e.g. "numpy"; "" for relative imports
    relative: bool = False
    position: tuple[int, int] = (0, 0)  # (line, alias index) of the statement, to keep file order


@dataclass
class FunctionRecord:
    name: str
    lineno: int
    drop_reason: str | None
    detail: str = ""
    code: str | None = None
    imports: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    exact_key: str | None = None
    tokens: list[str] = field(default_factory=list)


@dataclass
class FileRecord:
    drop_reason: str | None
    detail: str = ""
    functions: list[FunctionRecord] = field(default_factory=list)


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_IMPORTS = (ast.Import, ast.ImportFrom)
_YIELDS = (ast.Yield, ast.YieldFrom)
_SCOPE_DECLARATIONS = (ast.Global, ast.Nonlocal)
_NAMED_BINDERS = (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)
_AST = ast.AST


def walk(nodes: list[ast.AST]):
    """Every node below ``nodes`` (theirs included), in no particular order; a leaner ast.walk."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        _push_children(stack, node)


def _push_children(stack: list[ast.AST], node: ast.AST) -> None:
    for name in node._fields:
        value = getattr(node, name, None)
        if value.__class__ is list:
            stack.extend(item for item in value if isinstance(item, _AST))
        elif isinstance(value, _AST):
            stack.append(value)


# --------------------------------------------------------------------------- module scope


def _import_line(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str:
    name = alias.name + (f" as {alias.asname}" if alias.asname else "")
    if isinstance(node, ast.Import):
        return f"import {name}"
    return f"from {'.' * node.level}{node.module or ''} import {name}"


def _bound_name(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str:
    if alias.asname:
        return alias.asname
    return alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name


def _stored_names(node: ast.AST) -> set[str]:
    """Names a statement binds in its own scope (not descending into defs, classes, lambdas)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        kind = type(current)
        if kind is ast.Name:
            if type(current.ctx) is not ast.Load:
                names.add(current.id)
            continue
        if kind in _DEFINITIONS:
            names.add(current.name)
            stack.extend(current.decorator_list)
            continue
        if kind is ast.Lambda:
            continue
        if kind in _NAMED_BINDERS and current.name:
            names.add(current.name)
        elif kind is ast.MatchMapping and current.rest:
            names.add(current.rest)
        elif kind in _IMPORTS:
            names.update(_bound_name(current, a) for a in current.names if a.name != "*")
            continue
        _push_children(stack, current)
    return names


@dataclass
class ModuleScope:
    imports: dict[str, list[Binding]] = field(default_factory=dict)
    conditional_imports: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)
    future: list[str] = field(default_factory=list)
    star_import: bool = False

    @classmethod
    def of(cls, tree: ast.Module) -> ModuleScope:
        scope = cls()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                    scope.future.append(ast.unparse(node))
                    continue
                for index, alias in enumerate(node.names):
                    if alias.name == "*":
                        scope.star_import = True
                        continue
                    relative = isinstance(node, ast.ImportFrom) and node.level > 0
                    module = "" if relative else (alias.name if isinstance(node, ast.Import) else node.module or "")
                    scope.imports.setdefault(_bound_name(node, alias), []).append(
                        Binding(_import_line(node, alias), module.split(".")[0], relative, (node.lineno, index))
                    )
            else:
                for name in _stored_names(node):
                    scope.defined.add(name)
                for sub in walk([node]) if isinstance(node, (ast.If, ast.Try, ast.With)) else ():
                    if type(sub) in _IMPORTS:
                        scope.conditional_imports |= {_bound_name(sub, a) for a in sub.names if a.name != "*"}
        # A name both imported and reassigned at module level is a module global.
        for name in list(scope.imports):
            if name in scope.defined:
                del scope.imports[name]
        return scope


# --------------------------------------------------------------------------- one function


def _parameters(args: ast.arguments) -> list[ast.arg]:
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if args.vararg:
        params.append(args.vararg)
    if args.kwarg:
        params.append(args.kwarg)
    return params


def _definition_time_nodes(func: ast.FunctionDef) -> list[ast.AST]:
    """Evaluated in module scope when the def runs: decorators, defaults, annotations."""
    nodes: list[ast.AST] = [*func.decorator_list, *func.args.defaults]
    nodes += [d for d in func.args.kw_defaults if d is not None]
    nodes += [a.annotation for a in _parameters(func.args) if a.annotation is not None]
    if func.returns is not None:
        nodes.append(func.returns)
    return nodes


def _loads(nodes: list[ast.AST]) -> list[str]:
    return [n.id for n in walk(nodes) if type(n) is ast.Name and type(n.ctx) is ast.Load]


def analyse_function(
    func: ast.FunctionDef, scope: ModuleScope, lines: list[str], packages: frozenset[str]
) -> FunctionRecord:
    record = FunctionRecord(func.name, func.lineno, None)
    start = min([func.lineno, *(d.lineno for d in func.decorator_list)])
    source = "".join(lines[start - 1 : func.end_lineno]).rstrip() + "\n"

    def drop(reason: str, detail: str = "") -> FunctionRecord:
        record.drop_reason, record.detail, record.code = reason, detail, source  # raw source, for inspection
        return record

    params = _parameters(func.args)
    if not params:
        return drop("no_arguments")
    returns_value = False
    locals_ = {a.arg for a in params}
    body_loads: list[str] = []
    for node in walk(func.body):
        kind = type(node)
        if kind is ast.Name:
            if type(node.ctx) is ast.Load:
                body_loads.append(node.id)
            else:
                locals_.add(node.id)
        elif kind in _DEFINITIONS:
            return drop("nested_definition", f"defines {node.name} inside")
        elif kind in _IMPORTS:
            return drop("local_import", ast.unparse(node))
        elif kind in _YIELDS:
            return drop("generator")
        elif kind in _SCOPE_DECLARATIONS:
            return drop("uses_module_globals", f"declares {', '.join(node.names)} global")
        elif kind is ast.Return:
            value = node.value
            if value is not None and not (type(value) is ast.Constant and value.value is None):
                returns_value = True
        elif kind is ast.arg:  # lambda parameters
            locals_.add(node.arg)
        elif kind in _NAMED_BINDERS and node.name:
            locals_.add(node.name)
        elif kind is ast.MatchMapping and node.rest:
            locals_.add(node.rest)
    if not returns_value:
        return drop("no_return")
    free = [name for name in body_loads if name not in locals_] + _loads(_definition_time_nodes(func))
    used: dict[str, list[Binding]] = {}
    for name in dict.fromkeys(free):
        if name == func.name:
            continue  # recursion: the def itself is part of the code
        if name in scope.imports:
            used[name] = scope.imports[name]
        elif name in scope.conditional_imports:
            return drop("conditional_import", name)
        elif name in scope.defined:
            return drop("uses_module_globals", name)
        elif name in BUILTIN_NAMES:
            continue
        elif scope.star_import:
            return drop("star_import", name)
        else:
            return drop("undefined_name", name)
    bindings = sorted((b for name in used for b in used[name]), key=lambda b: b.position)
    for binding in bindings:
        if binding.relative:
            return drop("relative_import", binding.line)
        if not importable(binding.module):
            return drop("unavailable_import", binding.line)
    used_packages = sorted({b.module for b in bindings if b.module in packages})
    if not used_packages:
        return drop("no_target_usage")
    import_lines = list(dict.fromkeys(b.line for b in bindings))
    header = "\n".join(scope.future + import_lines)
    record.code = (header + "\n\n\n" if header else "") + source
    record.imports = import_lines
    record.packages = used_packages
    try:
        normalized = ast.unparse(func)
    except RecursionError:
        return drop("too_deeply_nested")
    record.exact_key = hashlib.sha1(normalized.encode("utf-8")).hexdigest()
    record.tokens = tokens(normalized)
    return record


# --------------------------------------------------------------------------- one file


def _syntax_reason(exc: SyntaxError, content: str) -> str:
    message = f"{exc.msg} {exc.text or ''}"
    if "too many nested" in message or "too many statically nested" in message:
        return "too_deeply_nested"
    if "Missing parentheses in call to" in message or re.search(r"^\s*print\s+[\"'\w]", content, re.M):
        return "python2_syntax"
    if re.search(r"^\s*except\s+[\w.]+\s*,\s*\w+\s*:", content, re.M):
        return "python2_syntax"
    return "syntax_error"


_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_OTHER_BREAKS_RE = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CLASS_RE = re.compile(r"class\s+\w")
_METHOD_RE = re.compile(r"([ \t]+)(?:async[ \t]+)?def[ \t]+(\w+)")


def split_lines(content: str) -> list[str]:
    """Lines as the parser counts them (only \\n, \\r\\n and \\r end a line; str.splitlines
    also splits on form feeds and other separators, which would shift line numbers)."""
    if _OTHER_BREAKS_RE.search(content) is None:
        return content.splitlines(keepends=True)  # the same lines, found faster
    return _LINE_RE.findall(content)


def hollow_classes(lines: list[str]) -> tuple[list[str], dict[int, list[tuple[str, int]]]]:
    """Replace the bodies of top-level classes by ``pass``, keeping every line number.

    Methods are only counted (as dropped), never analysed, so parsing them is wasted:
    in library code most of the text is class bodies, and skipping them halves the
    parsing. A body runs until the next line that starts with code at column 0. The
    methods found by indentation are returned, keyed by the class's line number (a
    ``def`` at method indentation inside a docstring counts too: these rows are only
    bookkeeping of what was dropped). If a body's end was misjudged (a column-0 line
    inside a multi-line string), the hollowed text fails to parse and the caller parses
    the original instead; top-level functions are always analysed from a real parse.
    """
    out = list(lines)
    methods: dict[int, list[tuple[str, int]]] = {}
    i, n = 0, len(lines)
    while i < n:
        if not (lines[i].startswith("class") and _CLASS_RE.match(lines[i])):
            i += 1
            continue
        end = i + 1
        while end < n and (not lines[end][:1].strip() or lines[end][0] == "#"):
            end += 1
        header_end = i
        while header_end < end and not lines[header_end].split("#", 1)[0].rstrip().endswith(":"):
            header_end += 1
        if header_end < end - 1:
            found, indent = [], None
            for number in range(header_end + 2, end + 1):  # 1-based line numbers of the body
                line = lines[number - 1]
                stripped = line.strip()
                if indent is None and stripped and not stripped.startswith("#"):
                    indent = len(line) - len(line.lstrip())
                match = _METHOD_RE.match(line) if "def" in line else None
                if match and len(match.group(1)) == indent:
                    found.append((match.group(2), number))
            out[header_end + 1] = " " * (indent or 4) + "pass\n"
            for k in range(header_end + 2, end):
                out[k] = "\n"
            methods[i + 1] = found
        i = end
    return out, methods


def _parse(content: str) -> ast.Module | FileRecord:
    try:
        return ast.parse(content)
    except SyntaxError as exc:
        return FileRecord(_syntax_reason(exc, content), f"line {exc.lineno}: {exc.msg}")
    except (RecursionError, MemoryError):
        return FileRecord("too_deeply_nested")
    except ValueError as exc:
        return FileRecord("binary", str(exc))


def analyse_file(
    content: str | None,
    prefilter: re.Pattern,
    packages: frozenset[str],
    max_bytes: int,
) -> FileRecord:
    """Verdict on one file, and on each of its top-level functions if it gets that far."""
    gate = file_gate(content, prefilter, max_bytes)
    if gate is not None:
        return FileRecord(*gate)
    if not TOP_LEVEL_DEF_RE.search(content):
        return FileRecord("no_top_level_function")
    lines = split_lines(content)
    hollowed, methods = hollow_classes(lines)
    tree: ast.Module | FileRecord | None = None
    if methods:
        try:
            tree = ast.parse("".join(hollowed))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            methods = {}
    if not isinstance(tree, ast.Module):
        tree = _parse(content)
        if isinstance(tree, FileRecord):
            return tree
    scope = ModuleScope.of(tree)
    result = FileRecord(None)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            try:
                result.functions.append(analyse_function(node, scope, lines, packages))
            except RecursionError:
                result.functions.append(FunctionRecord(node.name, node.lineno, "too_deeply_nested"))
        elif isinstance(node, ast.AsyncFunctionDef):
            result.functions.append(FunctionRecord(node.name, node.lineno, "async_function"))
        elif isinstance(node, ast.ClassDef):
            if node.lineno in methods:
                found = methods[node.lineno]
            else:
                found = [
                    (m.name, m.lineno) for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                ]
            result.functions += [FunctionRecord(f"{node.name}.{name}", lineno, "method") for name, lineno in found]
    if not result.functions:
        return FileRecord("no_top_level_function")
    return result
