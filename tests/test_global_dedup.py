"""The job array's global dedup pass: shards deduplicated on their own, then
``stage1.py --dedup_only``, give the rows one process over the whole corpus gives."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processing import globaldedup, stage1
from processing.dedup import Deduplicator, copy_detail, lsh_bands
from processing.hub import push_folder

OFFLINE = ["--decontaminate", "humaneval"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- synthetic shards

BANDS, ROWS = 8, 16  # the layout of threshold 0.85 over 128 permutations (checked below)


def synthetic_candidates(seed: int, count: int = 150) -> list[tuple[str, str, list[int]]]:
    """(id, exact_key, signature) with bands drawn from small pools, so that many
    candidates share a band with some earlier one (chains included) and a few share an
    exact key."""
    rng = random.Random(seed)
    pools = [[[rng.getrandbits(32) for _ in range(ROWS)] for _ in range(4)] for _ in range(BANDS)]
    out = []
    for i in range(count):
        signature: list[int] = []
        for band in range(BANDS):
            shared = rng.random() < 0.1
            signature += rng.choice(pools[band]) if shared else [rng.getrandbits(32) for _ in range(ROWS)]
        key = f"key{rng.randrange(10)}" if rng.random() < 0.1 else f"unique{i}"
        out.append((f"f{seed}-{i:04d}", key, signature))
    return out


def fails_check(row_id: str) -> bool:
    """A stand-in for the define check: a fixed verdict per row."""
    return hashlib.sha1(row_id.encode()).digest()[0] % 5 == 0


def one_pass(candidates) -> dict[str, tuple[str, str] | None]:
    """{id: None (kept) or (drop reason, detail)}: dedup over ``candidates`` in order, then the check."""
    dedup = Deduplicator(0.85, 128)
    out: dict[str, tuple[str, str] | None] = {}
    for row_id, key, signature in candidates:
        reason, first = dedup.check(row_id, key, signature)
        if reason:
            out[row_id] = (reason, copy_detail(first))
        else:
            out[row_id] = ("does_not_define", "raised at definition") if fails_check(row_id) else None
    return out


def write_shard(out: Path, index: int, count: int, candidates) -> None:
    """What a shard of stage 1 leaves: data/, rejected/, stats/ and its side file."""
    log = globaldedup.CandidateLog(out, index, count, 0.85, 128)
    log.add(pa.table({"id": [c[0] for c in candidates], "exact_key": [c[1] for c in candidates],
                      "signature": pa.array([c[2] for c in candidates], pa.list_(pa.int64()))}))  # fmt: skip
    verdicts = one_pass(candidates)
    kept = [row_id for row_id, verdict in verdicts.items() if verdict is None]
    dropped = [(row_id, *verdict) for row_id, verdict in verdicts.items() if verdict is not None]
    name = f"train-{index:05d}-of-{count:05d}.parquet"
    for folder in ("data", "rejected"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": kept, "code": [f"code of {i}" for i in kept]}), out / "data" / name)
    pq.write_table(
        pa.table({"id": [d[0] for d in dropped], "code": [f"code of {d[0]}" for d in dropped],
                  "level": ["function"] * len(dropped), "drop_reason": [d[1] for d in dropped],
                  "detail": [d[2] for d in dropped]}),
        out / "rejected" / name,
    )  # fmt: skip
    reasons = Counter(d[1] for d in dropped)
    stats = {
        "shard_index": index, "num_shards": count, "kept": len(kept), "limit_reached": False,
        "counts": {"files": len(candidates), "bytes": 0, "functions": len(candidates), "kept": len(kept)},
        "files_dropped": {}, "functions_dropped": dict(reasons), "define_check": {"dropped": reasons["does_not_define"]},
        "dedup_candidates": log.close(),
    }  # fmt: skip
    stats.update(stage1.shared_layout(stats))
    (out / "stats").mkdir(exist_ok=True)
    (out / "stats" / f"shard-{index:05d}-of-{count:05d}.json").write_text(json.dumps(stats))


def parts(candidates, count: int) -> list[list]:
    size = -(-len(candidates) // count)
    return [candidates[i * size : (i + 1) * size] for i in range(count)]


def written(out: Path) -> dict[str, tuple[str, str] | None]:
    """{id: None or (drop reason, detail)} from an output folder's files."""
    rows: dict = {}
    for path in sorted((out / "data").glob("train-*.parquet")):
        rows.update(dict.fromkeys(pq.read_table(path, columns=["id"])["id"].to_pylist()))
    for path in sorted((out / "rejected").glob("train-*.parquet")):
        for row in pq.read_table(path, columns=["id", "drop_reason", "detail"]).to_pylist():
            assert row["id"] not in rows
            rows[row["id"]] = (row["drop_reason"], row["detail"])
    return rows


def global_pass(out: Path, count: int) -> int:
    return globaldedup.global_pass(out, count, stage1.shared_layout, lambda *_: None)


def test_the_synthetic_signatures_use_the_real_band_layout():
    assert lsh_bands(0.85, 128) == (BANDS, ROWS)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("count", [2, 3, 7])
def test_contiguous_parts_then_the_global_pass_give_the_verdicts_of_one_pass(tmp_path, seed, count):
    candidates = synthetic_candidates(seed)
    for index, part in enumerate(parts(candidates, count)):
        write_shard(tmp_path, index, count, part)
    before = written(tmp_path)
    whole = one_pass(candidates)
    assert before != whole  # the parts alone disagree with the whole: the pass has work to do
    assert global_pass(tmp_path, count) == 0
    assert written(tmp_path) == whole


@pytest.mark.parametrize("seed", range(6))
def test_what_a_part_drops_as_a_copy_the_whole_drops_too(seed):
    candidates = synthetic_candidates(seed)
    whole = one_pass(candidates)
    for part in parts(candidates, 4):
        for row_id, verdict in one_pass(part).items():
            if verdict is not None and verdict[0] != "does_not_define":
                assert whole[row_id] is not None and whole[row_id][0] in ("duplicate", "near_duplicate")


def test_recounted_stats_add_up_to_the_counts_of_one_pass(tmp_path):
    candidates = synthetic_candidates(11)
    for index, part in enumerate(parts(candidates, 3)):
        write_shard(tmp_path, index, 3, part)
    assert global_pass(tmp_path, 3) == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "stats").glob("*.json"))]
    expected = Counter(v[0] for v in one_pass(candidates).values() if v is not None)
    assert sum((Counter(r["dropped"]) for r in records), Counter()) == expected
    assert sum(r["kept"] for r in records) == sum(1 for v in one_pass(candidates).values() if v is None)
    assert sum(r["define_check"]["dropped"] for r in records) == expected["does_not_define"]


# --------------------------------------------------------------------------- stage 1 end to end

COLLECT = (
    "import os\n\n\ndef collect(root, suffix, skip_hidden=True, limit=None):\n    found = []\n"
    "    for name in sorted(os.listdir(root)):\n        if skip_hidden and name.startswith('.'):\n            continue\n"
    "        path = os.path.join(root, name)\n        if name.endswith(suffix) and os.path.isfile(path):\n"
    "            found.append(path)\n        elif os.path.isdir(path):\n"
    "            found.extend(collect(path, suffix, skip_hidden, limit))\n"
    "        if limit is not None and len(found) >= limit:\n            return found[:limit]\n    return found\n"
)
LABEL = "\n\ndef label(path, sep='-'):\n    return os.path.basename(path).replace(os.sep, sep).upper()\n"


def corpus(tmp_path: Path) -> Path:
    """Four files, two per shard. Shard 1 alone keeps d.py's ``label`` (a copy of a.py's),
    drops c.py's ``collect`` (a near copy of a.py's whose default does not evaluate) as
    does_not_define, and d.py's ``collect`` (an exact copy of a.py's) as a near copy of c.py's."""
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text(COLLECT + LABEL)
    (src / "b.py").write_text("import os\n\ndef f(x):\n    return os.path.join(x, 'y')\n")
    (src / "c.py").write_text(COLLECT.replace("limit=None", "limit=os.no_such_name"))
    (src / "d.py").write_text(COLLECT + LABEL)
    return tmp_path / "src"


def run_shards(source: Path, out: Path, count: int, *extra: str) -> None:
    for index in range(count):
        args = ["--source_dir", str(source), "--output_dir", str(out), "--num_shards", str(count)]
        assert stage1.main([*OFFLINE, *args, "--shard_index", str(index), *extra]) == 0


def dedup_only(out: Path, count: int) -> int:
    return stage1.main(["--dedup_only", "--num_shards", str(count), "--output_dir", str(out)])


def rows(out: Path) -> tuple[list, list]:
    """(sorted kept ids, sorted (id, drop_reason, detail) of rejected rows)."""
    kept = [i for p in (out / "data").glob("train-*.parquet") for i in pq.read_table(p)["id"].to_pylist()]
    rejected = [
        (r["id"], r["drop_reason"], r["detail"])
        for p in (out / "rejected").glob("train-*.parquet")
        for r in pq.read_table(p, columns=["id", "drop_reason", "detail"]).to_pylist()
    ]
    return sorted(kept), sorted(rejected)


def totals(out: Path) -> tuple[Counter, Counter]:
    """The funnel and the drops per reason, summed over the shards' stats."""
    funnel, dropped = Counter(), Counter()
    for path in (out / "stats").glob("shard-*.json"):
        record = json.loads(path.read_text())
        funnel.update(dict(record["funnel"]))
        dropped.update(record["dropped"])
    return funnel, dropped


def snapshot(out: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The corpus, its output in 2 shards before the global pass, and in one process (run once)."""
    import datasets

    root = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf-cache")
        source = corpus(root)
        run_shards(source, root / "sharded", 2, "--skip_test_generation")
        args = ["--source_dir", str(source), "--output_dir", str(root / "whole"), "--skip_test_generation"]
        assert stage1.main([*OFFLINE, *args]) == 0
    return root


@pytest.fixture
def sharded(built, tmp_path) -> tuple[Path, Path, Path]:
    """(source folder, its output in 2 shards before the global pass, its output in one process), a copy per test."""
    for name in ("src", "sharded", "whole"):
        shutil.copytree(built / name, tmp_path / name)
    return tmp_path / "src", tmp_path / "sharded", tmp_path / "whole"


def test_two_shards_and_the_global_pass_write_the_rows_of_one_process(sharded):
    _, out, whole = sharded
    assert rows(out) != rows(whole)
    assert dedup_only(out, 2) == 0
    assert rows(out) == rows(whole)
    reasons = {r[1] for r in rows(out)[1]}
    assert reasons == {"duplicate", "near_duplicate"}  # kept, does_not_define and another copy's rows relabelled


def test_the_global_pass_recounts_the_funnel_and_the_drops(sharded):
    _, out, whole = sharded
    assert dedup_only(out, 2) == 0
    assert totals(out) == totals(whole)
    card = (out / "README.md").read_text()
    assert "| functions retrieved | 3 |" in card and "| `near_duplicate` | 1 |" in card


def test_a_second_global_pass_changes_nothing(sharded):
    _, out, _ = sharded
    assert dedup_only(out, 2) == 0
    before = snapshot(out)
    assert dedup_only(out, 2) == 0
    assert snapshot(out) == before


def test_a_killed_global_pass_is_finished_by_the_next(sharded, monkeypatch):
    _, out, whole = sharded
    write = globaldedup._write_parquet

    def killed_before_data(table, path):
        if path.parent.name == "data":
            raise KeyboardInterrupt
        write(table, path)

    monkeypatch.setattr(globaldedup, "_write_parquet", killed_before_data)
    with pytest.raises(KeyboardInterrupt):
        dedup_only(out, 2)
    monkeypatch.setattr(globaldedup, "_write_parquet", write)
    card = (out / "README.md").read_text()
    assert dedup_only(out, 2) == 0
    assert rows(out) == rows(whole) and totals(out) == totals(whole)
    assert (out / "README.md").read_text() != card and not (out / ".dedup" / "pending").exists()


def test_only_shards_of_a_job_array_write_a_side_file_and_it_is_never_pushed(sharded, monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    _, out, whole = sharded
    assert sorted(p.name for p in (out / ".dedup").iterdir()) == [
        "shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"
    ]  # fmt: skip
    assert not (whole / ".dedup").exists()
    sent = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **k: sent.update(k) or "url")
    push_folder(out, "me/x", "stage 1")
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    uploaded = list(filter_repo_objects(files, allow_patterns=sent["allow_patterns"]))
    assert uploaded and not any(".dedup" in f for f in uploaded)


def test_a_missing_shard_stops_the_pass_with_one_sentence(tmp_path, caplog):
    out = tmp_path / "out"
    run_shards(corpus(tmp_path), out, 2, "--skip_test_generation")
    (out / "stats" / "shard-00001-of-00002.json").unlink()
    before = snapshot(out)
    assert dedup_only(out, 2) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "shard 1 of 2 has not finished" in errors[0] and "\n" not in errors[0]
    assert snapshot(out) == before


@pytest.mark.parametrize("case", ["missing", "from another run"])
def test_a_side_file_missing_or_of_another_run_stops_the_pass(sharded, case, caplog):
    source, out, _ = sharded
    side = out / ".dedup" / "shard-00001-of-00002.parquet"
    if case == "missing":
        side.unlink()
    else:
        shutil.copy(side, out / "old-side-file")
        run_shards(source, out, 2, "--skip_test_generation")  # both shards again: new runs
        shutil.copy(out / "old-side-file", side)
    assert dedup_only(out, 2) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert f"candidate file {side} is {case}" in error and "rerun shard 1 of 2" in error


def test_shards_stopped_by_a_limit_are_refused(tmp_path, caplog):
    out = tmp_path / "out"
    run_shards(corpus(tmp_path), out, 2, "--skip_test_generation", "--skip_define_check", "--limit", "1")
    assert dedup_only(out, 2) == 2 and "stopped at --limit" in caplog.text


def test_dedup_only_does_not_push(capsys):
    with pytest.raises(SystemExit) as exc:
        stage1.main(["--dedup_only", "--push", "--repo_id", "me/x", "--num_shards", "2"])
    assert exc.value.code == 2 and "--dedup_only does not push" in capsys.readouterr().err


TESTS = (
    "```python\nimport unittest\n\nclass TestCases(unittest.TestCase):\n"
    "    def test_join(self):\n        self.assertEqual(good('a'), os.path.join('a', 'g'))\n```"
)


def test_rows_kept_with_tests_or_rejected_by_test_generation_are_relabelled(tmp_path):
    """Shard 1 holds exact copies of shard 0's two functions: alone it writes tests for
    one and rejects the other's answer; globally both are duplicates."""
    answers = [{"match": "def good(", "answer": TESTS}, {"match": "def rambling(", "answer": "No tests, sorry."}]
    (tmp_path / "answers.jsonl").write_text("\n".join(json.dumps(a) for a in answers) + "\n")
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    for prefix in ("a", "b"):  # a_* in shard 0, b_* in shard 1
        for name in ("good", "rambling"):
            (src / f"{prefix}_{name}.py").write_text(f"import os\n\ndef {name}(p):\n    return os.path.join(p, 'g')\n")
    model = ["--backend", "scripted", "--model", str(tmp_path / "answers.jsonl"), "--cache_dir", str(tmp_path / "c")]
    run_shards(tmp_path / "src", tmp_path / "sharded", 2, *model)
    args = [*OFFLINE, "--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "whole"), *model]
    assert stage1.main(args) == 0
    before = rows(tmp_path / "sharded")
    assert {r[1] for r in before[1]} == {"unparseable_tests"} and len(before[0]) == 2
    assert dedup_only(tmp_path / "sharded", 2) == 0
    assert rows(tmp_path / "sharded") == rows(tmp_path / "whole")
    assert {r[1] for r in rows(tmp_path / "whole")[1]} == {"duplicate", "unparseable_tests"}
    assert totals(tmp_path / "sharded") == totals(tmp_path / "whole")
