"""The Ray engine (``--engine ray``) on a local Ray: the same rows as the local engine,
resume from the request cache, start-up errors, vLLM replicas through a stand-in, and a
real model behind the OpenAI-compatible llama.cpp server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from test_llama import llama_server  # noqa: F401
from test_stage1 import ANSWERS, OFFLINE, isolated_cache, real_sources, scripted_run, stack_rows  # noqa: F401
from test_stage2 import (  # noqa: F401
    GOLDEN,
    all_rows,
    args_for,
    expected_golden,
    golden_args,
    golden_input,
    load,
    shard_record,
    stage1_output,
    usage_of,
)

from processing import stage1, stage2
from processing.engine.ray import RaySession, replica_options
from processing.generation import GenerationArgs, Sampling

REPO = Path(__file__).resolve().parents[1]
RAY_FLAGS = ["--engine", "ray", "--ray_workers", "2", "--ray_worker_cpus", "1", "--chunk_size", "4"]
GPUS = 2  # logical GPUs of the test Ray: the vLLM stand-in's replicas ask for them


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray of 2 CPUs (and 2 logical GPUs) for the module: starting one takes
    seconds. Its workers can import the vLLM stand-in, which logs to ``VLLM_STANDIN_LOG``."""
    log = tmp_path_factory.mktemp("vllm") / "standin.jsonl"
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        num_gpus=GPUS,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests" / "standins"), "VLLM_STANDIN_LOG": str(log)}},
    )
    yield log
    ray.shutdown()


@pytest.fixture(scope="module")
def golden_local(tmp_path_factory):
    """The golden input and the local engine's run of it (chunks of 4), shared by the tests
    that compare the Ray engine with it."""
    root = tmp_path_factory.mktemp("golden-local")
    folder = root / "golden-in"
    (folder / "data").mkdir(parents=True)
    rows = [
        {**json.loads(line), "decontaminated_against": ["humaneval", "mbpp", "bigcodebench"]}
        for line in (GOLDEN / "input.jsonl").read_text().splitlines()
    ]
    pq.write_table(pa.Table.from_pylist(rows[:7]), folder / "data" / "train-00000-of-00002.parquet", row_group_size=2)
    pq.write_table(pa.Table.from_pylist(rows[7:]), folder / "data" / "train-00001-of-00002.parquet", row_group_size=2)
    assert stage2.main(golden_args(root, folder, "local", "--chunk_size", "4")) == 0
    return root, folder


def test_stage2_on_ray_writes_the_rows_the_local_engine_writes(tmp_path, golden_local, local_ray):
    root, golden_in = golden_local
    assert stage2.main(golden_args(tmp_path, golden_in, "ray", *RAY_FLAGS)) == 0
    assert all_rows(tmp_path / "ray") == all_rows(root / "local")
    local, remote = shard_record(root / "local"), shard_record(tmp_path / "ray")
    for key in ("funnel", "dropped", "packages"):
        assert remote[key] == local[key]
    assert remote["this_run"]["chunks_run"] == -(-remote["rows"] // 4)  # every chunk of 4 rows ran on Ray
    for step, usage in local["usage"].items():  # the workers' counts add up to the local run's
        assert remote["usage"][step]["requests"] + remote["usage"][step]["cached"] == usage["requests"]
    assert (tmp_path / "ray" / "README.md").read_text().count("verified") > 0


def test_a_ray_run_resumes_from_the_request_cache_of_a_local_run(tmp_path, golden_local, local_ray):
    root, golden_in = golden_local
    first = usage_of(root / "local")
    assert first["requests"] > 0
    again = golden_args(tmp_path, golden_in, "second", *RAY_FLAGS)
    again[again.index("--cache_dir") + 1] = str(root / "cache-local")  # the local run's cache
    assert stage2.main(again) == 0
    second = usage_of(tmp_path / "second")
    assert second["requests"] == 0 and second["cached"] == first["requests"] + first["cached"]
    assert all_rows(tmp_path / "second") == all_rows(root / "local")


@pytest.mark.slow
def test_a_rerun_skips_the_chunks_a_killed_driver_wrote(tmp_path, golden_input, local_ray):
    rules = tmp_path / "slow-rules.jsonl"  # slow answers: the driver is killed with chunks in flight
    rules.write_text("".join(
        json.dumps({**json.loads(line), "delay_s": 0.15}) + "\n" for line in (GOLDEN / "rules.jsonl").read_text().splitlines()
    ))  # fmt: skip
    argv = golden_args(tmp_path, golden_input, "out", *RAY_FLAGS, rules=rules)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(
        [sys.executable, str(REPO / "processing" / "stage2.py"), *argv],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    work = tmp_path / "out" / ".work" / "shard-00000-of-00001"
    deadline = time.monotonic() + 180
    while not list(work.glob("chunk-*.json")) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    written = len(list(work.glob("chunk-*.json")))
    assert written >= 1 and not (tmp_path / "out" / "data").exists()  # killed mid-run
    assert stage2.main(argv) == 0
    record = shard_record(tmp_path / "out")
    assert record["this_run"]["chunks_skipped"] == written
    assert record["this_run"]["chunks_run"] == -(-record["rows"] // 4) - written
    assert all_rows(tmp_path / "out") == expected_golden()  # what the local engine writes (test_stage2)


def test_vllm_replicas_are_gpu_actors_built_with_the_engine_arguments(local_ray, tmp_path):
    session = RaySession(None, gpus_needed=GPUS)
    try:
        args = GenerationArgs(
            backend="vllm", model="org/coder-7b", generation_chunk=3, vllm_args='{"dtype": "bfloat16"}',
            cache_dir=str(tmp_path / "cache"),
        )  # fmt: skip
        assert replica_options(args) == {"num_gpus": 1, "num_cpus": 1, "max_restarts": -1, "max_task_retries": -1}
        _, generator = session.start_generation(args, replicas=2)
        conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(7)]
        answers = generator.generate(conversations, Sampling(n=2, seed=10, max_tokens=8), step="fix")
    finally:
        session.close()
    assert [[a.split(":")[0] for a in row] for row in answers] == [["echo seed=10", "echo seed=11"]] * 7
    assert all(answer.endswith(f"question {i}") for i, row in enumerate(answers) for answer in row)
    assert generator.model_id == "org/coder-7b" and generator.by_step["fix"].requests == 14
    events = [json.loads(line) for line in local_ray.read_text().splitlines()]
    engines = [e for e in events if e["event"] == "engine"]
    assert len(engines) == 2 and len({e["pid"] for e in engines}) == 2  # two replicas, two processes
    assert len({tuple(e["gpus"]) for e in engines}) == 2 and all(len(e["gpus"]) == 1 for e in engines)
    assert all(
        e["model"] == "org/coder-7b"
        and e["engine_args"]
        == {
            "tensor_parallel_size": 1, "max_model_len": None, "gpu_memory_utilization": 0.9,
            "enable_prefix_caching": True, "seed": 0, "dtype": "bfloat16",
        }
        for e in engines
    )  # fmt: skip
    calls = [e for e in events if e["event"] == "chat"]
    assert all(c["prompts"] <= 3 for c in calls) and sum(c["prompts"] for c in calls) == 14
    assert {e["pid"] for e in calls} == {e["pid"] for e in engines}  # both replicas answered


def test_vllm_without_enough_gpus_stops_at_start_up(tmp_path, stage1_output, local_ray, caplog):
    argv = [
        "--input_dir", str(stage1_output), "--output_dir", str(tmp_path / "out"), "--engine", "ray",
        "--backend", "vllm", "--model", "org/m", "--num_replicas", "3", "--cache_dir", str(tmp_path / "c"),
    ]  # fmt: skip
    assert stage2.main(argv) == 2
    assert "has 2 GPUs but --backend vllm needs 3" in caplog.text
    assert not (tmp_path / "out").exists()


def test_an_unreachable_cluster_stops_at_start_up_in_one_sentence(tmp_path, stage1_output):
    command = [
        sys.executable, str(REPO / "processing" / "stage2.py"), "--input_dir", str(stage1_output),
        "--output_dir", str(tmp_path / "out"), "--engine", "ray", "--ray_address", "127.0.0.1:1",
        "--backend", "scripted", "--model", str(tmp_path / "none.jsonl"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_embedded_model_behind_llama_cpp_server_on_ray_ends_every_id_once(
    tmp_path, stage1_output, local_ray, llama_server
):
    argv = [
        "--input_dir", str(stage1_output), "--output_dir", str(tmp_path / "out"), "--engine", "ray",
        "--ray_workers", "2", "--ray_worker_cpus", "1", "--chunk_size", "2", "--backend", "openai",
        "--base_url", llama_server, "--model", "smollm2", "--rounds", "1", "--samples", "1", "--max_tokens", "96",
        "--skip_quality", "--cache_dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert stage2.main(argv) == 0
    ids = [r["id"] for r in load(tmp_path / "out", "default")] + [r["id"] for r in load(tmp_path / "out", "rejected")]
    assert sorted(ids) == ["a", "b", "c", "d", "e"]
    assert usage_of(tmp_path / "out")["requests"] > 0  # the model was asked, through the service


# --------------------------------------------------------------------------- stage 1


def stage1_rows(out: Path) -> dict[str, list[dict]]:
    """Every row of both configs, in file order."""
    return {
        folder: [row for path in sorted((out / folder).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
        for folder in ("data", "rejected")
    }


def test_stage1_on_ray_keeps_and_rejects_what_the_local_engine_does(real_sources, tmp_path, local_ray):
    """Extraction in Ray tasks, the define check in sandbox actors: the same rows, in the same order."""
    common = [*OFFLINE, "--source_dir", str(real_sources), "--sandbox_workers", "1"]
    assert stage1.main([*common, "--output_dir", str(tmp_path / "local")]) == 0
    assert stage1.main([*common, "--output_dir", str(tmp_path / "ray"), *RAY_FLAGS[:6]]) == 0
    local, remote = stage1_rows(tmp_path / "local"), stage1_rows(tmp_path / "ray")
    assert len(local["data"]) >= 10 and remote == local
    stats = json.loads((tmp_path / "ray" / "stats" / "shard-00000-of-00001.json").read_text())
    dropped = sum(r["drop_reason"] == "does_not_define" for r in local["rejected"])
    assert stats["define_check"]["checked"] == len(local["data"]) + dropped  # every kept row went through it


def test_javascript_stage1_on_ray_keeps_and_rejects_what_the_local_engine_does(tmp_path, local_ray):
    """JavaScript retrieval in Ray tasks and its define check (node) in sandbox actors."""
    from sandbox.javascript import check_ready

    try:
        check_ready()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no JavaScript sandbox here: {exc}")
    from test_javascript_pipeline import write_sources

    common = ["--language", "javascript", "--source_dir", str(write_sources(tmp_path)), "--skip_test_generation"]
    common += ["--sandbox_workers", "1"]
    assert stage1.main([*common, "--output_dir", str(tmp_path / "local")]) == 0
    assert stage1.main([*common, "--output_dir", str(tmp_path / "ray"), *RAY_FLAGS[:6]]) == 0
    local, remote = stage1_rows(tmp_path / "local"), stage1_rows(tmp_path / "ray")
    assert len(local["data"]) == 4 and remote == local
    assert {r["language"] for r in local["data"] + local["rejected"]} == {"javascript"}
    stats = json.loads((tmp_path / "ray" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["define_check"]["checked"] == 4


def test_stage1_tests_written_through_the_ray_service_match_the_local_run(tmp_path, local_ray):
    for name in ("local", "ray"):
        (tmp_path / name).mkdir()
    assert scripted_run(tmp_path / "local", ANSWERS) == 0
    assert scripted_run(tmp_path / "ray", ANSWERS, *RAY_FLAGS[:6]) == 0
    local, remote = stage1_rows(tmp_path / "local" / "out"), stage1_rows(tmp_path / "ray" / "out")
    assert [r["id"] for r in local["data"]] == [r["id"] for r in remote["data"]] and local["data"]
    assert [r["test_code"] for r in local["data"]] == [r["test_code"] for r in remote["data"]]
    assert [(r["id"], r["drop_reason"]) for r in local["rejected"]] == [
        (r["id"], r["drop_reason"]) for r in remote["rejected"]
    ]


def test_a_near_duplicate_split_across_two_input_files_is_removed_on_ray(real_sources, tmp_path, local_ray):
    rows = stack_rows(real_sources)
    body = (
        "import os\n\n\ndef collect(root, suffix, skip_hidden=True, limit=None):\n    found = []\n"
        "    for name in sorted(os.listdir(root)):\n        if skip_hidden and name.startswith('.'):\n"
        "            continue\n        path = os.path.join(root, name)\n"
        "        if name.endswith(suffix) and os.path.isfile(path):\n            found.append(path)\n"
        "        elif os.path.isdir(path):\n            found.extend(collect(path, suffix, skip_hidden, limit))\n"
        "        if limit is not None and len(found) >= limit:\n            return found[:limit]\n    return found\n"
    )
    first = {**rows[0], "content": body, "max_stars_repo_path": "first/walk.py", "hexsha": "a" * 40}
    second = {**rows[1], "content": body.replace("startswith('.')", "startswith('_')"), "hexsha": "b" * 40}
    second["max_stars_repo_path"] = "second/walk.py"
    pq.write_table(pa.Table.from_pylist([first, *rows[2:10]]), tmp_path / "part-1.parquet")
    pq.write_table(pa.Table.from_pylist([*rows[10:20], second]), tmp_path / "part-2.parquet")
    files = ["--data_files", str(tmp_path / "part-1.parquet"), str(tmp_path / "part-2.parquet")]
    assert stage1.main([*OFFLINE, *files, "--output_dir", str(tmp_path / "out"), *RAY_FLAGS[:6]]) == 0
    out = stage1_rows(tmp_path / "out")
    assert [r["path"] for r in out["data"] if r["function_name"] == "collect"] == ["first/walk.py"]
    copy = next(r for r in out["rejected"] if r["path"] == "second/walk.py" and r["level"] == "function")
    assert copy["drop_reason"] == "near_duplicate"
    assert copy["detail"] == "copy of " + next(r["id"] for r in out["data"] if r["path"] == "first/walk.py")


def test_a_streamed_corpus_on_ray_gives_the_rows_of_a_local_run(real_sources, tmp_path, local_ray):
    pq.write_table(pa.Table.from_pylist(stack_rows(real_sources)), tmp_path / "stack.parquet")
    common = [*OFFLINE, "--data_files", str(tmp_path / "stack.parquet"), "--skip_define_check"]
    assert stage1.main([*common, "--output_dir", str(tmp_path / "local")]) == 0
    assert stage1.main([*common, "--output_dir", str(tmp_path / "ray"), "--streaming", *RAY_FLAGS[:6]]) == 0
    local = stage1_rows(tmp_path / "local")
    assert local["data"] and stage1_rows(tmp_path / "ray") == local


def test_javascript_rows_mixed_with_python_rows_on_ray_give_the_local_rows(tmp_path, local_ray):
    """A chunk holding both languages: each part gets its language's prompts and sandbox on
    a Ray worker, as in a local run."""
    from sandbox.javascript import check_ready

    try:
        check_ready()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no JavaScript sandbox here: {exc}")
    from test_javascript_pipeline import EXT_TESTS, RULES, SLUG_TESTS

    py_tests = (
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(neg(2), -2)\n"
    )
    rows = [
        {"id": "js-ok", "language": "javascript", "function_name": "slugify", "test_code": SLUG_TESTS,
         "code": "const _ = require('lodash');\n\nfunction slugify(title) {\n  return _.kebabCase(title);\n}\n"},
        {"id": "js-fix", "language": "javascript", "function_name": "extOf", "test_code": EXT_TESTS,
         "code": "import path from 'node:path';\n\nfunction extOf(file) {\n  return path.basename(file);\n}\n"},
        {"id": "py-ok", "language": "python", "function_name": "neg", "test_code": py_tests,
         "code": "def neg(a):\n    return -a\n"},
    ]  # fmt: skip
    (tmp_path / "in" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "rules.jsonl").write_text("\n".join(json.dumps(r) for r in RULES) + "\n")

    def args(out: str, *extra: str) -> list[str]:
        return [
            "--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / out), "--backend", "scripted",
            "--model", str(tmp_path / "rules.jsonl"), "--cache_dir", str(tmp_path / f"cache-{out}"), "--rounds", "1",
            "--samples", "1", "--skip_refine", "--max_mutants", "3", "--no_confirm", "--sandbox_workers", "1", *extra,
        ]  # fmt: skip

    assert stage2.main(args("local")) == 0
    assert stage2.main(args("ray", "--engine", "ray", "--ray_workers", "1", "--ray_worker_cpus", "1")) == 0
    remote = all_rows(tmp_path / "ray")
    assert remote == all_rows(tmp_path / "local")
    verified = {r["id"]: r for r in remote if r["config"] == "default"}
    assert sorted(verified) == ["js-fix", "js-ok", "py-ok"]
    assert verified["js-fix"]["fix_rounds"] == 1 and "path.extname" in verified["js-fix"]["code"]
    assert shard_record(tmp_path / "ray")["languages"] == {"javascript": 2, "python": 1}
