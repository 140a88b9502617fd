"""The local engine: one process runs a stage over its input in chunks, resumably.

On disk, inside the output folder (a Hub-layout dataset)::

    .work/shard-0000I-of-0000N/run.json         the run's fingerprint (settings and input)
    .work/shard-0000I-of-0000N/chunk-0000C.*    a finished chunk: kept and rejected rows
                                                (parquet) and its marker (json, written last)
    data/train-0000I-of-0000N.parquet           shard I's kept rows, once every chunk is done
    rejected/train-0000I-of-0000N.parquet       shard I's rejected rows
    stats/shard-0000I-of-0000N.json             shard I's counts; written last: the shard is done

Every file appears whole (written under a hidden name, then renamed). A chunk is skipped
on a rerun when its marker holds the fingerprint of the run's settings and of the
chunk's input rows, so after a ``kill -9`` the same command redoes at most the chunk in
flight. A folder holding another run's output (other settings, another ``--num_shards``)
is never mixed in: ``OutputConflict`` says so, or ``overwrite`` removes that output first.
Peak memory is one chunk's rows, whatever the input size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from processing.hub import CONFIG_FOLDERS, InputTable, shard_name

logger = logging.getLogger(__name__)
_SHARD_FILE = re.compile(r"^(?:train|shard)-(\d{5})-of-(\d{5})\.(?:parquet|json)$")
_DIGEST_MOD = 1 << 256


class OutputConflict(ValueError):
    """The output folder holds another run's output."""


class ChunksDeferred(RuntimeError):
    """Some chunks could not finish (their ``process`` raised a deferred error): the others
    are written, these are not, and the shard is not complete until a rerun runs them."""

    def __init__(self, chunks: list[int], total: int, first: BaseException):
        self.chunks, self.total, self.first = chunks, total, first
        named = ", ".join(str(i + 1) for i in chunks[:10]) + (" ..." if len(chunks) > 10 else "")
        super().__init__(f"{len(chunks)} of {total} chunks left for a rerun (chunk {named}): {first}")


def input_digest(table: pa.Table, columns: tuple[str, ...] | None = None) -> tuple[int, int]:
    """(digest, rows): an order-independent digest of the rows' ``columns`` (default: all),
    so digests of parts add up (modulo 2**256) to the digest of the whole, however it was split."""
    values = [table.column(c).to_pylist() for c in (columns or sorted(table.column_names))]
    total = 0
    for row in zip(*values):
        total += int.from_bytes(hashlib.sha256(json.dumps(row, default=str).encode()).digest(), "big")
    return total % _DIGEST_MOD, len(table)


def _is_funnel(value) -> bool:
    return isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value)


def add_stats(total: dict, part: dict) -> dict:
    """Sum nested count dicts: numbers add, dicts recurse, funnels (``[label, count]`` lists)
    add by label in order, anything else keeps the first value."""
    out = dict(total)
    for key, value in part.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = add_stats(out[key], value)
        elif _is_funnel(value) and _is_funnel(out[key]):
            summed = add_stats(dict(out[key]), dict(value))
            out[key] = [[label, summed[label]] for label in summed]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(out[key] + value, 6)
    return out


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(partial, path)


def _write_parquet(path: Path, tables: list[pa.Table] | pa.Table, schema: pa.Schema) -> int:
    partial = path.with_name(f".{path.name}.partial")
    rows = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for table in tables if isinstance(tables, list) else [tables]:
            if len(table):  # an empty row group trips readers; an empty file is just the schema
                writer.write_table(table.cast(schema))
            rows += len(table)
    os.replace(partial, path)
    return rows


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class ChunkOutput:
    """What the stage's work makes of one chunk: rows per config (columns) and counts."""

    rows: dict[str, dict[str, list]]
    stats: dict


@dataclass(frozen=True)
class Chunk:
    """One chunk of a shard: its position, its input rows and their fingerprint."""

    index: int
    offset: int
    rows: int
    fingerprint: str


@dataclass
class ShardPlan:
    start: int
    stop: int
    input: str  # the digest of the shard's input rows
    chunks: list[Chunk]


@dataclass
class ShardSummary:
    stats: dict
    rows: int
    chunks_run: int = 0
    chunks_skipped: int = 0
    rows_run: int = 0  # rows this process worked on (the rest were done by an earlier run)
    already_done: bool = False
    wall_s: float = 0.0
    record: dict = field(default_factory=dict)


def completed_shards(output_dir: Path, fingerprint: str, num_shards: int) -> dict[int, dict]:
    """Shard index -> stats record, for the shards of this run whose output is complete."""
    done = {}
    for index in range(num_shards):
        name = shard_name(index, num_shards)
        record = _read_json(Path(output_dir) / "stats" / f"shard-{index:05d}-of-{num_shards:05d}.json")
        if (
            record
            and record.get("fingerprint") == fingerprint
            and all((Path(output_dir) / folder / f"{name}.parquet").exists() for folder in CONFIG_FOLDERS.values())
        ):
            done[index] = record
    return done


class LocalEngine:
    """Runs ``process`` over one shard of ``source`` in chunks of ``chunk_size`` rows."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        features: dict[str, datasets.Features],
        fingerprint: str,
        chunk_size: int,
        shard_index: int = 0,
        num_shards: int = 1,
        digest_columns: tuple[str, ...] | None = None,
    ):
        if set(features) != set(CONFIG_FOLDERS):
            raise ValueError(f"features must be given for {', '.join(CONFIG_FOLDERS)}")
        self.output = Path(output_dir)
        self.features = features
        self.fingerprint = fingerprint
        self.chunk_size = chunk_size
        self.shard_index, self.num_shards = shard_index, num_shards
        self.digest_columns = digest_columns
        self.name = shard_name(shard_index, num_shards)
        self.work = self.output / ".work" / f"shard-{shard_index:05d}-of-{num_shards:05d}"
        self.stats_path = self.output / "stats" / f"shard-{shard_index:05d}-of-{num_shards:05d}.json"

    # ------------------------------------------------------------------ what the folder holds

    def _foreign_files(self) -> list[Path]:
        """Files of the stage's output that belong to another run (other settings or shard count)."""
        foreign: list[Path] = []
        for folder in (*CONFIG_FOLDERS.values(), "stats"):
            for path in sorted((self.output / folder).glob("*")):
                match = _SHARD_FILE.match(path.name)
                if not match:
                    continue
                index, count = int(match.group(1)), int(match.group(2))
                if count != self.num_shards or not self._is_ours(index, count):
                    foreign.append(path)
        work = self.output / ".work"
        for shard_dir in sorted(work.glob("shard-*")) if work.is_dir() else []:
            run = _read_json(shard_dir / "run.json")
            if (
                not run
                or run.get("fingerprint") != self.fingerprint
                or not shard_dir.name.endswith(f"-of-{self.num_shards:05d}")
            ):
                foreign.append(shard_dir)
        return foreign

    def _is_ours(self, index: int, count: int) -> bool:
        stats = _read_json(self.output / "stats" / f"shard-{index:05d}-of-{count:05d}.json")
        if stats is not None:
            return stats.get("fingerprint") == self.fingerprint
        # Shard files without stats: a finalisation cut short, ours if its work folder is.
        run = _read_json(self.output / ".work" / f"shard-{index:05d}-of-{count:05d}" / "run.json")
        return bool(run) and run.get("fingerprint") == self.fingerprint

    def prepare(self, overwrite: bool = False) -> None:
        """Check the folder before anything is written: stop on another run's output, or remove it."""
        foreign = self._foreign_files()
        if foreign and not overwrite:
            shown = ", ".join(str(p.relative_to(self.output)) for p in foreign[:3])
            raise OutputConflict(
                f"{self.output} holds output of a run with other settings or another --num_shards ({shown}"
                f"{', ...' if len(foreign) > 3 else ''}); choose a new --output_dir, or add --overwrite to replace it"
            )
        for path in foreign:
            logger.warning("--overwrite: removing %s", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if foreign:
            for name in ("README.md", "funnel.png"):
                (self.output / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ running

    def _chunk_fingerprint(self, digest: int, rows: int) -> str:
        return hashlib.sha256(f"{self.fingerprint}:{digest:x}:{rows}".encode()).hexdigest()

    def _chunk_paths(self, index: int) -> dict[str, Path]:
        stem = f"chunk-{index:05d}"
        paths = {config: self.work / f"{stem}.{config}.parquet" for config in CONFIG_FOLDERS}
        paths["marker"] = self.work / f"{stem}.json"
        return paths

    def plan(self, source: InputTable) -> ShardPlan | ShardSummary:
        """This shard's chunks (input slices and their fingerprints), or the summary of a
        shard an earlier run completed. Prepares the work folder."""
        start, stop = source.shard_bounds(self.shard_index, self.num_shards)
        shard_digest = 0
        chunks = []
        for index, offset in enumerate(range(start, stop, self.chunk_size)):
            table = source.slice(offset, min(stop, offset + self.chunk_size))
            digest, _ = input_digest(table, self.digest_columns)
            shard_digest = (shard_digest + digest) % _DIGEST_MOD
            chunks.append(Chunk(index, offset, len(table), self._chunk_fingerprint(digest, len(table))))
        shard_input = f"{shard_digest:064x}:{stop - start}"
        record = _read_json(self.stats_path)
        done = completed_shards(self.output, self.fingerprint, self.num_shards)
        if self.shard_index in done and record and record.get("input") == shard_input:
            logger.info("shard %d of %d is already complete in %s", self.shard_index + 1, self.num_shards, self.output)
            shutil.rmtree(self.work, ignore_errors=True)
            return ShardSummary(record["stats"], record["rows"], already_done=True, record=record)
        self.work.mkdir(parents=True, exist_ok=True)
        _write_json(self.work / "run.json", {"fingerprint": self.fingerprint})
        return ShardPlan(start, stop, shard_input, chunks)

    def run(
        self,
        source: InputTable,
        process: Callable[[dict[str, list]], ChunkOutput],
        defer: tuple[type[BaseException], ...] = (),
    ) -> ShardSummary:
        """Process this shard's rows of ``source`` chunk by chunk; return the shard's summed stats.

        A chunk whose ``process`` raises one of ``defer`` (answers that never came) is not
        written: the other chunks go on, and at the end ``ChunksDeferred`` names the chunks
        left for a rerun, which runs only those."""
        started = time.time()
        plan = self.plan(source)
        if isinstance(plan, ShardSummary):
            return plan
        summary = ShardSummary({}, plan.stop - plan.start)
        markers: dict[int, dict] = {}
        deferred: list[tuple[int, BaseException]] = []
        bar = tqdm(total=summary.rows, desc=f"shard {self.shard_index + 1}/{self.num_shards}", unit="row")
        for chunk in plan.chunks:
            marker = self.done_chunk(chunk)
            if marker is None:
                table = source.slice(chunk.offset, chunk.offset + chunk.rows)
                try:
                    output = process(table.to_pydict())
                except defer as exc:
                    logger.warning("chunk %d of %d left for a rerun: %s", chunk.index + 1, len(plan.chunks), exc)
                    deferred.append((chunk.index, exc))
                    bar.update(chunk.rows)
                    continue
                marker = self.write_chunk(chunk, output)
                summary.chunks_run += 1
                summary.rows_run += chunk.rows
            else:
                summary.chunks_skipped += 1
                logger.info("chunk %d of %d: done by an earlier run, skipped", chunk.index + 1, len(plan.chunks))
            markers[chunk.index] = marker
            bar.update(chunk.rows)
        bar.close()
        if deferred:
            raise ChunksDeferred([index for index, _ in deferred], len(plan.chunks), deferred[0][1])
        return self.finish(plan, markers, summary, started)

    def done_chunk(self, chunk: Chunk) -> dict | None:
        """The marker of ``chunk`` if an earlier run finished it with the same input and settings."""
        paths = self._chunk_paths(chunk.index)
        marker = _read_json(paths["marker"])
        if marker and marker.get("fingerprint") == chunk.fingerprint and all(p.exists() for p in paths.values()):
            return marker
        return None

    def write_chunk(self, chunk: Chunk, output: ChunkOutput) -> dict:
        """Write one finished chunk's rows, then its marker (the chunk is then done); return the marker."""
        paths = self._chunk_paths(chunk.index)
        for config, features in self.features.items():
            rows = output.rows[config]
            _write_parquet(paths[config], pa.Table.from_pydict(
                {name: rows.get(name, [None] * _length(rows)) for name in features}, schema=features.arrow_schema
            ), features.arrow_schema)  # fmt: skip
        marker = {"fingerprint": chunk.fingerprint, "rows": chunk.rows, "stats": output.stats}
        _write_json(paths["marker"], marker)  # last: the chunk is done
        return marker

    def finish(self, plan: ShardPlan, markers: dict[int, dict], summary: ShardSummary, started: float) -> ShardSummary:
        """Every chunk is done: the shard's files (its stats, the mark of a complete shard,
        come with ``commit``); the counts summed in chunk order."""
        total: dict = {}
        for chunk in plan.chunks:
            total = add_stats(total, markers[chunk.index]["stats"])
        for config, folder in CONFIG_FOLDERS.items():
            schema = self.features[config].arrow_schema
            (self.output / folder).mkdir(parents=True, exist_ok=True)
            parts = [self._chunk_paths(chunk.index)[config] for chunk in plan.chunks]
            _write_parquet_streaming(self.output / folder / f"{self.name}.parquet", parts, schema)
        summary.stats = total
        summary.wall_s = round(time.time() - started, 2)
        summary.record = {
            "fingerprint": self.fingerprint,
            "shard_index": self.shard_index,
            "num_shards": self.num_shards,
            "input": plan.input,
            "rows": plan.stop - plan.start,
            "stats": total,
            "this_run": {
                "chunks_run": summary.chunks_run,
                "chunks_skipped": summary.chunks_skipped,
                "rows_run": summary.rows_run,
            },
        }
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        return summary

    def commit(self, summary: ShardSummary, extra: dict) -> None:
        """Write the shard's stats file (the shard is then complete) and drop its chunks."""
        _write_json(self.stats_path, {**extra, **summary.record})
        shutil.rmtree(self.work, ignore_errors=True)
        try:
            (self.output / ".work").rmdir()
        except OSError:
            pass  # other shards of the job array are still working


def _length(columns: dict[str, list]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _write_parquet_streaming(path: Path, parts: list[Path], schema: pa.Schema) -> None:
    """Concatenate parquet files into one, one file in memory at a time."""
    partial = path.with_name(f".{path.name}.partial")
    with pq.ParquetWriter(partial, schema) as writer:
        for part in parts:
            table = pq.read_table(part)
            if len(table):
                writer.write_table(table.cast(schema))
    os.replace(partial, path)
