"""JavaScript retrieval: which files to parse, which functions to keep, and why not.

The same rules as Python's (``processing.languages.python.functions``), read with
tree-sitter: a text prefilter on ``require``/``import`` of a target package, a parse, then
one verdict per top-level function (``function f(...)``, exported or not, and ``const f =
function / arrow``). A kept function has a parameter, returns a value, and every free name
is a parameter, a local, a JavaScript or Node global, its own name, or bound at top level by
a ``require``/``import`` of a Node built-in or a target package, at least one of which is a
target. Its ``code`` is exactly the require/import lines it uses (rebuilt with only the
names it uses, in file order) followed by its source (with the JSDoc comment just above
it), so it defines on its own in a fresh ``node``. Methods of top-level classes are
recorded as dropped (``method``), as Python's are.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from tree_sitter import Node

from processing.languages.common import file_gate
from processing.languages.javascript.syntax import (
    DECLARATION_TYPES,
    FUNCTION_TYPES,
    TOKEN_RE,
    leaf_tokens,
    line,
    parse,
    string_value,
    text,
    top_level_functions,
    walk,
)
from processing.languages.python.functions import FileRecord, FunctionRecord

SUFFIXES = (".js", ".mjs", ".cjs")  # the source files retrieval reads from folders of code

# Node's built-in modules (``require('module').builtinModules``, Node 20/24), without subpaths.
NODE_BUILTINS = frozenset(
    """assert async_hooks buffer child_process cluster console constants crypto dgram diagnostics_channel dns
    domain events fs http http2 https inspector module net os path perf_hooks process punycode querystring
    readline repl stream string_decoder sys test timers tls trace_events tty url util v8 vm wasi worker_threads
    zlib sqlite sea""".split()
)

# ECMAScript globals and the Node globals a self-contained function may use.
GLOBAL_NAMES = frozenset(
    """undefined NaN Infinity globalThis arguments
    Object Function Array Number Boolean String Symbol BigInt Math JSON Date RegExp Error AggregateError EvalError
    RangeError ReferenceError SyntaxError TypeError URIError Map Set WeakMap WeakSet WeakRef FinalizationRegistry
    Promise Proxy Reflect ArrayBuffer SharedArrayBuffer DataView Atomics Int8Array Uint8Array Uint8ClampedArray
    Int16Array Uint16Array Int32Array Uint32Array Float32Array Float64Array BigInt64Array BigUint64Array Intl
    parseInt parseFloat isNaN isFinite encodeURI encodeURIComponent decodeURI decodeURIComponent escape unescape
    eval Iterator
    Buffer process console setTimeout clearTimeout setInterval clearInterval setImmediate clearImmediate
    queueMicrotask structuredClone atob btoa URL URLSearchParams TextEncoder TextDecoder AbortController
    AbortSignal Event EventTarget MessageChannel MessagePort MessageEvent Blob File FormData Headers Request
    Response fetch performance crypto WebAssembly BroadcastChannel DOMException navigator global CustomEvent
    ReadableStream WritableStream TransformStream ReadableStreamDefaultReader WritableStreamDefaultWriter
    ByteLengthQueuingStrategy CountQueuingStrategy TextEncoderStream TextDecoderStream CompressionStream
    DecompressionStream WebSocket""".split()
)

_PATTERNS = frozenset({"object_pattern", "array_pattern", "rest_pattern", "pair_pattern", "assignment_pattern",
                       "object_assignment_pattern"})  # fmt: skip
_LOOPS = frozenset({"for_statement", "for_in_statement", "while_statement", "do_statement"})


def tokens(source: str) -> list[str]:
    """The tokens dedup and decontamination compare (names, numbers, single symbols)."""
    return TOKEN_RE.findall(source)


def normalized_tokens(source: str) -> list[str]:
    """Tokens of the source without whitespace, semicolons and comment markers, as kept
    functions' tokens are made (comments' words included: a MultiPL-E problem is its
    description in a comment, a signature and tests); source that does not parse is
    tokenised as it is."""
    tree, data = parse(source)
    if tree.root_node.has_error:
        return tokens(source)
    return tokens(" ".join(leaf_tokens(tree.root_node, data, comments=True)))


def package_of(specifier: str) -> str:
    """The package a module specifier names: ``node:fs/promises`` -> ``fs``, ``@a/b/c`` -> ``@a/b``."""
    if specifier.startswith("node:"):
        specifier = specifier[5:]
    parts = specifier.split("/")
    return "/".join(parts[:2]) if specifier.startswith("@") else parts[0]


def is_relative(specifier: str) -> bool:
    return specifier.startswith((".", "/")) or "://" in specifier


def import_prefilter(packages: tuple[str, ...]) -> re.Pattern:
    """A regex that finds a ``require``/``import`` of any target package (a subpath, such as
    ``lodash/fp``, and a ``node:`` prefix count)."""
    names = sorted({package_of(p) for p in packages}, key=len, reverse=True)
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(
        rf"""(?:\brequire\s*\(\s*|\bfrom\s*|\bimport\s*\(?\s*)['"`](?:node:)?(?:{alternatives})(?:/[^'"`]*)?['"`]"""
    )


# --------------------------------------------------------------------------- module scope


@dataclass
class Binding:
    """A name bound at top level by a require or an import."""

    line: str  # the statement that binds only this name, e.g. "const { join } = require('path');"
    package: str  # e.g. "path", "lodash", "@scope/pkg"
    relative: bool
    position: tuple[int, int]  # (byte offset of the statement, index), to keep file order
    esm: bool


def require_specifier(node: Node | None, data: bytes) -> tuple[str | None, Node | None]:
    """(specifier, the require call) when ``node`` is ``require('m')`` or a member chain on it."""
    while node is not None and node.type == "member_expression":
        node = node.child_by_field_name("object")
    if node is None or node.type != "call_expression":
        return None, None
    function = node.child_by_field_name("function")
    arguments = node.child_by_field_name("arguments")
    if function is None or text(function, data) != "require" or arguments is None:
        return None, None
    args = arguments.named_children
    if len(args) != 1:
        return None, None
    return string_value(args[0], data), node


def pattern_names(node: Node, data: bytes) -> list[str]:
    """Names a binding pattern (an identifier, or an object/array destructuring) binds."""
    names = []
    for current in walk(node):
        if current.type in ("identifier", "shorthand_property_identifier_pattern") and _binds(current):
            names.append(text(current, data))
    return names


def _binds(identifier: Node) -> bool:
    """Whether this identifier sits in a binding position of a pattern (not a default value or a key)."""
    node = identifier
    parent = node.parent
    while parent is not None and parent.type in _PATTERNS:
        if parent.type in ("assignment_pattern", "object_assignment_pattern"):
            if parent.child_by_field_name("left") != node:
                return False
        elif parent.type == "pair_pattern" and parent.child_by_field_name("value") != node:
            return False
        node, parent = parent, parent.parent
    return True


def _simple_object_pattern(pattern: Node, data: bytes) -> list[tuple[str, str]] | None:
    """[(key, local)] of ``{a, b: c}``; None for anything richer (defaults, nesting, rest)."""
    out = []
    for child in pattern.named_children:
        if child.type == "shorthand_property_identifier_pattern":
            out.append((text(child, data), text(child, data)))
        elif child.type == "pair_pattern":
            key, value = child.child_by_field_name("key"), child.child_by_field_name("value")
            if key is None or value is None or key.type != "property_identifier" or value.type != "identifier":
                return None
            out.append((text(key, data), text(value, data)))
        elif child.type != "comment":
            return None
    return out


@dataclass
class ModuleScope:
    imports: dict[str, list[Binding]] = field(default_factory=dict)
    conditional_imports: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, root: Node, data: bytes) -> ModuleScope:
        scope = cls()

        def bind(name: str, statement: str, specifier: str, position: tuple[int, int], esm: bool) -> None:
            binding = Binding(statement, package_of(specifier), is_relative(specifier), position, esm)
            scope.imports.setdefault(name, []).append(binding)

        for statement in root.named_children:
            node = statement
            if node.type == "export_statement" and node.child_by_field_name("declaration") is not None:
                node = node.child_by_field_name("declaration")
            if node.type == "import_statement":
                specifier = string_value(node.child_by_field_name("source"), data)
                clause = next((c for c in node.named_children if c.type == "import_clause"), None)
                if clause is None or specifier is None:
                    continue
                for index, part in enumerate(clause.named_children):
                    quoted = json.dumps(specifier)
                    if part.type == "identifier":
                        bind(text(part, data), f"import {text(part, data)} from {quoted};", specifier,
                             (node.start_byte, index), True)  # fmt: skip
                    elif part.type == "namespace_import":
                        name = next(c for c in part.named_children if c.type == "identifier")
                        bind(text(name, data), f"import * as {text(name, data)} from {quoted};", specifier,
                             (node.start_byte, index), True)  # fmt: skip
                    elif part.type == "named_imports":
                        for sub, spec in enumerate(c for c in part.named_children if c.type == "import_specifier"):
                            alias = spec.child_by_field_name("alias") or spec.child_by_field_name("name")
                            bind(text(alias, data), f"import {{ {text(spec, data)} }} from {quoted};", specifier,
                                 (node.start_byte, index * 1000 + sub), True)  # fmt: skip
                continue
            if node.type in ("lexical_declaration", "variable_declaration"):
                kind = text(node.children[0], data)
                for index, declarator in enumerate(c for c in node.named_children if c.type == "variable_declarator"):
                    name_node = declarator.child_by_field_name("name")
                    specifier, call = require_specifier(declarator.child_by_field_name("value"), data)
                    if specifier is None or name_node is None:
                        if name_node is not None:
                            scope.defined.update(pattern_names(name_node, data))
                        continue
                    value = text(declarator.child_by_field_name("value"), data)
                    position = (node.start_byte, index * 1000)
                    pairs = _simple_object_pattern(name_node, data) if name_node.type == "object_pattern" else None
                    if name_node.type == "identifier":
                        bind(text(name_node, data), f"{kind} {text(name_node, data)} = {value};", specifier, position,
                             False)  # fmt: skip
                    elif pairs is not None:
                        for sub, (key, local) in enumerate(pairs):
                            part = key if key == local else f"{key}: {local}"
                            bind(local, f"{kind} {{ {part} }} = {value};", specifier,
                                 (position[0], position[1] + sub), False)  # fmt: skip
                    else:
                        for local in pattern_names(name_node, data):
                            bind(local, f"{kind} {text(declarator, data)};", specifier, position, False)
                continue
            if node.type in DECLARATION_TYPES or node.type == "class_declaration":
                name = node.child_by_field_name("name")
                if name is not None:
                    scope.defined.add(text(name, data))
                continue
            # declarations and assignments nested in if/try/blocks at top level (not in functions)
            for sub in _own_nodes_of(node):
                if sub.type == "variable_declarator" and sub.child_by_field_name("name") is not None:
                    names = pattern_names(sub.child_by_field_name("name"), data)
                    if require_specifier(sub.child_by_field_name("value"), data)[0] is not None:
                        scope.conditional_imports.update(names)
                    else:
                        scope.defined.update(names)
                elif sub.type in ("assignment_expression", "augmented_assignment_expression"):
                    left = sub.child_by_field_name("left")
                    if left is not None and left.type == "identifier":
                        scope.defined.add(text(left, data))
        # a name both imported and declared again (or assigned) at top level is a module global
        for name in list(scope.imports):
            if name in scope.defined:
                del scope.imports[name]
        scope.conditional_imports -= set(scope.imports)
        return scope


# --------------------------------------------------------------------------- one function


def _declared_names(function: Node, data: bytes) -> set[str]:
    """Every name declared anywhere in the function (parameters, variables, inner functions,
    classes, catch parameters), block scope ignored as Python's rules ignore it."""
    names: set[str] = set()
    for node in walk(function):
        kind = node.type
        if kind in ("formal_parameters",):
            for child in node.named_children:
                names.update(pattern_names(child, data))
        elif kind == "arrow_function":
            parameter = node.child_by_field_name("parameter")
            if parameter is not None:
                names.add(text(parameter, data))
        elif kind == "variable_declarator":
            name = node.child_by_field_name("name")
            if name is not None:
                names.update(pattern_names(name, data))
        elif kind in ("function_declaration", "generator_function_declaration", "class_declaration",
                      "function_expression", "function", "generator_function", "class"):  # fmt: skip
            name = node.child_by_field_name("name")
            if name is not None:
                names.add(text(name, data))
        elif kind == "catch_clause":
            parameter = node.child_by_field_name("parameter")
            if parameter is not None:
                names.update(pattern_names(parameter, data))
        elif kind == "for_in_statement" and node.child_by_field_name("kind") is not None:
            left = node.child_by_field_name("left")
            if left is not None:
                names.update(pattern_names(left, data))
    return names


def _references(function: Node, data: bytes) -> list[tuple[str, Node]]:
    """Identifiers read or written that are not declarations."""
    out = []
    for node in walk(function):
        if node.type == "shorthand_property_identifier":
            out.append((text(node, data), node))
        elif node.type == "identifier":
            parent = node.parent
            if parent is not None and parent.type in (
                "variable_declarator", "function_declaration", "generator_function_declaration", "class_declaration",
                "function_expression", "function", "generator_function", "class",
            ) and parent.child_by_field_name("name") == node:  # fmt: skip
                continue
            if parent is not None and parent.type in _PATTERNS | {"formal_parameters", "catch_clause"} and _binds(node):
                if _declaring_pattern(node):
                    continue
            if (
                parent is not None
                and parent.type == "arrow_function"
                and parent.child_by_field_name("parameter") == node
            ):
                continue
            if parent is not None and parent.type == "for_in_statement" and parent.child_by_field_name("kind"):
                if parent.child_by_field_name("left") == node:
                    continue
            out.append((text(node, data), node))
    return out


def _declaring_pattern(identifier: Node) -> bool:
    """Whether a pattern identifier declares (a parameter, a catch or a declarator's pattern),
    rather than assigns (``[a, b] = [b, a]``)."""
    node = identifier.parent
    while node is not None and node.type in _PATTERNS:
        node = node.parent
    if node is None:
        return False
    if node.type in ("formal_parameters", "catch_clause", "variable_declarator"):
        return True
    return node.type == "for_in_statement" and node.child_by_field_name("kind") is not None


def _own_nodes(function: Node):
    """Nodes of the function's body, not descending into nested functions."""
    body = function.child_by_field_name("body")
    return _own_nodes_of(body) if body is not None else iter(())


def _own_nodes_of(node: Node):
    """``node`` and the nodes below it, not descending into functions or classes."""
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(
            child for child in node.children if child.type not in FUNCTION_TYPES and child.type != "class_body"
        )


def _returns_value(function: Node, data: bytes) -> bool:
    body = function.child_by_field_name("body")
    if body is not None and body.type != "statement_block":  # an arrow's expression body
        return text(body, data) != "undefined" and not (
            body.type == "unary_expression" and text(body, data).startswith("void")
        )
    for node in _own_nodes(function):
        if node.type == "return_statement":
            values = [c for c in node.named_children if c.type != "comment"]
            if values and text(values[0], data) != "undefined" and not text(values[0], data).startswith("void "):
                return True
    return False


def _jsdoc_start(statement: Node, data: bytes) -> Node:
    """The node where the function's source starts: a ``/** ... */`` comment right above it, or itself."""
    previous = statement.prev_sibling
    if statement.parent is not None and statement.parent.type == "export_statement":
        previous = statement.parent.prev_sibling
    if (
        previous is not None
        and previous.type == "comment"
        and text(previous, data).startswith("/**")
        and statement.start_point[0] - previous.end_point[0] <= 1
        and data[previous.end_byte : statement.start_byte].strip() in (b"", b"export")
    ):
        return previous
    return statement


def analyse_function(
    name: str, statement: Node, function: Node, data: bytes, scope: ModuleScope, packages: frozenset[str]
) -> FunctionRecord:
    record = FunctionRecord(name, line(statement), None)
    start = _jsdoc_start(statement, data)
    line_start = start.start_byte - start.start_point[1]
    begin = line_start if not data[line_start : start.start_byte].strip() else start.start_byte  # "export " is left out
    source = data[begin : statement.end_byte].decode("utf-8", "replace")
    source = source.rstrip() + "\n"

    def drop(reason: str, detail: str = "") -> FunctionRecord:
        record.drop_reason, record.detail, record.code = reason, detail, source
        return record

    parameters = function.child_by_field_name("parameters")
    has_parameter = function.child_by_field_name("parameter") is not None or (
        parameters is not None and any(c.type != "comment" for c in parameters.named_children)
    )
    if not has_parameter:
        return drop("no_arguments")
    if function.type in ("generator_function_declaration", "generator_function") or any(
        n.type == "yield_expression" for n in _own_nodes(function)
    ):
        return drop("generator")
    for node in walk(function):
        if node.type == "call_expression":
            callee = node.child_by_field_name("function")
            if (
                callee is not None
                and callee.type == "import"
                or (callee is not None and text(callee, data) == "require")
            ):
                return drop("local_import", text(node, data)[:200])
    for node in _own_nodes(function):
        if node.type == "this":
            return drop("uses_this")
    if not _returns_value(function, data):
        return drop("no_return")
    declared = _declared_names(function, data)
    used: dict[str, list[Binding]] = {}
    for ident, _node in _references(function, data):
        if ident in declared or ident == name or ident in used:
            continue
        if ident in scope.imports:
            used[ident] = scope.imports[ident]
        elif ident in scope.conditional_imports:
            return drop("conditional_import", ident)
        elif ident in scope.defined:
            return drop("uses_module_globals", ident)
        elif ident in GLOBAL_NAMES:
            continue
        elif ident in ("require", "module", "exports", "__dirname", "__filename"):
            return drop("uses_module_globals", ident)
        else:
            return drop("undefined_name", ident)
    bindings = sorted((b for n in used for b in used[n]), key=lambda b: b.position)
    for binding in bindings:
        if binding.relative:
            return drop("relative_import", binding.line)
        if binding.package not in NODE_BUILTINS and binding.package not in packages:
            return drop("unavailable_import", binding.line)
    if len({b.esm for b in bindings}) > 1:
        return drop("mixed_module_formats", "the function uses both require and import bindings")
    used_packages = sorted({b.package for b in bindings if b.package in packages})
    if not used_packages:
        return drop("no_target_usage")
    import_lines = list(dict.fromkeys(b.line for b in bindings))
    record.code = "\n".join(import_lines) + "\n\n" + source
    record.imports = import_lines
    record.packages = used_packages
    leaves = leaf_tokens(statement, data)
    record.exact_key = hashlib.sha1(" ".join(leaves).encode("utf-8")).hexdigest()
    # dedup and decontamination read the JSDoc and the comments inside too (normalized_tokens)
    described = leaf_tokens(start, data, comments=True) if start is not statement else []
    record.tokens = tokens(" ".join(described + leaf_tokens(statement, data, comments=True)))
    return record


# --------------------------------------------------------------------------- one file


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
    if "function" not in content and "=>" not in content:
        return FileRecord("no_top_level_function")
    tree, data = parse(content)
    root = tree.root_node
    if root.has_error:
        error = next((n for n in walk(root) if n.is_error or n.is_missing), root)
        return FileRecord(
            "syntax_error", f"line {line(error)}: {'missing ' + error.type if error.is_missing else 'unexpected text'}"
        )
    scope = ModuleScope.of(root, data)
    targets = frozenset(package_of(p) for p in packages)
    result = FileRecord(None)
    seen: set[int] = set()
    for name, statement, function in top_level_functions(root, data):
        seen.add(statement.start_byte)
        result.functions.append(analyse_function(name, statement, function, data, scope, targets))
    for statement in root.named_children:
        node = statement.child_by_field_name("declaration") if statement.type == "export_statement" else statement
        if node is not None and node.type == "class_declaration":
            class_name = node.child_by_field_name("name")
            body = node.child_by_field_name("body")
            for member in body.named_children if body is not None else ():
                if member.type == "method_definition":
                    method = member.child_by_field_name("name")
                    result.functions.append(
                        FunctionRecord(f"{text(class_name, data)}.{text(method, data)}", line(member), "method")
                    )
    result.functions.sort(key=lambda f: f.lineno)
    if not result.functions:
        return FileRecord("no_top_level_function")
    return result
