"""Mutants of a row's code for mutation testing: small AST-located edits, applied to the text.

Every function defined in ``code`` (the target and its helpers, methods included) is
mutated; import lines and module-level constants are not. Each mutant changes one place:

* ``arithmetic``: a binary or augmented operator swapped (``+``/``-``, ``*``/``/``, ...);
* ``comparison``: ``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``is``/``is not``, ``in``/``not in``;
* ``boolean``: ``and``/``or`` swapped, a ``not`` dropped;
* ``constant``: a number to 0/1/-1 and off by one, a string emptied (or filled), ``True``/
  ``False`` swapped, a non-empty list, tuple or set literal emptied;
* ``negate_condition``: the test of an ``if``, ``while`` or conditional expression negated;
* ``remove_statement``: an expression, assignment or augmented assignment replaced by ``pass``;
* ``return_value``: a returned value replaced by ``None``;
* ``slice_bound``: a slice's lower or upper bound moved by one.

The edit is made on the source text at the node's position (the rest of the file keeps
its layout, so the diff shows one change), and the mutant is kept only if it parses and
differs from the original text. Which mutants a row gets is a seeded sample that takes
each operator in turn (``sample_mutants``), the same for the same code and seed on every
machine. Docstrings are never mutated (a change to one is equivalent by construction).

The operators are our own: the mutation testing tools for Python (mutmut, cosmic-ray)
rewrite files on disk and drive their own test runner, while here a mutant must be a
string handed to the sandbox with the row's tests.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass

from processing.languages.common import sample_in_turns

OPERATORS = (
    "arithmetic",
    "comparison",
    "boolean",
    "constant",
    "negate_condition",
    "remove_statement",
    "return_value",
    "slice_bound",
)

_ARITHMETIC = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitAnd,
}
_SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.MatMult: "@",
}  # fmt: skip
_COMPARISON = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_REMOVABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign)


@dataclass(frozen=True)
class Mutant:
    operator: str
    line: int  # 1-based line of the change in ``code``
    description: str  # what changed, e.g. "a + b -> a - b"
    code: str  # the whole mutated program

    def diff(self, original: str) -> str:
        """The change as a unified diff against ``original`` (the row's code)."""
        lines = difflib.unified_diff(
            original.splitlines(keepends=True), self.code.splitlines(keepends=True), "code", "mutant", n=1
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass(frozen=True)
class _Edit:
    operator: str
    node: ast.AST  # whose source segment is replaced
    replacement: str
    description: str


class _Source:
    """The text of ``code`` addressed the way the AST addresses it (lines, UTF-8 byte columns)."""

    def __init__(self, code: str):
        self.code = code
        self.lines = code.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def _offset(self, line: int, byte_column: int) -> int:
        text = self.lines[line - 1]
        return self.starts[line - 1] + len(text.encode("utf-8")[:byte_column].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self._offset(node.lineno, node.col_offset), self._offset(node.end_lineno, node.end_col_offset)

    def segment(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.code[start:end]

    def replace(self, node: ast.AST, text: str) -> str:
        start, end = self.span(node)
        return self.code[:start] + text + self.code[end:]


def _constant_edits(node: ast.Constant, segment: str) -> list[tuple[str, str]]:
    value = node.value
    if isinstance(value, bool):
        return [(repr(not value), f"{value} -> {not value}")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        candidates = {0, 1, -1, value + 1} - {value}
        return [(repr(type(value)(c)), f"{segment} -> {type(value)(c)!r}") for c in sorted(candidates)]
    if isinstance(value, str):
        if value:
            return [('""', f'{segment[:30]} -> ""')]
        return [('"XX"', '"" -> "XX"')]
    return []


def _edits_in(function: ast.AST, source: _Source) -> list[_Edit]:
    """Every single-place change inside one function (its body; not its decorators or defaults)."""
    edits: list[_Edit] = []
    body = ast.Module(body=list(function.body), type_ignores=[])
    # a bare string statement (a docstring) does nothing; a negative number is one constant
    inert = {id(n.value) for n in ast.walk(body) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    inert |= {
        id(n.operand)
        for n in ast.walk(body)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) and isinstance(n.operand, ast.Constant)
    }
    for node in ast.walk(body):
        if id(node) in inert:
            continue
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)
        ):
            negative = ast.Constant(-node.operand.value)
            for text, description in _constant_edits(negative, source.segment(node)):
                edits.append(_Edit("constant", node, text, description))
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            new = _ARITHMETIC[type(node.op)]()
            text = f"({source.segment(node.left)}) {_SYMBOLS[type(new)]} ({source.segment(node.right)})"
            edits.append(_Edit("arithmetic", node, text, f"{_SYMBOLS[type(node.op)]} -> {_SYMBOLS[type(new)]}"))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _ARITHMETIC:
            new = _ARITHMETIC[type(node.op)]()
            text = f"{source.segment(node.target)} {_SYMBOLS[type(new)]}= {source.segment(node.value)}"
            edits.append(_Edit("arithmetic", node, text, f"{_SYMBOLS[type(node.op)]}= -> {_SYMBOLS[type(new)]}="))
        elif isinstance(node, ast.Compare):
            for index, op in enumerate(node.ops):
                if type(op) not in _COMPARISON:
                    continue
                ops = list(node.ops)
                ops[index] = _COMPARISON[type(op)]()
                mutated = ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
                edits.append(
                    _Edit(
                        "comparison",
                        node,
                        f"({ast.unparse(mutated)})",
                        f"{source.segment(node)} -> {ast.unparse(mutated)}",
                    )
                )
        elif isinstance(node, ast.BoolOp):
            other = "or" if isinstance(node.op, ast.And) else "and"
            text = f" {other} ".join(f"({source.segment(value)})" for value in node.values)
            edits.append(_Edit("boolean", node, f"({text})", f"{'and' if other == 'or' else 'or'} -> {other}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            edits.append(_Edit("boolean", node, f"({source.segment(node.operand)})", "not dropped"))
        elif isinstance(node, ast.Constant):
            segment = source.segment(node)
            for text, description in _constant_edits(node, segment):
                edits.append(_Edit("constant", node, text, description))
        elif (
            isinstance(node, (ast.List, ast.Tuple, ast.Set))
            and node.elts
            and type(getattr(node, "ctx", None)) in (ast.Load, type(None))
        ):
            empty = {ast.List: "[]", ast.Tuple: "()", ast.Set: "set()"}[type(node)]
            edits.append(_Edit("constant", node, empty, f"{type(node).__name__.lower()} emptied"))
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            test = node.test
            edits.append(_Edit("negate_condition", test, f"not ({source.segment(test)})", "condition negated"))
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if not (isinstance(value, ast.Constant) and value.value is None):
                edits.append(_Edit("return_value", value, "None", f"return {source.segment(value)[:30]} -> None"))
        elif isinstance(node, ast.Slice):
            for bound, name in ((node.lower, "lower"), (node.upper, "upper")):
                if bound is not None:
                    segment = source.segment(bound)
                    edits.append(_Edit("slice_bound", bound, f"({segment}) + 1", f"slice {name} bound {segment} + 1"))
        if isinstance(node, _REMOVABLE) and not (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)  # a docstring
        ):
            edits.append(
                _Edit("remove_statement", node, "pass", f"{source.segment(node).splitlines()[0][:40]} removed")
            )
    return edits


def _edits(code: str) -> tuple[_Source, list[_Edit]]:
    """Every candidate edit of ``code``'s functions, in source order (not yet checked)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _Source(code), []
    source = _Source(code)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    edits = [edit for function in functions for edit in _edits_in(function, source)]
    return source, sorted(edits, key=lambda e: (e.node.lineno, e.node.col_offset, e.operator, e.description))


def _mutant(source: _Source, edit: _Edit) -> Mutant | None:
    """The edit applied, if the result parses and differs from the code."""
    mutated = source.replace(edit.node, edit.replacement)
    if mutated == source.code:
        return None
    try:
        ast.parse(mutated)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # a change the grammar does not take here (e.g. in an f-string): not a mutant
    return Mutant(edit.operator, edit.node.lineno, edit.description, mutated)


def all_mutants(code: str) -> list[Mutant]:
    """Every mutant of ``code`` that parses and differs from it (and from the others), in source order."""
    source, edits = _edits(code)
    seen: set[str] = set()
    out = []
    for edit in edits:
        mutant = _mutant(source, edit)
        if mutant is not None and mutant.code not in seen:
            seen.add(mutant.code)
            out.append(mutant)
    return out


def sample_mutants(code: str, limit: int, seed: int = 0) -> list[Mutant]:
    """At most ``limit`` mutants of ``code``, a sample seeded by ``seed`` and the code itself
    (``languages.common.sample_in_turns``): only the edits drawn are applied and parsed (a
    large function has thousands of candidates)."""
    source, edits = _edits(code)
    return sample_in_turns(code, edits, lambda edit: edit.operator, lambda edit: _mutant(source, edit), limit, seed)


def function_lines(code: str, function_name: str) -> tuple[int, int] | None:
    """The first and last line of the body of the top-level function ``function_name`` in
    ``code``: the lines whose coverage describes the tests (the ``def`` line runs when the
    code loads, whatever the tests do, as coverage's own per-function figures count it)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function_name:
            return node.body[0].lineno, node.end_lineno
    return None
