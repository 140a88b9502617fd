"""Stage 1's input: a Hub dataset with The Stack's schema, local files, or a folder of code.

Whatever the source, rows come out with the same columns (``SOURCE_COLUMNS``); Hub
datasets that name them differently (``bigcode/the-stack-smol`` uses ``repository_name``,
``path``, ``licenses``) are mapped, and rows without ``hexsha`` get the git blob hash of
their content.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
from datasets import Dataset, IterableDataset, load_dataset

logger = logging.getLogger(__name__)

SOURCE_FEATURES = datasets.Features(
    {
        "content": datasets.Value("string"),
        "max_stars_repo_name": datasets.Value("string"),
        "max_stars_repo_path": datasets.Value("string"),
        "max_stars_repo_licenses": datasets.Sequence(datasets.Value("string")),
        "hexsha": datasets.Value("string"),
        "size": datasets.Value("int64"),
        "ext": datasets.Value("string"),
        "read_error": datasets.Value("string"),
        # Rows listed from a folder carry the file's path and are read by the extraction
        # step itself (in parallel, and without copying the corpus into the cache).
        "local_path": datasets.Value("string"),
    }
)
SOURCE_COLUMNS = tuple(SOURCE_FEATURES)
# Other names the same fields go by in Stack-style datasets.
ALIASES = {
    "max_stars_repo_name": ("repository_name", "repo_name", "repo"),
    "max_stars_repo_path": ("path", "file_path"),
    "max_stars_repo_licenses": ("licenses", "license"),
}
SOURCE_SUFFIXES = (".py",)


def git_blob_sha(data: bytes) -> str:
    """The hash git (and The Stack's ``hexsha``) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def installed_source_roots(language: str = "python") -> list[str]:
    """The embedded corpus: where this interpreter's standard library and site-packages
    live; for JavaScript, the npm packages the sandbox installed and those Node ships (npm
    itself, corepack: ``lib/node_modules`` of the ``node`` that runs programs)."""
    if language == "javascript":
        from sandbox.javascript import SETUP_HINT, find_node, packages_dir

        modules = packages_dir() / "node_modules"
        if not modules.is_dir():
            raise ValueError(
                f"no JavaScript packages are installed in {modules.parent} to read as a corpus: {SETUP_HINT}"
            )
        bundled = Path(find_node()).resolve().parent.parent / "lib" / "node_modules"
        return [os.path.realpath(r) for r in (modules, bundled) if r.is_dir()]
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"], paths["platlib"]]
    return sorted({os.path.realpath(r) for r in roots if os.path.isdir(r)})


def walk_sources(roots: list[str], suffixes: tuple[str, ...] = SOURCE_SUFFIXES) -> Iterator[tuple[str, str]]:
    """(root, file) for every Python file below the roots, sorted, each root's nested roots excluded."""
    roots = [os.path.realpath(r) for r in roots]
    for root in roots:
        nested = {r for r in roots if r != root and r.startswith(root + os.sep)}
        for current, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and os.path.join(current, d) not in nested)
            for name in sorted(files):
                if name.endswith(suffixes):
                    yield root, os.path.join(current, name)


def source_files(roots: list[str], suffixes: tuple[str, ...] = SOURCE_SUFFIXES) -> list[list]:
    """[root, path, size, mtime_ns] for every Python file below the roots. Passed to the
    row generator as a list, so that datasets can shard it and its cache notices changes."""
    files = []
    for root, path in walk_sources(roots, suffixes):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        files.append([root, path, stat.st_size, stat.st_mtime_ns])
    return files


def list_source_files(files: list[list]) -> Iterator[dict]:
    """One Stack-schema row per file, content not yet read: repo = top folder below the
    root (the root's own name for files directly in it), path relative to the root."""
    for root, path, size, _ in files:
        rel = os.path.relpath(path, root)
        parts = Path(rel).parts
        yield {
            "content": None,
            "max_stars_repo_name": parts[0] if len(parts) > 1 else os.path.basename(root),
            "max_stars_repo_path": rel,
            "max_stars_repo_licenses": [],
            "hexsha": None,
            "size": size,
            "ext": Path(path).suffix.lstrip("."),
            "read_error": None,
            "local_path": path,
        }


def listing_dataset(files: list[list], cache_dir: str | None = None) -> Dataset:
    """The rows of ``list_source_files(files)`` as a memory-mapped Arrow file in the datasets
    cache, named by a hash of the listing (paths, sizes, modification times).

    The same listing gives the same file, hence the same fingerprint, so a rerun over an
    unchanged folder finds its extraction cached; a file that changed gives another name.
    Written with pyarrow rather than ``Dataset.from_generator``: a datasets builder also
    patches the reading functions of several libraries for streaming, which imports scipy
    and costs a third of a second of a small run."""
    digest = hashlib.sha1(json.dumps(files).encode("utf-8", "surrogatepass")).hexdigest()
    folder = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "unitcoder-listings"
    path = folder / f"{digest}.arrow"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        schema = SOURCE_FEATURES.arrow_schema
        table = pa.Table.from_pylist(list(list_source_files(files)), schema=schema)
        partial = folder / f".{digest}.{os.getpid()}.partial"
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(table)
        os.replace(partial, path)  # whole or absent, whichever process wins
    return Dataset.from_file(str(path))


def read_source(path: str, max_bytes: int) -> tuple[str | None, str | None, str | None]:
    """(content, hexsha, read_error) of a local file; large files are not read at all."""
    try:
        if os.path.getsize(path) > max_bytes:
            return None, None, "too_large"
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return None, None, f"unreadable: {exc.strerror}"
    sha = git_blob_sha(data)
    if b"\x00" in data:
        return None, sha, "binary"
    try:
        return data.decode("utf-8"), sha, None
    except UnicodeDecodeError as exc:
        return None, sha, f"not_utf8: {exc.reason} at byte {exc.start}"


def shard_corpus(corpus: Dataset | IterableDataset, num_shards: int, index: int) -> Dataset | IterableDataset:
    """Shard ``index`` of ``num_shards``: contiguous rows, or a streamed dataset's files."""
    if isinstance(corpus, Dataset):
        return corpus.shard(num_shards=num_shards, index=index, contiguous=True)
    if corpus.num_shards >= num_shards:
        return corpus.shard(num_shards=num_shards, index=index)
    logger.warning(
        "the streamed input has %d file(s), fewer than %d shards: each shard reads it all and keeps every %d-th row",
        corpus.num_shards,
        num_shards,
        num_shards,
    )
    return corpus.filter(lambda _, position: position % num_shards == index, with_indices=True)


def normalize_columns(batch: dict[str, list]) -> dict[str, list]:
    """Map a Stack-style batch onto SOURCE_COLUMNS (a ``map(batched=True)`` function)."""
    n = len(next(iter(batch.values()))) if batch else 0
    out: dict[str, list] = {}
    for column in SOURCE_COLUMNS:
        if column in batch:
            out[column] = batch[column]
            continue
        alias = next((a for a in ALIASES.get(column, ()) if a in batch), None)
        out[column] = batch[alias] if alias else [None] * n
    out["max_stars_repo_licenses"] = [
        [v] if isinstance(v, str) else list(v or []) for v in out["max_stars_repo_licenses"]
    ]
    for i, content in enumerate(out["content"]):
        if out["hexsha"][i] is None and content is not None:
            out["hexsha"][i] = git_blob_sha(content.encode("utf-8", "surrogatepass"))
        if not out["size"][i] and content is not None:
            out["size"][i] = len(content.encode("utf-8", "surrogatepass"))
    out["ext"] = [e or "py" for e in out["ext"]]
    return out


def check_input(*, source_dirs: list[str] | None, data_files: list[str] | None, dataset: str | None) -> None:
    """Raise ValueError (one sentence, naming the flag) for input that cannot be read: a
    ``--source_dir`` that is not a folder, a ``--data_files`` entry that matches no file
    or has another suffix than .parquet/.jsonl/.json, an ``--input_dataset`` that is
    neither a folder nor a repo id. Cheap: nothing is listed or downloaded."""
    for root in source_dirs or ():
        if not os.path.isdir(root):
            raise ValueError(f"--source_dir {root} is not a directory; give folders of code")
    for pattern in data_files or ():
        if "://" in pattern:
            continue  # a remote file (hf://, https://): load_dataset says whether it exists
        if Path(pattern).suffix.lower() not in DATA_FILE_BUILDERS:
            raise ValueError(f"--data_files {pattern} is not a .parquet or .jsonl file")
        if not glob.glob(pattern):
            raise ValueError(f"--data_files {pattern} does not exist")
    if dataset and dataset.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(dataset)):
        raise ValueError(
            f"--input_dataset {dataset} is not a folder; give a local folder of parquet files or a Hub repo id"
        )


DATA_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def public_name(location: str) -> str:
    """How a card names an input: a Hub id as it is, a local file or folder by its name only
    (an absolute local path says nothing to a reader and leaks the machine's layout)."""
    if os.path.exists(location) or os.path.isabs(location):
        return Path(location).resolve().name or str(location)
    return location


def load_corpus(
    *,
    dataset: str | None,
    data_dir: str | None,
    data_files: list[str] | None,
    split: str,
    revision: str | None,
    source_dirs: list[str] | None,
    streaming: bool,
    num_proc: int | None,
    suffixes: tuple[str, ...] = SOURCE_SUFFIXES,
    language: str = "python",
) -> tuple[Dataset | IterableDataset, str]:
    """The input rows (Stack schema) and a one-line description of where they came from.

    Raises ValueError with one sentence when the input cannot be read (a Hub dataset that
    does not exist or cannot be reached, files without a ``content`` column, folders
    without source files of the language)."""
    if source_dirs is not None or (dataset is None and not data_files):
        roots = source_dirs or installed_source_roots(language)
        for root in roots:
            if not os.path.isdir(root):
                raise ValueError(f"--source_dir {root} is not a directory; give folders of code")
        installed = (
            "installed JavaScript packages (the sandbox's and Node's) "
            if language == "javascript"
            else "installed Python sources "
        )
        described = installed if source_dirs is None else "source folders "
        described += ", ".join(public_name(root) for root in roots)
        kwargs = {"files": source_files(roots, suffixes)}
        if not kwargs["files"]:
            raise ValueError(
                f"no {'/'.join(suffixes)} files found below {', '.join(roots)}; give folders that hold such files "
                "(or another --language)"
            )
        if streaming:
            return IterableDataset.from_generator(
                list_source_files, features=SOURCE_FEATURES, gen_kwargs=kwargs
            ), described
        return listing_dataset(kwargs["files"]), described
    if data_files:
        builder = DATA_FILE_BUILDERS.get(Path(data_files[0]).suffix.lower())
        if builder is None:
            raise ValueError(f"--data_files must be .parquet or .jsonl files, got {data_files[0]}")
        try:
            raw = load_dataset(builder, data_files=data_files, split="train", streaming=streaming)
        except Exception as exc:
            raise ValueError(f"cannot read --data_files {', '.join(data_files)} ({_cause(exc)})") from exc
        described = f"local {builder} files {', '.join(public_name(f) for f in data_files)}"
    else:
        try:
            raw = load_dataset(dataset, data_dir=data_dir, split=split, revision=revision, streaming=streaming)
        except Exception as exc:
            raise ValueError(
                f"cannot load --input_dataset {dataset} ({_cause(exc)}); check its name, --data_dir, --split and "
                "--input_revision, and that the Hub is reachable (a gated or private dataset needs a token)"
            ) from exc
        described = f"{public_name(dataset)}" + (f" ({data_dir})" if data_dir else "") + f" split {split}"
        described += f" revision {revision}" if revision else ""
    if "content" not in (raw.column_names or []):
        raise ValueError(
            f"the input has no 'content' column (columns: {raw.column_names}), so it is not Stack-style code"
        )
    keep_other = [c for c in raw.column_names if c not in SOURCE_COLUMNS]
    kwargs = {"batched": True, "remove_columns": keep_other, "features": SOURCE_FEATURES}
    if not streaming:
        kwargs.update(num_proc=num_proc, desc="normalising columns")
    return raw.map(normalize_columns, **kwargs), described


def _cause(exc: BaseException) -> str:
    """An exception as one short clause: its type and the first line of its message."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
