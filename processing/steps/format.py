"""Stage 2's last step: the consumer forms of every passing row (``prompt`` + ``completion``,
chat ``messages``), and bounded ``detail`` on rejected ones."""

from __future__ import annotations

from processing.languages import get_language

DETAIL_CHARS = 2000


def format_batch(batch: dict[str, list], *, language: str = "python") -> dict[str, list]:
    lang = get_language(language)
    out = {key: list(values) for key, values in batch.items()}
    n = len(out["state"])
    out.update(prompt=[None] * n, completion=[None] * n, messages=[None] * n)
    for i, state in enumerate(out["state"]):
        if state == "passing":
            code, name = out["code"][i], out["function_name"][i]
            prompt, completion = lang.split_prompt_completion(code, name)
            out["prompt"][i], out["completion"][i] = prompt, completion
            out["messages"][i] = lang.chat_messages(code, name, prompt)
        else:
            out["detail"][i] = (out["detail"][i] or "")[:DETAIL_CHARS]
    return out
