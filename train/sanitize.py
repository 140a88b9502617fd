"""Cutting a model's answer down to the code the tests need, before it runs.

The idea is EvalPlus's and BigCodeBench's ``sanitize`` (both Apache-2.0; they use
tree-sitter), written here with the standard library's ``ast``:

1. Find the code: the whole answer if it parses; else the longest run of lines that
   parses (which skips prose and Markdown fences around a block).
2. Keep every top-level import (first), then the top-level functions, classes and simple
   assignments (the first definition of each name) that the entry point reaches through
   the names it uses, in their original order.
3. Drop everything else at the top level: example calls, ``print``, ``assert``, an
   ``if __name__ == "__main__":`` block, tests. Such code would otherwise run when the
   tests import the program.

When nothing is kept (no definition, no import), the code found in step 1 is returned as
it is, as the reference sanitizers do. Deliberate differences from EvalPlus's version,
which drops functions without a ``return`` and decorated definitions: we keep both.
"""

from __future__ import annotations

import ast
import re

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# bounds on the search for the parsable part of an answer that does not parse as a whole
MAX_SCAN_LINES = 400
MAX_PARSES = 2000
FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)(?:```|\Z)", re.S)


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def extract_code(text: str) -> str:
    """The code in ``text``: all of it if it parses; else the largest fenced block that
    parses; else its longest parsable run of lines (by non-blank lines); else ``text``
    unchanged (the sandbox then reports the error)."""
    if parses(text):
        return text
    blocks = [match.group(1) for match in FENCE.finditer(text)]
    parsable = [block for block in blocks if block.strip() and parses(block)]
    if parsable:
        return max(parsable, key=lambda block: sum(1 for line in block.splitlines() if line.strip()))
    lines = text.split("\n")[:MAX_SCAN_LINES]  # keep the search bounded on runaway answers
    best, best_size, budget = None, 0, MAX_PARSES
    for start in range(len(lines)):
        if not lines[start].strip() or lines[start][0] in " \t":
            continue  # a run of code starts at a top-level line
        if sum(1 for line in lines[start:] if line.strip()) <= best_size:
            break
        for end in range(len(lines), start, -1):
            size = sum(1 for line in lines[start:end] if line.strip())
            if size <= best_size or budget <= 0:
                break
            budget -= 1
            if parses("\n".join(lines[start:end])):
                best, best_size = (start, end), size
                break
    if best is None:
        return text
    return "\n".join(lines[best[0] : best[1]])


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def _defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, DEFINITIONS):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id
    return None


def sanitize(answer: str, entry_point: str | None = None) -> str:
    """The imports of ``answer``'s code and the definitions ``entry_point`` depends on (all
    definitions when no entry point is given), without top-level example or test code."""
    code = extract_code(answer)
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return code
    lines = code.split("\n")

    def source(node: ast.stmt) -> str:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        return "\n".join(lines[first - 1 : node.end_lineno])

    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    definitions: dict[str, ast.stmt] = {}
    for node in tree.body:
        name = _defined_name(node)
        if name is not None and name not in definitions:  # the first definition of a name wins
            definitions[name] = node
    if entry_point is not None and entry_point in definitions:
        keep, queue = {entry_point}, [entry_point]
        while queue:
            for used in _names_used(definitions[queue.pop()]):
                if used in definitions and used not in keep:
                    keep.add(used)
                    queue.append(used)
    else:
        keep = set(definitions)
    # imports first, then the definitions in their order (as EvalPlus and BigCodeBench write them)
    kept = imports + [n for n in tree.body if _defined_name(n) in keep and definitions.get(_defined_name(n)) is n]
    if not kept:
        return code
    return "\n".join(source(n) for n in kept).strip() + "\n"
