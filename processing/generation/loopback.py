"""A small OpenAI-compatible server on loopback, for the tests and the throughput benchmark.

It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` / ``/v1/completions``
after ``latency_s`` seconds, serving any number of requests at once (one thread each, as
``vllm serve`` batches hundreds of sequences), and counts what it sees: requests, the
peak number in flight. ``respond(path, payload)`` decides each answer (default: an echo
of the last message with the seed); it returns ``(status, body)`` or ``(status, body,
headers)``, so a test can script refusals, outages, ``Retry-After`` and truncated answers.

    with LoopbackServer(latency_s=0.3) as server:
        OpenAIBackend(server.url, server.model, ...)

``python -m processing.generation.loopback --latency_s 0.3`` serves from a process of its
own (as a real server is): it prints its URL, and ``GET /v1/stats`` returns its counts
(``?reset=1`` starts them again).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo(path: str, payload: dict) -> tuple[int, dict]:
    """A well-formed answer: the last message (or the raw prompt) and the seed, echoed."""
    if "prompt" in payload:
        choice = {
            "index": 0,
            "text": f"{payload['prompt']} continued seed {payload.get('seed')}",
            "finish_reason": "stop",
        }
    else:
        content = f"echo: {payload['messages'][-1]['content']} seed {payload.get('seed')}"
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    body = {
        "id": "loopback",
        "object": "chat.completion" if "messages" in payload else "text_completion",
        "created": int(time.time()),
        "model": payload.get("model", ""),
        "choices": [choice],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    return 200, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048  # hundreds of clients connect at once


class LoopbackServer:
    """Start on construction (a free port on 127.0.0.1); ``close()`` or use as a context manager."""

    def __init__(
        self,
        latency_s: float = 0.0,
        respond: Callable[[str, dict], tuple] = echo,
        models: tuple[str, ...] = ("loopback-model",),
    ):
        self.latency_s = latency_s
        self.respond = respond
        self.models = models
        self.model = models[0] if models else "loopback-model"
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.payloads: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body, headers: dict | None = None) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in (headers or {}).items():
                    self.send_header(key, str(value))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request (a run that stopped)

            def do_GET(self) -> None:
                if self.path.startswith("/v1/stats"):
                    self._send(200, owner.stats(reset="reset=1" in self.path))
                    return
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in owner.models]})

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with owner._lock:
                    owner.requests += 1
                    owner.in_flight += 1
                    owner.peak_in_flight = max(owner.peak_in_flight, owner.in_flight)
                    owner.payloads.append(payload)
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                try:
                    time.sleep(owner.latency_s)
                    answer = owner.respond(self.path, payload)
                finally:
                    with owner._lock:
                        owner.in_flight -= 1
                self._send(*answer)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="loopback-server")
        self._thread.start()

    def stats(self, reset: bool = False) -> dict:
        with self._lock:
            counts = {"requests": self.requests, "peak_in_flight": self.peak_in_flight}
            if reset:
                self.requests, self.peak_in_flight = 0, self.in_flight
        return counts

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="an OpenAI-compatible echo server on loopback")
    parser.add_argument("--latency_s", type=float, default=0.3, help="seconds before each answer")
    args = parser.parse_args()
    server = LoopbackServer(latency_s=args.latency_s)
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
