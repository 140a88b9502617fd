"""Our MinHash and LSH banding against datasketch's (the reference implementation), and the
first-copy-wins rule of the Deduplicator."""

from __future__ import annotations

import random

import numpy as np
import pytest

from processing import dedup

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
