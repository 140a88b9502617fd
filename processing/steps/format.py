"""Stage 2's last steps: the published forms of every passing row, and the check that
they are exactly what was verified.

``format_batch`` lays the code out so it splits on a line boundary
(``publishable_layout``), then makes the consumer forms: ``prompt`` + ``completion``
(BigCodeBench-complete style; the completion carries helpers defined after the function)
and the chat ``messages``. ``check_published_batch`` then checks every form **as
published**: ``prompt + completion`` is ``code`` (string equality), the chat answer's
code is ``code``, and ``code`` passes its tests in the sandbox, with the independent
second opinion unless ``confirm=False``. A row that fails is rejected
(``published_form_mismatch``, ``published_form_fails`` or ``confirm_disagrees``), never
published. Rejected rows get a bounded ``detail``.
"""

from __future__ import annotations

from processing.languages import get_language
from processing.steps.verify import PASSING, error_excerpt, reject, rows_in_state, run_programs, set_passing

DETAIL_CHARS = 2000


def format_batch(batch: dict[str, list], *, language: str = "python") -> dict[str, list]:
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    n = len(out["state"])
    out.update(prompt=[None] * n, completion=[None] * n, messages=[None] * n)
    for i in rows_in_state(out, "passing"):
        name = out["function_name"][i]
        code = lang.publishable_layout(out["code"][i], name)
        try:
            prompt, completion = lang.split_prompt_completion(code, name)
        except ValueError as exc:
            reject(out, i, "published_form_mismatch", f"the code cannot be split into prompt and completion: {exc}")
            continue
        out["code"][i] = code  # only whitespace may have moved: the check below runs exactly this
        out["prompt"][i], out["completion"][i] = prompt, completion
        out["messages"][i] = lang.chat_messages(code, name, prompt)
        problem = lang.published_form_problem(code, name, prompt, completion, out["messages"][i])
        if problem is not None:
            reject(out, i, "published_form_mismatch", problem)
    _withdraw_forms(out, range(n))
    return out


def _withdraw_forms(out: dict[str, list], rows) -> None:
    """Rows among ``rows`` that are not passing publish no forms, and a bounded ``detail``."""
    for i in rows:
        if out["state"][i] != "passing":
            out["prompt"][i] = out["completion"][i] = out["messages"][i] = None
            out["detail"][i] = (out["detail"][i] or "")[:DETAIL_CHARS]


def check_published_batch(batch: dict[str, list], *, sandbox, confirm: bool = True) -> dict[str, list]:
    """Run every passing row's published program (``prompt + completion``) with its tests;
    with ``confirm``, a pass must also pass in a fresh interpreter with another test driver."""
    out = {key: list(values) for key, values in batch.items()}
    passing = rows_in_state(out, "passing")
    pairs = [(out["prompt"][i] + out["completion"][i], out["test_code"][i]) for i in passing]
    verdicts = run_programs(sandbox, pairs, desc="checking the published forms", confirm=confirm)
    for i, (program, _), result in zip(passing, pairs, verdicts):
        if result.status == PASSING:
            set_passing(out, i, program, result)
        elif result.reason == "confirm_disagrees":
            reject(out, i, "confirm_disagrees", error_excerpt(result.details))
        else:
            reject(
                out, i, "published_form_fails",
                f"the published prompt + completion {result.status}s against its tests: {error_excerpt(result.details)}",
            )  # fmt: skip
    _withdraw_forms(out, passing)
    return out
