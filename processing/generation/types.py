"""The vocabulary of the generation layer: what is asked (``Sampling``, ``Request``), what
comes back (``Completion``, ``Usage``), what an engine implements (``Backend``), and the
one error that means the engine cannot answer at all (``GenerationError``).

Nothing here imports an engine: every backend module and the generator build on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (only for the annotation of Sampling.from_args)
    from processing.generation.args import GenerationArgs

Messages = tuple  # tuple of {"role", "content"} dicts, hashable by value via json


class GenerationError(RuntimeError):
    """The engine cannot answer at all (unreachable server, unknown model, missing package)."""


@dataclass(frozen=True)
class Sampling:
    """How to sample: ``n`` answers per prompt; sample ``i`` uses ``seed + i``."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int = 0
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings

    @classmethod
    def from_args(cls, args: GenerationArgs, n: int = 1, stop: Sequence[str] = ()) -> Sampling:
        """One sampling from the shared flags (evaluation); the pipeline's LLM steps use
        ``GenerationArgs.sampling_for(step)``, which has per-step defaults."""
        temperature = cls.temperature if args.temperature is None else args.temperature
        max_tokens = cls.max_tokens if args.max_tokens is None else args.max_tokens
        return cls(n, temperature, args.top_p, max_tokens, args.seed, tuple(stop))


@dataclass(frozen=True)
class Request:
    """One sample: a conversation (or, with ``text``, a raw prompt to continue) and its
    sampling settings (``seed`` already per sample)."""

    messages: Messages
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    text: str | None = None  # raw completion: continue this text, no chat template
    stop: tuple[str, ...] = ()

    def message_list(self) -> list[dict]:
        return [dict(m) for m in self.messages]

    @property
    def is_raw(self) -> bool:
        return self.text is not None

    @property
    def last_prompt(self) -> str:
        """The text a scripted rule matches: the raw prompt or the last message."""
        return self.text if self.is_raw else self.messages[-1]["content"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (engines differ in whether they strip it)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


@dataclass
class Completion:
    text: str | None  # None: this request failed (see error); never cached
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    error: str = ""


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend:
    """What an engine implements: answer requests, reporting each as it finishes.

    ``model_id`` names the model in logs, stats and cards. ``answer_settings()`` returns
    the engine settings beyond the model that can change an answer (a quantization, a
    dtype, a revision); when it is not empty it joins the model in the request cache's
    key (``cache_model``), so answers from a differently configured engine are never
    reused. Settings that only change speed or placement stay out of the key.
    """

    name = "base"
    model_id = ""

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        raise NotImplementedError

    def answer_settings(self) -> dict:
        return {}

    @property
    def cache_model(self) -> str:
        """What the request cache keys answers by, next to the backend name."""
        settings = self.answer_settings()
        if not settings:  # (the common case keeps the keys of earlier versions)
            return self.model_id
        return f"{self.model_id} {json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)}"
