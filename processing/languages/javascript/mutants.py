"""Mutants of a row's JavaScript code for mutation testing, as Python's (``processing.languages.
python.mutants``): small syntax-tree-located edits (tree-sitter), applied to the text.

Every function in ``code`` (the target, helpers, callbacks) is mutated; the require/import
lines and module-level constants are not. Each mutant changes one place:

* ``arithmetic``: ``+``/``-``, ``*``/``/``, ``%``, ``**``, shifts and bitwise operators swapped,
  in binary and augmented assignments; ``++``/``--`` swapped;
* ``comparison``: ``<``/``<=``, ``>``/``>=``, ``===``/``!==``, ``==``/``!=``;
* ``boolean``: ``&&``/``||`` swapped, ``??`` to ``||``, a ``!`` dropped;
* ``constant``: a number to 0/1/-1 and off by one, a string emptied (or filled), ``true``/
  ``false`` swapped, a non-empty array literal emptied;
* ``negate_condition``: the test of an ``if``, ``while``, ``do`` or ``?:`` negated;
* ``remove_statement``: an expression statement replaced by an empty one (``;``);
* ``return_value``: a returned value (or an arrow's expression body) replaced by ``undefined``;
* ``slice_bound``: an argument of ``.slice``/``.substring`` moved by one.

A mutant is kept only if it parses and differs from the code; the sample is seeded by the
seed and the code (``sample_mutants``), the operators taking turns, as Python's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tree_sitter import Node

from processing.languages.common import sample_in_turns
from processing.languages.javascript.syntax import FUNCTION_TYPES, parse, target, text, walk
from processing.languages.python.mutants import OPERATORS, Mutant  # noqa: F401 (OPERATORS: the same eight, re-exported)

_ARITHMETIC = {"+": "-", "-": "+", "*": "/", "/": "*", "%": "*", "**": "*", "<<": ">>", ">>": "<<", ">>>": ">>",
               "&": "|", "|": "&", "^": "&"}  # fmt: skip
_COMPARISON = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "===": "!==", "!==": "===", "==": "!=", "!=": "=="}
_BOOLEAN = {"&&": "||", "||": "&&", "??": "||"}
_NUMBER_RE = re.compile(r"\d+(\.\d*)?|\.\d+")
_SLICING = ("slice", "substring")


@dataclass(frozen=True)
class _Edit:
    operator: str
    start: int  # byte span replaced
    end: int
    line: int
    column: int
    replacement: str
    description: str


def _edit(operator: str, node: Node, replacement: str, description: str) -> _Edit:
    return _Edit(operator, node.start_byte, node.end_byte, node.start_point[0] + 1, node.start_point[1], replacement,
                 description)  # fmt: skip


def _number_edits(node: Node, value_text: str, negative: bool) -> list[tuple[str, str]]:
    if not _NUMBER_RE.fullmatch(value_text):
        return []
    value = float(value_text) if "." in value_text else int(value_text)
    value = -value if negative else value
    kind = type(value)
    candidates = {0, 1, -1, value + 1} - {value}
    out = []
    for candidate in sorted(candidates):
        new = repr(kind(candidate))
        out.append((f"({new})" if new.startswith("-") else new, f"{'-' if negative else ''}{value_text} -> {new}"))
    return out


def _function_bodies(root: Node) -> list[tuple[int, int]]:
    return [
        (body.start_byte, body.end_byte)
        for node in walk(root)
        if node.type in FUNCTION_TYPES and (body := node.child_by_field_name("body")) is not None
    ]


def _operator(node: Node, data: bytes) -> Node | None:
    return node.child_by_field_name("operator")


def _edits_of(node: Node, data: bytes) -> list[_Edit]:
    kind = node.type
    edits = []
    if kind == "binary_expression":
        operator = _operator(node, data)
        op = text(operator, data) if operator is not None else ""
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        for table, name in ((_ARITHMETIC, "arithmetic"), (_COMPARISON, "comparison"), (_BOOLEAN, "boolean")):
            if op in table and left is not None and right is not None:
                new = table[op]
                replacement = f"(({text(left, data)}) {new} ({text(right, data)}))"
                edits.append(_edit(name, node, replacement, f"{op} -> {new}"))
    elif kind == "augmented_assignment_expression":
        operator = _operator(node, data)
        op = text(operator, data)[:-1] if operator is not None else ""
        if op in _ARITHMETIC:
            edits.append(_edit("arithmetic", operator, _ARITHMETIC[op] + "=", f"{op}= -> {_ARITHMETIC[op]}="))
    elif kind == "update_expression":
        for child in node.children:
            if child.type in ("++", "--"):
                new = "--" if child.type == "++" else "++"
                edits.append(_edit("arithmetic", child, new, f"{child.type} -> {new}"))
    elif kind == "unary_expression":
        operator = _operator(node, data)
        argument = node.child_by_field_name("argument")
        op = text(operator, data) if operator is not None else ""
        if op == "!" and argument is not None:
            edits.append(_edit("boolean", node, f"({text(argument, data)})", "! dropped"))
        elif op == "-" and argument is not None and argument.type == "number":
            for replacement, description in _number_edits(argument, text(argument, data), True):
                edits.append(_edit("constant", node, replacement, description))
    elif kind == "number":
        parent = node.parent
        if not (
            parent is not None and parent.type == "unary_expression" and text(_operator(parent, data), data) == "-"
        ):
            for replacement, description in _number_edits(node, text(node, data), False):
                edits.append(_edit("constant", node, replacement, description))
    elif kind in ("string", "template_string"):
        parent = node.parent
        directive = parent is not None and parent.type == "expression_statement"  # "use strict" and the like
        substituted = any(c.type == "template_substitution" for c in node.children)
        if not directive and not substituted and (parent is None or parent.type != "pair"
                                                  or parent.child_by_field_name("key") != node):  # fmt: skip
            value = text(node, data)
            if len(value) > 2:
                edits.append(_edit("constant", node, '""', f'{value[:30]} -> ""'))
            else:
                edits.append(_edit("constant", node, '"XX"', f'{value} -> "XX"'))
    elif kind in ("true", "false"):
        new = "false" if kind == "true" else "true"
        edits.append(_edit("constant", node, new, f"{kind} -> {new}"))
    elif kind == "array" and node.named_children:
        edits.append(_edit("constant", node, "[]", "array emptied"))
    if kind in ("if_statement", "while_statement", "do_statement"):
        condition = node.child_by_field_name("condition")
        if condition is not None and condition.type == "parenthesized_expression":
            inner = text(condition, data)[1:-1]
            edits.append(_edit("negate_condition", condition, f"(!({inner}))", "condition negated"))
    elif kind == "ternary_expression":
        condition = node.child_by_field_name("condition")
        if condition is not None:
            edits.append(_edit("negate_condition", condition, f"!({text(condition, data)})", "condition negated"))
    elif kind == "return_statement":
        values = [c for c in node.named_children if c.type != "comment"]
        if values and text(values[0], data) != "undefined":
            edits.append(
                _edit("return_value", values[0], "undefined", f"return {text(values[0], data)[:30]} -> undefined")
            )
    elif kind == "arrow_function":
        body = node.child_by_field_name("body")
        if body is not None and body.type != "statement_block" and text(body, data) != "undefined":
            edits.append(_edit("return_value", body, "undefined", f"=> {text(body, data)[:30]} -> undefined"))
    elif kind == "expression_statement":
        expression = node.named_children[0] if node.named_children else None
        if expression is not None and expression.type not in ("string", "template_string"):
            edits.append(_edit("remove_statement", node, ";", f"{text(node, data).splitlines()[0][:40]} removed"))
    elif kind == "call_expression":
        callee = node.child_by_field_name("function")
        arguments = node.child_by_field_name("arguments")
        if callee is not None and callee.type == "member_expression" and arguments is not None:
            prop = callee.child_by_field_name("property")
            if prop is not None and text(prop, data) in _SLICING:
                for argument in arguments.named_children:
                    if argument.type not in ("comment", "spread_element"):
                        value = text(argument, data)
                        edits.append(_edit("slice_bound", argument, f"({value}) + 1", f"slice bound {value} + 1"))
    return edits


def _edits(code: str) -> tuple[bytes, list[_Edit]]:
    """Every candidate edit inside ``code``'s functions, in source order (not yet checked)."""
    tree, data = parse(code)
    if tree.root_node.has_error:
        return data, []
    bodies = _function_bodies(tree.root_node)
    edits = []
    for node in walk(tree.root_node):
        if any(start <= node.start_byte and node.end_byte <= end for start, end in bodies) or (
            node.type == "arrow_function"
        ):
            for edit in _edits_of(node, data):
                if any(start <= edit.start and edit.end <= end for start, end in bodies):
                    edits.append(edit)
    unique = {(e.start, e.end, e.replacement): e for e in edits}
    return data, sorted(unique.values(), key=lambda e: (e.line, e.column, e.operator, e.description))


def _mutant(code: str, data: bytes, edit: _Edit) -> Mutant | None:
    """The edit applied, if the result parses and differs from the code."""
    mutated_bytes = data[: edit.start] + edit.replacement.encode("utf-8") + data[edit.end :]
    if mutated_bytes == data:
        return None
    tree = parse(mutated_bytes.decode("utf-8", "surrogatepass"))[0]
    if tree.root_node.has_error:
        return None
    return Mutant(edit.operator, edit.line, edit.description, mutated_bytes.decode("utf-8", "surrogatepass"))


def all_mutants(code: str) -> list[Mutant]:
    """Every mutant of ``code`` that parses and differs from it (and from the others), in source order."""
    data, edits = _edits(code)
    seen: set[str] = set()
    out = []
    for edit in edits:
        mutant = _mutant(code, data, edit)
        if mutant is not None and mutant.code not in seen:
            seen.add(mutant.code)
            out.append(mutant)
    return out


def sample_mutants(code: str, limit: int, seed: int = 0) -> list[Mutant]:
    """At most ``limit`` mutants of ``code``, a sample seeded by ``seed`` and the code, in
    source order, the operators taking turns (``languages.common.sample_in_turns``)."""
    data, edits = _edits(code)
    return sample_in_turns(code, edits, lambda edit: edit.operator, lambda edit: _mutant(code, data, edit), limit, seed)


def function_lines(code: str, function_name: str) -> tuple[int, int] | None:
    """The first and last line of the body of the top-level function ``function_name``: from
    its first statement (or an arrow's expression) to the function's last line."""
    found = target(code, function_name)
    if found is None:
        return None
    _, function, _ = found
    body = function.child_by_field_name("body")
    first = body
    if body.type == "statement_block":
        statements = [c for c in body.named_children if c.type != "comment"]
        first = statements[0] if statements else body
    return first.start_point[0] + 1, function.end_point[0] + 1
