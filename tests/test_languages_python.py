"""Python's language package: code from answers, stub bodies, the prompt/completion split."""

from __future__ import annotations

from processing.languages.python import code_from_answer, split_prompt_completion, stub_implementations

CODE = "import os\n\n\ndef join(a, b):\n    '''Join two parts.'''\n    # the separator is the OS's\n    return os.path.join(a, b)\n"


def test_code_is_taken_from_the_block_that_defines_the_function():
    answer = "Here:\n```python\nimport os\n```\n```python\nimport os\n\ndef join(a, b):\n    return a + b\n```\nDone."
    assert code_from_answer(answer, "join") == ("import os\n\ndef join(a, b):\n    return a + b\n", "")
    assert code_from_answer("```python\ndef other(x):\n    return x\n```", "join") == (None, "no_function_in_answer")
    assert code_from_answer(None, "join") == (None, "no_answer")


def test_stubs_replace_only_the_body():
    none_body, raising = stub_implementations(CODE, "join")
    assert "import os" in none_body and "def join(a, b):\n    return None" in none_body
    assert "raise NotImplementedError" in raising and "os.path.join" not in raising


def test_prompt_and_completion_split_after_the_docstring():
    prompt, completion = split_prompt_completion(CODE, "join")
    assert prompt == "import os\n\n\ndef join(a, b):\n    '''Join two parts.'''\n"
    assert completion == "    # the separator is the OS's\n    return os.path.join(a, b)\n"


def test_without_a_docstring_the_prompt_is_the_signature():
    prompt, completion = split_prompt_completion("def f(x):\n    return x\n", "f")
    assert (prompt, completion) == ("def f(x):\n", "    return x\n")


def test_lenient_extraction_falls_back_to_the_first_block_that_parses():
    answer = "```python\nnot python at all(\n```\n```python\n    return x + 1\n```\n```python\ny = 2\n```"
    assert code_from_answer(answer, "f") == (None, "no_function_in_answer")
    assert code_from_answer(answer, "f", lenient=True) == ("y = 2\n", "")
    assert code_from_answer("just prose", "f", lenient=True) == ("just prose", "")
