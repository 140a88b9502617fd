"""One module per engine behind the ``Backend`` interface (``processing.generation.types``).

Each backend imports its heavy package (``vllm``, ``llama_cpp``, ``torch`` and
``transformers``) only when it is built, so importing this package costs nothing and a
missing package is a ``GenerationError`` that says what to install.
"""

from processing.generation.backends.llama_cpp import LlamaCppBackend, embedded_model_path
from processing.generation.backends.openai import OpenAIBackend
from processing.generation.backends.scripted import ScriptedBackend
from processing.generation.backends.transformers import TransformersBackend
from processing.generation.backends.vllm import VLLMBackend, engine_args_from, vllm_batch

__all__ = [
    "LlamaCppBackend",
    "OpenAIBackend",
    "ScriptedBackend",
    "TransformersBackend",
    "VLLMBackend",
    "embedded_model_path",
    "engine_args_from",
    "vllm_batch",
]
