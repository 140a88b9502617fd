"""Stage 1's retrieval steps: a parallel extraction ``map`` and a sequential selection pass.

``extract_batch`` (``datasets.map(batched=True, num_proc=...)``) turns source files into
rows: one ``level="file"`` row per file (with its drop reason, if any) and one
``level="function"`` row per top-level function or method found, with the function's
verdict, its dedup key, MinHash signature and contamination flag. ``Selector`` then
walks those rows in order and decides what depends on order: exact and near
duplicates (first copy wins) and the ``--limit``.
"""

from __future__ import annotations

import gc
import hashlib
import signal
import threading
from collections import Counter
from contextlib import contextmanager
from functools import lru_cache

import pyarrow as pa

from processing.corpus import read_source
from processing.schema import EXTRACTED_FEATURES
from processing.dedup import Deduplicator, minhash_signature, ngram_hashes
from processing.languages.python import FileRecord, analyse_file, import_prefilter

class FileTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float | None):
    """Raise FileTimeout after ``seconds`` (main thread only: signals are delivered there)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise FileTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=8)
def _prefilter(packages: tuple[str, ...]):
    return import_prefilter(packages)


def row_id(*parts: object) -> str:
    return hashlib.sha1(":".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:20]


def extract_batch(
    batch: dict[str, list],
    *,
    packages: tuple[str, ...],
    max_bytes: int,
    licenses: tuple[str, ...] | None,
    benchmark_ngrams: frozenset[int],
    ngram_n: int,
    num_perm: int,
    shingle_size: int,
    file_timeout_s: float | None,
) -> dict[str, list]:
    """Source rows in, file and function rows out (see the module docstring)."""
    # Syntax trees hold no reference cycles, yet building them triggers the cyclic
    # collector over and over: pausing it makes parsing about a sixth faster.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _extract(
            batch, packages, max_bytes, licenses, benchmark_ngrams, ngram_n, num_perm, shingle_size, file_timeout_s
        )
    finally:
        if collecting:
            gc.enable()


def _extract(batch, packages, max_bytes, licenses, benchmark_ngrams, ngram_n, num_perm, shingle_size, file_timeout_s):
    out: dict[str, list] = {name: [] for name in EXTRACTED_FEATURES}
    prefilter = _prefilter(packages)
    package_set = frozenset(packages)
    wanted_licenses = {lic.lower() for lic in licenses} if licenses else None

    def emit(**values) -> None:
        for name in EXTRACTED_FEATURES:
            out[name].append(values.get(name))

    for i, content in enumerate(batch["content"]):
        repo, path = batch["max_stars_repo_name"][i], batch["max_stars_repo_path"][i]
        hexsha, read_error = batch["hexsha"][i], batch["read_error"][i]
        if content is None and batch["local_path"][i] and not read_error:
            content, hexsha, read_error = read_source(batch["local_path"][i], max_bytes)
        file_licenses = list(batch["max_stars_repo_licenses"][i] or [])
        source = {"repo": repo, "path": path, "hexsha": hexsha, "licenses": file_licenses}
        file_row = {**source, "id": row_id(repo, path, hexsha), "level": "file", "file_bytes": batch["size"][i]}
        if read_error:
            reason, _, detail = read_error.partition(":")
            emit(**file_row, drop_reason=reason.strip(), detail=detail.strip())
            continue
        if wanted_licenses is not None and not wanted_licenses & {lic.lower() for lic in file_licenses}:
            emit(**file_row, drop_reason="license_filtered", detail=", ".join(file_licenses) or "unknown")
            continue
        try:
            with time_limit(file_timeout_s):
                record = analyse_file(content, prefilter, package_set, max_bytes)
        except FileTimeout:
            record = FileRecord("timeout", f"analysis took over {file_timeout_s}s")
        emit(**file_row, drop_reason=record.drop_reason, detail=record.detail)
        for fn in record.functions:
            values = {
                **source,
                "id": row_id(repo, path, hexsha, fn.lineno, fn.name),
                "level": "function",
                "function_name": fn.name,
                "lineno": fn.lineno,
                "drop_reason": fn.drop_reason,
                "detail": fn.detail,
                "code": fn.code,
            }
            if fn.drop_reason is None:
                values.update(
                    imports=fn.imports,
                    packages=fn.packages,
                    exact_key=fn.exact_key,
                    signature=minhash_signature(fn.tokens, num_perm, shingle_size),
                    contaminated=bool(benchmark_ngrams and ngram_hashes(fn.tokens, ngram_n) & benchmark_ngrams),
                )
            emit(**values)
    return out


class Selector:
    """The order-dependent pass: counts, contamination, duplicates and the limit.

    It reads the extraction's output as Arrow tables: rows dropped during extraction go
    to the rejected sink as whole slices, and only candidate functions become Python
    rows, so millions of dropped methods cost next to nothing here.
    """

    def __init__(self, dedup: Deduplicator, limit: int | None, kept_sink, rejected_sink):
        self.dedup = dedup
        self.limit = limit
        self.kept_sink, self.rejected_sink = kept_sink, rejected_sink
        self.counts: Counter = Counter({"files": 0, "bytes": 0, "functions": 0, "kept": 0})
        self.files_dropped: Counter = Counter()
        self.functions_dropped: Counter = Counter()

    @property
    def done(self) -> bool:
        return self.limit is not None and self.counts["kept"] >= self.limit

    def _decide(self, row: dict) -> str | None:
        """The drop reason of a candidate function, or None to keep it."""
        if row["contaminated"]:
            row["detail"] = "shares n-grams with a benchmark solution"
            return "contaminated"
        reason, first = self.dedup.check(row["id"], row["exact_key"], row["signature"])
        if reason:
            row["detail"] = f"copy of {first}"
        return reason

    def consume(self, table: pa.Table) -> None:
        """Take one table of extracted rows, in order; stop inside it once the limit is reached."""
        levels = table.column("level").to_pylist()
        reasons = table.column("drop_reason").to_pylist()
        positions = [i for i, (lv, r) in enumerate(zip(levels, reasons)) if lv == "function" and r is None]
        stop = len(levels)
        if positions:
            for position, row in zip(positions, table.take(positions).to_pylist()):
                if self.done:
                    stop = position
                    break
                reason = self._decide(row)
                if reason:
                    self.functions_dropped[reason] += 1
                    self.rejected_sink.add({**row, "drop_reason": reason})
                else:
                    self.counts["kept"] += 1
                    self.kept_sink.add(row)
        sizes = table.column("file_bytes").to_pylist()
        for level, reason, size in zip(levels[:stop], reasons[:stop], sizes[:stop]):
            if level == "file":
                self.counts["files"] += 1
                self.counts["bytes"] += size or 0
                if reason:
                    self.files_dropped[reason] += 1
            else:
                self.counts["functions"] += 1
                if reason:
                    self.functions_dropped[reason] += 1
        dropped = [i for i in range(stop) if reasons[i] is not None]
        if dropped:
            self.rejected_sink.add_table(table.take(dropped))

    def stats(self) -> dict:
        return {
            "counts": dict(self.counts),
            "files_dropped": dict(self.files_dropped.most_common()),
            "functions_dropped": dict(self.functions_dropped.most_common()),
        }
