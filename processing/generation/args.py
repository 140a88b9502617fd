"""The generation flags every script shares (``--backend``, ``--model``, sampling, cache,
and the engine settings of each backend), validated at start-up."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from processing.generation.backends.vllm import engine_args_from
from processing.generation.cache import default_cache_dir

logger = logging.getLogger(__name__)

BACKENDS = ("llama_cpp", "openai", "vllm", "transformers", "scripted")
# (temperature, max new tokens) of each LLM step when neither its own flag nor the shared
# --temperature/--max_tokens is given: UnitCoder's released generation scripts sample unit
# tests at 0.2 and fixes and polishing at 0.5, with 2048 new tokens; strengthening writes tests too (0.2).
STEP_DEFAULTS = {"test": (0.2, 2048), "fix": (0.5, 2048), "refine": (0.5, 2048), "strengthen": (0.2, 2048)}


@dataclass
class GenerationArgs:
    backend: str = field(default="llama_cpp", metadata={"help": f"generation engine: {', '.join(BACKENDS)}"})
    model: str | None = field(
        default=None,
        metadata={
            "help": "model: a Hub id or local path (vllm, transformers), the served model name (openai), a GGUF path "
            "or 'repo_id:filename' (llama_cpp; default: the embedded SmolLM2-135M-Instruct), a JSONL of canned "
            "answers (scripted)"
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible server, e.g. http://localhost:8000/v1"}
    )
    api_key: str | None = field(
        default=None,
        metadata={"help": "API key for --base_url (default: $OPENAI_API_KEY); never logged", "secret": True},
    )
    max_concurrency: int = field(
        default=256, metadata={"help": "requests in flight at once (openai): a vLLM or SGLang server batches them"}
    )
    request_timeout: float = field(default=600.0, metadata={"help": "seconds per request (openai)"})
    max_retries: int = field(
        default=6,
        metadata={"help": "retries of a request on 408, 409, 429, 5xx, timeouts and lost connections (openai)"},
    )
    max_failed_fraction: float = field(
        default=0.01,
        metadata={
            "help": "stop the run when more than this share of one generation call's requests fail after their "
            "retries (openai); fewer failures leave their rows for a rerun, never rejected"
        },
    )
    generation_chunk: int = field(
        default=4096,
        metadata={"help": "the most requests in one engine call (vllm): answers are cached after each call"},
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per model (vllm)"})
    max_model_len: int | None = field(default=None, metadata={"help": "context length (vllm; llama_cpp's n_ctx)"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "share of GPU memory for vLLM"})
    vllm_args: str | dict | None = field(
        default=None,
        metadata={
            "help": "more vLLM engine arguments, passed straight to vllm.LLM(...): a JSON object such as "
            '\'{"max_num_seqs": 512, "enable_chunked_prefill": true}\' (a mapping in a YAML recipe); '
            "model, seed, tensor_parallel_size, max_model_len and gpu_memory_utilization have their own flags"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "prompts per generate() call (transformers)"})
    temperature: float | None = field(
        default=None,
        metadata={
            "help": "sampling temperature of every step that has no --<step>_temperature (default per step: "
            + ", ".join(f"{step} {t}" for step, (t, _) in STEP_DEFAULTS.items())
            + ", after UnitCoder's released scripts)"
        },
    )
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "tokens per answer of every step that has no --<step>_max_tokens (default per step: "
            + ", ".join(f"{step} {m}" for step, (_, m) in STEP_DEFAULTS.items())
            + ")"
        },
    )
    test_temperature: float | None = field(default=None, metadata={"help": "temperature of unit-test writing"})
    test_max_tokens: int | None = field(default=None, metadata={"help": "tokens per unit-test answer"})
    fix_temperature: float | None = field(default=None, metadata={"help": "temperature of fix answers"})
    fix_max_tokens: int | None = field(default=None, metadata={"help": "tokens per fix answer"})
    refine_temperature: float | None = field(default=None, metadata={"help": "temperature of refine answers"})
    refine_max_tokens: int | None = field(default=None, metadata={"help": "tokens per refine answer"})
    strengthen_temperature: float | None = field(
        default=None, metadata={"help": "temperature of the tests a strengthening round asks for"}
    )
    strengthen_max_tokens: int | None = field(default=None, metadata={"help": "tokens per strengthening answer"})
    seed: int = field(default=0, metadata={"help": "base seed; sample i uses seed + i"})
    cache_dir: str = field(default_factory=default_cache_dir, metadata={"help": "where the request cache lives"})
    no_cache: bool = field(default=False, metadata={"help": "neither read nor write the request cache"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("--backend openai needs --base_url and --model")
        if self.backend in ("vllm", "transformers", "scripted") and not self.model:
            raise ValueError(f"--backend {self.backend} needs --model")
        for prefix in ("", *(f"{step}_" for step in STEP_DEFAULTS)):
            temperature, max_tokens = getattr(self, f"{prefix}temperature"), getattr(self, f"{prefix}max_tokens")
            if temperature is not None and not 0 <= temperature <= 5:
                raise ValueError(f"need 0 <= --{prefix}temperature <= 5, got {temperature}")
            if max_tokens is not None and max_tokens < 1:
                raise ValueError(f"need --{prefix}max_tokens >= 1, got {max_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError("need 0 < top_p <= 1")
        if self.max_concurrency < 1 or self.generation_chunk < 1 or self.max_retries < 0:
            raise ValueError("need --max_concurrency >= 1, --generation_chunk >= 1 and --max_retries >= 0")
        if not 0 <= self.max_failed_fraction < 1:
            raise ValueError(f"need 0 <= --max_failed_fraction < 1, got {self.max_failed_fraction}")
        self.vllm_args = engine_args_from(self.vllm_args)  # a dict from here on ({} when not given)
        if self.vllm_args and self.backend != "vllm":
            logger.warning("--vllm_args is ignored: it applies to --backend vllm only, not %s", self.backend)
        if self.api_key is None and self.backend == "openai":
            self.api_key = os.environ.get("OPENAI_API_KEY")

    def sampling_for(self, step: str, n: int = 1, stop: tuple[str, ...] = ()):
        """The ``Sampling`` of one LLM step (``test``, ``fix``, ``refine``): its own flag, else the
        shared --temperature/--max_tokens when given, else ``STEP_DEFAULTS``."""
        from processing.generation.types import Sampling

        default_temperature, default_max_tokens = STEP_DEFAULTS[step]
        temperature = _first(getattr(self, f"{step}_temperature"), self.temperature, default_temperature)
        max_tokens = _first(getattr(self, f"{step}_max_tokens"), self.max_tokens, default_max_tokens)
        return Sampling(n, temperature, self.top_p, max_tokens, self.seed, tuple(stop))


def _first(*values):
    return next(value for value in values if value is not None)
