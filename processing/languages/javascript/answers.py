"""JavaScript code out of model answers, mirroring ``processing.languages.python.answers``.

``code_blocks`` finds the fenced JavaScript (or untagged) blocks; ``code_from_answer``
picks the block that defines a function; ``parse_test_answer`` cuts a usable ``node:test``
module out of a test-writing answer. Tests are ``test(...)``/``it(...)`` calls, at top
level or in ``describe(...)``/``suite(...)`` callbacks, with ``node:assert/strict``. The
module format is the tests' own (CommonJS ``require`` or ESM ``import``); a file with both
is rejected, and so is one whose format differs from the code's when the code is given.
The number of tests is known statically (``ParsedTests.count``), so a runner can require
exactly that many to pass; tests whose number cannot be known without running them
(calls in loops or helpers, computed names, subtests) are rejected as ``dynamic_tests``.
Rejected answers say why: ``no_answer``, ``no_code``, ``no_function_in_answer``,
``unparseable_tests``, ``no_test_methods``, ``redefines_function``, ``mixed_module_formats``,
``module_format_mismatch``, ``dynamic_tests``, ``skipped_tests``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tree_sitter import Node

from processing.languages.common import function_from_answer, parse_trimmed, test_candidates
from processing.languages.javascript.functions import is_relative, pattern_names, require_specifier
from processing.languages.javascript.syntax import FUNCTION_TYPES, parse, string_value, target, text, walk

FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)(?:```|\Z)", re.S)
CODE_START_RE = re.compile(
    r"^(import[ {*]|export |const |let |var |function |async function |class |describe\(|suite\(|test\(|it\(|//|/\*|"
    r"['\"]use strict|require\()"
)
JAVASCRIPT_TAGS = ("", "javascript", "js", "mjs", "cjs", "node", "nodejs")
ANSWER_EXCERPT = 2000
TEST_MODULES = ("node:test", "test")
ASSERT_MODULE = "node:assert/strict"
TEST_ROLES = {"test": "test", "it": "test", "describe": "describe", "suite": "describe"}
HOOKS = ("before", "after", "beforeEach", "afterEach")
SKIPPING = ("skip", "todo")
COMMONJS, ESM = "commonjs", "esm"


def code_blocks(answer: str) -> list[str]:
    """The fenced JavaScript (or untagged) code blocks of an answer, in order; an unclosed last fence counts."""
    return [body for lang, body in FENCE_RE.findall(answer) if lang.lower() in JAVASCRIPT_TAGS]


def _parses(source: str) -> Node | None:
    tree, _ = parse(source)
    return None if tree.root_node.has_error else tree.root_node


def code_from_answer(answer: str | None, function_name: str, lenient: bool = False) -> tuple[str | None, str]:
    """(code, why not): the first code block (or the whole answer) that defines
    ``function_name`` at top level; with ``lenient``, as Python's (first block that parses,
    else the first block, else the answer)."""
    return function_from_answer(
        answer,
        code_blocks(answer) if answer is not None else [],
        lambda source: target(source, function_name) is not None,
        lambda source: _parses(source) is not None,
        lenient,
    )


@dataclass
class ParsedTests:
    test_code: str | None
    drop_reason: str | None
    detail: str = ""
    count: int | None = None  # the tests the runner must see pass (test/it calls)
    module_format: str | None = None  # "commonjs" or "esm"


def module_format(root: Node, data: bytes) -> str | None:
    """``esm`` (import/export statements, ``import.meta``), ``commonjs`` (``require`` calls,
    ``module.exports``/``exports``), ``mixed`` (both) or None (neither)."""
    esm = cjs = False
    for node in walk(root):
        kind = node.type
        if kind in ("import_statement", "export_statement") or (
            kind == "meta_property" and text(node, data).startswith("import.")
        ):
            esm = True
        elif kind == "call_expression":
            function = node.child_by_field_name("function")
            cjs = cjs or (function is not None and function.type == "identifier" and text(function, data) == "require")
        elif kind == "member_expression":  # module.exports, exports.x
            obj, prop = node.child_by_field_name("object"), node.child_by_field_name("property")
            if obj is not None and obj.type == "identifier" and text(obj, data) in ("module", "exports"):
                cjs = cjs or text(obj, data) == "exports" or (prop is not None and text(prop, data) == "exports")
    return "mixed" if esm and cjs else ESM if esm else COMMONJS if cjs else None


def code_module_format(code: str) -> str | None:
    """The module format of ``code`` (see ``module_format``); None when it does not parse."""
    tree, data = parse(code)
    return None if tree.root_node.has_error else module_format(tree.root_node, data)


def _statement_bindings(node: Node, data: bytes) -> tuple[list[str], str | None]:
    """(names a top-level statement binds, the module specifier it imports or requires, if any)."""
    if node.type == "export_statement" and node.child_by_field_name("declaration") is not None:
        node = node.child_by_field_name("declaration")
    if node.type == "import_statement":
        names = []
        for clause in (c for c in node.named_children if c.type == "import_clause"):
            for part in walk(clause):
                if part.type == "identifier" and part.parent is not None and part.parent.type != "import_specifier":
                    names.append(text(part, data))
                elif part.type == "import_specifier":
                    alias = part.child_by_field_name("alias") or part.child_by_field_name("name")
                    names.append(text(alias, data))
        return names, string_value(node.child_by_field_name("source"), data)
    if node.type in ("function_declaration", "generator_function_declaration", "class_declaration"):
        name = node.child_by_field_name("name")
        return ([text(name, data)] if name is not None else []), None
    if node.type in ("lexical_declaration", "variable_declaration"):
        names, specifier = [], None
        for declarator in (c for c in node.named_children if c.type == "variable_declarator"):
            name = declarator.child_by_field_name("name")
            if name is not None:
                names += pattern_names(name, data)
            specifier = specifier or require_specifier(declarator.child_by_field_name("value"), data)[0]
        return names, specifier
    return [], None


def _module_bindings(code: str) -> dict[str, str | None]:
    """{name: the module it is imported from, or None} for every top-level binding of ``code``."""
    root = _parses(code)
    if root is None:
        return {}
    data = code.encode("utf-8", "surrogatepass")
    bindings: dict[str, str | None] = {}
    for node in root.named_children:
        names, specifier = _statement_bindings(node, data)
        for name in names:
            bindings.setdefault(name, specifier)
    return bindings


def _same_module(first: str | None, second: str | None) -> bool:
    """Whether two module specifiers name the same module (``node:fs`` is ``fs``)."""
    if first is None or second is None:
        return False
    return first.removeprefix("node:") == second.removeprefix("node:")


def bound_names(test_code: str) -> set[str]:
    """Names a test module binds at top level, imports included: in JavaScript any second
    declaration of a name in one module is a SyntaxError, so tests that grow may bind none
    of them again."""
    return set(_module_bindings(test_code))


# ----------------------------------------------------------------------------- counting tests


class DynamicTests(Exception):
    """The number of tests cannot be known without running the code."""


class SkippedTests(Exception):
    """A test is skipped or a to-do: it would never pass."""


def _test_names(root: Node, data: bytes) -> dict[str, str]:
    """Local name -> role ("test" or "describe") of what the module imports from node:test, and
    of the usual names it uses without binding them."""
    names: dict[str, str] = {}
    for node in root.named_children:
        if node.type == "import_statement":
            if string_value(node.child_by_field_name("source"), data) not in TEST_MODULES:
                continue
            for part in walk(node):
                if part.type == "import_specifier":
                    original = text(part.child_by_field_name("name"), data)
                    alias = part.child_by_field_name("alias") or part.child_by_field_name("name")
                    names[text(alias, data)] = TEST_ROLES.get(original, "hook" if original in HOOKS else "other")
                elif part.type == "identifier" and part.parent is not None and part.parent.type == "import_clause":
                    names[text(part, data)] = "test"  # the default export is test()
        elif node.type in ("lexical_declaration", "variable_declaration"):
            for declarator in (c for c in node.named_children if c.type == "variable_declarator"):
                specifier, call = require_specifier(declarator.child_by_field_name("value"), data)
                if specifier not in TEST_MODULES:
                    continue
                name, value = declarator.child_by_field_name("name"), declarator.child_by_field_name("value")
                if name.type == "identifier":
                    member = value.child_by_field_name("property") if value.type == "member_expression" else None
                    original = text(member, data) if member is not None else "test"
                    names[text(name, data)] = TEST_ROLES.get(original, "other")
                elif name.type == "object_pattern":
                    for child in name.named_children:
                        if child.type == "shorthand_property_identifier_pattern":
                            names[text(child, data)] = TEST_ROLES.get(text(child, data), "other")
                        elif child.type == "pair_pattern":
                            key, local = child.child_by_field_name("key"), child.child_by_field_name("value")
                            names[text(local, data)] = TEST_ROLES.get(text(key, data), "other")
    bound = {name for node in root.named_children for name in _statement_bindings(node, data)[0]}
    for name, role in TEST_ROLES.items():  # used without an import: the import is added later
        if name not in bound:
            names.setdefault(name, role)
    return {k: v for k, v in names.items() if v in ("test", "describe")}


def _test_call(statement: Node, names: dict[str, str], data: bytes) -> tuple[Node, str] | None:
    """(call, role) when a statement is ``[await] test(...)``/``describe(...)`` (or ``.only``)."""
    if statement.type != "expression_statement" or not statement.named_children:
        return None
    expression = statement.named_children[0]
    if expression.type == "await_expression" and expression.named_children:
        expression = expression.named_children[0]
    if expression.type != "call_expression":
        return None
    callee = expression.child_by_field_name("function")
    modifier = None
    if callee is not None and callee.type == "member_expression":
        modifier = text(callee.child_by_field_name("property"), data)
        callee = callee.child_by_field_name("object")
    if callee is None or callee.type != "identifier" or text(callee, data) not in names:
        return None
    if modifier in SKIPPING:
        raise SkippedTests(f"line {statement.start_point[0] + 1}: {text(statement, data)[:80]}")
    if modifier not in (None, "only"):
        return None
    return expression, names[text(callee, data)]


def _mentions_tests(node: Node, names: dict[str, str], data: bytes) -> bool:
    for sub in walk(node):
        if sub.type == "call_expression":
            callee = sub.child_by_field_name("function")
            if callee is not None and callee.type == "member_expression":
                callee = callee.child_by_field_name("object")
            if callee is not None and callee.type == "identifier" and text(callee, data) in names:
                return True
    return False


def _has_subtests(body: Node, context: str | None, data: bytes) -> bool:
    """Whether a test's body calls ``t.test(...)`` on its context ``t``."""
    for sub in walk(body):
        if context is not None and sub.type == "call_expression":
            callee = sub.child_by_field_name("function")
            if callee is not None and callee.type == "member_expression":
                obj, prop = callee.child_by_field_name("object"), callee.child_by_field_name("property")
                if obj is not None and text(obj, data) == context and prop is not None and text(prop, data) == "test":
                    return True
    return False


def _callback(call: Node) -> Node | None:
    arguments = call.child_by_field_name("arguments")
    functions = [a for a in arguments.named_children if a.type in FUNCTION_TYPES] if arguments is not None else []
    return functions[-1] if functions else None


def _count_block(statements: list[Node], names: dict[str, str], data: bytes) -> int:
    count = 0
    for statement in statements:
        found = _test_call(statement, names, data)
        if found is None:
            if _mentions_tests(statement, names, data):
                raise DynamicTests(
                    f"line {statement.start_point[0] + 1}: tests made in a loop, a condition or a helper"
                )
            continue
        call, role = found
        arguments = call.child_by_field_name("arguments").named_children
        first = arguments[0] if arguments else None
        if first is not None and first.type not in FUNCTION_TYPES and string_value(first, data) is None:
            raise DynamicTests(f"line {statement.start_point[0] + 1}: a computed test name")
        callback = _callback(call)
        body = callback.child_by_field_name("body") if callback is not None else None
        if role == "describe":
            if body is None or body.type != "statement_block":
                raise DynamicTests(f"line {statement.start_point[0] + 1}: a describe without a callback body")
            count += _count_block(list(body.named_children), names, data)
            continue
        if body is not None:
            parameters = callback.child_by_field_name("parameters")
            context = parameters.named_children[0] if parameters is not None and parameters.named_children else None
            context = context if context is not None else callback.child_by_field_name("parameter")
            context_name = text(context, data) if context is not None and context.type == "identifier" else None
            if _mentions_tests(body, names, data) or _has_subtests(body, context_name, data):
                raise DynamicTests(f"line {statement.start_point[0] + 1}: tests made inside a test (subtests)")
        count += 1
    return count


def count_tests(test_code: str) -> int | None:
    """The number of tests (test/it calls) the module registers, or None when it does not
    parse, registers tests dynamically or skips some."""
    root = _parses(test_code)
    if root is None:
        return None
    data = test_code.encode("utf-8", "surrogatepass")
    try:
        return _count_block(list(root.named_children), _test_names(root, data), data)
    except (DynamicTests, SkippedTests):
        return None


# ----------------------------------------------------------------------------- parsing answers


def _test_candidates(answer: str) -> list[str]:
    """Code blocks of the answer, those that look like tests first; the whole answer last."""
    return test_candidates(
        code_blocks(answer),
        answer,
        lambda block: "node:test" in block or re.search(r"\b(test|it|describe)\s*\(", block),
    )


def _parse_trimmed(text_: str) -> tuple[Node, str] | None:
    """Parse ``text_``; failing that, cut chatter before the first code-looking line and
    lines after the code, a few at a time."""
    return parse_trimmed(text_, _parses, CODE_START_RE)


def _free_use(root: Node, name: str, data: bytes) -> bool:
    """Whether ``name`` is used as a plain identifier anywhere (a cheap stand-in for "free")."""
    return any(n.type == "identifier" and text(n, data) == name for n in walk(root))


def parse_test_answer(answer: str | None, function_name: str, code: str | None = None) -> ParsedTests:
    """Cut a usable ``node:test`` module out of a model's answer, or say why there is none.

    With ``code``, the tests' module format must be the code's, and an import or require
    of a name the code already imports from the same module is dropped (declaring it twice
    is a SyntaxError); any other declaration of a name the code declares is
    ``redeclares_code_name``. Relative imports of the function (``require('./solution')``)
    are dropped: the function is already in scope.
    ``test``/``describe``/``it``/hooks and ``assert`` used without being bound are provided
    by lines that assign globals (``globalThis.assert ??= process.getBuiltinModule(...)``):
    they work in either module format and declare nothing, so tests appended to other tests
    (strengthening) never declare a name twice, which JavaScript rejects."""
    if answer is None:
        return ParsedTests(None, "no_answer", "the model gave no answer")
    if not answer.strip():
        return ParsedTests(None, "no_code", "the answer is empty")
    parsed = None
    for candidate in _test_candidates(answer):
        attempt = _parse_trimmed(candidate)
        if attempt is not None and count_tests(attempt[1]):
            parsed = attempt
            break
        parsed = parsed or attempt  # the first that parses says why it is unusable
    if parsed is None:
        return ParsedTests(None, "unparseable_tests", answer[:ANSWER_EXCERPT])
    root, source = parsed
    data = source.encode("utf-8", "surrogatepass")
    drop: list[tuple[int, int]] = []
    code_bindings = _module_bindings(code) if code is not None else {}
    for node in root.named_children:
        names, specifier = _statement_bindings(node, data)
        if function_name in names:
            if specifier is not None and is_relative(specifier):
                drop.append((node.start_byte, node.end_byte))  # "require('./solution')": already in scope
                continue
            return ParsedTests(
                None, "redefines_function", f"the tests define {function_name} again (line {node.start_point[0] + 1})"
            )
        shared = [name for name in names if name in code_bindings]
        if not shared:
            continue
        # the code's own import again ("const _ = require('lodash')"): it is in scope already,
        # and declaring it twice would be a SyntaxError
        same = specifier is not None and all(
            name in code_bindings and _same_module(code_bindings[name], specifier) for name in names
        )
        if same:
            drop.append((node.start_byte, node.end_byte))
            continue
        return ParsedTests(
            None,
            "redeclares_code_name",
            f"the tests declare {shared[0]} again (line {node.start_point[0] + 1}), which the code declares",
        )
    for start, end in reversed(drop):
        data = data[:start] + data[end:]
    source = data.decode("utf-8", "surrogatepass")
    root = _parses(source)
    if root is None:
        return ParsedTests(None, "unparseable_tests", answer[:ANSWER_EXCERPT])
    form = module_format(root, data)
    if form == "mixed":
        return ParsedTests(None, "mixed_module_formats", "the tests both import and require")
    code_form = code_module_format(code) if code is not None else None
    if code_form == "mixed":
        return ParsedTests(None, "mixed_module_formats", "the code both imports and requires")
    if form is not None and code_form is not None and form != code_form:
        return ParsedTests(None, "module_format_mismatch", f"the code is {code_form}, the tests are {form}")
    names = _test_names(root, data)
    aliases = sorted(name for name in names if name not in TEST_ROLES)
    if aliases:  # the sandbox counts calls of test/it/describe/suite by name, as the prompt asks
        return ParsedTests(
            None, "aliased_tests", f"the tests call node:test's functions under other names ({', '.join(aliases)})"
        )
    try:
        count = _count_block(list(root.named_children), names, data)
    except DynamicTests as exc:
        return ParsedTests(None, "dynamic_tests", str(exc))
    except SkippedTests as exc:
        return ParsedTests(None, "skipped_tests", str(exc))
    if not count:
        return ParsedTests(None, "no_test_methods", answer[:ANSWER_EXCERPT])
    form = form or code_form
    bound = bound_names(source)
    header = [
        f"globalThis.{name} ??= process.getBuiltinModule('node:test').{name};"
        for name in ("test", "describe", "it", "suite", *HOOKS)
        if name not in bound and _free_use(root, name, data)
    ]
    if "assert" not in bound and _free_use(root, "assert", data):
        header.append(f"globalThis.assert ??= process.getBuiltinModule('{ASSERT_MODULE}');")
    test_code = ("\n".join(header) + "\n" if header else "") + source.strip("\n") + "\n"
    return ParsedTests(test_code, None, count=count, module_format=form)
