"""Stage 2 end to end: every branch with a scripted model, versioned push, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from conftest import FakeHub
from processing import stage2
from processing.languages import PromptTemplate
from processing.schema import QUALITY

REPO = Path(__file__).resolve().parents[1]
ALL_BENCHMARKS = ("humaneval", "mbpp", "bigcodebench")


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
            "decontaminated_against": list(ALL_BENCHMARKS),
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
    assert sorted(verified) + sorted(rejected) == ["a", "b", "c", "d", "e"]
    assert (verified["a"]["fix_rounds"], verified["a"]["refined"]) == (0, True)  # passed at once, refined
    assert (verified["b"]["fix_rounds"], verified["b"]["code"].strip().endswith("return a - b")) == (2, True)
    assert [a["status"] for a in verified["b"]["attempts"]] == ["fail"] * 3 + ["pass"] * 3
    assert verified["b"]["original_code"] == ROWS[1][2]
    # the refined "neg" fails its tests: refine failed, so the row is rejected (the default config is refined code)
    assert (
        rejected["d"]["drop_reason"] == "refine_failed" and "does not pass its tests (fail)" in rejected["d"]["detail"]
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
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"] == f"```python\n{row['code']}```"


def test_card_has_the_funnel_its_picture_and_valid_yaml(tmp_path, stage1_output):
    import yaml

    assert stage2.main(args_for(tmp_path, stage1_output)) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == ["default", "rejected"] and header["license"] == "mit"
    assert "| fixed in round 2 | 1 |" in card and "| `vacuous_tests` | 1 |" in card and "![funnel](funnel.png)" in card
    assert "--cache_dir" in card  # the command line
    sampling = '{"max_tokens": 2048, "n": 1, "seed": 0, "stop": [], "temperature": 0.5, "top_p": 0.95}'
    assert f'"fix": {sampling}, "refine": {sampling}' in card  # per step, UnitCoder's defaults
    assert all(PromptTemplate.load(name).hash in card for name in ("fix", "refine"))
    assert (tmp_path / "out" / "funnel.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Generation" in card and "| fix | " in card and "| refine | " in card  # the model's work per step
    assert "Language: python (5 input rows)" in card and "python" in header["tags"]  # rows without one are Python
    assert {row["language"] for row in load(tmp_path / "out").to_list()} == {"python"}


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
        "quality.png",
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
    assert "HF_TOKEN" in caplog.text and len(load(tmp_path / "out")) == 2


def cached_answers(cache: Path) -> int:
    path = cache / "requests.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def usage_of(out: Path) -> dict:
    """The generation counts of a run, summed over its LLM steps."""
    per_step = json.loads((out / "stats" / "shard-00000-of-00001.json").read_text())["usage"]
    return {key: sum(step[key] for step in per_step.values()) for key in ("requests", "cached", "failed")}


def test_kill_9_mid_round_then_rerun_matches_an_uninterrupted_run(tmp_path, stage1_output):
    slow = [dict(rule, delay_s=0.25) for rule in RULES]
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
    resumed = usage_of(tmp_path / "killed")
    uninterrupted = tmp_path / "fresh"
    assert stage2.main([*args_for(tmp_path, stage1_output, "fresh"), "--cache_dir", str(tmp_path / "other-cache")]) == 0
    total = usage_of(uninterrupted)["requests"]
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


# --------------------------------------------------------------------------- the rebuild: golden rows, chunks, resume

GOLDEN = REPO / "tests" / "data" / "stage2_golden"
# The golden rows predate the quality step: it runs in its own test (test_quality.py), on the same input.
GOLDEN_FLAGS = [
    "--samples", "3", "--rounds", "2", "--keep_variants", "2", "--sandbox_timeout", "3", "--keep_unrefined",
    "--skip_quality",
]  # fmt: skip


@pytest.fixture
def golden_input(tmp_path) -> Path:
    folder = tmp_path / "golden-in"
    (folder / "data").mkdir(parents=True)
    rows = [
        {**json.loads(line), "decontaminated_against": list(ALL_BENCHMARKS)}
        for line in (GOLDEN / "input.jsonl").read_text().splitlines()
    ]
    # two files with small row groups: chunks cut across files and row groups
    pq.write_table(pa.Table.from_pylist(rows[:7]), folder / "data" / "train-00000-of-00002.parquet", row_group_size=2)
    pq.write_table(pa.Table.from_pylist(rows[7:]), folder / "data" / "train-00001-of-00002.parquet", row_group_size=2)
    return folder


def golden_args(tmp_path: Path, input_dir: Path, out: str, *extra: str, rules: Path | None = None) -> list[str]:
    return [
        "--input_dir", str(input_dir), "--output_dir", str(tmp_path / out), "--backend", "scripted",
        "--model", str(rules or GOLDEN / "rules.jsonl"), "--cache_dir", str(tmp_path / f"cache-{out}"),
        "--sandbox_workers", "2", *GOLDEN_FLAGS, *extra,
    ]  # fmt: skip


def all_rows(out: Path) -> list[dict]:
    """Both configs read from the parquet files, sorted by id, without timings."""
    rows = []
    for config, folder in (("default", "data"), ("rejected", "rejected")):
        for path in sorted((out / folder).glob("train-*.parquet")):
            for row in pq.read_table(path).to_pylist():
                row.pop("verify_duration_s", None)
                for column in QUALITY:
                    row.pop(column)
                rows.append({**row, "config": config})
    return sorted(rows, key=lambda r: r["id"])


def expected_golden() -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / "expected.jsonl").read_text().splitlines()]


def test_the_rebuilt_stage_2_writes_the_rows_the_old_one_wrote(tmp_path, golden_input):
    assert stage2.main(golden_args(tmp_path, golden_input, "out")) == 0
    assert all_rows(tmp_path / "out") == expected_golden()
    # every published pair, as published, passes its tests in a plain fresh interpreter (not our sandbox)
    published = [r for r in all_rows(tmp_path / "out") if r["config"] == "default"]
    assert published
    for row in published:
        script = tmp_path / f"published_{row['id']}.py"
        script.write_text(row["prompt"] + row["completion"] + "\n\n" + row["test_code"] + "\n\nunittest.main()\n")
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (row["id"], result.stderr[-2000:])


def test_chunks_and_shards_do_not_change_any_row(tmp_path, golden_input):
    for index in range(2):
        argv = golden_args(tmp_path, golden_input, "out", "--chunk_size", "2", "--num_shards", "2")
        assert stage2.main([*argv, "--shard_index", str(index)]) == 0
    assert all_rows(tmp_path / "out") == expected_golden()


def shard_record(out: Path, index: int = 0, count: int = 1) -> dict:
    return json.loads((out / "stats" / f"shard-{index:05d}-of-{count:05d}.json").read_text())


def test_kill_9_mid_chunk_then_rerun_redoes_only_unfinished_chunks(tmp_path, golden_input):
    rules = tmp_path / "slow.jsonl"
    slow = [dict(json.loads(line), delay_s=0.15) for line in (GOLDEN / "rules.jsonl").read_text().splitlines()]
    rules.write_text("".join(json.dumps(r) + "\n" for r in slow))
    argv = golden_args(tmp_path, golden_input, "killed", "--chunk_size", "3", rules=rules)
    command = [sys.executable, str(REPO / "processing" / "stage2.py"), *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / ".work" / "shard-00000-of-00001" / "chunk-00001.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (tmp_path / "killed" / "data").exists()  # two chunks done, no shard file yet
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    resumed = shard_record(tmp_path / "killed")["this_run"]
    assert resumed["chunks_skipped"] >= 2
    assert resumed["rows_run"] == 11 - 3 * resumed["chunks_skipped"]  # only the unfinished chunks' rows
    assert all_rows(tmp_path / "killed") == expected_golden()
    assert not (tmp_path / "killed" / ".work").exists()


def test_a_rerun_with_a_changed_setting_stops_unless_overwrite(tmp_path, golden_input, caplog):
    assert stage2.main(golden_args(tmp_path, golden_input, "out", "--rounds", "0", "--skip_refine")) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert stage2.main(golden_args(tmp_path, golden_input, "out")) == 2
    assert "other settings" in caplog.text and "--overwrite" in caplog.text
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before  # untouched
    assert stage2.main(golden_args(tmp_path, golden_input, "out", "--overwrite")) == 0
    assert all_rows(tmp_path / "out") == expected_golden()


def test_the_same_command_after_a_finished_run_redoes_nothing(tmp_path, golden_input):
    argv = golden_args(tmp_path, golden_input, "out", "--chunk_size", "4")
    assert stage2.main(argv) == 0
    first = shard_record(tmp_path / "out")
    assert stage2.main(argv) == 0
    assert shard_record(tmp_path / "out") == first and all_rows(tmp_path / "out") == expected_golden()


def test_stale_shards_of_another_num_shards_are_never_read(tmp_path, golden_input, caplog):
    for index in range(2):  # two of three shards: stale files of another --num_shards
        assert (
            stage2.main([*golden_args(tmp_path, golden_input, "out", "--num_shards", "3"), "--shard_index", str(index)])
            == 0
        )
    assert stage2.main([*golden_args(tmp_path, golden_input, "out", "--num_shards", "2"), "--shard_index", "0"]) == 2
    assert "another --num_shards" in caplog.text
    for index in range(2):
        argv = [
            *golden_args(tmp_path, golden_input, "out", "--num_shards", "2", "--overwrite"),
            "--shard_index",
            str(index),
        ]
        assert stage2.main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "out").rglob("*.parquet"))
    assert all("-of-00002" in name for name in names) and all_rows(tmp_path / "out") == expected_golden()


def test_two_shards_merge_into_one_card_that_adds_up(tmp_path, golden_input):
    argv = golden_args(tmp_path, golden_input, "out", "--num_shards", "2")
    assert stage2.main([*argv, "--shard_index", "1"]) == 0
    assert not (tmp_path / "out" / "README.md").exists()  # shard 0 is still missing: no card yet
    assert stage2.main(["--merge", "--output_dir", str(tmp_path / "out")]) == 1  # and --merge says so
    assert stage2.main([*argv, "--shard_index", "0"]) == 0  # the last shard writes the card
    card = (tmp_path / "out" / "README.md").read_text()
    single = tmp_path / "single"
    assert stage2.main(golden_args(tmp_path, golden_input, "single")) == 0
    expected_card = (single / "README.md").read_text()
    for line in [row for row in expected_card.splitlines() if row.startswith("| ") and "`" not in row.split("|")[1]]:
        if line.startswith(("| fix |", "| refine |")):  # the Generation table: counts add up, timings do not
            line = line.rsplit("|", 3)[0]
        assert line in card  # funnel rows, e.g. "| input rows | 11 |", sum to the unsharded run's
    assert "| input rows | 11 |" in card and "| `no_tests` | 1 |" in card
    (tmp_path / "out" / "README.md").unlink()
    assert stage2.main(["--merge", "--output_dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "README.md").read_text() == card


def test_merge_and_push_publish_one_version_for_all_shards(tmp_path, golden_input, monkeypatch):
    hub = FakeHub()
    hub.install(monkeypatch)
    argv = golden_args(tmp_path, golden_input, "out", "--num_shards", "2", "--push", "--repo_id", "me/x")
    assert stage2.main([*argv, "--shard_index", "0"]) == 0
    assert hub.calls == []  # not every shard is done: nothing pushed
    assert stage2.main([*argv, "--shard_index", "1"]) == 0
    ((_, _, files, card),) = [c for c in hub.calls if c[0] == "upload_folder"]
    assert "data/train-00000-of-00002.parquet" in files and "data/train-00001-of-00002.parquet" in files
    assert not any(f.startswith(".work") for f in files) and "| input rows | 11 |" in card


def test_rows_the_second_opinion_does_not_confirm_are_rejected(tmp_path, stage1_output):
    table = pq.read_table(stage1_output / "data" / "train-00000-of-00001.parquet").to_pylist()[:1]  # "a": add
    aware = "import sys\n\ndef add(a, b):\n    return a + b if 'zygote' in ' '.join(sys.argv) else 0\n"
    table[0]["code"] = aware  # passes only under the zygote's runner
    pq.write_table(pa.Table.from_pylist(table), stage1_output / "data" / "train-00000-of-00001.parquet")
    assert stage2.main([*args_for(tmp_path, stage1_output), "--skip_refine", "--skip_quality"]) == 0
    (row,) = load(tmp_path / "out", "rejected")
    assert row["drop_reason"] == "confirm_disagrees" and row["code"] == aware
    # the quality step's own fresh-interpreter run (another hash seed and test order) catches it first
    assert stage2.main([*args_for(tmp_path, stage1_output, out="measured"), "--skip_refine"]) == 0
    assert [r["drop_reason"] for r in load(tmp_path / "measured", "rejected")] == ["flaky_tests"]
    unconfirmed = [*args_for(tmp_path, stage1_output, out="unconfirmed"), "--skip_refine", "--no_confirm"]
    assert stage2.main([*unconfirmed, "--skip_quality"]) == 0
    assert [r["id"] for r in load(tmp_path / "unconfirmed")] == ["a"]
