"""Output in the Hub layout, and publishing it.

A stage's output folder is what a Hub dataset repo holds, so ``load_dataset(folder)``
reads it and ``upload_folder`` publishes it unchanged::

    README.md                               the card (dataset_card/): YAML ``configs``, funnel, provenance
    funnel.png                              the funnel as a picture
    data/train-0000I-of-0000N.parquet       kept rows of shard I of N
    rejected/train-0000I-of-0000N.parquet   dropped rows with their drop_reason
    stats/shard-0000I-of-0000N.json         the shard's counts (``funnel``, ``dropped``, ...)

Shards of a job array write different files into one folder (stage 2's local engine
also keeps finished chunks under ``.work/`` until its shard is complete, and merges the
shards' counts into one card).
Parquet files are written row group by row group under a hidden name and renamed when
complete, so a killed run never leaves a truncated file where ``load_dataset`` looks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)


def shard_name(index: int, count: int) -> str:
    return f"train-{index:05d}-of-{count:05d}"


class ParquetSink:
    """Append rows to one parquet file; rename it into place on ``close``."""

    def __init__(self, path: Path, features: datasets.Features, rows_per_group: int = 1000):
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        self.features = features
        self.schema = features.arrow_schema
        self.rows_per_group = rows_per_group
        self.buffer: list[dict] = []
        self.count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.partial, self.schema)

    def add(self, row: dict) -> None:
        self.buffer.append({name: row.get(name) for name in self.features})
        self.count += 1
        if len(self.buffer) >= self.rows_per_group:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Append a table with (at least) this sink's columns, in this sink's schema."""
        self.flush()
        self.writer.write_table(table.select(list(self.features)).cast(self.schema))
        self.count += len(table)

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        os.replace(self.partial, self.path)


CONFIG_FOLDERS = {"default": "data", "rejected": "rejected"}


def read_local_config(output_dir: str | Path, config: str = "default") -> pa.Table | None:
    """One config of a local output folder, read from its parquet files directly.

    (``load_dataset(folder)`` would do, but it caches local folders by modification
    time, so a folder rewritten in place could come back stale.) None when the folder
    holds no such files.
    """
    if config not in CONFIG_FOLDERS:
        raise ValueError(f"unknown config {config!r}; a unitcoder output has {', '.join(CONFIG_FOLDERS)}")
    files = sorted(Path(output_dir).glob(f"{CONFIG_FOLDERS[config]}/train-*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


# What a published row *is*, for versioning: its content, not how long its checks took.
DIGEST_COLUMNS = {
    "default": ("id", "function_name", "code", "test_code", "prompt", "completion", "messages", "variants"),
    "rejected": ("id", "drop_reason"),
}


def rows_digest(output_dir: str | Path) -> str:
    """A digest of the rows an output folder publishes, independent of file layout, shard
    count and row order (sha256 over the sorted hashes of each row's content columns)."""
    overall = hashlib.sha256()
    for config, columns in DIGEST_COLUMNS.items():
        row_hashes = []
        for path in sorted(Path(output_dir).glob(f"{CONFIG_FOLDERS[config]}/train-*.parquet")):
            names = [c for c in columns if c in pq.ParquetFile(path).schema_arrow.names]
            for row in pq.read_table(path, columns=names).to_pylist():
                text = json.dumps([row.get(c) for c in columns], sort_keys=True, ensure_ascii=False)
                row_hashes.append(hashlib.sha256(text.encode()).hexdigest())
        overall.update(f"{config}:{len(row_hashes)}\n".encode())
        for row_hash in sorted(row_hashes):
            overall.update(row_hash.encode())
    return overall.hexdigest()


class InputTable:
    """A stage's input, read in slices so that memory holds one chunk at a time.

    ``InputTable.local(folder)`` reads a Hub-layout folder's parquet files (row groups on
    demand, never the whole table); ``InputTable.hub(repo, revision)`` a Hub dataset (its
    Arrow cache is memory-mapped). ``limit`` keeps the first rows; ``shard_bounds`` splits
    the rows into contiguous shards of a job array.
    """

    def __init__(self, num_rows: int, column_names: list[str], read, described: str):
        self.num_rows, self.column_names, self._read, self.described = num_rows, column_names, read, described

    @classmethod
    def local(cls, folder: str | Path, config: str = "default") -> InputTable | None:
        files = sorted(Path(folder).glob(f"{CONFIG_FOLDERS[config]}/train-*.parquet"))
        if not files:
            return None
        metas = [pq.ParquetFile(f) for f in files]
        groups = []  # (first row, rows, file index, row group index)
        start = 0
        for index, meta in enumerate(metas):
            for group in range(meta.num_row_groups):
                rows = meta.metadata.row_group(group).num_rows
                groups.append((start, rows, index, group))
                start += rows
        names = list(dict.fromkeys(name for meta in metas for name in meta.schema_arrow.names))

        def read(begin: int, end: int) -> pa.Table:
            parts = []
            for first, rows, index, group in groups:
                if first + rows <= begin or first >= end:
                    continue
                table = metas[index].read_row_group(group)
                parts.append(table.slice(max(0, begin - first), min(end, first + rows) - max(begin, first)))
            if not parts:
                return pa.table({name: pa.array([], pa.null()) for name in names})
            return pa.concat_tables(parts, promote_options="default")

        return cls(start, names, read, f"local folder {Path(folder).resolve().name}")

    @classmethod
    def hub(cls, repo_id: str, revision: str | None = None, split: str = "train") -> InputTable:
        data = datasets.load_dataset(repo_id, split=split, revision=revision)
        table = data.data.table
        return cls(
            len(table), table.column_names, lambda a, b: table.slice(a, b - a), f"{repo_id}@{revision or 'main'}"
        )

    def limit(self, rows: int | None) -> InputTable:
        if rows is not None and rows < self.num_rows:
            self.num_rows = rows
        return self

    def slice(self, start: int, stop: int) -> pa.Table:
        return self._read(start, min(stop, self.num_rows))

    def shard_bounds(self, index: int, count: int) -> tuple[int, int]:
        size = -(-self.num_rows // count)
        return min(self.num_rows, index * size), min(self.num_rows, (index + 1) * size)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers on its port (False at once when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def push_folder(output_dir: Path, repo_id: str, message: str, token: str | None = None) -> str:
    """Create the dataset repo if needed and upload the folder in one commit; return the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(output_dir),
        commit_message=message,
        allow_patterns=["README.md", "funnel.png", "data/*.parquet", "rejected/*.parquet", "stats/*.json"],
    )
    return str(getattr(commit, "commit_url", commit))


def publish_version(output_dir: Path, repo_id: str, version: dict, write_card, token: str | None = None) -> str:
    """Upload the folder as one commit and tag it ``version['tag']``, unless that tag exists.

    The tag is derived from the settings' fingerprint and a digest of the rows, so a rerun
    that publishes the same rows publishes nothing new. ``write_card(history)`` rewrites README.md with the
    version history (earlier tags plus this one) before the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    tags = sorted(tag.name for tag in refs.tags)
    if version["tag"] in tags:
        return f"{repo_id} already has version {version['tag']} (the same rows and settings): nothing published"
    history = [{"tag": tag} for tag in tags[-9:]] + [version]
    write_card(history)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(output_dir),
        commit_message=f"unitcoder {version['tag']}: {version['rows']} verified rows",
        allow_patterns=["README.md", "funnel.png", "data/*.parquet", "rejected/*.parquet", "stats/*.json"],
    )
    api.create_tag(
        repo_id,
        tag=version["tag"],
        revision=commit.oid,
        repo_type="dataset",
        tag_message=f"fingerprint {version['fingerprint']}, rows {version.get('rows_digest', '?')}",
    )
    return f"published {repo_id} version {version['tag']} ({commit.commit_url})"
