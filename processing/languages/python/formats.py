"""Python forms of a verified function: stub bodies for the test guard, the function's
signature (refine must keep it), the published layout, the BigCodeBench-style
prompt/completion split and the chat pair, and the check that all of them are the code.

What is published must be exactly what was verified: ``prompt + completion == code``
(string equality), the prompt holds the whole signature (and the docstring, if any),
the completion carries the body and whatever follows the function (helpers defined
after it), and the chat answer's code block is ``code``.
"""

from __future__ import annotations

import ast
import re

from processing.languages.common import chat_pair
from processing.languages.python.answers import code_blocks

_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Lines as the parser counts them (str.splitlines also breaks at form feeds and other separators).
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except _PARSE_ERRORS:
        return None


def _target(tree: ast.Module | None, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The last top-level definition of ``name`` (the one a module binds when it runs)."""
    found = None
    for node in tree.body if tree is not None else ():
        if isinstance(node, _FUNCTIONS) and node.name == name:
            found = node
    return found


def defines(code: str, name: str) -> bool:
    """Whether ``code`` parses and defines function ``name`` at top level."""
    return _target(_parse(code), name) is not None


def docstring_node(func: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Expr | None:
    first = func.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def has_docstring(code: str, function_name: str) -> bool:
    func = _target(_parse(code), function_name)
    return func is not None and docstring_node(func) is not None


def stub_implementations(code: str, function_name: str) -> list[str]:
    """The code with the function's body replaced by trivially wrong ones (return None; raise)."""
    stubs = []
    for body in ("return None", "raise NotImplementedError"):
        tree = ast.parse(code)
        for node in tree.body:
            if isinstance(node, _FUNCTIONS) and node.name == function_name:
                node.body = ast.parse(body).body
        stubs.append(ast.unparse(tree) + "\n")
    return stubs


# ----------------------------------------------------------------------------- signature


def _expr(node: ast.expr | None) -> str | None:
    return None if node is None else ast.unparse(node)


def signature(code: str, function_name: str) -> dict | None:
    """The interface of ``function_name`` in ``code``: what callers (and the tests) depend on.

    Name, sync/async, every parameter with its kind, in order, and its default (as
    source). Annotations and decorators are not part of it (refining adds type hints).
    None when the code does not parse or define the function.
    """
    func = _target(_parse(code), function_name)
    if func is None:
        return None
    a = func.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [
        {
            "name": arg.arg,
            "kind": "positional_only" if index < len(a.posonlyargs) else "positional_or_keyword",
            "default": _expr(default),
        }
        for index, (arg, default) in enumerate(zip(positional, defaults))
    ]
    if a.vararg:
        params.append({"name": a.vararg.arg, "kind": "var_positional", "default": None})
    params += [
        {"name": arg.arg, "kind": "keyword_only", "default": _expr(default)}
        for arg, default in zip(a.kwonlyargs, a.kw_defaults)
    ]
    if a.kwarg:
        params.append({"name": a.kwarg.arg, "kind": "var_keyword", "default": None})
    return {"name": func.name, "async": isinstance(func, ast.AsyncFunctionDef), "parameters": params}


def signature_change(before: str, after: str, function_name: str) -> str | None:
    """None when ``after`` keeps the signature ``before`` has; else a sentence saying what changed."""
    old, new = signature(before, function_name), signature(after, function_name)
    if new is None:
        return f"the new code does not define {function_name}"
    if old == new:
        return None
    if old is None:
        return f"the original code does not define {function_name}"
    if old["async"] != new["async"]:
        return "the function changed between def and async def"

    def describe(sig: dict) -> str:
        return ", ".join(
            f"{p['name']}" + (f"={p['default']}" if p["default"] is not None else "") + f" [{p['kind']}]"
            for p in sig["parameters"]
        )

    return f"the parameters changed from ({describe(old)}) to ({describe(new)})"


# ----------------------------------------------------------------------------- published layout


def _line_offsets(code: str) -> list[int]:
    """Character offset of the start of each line (1-based line numbers index it directly)."""
    offsets, total = [0, 0], 0
    for line in _LINE_RE.findall(code):
        total += len(line)
        offsets.append(total)
    return offsets


def _char_col(code_line: str, byte_col: int) -> int:
    """ast's column offsets count UTF-8 bytes; strings count characters."""
    return len(code_line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def _break_before(code: str, lineno: int, byte_col: int, indent: str, drop_semicolon: bool) -> str:
    lines = _LINE_RE.findall(code)
    line = lines[lineno - 1]
    col = _char_col(line, byte_col)
    head, tail = line[:col].rstrip(), line[col:]
    if drop_semicolon:
        head = head.rstrip()
        if head.endswith(";"):
            head = head[:-1].rstrip()
    lines[lineno - 1] = head + "\n" + indent + tail
    return "".join(lines)


def publishable_layout(code: str, function_name: str) -> str:
    """``code`` laid out so a prompt can end after the signature (or docstring) on a line
    boundary: a body written on the ``def`` line (``def f(x): return x``) or a statement
    after the docstring on its line moves to a line of its own; the code ends with one
    newline. Behaviour is unchanged (only whitespace and a ``;`` move). Code that does
    not parse or lacks the function is returned as it is."""
    for _ in range(3):  # at most: body on the def line, then a statement after the docstring
        tree = _parse(code)
        func = _target(tree, function_name)
        if func is None:
            return code
        lines = _LINE_RE.findall(code)
        first = func.body[0]
        indent = " " * (func.col_offset + 4)
        before = lines[first.lineno - 1].encode("utf-8")[: first.col_offset].decode("utf-8", errors="ignore")
        if before.strip():  # the body starts on a line of the header
            code = _break_before(code, first.lineno, first.col_offset, indent, drop_semicolon=False)
            continue
        doc = docstring_node(func)
        if doc is not None and len(func.body) > 1 and func.body[1].lineno == doc.end_lineno:
            second = func.body[1]
            code = _break_before(code, second.lineno, second.col_offset, " " * _char_col(
                lines[first.lineno - 1], first.col_offset), drop_semicolon=True)  # fmt: skip
            continue
        break
    return code.rstrip("\n") + "\n" if code.strip() else code


def split_prompt_completion(code: str, function_name: str) -> tuple[str, str]:
    """BigCodeBench-complete style: the prompt is everything up to the function's signature
    and docstring (imports, constants, helpers before it); the completion is the rest
    (the body and everything after the function). ``prompt + completion == code``.
    ``code`` should be in ``publishable_layout``; ValueError when it cannot be split."""
    func = _target(_parse(code), function_name)
    if func is None:
        raise ValueError(f"the code does not define {function_name}")
    offsets = _line_offsets(code)
    doc = docstring_node(func)
    cut_line = doc.end_lineno if doc is not None else func.body[0].lineno - 1  # the prompt's last line
    if cut_line < func.lineno or cut_line >= len(offsets):
        raise ValueError("the function's body starts on its def line; lay the code out with publishable_layout")
    cut = offsets[cut_line + 1]
    return code[:cut], code[cut:]


def completion_instruction(function_name: str, prompt: str, docstring: bool = True) -> str:
    """The user turn asking for a function from its signature (and docstring): the training
    data's ``messages`` and the evaluation's instruct mode say it the same way. Without a
    docstring the instruction does not mention one."""
    task = "so that it does what its docstring says" if docstring else "(its name and parameters say what it does)"
    return f"Complete the Python function `{function_name}` below {task}.\n\n```python\n{prompt.rstrip()}\n```"


def chat_messages(code: str, function_name: str, prompt: str) -> list[dict]:
    """An instruction-tuning pair: the task from the prompt, exactly ``code`` as the answer."""
    instruction = completion_instruction(function_name, prompt, has_docstring(code, function_name))
    return chat_pair(code, instruction, "python")


def published_form_problem(code: str, function_name: str, prompt: str, completion: str, messages: list[dict]):
    """None when the published forms are exactly ``code``; else a sentence saying which is not."""
    if prompt + completion != code:
        return "prompt + completion is not the verified code"
    if not code.endswith("\n"):
        return "the code does not end with a newline"
    func = _target(_parse(code), function_name)
    if func is None:
        return f"the code does not define {function_name}"
    indent = " " * (func.col_offset + 4)
    if not (defines(prompt, function_name) or defines(prompt + indent + "pass\n", function_name)):
        return "the prompt does not hold the function's whole signature"
    if not completion.strip():
        return "the completion is empty"
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if len(answers) != 1 or code_blocks(answers[0]) != [code]:
        return "the chat answer's code is not the verified code"
    asks_docstring = "docstring" in next(m["content"] for m in messages if m["role"] == "user")
    if asks_docstring and docstring_node(func) is None:
        return "the chat task mentions a docstring the code lacks"
    return None
