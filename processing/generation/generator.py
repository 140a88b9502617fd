"""The generator every LLM step calls, and ``build_generator`` that picks its backend.

``Generator`` turns prompts into per-sample requests (seed ``seed + i`` for sample
``i``), answers what it can from the request cache, hands the rest to the backend in
one call, writes each answer to the cache as it arrives, cuts answers at their stop
strings, and keeps token, request and time counts (``usage``, and ``by_step`` per
pipeline step). Answers keep their ``finish_reason``; requests that failed after their
retries raise ``AnswersMissing`` once the others are cached, so a row is never judged on
an answer that never came.
"""

from __future__ import annotations

import logging
import time
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
from processing.generation.types import (
    LENGTH,
    PROMPT_TOO_LONG,
    Answer,
    AnswersMissing,
    Backend,
    Completion,
    Messages,
    Request,
    Sampling,
    Usage,
    cut_at_stop,
    no_checkpoint,
)

logger = logging.getLogger(__name__)


class Generator:
    """The shared behaviour around a backend: per-sample requests, caching, progress, counts."""

    def __init__(self, backend: Backend, cache: RequestCache | None):
        self.backend = backend
        self.cache = cache
        self.usage = Usage()
        self.by_step: dict[str, Usage] = {}  # the same counts per pipeline step (``step=``)

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(
        self,
        conversations: Sequence[Sequence[dict]],
        sampling: Sampling,
        desc: str = "generating",
        step: str | None = None,
        allow_missing: bool = False,
    ) -> list[list[Answer | None]]:
        """``sampling.n`` answers per conversation, in order. Each is an ``Answer`` (a str)
        with its ``finish_reason``; a prompt that does not fit the model's context gives an
        empty answer whose finish_reason is ``prompt_too_long``. Raises ``AnswersMissing``
        when some requests failed after their retries (the answers received are cached),
        unless ``allow_missing`` (evaluation, where a failed generation is a wrong answer):
        then those answers are None. ``GenerationError`` when the engine cannot answer at all."""
        prompts = [(tuple(dict(m) for m in conv), None) for conv in conversations]
        return self._answer(prompts, sampling, desc, step, allow_missing)

    def complete(
        self,
        texts: Sequence[str],
        sampling: Sampling,
        desc: str = "completing",
        step: str | None = None,
        allow_missing: bool = False,
    ) -> list[list[Answer | None]]:
        """Raw completion (no chat template): ``sampling.n`` continuations per text, in order."""
        return self._answer([((), text) for text in texts], sampling, desc, step, allow_missing)

    def _answer(
        self,
        prompts: Sequence[tuple[Messages, str | None]],
        sampling: Sampling,
        desc: str,
        step: str | None,
        allow_missing: bool = False,
    ) -> list[list[Answer | None]]:
        started = time.monotonic()
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
        usage = Usage()
        cache_model = self.backend.cache_model
        keys = [RequestCache.key(self.backend.name, cache_model, r, i % sampling.n) for i, r in enumerate(requests)]
        answers: list[Completion | None] = [None] * len(requests)
        cached = self.cache.get_many(keys) if self.cache else {}
        for index, key in enumerate(keys):
            if key in cached:
                answers[index] = cached[key]
        todo = [index for index, answer in enumerate(answers) if answer is None]
        usage.cached = len(requests) - len(todo)
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc=desc, unit="answer")

        def done(position: int, completion: Completion) -> None:
            index = todo[position]
            answers[index] = completion
            usage.requests += 1
            usage.prompt_tokens += completion.prompt_tokens
            usage.completion_tokens += completion.completion_tokens
            if completion.finish_reason == PROMPT_TOO_LONG:
                usage.prompt_too_long += 1
            elif completion.text is None:
                usage.failed += 1
            elif self.cache:
                self.cache.put(keys[index], self.model_id, completion)
            bar.update(1)

        try:
            if todo:
                checkpoint = self.cache.flush if self.cache else no_checkpoint
                self.backend.complete([requests[i] for i in todo], done, checkpoint)
        finally:  # the answers received are durable once the call returns (or is interrupted)
            if self.cache:
                self.cache.flush()
            bar.close()
            usage.seconds = time.monotonic() - started
            usage.truncated = sum(
                1 for a in answers if a is not None and a.text is not None and a.finish_reason == LENGTH
            )
            self.usage.add(usage)
            if step:
                self.by_step.setdefault(step, Usage()).add(usage)
        logger.info(
            "%s: %d answers (%d from the cache, %d asked, %d failed, %d prompts too long, %d cut by max_tokens %d); "
            "%d prompt + %d completion tokens",
            desc,
            len(requests),
            usage.cached,
            len(todo),
            usage.failed,
            usage.prompt_too_long,
            usage.truncated,
            sampling.max_tokens,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        failed = [a is None or (a.text is None and a.finish_reason != PROMPT_TOO_LONG) for a in answers]
        if any(failed) and not allow_missing:
            example = next(a.error for a, bad in zip(answers, failed) if bad and a is not None)
            raise AnswersMissing(sum(failed), len(requests), example or "no message")
        out = [
            None if bad else Answer("" if a.text is None else cut_at_stop(a.text, sampling.stop), a.finish_reason)
            for a, bad in zip(answers, failed)
        ]
        return [out[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]


def build_generator(args: GenerationArgs, backend: Backend | None = None) -> Generator:
    """The generator for the chosen backend (``backend``, else the one ``build_backend``
    makes), with the request cache unless --no_cache. The cache opens first: a cache it
    refuses (a network file system) stops the run before a model is loaded."""
    cache = None if args.no_cache else RequestCache(args.cache_dir)
    backend = backend or build_backend(args)
    logger.info(
        "generation: backend %s, model %s, cache %s",
        backend.name,
        backend.model_id,
        "off" if cache is None else cache.path,
    )
    if backend.answer_settings():
        logger.info("answers are cached apart for the engine settings %s", backend.answer_settings())
    return Generator(backend, cache)


def build_backend(args: GenerationArgs) -> Backend:
    """The engine ``--backend`` names, built from the generation flags."""
    if args.backend == "llama_cpp":
        backend: Backend = LlamaCppBackend(args.model, args.max_model_len, args.seed)
    elif args.backend == "openai":
        backend = OpenAIBackend(
            args.base_url,
            args.model,
            args.api_key,
            args.max_concurrency,
            args.request_timeout,
            args.max_retries,
            args.max_failed_fraction,
        )
    elif args.backend == "vllm":
        backend = VLLMBackend(
            args.model,
            args.tensor_parallel_size,
            args.max_model_len,
            args.gpu_memory_utilization,
            args.seed,
            args.vllm_args,
            generation_chunk=args.generation_chunk,
        )
    elif args.backend == "transformers":
        backend = TransformersBackend(args.model, args.batch_size)
    else:
        backend = ScriptedBackend.from_file(args.model)
    return backend
