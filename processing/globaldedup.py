"""Stage 1's global deduplication pass over the shards of a job array.

Each shard of ``stage1.py --num_shards N --shard_index I`` deduplicates its own rows
(``processing.steps.select``) and, beside its output, records every candidate it
offered to dedup (every function that passed decontamination, in input order) in a
side file that is not published::

    .dedup/shard-0000I-of-0000N.parquet    columns id, exact_key, signature (list of int64)

Its schema metadata (key ``unitcoder.dedup``, JSON) holds the shard, the dedup settings
(``threshold``, ``num_perm``) and a ``run`` token that the shard's
``stats/shard-0000I-of-0000N.json`` repeats under ``dedup_candidates``, so a side file
left by another run of the shard is recognised.

Once every shard has finished, ``stage1.py --dedup_only --num_shards N --output_dir D``
runs the dedup rule (``processing.dedup.Deduplicator``) once over all shards'
candidates, shard by shard in order. A verdict depends only on the candidates before a
row, so this gives every row the verdict one process over the whole corpus gives (the
shards being contiguous parts of the input in order: ``--num_shards`` on a dataset, or
on a streamed input with at least N files); and since a shard only sees some of those
candidates, it keeps a superset of what the whole keeps. The pass then brings each
shard's files in line: a row kept, or dropped after dedup (by the define check or by test
generation), that is a copy globally moves to ``rejected/`` as ``duplicate`` or
``near_duplicate`` with the global detail; a dropped copy whose earliest copy lies in an
earlier shard gets the new reason and detail. Changed ``data/`` and ``rejected/`` files
are rewritten whole (a hidden partial file, then ``os.replace``), rejected first, so a
killed pass leaves at worst a row in both, which the next pass finishes moving. The
shard's counts are recounted from what its files then hold (kept rows, drops by dedup,
the define check and test generation; the funnel and drops by reason), its stats gain
``global_dedup`` (``num_shards``, ``copies_of_earlier_shards``), and the card is
rewritten (``.dedup/pending`` marks a pass under way, so a killed one's card is written
by the next). A second pass finds nothing to change and writes nothing.

Shards that stopped at ``--limit`` are refused: they did not read all their input.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from processing.dedup import DUPLICATE, NEAR_DUPLICATE, Deduplicator, copy_detail
from processing.hub import shard_name
from processing.steps.define import DROP_REASON as DOES_NOT_DEFINE
from processing.steps.select import CANDIDATE_COLUMNS

logger = logging.getLogger(__name__)

SIDE_FOLDER = ".dedup"  # hidden: push_folder's allow_patterns never take it
METADATA_KEY = b"unitcoder.dedup"
PENDING = "pending"  # in SIDE_FOLDER while a pass is rewriting shards: the next pass finishes the card
DEDUP_REASONS = (DUPLICATE, NEAR_DUPLICATE)
# Drop reasons of candidates decided during retrieval; any other reason of a candidate is test generation's.
SELECTION_REASONS = frozenset({DUPLICATE, NEAR_DUPLICATE, DOES_NOT_DEFINE})
SIDE_SCHEMA = pa.schema([("id", pa.string()), ("exact_key", pa.string()), ("signature", pa.list_(pa.int64()))])


def side_file(output: Path, shard_index: int, num_shards: int) -> Path:
    return Path(output) / SIDE_FOLDER / f"shard-{shard_index:05d}-of-{num_shards:05d}.parquet"


def stats_file(output: Path, shard_index: int, num_shards: int) -> Path:
    return Path(output) / "stats" / f"shard-{shard_index:05d}-of-{num_shards:05d}.json"


class CandidateLog:
    """A shard's side file, written as selection goes (``add`` is the ``Selector``'s
    ``record``) under a hidden partial name, and renamed into place by ``close``, which
    returns what the shard's stats keep of it (``dedup_candidates``)."""

    def __init__(self, output: Path, shard_index: int, num_shards: int, threshold: float, num_perm: int):
        self.output = Path(output)
        self.path = side_file(self.output, shard_index, num_shards)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.run = uuid.uuid4().hex
        about = {"run": self.run, "shard_index": shard_index, "num_shards": num_shards}
        about |= {"threshold": threshold, "num_perm": num_perm}
        self.schema = SIDE_SCHEMA.with_metadata({METADATA_KEY: json.dumps(about).encode()})
        self.writer = pq.ParquetWriter(self.partial, self.schema)
        self.count = 0

    def add(self, candidates: pa.Table) -> None:
        if len(candidates):
            self.writer.write_table(candidates.select(list(CANDIDATE_COLUMNS)).cast(self.schema))
            self.count += len(candidates)

    def close(self) -> dict:
        self.writer.close()
        os.replace(self.partial, self.path)
        return {"file": self.path.relative_to(self.output).as_posix(), "candidates": self.count, "run": self.run}


class NotReady(Exception):
    """The folder is not ready for the global pass (one sentence saying what to do)."""


class Shard:
    """One finished shard of the job array: its stats, side file and output files."""

    def __init__(self, output: Path, index: int, num_shards: int):
        self.index = index
        self.stats_path = stats_file(output, index, num_shards)
        self.side_path = side_file(output, index, num_shards)
        name = shard_name(index, num_shards)
        self.data_path = output / "data" / f"{name}.parquet"
        self.rejected_path = output / "rejected" / f"{name}.parquet"
        what = f"shard {index} of {num_shards}"
        rerun = f"rerun {what}, then --dedup_only again"
        if not self.stats_path.is_file():
            raise NotReady(f"{what} has not finished (no {self.stats_path}): run it, then --dedup_only again")
        self.stats = json.loads(self.stats_path.read_text())
        if self.stats.get("limit_reached"):
            raise NotReady(
                f"{what} stopped at --limit, so it did not read all its input: the global pass needs whole shards"
            )
        recorded = self.stats.get("dedup_candidates")
        if not recorded:
            raise NotReady(
                f"{what} recorded no dedup candidates (a run without --num_shards or from older code): {rerun}"
            )
        if not self.side_path.is_file():
            raise NotReady(f"{what}'s candidate file {self.side_path} is missing: {rerun}")
        about = json.loads((pq.read_schema(self.side_path).metadata or {}).get(METADATA_KEY, b"{}"))
        if about.get("run") != recorded.get("run"):
            raise NotReady(f"{what}'s candidate file {self.side_path} is from another run than its stats: {rerun}")
        if not (self.data_path.is_file() and self.rejected_path.is_file()):
            raise NotReady(f"{what} has no {self.data_path.name} in data/ and rejected/: {rerun}")
        self.settings = (about["threshold"], about["num_perm"])
        self.rerun = rerun


def global_pass(
    output: Path, num_shards: int, layout: Callable[[dict], dict], card: Callable[[Path, int], None]
) -> int:
    """Deduplicate the finished shards of a job array against one another (see the module
    docstring); ``layout`` recomputes a shard's shared stats layout (``funnel``,
    ``dropped``) and ``card(output, num_shards)`` rewrites README.md and funnel.png.
    Returns the exit code: 0 done (or nothing to do), 2 not ready (logged in one sentence)."""
    output = Path(output)
    if num_shards == 1:
        logger.info("--dedup_only: a run with one shard is already deduplicated as a whole; nothing to do")
        return 0
    try:
        shards = [Shard(output, index, num_shards) for index in range(num_shards)]
        if len({shard.settings for shard in shards}) > 1:
            raise NotReady(
                "the shards ran with different --dedup_threshold or --num_perm: rerun them with the same ones"
            )
        verdicts = global_verdicts(shards)
        pending = output / SIDE_FOLDER / PENDING
        changed = pending.exists()
        for shard, shard_verdicts in zip(shards, verdicts):
            if align(shard, shard_verdicts, layout, num_shards, before_writing=lambda: pending.touch()):
                changed = True
    except NotReady as exc:
        logger.error("%s", exc)
        return 2
    if not changed:
        logger.info("--dedup_only: every shard already holds the global verdicts; nothing changed")
        return 0
    card(output, num_shards)
    pending.unlink(missing_ok=True)
    logger.info("--dedup_only: %d shards deduplicated against one another; card rewritten", num_shards)
    return 0


def global_verdicts(shards: list[Shard]) -> list[dict[str, tuple[str, str] | None]]:
    """Per shard, {candidate id: None (not a copy) or (drop reason, id of the earliest
    copy)}, from one ``Deduplicator`` run over every shard's candidates in shard order."""
    threshold, num_perm = shards[0].settings
    dedup = Deduplicator(threshold, num_perm)
    out = []
    for shard in shards:
        verdicts: dict[str, tuple[str, str] | None] = {}
        for batch in pq.ParquetFile(shard.side_path).iter_batches(batch_size=65536):
            signatures = batch.column("signature")
            values = signatures.flatten().to_numpy(zero_copy_only=False).astype(np.uint32)
            if len(values) != len(batch) * num_perm:
                raise NotReady(
                    f"shard {shard.index}'s candidate file holds signatures of another length: {shard.rerun}"
                )
            values = values.reshape(len(batch), num_perm)
            for row_id, key, signature in zip(
                batch.column("id").to_pylist(), batch.column("exact_key").to_pylist(), values
            ):
                reason, first = dedup.check(row_id, key, signature)
                verdicts[row_id] = (reason, first) if reason else None
        out.append(verdicts)
    return out


def align(shard: Shard, verdicts: dict, layout: Callable[[dict], dict], num_shards: int, before_writing) -> bool:
    """Rewrite the shard's files where they differ from the global verdicts; True if anything was written."""
    data = pq.read_table(shard.data_path)
    rejected = pq.read_table(shard.rejected_path)
    data_ids = data.column("id").to_pylist()
    rejected_ids = rejected.column("id").to_pylist()
    reasons = rejected.column("drop_reason").to_pylist()
    details = rejected.column("detail").to_pylist()
    in_rejected = {row_id: i for i, row_id in enumerate(rejected_ids) if row_id in verdicts}
    mismatch = NotReady(
        f"shard {shard.index}'s data/ and rejected/ files do not match its candidate file: {shard.rerun}"
    )
    if not set(data_ids) <= verdicts.keys() or len(set(data_ids) | in_rejected.keys()) != len(verdicts):
        raise mismatch
    relabelled = 0
    for row_id, i in in_rejected.items():
        verdict = verdicts[row_id]
        if verdict is None:
            if reasons[i] in DEDUP_REASONS:  # a shard never drops as a copy what the whole keeps
                raise mismatch
            continue
        if (reasons[i], details[i]) != (verdict[0], copy_detail(verdict[1])):
            reasons[i], details[i] = verdict[0], copy_detail(verdict[1])
            relabelled += 1
    if any(verdicts[row_id] is None for row_id in data_ids if row_id in in_rejected):
        raise mismatch  # kept and rejected at once, and not by a killed pass
    moving = [i for i, row_id in enumerate(data_ids) if verdicts[row_id] is not None]
    arriving = [i for i in moving if data_ids[i] not in in_rejected]  # not yet in rejected/ (a killed pass may have)
    if relabelled or arriving:
        before_writing()
        rejected = _set_column(rejected, "drop_reason", reasons)
        rejected = _set_column(rejected, "detail", details)
        if arriving:
            rows = data.take(pa.array(arriving, pa.int64()))
            copies = [verdicts[data_ids[i]] for i in arriving]
            rows = rows.append_column("level", pa.array(["function"] * len(arriving), pa.string()))
            rows = rows.append_column("drop_reason", pa.array([r for r, _ in copies], pa.string()))
            rows = rows.append_column("detail", pa.array([copy_detail(f) for _, f in copies], pa.string()))
            rejected = pa.concat_tables([rejected, rows.select(rejected.schema.names).cast(rejected.schema)])
        _write_parquet(rejected, shard.rejected_path)
    if moving:
        before_writing()
        keep = np.ones(len(data), dtype=bool)
        keep[moving] = False
        data = data.filter(pa.array(keep))
        _write_parquet(data, shard.data_path)
    stats = recount(shard.stats, data, rejected, verdicts, num_shards, layout)
    if stats != shard.stats:
        before_writing()
        partial = shard.stats_path.with_name(f".{shard.stats_path.name}.partial")
        partial.write_text(json.dumps(stats, indent=2))
        os.replace(partial, shard.stats_path)
    if relabelled or moving:
        logger.info(
            "shard %d: %d kept rows are copies of earlier shards' rows, %d dropped rows relabelled",
            shard.index, len(moving), relabelled,
        )  # fmt: skip
    return bool(relabelled or moving or stats != shard.stats)


def recount(stats: dict, data: pa.Table, rejected: pa.Table, verdicts: dict, num_shards: int, layout) -> dict:
    """The shard's stats with every count that candidates decide taken from its files:
    kept rows, drops by dedup and the define check, test generation's kept and dropped
    rows; the rest (files, extraction drops, contamination, usage) stays as it was."""
    candidate_reasons = Counter(
        reason for row_id, reason in zip(rejected.column("id").to_pylist(), rejected.column("drop_reason").to_pylist())
        if row_id in verdicts
    )  # fmt: skip
    new = json.loads(json.dumps(stats))  # a deep copy
    functions_dropped = Counter({k: v for k, v in stats["functions_dropped"].items() if k not in SELECTION_REASONS})
    functions_dropped.update({k: v for k, v in candidate_reasons.items() if k in SELECTION_REASONS})
    new["functions_dropped"] = dict(functions_dropped.most_common())
    tests_dropped = Counter({k: v for k, v in candidate_reasons.items() if k not in SELECTION_REASONS})
    tests = new.get("test_generation")
    if tests_dropped and not tests:
        raise NotReady(f"shard {stats['shard_index']}'s rejected/ file holds drop reasons it could not have given")
    if tests:
        tests["kept"] = len(data)
        tests["dropped"] = dict(tests_dropped.most_common())
        tests["functions"] = len(data) + sum(tests_dropped.values())
        tests["answers"] = tests["functions"] - tests_dropped["prompt_too_long"]
    new["counts"]["kept"] = len(data) + sum(tests_dropped.values())
    new["kept"] = len(data)
    if new.get("define_check"):
        new["define_check"]["dropped"] = functions_dropped[DOES_NOT_DEFINE]
    copies_of_others = sum(1 for verdict in verdicts.values() if verdict is not None and verdict[1] not in verdicts)
    new["global_dedup"] = {"num_shards": num_shards, "copies_of_earlier_shards": copies_of_others}
    new.update(layout(new))
    return new


def _set_column(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def _write_parquet(table: pa.Table, path: Path) -> None:
    """``table`` to ``path`` whole or not at all (a hidden partial file, then a rename); no
    empty row group (datasets cannot read a file that has one)."""
    partial = path.with_name(f".{path.name}.partial")
    with pq.ParquetWriter(partial, table.schema) as writer:
        if len(table):
            writer.write_table(table)
    os.replace(partial, path)
