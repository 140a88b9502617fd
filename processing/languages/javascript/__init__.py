"""JavaScript (Node): retrieval rules (``functions``), answer parsing for ``node:test`` tests
(``answers``), formats (``formats``), mutation operators (``mutants``) and prompt
templates (``prompts/``), all read with tree-sitter. The same interface as
``processing.languages.python``; see ``processing.languages``."""

from pathlib import Path

from processing.languages.javascript.answers import (
    ParsedTests,
    bound_names,
    code_blocks,
    code_from_answer,
    code_module_format,
    count_tests,
    parse_test_answer,
)
from processing.languages.javascript.formats import (
    chat_messages,
    completion_instruction,
    defines,
    has_docstring,
    publishable_layout,
    published_form_problem,
    signature,
    signature_change,
    split_prompt_completion,
    stub_implementations,
)
from processing.languages.javascript.functions import (
    GLOBAL_NAMES,
    NODE_BUILTINS,
    SUFFIXES,
    FileRecord,
    FunctionRecord,
    analyse_file,
    import_prefilter,
    normalized_tokens,
    tokens,
)
from processing.languages.javascript.mutants import OPERATORS as MUTATION_OPERATORS
from processing.languages.javascript.mutants import Mutant, function_lines, sample_mutants
from processing.languages.javascript.syntax import TOKEN_RE

NAME = "javascript"
PROMPT_DIR = Path(__file__).parent / "prompts"
# The define check's tests: one node:test test that does nothing (``test`` made a global
# as parsed test answers do, so it works in either module format and declares nothing).
DEFINE_TESTS = "globalThis.test ??= process.getBuiltinModule('node:test').test;\ntest('defines', () => {});\n"

__all__ = [
    "DEFINE_TESTS", "GLOBAL_NAMES", "MUTATION_OPERATORS", "NAME", "NODE_BUILTINS", "PROMPT_DIR", "SUFFIXES", "TOKEN_RE",
    "FileRecord", "FunctionRecord", "Mutant", "ParsedTests",
    "analyse_file", "bound_names", "function_lines", "sample_mutants", "code_module_format", "count_tests",
    "chat_messages", "code_blocks", "code_from_answer", "completion_instruction", "defines", "has_docstring",
    "import_prefilter", "normalized_tokens", "parse_test_answer", "publishable_layout", "published_form_problem",
    "signature", "signature_change", "split_prompt_completion", "stub_implementations", "tokens",
]  # fmt: skip
