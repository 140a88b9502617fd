"""Canned answers from a JSONL file of rules, for deterministic runs and tests.

Each line is ``{"match": ..., "answer": ...}`` (optionally ``"delay_s"``, and
``"finish_reason"``: ``"length"`` for an answer cut by max_tokens, ``"prompt_too_long"``
for a prompt the model's context would not take); ``match`` is a string, or a list of
strings that must all occur, looked for in the last message (or the raw prompt). A
request no rule matches fails, like an engine request that failed after its retries
(the generator then defers its rows: ``AnswersMissing``).
The model id carries a digest of the rules, so editing the file never reuses answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence

from processing.generation.types import (
    PROMPT_TOO_LONG,
    Backend,
    Checkpoint,
    Completion,
    Done,
    GenerationError,
    Request,
    no_checkpoint,
)


class ScriptedBackend(Backend):
    """Canned answers: the first rule whose ``match`` (a string, or a list of strings that
    must all occur) is in the last user message wins; ``delay_s`` slows a rule down."""

    name = "scripted"

    def __init__(self, rules: list[dict], model_id: str = "scripted"):
        self.rules = rules
        self.model_id = model_id
        self.calls = 0

    @classmethod
    def from_file(cls, path: str) -> ScriptedBackend:
        if not os.path.isfile(path):
            raise GenerationError(f"scripted answers file {path} does not exist")
        with open(path) as f:
            rules = [json.loads(line) for line in f if line.strip()]
        digest = hashlib.sha1(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:12]
        return cls(rules, f"scripted:{digest}")

    def complete(self, requests: Sequence[Request], done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        for position, request in enumerate(requests):
            self.calls += 1
            rule = next((r for r in self.rules if _matches(r["match"], request.last_prompt)), None)
            if rule is None:
                done(position, Completion(None, error="no scripted answer matches"))
                continue
            time.sleep(rule.get("delay_s", 0))
            finish = rule.get("finish_reason", "stop")
            if finish == PROMPT_TOO_LONG:
                done(position, Completion(None, finish_reason=PROMPT_TOO_LONG, error="scripted: prompt too long"))
            else:
                done(position, Completion(rule["answer"], finish_reason=finish))


def _matches(match: str | list[str], prompt: str) -> bool:
    return all(part in prompt for part in ([match] if isinstance(match, str) else match))
