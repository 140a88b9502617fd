"""Python: retrieval rules (``functions``), answer parsing (``answers``), formats (``formats``)
and prompt templates (``prompts/``). See ``processing.languages`` for the interface."""

from pathlib import Path

from processing.languages.python.answers import (
    ParsedTests,
    bound_names,
    code_blocks,
    code_from_answer,
    parse_test_answer,
)
from processing.languages.python.formats import (
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
from processing.languages.python.functions import (
    TOKEN_RE,
    FileRecord,
    FunctionRecord,
    analyse_file,
    import_prefilter,
    normalized_tokens,
    tokens,
)
from processing.languages.python.mutants import OPERATORS as MUTATION_OPERATORS
from processing.languages.python.mutants import Mutant, function_lines, sample_mutants

NAME = "python"
PROMPT_DIR = Path(__file__).parent / "prompts"
SUFFIXES = (".py",)  # the source files retrieval reads from folders of code
# The define check's tests (``processing.steps.define``): one test that does nothing, so
# that running the code alone before them is the whole check.
DEFINE_TESTS = "import unittest\n\n\nclass TestDefines(unittest.TestCase):\n    def test_defines(self):\n        pass\n"

__all__ = [
    "DEFINE_TESTS", "MUTATION_OPERATORS", "NAME", "PROMPT_DIR", "SUFFIXES", "TOKEN_RE", "FileRecord", "FunctionRecord", "Mutant", "ParsedTests",
    "analyse_file", "bound_names", "function_lines", "sample_mutants",
    "chat_messages", "code_blocks", "code_from_answer", "completion_instruction", "defines", "has_docstring",
    "import_prefilter", "normalized_tokens", "parse_test_answer", "publishable_layout", "published_form_problem",
    "signature", "signature_change", "split_prompt_completion", "stub_implementations", "tokens",
]  # fmt: skip
