"""Deduplication (exact and MinHash LSH) and decontamination against benchmarks: the machinery.

Signatures and n-grams are computed per function in the parallel extraction step
(``processing.steps.extract``); the order-dependent decisions (which copy is the first
one) are made by the selection step (``processing.steps.select``), which holds one
``Deduplicator``, and by the job array's global pass (``processing.globaldedup``), which
runs the same ``Deduplicator`` over every shard's candidates. These use this module,
which is why it is not a step itself. Benchmark solutions come from
``processing.evalsets``, the one loader of benchmark data.

The rule: a candidate (a function that passed decontamination) is a ``duplicate`` when
an earlier candidate has the same exact key (the normalised source), else a
``near_duplicate`` when an earlier candidate shares an LSH band bucket with it; the
detail names the earliest such candidate. "Earlier" counts every candidate, dropped ones
included, so each candidate's verdict is a function of the set of candidates before it:
bucket by key, the first by input order owns the bucket. That makes the rule exactly
decomposable (run it per part, then once over the parts' candidates in order, and the
verdicts are those of one pass over the whole) and monotone (a candidate dropped within
its part is dropped globally), unlike "dropped when near an earlier *kept* row", whose
outcome hangs on a chain of earlier decisions (near duplicates are not transitive).

MinHash and its LSH banding are written here in numpy rather than taken from
datasketch: importing datasketch imports scipy (a quarter of a second, a tenth of a
small stage-1 run), and a banded index whose band keys are plain bytes is what a
global deduplication over shards or a cluster needs. The signatures are datasketch
2.0's ``affine32`` MinHash (seed 1) value for value, and the band layout is what its
``MinHashLSH`` chooses for the same threshold; ``tests/test_dedup.py`` checks both
against datasketch itself.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from processing import evalsets
from processing.languages import get_language

logger = logging.getLogger(__name__)


def shingles(tokens: list[str], size: int) -> list[bytes]:
    if len(tokens) <= size:
        return [" ".join(tokens).encode("utf-8")]
    return [" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)]


SCHEME = "affine32"  # datasketch 2.0's default scheme, which these signatures reproduce
SEED = 1
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


@lru_cache(maxsize=4)
def _permutations(num_perm: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The affine maps h -> a*h + b (mod 2**32), a odd, drawn as datasketch draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (a bijection), applied before the affine maps."""
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


def minhash(values: list[bytes], num_perm: int) -> np.ndarray:
    """The MinHash signature (``num_perm`` uint32) of a set of byte strings: each value's
    SHA-1 (first 4 bytes, little-endian), mixed, then the minimum of every affine map."""
    if not values:
        return np.full(num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
    digests = b"".join(hashlib.sha1(v).digest()[:4] for v in values)
    hv = _fmix32(np.frombuffer(digests, dtype="<u4").astype(np.uint32).reshape(-1, 1))
    a, b = _permutations(num_perm)
    with np.errstate(over="ignore"):
        return (hv * a + b).min(axis=0)


def minhash_signature(tokens: list[str], num_perm: int, shingle_size: int) -> list[int]:
    return minhash(shingles(tokens, shingle_size), num_perm).astype(np.int64).tolist()


def ngram_hashes(tokens: list[str], n: int) -> set[int]:
    """Stable 64-bit hashes of the token n-grams (the same in every process)."""
    return {
        int.from_bytes(hashlib.blake2b(" ".join(tokens[i : i + n]).encode("utf-8"), digest_size=8).digest(), "big")
        for i in range(len(tokens) - n + 1)
    }


@lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows per band) with bands * rows <= num_perm that minimise the weighted sum of
    the false-positive area (similarity below ``threshold`` yet sharing a band) and the
    false-negative area (above it yet sharing none), as MinHashLSH chooses them.

    The collision probability 1 - (1 - s**r)**b is a polynomial of degree b*r <= num_perm
    in s, so Gauss-Legendre quadrature with num_perm//2 + 1 nodes integrates it exactly."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the LSH threshold must be between 0 and 1, got {threshold}")
    nodes, node_weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def area(lo: float, hi: float, b: np.ndarray, r: np.ndarray) -> np.ndarray:
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2  # the nodes mapped onto [lo, hi]
        collide = 1.0 - (1.0 - s[None, :] ** r[:, None]) ** b[:, None]
        return (hi - lo) / 2 * (collide * node_weights).sum(axis=1)

    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    b, r = pairs[:, 0], pairs[:, 1]
    false_positive = area(0.0, threshold, b, r)
    collide_area = area(threshold, 1.0, b, r)
    false_negative = (1.0 - threshold) - collide_area
    error = weights[0] * false_positive + weights[1] * false_negative
    best = int(np.argmin(error))  # the first minimum, in the order MinHashLSH scans
    return int(b[best]), int(r[best])


class BandIndex:
    """MinHash LSH: a signature is cut into ``bands`` bands of ``rows`` values; two
    signatures are candidates when any band is equal. Band keys are bytes (the band's
    number and its values), so they can be computed anywhere and compared anywhere."""

    def __init__(self, threshold: float, num_perm: int):
        self.num_perm = num_perm
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.buckets: dict[bytes, list[str]] = {}

    def keys(self, signature) -> list[bytes]:
        values = np.asarray(signature, dtype=np.uint32)
        if values.shape != (self.num_perm,):
            raise ValueError(f"a signature of {values.shape[0]} values does not fit an index of {self.num_perm}")
        rows = self.rows
        return [
            band.to_bytes(2, "little") + values[band * rows : (band + 1) * rows].tobytes() for band in range(self.bands)
        ]

    def query(self, signature) -> set[str]:
        found: set[str] = set()
        for key in self.keys(signature):
            found.update(self.buckets.get(key, ()))
        return found

    def insert(self, key: str, signature) -> None:
        for band in self.keys(signature):
            self.buckets.setdefault(band, []).append(key)


DUPLICATE, NEAR_DUPLICATE = "duplicate", "near_duplicate"


def copy_detail(first: str) -> str:
    """The ``detail`` of a row dropped as a copy of the candidate ``first``."""
    return f"copy of {first}"


class Deduplicator:
    """First candidate wins: exact (normalised source) first, then near-duplicates by MinHash LSH.

    Rows must be offered in input order. ``check`` drops a row when any earlier row it was
    offered (kept or dropped) has the same exact key or shares a band bucket with it, and
    names the earliest such row; every row offered joins the index. Each key (the exact
    key, and each band key) remembers only the first row that had it, which is all the
    rule needs: the earliest earlier row sharing any bucket is the earliest of the
    buckets' first rows.
    """

    def __init__(self, threshold: float, num_perm: int):
        self.num_perm = num_perm
        self.lsh = BandIndex(threshold, num_perm)
        self.ids: list[str] = []  # every row offered, by position
        self.exact: dict[str, int] = {}  # exact key -> position of its first row
        self.bands: dict[bytes, int] = {}  # band key -> position of its first row

    def check(self, row_id: str, exact_key: str, signature) -> tuple[str | None, str]:
        """(drop reason or None, id of the earliest earlier copy or ""); the row joins the index."""
        position = len(self.ids)
        keys = self.lsh.keys(signature)  # raises on a signature of the wrong length, before any change
        self.ids.append(row_id)
        same = self.exact.setdefault(exact_key, position)
        near = min(self.bands.setdefault(key, position) for key in keys)
        if same < position:
            return DUPLICATE, self.ids[same]
        if near < position:
            return NEAR_DUPLICATE, self.ids[near]
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
    """The n-grams of the named benchmarks' reference solutions in ``language``
    (``processing.evalsets``): Python's HumanEval always; the others when the Hub is
    reachable, otherwise skipped with the reason (logged, and kept in ``skipped``).
    Unknown names, or names without a version in ``language``, raise ValueError."""
    evalsets.check_names(names, language)
    ngrams = BenchmarkNgrams(n, language)
    for name in names:
        try:
            rows = evalsets.load_rows(name, hub_reachable=hub_reachable, language=language)
        except evalsets.BenchmarkUnavailable as exc:  # a moved dataset must not stop retrieval: say so and go on
            ngrams.skipped[name] = str(exc)
            continue
        ngrams.add(name, evalsets.solutions(name, rows, language))
    for name, why in ngrams.skipped.items():
        logger.warning("decontamination against %s skipped: %s", name, why)
    return ngrams
