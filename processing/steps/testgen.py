"""Stage 1's test-generation step: one generation call for the whole batch, then each
answer parsed by the language's rules into ``test_code`` or a drop reason. A prompt that
does not fit the model's context is dropped as ``prompt_too_long``, and an answer cut by
``--test_max_tokens`` that gives no usable tests as ``answer_truncated``."""

from __future__ import annotations

from processing.generation import ANSWER_TRUNCATED, TOO_LONG_DETAIL, unusable_reason, warn_truncated
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
    answers = generator.generate(conversations, sampling, desc="writing unit tests", step="test")
    out: dict[str, list] = {"test_code": [], "test_drop_reason": [], "test_detail": []}
    for code, name, samples in zip(batch["code"], batch["function_name"], answers):
        answer = samples[0]
        parsed = lang.parse_test_answer(answer, name, code=code)
        reason, detail = parsed.drop_reason, parsed.detail
        if reason is not None:
            reason = unusable_reason(answer, reason)
            if reason == ANSWER_TRUNCATED:
                detail = f"cut at {sampling.max_tokens} tokens ({parsed.drop_reason}): {parsed.detail}"
            elif reason != parsed.drop_reason:
                detail = TOO_LONG_DETAIL
        out["test_code"].append(parsed.test_code)
        out["test_drop_reason"].append(reason)
        out["test_detail"].append(detail)
    warn_truncated(out["test_drop_reason"].count(ANSWER_TRUNCATED), "test", sampling.max_tokens)
    return out
