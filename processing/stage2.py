"""Stage 2: verify, fix, guard, refine and publish the verified set.

    python processing/stage2.py                                   # reads outputs/stage1 (stage 1's default)
    python processing/stage2.py --push --repo_id user/unitcoder   # and publishes a tagged version

Every input id ends in exactly one row: in ``default`` (verified) or in ``rejected``
(with its ``drop_reason``). Generation goes through the request cache, so after a kill
the same command resumes and asks the model only for answers it never received.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import datasets

from dataset_card import funnel_plot, render_card
from dataset_card.card import package_versions
from processing.args import start_script
from processing.fixrefine import (
    FIXABLE,
    PASSING,
    chat_messages,
    error_excerpt,
    extract_code,
    fix_conversation,
    refine_conversation,
    split_prompt_completion,
    stub_implementations,
)
from processing.generation import GenerationArgs, GenerationError, Sampling, build_generator
from processing.hub import ParquetSink, publish_version, read_local_config, shard_name
from processing.retrieval import STRINGS
from processing.testgen import PromptTemplate
from sandbox import Sandbox, SandboxConfig, SandboxUnavailable, WorkerFailure

logger = logging.getLogger("stage2")
REQUIRED = ("id", "code", "test_code", "function_name")
ATTEMPT = {
    "round": datasets.Value("int32"),
    "sample": datasets.Value("int32"),
    "status": datasets.Value("string"),
    "error": datasets.Value("string"),
}
SOURCE = {
    "id": datasets.Value("string"),
    "function_name": datasets.Value("string"),
    "code": datasets.Value("string"),
    "test_code": datasets.Value("string"),
    "original_code": datasets.Value("string"),
    "repo": datasets.Value("string"),
    "path": datasets.Value("string"),
    "licenses": STRINGS,
    "packages": STRINGS,
    "fix_rounds": datasets.Value("int32"),
    "attempts": [ATTEMPT],
}
VERIFIED_FEATURES = datasets.Features(
    {
        **SOURCE,
        "refined": datasets.Value("bool"),
        "refine_status": datasets.Value("string"),
        "variants": STRINGS,
        "tests_run": datasets.Value("int32"),
        "tests_passed": datasets.Value("int32"),
        "verify_duration_s": datasets.Value("float64"),
        "prompt": datasets.Value("string"),
        "completion": datasets.Value("string"),
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
    }
)
REJECTED_FEATURES = datasets.Features(
    {**SOURCE, "drop_reason": datasets.Value("string"), "detail": datasets.Value("string")}
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
    skip_refine: bool = field(default=False, metadata={"help": "do not refine passing code"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N input rows"})
    num_shards: int = field(default=1, metadata={"help": "split the input into this many shards (job arrays)"})
    shard_index: int = field(default=0, metadata={"help": "which shard this run processes, 0-based"})
    sandbox_workers: int | None = field(default=None, metadata={"help": "sandbox workers (default: all cores)"})
    sandbox_timeout: float = field(default=10.0, metadata={"help": "wall-clock seconds per program in the sandbox"})
    sandbox_memory_mb: int = field(default=4096, metadata={"help": "memory cap per program process, MiB"})
    push: bool = field(default=False, metadata={"help": "publish to the Hub as a tagged version (needs --repo_id)"})
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for --push, e.g. user/unitcoder-python"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ValueError("--push needs --repo_id (e.g. --repo_id user/unitcoder-python)")
        if self.samples < 1 or self.rounds < 0 or self.keep_variants < 1:
            raise ValueError("need --samples >= 1, --rounds >= 0 and --keep_variants >= 1")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index must be in [0, {self.num_shards}), got {self.shard_index}")


def load_input(args: Stage2Args) -> tuple[list[dict], str]:
    """Stage-1 rows (read from the parquet files directly for a local folder: no stale cache)."""
    if args.input_dataset:
        data = datasets.load_dataset(args.input_dataset, split="train", revision=args.input_revision)
        described = f"{args.input_dataset}@{args.input_revision or 'main'}"
        table = data.data.table
    else:
        table = read_local_config(args.input_dir)
        if table is None:
            raise ValueError(
                f"no stage-1 output in {args.input_dir} (expected data/train-*.parquet); run processing/stage1.py first"
            )
        described = str(Path(args.input_dir).resolve())
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"the input lacks {', '.join(missing)}: it is not a unitcoder stage-1 dataset with tests")
    rows = table.to_pylist()
    if args.num_shards > 1:
        size = -(-len(rows) // args.num_shards)
        rows = rows[args.shard_index * size : (args.shard_index + 1) * size]
    return rows[: args.limit] if args.limit else rows, described


def attempt(round_: int, sample: int, status: str, error: str = "") -> dict:
    return {"round": round_, "sample": sample, "status": status, "error": error_excerpt(error)}


def run_flow(
    rows: list[dict], args: Stage2Args, generator, sandbox: Sandbox, templates: dict, sampling: Sampling
) -> Counter:
    """Verify, fix, guard and refine ``rows`` in place; return the funnel counts."""
    funnel: Counter = Counter(input=len(rows))
    for row in rows:
        row.update(
            original_code=row["code"],
            current_code=row["code"],
            attempts=[],
            fix_rounds=0,
            variants=[],
            refined=False,
            refine_status="skipped",
        )
    results = sandbox.verify([(r["code"], r["test_code"]) for r in rows], progress=True, desc="verifying")
    for row, result in zip(rows, results):
        row["result"] = result
        if result.status == PASSING:
            row["state"] = "passing"
        elif result.status in FIXABLE:
            row["state"], row["current_error"] = "failing", result.details
        else:  # rejected by the sandbox (tampering, no tests) or infrastructure trouble
            row["state"], row["drop_reason"], row["detail"] = "rejected", result.reason or result.status, result.details
    funnel["passed_first_try"] = sum(r["state"] == "passing" for r in rows)
    for round_ in range(1, args.rounds + 1):
        failing = [r for r in rows if r["state"] == "failing"]
        if not failing:
            break
        # Seeds move on each round: a pair whose prompt did not change gets new samples.
        fix_sampling = Sampling(
            args.samples, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed + 1000 * round_
        )
        answers = generator.generate(
            [fix_conversation(templates["fix"], r) for r in failing], fix_sampling, desc=f"fix round {round_}"
        )
        candidates = []
        for row, samples in zip(failing, answers):
            for index, answer in enumerate(samples):
                code, why = extract_code(answer, row["function_name"])
                if code is None:
                    row["attempts"].append(attempt(round_, index, why))
                else:
                    candidates.append((row, index, code))
        verdicts = sandbox.verify(
            [(code, row["test_code"]) for row, _, code in candidates], progress=True, desc=f"verifying round {round_}"
        )
        best: dict[str, tuple] = {}
        passed: dict[str, list[tuple]] = {}
        for (row, index, code), result in zip(candidates, verdicts):
            row["attempts"].append(attempt(round_, index, result.status, result.details))
            if result.status == PASSING:
                passed.setdefault(row["id"], []).append((code, result))
            elif row["id"] not in best or result.tests_passed > best[row["id"]][1].tests_passed:
                best[row["id"]] = (code, result)
        fixed = 0
        for row in failing:
            if row["id"] in passed:
                (code, result), *others = passed[row["id"]]
                row.update(state="passing", code=code, result=result, fix_rounds=round_)
                row["variants"] = [c for c, _ in others][: args.keep_variants - 1]
                fixed += 1
            elif row["id"] in best:
                row["current_code"], latest = best[row["id"]]
                row["current_error"] = latest.details
        funnel[f"fixed_in_round_{round_}"] = fixed
    for row in rows:
        if row["state"] == "failing":
            row.update(state="rejected", drop_reason="not_fixed", detail=error_excerpt(row["current_error"]))
    guard(rows, sandbox, funnel)
    if not args.skip_refine:
        refine(rows, generator, sandbox, templates["refine"], sampling, funnel)
    funnel["verified"] = sum(r["state"] == "passing" for r in rows)
    return funnel


def guard(rows: list[dict], sandbox: Sandbox, funnel: Counter) -> None:
    """Reject pairs whose tests also pass against a body that returns None or raises."""
    passing = [r for r in rows if r["state"] == "passing"]
    pairs, owners = [], []
    for row in passing:
        for stub in stub_implementations(row["code"], row["function_name"]):
            pairs.append((stub, row["test_code"]))
            owners.append(row)
    for row, result in zip(owners, sandbox.verify(pairs, progress=True, desc="checking the tests bite")):
        if result.status == PASSING and row["state"] == "passing":
            row.update(
                state="rejected", drop_reason="vacuous_tests", detail="the tests pass against a trivially wrong body"
            )
    funnel["vacuous_tests"] = sum(r.get("drop_reason") == "vacuous_tests" for r in rows)


def refine(rows: list[dict], generator, sandbox: Sandbox, template, sampling: Sampling, funnel: Counter) -> None:
    """Ask for a clean version of passing code; keep it only if it still passes."""
    passing = [r for r in rows if r["state"] == "passing"]
    one = Sampling(1, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
    answers = generator.generate([refine_conversation(template, r) for r in passing], one, desc="refining")
    candidates = []
    for row, (answer,) in zip(passing, answers):
        code, why = extract_code(answer, row["function_name"])
        if code is None:
            row["refine_status"] = why
        else:
            candidates.append((row, code))
    verdicts = sandbox.verify(
        [(code, row["test_code"]) for row, code in candidates], progress=True, desc="verifying refined code"
    )
    for (row, code), result in zip(candidates, verdicts):
        if result.status == PASSING:
            row.update(code=code, result=result, refined=True, refine_status="pass")
        else:
            row["refine_status"] = result.status  # the unrefined code stays
    funnel["refined"] = sum(r["refined"] for r in rows)


def output_row(row: dict) -> dict:
    out = {key: row.get(key) for key in SOURCE}
    if row["state"] == "rejected":
        return {**out, "drop_reason": row["drop_reason"], "detail": (row.get("detail") or "")[:2000]}
    prompt, completion = split_prompt_completion(row["code"], row["function_name"])
    result = row["result"]
    return {
        **out,
        "refined": row["refined"],
        "refine_status": row["refine_status"],
        "variants": row["variants"],
        "tests_run": result.tests_run,
        "tests_passed": result.tests_passed,
        "verify_duration_s": result.duration_s,
        "prompt": prompt,
        "completion": completion,
        "messages": chat_messages(row["code"], row["function_name"], prompt),
    }


def main(argv: list[str] | None = None) -> int:
    classes = (Stage2Args, GenerationArgs)
    (args, gen), command = start_script("processing/stage2.py", classes, __doc__, argv)
    started = time.time()
    try:
        rows, described = load_input(args)
        generator = build_generator(gen)
        workers = {"workers": args.sandbox_workers} if args.sandbox_workers else {}  # default: all cores
        config = SandboxConfig(timeout=args.sandbox_timeout, memory_mb=args.sandbox_memory_mb, **workers)
        sandbox = Sandbox(config).start()
    except (ValueError, GenerationError, SandboxUnavailable) as exc:
        logger.error("%s", exc)
        return 2
    templates = {"fix": PromptTemplate.load("fix"), "refine": PromptTemplate.load("refine")}
    sampling = Sampling.from_args(gen)
    logger.info("input: %s, %d rows", described, len(rows))
    try:
        funnel = run_flow(rows, args, generator, sandbox, templates, sampling)
    except GenerationError as exc:
        logger.error("generation stopped: %s; rerun the same command to resume (answers received are cached)", exc)
        return 1
    except WorkerFailure as exc:  # infrastructure, not the code's fault: stop rather than reject rows
        logger.error("the sandbox keeps failing (%s); fix the machine and rerun the same command to resume", exc)
        return 1
    finally:
        sandbox.close()

    output = Path(args.output_dir)
    name = shard_name(args.shard_index, args.num_shards)
    verified = ParquetSink(output / "data" / f"{name}.parquet", VERIFIED_FEATURES)
    rejected = ParquetSink(output / "rejected" / f"{name}.parquet", REJECTED_FEATURES)
    dropped: Counter = Counter()
    coverage: Counter = Counter()
    for row in rows:
        if row["state"] == "passing":
            verified.add(output_row(row))
            coverage.update(row.get("packages") or [])
        else:
            dropped[row["drop_reason"]] += 1
            rejected.add(output_row(row))
    verified.close()
    rejected.close()
    settings = {
        "input": described,
        "input_revision": args.input_revision,
        "model": generator.model_id,
        "backend": generator.backend.name,
        "sampling": asdict(sampling),
        "samples": args.samples,
        "rounds": args.rounds,
        "keep_variants": args.keep_variants,
        "refine": not args.skip_refine,
        "prompt_hashes": {k: t.hash for k, t in templates.items()},
        "sandbox": config.fingerprint_fields() | {"preload": list(config.preload)},
        "versions": package_versions(),
    }
    input_digest = hashlib.sha256(
        json.dumps([r["id"] for r in rows] + [r["original_code"] + r["test_code"] for r in rows]).encode()
    ).hexdigest()
    fingerprint_source = {k: v for k, v in settings.items() if k != "versions"} | {
        "input_digest": input_digest,
        "shard": [args.shard_index, args.num_shards],
    }
    settings["fingerprint"] = hashlib.sha256(
        json.dumps(fingerprint_source, sort_keys=True, default=str).encode()
    ).hexdigest()
    funnel_list = [("input rows", funnel["input"]), ("passed at first try", funnel["passed_first_try"])]
    funnel_list += [
        (f"fixed in round {i}", funnel[f"fixed_in_round_{i}"])
        for i in range(1, args.rounds + 1)
        if f"fixed_in_round_{i}" in funnel
    ]
    funnel_list += [
        ("vacuous tests (rejected)", funnel["vacuous_tests"]),
        ("refined", funnel["refined"]),
        ("verified", funnel["verified"]),
    ]
    stats = {
        "funnel": funnel_list,
        "dropped": dict(dropped.most_common()),
        "packages": dict(coverage.most_common()),
        "settings": settings,
        "usage": asdict(generator.usage),
        "wall_s": round(time.time() - started, 2),
    }
    (output / "stats").mkdir(parents=True, exist_ok=True)
    (output / "stats" / f"shard-{args.shard_index:05d}-of-{args.num_shards:05d}.json").write_text(
        json.dumps(stats, indent=2, default=str)
    )
    funnel_plot(funnel_list, output / "funnel.png")
    licenses = sorted({lic for r in rows for lic in (r.get("licenses") or [])})
    version = {
        "tag": version_tag(settings["fingerprint"]),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "rows": funnel["verified"],
        "fingerprint": settings["fingerprint"],
    }

    def write_card(history: list[dict]) -> None:
        card = render_card(
            title="unitcoder verified Python functions",
            stats=stats,
            settings=settings,
            command=command,
            versions=history,
            licenses=licenses,
        )
        (output / "README.md").write_text(card)

    write_card([version])
    for label, value in funnel_list:
        logger.info("%s: %d", label, value)
    for reason, n in dropped.most_common():
        logger.info("  rejected, %s: %d", reason, n)
    if funnel["verified"] == 0:
        logger.warning("nothing verified: the default config is empty (see the rejected config for why)")
    logger.info("stage 2 finished in %.1fs; output in %s", stats["wall_s"], output)
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


def version_tag(fingerprint: str) -> str:
    """Versions are named after the config fingerprint: the same input and settings, the same tag."""
    return f"unitcoder-{fingerprint[:12]}"


if __name__ == "__main__":
    sys.exit(main())
