"""Python forms of a verified function: stub bodies for the test guard, the
BigCodeBench-style prompt/completion split, and the chat pair."""

from __future__ import annotations

import ast


def defines(code: str, name: str) -> bool:
    """Whether ``code`` parses and defines function ``name`` at top level."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def stub_implementations(code: str, function_name: str) -> list[str]:
    """The code with the function's body replaced by trivially wrong ones (return None; raise)."""
    stubs = []
    for body in ("return None", "raise NotImplementedError"):
        tree = ast.parse(code)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == function_name:
                node.body = ast.parse(body).body
        stubs.append(ast.unparse(tree) + "\n")
    return stubs


def split_prompt_completion(code: str, function_name: str) -> tuple[str, str]:
    """BigCodeBench-complete style: (imports + signature + docstring, body after the docstring)."""
    tree = ast.parse(code)
    lines = code.splitlines(keepends=True)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function_name)
    first = func.body[0]
    has_doc = (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    )
    cut = first.end_lineno if has_doc else func.body[0].lineno - 1
    prompt = "".join(lines[:cut])
    completion = "".join(lines[cut : func.end_lineno])
    return prompt, completion


def completion_instruction(function_name: str, prompt: str) -> str:
    """The user turn asking for a function from its signature and docstring (the training
    data's ``messages`` and the evaluation's instruct mode say it the same way)."""
    return (
        f"Complete the Python function `{function_name}` below so that it does what its docstring says.\n\n"
        f"```python\n{prompt.rstrip()}\n```"
    )


def chat_messages(code: str, function_name: str, prompt: str) -> list[dict]:
    """An instruction-tuning pair: the task from the prompt, the full code as the answer."""
    return [
        {"role": "user", "content": completion_instruction(function_name, prompt)},
        {"role": "assistant", "content": f"```python\n{code.rstrip()}\n```"},
    ]
