"""Checks made on the host, before a program reaches the sandbox.

* ``count_tests``: the test methods the test code defines, found statically. The
  sandbox's verdict is only ``pass`` when exactly that many tests ran and passed, so a
  program that exits early or hides tests cannot look like a pass.
* ``find_tampering``: code under test that patches the test machinery (``unittest``),
  ``builtins`` or ``sys.modules`` (in any spelling, aliases included), replaces what an
  imported module offers with something that behaves (``np.testing.assert_allclose =
  ...``, ``setattr(math, "isclose", ...)``, ``vars(json)["loads"] = ...``), or makes an
  object equal to everything (``unittest.mock.ANY``, an ``__eq__`` that never looks at
  what it is compared with, ``lambda`` or ``def``, whatever constant it returns), is
  rejected before it runs. This applies to ``code`` only: tests legitimately use
  ``unittest.mock.patch("builtins.open")``. Setting data on modules (``pd.options...``,
  ``os.environ[...]``, ``matplotlib.rcParams[...]``, ``sys.stdout``) is not patching.
  The sandbox checks the same things again at run time (see ``_zygote.py``).
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import os
import sys
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


# Attributes of modules that are modules themselves without being files of a package.
ATTRIBUTE_MODULES = {"os.path"}
# Module attributes honest code sets to its own functions (not what a test calls).
HONEST_HOOKS = {"warnings.showwarning", "warnings.formatwarning"}
COMPARISONS = ("__eq__", "__ne__")


@functools.lru_cache(maxsize=4096)
def is_module(dotted: str) -> bool:
    """Whether ``dotted`` names an installed module, found on disk without importing anything
    (``numpy.testing`` is one, ``pandas.options`` is not)."""
    if dotted in ATTRIBUTE_MODULES:
        return True
    parts = dotted.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    if parts[0] in sys.builtin_module_names:
        return len(parts) == 1
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or [])
    for part in parts[1:]:
        found = []
        for location in locations:
            package = os.path.join(location, part)
            if os.path.isdir(package):
                found.append(package)
            elif any(os.path.isfile(package + suffix) for suffix in importlib.machinery.all_suffixes()):
                found.append("")
        if not found:
            return False
        locations = [p for p in found if p]
    return True


def _is_data(node: ast.expr) -> bool:
    """A value that is plain data (a constant, or containers of constants): no behaviour."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_data(elt) for elt in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is None or _is_data(k) for k in node.keys) and all(_is_data(v) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        return _is_data(node.operand)
    if isinstance(node, ast.JoinedStr):
        return True
    return False


def _ignores_other(args: ast.arguments, body: list[ast.stmt] | ast.expr) -> bool:
    """Whether a comparison method never looks at the object it is compared with.

    An ``__eq__``/``__ne__`` whose result cannot depend on ``other`` either always holds or
    never does (``return True``, ``return 1``, ``lambda s, o: True``) unless all it does is
    return ``NotImplemented`` or raise.
    """
    params = [a.arg for a in args.posonlyargs + args.args]
    others = set(params[1:2])
    if args.vararg:
        others.add(args.vararg.arg)
    if args.kwarg:
        others.add(args.kwarg.arg)
    nodes = [body] if isinstance(body, ast.expr) else body
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in others:
                return False
    if isinstance(body, ast.expr):
        return not (isinstance(body, ast.Name) and body.id == "NotImplemented")
    returns = [n.value for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Return)]
    if not returns:
        return False  # raises, or returns None (never equal): nothing to fake
    return not all(isinstance(r, ast.Name) and r.id == "NotImplemented" for r in returns if r is not None)


class _TamperFinder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name -> guarded module ("unittest", "builtins", "sys", "sys.modules")
        self.modules: dict[str, str] = {}  # local name -> the dotted name it was imported as
        # per enclosing function: the attributes it saves and puts back (worked out from the
        # function's node the first time a store inside it needs them)
        self.restored: list[set[str] | ast.AST] = [set()]
        self.found: Tampering | None = None

    # imports -----------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = alias.name.split(".")[0]
            if root in GUARDED_MODULES or root == "sys":
                self.aliases[alias.asname or root] = alias.name if alias.asname else root
            self.modules[alias.asname or root] = alias.name if alias.asname else root
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        root = module.split(".")[0]
        if root in GUARDED_MODULES:
            for alias in node.names:
                # from unittest import TestCase -> patching TestCase.x patches unittest
                self.aliases[alias.asname or alias.name] = root
        elif root == "sys":
            for alias in node.names:
                if alias.name == "modules":
                    self.aliases[alias.asname or "modules"] = "sys.modules"
        if module == "unittest.mock" or (module == "unittest" and any(a.name == "mock" for a in node.names)):
            for alias in node.names:
                if alias.name == "ANY":
                    self._flag("always_equal_object", node, "code imports unittest.mock.ANY, which equals everything")
        if node.level == 0 and module:
            for alias in node.names:
                if alias.name != "*":
                    self.modules[alias.asname or alias.name] = f"{module}.{alias.name}"
        self.generic_visit(node)

    # helpers -----------------------------------------------------------------
    def _flag(self, reason: str, node: ast.AST, what: str) -> None:
        if self.found is None:
            self.found = Tampering(reason, f"{what} (line {getattr(node, 'lineno', '?')})")

    def _target_of(self, node: ast.expr) -> str | None:
        """The guarded thing an expression reaches: 'unittest', 'builtins' or 'sys.modules'."""
        if self._is_sys_modules(node):
            return "sys.modules"
        chain = []
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Attribute):
                chain.append(node.attr)
            if self._is_sys_modules(node):
                return "sys.modules"
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

    def _is_sys_modules(self, node: ast.expr) -> bool:
        """``sys.modules`` in any spelling: an alias, ``getattr(sys, 'modules')``,
        ``vars(sys)['modules']``, ``sys.__dict__['modules']``, ``(m := sys.modules)``."""
        if isinstance(node, ast.NamedExpr):
            return self._is_sys_modules(node.value)
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id) == "sys.modules"
        if isinstance(node, ast.Attribute) and node.attr == "modules":
            return self._is_sys(node.value)
        if isinstance(node, ast.Call) and _call_name(node) == "getattr" and len(node.args) >= 2:
            return self._is_sys(node.args[0]) and _constant(node.args[1]) == "modules"
        if isinstance(node, ast.Subscript) and _constant(node.slice) == "modules":
            return self._namespace_of(node.value, self._is_sys)
        return False

    def _is_sys(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id) == "sys"
        return self._module_of(node) == "sys"

    def _namespace_of(self, node: ast.expr, test) -> bool:
        """``X.__dict__`` or ``vars(X)`` where ``test(X)``."""
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            return test(node.value)
        if isinstance(node, ast.Call) and _call_name(node) == "vars" and len(node.args) == 1:
            return test(node.args[0])
        return False

    def _module_of(self, node: ast.expr) -> str | None:
        """The dotted name of the module an expression denotes, if it statically is one:
        an imported name, an attribute chain of submodules, ``__import__('x')``,
        ``importlib.import_module('x')``."""
        if isinstance(node, ast.Name):
            dotted = self.modules.get(node.id)
            if dotted is None:
                return None
            return dotted if "." not in dotted or is_module(dotted) else None
        if isinstance(node, ast.Attribute):
            parent = self._module_of(node.value)
            if parent is None:
                return None
            dotted = f"{parent}.{node.attr}"
            return dotted if is_module(dotted) else None
        if isinstance(node, ast.Call) and node.args and isinstance(_constant(node.args[0]), str):
            name = _call_name(node)
            if name == "__import__" or (name == "import_module" and not node.args[1:]):
                return _constant(node.args[0])
        return None

    def _restored_here(self) -> set[str]:
        """What the innermost enclosing function saves and restores (``_saved_and_restored``)."""
        top = self.restored[-1]
        if not isinstance(top, set):
            top = self.restored[-1] = _saved_and_restored(top)
        return top

    def _check_module_store(self, target: ast.expr, value: ast.expr | None, node: ast.AST) -> None:
        """An imported module's attribute set to something with behaviour (np.testing.assert_allclose
        = ..., math.isclose = ..., json.loads = ...): what the tests call."""
        if value is not None and _is_data(value):
            return
        if isinstance(target, ast.Attribute):
            module = self._module_of(target.value)
            if ast.unparse(target) in self._restored_here():
                return  # saved and put back by the same function: gone before the tests look
            if module and module != "sys" and f"{module}.{target.attr}" not in HONEST_HOOKS:
                self._flag("patches_module", node, f"code replaces {module}.{target.attr}")
        elif isinstance(target, ast.Subscript):
            if self._namespace_of(target.value, lambda n: self._module_of(n) not in (None, "sys")):
                self._flag("patches_module", node, f"code writes to a module's namespace: {ast.unparse(target)}")

    def _check_store(self, target: ast.expr, node: ast.AST, value: ast.expr | None = None) -> None:
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
            elif target.id in COMPARISONS and isinstance(value, ast.Lambda) and _ignores_other(value.args, value.body):
                self._flag("always_equal_object", node, f"code defines {target.id} that ignores its argument")
            return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            guarded = self._target_of(target)
            if guarded:
                self._flag(_reason(guarded), node, f"code assigns to {ast.unparse(target)}")
                return
            if _mentions_comparison(target):
                # mock.__eq__.return_value = True, obj.__eq__ = ...
                self._flag("always_equal_object", node, f"code sets {ast.unparse(target)}")
                return
            self._check_module_store(target, value, node)

    # statements --------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_store(target, node, node.value)
            if not isinstance(target, ast.Name):
                continue
            if self._is_sys_modules(node.value):
                self.aliases[target.id] = "sys.modules"  # m = sys.modules; m['numpy.testing'] = ...
            elif (module := self._module_of(node.value)) is not None:
                self.modules[target.id] = module  # t = np.testing; m = __import__('math')
            else:
                self.modules.pop(target.id, None)  # rebound to something that is not a module
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target, node, ast.Constant(0))
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target, node, node.value)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_store(target, node, ast.Constant(None))
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        if self._is_sys_modules(node.value):
            self.aliases[node.target.id] = "sys.modules"
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self._flag("patches_builtins", node, "code uses __builtins__")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "ANY" and self._module_of(node.value) == "unittest.mock":
            self._flag("always_equal_object", node, "code uses unittest.mock.ANY, which equals everything")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = _call_name(node)
        if name in ("setattr", "delattr") and node.args:
            guarded = self._target_of(node.args[0])
            if guarded:
                self._flag(_reason(guarded), node, f"code calls {name}() on {ast.unparse(node.args[0])}")
            attr = _constant(node.args[1]) if len(node.args) > 1 else None
            if name == "setattr" and len(node.args) == 3:
                value = node.args[2]
                if attr in COMPARISONS and not (
                    isinstance(value, ast.Lambda) and not _ignores_other(value.args, value.body)
                ):
                    self._flag("always_equal_object", node, f"code sets {attr} with setattr()")
                module = self._module_of(node.args[0])
                if module and module != "sys" and not _is_data(value) and f"{module}.{attr}" not in HONEST_HOOKS:
                    self._flag("patches_module", node, f"code calls setattr() on the module {module}")
        if isinstance(func, ast.Attribute) and func.attr in SYS_MODULES_MUTATORS:
            if self._target_of(func.value) == "sys.modules":
                self._flag("patches_sys_modules", node, f"code calls {ast.unparse(func)}()")
            elif self._namespace_of(func.value, lambda n: self._module_of(n) not in (None, "sys")):
                self._flag("patches_module", node, f"code calls {ast.unparse(func)}()")
        if name in ("patch", "object") and node.args:
            # unittest.mock.patch("builtins.x") / patch.object(unittest.TestCase, ...)
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                root = first.value.split(".")[0]
                if root in GUARDED_MODULES:
                    self._flag(GUARDED_MODULES[root], node, f"code patches {first.value}")
                elif first.value.startswith("sys.modules"):
                    self._flag("patches_sys_modules", node, f"code patches {first.value}")
        if name == "type" and len(node.args) == 3 and isinstance(node.args[2], ast.Dict):
            self._check_class_dict(node.args[2], node)
        self.generic_visit(node)

    def _check_class_dict(self, namespace: ast.Dict, node: ast.AST) -> None:
        for key, value in zip(namespace.keys, namespace.values):
            if (
                _constant(key) in COMPARISONS
                and isinstance(value, ast.Lambda)
                and _ignores_other(value.args, value.body)
            ):
                self._flag("always_equal_object", node, f"code defines {_constant(key)} that ignores its argument")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in COMPARISONS and _ignores_other(node.args, node.body):
            self._flag("always_equal_object", node, f"code defines {node.name} that ignores its argument")
        self.restored.append(node)
        self.generic_visit(node)
        self.restored.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]


def _saved_and_restored(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Attributes a function saves and puts back in a ``finally:`` (``old = os.open; try:
    os.open = ...; finally: os.open = old``): a swap that ends before the function returns."""
    saved: dict[str, str] = {}  # local name -> the attribute it holds
    restored = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and isinstance(value, ast.Attribute):
                saved[target.id] = ast.unparse(value)
        if isinstance(node, ast.Try):
            for stmt in node.finalbody:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.value, ast.Name):
                    target = ast.unparse(stmt.targets[0])
                    if saved.get(stmt.value.id) == target:
                        restored.add(target)
    return restored


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _constant(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) else None


def _mentions_comparison(target: ast.expr) -> bool:
    """An attribute chain through ``__eq__``/``__ne__`` (``m.__eq__``, ``m.__eq__.return_value``)."""
    node = target
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute) and node.attr in COMPARISONS:
            return True
        node = node.value
    return False


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


def find_tampering(tree: ast.Module) -> Tampering | None:
    """Return the first way ``code`` tampers with the test machinery, or None."""
    finder = _TamperFinder()
    finder.visit(tree)
    return finder.found
