"""Stage 2 on the Ray engine against the local engine, in one run, on this machine.

Input: ``stage2_scale.py``'s rows (HumanEval's canonical programs with their tests and the
heavy-import prefix, every tenth broken), ``--rows`` of them. Both engines run stage 2 as
a user runs it (``python processing/stage2.py --rounds 0 --skip_refine --skip_quality
--no_confirm``, no generation: verification, the test guard, the published-form check and
the writing; the second opinion is left out because its fresh interpreter per row, the
same work on either engine, would be most of the time),
with the same chunks and the same number of sandbox programs at a time:

* local: one process, ``--sandbox_workers W``;
* ray: ``--engine ray`` with a local Ray started by the run, ``--ray_workers W
  --ray_worker_cpus 1`` (W actors, each with a sandbox of one worker).

Printed: rows/s of each, their ratio, where the Ray run's extra time goes (starting Ray,
the actors' start-up, shipping chunks through the object store), whether both wrote the
same rows, and an estimate on paper of a 500K-function run on a cluster from the measured
rows/s per sandbox CPU and an answers/s per GPU replica you give (``--replica_answers_per_s``;
measure it with ``benchmarks/generation_throughput.py`` on the GPU you will use).

    python benchmarks/ray_engine.py [--rows 3000] [--workers 2] [--chunk_size 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage2_scale import rows_of, write_input  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"stage 2 failed (exit {code}); see {log}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start


def ray_overheads(workers: int) -> dict:
    """Seconds to start a local Ray, and to run a no-op Ray Data pipeline of ``workers`` actors."""
    probe = f"""
import time, json
t = time.perf_counter()
import ray, ray.data
imported = time.perf_counter() - t
t = time.perf_counter()
ray.init(include_dashboard=False, logging_level="ERROR")
started = time.perf_counter() - t
class Noop:
    def __call__(self, batch):
        return batch
t = time.perf_counter()
ray.data.from_items([{{"i": i}} for i in range({workers * 4})]).map_batches(Noop, batch_size=1, concurrency={workers}, num_cpus=1).take_all()
pipeline = time.perf_counter() - t
print(json.dumps({{"import_s": imported, "init_s": started, "noop_pipeline_s": pipeline}}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000, help="input rows")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox programs at a time")
    parser.add_argument("--chunk_size", type=int, default=500, help="stage 2's --chunk_size (both engines)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    estimate = parser.add_argument_group("the estimate on paper of a large run")
    estimate.add_argument("--functions", type=int, default=500_000)
    estimate.add_argument("--cluster_cpus", type=int, default=256, help="sandbox CPUs of the cluster")
    estimate.add_argument("--gpus", type=int, default=8)
    estimate.add_argument("--tensor_parallel_size", type=int, default=1, help="GPUs per replica (a 7B model: 1)")
    estimate.add_argument(
        "--replica_answers_per_s",
        type=float,
        default=None,
        help="answers/s of one vLLM replica at your sampling settings (measured on your GPU); without it the "
        "estimate gives the generation time per 1 answer/s",
    )
    estimate.add_argument("--answers_per_function", type=float, default=4.6,
                          help="LLM answers per function: 1 test + 1 refine + fix samples (e.g. 40%% failing x 3 "
                          "samples x ~2.2 rounds)")  # fmt: skip
    estimate.add_argument(
        "--programs_per_function", type=float, default=None,
        help="sandbox programs per function relative to this benchmark's run (default: 3, for fix rounds, refine "
        "and its re-verification; about 20 more with the quality step)",
    )  # fmt: skip
    args = parser.parse_args()
    figures: dict = {"rows": args.rows, "workers": args.workers, "chunk_size": args.chunk_size}
    print(f"stage 2, {args.rows} rows, {args.workers} sandbox programs at a time, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        write_input(root / "in", args.rows)
        rules = root / "no-answers.jsonl"
        rules.write_text("")

        def command(out: str, *extra: str) -> list[str]:
            return [
                sys.executable, str(REPO / "processing" / "stage2.py"), "--input_dir", str(root / "in"),
                "--output_dir", str(root / out), "--rounds", "0", "--skip_refine", "--skip_quality", "--no_confirm",
                "--backend", "scripted", "--model", str(rules), "--cache_dir", str(root / f"cache-{out}"),
                "--chunk_size", str(args.chunk_size), *extra,
            ]  # fmt: skip

        local_s = timed(command("local", "--sandbox_workers", str(args.workers)), root / "local.log")
        ray_s = timed(
            command("ray", "--engine", "ray", "--ray_workers", str(args.workers), "--ray_worker_cpus", "1"),
            root / "ray.log",
        )
        same = rows_of(root / "local") == rows_of(root / "ray")
        overheads = ray_overheads(args.workers)
    local_rate, ray_rate = args.rows / local_s, args.rows / ray_s
    figures |= {
        "local_s": local_s, "ray_s": ray_s, "local_rows_per_s": local_rate, "ray_rows_per_s": ray_rate,
        "ratio": ray_rate / local_rate, "identical_rows": same, "ray_overheads": overheads,
    }  # fmt: skip
    print(f"  local engine: {local_rate:7.1f} rows/s ({local_s:.1f}s)")
    print(f"  ray engine:   {ray_rate:7.1f} rows/s ({ray_s:.1f}s)")
    print(f"  ray / local:  {ray_rate / local_rate:.2f}x; rows {'identical' if same else 'DIFFERENT'}")
    fixed = overheads["import_s"] + overheads["init_s"] + overheads["noop_pipeline_s"]
    print(
        f"  where the difference goes: importing Ray {overheads['import_s']:.1f}s, starting a local Ray "
        f"{overheads['init_s']:.1f}s, a no-op pipeline of {args.workers} actors {overheads['noop_pipeline_s']:.1f}s "
        f"(together {fixed:.1f}s of the {ray_s - local_s:+.1f}s); the rest is each actor starting its own sandbox, "
        "the chunks' rows through the object store, and the Ray processes sharing the same cores"
    )

    # ------------------------------------------------------------------ on paper
    per_cpu = local_rate / args.workers  # rows/s per sandbox CPU, this benchmark's work per row
    programs = args.programs_per_function or 3.0
    sandbox_hours = args.functions * programs / (per_cpu * args.cluster_cpus) / 3600
    replicas = max(1, args.gpus // args.tensor_parallel_size)
    answers = args.functions * args.answers_per_function
    print(f"\n  on paper, {args.functions:,} functions:")
    print(
        f"    sandbox: {per_cpu:.1f} rows/s per CPU measured here x {args.cluster_cpus} CPUs, {programs:g}x this "
        f"run's programs per function -> {sandbox_hours:.2f} h"
    )
    if args.replica_answers_per_s:
        gen_hours = answers / (args.replica_answers_per_s * replicas) / 3600
        print(
            f"    generation: {answers:,.0f} answers / ({args.replica_answers_per_s:g} answers/s x {replicas} replicas) "
            f"-> {gen_hours:.2f} h; the stage takes about the longer of the two ({max(gen_hours, sandbox_hours):.2f} h), "
            "since the engine overlaps them"
        )
        figures["estimate"] = {"sandbox_h": sandbox_hours, "generation_h": gen_hours, "replicas": replicas}
    else:
        print(
            f"    generation: {answers:,.0f} answers over {replicas} replicas = {answers / replicas / 3600:,.0f} h at "
            "1 answer/s per replica; divide by your replica's measured answers/s (--replica_answers_per_s)"
        )
        figures["estimate"] = {"sandbox_h": sandbox_hours, "replicas": replicas}
    figures["estimate"] |= {"rows_per_s_per_cpu": per_cpu, "answers": answers}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
