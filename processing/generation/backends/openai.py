"""Any OpenAI-compatible server: ``vllm serve``, SGLang, ``llama-server``, hosted APIs.

Chat requests go to ``/chat/completions`` and raw completions to ``/completions``, with
up to ``--max_concurrency`` requests in flight, retries with exponential backoff (or the
server's ``Retry-After``) on 408, 409, 429, 5xx, timeouts and dropped connections, and a
``GenerationError`` when the server keeps failing: answers received until then are in
the request cache. A 4xx other than those fails only that request. The model name is
checked against ``/models`` when the backend is built. Only the standard library is used.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from processing.generation.types import Backend, Completion, GenerationError, Request

logger = logging.getLogger(__name__)


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
