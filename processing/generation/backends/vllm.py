"""vLLM's offline engine: the main path on GPU.

A round goes to ``LLM.chat`` (``LLM.generate`` for raw completions) with one
``SamplingParams`` per sample, prefix caching on, in calls of at most
``--generation_chunk`` requests: the answers of each call are reported and made durable
(``checkpoint``) before the next starts, so a kill loses at most one call's answers.
Before each call the prompts are counted with the engine's tokenizer; one that does not
fit the context (``--max_model_len``, else the engine's) is not sent but reported as
``prompt_too_long``, since vLLM would refuse the whole call for it. The engine is built with vLLM's own
keyword arguments, ``vllm.LLM(model=..., **engine_args)``: four come from dedicated flags
(``--tensor_parallel_size``, ``--max_model_len``, ``--gpu_memory_utilization``,
``--seed``) and any other engine argument vLLM documents comes through ``--vllm_args``
unchanged, so this module never re-declares vLLM's flags one by one.

``vllm`` is imported when the backend is built, never at import time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence

from processing.generation.types import Backend, Completion, GenerationError, Request

logger = logging.getLogger(__name__)

# Engine arguments that have their own flag: giving them inside --vllm_args is an error.
DEDICATED_FLAGS = {
    "model": "--model",
    "seed": "--seed",
    "tensor_parallel_size": "--tensor_parallel_size",
    "max_model_len": "--max_model_len",
    "gpu_memory_utilization": "--gpu_memory_utilization",
}

# Engine arguments that change how fast, where and in which batches vLLM works, not which
# model answers: like the dedicated flags above, they stay out of the request cache key.
# Every other --vllm_args key (dtype, quantization, revision, tokenizer, kv_cache_dtype,
# hf_overrides, load_format, anything unknown here) joins the key, so a rerun with
# another engine configuration asks again instead of reusing answers it did not give.
ANSWER_NEUTRAL = frozenset(
    {
        "max_num_seqs",
        "max_num_batched_tokens",
        "enable_chunked_prefill",
        "max_num_partial_prefills",
        "max_long_partial_prefills",
        "long_prefill_token_threshold",
        "enable_prefix_caching",
        "prefix_caching_hash_algo",
        "scheduling_policy",
        "preemption_mode",
        "swap_space",
        "cpu_offload_gb",
        "block_size",
        "num_gpu_blocks_override",
        "kv_cache_memory_bytes",
        "enforce_eager",
        "max_seq_len_to_capture",
        "compilation_config",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "disable_custom_all_reduce",
        "max_parallel_loading_workers",
        "download_dir",
        "disable_log_stats",
        "use_tqdm_on_load",
        "disable_async_output_proc",
    }
)

_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
EXAMPLE = '\'{"max_num_seqs": 512, "enable_chunked_prefill": true}\''


def engine_args_from(value: str | Mapping | None) -> dict:
    """The extra engine arguments ``--vllm_args`` describes: a JSON object string (from the
    command line) or a mapping (from a YAML recipe); ``{}`` when not given.

    Raises ``ValueError`` for invalid JSON, for anything but an object, for names vLLM
    cannot take as keywords, and for keys that have a dedicated flag.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"--vllm_args must be a JSON object of vLLM engine arguments, such as {EXAMPLE}, "
                f"but it is not valid JSON ({exc})"
            ) from None
    else:
        parsed = value
    if not isinstance(parsed, Mapping):
        raise ValueError(
            f"--vllm_args must be a JSON object of vLLM engine arguments, such as {EXAMPLE}, "
            f"not a JSON {_JSON_KINDS.get(type(parsed), type(parsed).__name__)}"
        )
    engine_args = dict(parsed)
    odd = [repr(k) for k in engine_args if not isinstance(k, str) or not k.isidentifier()]
    if odd:
        raise ValueError(
            f"--vllm_args keys must be vllm.LLM keyword names written with underscores "
            f"(max_num_seqs, not max-num-seqs); got {', '.join(odd)}"
        )
    dedicated = [k for k in engine_args if k in DEDICATED_FLAGS]
    if dedicated:
        flags = ", ".join(DEDICATED_FLAGS[k] for k in dedicated)
        noun = "flag" if len(dedicated) == 1 else "flags"
        raise ValueError(f"--vllm_args must not set {', '.join(dedicated)}: use the dedicated {noun} {flags} instead")
    return engine_args


def vllm_batch(requests: Sequence[Request], sampling_params_cls) -> tuple[list, list]:
    """What ``LLM.chat`` (conversations) or ``LLM.generate`` (raw texts) receives: the
    prompts and one SamplingParams per request. A batch is all chat or all raw."""
    prompts = [r.text if r.is_raw else r.message_list() for r in requests]
    params = [
        sampling_params_cls(
            n=1,
            temperature=r.temperature,
            top_p=r.top_p,
            max_tokens=r.max_tokens,
            seed=r.seed,
            **({"stop": list(r.stop)} if r.stop else {}),
        )
        for r in requests
    ]
    return prompts, params


class VLLMBackend(Backend):
    """vLLM's offline engine: a whole round in one ``chat`` call, prefix caching on.

    ``engine_args`` are more ``vllm.LLM`` keyword arguments (``--vllm_args``); they may
    override ``enable_prefix_caching`` but not the settings that have a dedicated flag.
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int,
        max_model_len: int | None,
        gpu_memory_utilization: float,
        seed: int,
        engine_args: Mapping | None = None,
    ):
        extra = engine_args_from(engine_args)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise GenerationError(
                "the vllm backend needs vLLM on a GPU machine: pip install 'unitcoder[vllm]'"
            ) from exc
        self._sampling_params = SamplingParams
        self.model_id = model
        self.extra_engine_args = extra
        self.engine_args = {
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": True,
            "seed": seed,
            **extra,
        }
        if extra:
            logger.info("vLLM engine arguments from --vllm_args: %s", json.dumps(extra, default=str))
        self.llm = LLM(model=model, **self.engine_args)

    def answer_settings(self) -> dict:
        return {k: v for k, v in self.extra_engine_args.items() if k not in ANSWER_NEUTRAL}

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        for raw in (False, True):
            positions = [i for i, r in enumerate(requests) if r.is_raw == raw]
            if not positions:
                continue
            prompts, params = vllm_batch([requests[i] for i in positions], self._sampling_params)
            if raw:
                outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=True)
            else:
                outputs = self.llm.chat(prompts, sampling_params=params, use_tqdm=True)
            for position, output in zip(positions, outputs):
                sample = output.outputs[0]
                done(
                    position,
                    Completion(
                        sample.text,
                        len(output.prompt_token_ids or []),
                        len(sample.token_ids),
                        sample.finish_reason or "",
                    ),
                )
