"""Stage 2: verify, fix, guard, refine and publish the verified set.

    python processing/stage2.py                                   # reads outputs/stage1 (stage 1's default)
    python processing/stage2.py --push --repo_id user/unitcoder   # and publishes a tagged version
    python processing/stage2.py --num_shards 4 --shard_index 2     # one task of a job array
    python processing/stage2.py --merge --output_dir D             # the card (and --push) of finished shards

Every input id ends in exactly one row: in ``default`` (verified) or in ``rejected``
(with its ``drop_reason``). The work is step functions over batches of columns
(``processing/steps``) run chunk by chunk by the local engine (``processing/engine``):
each finished chunk is written at once, and generation goes through the request cache,
so after a kill the same command redoes at most the chunk in flight and asks the model
only for answers it never received. Exit codes: 0 done, 1 stopped (rerun the same
command to resume), 2 bad arguments, input or output folder, or a missing component.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dataset_card import funnel_plot, render_card
from dataset_card.card import package_versions, quality_plot, unitcoder_identity
from processing.args import EngineArgs, SandboxArgs, start_script
from processing.engine import ChunkOutput, ChunksDeferred, LocalEngine, add_stats, completed_shards
from processing.evalsets import BENCHMARKS as DECONTAMINATION_BENCHMARKS
from processing.generation import AnswersMissing, GenerationArgs, GenerationError, Sampling, build_generator
from processing.hub import InputTable, publish_version, rows_digest
from processing.languages import LANGUAGES, PromptTemplate, get_language
from processing.schema import STAGE2_INPUT_COLUMNS, STAGE2_REJECTED_FEATURES, VERIFIED_FEATURES
from processing.steps.fix import fix_round_batch, give_up_batch
from processing.steps.format import check_published_batch, format_batch
from processing.steps.guard import guard_batch
from processing.steps.quality import empty_quality, quality_batch
from processing.steps.refine import refine_batch
from processing.steps.strengthen import strengthen_batch
from processing.steps.verify import verify_batch
from sandbox import Sandbox, SandboxUnavailable, WorkerFailure, preflight

logger = logging.getLogger("stage2")
# Rejections of rows that had passed their tests (by the guard, refine or the published-form check).
REJECTED_AFTER_PASSING = frozenset(
    {
        "vacuous_tests",
        "refine_failed",
        "flaky_tests",
        "weak_tests",
        "published_form_mismatch",
        "published_form_fails",
        "confirm_disagrees",
    }
)


@dataclass
class Stage2Args:
    input_dir: str = field(default="outputs/stage1", metadata={"help": "a local stage-1 output (Hub layout)"})
    input_dataset: str | None = field(
        default=None, metadata={"help": "a stage-1 dataset on the Hub (repo id), instead of --input_dir"}
    )
    input_revision: str | None = field(
        default=None, metadata={"help": "revision (tag, branch, commit) of --input_dataset"}
    )
    output_dir: str = field(default="outputs/stage2", metadata={"help": "output folder (Hub layout)"})
    samples: int = field(default=3, metadata={"help": "k: fix samples per failing pair per round"})
    rounds: int = field(default=3, metadata={"help": "N: fix rounds at most"})
    keep_variants: int = field(default=1, metadata={"help": "m: passing variants kept per pair (the paper kept 2)"})
    skip_refine: bool = field(
        default=False, metadata={"help": "do not refine passing code (the default config then holds unrefined code)"}
    )
    keep_unrefined: bool = field(
        default=False,
        metadata={
            "help": "keep a row whose refine failed, with its verified unrefined code (by default it is rejected "
            "as refine_failed: the default config holds refined code, as the paper trains on)"
        },
    )
    no_confirm: bool = field(
        default=False,
        metadata={
            "help": "publish without the second opinion (every published row is otherwise re-run in a fresh "
            "interpreter with an independent test driver, and rejected as confirm_disagrees if it does not pass "
            "there); the published form still runs once in the sandbox"
        },
    )
    skip_quality: bool = field(
        default=False,
        metadata={"help": "do not measure test strength (mutation score, coverage, flakiness); the columns stay empty"},
    )
    max_mutants: int = field(default=20, metadata={"help": "mutants per verified row at most (a seeded sample)"})
    min_mutation_score: float = field(
        default=0.0, metadata={"help": "reject rows whose mutation score is lower as weak_tests (0: measure only)"}
    )
    min_line_coverage: float = field(
        default=0.0,
        metadata={"help": "reject rows whose tests cover less of the function's lines as weak_tests (0: measure only)"},
    )
    quality_seed: int = field(default=0, metadata={"help": "seed of the mutant sample and of the flakiness run"})
    strengthen_rounds: int = field(
        default=0,
        metadata={
            "help": "rounds in which the model adds tests that kill surviving mutants (kept only if they pass on "
            "the code and kill a survivor in the sandbox; existing tests are never edited)"
        },
    )
    limit: int | None = field(default=None, metadata={"help": "use only the first N input rows"})
    chunk_size: int = field(
        default=2048,
        metadata={"help": "rows per chunk: one generation call per round per chunk; each chunk is written when done"},
    )
    num_shards: int = field(default=1, metadata={"help": "split the input into this many shards (job arrays)"})
    shard_index: int = field(default=0, metadata={"help": "which shard this run processes, 0-based"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace another run's output found in --output_dir instead of stopping"}
    )
    merge: bool = field(
        default=False,
        metadata={"help": "only write the card of a finished sharded run in --output_dir (and --push it)"},
    )
    push: bool = field(default=False, metadata={"help": "publish to the Hub as a tagged version (needs --repo_id)"})
    allow_partial_decontamination: bool = field(
        default=False,
        metadata={
            "help": "let --push publish rows that were not checked against every benchmark unitcoder knows "
            f"({', '.join(DECONTAMINATION_BENCHMARKS)}); offline, stage 1 checks HumanEval only"
        },
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for --push, e.g. user/unitcoder-python"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ValueError("--push needs --repo_id (e.g. --repo_id user/unitcoder-python)")
        if self.samples < 1 or self.rounds < 0 or self.keep_variants < 1:
            raise ValueError("need --samples >= 1, --rounds >= 0 and --keep_variants >= 1")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index must be in [0, {self.num_shards}), got {self.shard_index}")
        if self.chunk_size < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError("--chunk_size and --limit must be at least 1")
        if self.strengthen_rounds < 0:
            raise ValueError("--strengthen_rounds must be at least 0")
        if self.strengthen_rounds and self.skip_quality:
            raise ValueError("--strengthen_rounds needs the quality step's surviving mutants: drop --skip_quality")
        if self.max_mutants < 1:
            raise ValueError("--max_mutants must be at least 1")
        if not (0 <= self.min_mutation_score <= 1 and 0 <= self.min_line_coverage <= 1):
            raise ValueError("--min_mutation_score and --min_line_coverage must be between 0 and 1")
        if self.skip_quality and (self.min_mutation_score or self.min_line_coverage):
            raise ValueError("--min_mutation_score and --min_line_coverage need the quality step: drop --skip_quality")


def open_input(args: Stage2Args) -> InputTable:
    """Stage-1 rows, read in slices (a local folder's parquet files directly: no stale cache)."""
    if args.input_dataset:
        source = InputTable.hub(args.input_dataset, args.input_revision)
    else:
        source = InputTable.local(args.input_dir)
        if source is None:
            raise ValueError(
                f"no stage-1 output in {args.input_dir} (expected data/train-*.parquet); run processing/stage1.py first"
            )
    missing = [c for c in STAGE2_INPUT_COLUMNS if c not in source.column_names]
    if missing:
        raise ValueError(f"the input lacks {', '.join(missing)}: it is not a unitcoder stage-1 dataset with tests")
    return source.limit(args.limit)


# --------------------------------------------------------------------------- the work on one chunk


def chunk_counts(batch: dict[str, list], rounds_run: list[int]) -> dict:
    """The funnel, drop reasons and package coverage of one finished chunk."""
    state = batch["state"]
    verified_at = Counter(  # every row that passed its tests once, whatever a later step decided
        batch["fix_rounds"][i]
        for i, s in enumerate(state)
        if s == "passing" or batch["drop_reason"][i] in REJECTED_AFTER_PASSING
    )
    counts = {"input": len(state), "passed_first_try": verified_at[0]}
    counts |= {f"fixed_in_round_{r}": verified_at[r] for r in rounds_run}
    dropped = Counter(batch["drop_reason"][i] for i, s in enumerate(state) if s != "passing")
    counts |= {
        "vacuous_tests": dropped["vacuous_tests"],
        "refined": sum(bool(batch["refined"][i]) for i, s in enumerate(state) if s == "passing"),
        "refine_failed": dropped["refine_failed"],
        "published_form_rejected": dropped["published_form_mismatch"] + dropped["published_form_fails"],
        "confirm_disagrees": dropped["confirm_disagrees"],
        "flaky_tests": dropped["flaky_tests"],
        "weak_tests": dropped["weak_tests"],
        "verified": sum(s == "passing" for s in state),
    }
    packages = Counter(p for i, s in enumerate(state) if s == "passing" for p in (batch["packages"][i] or []))
    licenses = sorted({lic for lics in batch["licenses"] for lic in (lics or [])})
    checked = Counter(
        ",".join(sorted(batch["decontaminated_against"][i] or [])) for i, s in enumerate(state) if s == "passing"
    )
    return {
        "counts": counts,
        "quality": quality_counts(batch),
        "dropped": dict(dropped),
        "packages": dict(packages),
        "licenses": dict.fromkeys(licenses, 1),
        "decontamination": dict(checked),
    }


QUALITY_BINS = 10  # histogram bins of the scores over 0..1


def quality_counts(batch: dict[str, list]) -> dict:
    """Sums and histograms of the published rows' scores (they add up over chunks and shards)."""
    out: dict = {}
    for column in ("mutation_score", "line_coverage", "branch_coverage"):
        values = [
            batch[column][i] for i, s in enumerate(batch["state"]) if s == "passing" and batch[column][i] is not None
        ]
        bins = [0] * QUALITY_BINS
        for value in values:
            bins[min(QUALITY_BINS - 1, int(value * QUALITY_BINS))] += 1
        out[column] = {
            "rows": len(values),
            "sum": round(sum(values), 6),
            "bins": {str(b): n for b, n in enumerate(bins)},
        }
    return out


def split_rows(batch: dict[str, list]) -> dict[str, dict[str, list]]:
    keep = [i for i, s in enumerate(batch["state"]) if s == "passing"]
    drop = [i for i, s in enumerate(batch["state"]) if s != "passing"]
    return {
        "default": {k: [v[i] for i in keep] for k, v in batch.items()},
        "rejected": {k: [v[i] for i in drop] for k, v in batch.items()},
    }


class Sandboxes:
    """One sandbox per language the rows are in, started when first needed (Python's at once)."""

    def __init__(self, config):
        self.config = config
        self.started: dict[str, Sandbox] = {}

    def start(self, language: str = "python") -> Sandbox:
        if language not in self.started:
            config = (
                self.config if language == self.config.language else dataclasses.replace(self.config, language=language)
            )
            if not config.has_second_opinion:  # the second opinion and the preload are Python's
                config = dataclasses.replace(config, confirm=False, preload=())
            self.started[language] = Sandbox(config).start()
        return self.started[language]

    def close(self) -> None:
        for sandbox in self.started.values():
            sandbox.close()
        self.started.clear()


def process_chunk(
    batch: dict[str, list], *, args: Stage2Args, generator, sandboxes: Sandboxes, templates: dict,
    sampling: dict[str, Sampling],
) -> ChunkOutput:  # fmt: skip
    """Every stage-2 step on one chunk of input columns, the rows of each language with that
    language's rules, prompts and sandbox (a row without a ``language`` is Python)."""
    for optional in ("repo", "path", "licenses", "packages", "decontaminated_against", "language"):
        batch.setdefault(optional, [None] * len(batch["id"]))
    batch["language"] = [language or "python" for language in batch["language"]]
    languages = sorted(set(batch["language"]))
    if len(languages) == 1:
        return _process_language(
            batch, languages[0], args=args, generator=generator, sandbox=sandboxes.start(languages[0]),
            templates=templates[languages[0]], sampling=sampling,
        )  # fmt: skip
    rows: dict[str, dict[str, list]] = {}
    stats: dict = {}
    for language in languages:
        keep = [i for i, each in enumerate(batch["language"]) if each == language]
        part = _process_language(
            {k: [v[i] for i in keep] for k, v in batch.items()}, language, args=args, generator=generator,
            sandbox=sandboxes.start(language), templates=templates[language], sampling=sampling,
        )  # fmt: skip
        for config, columns in part.rows.items():
            merged = rows.setdefault(config, {})
            for name, values in columns.items():
                merged.setdefault(name, []).extend(values)
        stats = add_stats(stats, part.stats)
    return ChunkOutput(rows, stats)


def _process_language(
    batch: dict[str, list], language: str, *, args: Stage2Args, generator, sandbox, templates: dict,
    sampling: dict[str, Sampling],
) -> ChunkOutput:  # fmt: skip
    usage_before = {step: asdict(usage) for step, usage in generator.by_step.items()}
    batch = verify_batch(batch, sandbox=sandbox)
    rounds_run = []
    for round_ in range(1, args.rounds + 1):
        if "failing" not in batch["state"]:
            break
        batch = fix_round_batch(
            batch, round_=round_, generator=generator, sandbox=sandbox, template=templates["fix"], sampling=sampling["fix"],
            samples=args.samples, keep_variants=args.keep_variants, language=language,
        )  # fmt: skip
        rounds_run.append(round_)
    batch = give_up_batch(batch)
    batch = guard_batch(batch, sandbox=sandbox, language=language)
    if not args.skip_refine:
        batch = refine_batch(
            batch, generator=generator, sandbox=sandbox, template=templates["refine"], sampling=sampling["refine"],
            keep_unrefined=args.keep_unrefined, language=language,
        )  # fmt: skip
    if args.skip_quality:
        batch = empty_quality(batch)
    else:

        def strengthen(rows: dict, round_: int, survivors: dict) -> tuple[dict, set[int]]:
            return strengthen_batch(
                rows, generator=generator, sandbox=sandbox, template=templates["strengthen"],
                sampling=sampling["strengthen"], round_=round_, survivors=survivors, language=language,
            )  # fmt: skip

        batch = quality_batch(
            batch, sandbox=sandbox, max_mutants=args.max_mutants, seed=args.quality_seed,
            min_mutation_score=args.min_mutation_score, min_line_coverage=args.min_line_coverage, language=language,
            strengthen=strengthen if args.strengthen_rounds else None, strengthen_rounds=args.strengthen_rounds,
            guard=lambda rows: guard_batch(rows, sandbox=sandbox, language=language),
        )  # fmt: skip
    batch = format_batch(batch, language=language)
    # the second opinion is Python's independent driver; other languages have none
    confirm = not args.no_confirm and sandbox.config.has_second_opinion
    batch = check_published_batch(batch, sandbox=sandbox, confirm=confirm)
    stats = chunk_counts(batch, rounds_run)
    stats["languages"] = {language: len(batch["id"])}
    stats["usage"] = {
        step: {k: v - usage_before.get(step, {}).get(k, 0) for k, v in asdict(usage).items()}
        for step, usage in generator.by_step.items()
    }
    return ChunkOutput(split_rows(batch), stats)


# --------------------------------------------------------------------------- settings, card, versions


def run_settings(args: Stage2Args, described: str, generator, sampling: dict[str, Sampling], templates, config) -> dict:
    """Everything that changes what a run writes (its fingerprint), plus package versions."""
    return {
        "input": described,
        "input_revision": args.input_revision,
        "limit": args.limit,
        "model": generator.model_id,
        "backend": generator.backend.name,
        "sampling": {step: asdict(each) for step, each in sampling.items()},
        "samples": args.samples,
        "rounds": args.rounds,
        "keep_variants": args.keep_variants,
        "refine": not args.skip_refine,
        "keep_unrefined": args.keep_unrefined,
        "confirm": not args.no_confirm,
        "quality": None
        if args.skip_quality
        else {
            "max_mutants": args.max_mutants,
            "seed": args.quality_seed,
            "min_mutation_score": args.min_mutation_score,
            "min_line_coverage": args.min_line_coverage,
            "strengthen_rounds": args.strengthen_rounds,
            "operators": {name: list(get_language(name).MUTATION_OPERATORS) for name in LANGUAGES},
        },
        "prompt_hashes": {
            language: {name: template.hash for name, template in each.items()} for language, each in templates.items()
        },
        "sandbox": config.fingerprint_fields() | {"preload": list(config.preload)},
    }


def fingerprint_of(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def funnel_rows(counts: dict, rounds: int) -> list[tuple[str, int]]:
    rows = [("input rows", counts["input"]), ("passed at first try", counts["passed_first_try"])]
    rows += [
        (f"fixed in round {i}", counts[f"fixed_in_round_{i}"])
        for i in range(1, rounds + 1)
        if f"fixed_in_round_{i}" in counts
    ]
    rows += [
        ("vacuous tests (rejected)", counts["vacuous_tests"]),
        ("refined", counts["refined"]),
        ("refine failed (rejected)", counts.get("refine_failed", 0)),
        ("flaky tests (rejected)", counts.get("flaky_tests", 0)),
        ("weak tests (rejected)", counts.get("weak_tests", 0)),
        ("published form failed (rejected)", counts.get("published_form_rejected", 0)),
        ("not confirmed by a second run (rejected)", counts.get("confirm_disagrees", 0)),
        ("verified", counts["verified"]),
    ]
    return rows


def shared_layout(total: dict, rounds: int) -> dict:
    """The stats layout every stage shares (``funnel``, ``dropped``, ...) from summed chunk counts."""
    return {
        "funnel": funnel_rows(total["counts"], rounds),
        "dropped": dict(Counter(total.get("dropped", {})).most_common()),
        "packages": dict(Counter(total.get("packages", {})).most_common()),
        "usage": total.get("usage", {}),
        "languages": total.get("languages", {}),
        "quality": total.get("quality", {}) if any(q.get("rows") for q in total.get("quality", {}).values()) else {},
    }


def version_tag(fingerprint: str, rows: str) -> str:
    """A version is named after the settings' fingerprint and a digest of the rows it publishes:
    a rerun that publishes different rows (after a fix to unitcoder, say) gets a new tag; one
    that publishes the same rows gets the same tag, whatever changed in unitcoder."""
    return "unitcoder-" + hashlib.sha256(f"{fingerprint}:{rows}".encode()).hexdigest()[:12]


def decontamination_summary(by_set: dict[str, int]) -> dict:
    """Which benchmarks the verified rows were checked against (from their
    ``decontaminated_against`` column): rows per set of benchmarks, and the benchmarks
    unitcoder knows that some verified row was not checked against."""
    rows = {key or "none": n for key, n in sorted(by_set.items())}
    missing = sorted(
        {b for key in by_set for b in DECONTAMINATION_BENCHMARKS if b not in key.split(",")} if by_set else set()
    )
    return {"rows_checked_against": rows, "not_checked": missing}


def finish(output: Path, records: dict[int, dict], args: Stage2Args) -> int:
    """All shards are done: one card (funnel, rejections, coverage summed over shards), then push.
    The card shows the first shard's command line (the shards differ only in --shard_index)."""
    ordered = [records[i] for i in sorted(records)]
    command = ordered[0]["command"]
    total: dict = {}
    for record in ordered:
        total = add_stats(total, record["stats"])
    settings = dict(ordered[0]["settings"])
    inputs = sorted(record["input"] for record in ordered)
    settings["fingerprint"] = fingerprint_of({"run": ordered[0]["fingerprint"], "inputs": inputs})
    settings["versions"] = ordered[0].get("versions", {})
    settings["unitcoder"] = unitcoder_identity()
    counts = total["counts"]
    decontamination = decontamination_summary(total.get("decontamination", {}))
    settings["decontamination"] = decontamination
    stats = shared_layout(total, settings["rounds"]) | {
        "shards": len(ordered),
        "config_rows": {"default": counts["verified"], "rejected": counts["input"] - counts["verified"]},
    }
    licenses = sorted(total.get("licenses", {}))
    digest = rows_digest(output)
    version = {
        "tag": version_tag(settings["fingerprint"], digest),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "rows": counts["verified"],
        "fingerprint": settings["fingerprint"],
        "rows_digest": digest,
    }

    def write_card(history: list[dict]) -> None:
        card = render_card(
            stage="stage2",
            stats=stats,
            settings=settings,
            command=command,
            versions=history,
            licenses=licenses,
        )
        partial = output / ".README.md.partial"
        partial.write_text(card)
        partial.replace(output / "README.md")

    funnel_plot(stats["funnel"], output / "funnel.png")
    if stats.get("quality"):
        quality_plot(stats["quality"], output / "quality.png")
    write_card([version])
    for label, value in stats["funnel"]:
        logger.info("%s: %d", label, value)
    for reason, n in stats["dropped"].items():
        logger.info("  rejected, %s: %d", reason, n)
    if counts["verified"] == 0:
        logger.warning("nothing verified: the default config is empty (see the rejected config for why)")
    if args.push and counts["verified"] == 0:
        logger.error("not pushing: nothing was verified, so the default config is empty (the rejected config says why)")
        return 1
    if args.push and decontamination["not_checked"] and not args.allow_partial_decontamination:
        logger.error(
            "not pushing: some verified rows were not checked against %s (stage 1 could not load them, or was told "
            "not to); rerun stage 1 where the Hub is reachable, or pass --allow_partial_decontamination to publish "
            "them as they are (the card says which benchmarks each row was checked against)",
            ", ".join(decontamination["not_checked"]),
        )
        return 1
    if args.push:
        try:
            outcome = publish_version(output, args.repo_id, version, write_card)
        except Exception as exc:
            logger.error(
                "push to %s failed (%s: %s); the local output in %s is complete. Set HF_TOKEN (or run `hf auth login`) and rerun with --push.",
                args.repo_id, type(exc).__name__, exc, output,
            )  # fmt: skip
            return 1
        logger.info("%s", outcome)
    return 0


def merge_only(args: Stage2Args) -> int:
    """``--merge``: the card of the sharded run found in --output_dir, if every shard is done."""
    output = Path(args.output_dir)
    records = [json.loads(p.read_text()) for p in sorted((output / "stats").glob("shard-*-of-*.json"))]
    runs = {(r.get("fingerprint"), r.get("num_shards")) for r in records}
    if not records or len(runs) != 1 or None in next(iter(runs)):
        logger.error(
            "%s holds %s; --merge needs the shards of one run", output,
            "no stage-2 shard stats" if not records else f"stats of {len(runs)} different runs",
        )  # fmt: skip
        return 2
    fingerprint, num_shards = next(iter(runs))
    done = completed_shards(output, fingerprint, num_shards)
    missing = sorted(set(range(num_shards)) - set(done))
    if missing:
        logger.error(
            "shards %s of %d are not finished; run them, then --merge", ", ".join(map(str, missing)), num_shards
        )
        return 1
    return finish(output, done, args)


class ChunkProcess:
    """The chunk function of a Ray worker: its own sandbox (for the worker's life) and the
    steps' settings; ``RayEngine`` builds one per worker with the worker's generator."""

    def __init__(self, generator, *, args: Stage2Args, config, templates: dict, sampling: dict[str, Sampling]):
        self.sandboxes = Sandboxes(config)
        self.sandboxes.start()
        self.run = functools.partial(
            process_chunk, args=args, generator=generator, sandboxes=self.sandboxes, templates=templates,
            sampling=sampling,
        )  # fmt: skip

    def __call__(self, batch: dict[str, list]) -> ChunkOutput:
        return self.run(batch)

    def close(self) -> None:
        self.sandboxes.close()


def main(argv: list[str] | None = None) -> int:
    classes = (Stage2Args, SandboxArgs, GenerationArgs, EngineArgs)
    (args, box, gen, eng), command = start_script("processing/stage2.py", classes, __doc__, argv)
    if args.merge:
        return merge_only(args)
    session = sandbox = None
    try:
        source = open_input(args)
        config = box.config()
        if eng.engine == "ray":
            from processing.engine.ray import RayEngine, RaySession

            gpus = gen.tensor_parallel_size * eng.num_replicas if gen.backend == "vllm" else 0
            preflight(config)  # a machine without a sandbox stops here, before the cluster is asked for anything
            session = RaySession(eng.ray_address, gpus_needed=gpus)
            service, generator = session.start_generation(gen, eng.num_replicas)
            config = dataclasses.replace(config, workers=box.sandbox_workers or eng.ray_worker_cpus)
        else:
            generator = build_generator(gen)
        steps = ("fix", "refine") + (("strengthen",) if args.strengthen_rounds and not args.skip_quality else ())
        sampling = {step: gen.sampling_for(step) for step in steps}  # per step, recorded in the card
        templates = {  # every language's: a row's language decides which it gets
            language: {name: PromptTemplate.load(name, get_language(language).PROMPT_DIR) for name in steps}
            for language in LANGUAGES
        }
        settings = run_settings(args, source.described, generator, sampling, templates, config)
        fingerprint = fingerprint_of(settings | {"num_shards": args.num_shards})
        layout = dict(
            features={"default": VERIFIED_FEATURES, "rejected": STAGE2_REJECTED_FEATURES},
            fingerprint=fingerprint, chunk_size=args.chunk_size, shard_index=args.shard_index,
            num_shards=args.num_shards,
        )  # fmt: skip
        if session is not None:
            workers = session.workers(eng.ray_workers, eng.ray_worker_cpus)
            engine = RayEngine(
                args.output_dir, service=service, info={"model_id": generator.model_id, "backend": generator.backend.name},
                workers=workers, worker_cpus=eng.ray_worker_cpus, **layout,
            )  # fmt: skip
            process = functools.partial(ChunkProcess, args=args, config=config, templates=templates, sampling=sampling)
            logger.info(
                "engine: Ray at %s (%d CPUs, %g GPUs); %d sandbox actors of %d CPUs",
                session.address, session.cpus, session.gpus, workers, eng.ray_worker_cpus,
            )  # fmt: skip
        else:
            engine = LocalEngine(args.output_dir, **layout)
        engine.prepare(overwrite=args.overwrite)
        if session is None:
            sandbox = Sandboxes(config)
            sandbox.start()

            def process(batch):
                return process_chunk(
                    batch, args=args, generator=generator, sandboxes=sandbox, templates=templates, sampling=sampling
                )
    except (ValueError, GenerationError, SandboxUnavailable) as exc:
        logger.error("%s", exc)
        if session is not None:
            session.close()
        return 2
    start, stop = source.shard_bounds(args.shard_index, args.num_shards)
    logger.info(
        "input: %s, %d rows; shard %d of %d: rows %d to %d, chunks of %d",
        source.described, source.num_rows, args.shard_index + 1, args.num_shards, start, stop, args.chunk_size,
    )  # fmt: skip
    started = time.time()
    try:
        summary = engine.run(source, process, defer=(AnswersMissing,))
    except ChunksDeferred as exc:
        logger.error(
            "%s; no row of those chunks was kept or rejected; rerun the same command to finish them (the other "
            "chunks and every answer received are kept)",
            exc,
        )
        return 1
    except GenerationError as exc:
        logger.error(
            "generation stopped: %s; rerun the same command to resume (finished chunks and answers are kept)", exc
        )
        return 1
    except WorkerFailure as exc:  # infrastructure, not the code's fault: stop rather than reject rows
        logger.error("the sandbox keeps failing (%s); fix the machine and rerun the same command to resume", exc)
        return 1
    finally:
        if sandbox is not None:
            sandbox.close()
        if session is not None:
            session.close()
    if not summary.already_done:
        engine.commit(
            summary,
            {
                **shared_layout(summary.stats, args.rounds),
                "settings": settings,
                "versions": package_versions(),
                "command": command,
                "wall_s": round(time.time() - started, 2),
            },
        )
        logger.info(
            "shard %d of %d: %d chunks run, %d done earlier; %d rows in %.1fs",
            args.shard_index + 1, args.num_shards, summary.chunks_run, summary.chunks_skipped, summary.rows,
            time.time() - started,
        )  # fmt: skip
    output = Path(args.output_dir)
    done = completed_shards(output, fingerprint, args.num_shards)
    if len(done) < args.num_shards:
        missing = sorted(set(range(args.num_shards)) - set(done))
        logger.info(
            "shard %d done; waiting for shards %s: the last one to finish writes the card%s",
            args.shard_index, ", ".join(map(str, missing)), " and pushes" if args.push else "",
        )  # fmt: skip
        return 0
    code = finish(output, done, args)
    logger.info("stage 2 finished in %.1fs; output in %s", time.time() - started, output)
    return code


if __name__ == "__main__":
    sys.exit(main())
