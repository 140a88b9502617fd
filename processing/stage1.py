"""Stage 1: retrieve self-contained functions that use target packages from a code corpus.

    python processing/stage1.py                                  # installed Python sources, offline
    python processing/stage1.py --source_dir DIR --limit 500
    python processing/stage1.py --input_dataset bigcode/the-stack-smol --data_dir data/python --streaming
    python processing/stage1.py --num_shards 8 --shard_index 3    # one task of a job array

Steps: extraction (``processing.steps.extract``, a parallel ``map``), selection
(``processing.steps.select``: contamination, deduplication, the define check of
``processing.steps.define`` (each kept function's code must define alone in the
sandbox; ``--skip_define_check``), ``--limit``, in input order), then unit-test generation (``processing.steps.testgen``): every kept function
goes to the model (one engine call for the whole round; ``--backend``, default the
embedded SmolLM2 via llama.cpp) and keeps the ``unittest`` module cut out of the answer
(``--skip_test_generation`` for retrieval only). Writes a Hub-layout folder
(``--output_dir``): kept functions in the ``default`` config, dropped files, functions
and unusable tests with their ``drop_reason`` in ``rejected``, and
``stats/shard-*.json`` with the funnel; ``--push --repo_id`` publishes it. Exit codes:
0 done, 1 stopped (generation, the sandbox or the push failed; rerun to resume), 2 bad
arguments or input, a missing model or no usable sandbox (nothing is written then).
"""

from __future__ import annotations

if __name__ == "__main__":
    # The card's picture is drawn by a process of its own, started before the heavy imports
    # below so that it loads matplotlib on the core they leave idle.
    from dataset_card.card import FunnelPlotter

    FunnelPlotter.start_early()

import concurrent.futures
import hashlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from tqdm.auto import tqdm

from dataset_card import funnel_plot, render_card
from dataset_card.card import FunnelPlotter, unitcoder_identity
from processing.args import EngineArgs, SandboxArgs, start_script
from processing.corpus import check_input, load_corpus, shard_corpus
from processing.dedup import Deduplicator, load_benchmarks
from processing.engine import add_stats
from processing.evalsets import benchmarks_for, check_names, needs_hub
from processing.generation import GenerationArgs, GenerationError, build_generator
from processing.globaldedup import CandidateLog, global_pass
from processing.hub import ParquetSink, hub_reachable, push_folder, shard_name
from processing.languages import LANGUAGES, PromptTemplate, get_language
from processing.packages import parse_packages
from processing.schema import EXTRACTED_FEATURES, KEPT_FEATURES, TESTED_FEATURES
from processing.schema import STAGE1_REJECTED_FEATURES as REJECTED_FEATURES
from processing.steps.define import define_batch, preload_for
from processing.steps.extract import extract_batch
from processing.steps.select import Selector
from processing.steps.testgen import generate_tests_batch
from sandbox import DEFAULT_PRELOAD, Sandbox, SandboxUnavailable, WorkerFailure, preflight

logger = logging.getLogger("stage1")
# The code whose behaviour decides which rows come out: part of the extraction's fingerprint.
CODE_VERSION_FILES = (
    "languages/python/functions.py",
    "languages/javascript/functions.py",
    "languages/javascript/syntax.py",
    "languages/common.py",
    "steps/extract.py",
    "steps/select.py",
    "steps/define.py",
    "dedup.py",
    "corpus.py",
    "evalsets.py",
)


@dataclass
class InputArgs:
    input_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset with The Stack's schema, or a local folder of parquet files",
            "aliases": ["dataset"],
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "data_dir of the Hub dataset, e.g. data/python"})
    data_files: list[str] | None = field(
        default=None, metadata={"help": "local .parquet or .jsonl files in The Stack's schema"}
    )
    split: str = field(default="train", metadata={"help": "split of the input dataset"})
    input_revision: str | None = field(
        default=None,
        metadata={"help": "revision (branch, tag, commit) of --input_dataset", "aliases": ["revision"]},
    )
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
        given = [name for name in ("input_dataset", "data_files", "source_dir") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one input, not {' and '.join('--' + g for g in given)}")
        if self.data_dir and not self.input_dataset:
            raise ValueError("--data_dir needs --input_dataset")
        if self.input_revision and not self.input_dataset:
            raise ValueError("--input_revision needs --input_dataset")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index must be in [0, {self.num_shards}), got {self.shard_index}")
        if self.max_file_bytes < 1:
            raise ValueError("--max_file_bytes must be positive")


@dataclass
class RetrievalArgs:
    language: str = field(
        default="python",
        metadata={"help": f"the corpus's language: {', '.join(LANGUAGES)} (its retrieval rules, prompts and runner)"},
    )
    packages: str | None = field(
        default=None,
        metadata={
            "help": "comma-separated target packages (import names; npm names for JavaScript); default: BigCodeBench's "
            "139 for Python, Node's built-in modules and the sandbox's npm packages for JavaScript"
        },
    )
    packages_file: str | None = field(default=None, metadata={"help": "file with one target package per line"})
    dedup_threshold: float = field(
        default=0.85, metadata={"help": "MinHash Jaccard similarity above which a function is a near duplicate"}
    )
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations"})
    shingle_size: int = field(default=5, metadata={"help": "tokens per MinHash shingle"})
    decontaminate: str | None = field(
        default=None,
        metadata={
            "help": "benchmarks to decontaminate against (default: all of the language's: humaneval,mbpp,bigcodebench "
            "for Python, MultiPL-E's humaneval,mbpp for JavaScript; all but Python's HumanEval need the Hub)"
        },
    )
    ngram: int = field(default=13, metadata={"help": "n of the n-gram overlap that marks a function contaminated"})
    file_timeout_s: float = field(
        default=10.0, metadata={"help": "seconds of analysis per file before it is dropped as timeout"}
    )

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"--language must be one of {', '.join(LANGUAGES)}, got {self.language!r}")
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
    skip_define_check: bool = field(
        default=False,
        metadata={
            "help": "keep functions without checking that their code defines alone in the sandbox (saves starting "
            "the sandbox and a few ms of CPU per kept function; about 1%% of library functions then do not even "
            "define, and fail in stage 2)"
        },
    )
    push: bool = field(default=False, metadata={"help": "publish the output folder to the Hub (needs --repo_id)"})
    allow_partial_decontamination: bool = field(
        default=False,
        metadata={
            "help": "let --push publish functions that were not checked against every benchmark unitcoder knows in "
            "the language (Python: humaneval, mbpp, bigcodebench; JavaScript: MultiPL-E's humaneval, mbpp); offline "
            "only Python's HumanEval can be checked"
        },
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for --push, e.g. user/unitcoder-stage1"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})
    dedup_only: bool = field(
        default=False,
        metadata={
            "help": "the global pass of a job array, run once all --num_shards N shards have finished: deduplicate "
            "them against one another (relabels rows in their --output_dir files, rewrites the card; reads no input)"
        },
    )

    def __post_init__(self) -> None:
        if self.dedup_only and self.push:
            raise ValueError("--dedup_only does not push: it only rewrites the local --output_dir")
        if self.push and not self.repo_id:
            raise ValueError("--push needs --repo_id (e.g. --repo_id user/unitcoder-stage1)")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError("--num_proc must be at least 1")


def code_version() -> str:
    """A hash of the files in CODE_VERSION_FILES: a code change invalidates cached extraction."""
    here = Path(__file__).parent
    digest = hashlib.sha1()
    for name in CODE_VERSION_FILES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class Plan:
    """What the arguments resolve to, checked before anything is written."""

    packages: tuple[str, ...]
    benchmarks: tuple[str, ...]
    licenses: tuple[str, ...] | None


def check_arguments(inp: InputArgs, ret: RetrievalArgs, run: RunArgs) -> Plan:
    """The cheap checks of everything the flags name (files, folders, packages, benchmarks);
    ValueError with one sentence saying what is wrong."""
    output = Path(run.output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output_dir {output} is a file; give a folder (it is created if missing)")
    check_input(source_dirs=inp.source_dir, data_files=inp.data_files, dataset=inp.input_dataset)
    if ret.language != "python":
        from sandbox.javascript import check_ready

        try:
            check_ready()  # node, tree-sitter and the npm packages: the corpus, the check and the tests need them
        except SandboxUnavailable as exc:
            raise ValueError(str(exc)) from None
    packages = parse_packages(ret.packages, ret.packages_file, ret.language)
    if ret.decontaminate is None:
        benchmarks = benchmarks_for(ret.language)
    else:
        benchmarks = tuple(n.strip() for n in ret.decontaminate.split(",") if n.strip())
    try:
        check_names(benchmarks, ret.language)
    except ValueError as exc:
        raise ValueError(f"--decontaminate names an {exc}") from None
    licenses = tuple(x.strip() for x in inp.licenses.split(",") if x.strip()) if inp.licenses else None
    return Plan(packages, benchmarks, licenses or None)


def extracted_tables(corpus, kwargs: dict, run: RunArgs, settings_hash: str, streaming: bool, ray=None):
    """Run the extraction step over the corpus and yield its output as Arrow tables, in input
    order; in blocks of ``--block_files`` files when a limit may stop the run early. With a
    Ray session, in Ray Data tasks over the cluster (still yielded in input order)."""
    if ray is not None:
        from processing.engine.ray import ordered_map

        yield from ordered_map(
            corpus, extract_batch, schema=EXTRACTED_FEATURES.arrow_schema, kwargs=kwargs, batch_size=64
        )
        return
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
    classes = (InputArgs, RetrievalArgs, GenerationArgs, RunArgs, SandboxArgs, EngineArgs)
    (inp, ret, gen, run, box, eng), command = start_script("processing/stage1.py", classes, __doc__, argv)
    if run.dedup_only:  # the job array's global pass (processing/globaldedup.py): no input, no sandbox
        return global_pass(Path(run.output_dir), inp.num_shards, shared_layout, partial(write_card, command=command))
    started = time.time()
    # The define check's sandbox starts while the input and benchmarks load (it takes a moment),
    # and the card's picture gets a process of its own (matplotlib loads there meanwhile).
    # On Ray the define check's sandboxes are actors, started once the cluster is joined.
    local = eng.engine == "local"
    starting = (
        None if run.skip_define_check or not local else _in_background(lambda: DefineCheck(box.config(ret.language)))
    )
    plotter = FunnelPlotter()
    session = None
    try:
        if not local:
            from processing.engine.ray import RaySession

            try:
                gpus = gen.tensor_parallel_size * eng.num_replicas
                session = RaySession(
                    eng.ray_address, gpus if gen.backend == "vllm" and not run.skip_test_generation else 0
                )
            except ValueError as exc:
                logger.error("%s", exc)
                return 2
            if not run.skip_define_check:  # with --limit the check runs beside extraction: on the driver
                make = DefineCheck if run.limit else lambda config: RayDefineCheck(config, session, eng)
                starting = _in_background(lambda: make(box.config(ret.language)))
        return _run(inp, ret, gen, run, command, started, starting, plotter, session, eng)
    finally:
        plotter.close()
        if session is not None:
            session.close()


def _run(inp, ret, gen, run, command, started, starting, plotter, session=None, eng=None) -> int:
    """The run after its flags are parsed (``main`` holds the helper processes around it)."""
    checker = None
    # Everything that can be wrong with the input stops the run here, before any file is written.
    try:
        plan = check_arguments(inp, ret, run)
        if run.skip_test_generation:
            generator = None
        elif session is not None:
            generator = session.start_generation(gen, eng.num_replicas)[1]
        else:
            generator = build_generator(gen)
        corpus, described = load_corpus(
            dataset=inp.input_dataset, data_dir=inp.data_dir, data_files=inp.data_files, split=inp.split,
            revision=inp.input_revision, source_dirs=inp.source_dir, streaming=inp.streaming,
            num_proc=run.num_proc, suffixes=get_language(ret.language).SUFFIXES, language=ret.language,
        )  # fmt: skip
        online = hub_reachable() if needs_hub(plan.benchmarks, ret.language) else False
        benchmarks = load_benchmarks(plan.benchmarks, ret.ngram, online, language=ret.language)
        unchecked = [name for name in benchmarks_for(ret.language) if name not in benchmarks.used]
        if run.push and unchecked and not run.allow_partial_decontamination:
            raise ValueError(
                f"not starting: --push would publish functions not checked against {', '.join(unchecked)} "
                f"({'; '.join(f'{k}: {v}' for k, v in benchmarks.skipped.items()) or 'not asked for'}); run where "
                "the Hub is reachable, or pass --allow_partial_decontamination to publish them as they are (the card "
                "and each row's decontaminated_against say what was checked)"
            )
        if starting is not None:
            checker = starting.result()  # a machine without a sandbox stops here, before any output
    except (ValueError, GenerationError, SandboxUnavailable) as exc:
        logger.error("%s", exc)
        _close_started(starting)
        return 2
    except WorkerFailure as exc:
        logger.error("the sandbox did not start (%s); fix the machine and rerun the same command", exc)
        _close_started(starting)
        return 1
    try:
        if inp.num_shards > 1:
            corpus = shard_corpus(corpus, inp.num_shards, inp.shard_index)
        logger.info(
            "input: %s; %d target packages; shard %d of %d",
            described, len(plan.packages), inp.shard_index + 1, inp.num_shards,
        )  # fmt: skip
        output = Path(run.output_dir)
        name = shard_name(inp.shard_index, inp.num_shards)
        retrieved_path = (output / ".retrieved" if generator else output / "data") / f"{name}.parquet"
        rejected_sink = ParquetSink(output / "rejected" / f"{name}.parquet", REJECTED_FEATURES)
        kept_sink = ParquetSink(retrieved_path, KEPT_FEATURES)
        stats = retrieve(corpus, plan, benchmarks, inp, ret, run, kept_sink, rejected_sink, checker, ray=session)
    except SandboxUnavailable as exc:  # a restart with more preloaded packages failed
        logger.error("%s", exc)
        return 2
    except WorkerFailure as exc:  # infrastructure, not the code's fault: stop rather than drop rows
        logger.error("the sandbox keeps failing (%s); fix the machine and rerun the same command to resume", exc)
        return 1
    finally:
        if checker is not None:
            checker.close()  # before test generation: the model may want the memory
    stats["input"], stats["input_revision"] = described, inp.input_revision
    if generator:
        try:
            stats["test_generation"] = write_tests(
                retrieved_path,
                output / "data" / f"{name}.parquet",
                rejected_sink,
                generator,
                PromptTemplate.load("unit_test", get_language(ret.language).PROMPT_DIR),
                gen.sampling_for("test"),
                ret.language,
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
    stats.update(shared_layout(stats))
    (output / "stats").mkdir(parents=True, exist_ok=True)
    (output / "stats" / f"shard-{inp.shard_index:05d}-of-{inp.num_shards:05d}.json").write_text(
        json.dumps(stats, indent=2)
    )
    write_card(output, inp.num_shards, command, plotter)
    log_funnel(stats)
    if run.push and not stats["kept"]:
        logger.error("not pushing: no function was kept, so the default config is empty (the rejected config says why)")
        return 1
    if run.push:
        try:
            what = "functions with LLM-written unit tests" if generator else "functions (retrieval only)"
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


def retrieve(
    corpus,
    plan: Plan,
    benchmarks,
    inp: InputArgs,
    ret: RetrievalArgs,
    run: RunArgs,
    kept_sink,
    rejected_sink,
    checker: DefineCheck | None = None,
    ray=None,
):
    """The extraction and selection steps (with the define check when ``checker`` is
    given), written to the sinks as they go; returns the stats."""
    kwargs = {
        "packages": plan.packages,
        "max_bytes": inp.max_file_bytes,
        "licenses": plan.licenses,
        "benchmark_ngrams": frozenset(benchmarks.hashes),
        "ngram_n": ret.ngram,
        "num_perm": ret.num_perm,
        "shingle_size": ret.shingle_size,
        "file_timeout_s": ret.file_timeout_s,
        "benchmarks": tuple(benchmarks.used),
        "language": ret.language,
    }
    ngrams_digest = hashlib.sha1(",".join(map(str, sorted(benchmarks.hashes))).encode()).hexdigest()[:12]
    settings = {k: v for k, v in kwargs.items() if k != "benchmark_ngrams"} | {
        "benchmarks": benchmarks.used,
        "benchmark_ngrams": ngrams_digest,
        "code": code_version(),
        "define_check": checker is not None,
        "define_limits": checker.limits() if checker else None,
    }
    settings_hash = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    # Without --limit every row selection keeps is checked, so the check runs once, over all of
    # them, after selection (fewer, fuller batches); with a limit it runs inside selection,
    # so that the limit counts functions that define.
    deferred = checker is not None and run.limit is None
    # A shard of a job array records its dedup candidates for the global pass (--dedup_only).
    log: CandidateLog | None = None
    if inp.num_shards > 1:
        log = CandidateLog(run.output_dir, inp.shard_index, inp.num_shards, ret.dedup_threshold, ret.num_perm)
    dedup = Deduplicator(ret.dedup_threshold, ret.num_perm)
    selector = Selector(dedup, run.limit, check=None if deferred else checker, record=log.add if log else None)
    unchecked_path = kept_sink.path.with_name(f".unchecked-{kept_sink.path.name}")
    selected_sink = ParquetSink(unchecked_path, KEPT_FEATURES) if deferred else kept_sink
    for table in tqdm(
        extracted_tables(corpus, kwargs, run, settings_hash, inp.streaming, ray), desc="selecting", unit="block"
    ):
        for sink, rows in zip((selected_sink, rejected_sink), selector.select(table)):
            if len(rows):  # an empty row group would make the file unreadable for datasets
                sink.add_table(rows)
        if selector.done:
            break
    if deferred:
        selected_sink.close()
        check_selected(unchecked_path, checker, selector, kept_sink, rejected_sink)
        unchecked_path.unlink()
    kept_sink.close()
    return selector.stats() | {
        "shard_index": inp.shard_index,
        "num_shards": inp.num_shards,
        "packages": len(plan.packages),
        "decontaminated_against": benchmarks.used,
        "decontamination_skipped": benchmarks.skipped,
        "limit_reached": selector.done,
        "settings": settings,
        "kept": selector.counts["kept"],
        "define_check": checker.summary() if checker else None,
        "dedup_candidates": log.close() if log else None,  # the side file of the global pass
    }


def check_selected(path: Path, checker: DefineCheck, selector: Selector, kept_sink, rejected_sink) -> None:
    """The define check over every function selection kept (read back from ``path``): those
    that define go to ``kept_sink``, the others to ``rejected_sink`` with their reason; the
    selector's counts follow."""
    table = pq.read_table(path)
    if not len(table):
        return
    verdicts = checker(table.select(["code"]).to_pylist())
    passing = [verdict is None for verdict in verdicts]
    kept = table.filter(pa.array(passing))
    if len(kept):
        kept_sink.add_table(kept)
    failing = [i for i, ok in enumerate(passing) if not ok]
    if failing:
        dropped = table.take(pa.array(failing, pa.int64()))
        dropped = dropped.append_column("level", pa.array(["function"] * len(failing), pa.string()))
        dropped = dropped.append_column("drop_reason", pa.array([verdicts[i][0] for i in failing], pa.string()))
        dropped = dropped.append_column("detail", pa.array([verdicts[i][1] for i in failing], pa.string()))
        rejected_sink.add_table(dropped)
        selector.counts["kept"] -= len(failing)
        selector.functions_dropped.update(verdicts[i][0] for i in failing)


def _in_background(make) -> concurrent.futures.Future:
    """``make()`` run in a thread of its own; its result (or exception) from ``.result()``."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="define-check-start")
    future = pool.submit(make)
    pool.shutdown(wait=False)
    return future


def _close_started(future: concurrent.futures.Future | None) -> None:
    """Close what a background start made, if it made anything (the run stops)."""
    if future is None:
        return
    try:
        future.result().close()
    except Exception:  # it failed to start: nothing to close
        pass


class DefineCheck:
    """Stage 1's define check as the ``Selector``'s check: each function that selection
    keeps goes through ``define_batch`` in the sandbox.

    The sandbox starts at once without preloaded packages (cheap; a machine without one
    stops the run before any output). Once the rows to check are known it is restarted
    with the sandbox's preload packages (``DEFAULT_PRELOAD``) that they import, if any:
    importing those once per worker is far cheaper than once per program.
    """

    def __init__(self, config):
        self.config = replace(config, preload=())
        self.language = config.language
        self.counts: Counter = Counter()
        self.seconds = 0.0
        self.start()

    def start(self) -> None:
        self.sandbox = Sandbox(self.config).start()
        self.verdicts: dict = {}  # shared verdicts, carried from table to table (of one configuration)

    def define(self, codes: list[str]) -> dict[str, list]:
        return define_batch({"code": codes}, sandbox=self.sandbox, verdicts=self.verdicts, language=self.language)

    def limits(self) -> dict:
        """The settings that can change a verdict (the preload follows the rows)."""
        return {k: v for k, v in self.config.fingerprint_fields().items() if k != "preload"}

    def __call__(self, rows: list[dict]) -> list[tuple[str, str] | None]:
        started = time.time()
        codes = [row["code"] for row in rows]
        wanted = preload_for(codes, DEFAULT_PRELOAD) if self.language == "python" else ()
        if not set(wanted) <= set(self.config.preload):
            preload = tuple(m for m in DEFAULT_PRELOAD if m in wanted or m in self.config.preload)
            logger.info("define check: restarting the sandbox with %s preloaded", ", ".join(preload))
            self.close()
            self.config = replace(self.config, preload=preload)
            self.start()
        out = self.define(codes)
        self.seconds += time.time() - started
        self.counts["checked"] += len(codes)
        self.counts["programs"] += len(codes) - sum(out["define_shared"])
        self.counts["dropped"] += sum(1 for r in out["drop_reason"] if r)
        self.counts.update(f"status_{s}" for s in out["define_status"] if s != "pass")
        return [(r, d) if r else None for r, d in zip(out["drop_reason"], out["detail"])]

    def summary(self) -> dict:
        return {
            "checked": self.counts["checked"],
            "programs": self.counts["programs"],
            "dropped": self.counts["dropped"],
            "dropped_by_status": {k[len("status_") :]: v for k, v in self.counts.items() if k.startswith("status_")},
            "preloaded": list(self.config.preload),
            "seconds": round(self.seconds, 2),
        }

    def close(self) -> None:
        self.sandbox.close()


class RayDefineCheck(DefineCheck):
    """The define check on a Ray cluster, once selection is done (without ``--limit``): a
    pool of sandbox actors (``--ray_workers`` of ``--ray_worker_cpus`` programs each) checks
    the rows in batches, in input order. The actors start at the first call, when
    extraction's tasks no longer need the CPUs; the sandbox is checked on the driver at
    once, so a machine without one stops at start-up."""

    def __init__(self, config, session, eng: EngineArgs):
        preflight(config)
        self.session, self.pool = session, None
        self.workers = session.workers(eng.ray_workers, eng.ray_worker_cpus)
        self.worker_cpus = eng.ray_worker_cpus
        super().__init__(config)

    def start(self) -> None:
        self.verdicts = {}

    def define(self, codes: list[str]) -> dict[str, list]:
        from processing.engine.ray import SandboxPool

        if self.pool is None:
            kwargs = {"language": self.language}
            self.pool = SandboxPool(self.session, self.config, define_batch, kwargs, self.workers, self.worker_cpus)
        size = max(8, min(512, -(-len(codes) // self.workers)))
        return self.pool.map(pa.table({"code": pa.array(codes, pa.string())}), size)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def write_tests(
    retrieved: Path,
    kept_path: Path,
    rejected_sink: ParquetSink,
    generator,
    template,
    sampling,
    language: str = "python",
) -> dict:
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
        fn_kwargs={"generator": generator, "template": template, "sampling": sampling, "language": language},
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
        "answers": len(functions) - dropped["prompt_too_long"],
        "kept": kept_sink.count,
        "dropped": dict(dropped.most_common()),
        **metadata,
        "sampling": sampling.__dict__,
        "usage": generator.usage.as_dict(),
    }


def shared_layout(stats: dict) -> dict:
    """The stats layout every stage shares: ``funnel`` ([label, count] in order) and
    ``dropped`` ({reason: count} over files, functions and tests)."""
    counts, tests = stats["counts"], stats.get("test_generation")
    funnel = [
        ["files read", counts["files"]],
        ["files dropped", sum(stats["files_dropped"].values())],
        ["functions found", counts["functions"]],
        ["functions dropped", sum(stats["functions_dropped"].values())],
        ["functions retrieved", counts["kept"]],
    ]
    dropped = Counter(stats["files_dropped"])
    dropped.update(stats["functions_dropped"])
    if tests:
        funnel += [["tests dropped", sum(tests["dropped"].values())], ["functions kept with tests", tests["kept"]]]
        dropped.update(tests["dropped"])
    return {"funnel": funnel, "dropped": dict(dropped.most_common())}


def write_card(output: Path, num_shards: int, command: str, plotter: FunnelPlotter | None = None) -> None:
    """README.md and funnel.png from every finished shard's stats (each shard of a job array
    rewrites them, so the folder is one dataset without a merge step)."""
    records = [json.loads(p.read_text()) for p in sorted((output / "stats").glob(f"shard-*-of-{num_shards:05d}.json"))]
    total: dict = {}
    for record in records:
        total = add_stats(total, {"funnel": record["funnel"], "dropped": record["dropped"]})
    first, tests = records[0], records[0].get("test_generation") or {}
    checked = [set(record["decontaminated_against"]) for record in records]
    skipped: dict = {}
    for record in records:
        skipped.update(record["decontamination_skipped"])
    for name in benchmarks_for(first["settings"].get("language", "python")):
        if checked and name not in set.intersection(*checked) and name not in skipped:
            skipped[name] = "not asked for (--decontaminate)"
    settings = {
        "input": first["input"],
        "input_revision": first.get("input_revision"),
        "unitcoder": unitcoder_identity(),
        "model": tests.get("test_model"),
        "backend": tests.get("test_backend"),
        "sampling": tests.get("sampling"),
        "prompt_hashes": {"unit_test": tests["test_prompt_hash"]} if tests else None,
        "packages": first["packages"],
        # what every shard checked; a benchmark some shard skipped is listed with its reason
        "decontaminated_against": sorted(set.intersection(*checked)) if checked else [],
        "decontamination_skipped": skipped,
    }
    kept = sum(record["kept"] for record in records)
    usage: dict = {}
    for record in records:
        if (record.get("test_generation") or {}).get("usage"):
            counts = {k: v for k, v in record["test_generation"]["usage"].items() if k != "answers_per_s"}
            usage = add_stats(usage, counts)
    stats = {
        "funnel": total["funnel"],
        "dropped": total["dropped"],
        "usage": {"test": usage} if usage else {},
        "languages": {first["settings"].get("language", "python"): counts_of_files(records)},
        "shards": len(records),
        "config_rows": {"default": kept, "rejected": sum(total["dropped"].values())},
    }
    if len(records) < num_shards:
        stats["shards_missing"] = num_shards - len(records)
    title = "unitcoder stage 1 funnel"
    if plotter is not None:
        plotter.draw(stats["funnel"], output / "funnel.png", title)
    else:
        funnel_plot(stats["funnel"], output / "funnel.png", title=title)
    card = render_card(stage="stage1", stats=stats, settings=settings, command=command)
    partial = output / ".README.md.partial"
    partial.write_text(card)
    partial.replace(output / "README.md")


def counts_of_files(records: list[dict]) -> int:
    """Files read by the finished shards (the card's count per language)."""
    return sum(record["counts"]["files"] for record in records)


def log_funnel(stats: dict) -> None:
    counts = stats["counts"]
    logger.info("files read: %d (%.1f MB)", counts["files"], counts["bytes"] / 1e6)
    for reason, n in stats["files_dropped"].items():
        logger.info("  files dropped, %s: %d", reason, n)
    logger.info("functions found: %d", counts["functions"])
    for reason, n in stats["functions_dropped"].items():
        logger.info("  functions dropped, %s: %d", reason, n)
    logger.info("functions retrieved: %d%s", counts["kept"], " (limit reached)" if stats["limit_reached"] else "")
    define = stats.get("define_check")
    if define:
        logger.info(
            "define check: %d functions, %d programs in %.1fs, %d do not define",
            define["checked"], define["programs"], define["seconds"], define["dropped"],
        )  # fmt: skip
    tests = stats.get("test_generation")
    if tests:
        logger.info("unit tests: %d functions in, %d answers", tests["functions"], tests["answers"])
        for reason, n in tests["dropped"].items():
            logger.info("  tests dropped, %s: %d", reason, n)
        logger.info("functions kept with tests: %d", tests["kept"])
    logger.info("stage 1 finished in %.1fs", stats["wall_s"])


if __name__ == "__main__":
    sys.exit(main())
