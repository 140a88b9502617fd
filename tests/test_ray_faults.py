"""A worker process of a multi-node Ray cluster killed mid-stage costs only its chunk:
Ray Data restarts the actor, the chunk runs again (its answers from the request cache),
and the output is complete and equal to an undisturbed run's."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster
from test_stage2 import GOLDEN, all_rows, expected_golden, golden_args, golden_input, shard_record  # noqa: F401

from processing import stage2


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head node of 1 CPU and a worker node of 2 CPUs, as separate raylets on this machine."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def chunk_worker_pids() -> list[int]:
    """Processes of the chunk workers (Ray names a process after its actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "_ChunkWorker" in command:
                pids.append(int(entry.name))
    return sorted(pids)


@pytest.mark.slow
def test_a_worker_killed_mid_stage_costs_only_its_chunk(tmp_path, golden_input, two_node_cluster):
    rules = tmp_path / "slow-rules.jsonl"  # slow answers keep the chunks in flight long enough
    rules.write_text("".join(
        json.dumps({**json.loads(line), "delay_s": 0.2}) + "\n" for line in (GOLDEN / "rules.jsonl").read_text().splitlines()
    ))  # fmt: skip
    flags = ["--engine", "ray", "--ray_workers", "2", "--ray_worker_cpus", "1", "--chunk_size", "2"]
    argv = golden_args(tmp_path, golden_input, "out", *flags, rules=rules)
    result: list[int] = []
    run = threading.Thread(target=lambda: result.append(stage2.main(argv)))
    run.start()
    work = tmp_path / "out" / ".work" / "shard-00000-of-00001"
    deadline = time.monotonic() + 240
    while not list(work.glob("chunk-*.json")) and time.monotonic() < deadline and run.is_alive():
        time.sleep(0.05)
    victims = chunk_worker_pids()
    assert victims and run.is_alive(), "the run ended before a worker could be killed"
    os.kill(victims[0], signal.SIGKILL)
    run.join(timeout=600)
    assert result == [0]
    assert victims[0] not in chunk_worker_pids()  # it died, and the run finished without it
    record = shard_record(tmp_path / "out")
    assert record["this_run"]["chunks_run"] == -(-record["rows"] // 2)
    assert all_rows(tmp_path / "out") == expected_golden()  # what the local engine writes (test_stage2)
