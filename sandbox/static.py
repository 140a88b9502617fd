"""Checks made on the host, before a program reaches the sandbox.

* ``count_tests``: the test methods the test code defines, found statically. The
  sandbox's verdict is only ``pass`` when exactly that many tests ran and passed, so a
  program that exits early or hides tests cannot look like a pass.
* ``find_tampering``: code under test that patches the test machinery (``unittest``),
  ``builtins`` or ``sys.modules``, or that defines an object equal to everything, is
  rejected before it runs. This applies to ``code`` only: tests legitimately use
  ``unittest.mock.patch("builtins.open")``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

TESTCASE_BASES = {"TestCase", "IsolatedAsyncioTestCase"}
GUARDED_MODULES = {"unittest": "patches_unittest", "builtins": "patches_builtins", "__builtin__": "patches_builtins"}
SYS_MODULES_MUTATORS = {"update", "pop", "popitem", "clear", "setdefault", "__setitem__", "__delitem__"}


@dataclass
class TestPlan:
    """What the test code defines: TestCase classes in definition order, and their tests."""

    classes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(names) for names in self.classes.values())


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def count_tests(tree: ast.Module) -> TestPlan:
    """Find top-level TestCase subclasses and their ``test*`` methods, inherited ones included.

    Mirrors what ``unittest.TestLoader`` will collect: every class that derives (directly
    or through classes of the same module) from ``TestCase``, with each callable whose name
    starts with ``test``, including those inherited from bases and mixins defined in the
    module.
    """
    defs: dict[str, ast.ClassDef] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            defs[node.name] = node

    def own_tests(cls: ast.ClassDef) -> list[str]:
        return [
            item.name
            for item in cls.body
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test")
        ]

    def resolve(name: str, seen: frozenset[str]) -> tuple[bool, set[str]]:
        cls = defs[name]
        is_case, names = False, set(own_tests(cls))
        for base in cls.bases:
            base_name = _base_name(base)
            if base_name in defs and base_name not in seen and base_name != name:
                base_case, base_names = resolve(base_name, seen | {name})
                is_case = is_case or base_case
                names |= base_names
            elif base_name in TESTCASE_BASES:
                is_case = True
        return is_case, names

    plan = TestPlan()
    for name in defs:
        is_case, names = resolve(name, frozenset())
        if is_case:
            plan.classes[name] = sorted(names)
    return plan


@dataclass
class Tampering:
    reason: str
    message: str


class _TamperFinder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name -> guarded module ("unittest", "builtins", "sys")
        self.found: Tampering | None = None

    # imports -----------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = alias.name.split(".")[0]
            if root in GUARDED_MODULES or root == "sys":
                self.aliases[alias.asname or root] = alias.name if alias.asname else root
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        root = (node.module or "").split(".")[0]
        if root in GUARDED_MODULES:
            for alias in node.names:
                # from unittest import TestCase -> patching TestCase.x patches unittest
                self.aliases[alias.asname or alias.name] = root
        elif root == "sys":
            for alias in node.names:
                if alias.name == "modules":
                    self.aliases[alias.asname or "modules"] = "sys.modules"
        self.generic_visit(node)

    # helpers -----------------------------------------------------------------
    def _flag(self, reason: str, node: ast.AST, what: str) -> None:
        if self.found is None:
            self.found = Tampering(reason, f"{what} (line {getattr(node, 'lineno', '?')})")

    def _target_of(self, node: ast.expr) -> str | None:
        """The guarded thing an expression reaches: 'unittest', 'builtins' or 'sys.modules'."""
        chain = []
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Attribute):
                chain.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        if node.id == "__builtins__":
            return "builtins"
        module = self.aliases.get(node.id)
        if module is None:
            return None
        if module.split(".")[0] == "sys" and module != "sys.modules":
            return "sys.modules" if chain and chain[-1] == "modules" else None
        return _module_kind(module)

    def _check_store(self, target: ast.expr, node: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._check_store(elt, node)
            return
        if isinstance(target, ast.Starred):
            self._check_store(target.value, node)
            return
        if isinstance(target, ast.Name):
            if target.id in ("__builtins__", "unittest"):
                reason = "patches_builtins" if target.id == "__builtins__" else "patches_unittest"
                self._flag(reason, node, f"code rebinds the name {target.id}")
            return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            guarded = self._target_of(target)
            if guarded:
                self._flag(_reason(guarded), node, f"code assigns to {ast.unparse(target)}")

    # statements --------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_store(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_store(target, node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self._flag("patches_builtins", node, "code uses __builtins__")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in ("setattr", "delattr") and node.args:
            guarded = self._target_of(node.args[0])
            if guarded:
                self._flag(_reason(guarded), node, f"code calls {name}() on {ast.unparse(node.args[0])}")
        if isinstance(func, ast.Attribute) and func.attr in SYS_MODULES_MUTATORS:
            if self._target_of(func.value) == "sys.modules":
                self._flag("patches_sys_modules", node, f"code calls {ast.unparse(func)}()")
        if name in ("patch", "object") and node.args:
            # unittest.mock.patch("builtins.x") / patch.object(unittest.TestCase, ...)
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                root = first.value.split(".")[0]
                if root in GUARDED_MODULES:
                    self._flag(GUARDED_MODULES[root], node, f"code patches {first.value}")
                elif first.value.startswith("sys.modules"):
                    self._flag("patches_sys_modules", node, f"code patches {first.value}")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in ("__eq__", "__ne__") and _always_returns_constant(node):
            self._flag("always_equal_object", node, f"code defines {node.name} that ignores its argument")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]


def _module_kind(module: str) -> str | None:
    root = module.split(".")[0]
    if module == "sys.modules":
        return "sys.modules"
    if root == "unittest":
        return "unittest"
    if root in ("builtins", "__builtin__"):
        return "builtins"
    return None


def _reason(guarded: str) -> str:
    return {"unittest": "patches_unittest", "builtins": "patches_builtins", "sys.modules": "patches_sys_modules"}[
        guarded
    ]


def _always_returns_constant(node: ast.FunctionDef) -> bool:
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # docstring
    return (
        len(body) == 1
        and isinstance(body[0], ast.Return)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, bool)
    )


def find_tampering(tree: ast.Module) -> Tampering | None:
    """Return the first way ``code`` tampers with the test machinery, or None."""
    finder = _TamperFinder()
    finder.visit(tree)
    return finder.found
