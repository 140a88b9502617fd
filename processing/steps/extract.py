"""Stage 1's extraction step: source files in, file rows and function rows out.

``extract_batch`` is a batch function (``dict[str, list]`` in and out) over rows in
The Stack's schema (``processing.corpus.SOURCE_FEATURES``); each row becomes

* one ``level="file"`` row, with the file's drop reason if it was dropped (unreadable,
  licence, no target import, syntax error, timeout, ...), and
* one ``level="function"`` row per top-level function or method found, with the
  language's verdict (``processing.languages.python.analyse_file``); a candidate (no
  drop reason) also carries its imports and packages, its exact-dedup key, its MinHash
  signature and whether it shares an n-gram with a benchmark solution.

Output columns are ``processing.schema.EXTRACTED_FEATURES``. Every row is decided from
its own content alone, so the step runs in any number of processes or batches and
gives the same rows in the same order; what depends on other rows (duplicates, the
``--limit``) is the selection step's work (``processing.steps.select``).
Ids are stable: a hash of repo, path, blob sha (and line and name for functions).
"""

from __future__ import annotations

import gc
import hashlib
import signal
import threading
from contextlib import contextmanager
from functools import lru_cache

from processing.corpus import read_source
from processing.dedup import minhash_signature, ngram_hashes
from processing.languages import get_language
from processing.schema import EXTRACTED_FEATURES


class FileTimeout(Exception):
    """A file's analysis ran past ``--file_timeout_s``."""


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
def _prefilter(language: str, packages: tuple[str, ...]):
    """The language's import prefilter for these packages, built once per process."""
    return get_language(language).import_prefilter(packages)


def row_id(*parts: object) -> str:
    """A stable 20-hex id from the parts (the same in every process and run)."""
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
    language: str = "python",
    benchmarks: tuple[str, ...] = (),
) -> dict[str, list]:
    """Source rows in, file and function rows out (see the module docstring); ``benchmarks``
    names what ``benchmark_ngrams`` came from (each candidate records it)."""
    # Syntax trees hold no reference cycles, yet building them triggers the cyclic
    # collector over and over: pausing it makes parsing about a sixth faster.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _extract(
            batch, packages, max_bytes, licenses, benchmark_ngrams, ngram_n, num_perm, shingle_size, file_timeout_s,
            language, list(benchmarks),
        )  # fmt: skip
    finally:
        if collecting:
            gc.enable()


def _extract(
    batch, packages, max_bytes, licenses, benchmark_ngrams, ngram_n, num_perm, shingle_size, file_timeout_s, language,
    benchmarks,
):  # fmt: skip
    lang = get_language(language)
    out: dict[str, list] = {name: [] for name in EXTRACTED_FEATURES}
    prefilter = _prefilter(language, packages)
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
        source = {"repo": repo, "path": path, "hexsha": hexsha, "licenses": file_licenses, "language": language}
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
                record = lang.analyse_file(content, prefilter, package_set, max_bytes)
        except FileTimeout:
            record = lang.FileRecord("timeout", f"analysis took over {file_timeout_s}s")
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
                    decontaminated_against=benchmarks,
                )
            emit(**values)
    return out
