"""Stage 2 end to end: every branch with a scripted model, versioned push, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from processing import stage2

REPO = Path(__file__).resolve().parents[1]


def unit_tests(*bodies: str) -> str:
    methods = "".join(f"    def test_{i}(self):\n        {body}\n" for i, body in enumerate(bodies))
    return "import unittest\n\nclass TestCases(unittest.TestCase):\n" + methods


ROWS = [
    ("a", "add", "def add(a, b):\n    return a + b\n", unit_tests("self.assertEqual(add(1, 2), 3)")),
    ("b", "sub", "def sub(a, b):\n    return a + b\n", unit_tests("self.assertEqual(sub(3, 1), 2)")),
    ("c", "mul", "def mul(a, b):\n    return a + b\n", unit_tests("self.assertEqual(mul(3, 2), 6)")),
    ("d", "neg", "def neg(a):\n    return -a\n", unit_tests("self.assertEqual(neg(3), -3)")),
    ("e", "ident", "def ident(a):\n    return a\n", unit_tests("self.assertTrue(True)")),
]
REFINE = "Rewrite the Python function below as clean"
RULES = [
    {
        "match": [REFINE, "def neg("],
        "answer": "```python\ndef neg(a: int) -> int:\n    '''Negate.'''\n    return a\n```",
    },
    {
        "match": [REFINE, "def add("],
        "answer": "```python\ndef add(a: int, b: int) -> int:\n    '''Add two numbers.'''\n    return a + b\n```",
    },
    {"match": [REFINE, "def sub("], "answer": "```python\ndef sub(a, b):\n    '''Subtract.'''\n    return a - b\n```"},
    {"match": ["# attempt1", "def sub("], "answer": "```python\ndef sub(a, b):\n    return a - b\n```"},
    {"match": "def sub(", "answer": "```python\ndef sub(a, b):\n    # attempt1\n    return a * b\n```"},
    {"match": "def mul(", "answer": "Sorry, I can't."},
]


@pytest.fixture
def stage1_output(tmp_path) -> Path:
    folder = tmp_path / "stage1"
    (folder / "data").mkdir(parents=True)
    rows = [
        {
            "id": i,
            "function_name": f,
            "code": c,
            "test_code": t,
            "repo": "org/r",
            "path": f"{f}.py",
            "licenses": ["mit"],
            "packages": ["os"],
        }
        for i, f, c, t in ROWS
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return folder


def write_rules(tmp_path: Path, rules=RULES) -> Path:
    path = tmp_path / "rules.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rules) + "\n")
    return path


def args_for(tmp_path: Path, stage1_output: Path, out: str = "out", rules=RULES) -> list[str]:
    return [
        "--input_dir", str(stage1_output), "--output_dir", str(tmp_path / out), "--backend", "scripted",
        "--model", str(write_rules(tmp_path, rules)), "--cache_dir", str(tmp_path / "cache"), "--sandbox_workers", "1",
    ]  # fmt: skip


def load(out: Path, config: str = "default"):
    return load_dataset(str(out), config, split="train", cache_dir=str(out.parent / f".c-{out.name}-{config}"))


def test_every_branch_ends_each_id_exactly_once(tmp_path, stage1_output):
    assert stage2.main(args_for(tmp_path, stage1_output)) == 0
    verified = {r["id"]: r for r in load(tmp_path / "out")}
    rejected = {r["id"]: r for r in load(tmp_path / "out", "rejected")}
    assert sorted(verified) + sorted(rejected) == ["a", "b", "d", "c", "e"]
    assert (verified["a"]["fix_rounds"], verified["a"]["refined"]) == (0, True)  # passed at once, refined
    assert (verified["b"]["fix_rounds"], verified["b"]["code"].strip().endswith("return a - b")) == (2, True)
    assert [a["status"] for a in verified["b"]["attempts"]] == ["fail"] * 3 + ["pass"] * 3
    assert verified["b"]["original_code"] == ROWS[1][2]
    assert (verified["d"]["refined"], verified["d"]["refine_status"], verified["d"]["code"]) == (
        False,
        "fail",
        ROWS[3][2],
    )
    assert rejected["c"]["drop_reason"] == "not_fixed" and len(rejected["c"]["attempts"]) == 9
    assert rejected["e"]["drop_reason"] == "vacuous_tests"
    assert all(
        r["test_code"] == dict((i, t) for i, _, _, t in ROWS)[r["id"]] for r in verified.values()
    )  # tests never edited


def test_consumer_formats_are_written(tmp_path, stage1_output):
    assert stage2.main(args_for(tmp_path, stage1_output)) == 0
    row = next(r for r in load(tmp_path / "out") if r["id"] == "a")
    assert row["prompt"] == "def add(a: int, b: int) -> int:\n    '''Add two numbers.'''\n"
    assert row["completion"] == "    return a + b\n"
    assert row["prompt"] + row["completion"] == row["code"]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and row["code"].strip() in row["messages"][1][
        "content"
    ]


def test_card_has_the_funnel_its_picture_and_valid_yaml(tmp_path, stage1_output):
    import yaml

    assert stage2.main(args_for(tmp_path, stage1_output)) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == ["default", "rejected"] and header["license"] == "mit"
    assert "| fixed in round 2 | 1 |" in card and "| `vacuous_tests` | 1 |" in card and "![funnel](funnel.png)" in card
    assert "--cache_dir" in card and "prompt" in card.lower()
    assert (tmp_path / "out" / "funnel.png").read_bytes()[:4] == b"\x89PNG"


def test_keep_variants_keeps_extra_passing_versions(tmp_path, stage1_output):
    assert stage2.main([*args_for(tmp_path, stage1_output), "--keep_variants", "2", "--skip_refine"]) == 0
    row = next(r for r in load(tmp_path / "out") if r["id"] == "b")
    assert len(row["variants"]) == 1 and row["refined"] is False


def test_a_run_where_nothing_verifies_exits_0_and_says_so(tmp_path, stage1_output, caplog):
    table = pq.read_table(stage1_output / "data" / "train-00000-of-00001.parquet").slice(2, 1)  # only "mul"
    pq.write_table(table, stage1_output / "data" / "train-00000-of-00001.parquet")
    assert stage2.main(args_for(tmp_path, stage1_output)) == 0
    assert "nothing verified" in caplog.text
    assert list(load_dataset(str(tmp_path / "out"), split="train", streaming=True)) == []
    assert [r["drop_reason"] for r in load(tmp_path / "out", "rejected")] == ["not_fixed"]


def test_not_a_stage1_dataset_is_a_clear_error(tmp_path, caplog):
    (tmp_path / "bad" / "data").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([{"text": "hello"}]), tmp_path / "bad" / "data" / "train-00000-of-00001.parquet"
    )
    assert (
        stage2.main(
            ["--input_dir", str(tmp_path / "bad"), "--backend", "scripted", "--model", str(write_rules(tmp_path))]
        )
        == 2
    )
    assert "not a unitcoder stage-1 dataset" in caplog.text


def test_push_without_repo_id_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        stage2.main(["--push"])
    assert exc.value.code == 2 and "--push needs --repo_id" in capsys.readouterr().err


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records what would be sent."""

    def __init__(self, tags=()):
        self.tags = list(tags)
        self.calls = []

    def install(self, monkeypatch):
        import huggingface_hub

        hub = self
        monkeypatch.setattr(
            huggingface_hub.HfApi,
            "create_repo",
            lambda self, repo_id, **kw: hub.calls.append(("create_repo", repo_id, kw)),
        )
        monkeypatch.setattr(
            huggingface_hub.HfApi,
            "list_repo_refs",
            lambda self, repo_id, **kw: types.SimpleNamespace(tags=[types.SimpleNamespace(name=t) for t in hub.tags]),
        )

        def upload_folder(self, **kw):
            folder = Path(kw["folder_path"])
            files = sorted(
                p.relative_to(folder).as_posix()
                for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".")
            )
            hub.calls.append(("upload_folder", kw, files, (folder / "README.md").read_text()))
            return types.SimpleNamespace(oid="c0ffee", commit_url="https://huggingface.co/datasets/me/x/commit/c0ffee")

        def create_tag(self, repo_id, **kw):
            hub.calls.append(("create_tag", repo_id, kw))
            hub.tags.append(kw["tag"])

        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_tag", create_tag)


def test_push_sends_one_commit_and_a_version_tag_and_reruns_publish_nothing(tmp_path, stage1_output, monkeypatch):
    hub = FakeHub(tags=["unitcoder-000000000000"])
    hub.install(monkeypatch)
    assert stage2.main([*args_for(tmp_path, stage1_output), "--push", "--repo_id", "me/x"]) == 0
    kinds = [c[0] for c in hub.calls]
    assert kinds == ["create_repo", "upload_folder", "create_tag"]
    _, upload, files, card = hub.calls[1]
    assert files == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "funnel.png",
        "rejected/train-00000-of-00001.parquet",
        "stats/shard-00000-of-00001.json",
    ]
    assert upload["repo_type"] == "dataset" and upload["repo_id"] == "me/x"
    tag = hub.calls[2][2]["tag"]
    assert tag.startswith("unitcoder-") and hub.calls[2][2]["revision"] == "c0ffee"
    assert "unitcoder-000000000000" in card and tag in card  # the version history
    hub.calls.clear()
    assert stage2.main([*args_for(tmp_path, stage1_output, out="again"), "--push", "--repo_id", "me/x"]) == 0
    assert [c[0] for c in hub.calls] == ["create_repo"]  # same input and settings: no new version


def test_failed_push_leaves_a_complete_local_output_and_says_what_to_do(tmp_path, stage1_output, monkeypatch, caplog):
    import huggingface_hub

    def no_token(self, repo_id, **kw):
        raise OSError("Token is required")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", no_token)
    assert stage2.main([*args_for(tmp_path, stage1_output), "--push", "--repo_id", "me/x"]) == 1
    assert "HF_TOKEN" in caplog.text and len(load(tmp_path / "out")) == 3


def cached_answers(cache: Path) -> int:
    path = cache / "requests.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_kill_9_mid_round_then_rerun_matches_an_uninterrupted_run(tmp_path, stage1_output):
    slow = [dict(rule, delay_s=0.4) for rule in RULES]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(REPO / "processing" / "stage2.py"),
        *args_for(tmp_path, stage1_output, "killed", slow),
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while cached_answers(tmp_path / "cache") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = cached_answers(tmp_path / "cache")
    assert 4 <= before < 15 and not (tmp_path / "killed" / "data").exists()  # killed mid-flow, nothing half-written
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    resumed = json.loads((tmp_path / "killed" / "stats" / "shard-00000-of-00001.json").read_text())["stats"]["usage"]
    uninterrupted = tmp_path / "fresh"
    assert stage2.main([*args_for(tmp_path, stage1_output, "fresh"), "--cache_dir", str(tmp_path / "other-cache")]) == 0
    total = json.loads((uninterrupted / "stats" / "shard-00000-of-00001.json").read_text())["stats"]["usage"]["requests"]
    assert (resumed["cached"], resumed["requests"]) == (before, total - before)  # only what was never received
    for config in ("default", "rejected"):
        killed_rows = sorted(load(tmp_path / "killed", config).to_list(), key=lambda r: r["id"])
        fresh_rows = sorted(load(uninterrupted, config).to_list(), key=lambda r: r["id"])
        for row in killed_rows + fresh_rows:
            row.pop("verify_duration_s", None)
        assert killed_rows == fresh_rows


def test_shards_split_the_input_and_write_their_own_files(tmp_path, stage1_output):
    for index in range(2):
        assert stage2.main([*args_for(tmp_path, stage1_output), "--num_shards", "2", "--shard_index", str(index)]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    ids = sorted(list(load(out)["id"]) + list(load(out, "rejected")["id"]))
    assert ids == ["a", "b", "c", "d", "e"]
