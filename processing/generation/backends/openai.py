"""Any OpenAI-compatible server: ``vllm serve``, SGLang, ``llama-server``, hosted APIs.

Requests go out through the official ``openai`` package's ``AsyncOpenAI`` client, up to
``--max_concurrency`` (default 256) in flight at once, so a server that batches (vLLM,
SGLang) stays busy: chat requests to ``/chat/completions``, raw completions to
``/completions``, each sample its own request with its own seed.

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

The client retries nothing itself (``max_retries=0``): retries are ours, so the backoff,
the ``Retry-After`` limit and the failure accounting are the same for every server.
``openai`` is imported when the backend is built. The model name is checked against
``/models`` then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import re
from collections.abc import Callable, Sequence

from processing.generation.types import PROMPT_TOO_LONG, Backend, Completion, GenerationError, Request

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
            import openai
        except ImportError as exc:
            raise GenerationError("the openai backend needs the openai package: pip install openai") from exc
        self._openai = openai
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

    def _client_settings(self) -> dict:
        # a server without keys still gets a placeholder: the client refuses to start without one
        return {"base_url": self.base_url, "api_key": self.api_key or "none", "timeout": self.timeout, "max_retries": 0}

    def _check_model(self) -> None:
        openai = self._openai
        try:
            with openai.OpenAI(**self._client_settings()) as client:
                served = [model.id for model in client.models.list().data]
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise GenerationError(
                    f"the server at {self.base_url} refused the API key (HTTP {exc.status_code}); "
                    "set --api_key or $OPENAI_API_KEY"
                ) from exc
            logger.warning(
                "the server at %s does not list models (HTTP %d); not checking --model", self.base_url, exc.status_code
            )
            return
        except openai.APIConnectionError as exc:
            raise GenerationError(
                f"cannot reach an OpenAI-compatible server at {self.base_url} ({_cause(exc)}); is it running, and is "
                "--base_url right (it usually ends in /v1)?"
            ) from exc
        except Exception as exc:  # an answer that is not a model list: nothing to check against
            logger.warning("the server at %s lists no models (%s); not checking --model", self.base_url, exc)
            return
        if served and self.model_id not in served:
            raise GenerationError(
                f"the server at {self.base_url} does not serve model {self.model_id!r}; it serves: "
                f"{', '.join(map(str, served))}"
            )

    def complete(
        self,
        requests: Sequence[Request],
        done: Callable[[int, Completion], None],
        checkpoint: Callable[[], None] = lambda: None,
    ) -> None:
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

    async def _complete_all(self, requests: Sequence[Request], done: Callable[[int, Completion], None]) -> None:
        pending = iter(enumerate(requests))
        allowed = self.max_failed_fraction * len(requests)
        failures: list[str] = []
        in_flight = 0

        async def worker(client) -> None:
            nonlocal in_flight
            for position, request in pending:  # one shared iterator: each request is taken once
                in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, in_flight)
                try:
                    completion = await self._ask(client, request)
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

        async with self._openai.AsyncOpenAI(**self._client_settings()) as client:
            workers = [asyncio.create_task(worker(client)) for _ in range(min(self.max_concurrency, len(requests)))]
            try:
                finished, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for task in finished:
                    if task.exception() is not None:
                        raise task.exception()
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _ask(self, client, request: Request) -> Completion:
        """One request with its retries: the answer, a failure, or GenerationError."""
        openai = self._openai
        settings = {
            "model": self.model_id,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "n": 1,
        }
        if request.stop:
            settings["stop"] = list(request.stop)
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = self._backoff(attempt)
            try:
                if request.is_raw:
                    response = await client.completions.create(prompt=request.text, **settings)
                    choice = response.choices[0]
                    text = choice.text
                else:
                    response = await client.chat.completions.create(messages=request.message_list(), **settings)
                    choice = response.choices[0]
                    text = choice.message.content
                usage = response.usage
                return Completion(
                    text or "",
                    getattr(usage, "prompt_tokens", 0) or 0,
                    getattr(usage, "completion_tokens", 0) or 0,
                    choice.finish_reason or "",
                )
            except openai.APIStatusError as exc:
                message = _server_message(exc)
                if exc.status_code == 400 and CONTEXT_EXCEEDED.search(message):
                    return Completion(None, finish_reason=PROMPT_TOO_LONG, error=f"HTTP 400: {message}")
                if exc.status_code in FATAL_STATUS:
                    raise GenerationError(
                        f"the server at {self.base_url} refused a completion request with HTTP {exc.status_code}: "
                        f"{message}; check --base_url, --model and --api_key (answers received so far are cached)"
                    ) from exc
                problem = f"HTTP {exc.status_code}: {message}"
                if exc.status_code not in RETRY_STATUS:
                    return Completion(None, error=problem)  # not worth repeating
                wait = _retry_after(exc) or wait
            except openai.APIConnectionError as exc:  # timeouts included
                problem = f"{type(exc).__name__}: {_cause(exc)}"
            except (openai.APIError, ValueError, AttributeError, IndexError, TypeError) as exc:  # a malformed answer
                problem = f"malformed answer: {type(exc).__name__}: {exc}"
            if attempt < self.max_retries:
                logger.debug("retrying in %.1fs after %s", wait, problem)
                await asyncio.sleep(wait)
        return Completion(None, error=f"failed {self.max_retries + 1} times ({problem})"[:500])

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)


def _server_message(exc) -> str:
    """The server's own words from an error response (its ``error.message`` when it sends JSON)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:500]
    if isinstance(body, str) and body:
        return body[:500]
    try:
        return exc.response.text[:500] or str(exc)[:500]
    except Exception:
        return str(exc)[:500]


def _retry_after(exc) -> float | None:
    """The server's ``Retry-After`` in seconds (at most two minutes), if it sent one."""
    try:
        value = exc.response.headers.get("retry-after")
        return min(MAX_RETRY_AFTER_S, float(value)) if value else None
    except (AttributeError, ValueError, TypeError):
        return None


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection error (the client's message alone says little)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
