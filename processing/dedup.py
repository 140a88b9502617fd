"""Deduplication (exact and MinHash LSH) and decontamination against benchmarks: the machinery.

Signatures and n-grams are computed per function in the parallel extraction step
(``processing.steps.extract``); the order-dependent decisions (which copy is the first
one) are made by the selection step (``processing.steps.select``), which holds one
``Deduplicator``. Both steps use this module, which is why it is not a step itself.
Benchmark solutions come from ``processing.evalsets``, the one loader of benchmark data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHash, MinHashLSH

from processing import evalsets
from processing.languages import get_language

logger = logging.getLogger(__name__)


def shingles(tokens: list[str], size: int) -> list[bytes]:
    if len(tokens) <= size:
        return [" ".join(tokens).encode("utf-8")]
    return [" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)]


SCHEME = "affine32"  # datasketch's default since 2.0; stated so stored signatures stay comparable


def minhash_signature(tokens: list[str], num_perm: int, shingle_size: int) -> list[int]:
    minhash = MinHash(num_perm=num_perm, scheme=SCHEME)
    minhash.update_batch(shingles(tokens, shingle_size))
    return minhash.hashvalues.astype(np.int64).tolist()


def ngram_hashes(tokens: list[str], n: int) -> set[int]:
    """Stable 64-bit hashes of the token n-grams (the same in every process)."""
    return {
        int.from_bytes(hashlib.blake2b(" ".join(tokens[i : i + n]).encode("utf-8"), digest_size=8).digest(), "big")
        for i in range(len(tokens) - n + 1)
    }


class Deduplicator:
    """First copy wins: exact (normalised source) first, then near-duplicates by MinHash LSH.

    Rows must be offered in input order: ``check`` keeps a row unless an earlier kept
    row is the same or near it, so the outcome depends only on that order. A dropped
    row names the earliest kept copy it matches.
    """

    def __init__(self, threshold: float, num_perm: int):
        self.num_perm = num_perm
        self.exact: dict[str, str] = {}
        self.order: dict[str, int] = {}  # kept row id -> position among kept rows
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def check(self, row_id: str, exact_key: str, signature: list[int]) -> tuple[str | None, str]:
        """(drop reason or None, id of the kept copy) and remember the row if it is kept."""
        if exact_key in self.exact:
            return "duplicate", self.exact[exact_key]
        minhash = MinHash(num_perm=self.num_perm, hashvalues=np.asarray(signature, dtype=np.uint32), scheme=SCHEME)
        near = self.lsh.query(minhash)
        if near:
            return "near_duplicate", min(near, key=self.order.__getitem__)
        self.exact[exact_key] = row_id
        self.order[row_id] = len(self.order)
        self.lsh.insert(row_id, minhash, check_duplication=False)
        return None, ""


@dataclass
class BenchmarkNgrams:
    """n-grams of benchmark solutions, and which benchmarks they came from."""

    n: int
    language: str = "python"
    hashes: set[int] = field(default_factory=set)
    used: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, sources: list[str]) -> None:
        before = len(self.hashes)
        normalized_tokens = get_language(self.language).normalized_tokens
        for source in sources:
            self.hashes |= ngram_hashes(normalized_tokens(source), self.n)
        self.used.append(name)
        logger.info("decontamination: %s, %d programs, %d n-grams", name, len(sources), len(self.hashes) - before)


def load_benchmarks(names: tuple[str, ...], n: int, hub_reachable: bool, language: str = "python") -> BenchmarkNgrams:
    """The n-grams of the named benchmarks' reference solutions (``processing.evalsets``):
    HumanEval always; MBPP and BigCodeBench when the Hub is reachable, otherwise skipped
    with the reason (logged, and kept in ``skipped``). Unknown names raise ValueError."""
    evalsets.check_names(names)
    ngrams = BenchmarkNgrams(n, language)
    for name in names:
        try:
            rows = evalsets.load_rows(name, hub_reachable=hub_reachable)
        except evalsets.BenchmarkUnavailable as exc:  # a moved dataset must not stop retrieval: say so and go on
            ngrams.skipped[name] = str(exc)
            continue
        ngrams.add(name, evalsets.solutions(name, rows))
    for name, why in ngrams.skipped.items():
        logger.warning("decontamination against %s skipped: %s", name, why)
    return ngrams
