"""Languages: everything that knows a language's syntax, behind one small interface.

A language is a package ``processing.languages.<name>`` whose ``__init__`` exposes:

* ``NAME`` and ``PROMPT_DIR`` (the prompt templates: ``unit_test``, ``fix``, ``refine``);
* retrieval: ``import_prefilter(packages)``, ``analyse_file(content, prefilter, packages,
  max_bytes)`` (a ``FileRecord`` with one ``FunctionRecord`` per function, with its
  tokens) and ``normalized_tokens(source)`` (a benchmark solution's tokens, made the
  same way, for decontamination);
* answers: ``code_from_answer(answer, function_name)`` and ``parse_test_answer(answer,
  function_name, code=None)`` (JavaScript's tests must use the code's module format);
* ``SUFFIXES`` (the files retrieval reads from folders) and ``DEFINE_TESTS`` (the define
  check's do-nothing tests);
* formats: ``stub_implementations(code, function_name)``, ``signature_change(before,
  after, function_name)`` (refine must keep the interface), ``publishable_layout(code,
  function_name)``, ``split_prompt_completion(code, function_name)`` (``prompt +
  completion == code``), ``chat_messages(code, function_name, prompt)`` and
  ``published_form_problem(code, function_name, prompt, completion, messages)``.

Steps also use ``bound_names(test_code)`` (strengthening: grown tests may rebind
nothing), ``sample_mutants(code, limit, seed)``, ``MUTATION_OPERATORS`` and
``function_lines(code, function_name)`` (mutation score and coverage), and
``FileRecord``/``FunctionRecord`` (the retrieval records).

The stages reach a language only through ``get_language(name)``, so adding one adds a
package (and a sandbox runner), not edits across files. ``python`` (``ast``) and
``javascript`` (Node; tree-sitter, ``node:test`` tests) are the language packages there are; the
"Adding a language" section of ``processing/README.md`` walks through the steps.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# The language packages there are (``get_language``), all of which the stages run end to
# end (``--language``).
PACKAGES = ("python", "javascript")
LANGUAGES = PACKAGES


def get_language(name: str = "python") -> ModuleType:
    if name not in PACKAGES:
        raise ValueError(f"unknown language {name!r}; choose from {', '.join(PACKAGES)}")
    return importlib.import_module(f"processing.languages.{name}")


@dataclass(frozen=True)
class PromptTemplate:
    """A system and a user message; ``{name}`` placeholders are filled by plain replacement
    (code is full of braces, so ``str.format`` is not used)."""

    name: str
    system: str
    user: str

    @classmethod
    def load(cls, name: str, directory: Path | None = None) -> PromptTemplate:
        directory = Path(directory) if directory is not None else get_language("python").PROMPT_DIR
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
