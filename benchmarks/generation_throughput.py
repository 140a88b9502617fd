"""Throughput of the generation layer's plumbing, apart from the model.

Cache: answers per second that ``RequestCache.put`` stores (~2 KB answers, sha256 keys, a
fresh cache in a temporary directory, the final ``flush`` included), against the former
behaviour timed in the same process: one commit per answer with ``synchronous=FULL``.

    python benchmarks/generation_throughput.py [--cache_answers N] [--baseline_answers M]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import sys
import tempfile
import time

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_answers", type=int, default=20000, help="answers put into the batched cache")
    parser.add_argument("--baseline_answers", type=int, default=2000, help="answers committed one by one")
    args = parser.parse_args(argv)
    print(
        f"generation throughput on {os.cpu_count()} cores, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}"
    )
    sections = [lambda: cache_section(args.cache_answers, args.baseline_answers)]  # one line per section
    for section in sections:
        print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
