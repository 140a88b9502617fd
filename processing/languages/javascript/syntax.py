"""tree-sitter plumbing shared by the JavaScript modules: one parser, byte-addressed text,
and the few node questions every module asks (is it a function, where is its body)."""

from __future__ import annotations

import re
from functools import lru_cache

import tree_sitter_javascript
from tree_sitter import Language, Node, Parser, Tree

FUNCTION_TYPES = frozenset(
    {
        "function_declaration",
        "generator_function_declaration",
        "function_expression",
        "function",
        "generator_function",
        "arrow_function",
        "method_definition",
    }
)
DECLARATION_TYPES = frozenset({"function_declaration", "generator_function_declaration"})
TOKEN_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*|\d+|\S")


@lru_cache(maxsize=1)
def parser() -> Parser:
    return Parser(Language(tree_sitter_javascript.language()))


def parse(code: str) -> tuple[Tree, bytes]:
    data = code.encode("utf-8", "surrogatepass")
    return parser().parse(data), data


def parses(code: str) -> bool:
    """Whether ``code`` is JavaScript without a syntax error (tree-sitter recovers from
    errors; a tree with an error or a missing node is a failed parse)."""
    tree, _ = parse(code)
    return not tree.root_node.has_error


def text(node: Node, data: bytes) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def line(node: Node) -> int:
    """1-based line of the node's start."""
    return node.start_point[0] + 1


def walk(node: Node):
    """Every node below ``node`` (itself included), in source order, without recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def string_value(node: Node | None, data: bytes) -> str | None:
    """The value of a plain string literal (a template without substitutions counts); None otherwise."""
    if node is None:
        return None
    if node.type == "string":
        raw = text(node, data)[1:-1]
        return raw if "\\" not in raw else None
    if node.type == "template_string":
        if any(c.type == "template_substitution" for c in node.children):
            return None
        raw = text(node, data)[1:-1]
        return raw if "\\" not in raw else None
    return None


def function_value(declarator: Node) -> Node | None:
    """The function a ``const f = function/arrow`` declarator binds, if it binds one."""
    value = declarator.child_by_field_name("value")
    while value is not None and value.type == "parenthesized_expression":
        value = value.named_children[0] if value.named_children else None
    if value is not None and value.type in ("function_expression", "function", "arrow_function", "generator_function"):
        return value
    return None


def top_level_functions(root: Node, data: bytes) -> list[tuple[str, Node, Node]]:
    """(name, statement, function) for each top-level function: ``function f() {}`` (also
    exported) and ``const f = function () {} / () => ...`` with a single declarator. The
    statement is the declaration itself (without ``export``)."""
    found = []
    for statement in root.named_children:
        node = statement
        if node.type == "export_statement":
            node = node.child_by_field_name("declaration")
            if node is None:
                continue
        if node.type in DECLARATION_TYPES:
            name = node.child_by_field_name("name")
            if name is not None:
                found.append((text(name, data), node, node))
        elif node.type in ("lexical_declaration", "variable_declaration"):
            declarators = [c for c in node.named_children if c.type == "variable_declarator"]
            if len(declarators) == 1:
                name = declarators[0].child_by_field_name("name")
                value = function_value(declarators[0])
                if value is not None and name is not None and name.type == "identifier":
                    found.append((text(name, data), node, value))
    return found


def target(code: str, name: str) -> tuple[Node, Node, bytes] | None:
    """(statement, function, data) of the last top-level function ``name`` in ``code`` that
    parses; None when it does not parse or lacks the function."""
    tree, data = parse(code)
    if tree.root_node.has_error:
        return None
    found = None
    for found_name, statement, function in top_level_functions(tree.root_node, data):
        if found_name == name:
            found = (statement, function, data)
    return found


COMMENT_MARKERS = re.compile(r"^\s*(?:/\*+|\*+/?|//+)|\*+/\s*$", re.M)


def leaf_tokens(node: Node, data: bytes, comments: bool = False) -> list[str]:
    """The text of every leaf below ``node`` but comments and semicolons, in order (a string's
    quotes and content are leaves of their own). With ``comments``, a comment's text
    without its markers (``//``, ``/**``, `` * ``, ``*/``) is a leaf too: a benchmark
    problem's description is a comment, so decontamination reads them."""
    out = []
    for current in walk(node):
        if current.type == "comment":
            if comments:
                out.append(COMMENT_MARKERS.sub(" ", text(current, data)))
            continue
        if current.child_count:
            continue
        value = text(current, data)
        if value and value != ";":
            out.append(value)
    return out
