"""Stage 2's steps: verify, fix failing code from its error trace, guard the tests, refine, re-verify.

Everything works on a list of row dicts, one round at a time, so each round is one
generation call and one sandbox batch over all the rows that need it. Rows carry their
history (``attempts``); the tests are never edited.
"""

from __future__ import annotations

import ast
import re

from processing.testgen import PromptTemplate, python_blocks

PASSING = "pass"
FIXABLE = {"fail", "error", "timeout", "oom"}
ERROR_EXCERPT = 1500


def extract_code(answer: str | None, function_name: str) -> tuple[str | None, str]:
    """The code block of an answer that defines ``function_name`` at top level, or why there is none."""
    if answer is None:
        return None, "no_answer"
    for candidate in python_blocks(answer) + [answer]:
        try:
            tree = ast.parse(candidate)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == function_name for n in tree.body):
            return candidate.strip("\n") + "\n", ""
    return None, "no_function_in_answer"


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


def error_excerpt(details: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", details or "").strip()
    return text[:ERROR_EXCERPT]


def fix_conversation(template: PromptTemplate, row: dict) -> list[dict]:
    return template.conversation(
        code=row["current_code"], test_code=row["test_code"], error=row["current_error"] or "(no details)",
        function_name=row["function_name"],
    )  # fmt: skip


def refine_conversation(template: PromptTemplate, row: dict) -> list[dict]:
    return template.conversation(code=row["code"], function_name=row["function_name"])
