"""The local engine: chunks, atomic chunk files, resume, bounded memory, another run's output."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processing.engine import ChunkOutput, LocalEngine, OutputConflict, add_stats, input_digest
from processing.hub import InputTable

FEATURES = {
    "default": datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string")}),
    "rejected": datasets.Features(
        {"id": datasets.Value("string"), "text": datasets.Value("string"), "drop_reason": datasets.Value("string")}
    ),
}


def write_input(folder: Path, rows: int, text_bytes: int = 1000) -> InputTable:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"id": [f"r{i}" for i in range(rows)], "text": [f"{i:08d}" * (text_bytes // 8) for i in range(rows)]}
    )
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet", row_group_size=250)
    return InputTable.local(folder)


def keep_even(batch: dict[str, list]) -> ChunkOutput:
    """Keeps rows with an even number, rejects the others."""
    keep = [i for i, row_id in enumerate(batch["id"]) if int(row_id[1:]) % 2 == 0]
    drop = [i for i in range(len(batch["id"])) if i not in set(keep)]
    rows = {
        "default": {k: [batch[k][i] for i in keep] for k in ("id", "text")},
        "rejected": {"id": [batch["id"][i] for i in drop], "text": [batch["text"][i] for i in drop],
                     "drop_reason": ["odd"] * len(drop)},
    }  # fmt: skip
    return ChunkOutput(rows, {"counts": {"input": len(batch["id"]), "kept": len(keep)}})


def engine(out: Path, chunk_size: int = 100, fingerprint: str = "f1", **kw) -> LocalEngine:
    return LocalEngine(out, features=FEATURES, fingerprint=fingerprint, chunk_size=chunk_size, **kw)


def finished(e: LocalEngine, source: InputTable):
    summary = e.run(source, keep_even)
    e.commit(summary, {})
    return summary


def test_every_batch_is_at_most_one_chunk_and_every_row_lands_once(tmp_path):
    source = write_input(tmp_path / "in", 1030)
    sizes = []

    def process(batch):
        sizes.append(len(batch["id"]))
        return keep_even(batch)

    e = engine(tmp_path / "out", chunk_size=100)
    e.commit(e.run(source, process), {})
    assert max(sizes) == 100 and sum(sizes) == 1030
    kept = pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet")["id"].to_pylist()
    dropped = pq.read_table(tmp_path / "out" / "rejected" / "train-00000-of-00001.parquet")["id"].to_pylist()
    assert sorted(kept + dropped) == sorted(f"r{i}" for i in range(1030)) and len(kept) == 515


def peak_bytes(tmp_path: Path, rows: int) -> int:
    source = write_input(tmp_path / f"in-{rows}", rows)
    tracemalloc.start()
    try:
        finished(engine(tmp_path / f"out-{rows}", chunk_size=200), source)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    small, large = peak_bytes(tmp_path, 1000), peak_bytes(tmp_path, 10000)  # about 1 MB and 10 MB of text
    assert large < 1.5 * small, (small, large)


def test_a_rerun_skips_finished_chunks_and_redoes_the_rest(tmp_path):
    source = write_input(tmp_path / "in", 500)
    calls = []

    def crash_on_third(batch):
        calls.append(batch["id"][0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the third chunk
        return keep_even(batch)

    with pytest.raises(KeyboardInterrupt):
        engine(tmp_path / "out").run(source, crash_on_third)
    assert not (tmp_path / "out" / "data").exists()
    seen = []
    e = engine(tmp_path / "out")
    summary = e.run(source, lambda b: seen.append(b["id"][0]) or keep_even(b))
    assert seen == ["r200", "r300", "r400"] and (summary.chunks_skipped, summary.rows_run) == (2, 300)
    e.commit(summary, {})
    assert summary.stats["counts"] == {"input": 500, "kept": 250}  # skipped chunks' counts are kept


def test_another_runs_output_is_a_conflict_and_overwrite_removes_it(tmp_path):
    source = write_input(tmp_path / "in", 300)
    finished(engine(tmp_path / "out", fingerprint="old"), source)
    with pytest.raises(OutputConflict, match="--overwrite"):
        engine(tmp_path / "out", fingerprint="new").prepare()
    e = engine(tmp_path / "out", fingerprint="new")
    e.prepare(overwrite=True)
    assert not (tmp_path / "out" / "stats").exists() or not list((tmp_path / "out" / "stats").iterdir())
    finished(e, source)


def test_shards_of_one_run_do_not_conflict_with_each_other(tmp_path):
    source = write_input(tmp_path / "in", 300)
    finished(engine(tmp_path / "out", shard_index=0, num_shards=2), source)
    engine(tmp_path / "out", shard_index=1, num_shards=2).prepare()  # no conflict: same run
    with pytest.raises(OutputConflict, match="--num_shards"):
        engine(tmp_path / "out", shard_index=0, num_shards=3).prepare()


def test_digests_of_parts_add_up_to_the_digest_of_the_whole():
    table = pa.table({"id": [str(i) for i in range(50)], "x": list(range(50))})
    whole, rows = input_digest(table)
    parts = [input_digest(table.slice(a, 10))[0] for a in range(0, 50, 10)]
    assert rows == 50 and sum(parts) % (1 << 256) == whole
    assert input_digest(table.slice(0, 49))[0] != whole


def test_stats_add_numbers_and_recurse_into_dicts():
    assert add_stats({"counts": {"a": 1}, "name": "x"}, {"counts": {"a": 2, "b": 3}, "name": "y"}) == {
        "counts": {"a": 3, "b": 3},
        "name": "x",
    }


def test_funnels_add_by_label_in_order():
    total = add_stats({"funnel": [["in", 3], ["kept", 1]]}, {"funnel": [["in", 2], ["kept", 2], ["tested", 1]]})
    assert total["funnel"] == [["in", 5], ["kept", 3], ["tested", 1]]
