"""The persistent request cache: every answer received is written as it arrives, so a
killed run resumes without asking again, and a rerun with the same settings costs no
generation. One sqlite file (WAL mode) under ``--cache_dir``, safe across processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from processing.generation.types import Completion, Request


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/unitcoder`` (``~/.cache/unitcoder`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unitcoder")


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
