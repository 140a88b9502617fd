"""Any OpenAI-compatible server: ``vllm serve``, SGLang, ``llama-server``, hosted APIs.

Requests go out through ``aiohttp`` (an asyncio HTTP client, installed with ``datasets``),
up to ``--max_concurrency`` (default 256) in flight at once, so a server that batches
(vLLM, SGLang) stays busy: chat requests to ``/chat/completions``, raw completions to
``/completions``, each sample its own request with its own seed. (The official ``openai``
client was measured too: on two cores it spends about 1.5 ms of CPU per request, mostly
in its connection pool's scan of hundreds of connections and in its parameter
transforms, which halves the requests a client keeps in flight; ``benchmarks/
generation_throughput.py`` prints the figure.)

What comes back decides what happens:

* an answer: reported with its ``finish_reason`` and token counts;
* 408, 409, 429, 5xx, a timeout or a lost connection: retried with exponential backoff
  (or after the server's ``Retry-After``) up to ``--max_retries`` times; a request that
  still fails is a failure of that request. If more than ``--max_failed_fraction`` of one
  call's requests fail, the run stops (``GenerationError``); fewer are reported as
  failed, and the generator defers their rows to a rerun (``AnswersMissing``);
* 400 whose message says the prompt exceeds the context: ``prompt_too_long`` for that
  request (a verdict on the prompt, not an outage);
* any other 400, and 401, 403, 404, 422: the server refuses what we send (a wrong
  ``--base_url``, ``--model`` or key, an unsupported parameter). The run stops at once with
  the server's message; answers received until then are cached.

``aiohttp`` is imported when the backend is built; the model name is checked against
``/models`` then (with the standard library: one request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import random
import re
import urllib.error
import urllib.request
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

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({400, 401, 403, 404, 422})
# How servers say a prompt does not fit: vLLM and OpenAI ("maximum context length",
# "context_length_exceeded"), llama.cpp ("exceeds the available context size"), SGLang
# ("longer than the model's context length"), others ("prompt is too long").
CONTEXT_EXCEEDED = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|prompt is too long|too many (input )?tokens", re.IGNORECASE
)
MAX_RETRY_AFTER_S = 120.0


class OpenAIBackend(Backend):
    """Chat and raw completions over HTTP: hundreds in flight, retries, failure accounting."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        max_concurrency: int,
        timeout: float,
        max_retries: int,
        max_failed_fraction: float = 0.01,
        backoff_s: float = 1.0,
    ):
        try:
            import aiohttp
        except ImportError as exc:
            raise GenerationError("the openai backend needs aiohttp: pip install aiohttp") from exc
        self._aiohttp = aiohttp
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.api_key = api_key
        self.max_concurrency = max(1, max_concurrency)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_failed_fraction = max_failed_fraction
        self.backoff_s = backoff_s
        self.peak_in_flight = 0  # the most requests in flight at once, over this backend's life
        self._check_model()

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _check_model(self) -> None:
        request = urllib.request.Request(self.base_url + "/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                listed = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise GenerationError(
                    f"the server at {self.base_url} refused the API key (HTTP {exc.code}); set --api_key or "
                    "$OPENAI_API_KEY"
                ) from exc
            logger.warning(
                "the server at %s does not list models (HTTP %d); not checking --model", self.base_url, exc.code
            )
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise GenerationError(
                f"cannot reach an OpenAI-compatible server at {self.base_url} ({exc}); is it running, and is "
                "--base_url right (it usually ends in /v1)?"
            ) from exc
        served = (
            [m.get("id") for m in listed.get("data", []) if isinstance(m, dict)] if isinstance(listed, dict) else []
        )
        if served and self.model_id not in served:
            raise GenerationError(
                f"the server at {self.base_url} does not serve model {self.model_id!r}; it serves: "
                f"{', '.join(map(str, served))}"
            )

    def complete(self, requests: Sequence[Request], done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        if not requests:
            return
        coroutine = self._complete_all(requests, done)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            asyncio.run(coroutine)
            return
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="openai-client") as pool:
            pool.submit(asyncio.run, coroutine).result()  # called from async code (a notebook): a loop of its own

    async def _complete_all(self, requests: Sequence[Request], done: Done) -> None:
        aiohttp = self._aiohttp
        pending = iter(enumerate(requests))
        allowed = self.max_failed_fraction * len(requests)
        failures: list[str] = []
        in_flight = 0

        async def worker(session) -> None:
            nonlocal in_flight
            for position, request in pending:  # one shared iterator: each request is taken once
                in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, in_flight)
                try:
                    completion = await self._ask(session, request)
                finally:
                    in_flight -= 1
                if completion.text is None and completion.finish_reason != PROMPT_TOO_LONG:
                    failures.append(completion.error)
                done(position, completion)
                if len(failures) > allowed:
                    raise GenerationError(
                        f"{len(failures)} of {len(requests)} requests to {self.base_url} failed after "
                        f"{self.max_retries} retries each (more than --max_failed_fraction "
                        f"{self.max_failed_fraction}; e.g. {failures[0]}); the answers received are cached: "
                        "rerun the same command when the server is healthy"
                    )

        workers_count = min(self.max_concurrency, len(requests))
        connector = aiohttp.TCPConnector(limit=workers_count, limit_per_host=workers_count)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers()) as session:
            workers = [asyncio.create_task(worker(session)) for _ in range(workers_count)]
            try:
                finished, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for task in finished:
                    if task.exception() is not None:
                        raise task.exception()
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _ask(self, session, request: Request) -> Completion:
        """One request with its retries: the answer, a failure, or GenerationError."""
        aiohttp = self._aiohttp
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
            payload["prompt"], url = request.text, self.base_url + "/completions"
        else:
            payload["messages"], url = request.message_list(), self.base_url + "/chat/completions"
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = self._backoff(attempt)
            try:
                async with session.post(url, json=payload) as response:
                    status, text = response.status, await response.text()
                    retry_after = response.headers.get("Retry-After")
                if status == 200:
                    body = json.loads(text)
                    choice, usage = body["choices"][0], body.get("usage") or {}
                    content = choice.get("text") if request.is_raw else (choice.get("message") or {}).get("content")
                    return Completion(
                        content or "",
                        int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0),
                        choice.get("finish_reason") or "",
                    )
                message = _server_message(text)
                if status == 400 and CONTEXT_EXCEEDED.search(message):
                    return Completion(None, finish_reason=PROMPT_TOO_LONG, error=f"HTTP 400: {message}")
                if status in FATAL_STATUS:
                    raise GenerationError(
                        f"the server at {self.base_url} refused a completion request with HTTP {status}: {message}; "
                        "check --base_url, --model and --api_key (answers received so far are cached)"
                    )
                problem = f"HTTP {status}: {message}"
                if status not in RETRY_STATUS:
                    return Completion(None, error=problem)  # not worth repeating
                wait = _retry_after(retry_after) or wait
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:  # connection trouble, timeouts
                problem = f"{type(exc).__name__}: {exc}"
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:  # a malformed answer
                problem = f"malformed answer: {type(exc).__name__}: {exc}"
            if attempt < self.max_retries:
                logger.debug("retrying in %.1fs after %s", wait, problem)
                await asyncio.sleep(wait)
        return Completion(None, error=f"failed {self.max_retries + 1} times ({problem})"[:500])

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)


def _server_message(text: str) -> str:
    """The server's own words from an error response (its ``error.message`` when it sends JSON)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "no message"
    inner = body.get("error", body) if isinstance(body, dict) else body
    message = inner.get("message") if isinstance(inner, dict) else inner
    return str(message or text)[:500]


def _retry_after(value: str | None) -> float | None:
    """The server's ``Retry-After`` in seconds (at most two minutes), if it sent a number."""
    try:
        return min(MAX_RETRY_AFTER_S, float(value)) if value else None
    except ValueError:
        return None
