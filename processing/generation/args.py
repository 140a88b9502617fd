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
    max_concurrency: int = field(default=8, metadata={"help": "requests in flight at once (openai)"})
    request_timeout: float = field(default=600.0, metadata={"help": "seconds per request (openai)"})
    max_retries: int = field(default=6, metadata={"help": "retries on 429, 5xx and timeouts, with exponential backoff"})
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
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    max_tokens: int = field(default=1024, metadata={"help": "tokens per answer"})
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
        if not 0 <= self.temperature <= 5 or not 0 < self.top_p <= 1 or self.max_tokens < 1:
            raise ValueError("need 0 <= temperature <= 5, 0 < top_p <= 1 and max_tokens >= 1")
        self.vllm_args = engine_args_from(self.vllm_args)  # a dict from here on ({} when not given)
        if self.vllm_args and self.backend != "vllm":
            logger.warning("--vllm_args is ignored: it applies to --backend vllm only, not %s", self.backend)
        if self.api_key is None and self.backend == "openai":
            self.api_key = os.environ.get("OPENAI_API_KEY")
