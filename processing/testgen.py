"""Unit-test generation: prompt a model with each function, keep the tests it writes if they are usable.

Prompts are template files (``prompts/python/*.txt``) whose text is hashed into the
stage's fingerprint and recorded with every row. An answer is usable when a Python
module with a ``unittest.TestCase`` and at least one ``test_`` method can be cut out of
it, and that module does not redefine the function under test. Every rejected answer
gets a ``drop_reason``: ``no_answer``, ``no_code``, ``unparseable_tests``,
``no_test_methods``, ``redefines_function``.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from sandbox.static import count_tests

PROMPT_DIR = Path(__file__).parent / "prompts" / "python"
FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)(?:```|\Z)", re.S)
CODE_START_RE = re.compile(r"^(import |from |class |def |@|#|\"\"\"|''')")
MAX_TRIMMED_LINES = 30
ANSWER_EXCERPT = 2000


@dataclass(frozen=True)
class PromptTemplate:
    """A system and a user message; ``{name}`` placeholders are filled by plain replacement
    (code is full of braces, so ``str.format`` is not used)."""

    name: str
    system: str
    user: str

    @classmethod
    def load(cls, name: str, directory: Path = PROMPT_DIR) -> PromptTemplate:
        system = (directory / f"{name}_system.txt").read_text()
        user = (directory / f"{name}_user.txt").read_text()
        return cls(name, system.strip(), user.strip())

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{self.system}\0{self.user}".encode()).hexdigest()[:16]

    def conversation(self, **values: str) -> list[dict]:
        user = self.user
        for key, value in values.items():
            user = user.replace("{" + key + "}", value)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


@dataclass
class ParsedTests:
    test_code: str | None
    drop_reason: str | None
    detail: str = ""


def python_blocks(answer: str) -> list[str]:
    """The fenced Python (or untagged) code blocks of an answer, in order; an unclosed last fence counts."""
    return [body for lang, body in FENCE_RE.findall(answer) if lang.lower() in ("", "python", "py", "python3")]


def _candidates(answer: str) -> list[str]:
    """Code blocks of the answer, those that look like tests first; the whole answer last."""
    blocks = python_blocks(answer)
    testy = [b for b in blocks if "TestCase" in b or "unittest" in b]
    ordered = testy + [b for b in blocks if b not in testy]
    if len(testy) > 1:
        ordered.insert(0, "\n\n".join(testy))  # tests split over several blocks
    return ordered + [answer]


def _parse_trimmed(text: str) -> tuple[ast.Module, str] | None:
    """Parse ``text``; failing that, cut chatter before the first code-looking line and
    lines after the code, a few at a time."""
    lines = text.strip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if CODE_START_RE.match(line)), 0)
    for begin in dict.fromkeys((0, start)):
        kept = lines[begin:]
        for cut in range(0, min(MAX_TRIMMED_LINES, len(kept))):
            source = "\n".join(kept[: len(kept) - cut]) + "\n"
            try:
                return ast.parse(source), source
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
    return None


def _binds_name(node: ast.stmt, name: str) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id == name for target in targets for t in ast.walk(target))
    return False


def parse_test_answer(answer: str | None, function_name: str) -> ParsedTests:
    """Cut a usable test module out of a model's answer, or say why there is none."""
    if answer is None:
        return ParsedTests(None, "no_answer", "the model gave no answer")
    if not answer.strip():
        return ParsedTests(None, "no_code", "the answer is empty")
    parsed = None
    for candidate in _candidates(answer):
        parsed = _parse_trimmed(candidate)
        if parsed is not None and count_tests(parsed[0]).count:
            break
    if parsed is None:
        return ParsedTests(None, "unparseable_tests", answer[:ANSWER_EXCERPT])
    tree, source = parsed
    lines = source.splitlines(keepends=True)
    drop_lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == function_name for a in node.names):
            # "from solution import f": the function is already in the module
            drop_lines.update(range(node.lineno - 1, node.end_lineno))
        elif _binds_name(node, function_name):
            return ParsedTests(
                None, "redefines_function", f"the tests define {function_name} again (line {node.lineno})"
            )
    if not count_tests(tree).count:
        return ParsedTests(None, "no_test_methods", answer[:ANSWER_EXCERPT])
    test_code = "".join(line for i, line in enumerate(lines) if i not in drop_lines)
    imports_unittest = any(
        isinstance(node, ast.Import) and any(a.name == "unittest" and not a.asname for a in node.names)
        for node in tree.body
    )
    if not imports_unittest and "unittest." in test_code:
        test_code = "import unittest\n" + test_code
    return ParsedTests(test_code.strip("\n") + "\n", None)


def generate_tests_batch(batch: dict[str, list], *, generator, template: PromptTemplate, sampling) -> dict[str, list]:
    """``datasets.map(batched=True)`` step: one generation call for the whole batch."""
    conversations = [
        template.conversation(code=code, function_name=name)
        for code, name in zip(batch["code"], batch["function_name"])
    ]
    answers = generator.generate(conversations, sampling, desc="writing unit tests")
    out: dict[str, list] = {"test_code": [], "test_drop_reason": [], "test_detail": []}
    for name, samples in zip(batch["function_name"], answers):
        parsed = parse_test_answer(samples[0], name)
        out["test_code"].append(parsed.test_code)
        out["test_drop_reason"].append(parsed.drop_reason)
        out["test_detail"].append(parsed.detail)
    return out
