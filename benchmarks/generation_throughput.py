"""Throughput of the generation layer's plumbing, apart from the model.

Server: the OpenAI-compatible backend against a loopback server in a process of its own
(``processing.generation.loopback``) whose every answer takes ``--latency_s`` (0.3 s) and
that serves any number at once, as ``vllm serve`` batches sequences: ``--requests``
(1,000) chat requests through ``Generator.generate``, with ``--max_concurrency 8`` (the
former default) and 256 (the default) in the same run. Printed: answers/s, the peak of
requests in flight (counted by the server) and the effective concurrency, requests x
latency / wall time (target: at least 128).

Cache: answers per second that ``RequestCache.put`` stores (~2 KB answers, sha256 keys, a
fresh cache in a temporary directory, the final ``flush`` included), against the former
behaviour timed in the same process: one commit per answer with ``synchronous=FULL``
(target: at least 10,000 answers/s).

    python benchmarks/generation_throughput.py [--requests N] [--latency_s S] [--cache_answers N] [--baseline_answers M]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

from processing.generation import Generator, OpenAIBackend, Sampling
from processing.generation.cache import RequestCache
from processing.generation.types import Completion

ANSWER_CHARS = 2000


def _answers(n: int, seed: int = 0) -> list[tuple[str, Completion]]:
    """``n`` (key, answer) pairs: distinct ~2 KB code-like answers under sha256 keys."""
    rng = random.Random(seed)
    words = [
        "def",
        "assert",
        "self",
        "return",
        "result",
        "expected",
        "import",
        "unittest",
        "test_case",
        "(x)",
        "==",
        ":",
    ]
    pairs = []
    for i in range(n):
        text = f"# answer {i}\n"
        while len(text) < ANSWER_CHARS:
            text += " ".join(rng.choices(words, k=8)) + "\n"
        key = hashlib.sha256(f"request {seed} {i}".encode()).hexdigest()
        pairs.append((key, Completion(text[:ANSWER_CHARS], 900, 500, "stop")))
    return pairs


def cache_puts_per_second(n: int = 20000) -> float:
    """Answers per second through ``RequestCache.put`` and the final ``flush`` into a fresh cache."""
    pairs = _answers(n)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as directory:
        cache = RequestCache(directory)
        start = time.perf_counter()
        for key, completion in pairs:
            cache.put(key, "bench-model", completion)
        cache.flush()
        seconds = time.perf_counter() - start
        cache.close()
    return n / seconds


def baseline_puts_per_second(n: int = 2000) -> float:
    """The former behaviour: every answer its own commit, WAL with the default ``synchronous=FULL``."""
    pairs = _answers(n, seed=1)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as directory:
        db = sqlite3.connect(os.path.join(directory, "requests.sqlite"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, created REAL)"
        )
        db.commit()
        start = time.perf_counter()
        for key, c in pairs:
            row = (key, "bench-model", c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason, time.time())
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            db.commit()
        seconds = time.perf_counter() - start
        db.close()
    return n / seconds


def cache_section(n: int, baseline_n: int) -> str:
    rate = cache_puts_per_second(n)
    baseline = baseline_puts_per_second(baseline_n)
    return f"cache: {rate:,.0f} answers/s (baseline per-answer commit: {baseline:,.0f} answers/s, ratio {rate / baseline:.1f} x)"


def served(url: str, requests: int, latency_s: float, concurrency: int) -> dict:
    """One generation call of ``requests`` chat requests at ``concurrency`` against the server."""
    with urllib.request.urlopen(url + "/stats?reset=1") as response:
        json.loads(response.read())
    backend = OpenAIBackend(url, "loopback-model", None, concurrency, timeout=60, max_retries=2)
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(requests)]
    start = time.perf_counter()
    answers = Generator(backend, None).generate(conversations, Sampling(), desc=f"concurrency {concurrency}")
    wall = time.perf_counter() - start
    with urllib.request.urlopen(url + "/stats") as response:
        stats = json.loads(response.read())
    assert len(answers) == requests and stats["requests"] == requests
    return {
        "answers_per_s": requests / wall,
        "peak_in_flight": stats["peak_in_flight"],
        "effective_concurrency": requests * latency_s / wall,
        "wall_s": wall,
    }


def server_section(requests: int, latency_s: float) -> str:
    process = subprocess.Popen(
        [sys.executable, "-m", "processing.generation.loopback", "--latency_s", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        baseline = served(url, max(64, requests // 5), latency_s, 8)  # fewer requests: it is slow by design
        ours = served(url, requests, latency_s, 256)
    finally:
        process.kill()
        process.wait()
    lines = [f"server: loopback, {latency_s} s per answer, any number at once"]
    for name, figures in (("--max_concurrency 8  ", baseline), ("--max_concurrency 256", ours)):
        lines.append(
            f"  {name}: {figures['answers_per_s']:8.1f} answers/s, peak in flight {figures['peak_in_flight']:3d}, "
            f"effective concurrency {figures['effective_concurrency']:6.1f} ({figures['wall_s']:.2f} s)"
        )
    lines.append(f"  ratio: {ours['answers_per_s'] / baseline['answers_per_s']:.1f} x the answers/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_answers", type=int, default=20000, help="answers put into the batched cache")
    parser.add_argument("--baseline_answers", type=int, default=2000, help="answers committed one by one")
    parser.add_argument("--requests", type=int, default=1000, help="chat requests sent to the loopback server")
    parser.add_argument("--latency_s", type=float, default=0.3, help="seconds the loopback server takes per answer")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # the generator logs each call
    print(
        f"generation throughput on {os.cpu_count()} cores, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}"
    )
    sections = [  # a few lines per section
        lambda: server_section(args.requests, args.latency_s),
        lambda: cache_section(args.cache_answers, args.baseline_answers),
    ]
    for section in sections:
        print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
