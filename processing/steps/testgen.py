"""Stage 1's test-generation step: one generation call for the whole batch, then each
answer parsed by the language's rules into ``test_code`` or a drop reason."""

from __future__ import annotations

from processing.languages import PromptTemplate, get_language


def generate_tests_batch(
    batch: dict[str, list], *, generator, template: PromptTemplate, sampling, language: str = "python"
) -> dict[str, list]:
    """Columns ``code``, ``function_name`` in; ``test_code``, ``test_drop_reason``, ``test_detail`` out."""
    lang = get_language(language)
    conversations = [
        template.conversation(code=code, function_name=name)
        for code, name in zip(batch["code"], batch["function_name"])
    ]
    answers = generator.generate(conversations, sampling, desc="writing unit tests")
    out: dict[str, list] = {"test_code": [], "test_drop_reason": [], "test_detail": []}
    for name, samples in zip(batch["function_name"], answers):
        parsed = lang.parse_test_answer(samples[0], name)
        out["test_code"].append(parsed.test_code)
        out["test_drop_reason"].append(parsed.drop_reason)
        out["test_detail"].append(parsed.detail)
    return out
