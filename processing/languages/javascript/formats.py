"""JavaScript forms of a verified function, mirroring ``processing.languages.python.formats``:
stub bodies for the test guard, the signature (refine must keep it), the published
layout, the prompt/completion split and the chat pair, and the check that all of them
are the code.

The prompt is everything up to the end of the line that opens the function's body (the
imports, the JSDoc comment above the function and its whole signature, ``{`` included; for
an arrow with an expression body, up to ``=>``); the completion is the rest (the body, the
closing brace and whatever follows). ``prompt + completion == code`` (string equality).
"""

from __future__ import annotations

from tree_sitter import Node

from processing.languages.common import chat_pair
from processing.languages.javascript.answers import code_blocks
from processing.languages.javascript.functions import _jsdoc_start
from processing.languages.javascript.syntax import leaf_tokens, target

STUB_BODIES = ("return undefined;", 'throw new Error("not implemented");')


def defines(code: str, name: str) -> bool:
    """Whether ``code`` parses and defines function ``name`` at top level."""
    return target(code, name) is not None


def has_docstring(code: str, function_name: str) -> bool:
    """Whether the function has a JSDoc comment (``/** ... */``) right above it."""
    found = target(code, function_name)
    if found is None:
        return False
    statement, _, data = found
    return _jsdoc_start(statement, data) is not statement


def _replace(data: bytes, node: Node, replacement: str) -> str:
    return (data[: node.start_byte] + replacement.encode("utf-8") + data[node.end_byte :]).decode(
        "utf-8", "surrogatepass"
    )


def stub_implementations(code: str, function_name: str) -> list[str]:
    """The code with the function's body replaced by trivially wrong ones (return undefined; throw)."""
    found = target(code, function_name)
    if found is None:
        return []
    _, function, data = found
    body = function.child_by_field_name("body")
    return [_replace(data, body, "{\n  " + stub + "\n}") for stub in STUB_BODIES]


# ----------------------------------------------------------------------------- signature


def _normal(node: Node | None, data: bytes) -> str | None:
    return None if node is None else " ".join(leaf_tokens(node, data))


def _is_async(function: Node) -> bool:
    return any(child.type == "async" for child in function.children)


def signature(code: str, function_name: str) -> dict | None:
    """The interface of ``function_name`` in ``code``: name, async, generator, and every
    parameter in order with its kind (``positional`` or ``rest``) and its default (as
    normalised source); destructuring patterns are named by their normalised source.
    None when the code does not parse or define the function."""
    found = target(code, function_name)
    if found is None:
        return None
    _, function, data = found
    parameters = []
    single = function.child_by_field_name("parameter")
    nodes = [single] if single is not None else function.child_by_field_name("parameters").named_children
    for node in nodes:
        if node.type == "comment":
            continue
        if node.type == "assignment_pattern":
            name, default, kind = node.child_by_field_name("left"), node.child_by_field_name("right"), "positional"
        elif node.type == "rest_pattern":
            name, default, kind = node.named_children[0], None, "rest"
        else:
            name, default, kind = node, None, "positional"
        parameters.append({"name": _normal(name, data), "kind": kind, "default": _normal(default, data)})
    generator = function.type in ("generator_function", "generator_function_declaration")
    return {"name": function_name, "async": _is_async(function), "generator": generator, "parameters": parameters}


def signature_change(before: str, after: str, function_name: str) -> str | None:
    """None when ``after`` keeps the signature ``before`` has; else a sentence saying what changed
    (a ``function`` may become an arrow or back: callers cannot tell)."""
    old, new = signature(before, function_name), signature(after, function_name)
    if new is None:
        return f"the new code does not define {function_name}"
    if old == new:
        return None
    if old is None:
        return f"the original code does not define {function_name}"
    if old["async"] != new["async"]:
        return "the function changed between async and not async"
    if old["generator"] != new["generator"]:
        return "the function changed between a generator and a plain function"

    def describe(sig: dict) -> str:
        return ", ".join(
            ("..." if p["kind"] == "rest" else "")
            + p["name"]
            + (f" = {p['default']}" if p["default"] is not None else "")
            for p in sig["parameters"]
        )

    return f"the parameters changed from ({describe(old)}) to ({describe(new)})"


# ----------------------------------------------------------------------------- published layout


def _line_end(data: bytes, offset: int) -> int:
    """Byte offset just after the line break that ends the line holding ``offset`` (or the end)."""
    end = data.find(b"\n", offset)
    return len(data) if end < 0 else end + 1


def _body_opening(function: Node, data: bytes) -> tuple[int, bool]:
    """(offset just after ``{`` or ``=>``, whether that is a block body)."""
    body = function.child_by_field_name("body")
    if body.type == "statement_block":
        return body.start_byte + 1, True
    arrow = next(child for child in function.children if child.type == "=>")
    return arrow.end_byte, False


def _rest_of_line(data: bytes, offset: int) -> bytes:
    return data[offset : _line_end(data, offset)]


def _only_comment(rest: bytes) -> bool:
    stripped = rest.strip()
    return not stripped or stripped.startswith(b"//") or (stripped.startswith(b"/*") and stripped.endswith(b"*/"))


def publishable_layout(code: str, function_name: str) -> str:
    """``code`` laid out so a prompt can end on a line boundary right after the body opens:
    code after the body's ``{`` (or an arrow's ``=>``) on its line moves to a line of its own.
    Behaviour is unchanged (only whitespace moves); the code ends with one newline. Code
    that does not parse or lacks the function is returned as it is."""
    found = target(code, function_name)
    if found is None:
        return code
    statement, function, data = found
    opening, _ = _body_opening(function, data)
    rest = _rest_of_line(data, opening)
    if not _only_comment(rest):
        line_start = data.rfind(b"\n", 0, statement.start_byte) + 1
        indent = data[line_start : statement.start_byte]
        indent = indent[: len(indent) - len(indent.lstrip())] + b"  "
        tail = data[opening:].lstrip(b" \t")
        data = data[:opening] + b"\n" + indent + tail
        code = data.decode("utf-8", "surrogatepass")
        found = target(code, function_name)
        if found is not None:  # and the closing brace of a one-line body to a line of its own
            statement, function, data = found
            body = function.child_by_field_name("body")
            close = body.end_byte - 1
            if body.type == "statement_block" and data[data.rfind(b"\n", 0, close) + 1 : close].strip():
                data = data[:close].rstrip(b" \t") + b"\n" + indent[:-2] + data[close:]
                code = data.decode("utf-8", "surrogatepass")
    return code.rstrip("\n") + "\n" if code.strip() else code


def split_prompt_completion(code: str, function_name: str) -> tuple[str, str]:
    """The prompt is everything up to the end of the line where the function's body opens
    (imports, helpers before it, the JSDoc, the signature); the completion is the rest.
    ``prompt + completion == code``. ``code`` should be in ``publishable_layout``;
    ValueError when it cannot be split."""
    found = target(code, function_name)
    if found is None:
        raise ValueError(f"the code does not define {function_name}")
    _, function, data = found
    opening, _ = _body_opening(function, data)
    if not _only_comment(_rest_of_line(data, opening)):
        raise ValueError("the function's body starts on its signature's line; lay the code out with publishable_layout")
    cut = _line_end(data, opening)
    prompt, completion = data[:cut].decode("utf-8", "surrogatepass"), data[cut:].decode("utf-8", "surrogatepass")
    if not completion.strip():
        raise ValueError("the function has no body after its signature")
    return prompt, completion


def completion_instruction(function_name: str, prompt: str, docstring: bool = True) -> str:
    """The user turn asking for a function from its signature (and JSDoc)."""
    task = "so that it does what its JSDoc comment says" if docstring else "(its name and parameters say what it does)"
    return f"Complete the JavaScript function `{function_name}` below {task}.\n\n```javascript\n{prompt.rstrip()}\n```"


def chat_messages(code: str, function_name: str, prompt: str) -> list[dict]:
    """An instruction-tuning pair: the task from the prompt, exactly ``code`` as the answer."""
    instruction = completion_instruction(function_name, prompt, has_docstring(code, function_name))
    return chat_pair(code, instruction, "javascript")


def published_form_problem(code: str, function_name: str, prompt: str, completion: str, messages: list[dict]):
    """None when the published forms are exactly ``code``; else a sentence saying which is not."""
    if prompt + completion != code:
        return "prompt + completion is not the verified code"
    if not code.endswith("\n"):
        return "the code does not end with a newline"
    found = target(code, function_name)
    if found is None:
        return f"the code does not define {function_name}"
    _, function, data = found
    _, block = _body_opening(function, data)
    closing = "}\n" if block else "undefined;\n"
    if not defines(prompt + closing, function_name):
        return "the prompt does not hold the function's whole signature"
    if not completion.strip():
        return "the completion is empty"
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if len(answers) != 1 or code_blocks(answers[0]) != [code]:
        return "the chat answer's code is not the verified code"
    asks_docstring = "JSDoc" in next(m["content"] for m in messages if m["role"] == "user")
    if asks_docstring and not has_docstring(code, function_name):
        return "the chat task mentions a JSDoc comment the code lacks"
    return None
