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
    """The engine cannot answer at all (unreachable server, unknown model, missing package,
    a server that refuses the requests): the run stops (exit 1) and resumes on a rerun."""


class AnswersMissing(GenerationError):
    """Some requests of a generation call failed after their retries (fewer than
    ``--max_failed_fraction``): the answers received are cached, but the rows waiting for
    the others can be neither kept nor rejected. The stage defers them to a rerun."""

    def __init__(self, failed: int, total: int, example: str):
        self.failed, self.total, self.example = failed, total, example
        super().__init__(
            f"{failed} of {total} requests failed after their retries (e.g. {example}); the answers received are "
            "cached, and a rerun of the same command asks only for the missing ones"
        )


# Why an answer did not come as text (``Completion.finish_reason``), and the drop reasons
# the steps give a row for them.
PROMPT_TOO_LONG = "prompt_too_long"  # the prompt does not fit the model's context: never sent, or refused
ANSWER_TRUNCATED = "answer_truncated"  # cut by max_tokens (finish_reason "length") and unusable as it is
LENGTH = "length"
TOO_LONG_DETAIL = (
    "the prompt does not fit the model's context (a longer --max_model_len or another model would take it)"
)


class Answer(str):
    """An answer's text, which is what every step reads, with how the answer ended:
    ``finish_reason`` is the engine's (``stop``, ``length``, ...) or ``prompt_too_long``
    (then the text is empty: the model never saw the prompt)."""

    finish_reason: str = ""

    def __new__(cls, text: str, finish_reason: str = "") -> Answer:
        answer = super().__new__(cls, text)
        answer.finish_reason = finish_reason
        return answer

    @property
    def truncated(self) -> bool:
        return self.finish_reason == LENGTH

    @property
    def prompt_too_long(self) -> bool:
        return self.finish_reason == PROMPT_TOO_LONG


def too_long(tokens: int, context: int) -> Completion:
    """The report of a prompt that leaves no room for one new token (it is never sent)."""
    return Completion(
        None,
        prompt_tokens=tokens,
        finish_reason=PROMPT_TOO_LONG,
        error=f"the prompt has {tokens} tokens; the model's context is {context}",
    )


def warn_truncated(count: int, step: str, max_tokens: int) -> None:
    """Say, once per call, how many of a step's answers were cut by max tokens and unusable."""
    if count:
        import logging

        logging.getLogger("processing.generation").warning(
            "%d %s answers were cut at %d tokens and could not be used (answer_truncated): raise --%s_max_tokens",
            count,
            step,
            max_tokens,
            step,
        )


def unusable_reason(answer: str | None, why: str) -> str:
    """The drop reason of an answer a step could not use (``why``, the language's reason):
    ``prompt_too_long`` when the prompt never fit, ``answer_truncated`` when the answer was
    cut by max_tokens, else ``why``."""
    finish = getattr(answer, "finish_reason", "")
    if finish == PROMPT_TOO_LONG:
        return PROMPT_TOO_LONG
    if finish == LENGTH:
        return ANSWER_TRUNCATED
    return why


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
    """What the engine returned for one request. ``text`` None: the request failed (see
    ``error``; never cached), or the prompt did not fit (``finish_reason`` ``prompt_too_long``)."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    error: str = ""


@dataclass
class Usage:
    """Counts of one generator (or one step of it): requests sent, answers from the cache,
    failures, prompts that did not fit, answers cut by max_tokens, tokens and seconds."""

    requests: int = 0
    cached: int = 0
    failed: int = 0
    prompt_too_long: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: Usage) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["seconds"] = round(self.seconds, 2)
        out["answers_per_s"] = round(self.requests / self.seconds, 2) if self.seconds > 0 else None
        return out


Done = Callable[[int, "Completion"], None]  # done(position, completion): one request answered
Checkpoint = Callable[[], None]  # makes the answers reported so far durable


def no_checkpoint() -> None:
    """The checkpoint of a caller that keeps nothing (no request cache)."""


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

    def complete(self, requests: Sequence[Request], done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        """Answer ``requests``, calling ``done(position, completion)`` as each finishes;
        ``checkpoint()`` makes the answers reported so far durable (an engine that answers
        in several calls calls it after each). Raise ``GenerationError`` when the engine
        cannot answer."""
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
