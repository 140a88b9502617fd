"""A stand-in for the ``vllm`` package (no GPU here), importable by Ray's worker processes.

It keeps vLLM's documented offline API as the ``vllm`` backend uses it: ``LLM(model=...,
**engine_args)``, ``LLM.chat(messages, sampling_params=[...], use_tqdm=...)`` and
``LLM.generate(prompts, ...)`` returning ``RequestOutput``-shaped objects
(``prompt_token_ids``, ``outputs[0].text/token_ids/finish_reason``), ``LLM.get_tokenizer()``
and ``SamplingParams(n=, temperature=, top_p=, max_tokens=, seed=, stop=)``. Each engine and
each call is appended as a JSON line to the file named by ``VLLM_STANDIN_LOG``, with the
GPUs Ray gave the process, so tests can check what the Ray engine built.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

_SAMPLING_FIELDS = ("n", "temperature", "top_p", "max_tokens", "seed", "stop")


class SamplingParams:
    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(_SAMPLING_FIELDS)
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.__dict__.update(kwargs)


@dataclass
class CompletionOutput:
    text: str
    token_ids: list = field(default_factory=list)
    finish_reason: str = "stop"


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list


def _log(event: dict) -> None:
    path = os.environ.get("VLLM_STANDIN_LOG")
    if not path:
        return
    try:
        import ray

        event["gpus"] = [str(g) for g in ray.get_gpu_ids()]
    except Exception:
        event["gpus"] = None
    event["pid"] = os.getpid()
    with open(path, "a") as log:
        log.write(json.dumps(event, default=str) + "\n")


class _Tokenizer:
    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return list(range(sum(len(m["content"].split()) for m in messages) + 3))


class LLM:
    def __init__(self, model: str, **engine_args):
        self.model = model
        self.engine_args = engine_args
        _log({"event": "engine", "model": model, "engine_args": engine_args})

    def get_tokenizer(self):
        return _Tokenizer()

    def _answer(self, prompts, sampling_params, kind):
        if len(sampling_params) != len(prompts):
            raise ValueError("one SamplingParams per prompt")
        _log({"event": kind, "prompts": len(prompts), "seeds": [p.seed for p in sampling_params]})
        out = []
        for prompt, params in zip(prompts, sampling_params):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            answer = f"echo seed={params.seed}: {text[:40]}"
            out.append(RequestOutput(list(range(5)), [CompletionOutput(answer, list(range(len(answer.split()))))]))
        return out

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        return self._answer(messages, sampling_params, "chat")

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        return self._answer(prompts, sampling_params, "generate")
