"""Python code out of model answers: one helper for every step that reads an answer.

``code_blocks`` finds the fenced Python (or untagged) blocks; ``code_from_answer`` picks
the block that defines a function (fix, refine, evaluation); ``parse_test_answer`` cuts a
usable ``unittest`` module out of a test-writing answer. Rejected answers say why:
``no_answer``, ``no_code``, ``no_function_in_answer``, ``unparseable_tests``,
``no_test_methods``, ``redefines_function``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from processing.languages.common import function_from_answer, parse_trimmed, test_candidates
from sandbox.static import count_tests

FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)(?:```|\Z)", re.S)
CODE_START_RE = re.compile(r"^(import |from |class |def |@|#|\"\"\"|''')")
PYTHON_TAGS = ("", "python", "py", "python3")
ANSWER_EXCERPT = 2000
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)


def code_blocks(answer: str) -> list[str]:
    """The fenced Python (or untagged) code blocks of an answer, in order; an unclosed last fence counts."""
    return [body for lang, body in FENCE_RE.findall(answer) if lang.lower() in PYTHON_TAGS]


def _parses(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except _PARSE_ERRORS:
        return None


def _defines(tree: ast.Module | None, name: str) -> bool:
    return tree is not None and any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body
    )


def code_from_answer(answer: str | None, function_name: str, lenient: bool = False) -> tuple[str | None, str]:
    """(code, why not): the first code block (or the whole answer) that defines
    ``function_name`` at top level.

    With ``lenient`` (evaluation, where an answer may be a body only), an answer without
    such a block still gives code: its first block that parses, else its first block,
    else the answer itself.
    """
    return function_from_answer(
        answer,
        code_blocks(answer) if answer is not None else [],
        lambda source: _defines(_parses(source), function_name),
        lambda source: _parses(source) is not None,
        lenient,
    )


@dataclass
class ParsedTests:
    test_code: str | None
    drop_reason: str | None
    detail: str = ""


def _test_candidates(answer: str) -> list[str]:
    """Code blocks of the answer, those that look like tests first; the whole answer last."""
    return test_candidates(code_blocks(answer), answer, lambda block: "TestCase" in block or "unittest" in block)


def _parse_trimmed(text: str) -> tuple[ast.Module, str] | None:
    """Parse ``text``; failing that, cut chatter before the first code-looking line and
    lines after the code, a few at a time."""
    return parse_trimmed(text, _parses, CODE_START_RE)


def _names_bound(node: ast.stmt) -> set[str]:
    """Names a module-level statement binds by definition or assignment (imports aside)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
    return set()


def _binds_name(node: ast.stmt, name: str) -> bool:
    return name in _names_bound(node)


def bound_names(test_code: str) -> set[str]:
    """Names a test module binds at module level (classes, functions, assignments; not imports)."""
    tree = _parses(test_code)
    return set().union(*(_names_bound(node) for node in tree.body)) if tree is not None else set()


def parse_test_answer(answer: str | None, function_name: str, code: str | None = None) -> ParsedTests:
    """Cut a usable test module out of a model's answer, or say why there is none. (``code``,
    the function's, is part of the language interface; Python's tests do not depend on it.)"""
    if answer is None:
        return ParsedTests(None, "no_answer", "the model gave no answer")
    if not answer.strip():
        return ParsedTests(None, "no_code", "the answer is empty")
    parsed = None
    for candidate in _test_candidates(answer):
        parsed = _parse_trimmed(candidate)
        if parsed is not None and count_tests(parsed[0]).count:
            break
    if parsed is None:
        return ParsedTests(None, "unparseable_tests", answer[:ANSWER_EXCERPT])
    tree, source = parsed
    lines = source.splitlines(keepends=True)
    drop_lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == function_name for a in node.names):
            # "from solution import f": the function is already in the module
            drop_lines.update(range(node.lineno - 1, node.end_lineno))
        elif _binds_name(node, function_name):
            return ParsedTests(
                None, "redefines_function", f"the tests define {function_name} again (line {node.lineno})"
            )
    if not count_tests(tree).count:
        return ParsedTests(None, "no_test_methods", answer[:ANSWER_EXCERPT])
    test_code = "".join(line for i, line in enumerate(lines) if i not in drop_lines)
    imports_unittest = any(
        isinstance(node, ast.Import) and any(a.name == "unittest" and not a.asname for a in node.names)
        for node in tree.body
    )
    if not imports_unittest and "unittest." in test_code:
        test_code = "import unittest\n" + test_code
    return ParsedTests(test_code.strip("\n") + "\n", None)
