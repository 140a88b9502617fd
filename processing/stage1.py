"""Stage 1: retrieve self-contained functions that use target packages from a code corpus.

    python processing/stage1.py                                  # installed Python sources, offline
    python processing/stage1.py --source_dir DIR --limit 500
    python processing/stage1.py --dataset bigcode/the-stack-smol --data_dir data/python --streaming
    python processing/stage1.py --num_shards 8 --shard_index 3    # one task of a job array

Retrieval, then unit-test generation: every kept function goes to the model (one engine
call for the whole round; ``--backend``, default the embedded SmolLM2 via llama.cpp) and
keeps the ``unittest`` module cut out of the answer (``--skip_test_generation`` for
retrieval only). Writes a Hub-layout folder (``--output_dir``): kept functions in the
``default`` config, dropped files, functions and unusable tests with their
``drop_reason`` in ``rejected``; ``--push --repo_id`` publishes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from tqdm.auto import tqdm

from processing.args import start_script
from processing.corpus import load_corpus, shard_corpus
from processing.dedup import Deduplicator, load_benchmarks
from processing.generation import GenerationArgs, GenerationError, Sampling, build_generator
from processing.hub import ParquetSink, hub_reachable, push_folder, shard_name, write_readme
from processing.packages import parse_packages
from processing.retrieval import Selector, extract_batch
from processing.schema import EXTRACTED_FEATURES, KEPT_FEATURES, TESTED_FEATURES
from processing.schema import STAGE1_REJECTED_FEATURES as REJECTED_FEATURES
from processing.languages import PromptTemplate
from processing.steps.testgen import generate_tests_batch

logger = logging.getLogger("stage1")
CODE_VERSION_FILES = ("languages/python/functions.py", "retrieval.py", "dedup.py", "corpus.py")


@dataclass
class InputArgs:
    dataset: str | None = field(
        default=None, metadata={"help": "Hub dataset with The Stack's schema, or a local folder of parquet files"}
    )
    data_dir: str | None = field(default=None, metadata={"help": "data_dir of the Hub dataset, e.g. data/python"})
    data_files: list[str] | None = field(
        default=None, metadata={"help": "local .parquet or .jsonl files in The Stack's schema"}
    )
    split: str = field(default="train", metadata={"help": "split of the input dataset"})
    revision: str | None = field(default=None, metadata={"help": "revision (branch, tag, commit) of the Hub dataset"})
    streaming: bool = field(
        default=False, metadata={"help": "stream the input instead of downloading it (for very large corpora)"}
    )
    source_dir: list[str] | None = field(
        default=None,
        metadata={"help": "folders of code, read as rows (repo = top folder, path relative, license unknown)"},
    )
    max_file_bytes: int = field(default=1_000_000, metadata={"help": "larger files are dropped as too_large"})
    licenses: str | None = field(
        default=None, metadata={"help": "comma-separated licenses to keep (e.g. mit,apache-2.0); others are dropped"}
    )
    num_shards: int = field(default=1, metadata={"help": "split the input into this many shards (job arrays)"})
    shard_index: int = field(default=0, metadata={"help": "which shard this run processes, 0-based"})

    def __post_init__(self) -> None:
        given = [name for name in ("dataset", "data_files", "source_dir") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one input, not {' and '.join('--' + g for g in given)}")
        if self.data_dir and not self.dataset:
            raise ValueError("--data_dir needs --dataset")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index must be in [0, {self.num_shards}), got {self.shard_index}")
        if self.max_file_bytes < 1:
            raise ValueError("--max_file_bytes must be positive")


@dataclass
class RetrievalArgs:
    packages: str | None = field(
        default=None, metadata={"help": "comma-separated target packages (import names); default: BigCodeBench's 139"}
    )
    packages_file: str | None = field(default=None, metadata={"help": "file with one target package per line"})
    dedup_threshold: float = field(
        default=0.85, metadata={"help": "MinHash Jaccard similarity above which a function is a near duplicate"}
    )
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations"})
    shingle_size: int = field(default=5, metadata={"help": "tokens per MinHash shingle"})
    decontaminate: str = field(
        default="humaneval,mbpp,bigcodebench",
        metadata={"help": "benchmarks to decontaminate against (MBPP and BigCodeBench need the Hub)"},
    )
    ngram: int = field(default=13, metadata={"help": "n of the n-gram overlap that marks a function contaminated"})
    file_timeout_s: float = field(
        default=10.0, metadata={"help": "seconds of analysis per file before it is dropped as timeout"}
    )

    def __post_init__(self) -> None:
        if not 0 < self.dedup_threshold <= 1:
            raise ValueError("--dedup_threshold must be in (0, 1]")
        if self.ngram < 4:
            raise ValueError("--ngram must be at least 4")


@dataclass
class RunArgs:
    output_dir: str = field(default="outputs/stage1", metadata={"help": "output folder (Hub layout)"})
    limit: int | None = field(default=None, metadata={"help": "stop after this many kept functions"})
    num_proc: int | None = field(
        default=None, metadata={"help": "processes for the extraction map (non-streaming input)"}
    )
    block_files: int = field(default=4096, metadata={"help": "files per extraction step when --limit is set"})
    skip_test_generation: bool = field(default=False, metadata={"help": "retrieval only: no LLM, no test_code column"})
    push: bool = field(default=False, metadata={"help": "publish the output folder to the Hub (needs --repo_id)"})
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for --push, e.g. user/unitcoder-stage1"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ValueError("--push needs --repo_id (e.g. --repo_id user/unitcoder-stage1)")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError("--num_proc must be at least 1")


def code_version() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha1()
    for name in CODE_VERSION_FILES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


def extracted_tables(corpus, kwargs: dict, run: RunArgs, settings_hash: str, streaming: bool):
    """Yield the extraction map's output as Arrow tables; in blocks when a limit may stop early."""
    columns = list(corpus.column_names)
    if streaming:
        mapped = corpus.map(
            extract_batch, batched=True, fn_kwargs=kwargs, remove_columns=columns, features=EXTRACTED_FEATURES
        )
        for batch in mapped.iter(batch_size=1024):
            yield pa.Table.from_pydict(batch, schema=EXTRACTED_FEATURES.arrow_schema)
        return
    total = len(corpus)
    block = total if run.limit is None else max(1, run.block_files)
    for start in range(0, total, max(block, 1)):
        part = corpus.select(range(start, min(total, start + block))) if block < total else corpus
        num_proc = run.num_proc if run.num_proc and len(part) >= 2 * run.num_proc else None
        fingerprint = hashlib.sha1(f"{part._fingerprint}:{settings_hash}".encode()).hexdigest()
        out = part.map(
            extract_batch,
            batched=True,
            batch_size=64,
            fn_kwargs=kwargs,
            remove_columns=columns,
            features=EXTRACTED_FEATURES,
            num_proc=num_proc,
            new_fingerprint=fingerprint,
            desc="extracting functions",
        )
        yield from out.with_format("arrow").iter(batch_size=4096)


def main(argv: list[str] | None = None) -> int:
    classes = (InputArgs, RetrievalArgs, GenerationArgs, RunArgs)
    (inp, ret, gen, run), _ = start_script("processing/stage1.py", classes, __doc__, argv)
    started = time.time()
    generator = None
    if not run.skip_test_generation:
        try:  # a missing model or unreachable server stops the run before any work
            generator = build_generator(gen)
        except GenerationError as exc:
            logger.error("%s", exc)
            return 2
    output = Path(run.output_dir)
    name = shard_name(inp.shard_index, inp.num_shards)
    retrieved_path = (output / ".retrieved" if generator else output / "data") / f"{name}.parquet"
    rejected_sink = ParquetSink(output / "rejected" / f"{name}.parquet", REJECTED_FEATURES)
    stats, described, packages = retrieve(inp, ret, run, ParquetSink(retrieved_path, KEPT_FEATURES), rejected_sink)
    if generator:
        template = PromptTemplate.load("unit_test")
        try:
            stats["test_generation"] = write_tests(
                retrieved_path,
                output / "data" / f"{name}.parquet",
                rejected_sink,
                generator,
                template,
                Sampling.from_args(gen),
            )
        except GenerationError as exc:
            logger.error("generation stopped: %s; rerun the same command to resume (answers received are cached)", exc)
            return 1
        retrieved_path.unlink()  # the functions now live in data/ (with tests) or rejected/
        try:
            retrieved_path.parent.rmdir()
        except OSError:
            pass  # another shard of the job array is still using it
        stats["kept"] = stats["test_generation"]["kept"]
    rejected_sink.close()
    stats["wall_s"] = round(time.time() - started, 2)
    (output / "stats").mkdir(parents=True, exist_ok=True)
    (output / "stats" / f"shard-{inp.shard_index:05d}-of-{inp.num_shards:05d}.json").write_text(
        json.dumps(stats, indent=2)
    )
    what = "functions with LLM-written unit tests" if generator else "functions (retrieval only)"
    write_readme(
        output,
        "unitcoder stage 1: " + what,
        f"Self-contained Python functions that use target packages, retrieved from {described} "
        f"by unitcoder stage 1 ({len(packages)} target packages){'' if not generator else ', each with a `test_code` module of unittest tests written by ' + generator.model_id}. "
        "The `rejected` config holds every dropped file and function with its `drop_reason`.",
    )
    log_funnel(stats)
    if run.push:
        try:
            url = push_folder(output, run.repo_id, f"stage 1: {stats['kept']} {what} from {described}")
        except Exception as exc:
            logger.error(
                "push to %s failed (%s: %s); the local output in %s is complete",
                run.repo_id,
                type(exc).__name__,
                exc,
                output,
            )
            return 1
        logger.info("pushed to %s", url)
    return 0


def retrieve(inp: InputArgs, ret: RetrievalArgs, run: RunArgs, kept_sink: ParquetSink, rejected_sink: ParquetSink):
    """The retrieval steps; returns (stats, input description, target packages)."""
    packages = parse_packages(ret.packages, ret.packages_file)
    names = tuple(n.strip() for n in ret.decontaminate.split(",") if n.strip())
    needs_hub = any(n != "humaneval" for n in names)
    benchmarks = load_benchmarks(names, ret.ngram, hub_reachable() if needs_hub else False)
    corpus, described = load_corpus(
        dataset=inp.dataset, data_dir=inp.data_dir, data_files=inp.data_files, split=inp.split,
        revision=inp.revision, source_dirs=inp.source_dir, streaming=inp.streaming,
        num_proc=run.num_proc,
    )  # fmt: skip
    if inp.num_shards > 1:
        corpus = shard_corpus(corpus, inp.num_shards, inp.shard_index)
    logger.info(
        "input: %s; %d target packages; shard %d of %d", described, len(packages), inp.shard_index + 1, inp.num_shards
    )
    licenses = tuple(x.strip() for x in inp.licenses.split(",") if x.strip()) if inp.licenses else None
    kwargs = {
        "packages": packages,
        "max_bytes": inp.max_file_bytes,
        "licenses": licenses,
        "benchmark_ngrams": frozenset(benchmarks.hashes),
        "ngram_n": ret.ngram,
        "num_perm": ret.num_perm,
        "shingle_size": ret.shingle_size,
        "file_timeout_s": ret.file_timeout_s,
    }
    settings = {k: v for k, v in kwargs.items() if k != "benchmark_ngrams"} | {
        "benchmarks": benchmarks.used,
        "code": code_version(),
    }
    settings_hash = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    selector = Selector(Deduplicator(ret.dedup_threshold, ret.num_perm), run.limit, kept_sink, rejected_sink)
    for table in tqdm(
        extracted_tables(corpus, kwargs, run, settings_hash, inp.streaming), desc="selecting", unit="block"
    ):
        selector.consume(table)
        if selector.done:
            break
    kept_sink.close()
    stats = selector.stats() | {
        "shard_index": inp.shard_index,
        "num_shards": inp.num_shards,
        "input": described,
        "packages": len(packages),
        "decontaminated_against": benchmarks.used,
        "decontamination_skipped": benchmarks.skipped,
        "limit_reached": selector.done,
        "settings": settings,
        "kept": selector.counts["kept"],
    }
    return stats, described, packages


def write_tests(retrieved: Path, kept_path: Path, rejected_sink: ParquetSink, generator, template, sampling) -> dict:
    """Test generation over all retrieved functions: one generation call, then parse each answer."""
    functions = Dataset(pq.read_table(retrieved))
    metadata = {
        "test_model": generator.model_id,
        "test_backend": generator.backend.name,
        "test_prompt_hash": template.hash,
    }
    fingerprint = hashlib.sha1(
        json.dumps([metadata, sampling.__dict__, str(retrieved.stat().st_mtime_ns)]).encode()
    ).hexdigest()
    with_tests = functions.map(
        generate_tests_batch,
        batched=True,
        batch_size=None,  # the whole round in one engine call
        fn_kwargs={"generator": generator, "template": template, "sampling": sampling},
        new_fingerprint=fingerprint,
        keep_in_memory=True,
        desc="writing unit tests",
    )
    kept_sink = ParquetSink(kept_path, TESTED_FEATURES)
    dropped: Counter = Counter()
    for row in with_tests:
        reason = row["test_drop_reason"]
        if reason:
            dropped[reason] += 1
            rejected_sink.add({**row, "level": "function", "drop_reason": reason, "detail": row["test_detail"]})
        else:
            kept_sink.add({**row, **metadata})
    kept_sink.close()
    return {
        "functions": len(functions),
        "answers": len(functions) - dropped["no_answer"],
        "kept": kept_sink.count,
        "dropped": dict(dropped.most_common()),
        **metadata,
        "sampling": sampling.__dict__,
        "usage": generator.usage.__dict__,
    }


def log_funnel(stats: dict) -> None:
    counts = stats["counts"]
    logger.info("files read: %d (%.1f MB)", counts["files"], counts["bytes"] / 1e6)
    for reason, n in stats["files_dropped"].items():
        logger.info("  files dropped, %s: %d", reason, n)
    logger.info("functions found: %d", counts["functions"])
    for reason, n in stats["functions_dropped"].items():
        logger.info("  functions dropped, %s: %d", reason, n)
    logger.info("functions retrieved: %d%s", counts["kept"], " (limit reached)" if stats["limit_reached"] else "")
    tests = stats.get("test_generation")
    if tests:
        logger.info("unit tests: %d functions in, %d answers", tests["functions"], tests["answers"])
        for reason, n in tests["dropped"].items():
            logger.info("  tests dropped, %s: %d", reason, n)
        logger.info("functions kept with tests: %d", tests["kept"])
    logger.info("stage 1 finished in %.1fs", stats["wall_s"])


if __name__ == "__main__":
    sys.exit(main())
