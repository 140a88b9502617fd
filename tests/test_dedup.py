"""Our MinHash and LSH banding against datasketch's (the reference implementation), and the
first-candidate-wins rule of the Deduplicator (its decomposability over shards is in
tests/test_global_dedup.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from processing import dedup
from processing.dedup import Deduplicator

datasketch = pytest.importorskip("datasketch")


def random_sets(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        size = rng.choice([0, 1, 2, rng.randint(3, 400)])
        yield [rng.randbytes(rng.randint(0, 30)) for _ in range(size)]


@pytest.mark.parametrize("num_perm", [1, 16, 128, 256])
def test_signatures_are_datasketch_affine32_minhash_value_for_value(num_perm):
    for values in random_sets(num_perm, 40):
        reference = datasketch.MinHash(num_perm=num_perm, scheme=dedup.SCHEME, seed=dedup.SEED)
        reference.update_batch(values)
        ours = dedup.minhash(values, num_perm)
        assert ours.dtype == np.uint32
        assert np.array_equal(ours, reference.hashvalues)


def test_a_signature_from_tokens_is_the_minhash_of_their_shingles():
    tokens = "def f ( x ) : return np . sum ( x ) + 1".split()
    reference = datasketch.MinHash(num_perm=64, scheme=dedup.SCHEME)
    reference.update_batch(dedup.shingles(tokens, 5))
    assert dedup.minhash_signature(tokens, 64, 5) == reference.hashvalues.astype(np.int64).tolist()


def test_band_layout_is_the_one_minhashlsh_chooses():
    from datasketch.lsh import _optimal_param

    for num_perm in (8, 64, 128, 250):
        for threshold in np.round(np.arange(0.1, 1.0, 0.1), 2):
            assert dedup.lsh_bands(float(threshold), num_perm) == _optimal_param(float(threshold), num_perm, 0.5, 0.5)


def test_candidates_are_the_keys_minhashlsh_returns():
    rng = random.Random(7)
    vocabulary = [f"t{i}".encode() for i in range(60)]
    documents = [rng.sample(vocabulary, rng.randint(20, 40)) for _ in range(120)]
    documents += [doc[:-2] + vocabulary[:2] for doc in documents[:40]]  # near copies
    reference = datasketch.MinHashLSH(threshold=0.7, num_perm=128)
    ours = dedup.BandIndex(0.7, 128)
    signatures = []
    for i, doc in enumerate(documents):
        signature = dedup.minhash(doc, 128)
        signatures.append(signature)
        reference.insert(str(i), datasketch.MinHash(num_perm=128, hashvalues=signature, scheme=dedup.SCHEME))
        ours.insert(str(i), signature)
    found_any = False
    for signature in signatures:
        expected = set(reference.query(datasketch.MinHash(num_perm=128, hashvalues=signature, scheme=dedup.SCHEME)))
        assert ours.query(signature) == expected
        found_any |= len(expected) > 1
    assert found_any  # the near copies collide with their originals


def test_a_signature_of_the_wrong_length_is_refused():
    index = dedup.BandIndex(0.85, 128)
    with pytest.raises(ValueError, match="64 values"):
        index.query([0] * 64)


def test_threshold_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        dedup.lsh_bands(1.0, 128)


def test_a_chain_of_near_copies_keeps_only_its_first_and_each_copy_names_its_earliest_match():
    a = list(range(128))
    b = a[:64] + [v + 1000 for v in a[64:]]  # shares the first bands with a
    c = [v + 2000 for v in a[:64]] + b[64:]  # shares the last bands with b, none with a
    dedup = Deduplicator(0.85, 128)
    verdicts = [dedup.check(row_id, row_id, signature) for row_id, signature in (("a", a), ("b", b), ("c", c))]
    # c is dropped although the only row it is near (b) was dropped: every candidate counts
    assert verdicts == [(None, ""), ("near_duplicate", "a"), ("near_duplicate", "b")]


def test_an_exact_copy_names_the_earliest_row_of_its_key_before_any_near_match():
    a = list(range(128))
    b = a[:64] + [v + 1000 for v in a[64:]]
    dedup = Deduplicator(0.85, 128)
    assert dedup.check("a", "key-a", a) == (None, "")
    assert dedup.check("b", "key-b", b) == ("near_duplicate", "a")
    assert dedup.check("b-again", "key-b", b) == ("duplicate", "b")  # b was dropped, yet b-again is its copy


def test_a_signature_of_the_wrong_length_leaves_the_deduplicator_as_it_was():
    dedup = Deduplicator(0.85, 128)
    with pytest.raises(ValueError, match="64 values"):
        dedup.check("short", "key", [0] * 64)
    assert dedup.check("first", "key", [0] * 128) == (None, "")
