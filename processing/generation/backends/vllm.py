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
from collections.abc import Mapping, Sequence

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


def token_count(ids) -> int:
    """The number of token ids a tokenizer returned: a list, or an object (a dict, a
    ``BatchEncoding``) that holds them as ``input_ids``."""
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    return len(getattr(ids, "input_ids", ids))


class VLLMBackend(Backend):
    """vLLM's offline engine: a round in calls of at most ``generation_chunk`` requests,
    prefix caching on; prompts longer than the context are reported, not sent.

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
        generation_chunk: int = 4096,
    ):
        if generation_chunk < 1:
            raise ValueError(f"need generation_chunk >= 1, got {generation_chunk}")
        extra = engine_args_from(engine_args)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise GenerationError(
                "the vllm backend needs vLLM on a GPU machine: pip install 'unitcoder[vllm]'"
            ) from exc
        self._sampling_params = SamplingParams
        self.model_id = model
        self.max_model_len = max_model_len
        self.generation_chunk = generation_chunk
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
        self._checker: tuple | None = None  # (context, tokenizer), or () when prompts cannot be checked
        self._count_failed = False

    def answer_settings(self) -> dict:
        return {k: v for k, v in self.extra_engine_args.items() if k not in ANSWER_NEUTRAL}

    def complete(self, requests: Sequence[Request], done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        size = self.generation_chunk
        rounds = []
        for raw in (False, True):
            positions = [i for i, r in enumerate(requests) if r.is_raw == raw]
            rounds += [(raw, positions[s : s + size]) for s in range(0, len(positions), size)]
        if len(rounds) > 1:
            logger.info(
                "vLLM: %d requests in %d engine calls of at most %d (answers are cached after each)",
                len(requests),
                len(rounds),
                size,
            )
        for raw, positions in rounds:
            self._call(requests, positions, raw, done)
            checkpoint()

    def _call(self, requests: Sequence[Request], positions: list[int], raw: bool, done: Done) -> None:
        """One engine call for ``positions`` (all chat or all raw), after reporting the
        prompts that do not fit the context."""
        checker = self._prompt_checker()
        if checker:
            context, tokenizer = checker
            fitting = []
            for position in positions:
                tokens = self._count(tokenizer, requests[position])
                if tokens is not None and tokens >= context:
                    done(position, too_long(tokens, context))
                else:
                    fitting.append(position)
            positions = fitting
        if not positions:
            return
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

    def _prompt_checker(self) -> tuple:
        """The context length and the engine's tokenizer, or ``()`` when either is unknown
        (then every prompt is sent, as vLLM decides). Found once."""
        if self._checker is None:
            context = self.max_model_len
            if not context:
                engine = getattr(self.llm, "llm_engine", None)
                context = getattr(getattr(engine, "model_config", None), "max_model_len", None)
            tokenizer = None
            if isinstance(context, int) and context > 0:
                try:
                    tokenizer = self.llm.get_tokenizer()
                except Exception as exc:  # e.g. an engine built with skip_tokenizer_init
                    logger.debug("vLLM: no tokenizer to count prompts with (%s)", exc)
            else:
                logger.debug("vLLM: the engine's context length is unknown: prompts are sent unchecked")
            self._checker = (context, tokenizer) if tokenizer is not None else ()
        return self._checker

    def _count(self, tokenizer, request: Request) -> int | None:
        """The prompt's token count as the engine will see it; None when the tokenizer
        cannot count it (the prompt is sent, and vLLM decides)."""
        try:
            if request.is_raw:
                return token_count(tokenizer.encode(request.text))
            ids = tokenizer.apply_chat_template(request.message_list(), add_generation_prompt=True, tokenize=True)
            return token_count(ids)
        except Exception as exc:
            if not self._count_failed:
                self._count_failed = True
                logger.warning("vLLM: cannot count a prompt's tokens (%s): such prompts are sent unchecked", exc)
            return None
