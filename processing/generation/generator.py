"""The generator every LLM step calls, and ``build_generator`` that picks its backend.

``Generator`` turns prompts into per-sample requests (seed ``seed + i`` for sample
``i``), answers what it can from the request cache, hands the rest to the backend in
one call, writes each answer to the cache as it arrives, cuts answers at their stop
strings, and keeps token and request counts (``usage``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tqdm.auto import tqdm

from processing.generation.args import GenerationArgs
from processing.generation.backends import (
    LlamaCppBackend,
    OpenAIBackend,
    ScriptedBackend,
    TransformersBackend,
    VLLMBackend,
)
from processing.generation.cache import RequestCache
from processing.generation.types import Backend, Completion, Messages, Request, Sampling, Usage, cut_at_stop

logger = logging.getLogger(__name__)


class Generator:
    """The shared behaviour around a backend: per-sample requests, caching, progress, counts."""

    def __init__(self, backend: Backend, cache: RequestCache | None):
        self.backend = backend
        self.cache = cache
        self.usage = Usage()

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(
        self, conversations: Sequence[Sequence[dict]], sampling: Sampling, desc: str = "generating"
    ) -> list[list[str | None]]:
        """``sampling.n`` answers per conversation, in order; None where a request failed."""
        prompts = [(tuple(dict(m) for m in conv), None) for conv in conversations]
        return self._answer(prompts, sampling, desc)

    def complete(self, texts: Sequence[str], sampling: Sampling, desc: str = "completing") -> list[list[str | None]]:
        """Raw completion (no chat template): ``sampling.n`` continuations per text, in order."""
        return self._answer([((), text) for text in texts], sampling, desc)

    def _answer(
        self, prompts: Sequence[tuple[Messages, str | None]], sampling: Sampling, desc: str
    ) -> list[list[str | None]]:
        requests = [
            Request(
                messages,
                sampling.temperature,
                sampling.top_p,
                sampling.max_tokens,
                sampling.seed + i,
                text,
                sampling.stop,
            )
            for messages, text in prompts
            for i in range(sampling.n)
        ]
        cache_model = self.backend.cache_model
        keys = [RequestCache.key(self.backend.name, cache_model, r, i % sampling.n) for i, r in enumerate(requests)]
        answers: list[Completion | None] = [None] * len(requests)
        cached = self.cache.get_many(keys) if self.cache else {}
        for index, key in enumerate(keys):
            if key in cached:
                answers[index] = cached[key]
        todo = [index for index, answer in enumerate(answers) if answer is None]
        self.usage.cached += len(requests) - len(todo)
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc=desc, unit="answer")

        def done(position: int, completion: Completion) -> None:
            index = todo[position]
            answers[index] = completion
            self.usage.requests += 1
            self.usage.prompt_tokens += completion.prompt_tokens
            self.usage.completion_tokens += completion.completion_tokens
            if completion.text is None:
                self.usage.failed += 1
            elif self.cache:
                self.cache.put(keys[index], self.model_id, completion)
            bar.update(1)

        if todo:
            try:
                self.backend.complete([requests[i] for i in todo], done)
            finally:  # the answers received are durable once the call returns (or is interrupted)
                if self.cache:
                    self.cache.flush()
        bar.close()
        logger.info(
            "%s: %d answers (%d from the cache, %d asked, %d failed); %d prompt + %d completion tokens so far",
            desc,
            len(requests),
            len(requests) - len(todo),
            len(todo),
            sum(1 for i in todo if answers[i] is None or answers[i].text is None),
            self.usage.prompt_tokens,
            self.usage.completion_tokens,
        )
        texts = [None if a is None or a.text is None else cut_at_stop(a.text, sampling.stop) for a in answers]
        return [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]


def build_generator(args: GenerationArgs) -> Generator:
    """The generator for the chosen backend, with the request cache unless --no_cache.
    The cache opens first: a cache it refuses (a network file system) stops the run
    before a model is loaded."""
    cache = None if args.no_cache else RequestCache(args.cache_dir)
    if args.backend == "llama_cpp":
        backend: Backend = LlamaCppBackend(args.model, args.max_model_len, args.seed)
    elif args.backend == "openai":
        backend = OpenAIBackend(
            args.base_url, args.model, args.api_key, args.max_concurrency, args.request_timeout, args.max_retries
        )
    elif args.backend == "vllm":
        backend = VLLMBackend(
            args.model,
            args.tensor_parallel_size,
            args.max_model_len,
            args.gpu_memory_utilization,
            args.seed,
            args.vllm_args,
        )
    elif args.backend == "transformers":
        backend = TransformersBackend(args.model, args.batch_size)
    else:
        backend = ScriptedBackend.from_file(args.model)
    logger.info(
        "generation: backend %s, model %s, cache %s",
        backend.name,
        backend.model_id,
        "off" if cache is None else cache.path,
    )
    if backend.answer_settings():
        logger.info("answers are cached apart for the engine settings %s", backend.answer_settings())
    return Generator(backend, cache)
