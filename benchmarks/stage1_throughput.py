"""MB/s of stage 1's whole retrieval against a single process that only ``ast.parse``s every file.

Corpus: this interpreter's standard library sources (tens of MB), copied to a temporary
folder (or ``--corpus DIR``). Both sides run as fresh processes, start-up included (the
median of ``--repeats`` runs):

* baseline: one process reads every ``.py`` file and ``ast.parse``s it, nothing more;
* unitcoder: ``python processing/stage1.py --source_dir CORPUS --num_proc 2 --skip_test_generation``
  (retrieval only) with an empty
  datasets cache (prefilter, parsing, function analysis, dedup, decontamination against
  HumanEval, the define check of every kept function in the sandbox, Hub-layout output;
  ``--skip_define_check`` times it without the check);
* optionally UnitCoder's released filter (``data_filter/filter_code_from_raw.py`` from
  github.com/Entarochuan/UnitCoder): ``--unitcoder_checkout PATH`` runs it with the same
  number of workers on the same files (converted to the JSONL it reads; the conversion
  is not timed). It needs ``astor`` installed.

    python benchmarks/stage1_throughput.py [--corpus DIR] [--num_proc 2] [--skip_define_check] [--unitcoder_checkout PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = r"""
import ast, os, sys
for root, dirs, files in os.walk(sys.argv[1]):
    for name in files:
        if name.endswith(".py"):
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            try:
                ast.parse(data)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass
"""


def stdlib_corpus(target: Path) -> Path:
    """Copy the standard library's .py files (not site-packages) into ``target``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib.rglob("*.py"):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in ("site-packages", "dist-packages") or "__pycache__" in rel.parts:
            continue
        destination = target / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    return target


def corpus_megabytes(corpus: Path) -> float:
    return sum(p.stat().st_size for p in corpus.rglob("*.py")) / 1e6


def timed(cmd: list[str], repeats: int = 1, before=None, **kwargs) -> float:
    """Median wall time of ``repeats`` runs (``before()`` resets state before each)."""
    times = []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_unitcoder_filter(checkout: Path, corpus: Path, workers: int, work: Path, repeats: int) -> tuple[float, int]:
    script = checkout / "data_filter" / "filter_code_from_raw.py"
    if not script.is_file():
        raise SystemExit(f"{script} not found: pass the root of a UnitCoder checkout")
    try:
        import astor  # noqa: F401
    except ImportError as exc:
        raise SystemExit("UnitCoder's filter needs astor: pip install astor") from exc
    inbox, outbox = work / "ucf-in", work / "ucf-out"
    inbox.mkdir()
    outbox.mkdir()
    with open(inbox / "corpus.jsonl", "w") as f:
        for path in sorted(corpus.rglob("*.py")):
            try:
                content = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            rel = str(path.relative_to(corpus))
            f.write(json.dumps({"code_id": rel, "content": content}) + "\n")
    seconds = timed(
        [sys.executable, script.name, "--input", str(inbox), "--output", str(outbox), "--n_workers", str(workers)],
        repeats,
        cwd=script.parent,
        timeout=3600,
    )
    with open(outbox / "corpus.jsonl") as f:
        functions = sum(1 for _ in f)
    return seconds, functions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=None, help="folder of .py files (default: a copy of the stdlib)")
    parser.add_argument("--num_proc", type=int, default=2, help="processes for stage 1 (and UnitCoder's filter)")
    parser.add_argument("--unitcoder_checkout", type=Path, default=None, help="root of a UnitCoder checkout")
    parser.add_argument(
        "--skip_define_check", action="store_true", help="run stage 1 without its define check (in the sandbox)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median is reported")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="unitcoder-bench-") as tmp:
        work = Path(tmp)
        corpus = args.corpus or stdlib_corpus(work / "corpus")
        megabytes = corpus_megabytes(corpus)
        files = sum(1 for _ in corpus.rglob("*.py"))
        print(f"corpus: {corpus} ({files} files, {megabytes:.1f} MB), {os.cpu_count()} cores")

        baseline_s = timed([sys.executable, "-c", BASELINE, str(corpus)], args.repeats)
        env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-cache"), "HF_HUB_OFFLINE": "1"}
        out = work / "stage1"

        def fresh() -> None:  # no cached map results, no previous output
            shutil.rmtree(work / "hf-cache", ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)

        stage1_s = timed(
            [sys.executable, str(REPO / "processing" / "stage1.py"), "--source_dir", str(corpus),
             "--output_dir", str(out), "--num_proc", str(args.num_proc), "--skip_test_generation",
             *(["--skip_define_check"] if args.skip_define_check else [])],
            args.repeats, fresh, env=env,
        )  # fmt: skip
        stats = json.loads((out / "stats" / "shard-00000-of-00001.json").read_text())
        kept = stats["counts"]["kept"]
        figures = {
            "corpus_mb": megabytes,
            "files": files,
            "baseline_mb_per_s": megabytes / baseline_s,
            "stage1_mb_per_s": megabytes / stage1_s,
            "ratio": baseline_s / stage1_s,
            "kept": kept,
            "kept_per_mb": kept / megabytes,
            "files_dropped": stats["files_dropped"],
            "functions_found": stats["counts"]["functions"],
            "functions_dropped": stats["functions_dropped"],
            "define_check": stats.get("define_check"),
        }
        print(f"ast.parse only, 1 process     : {figures['baseline_mb_per_s']:6.2f} MB/s ({baseline_s:.2f}s)")
        print(f"stage 1 retrieval, {args.num_proc} procs   : {figures['stage1_mb_per_s']:6.2f} MB/s ({stage1_s:.2f}s)")
        print(f"ratio                         : {figures['ratio']:6.2f}x")
        if args.unitcoder_checkout:
            ucf_s, ucf_functions = run_unitcoder_filter(
                args.unitcoder_checkout, corpus, args.num_proc, work, args.repeats
            )
            figures.update(
                unitcoder_mb_per_s=megabytes / ucf_s,
                unitcoder_functions=ucf_functions,
                ratio_vs_unitcoder=ucf_s / stage1_s,
            )
            print(
                f"UnitCoder data_filter, {args.num_proc} procs: {figures['unitcoder_mb_per_s']:6.2f} MB/s ({ucf_s:.2f}s, {ucf_functions} functions)"
            )
            print(f"ratio vs UnitCoder            : {figures['ratio_vs_unitcoder']:6.2f}x")
        print(f"\nyield: {kept} functions kept = {figures['kept_per_mb']:.1f} per MB")
        print(f"files dropped: {json.dumps(stats['files_dropped'])}")
        print(f"functions found: {stats['counts']['functions']}; dropped: {json.dumps(stats['functions_dropped'])}")
        define = stats.get("define_check")
        if define:
            print(
                f"define check: {define['checked']} functions, {define['programs']} sandbox programs, "
                f"{define['dropped']} do not define ({define['seconds']:.2f}s)"
            )
        else:
            print("define check: skipped")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
