"""The Ray engine (``--engine ray``) on a local Ray: the same rows as the local engine,
resume, faults, start-up errors, and vLLM replicas through stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from processing import stage2  # noqa: E402
from test_stage2 import all_rows, golden_args, golden_input, shard_record  # noqa: E402,F401

RAY_FLAGS = ["--engine", "ray", "--ray_workers", "2", "--ray_worker_cpus", "1", "--chunk_size", "4"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (starting one takes seconds)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_stage2_on_ray_writes_the_rows_the_local_engine_writes(tmp_path, golden_input, local_ray):
    assert stage2.main(golden_args(tmp_path, golden_input, "local", "--chunk_size", "4")) == 0
    assert stage2.main(golden_args(tmp_path, golden_input, "ray", *RAY_FLAGS)) == 0
    assert all_rows(tmp_path / "ray") == all_rows(tmp_path / "local")
    local, remote = shard_record(tmp_path / "local"), shard_record(tmp_path / "ray")
    assert remote["funnel"] == local["funnel"] and remote["dropped"] == local["dropped"]
    assert (tmp_path / "ray" / "README.md").read_text().count("verified") >= 1
