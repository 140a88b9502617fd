"""The persistent request cache: every answer received is kept, so a killed run resumes
without asking again, and a rerun with the same settings costs no generation. One sqlite
file (WAL mode) under ``--cache_dir``, safe across processes on one machine.

Answers are buffered and written in batches (one transaction per ``batch_size`` answers or
per ``max_age`` seconds, whichever comes first, and on ``flush()``/``close()``); the
generator flushes when a generation call returns. The cache refuses to open on a network
file system (NFS, Lustre, GPFS, ...), where SQLite's WAL mode is unsafe: point
``--cache_dir`` at a local disk, and merge the caches of job-array tasks afterwards with
``python -m processing.generation merge-caches SRC... DEST``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
import weakref
from pathlib import Path

from processing.generation.types import Completion, GenerationError, Request

logger = logging.getLogger(__name__)

CACHE_FILE = "requests.sqlite"
MOUNTS_FILE = "/proc/self/mounts"  # the mount table read by filesystem_type (a fake one in tests)
MERGE_COMMAND = "python -m processing.generation merge-caches SRC... DEST"

# File systems where SQLite's WAL mode is unsafe: its shared-memory index and locks do not
# work across machines (and often not reliably on one). FUSE types are matched by the part after
# "fuse." as well ("fuse.sshfs", "fuse.glusterfs", "fuse.ceph-fuse").
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "ceph-fuse",
        "cephfs",
        "sshfs",
        "glusterfs",
        "9p",
        "afs",
        "openafs",
        "coda",
        "orangefs",
        "pvfs2",
        "panfs",
        "wekafs",
        "quobyte",
        "juicefs",
        "davfs",
        "davfs2",
        "s3fs",
        "gcsfuse",
        "rclone",
    }
)

_COLUMNS = ("key", "model", "answer", "prompt_tokens", "completion_tokens", "finish_reason", "created")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT, "
    "prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, created REAL)"
)


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/unitcoder`` (``~/.cache/unitcoder`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unitcoder")


def _unescape_mount_field(field: str) -> str:
    # the kernel writes space, tab, newline and backslash in mount points as octal escapes (\040)
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str, mounts_file: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (``"ext4"``, ``"nfs4"``, ...): the entry of the
    mount table (``mounts_file``, by default ``MOUNTS_FILE``) with the longest mount point that
    contains the resolved path, the last one listed where several share it; None when the table
    cannot be read (not Linux)."""
    try:
        with open(mounts_file or MOUNTS_FILE, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(os.path.abspath(path))
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = _unescape_mount_field(fields[1])
        inside = mount_point == "/" or target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), fields[2])
    return best[1] if best else None


def is_network_filesystem(fs_type: str | None) -> bool:
    if not fs_type:
        return False
    fs_type = fs_type.lower()
    return fs_type in NETWORK_FILESYSTEMS or fs_type.removeprefix("fuse.") in NETWORK_FILESYSTEMS


def check_local(directory: str, mounts_file: str | None = None) -> None:
    """Raise ``GenerationError`` when ``directory`` is on a network file system."""
    fs_type = filesystem_type(directory, mounts_file)
    if is_network_filesystem(fs_type):
        raise GenerationError(
            f"the request cache directory {directory} is on a {fs_type} network file system, where SQLite's "
            "WAL mode is unsafe: pass a --cache_dir on a local disk (node-local scratch such as $TMPDIR) or "
            "--no_cache, and in a job array let each task keep its own local cache and merge them afterwards "
            f"with `{MERGE_COMMAND}`."
        )


def cache_file(source: str) -> str:
    """The sqlite file of a cache: ``source`` itself, or the ``requests.sqlite`` in the directory ``source``."""
    path = os.path.join(source, CACHE_FILE) if os.path.isdir(source) else source
    if not os.path.isfile(path):
        raise GenerationError(
            f"there is no request cache at {source} (neither a file nor a directory holding {CACHE_FILE})."
        )
    return path


def _read_only_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def _check_schema(db: sqlite3.Connection, schema: str, path: str) -> None:
    try:
        columns = {row[1] for row in db.execute(f"PRAGMA {schema}.table_info(answers)")}
    except sqlite3.DatabaseError as error:
        raise GenerationError(f"{path} is not a unitcoder request cache ({error}).") from None
    if not set(_COLUMNS) <= columns:
        raise GenerationError(f"{path} is not a unitcoder request cache (it has no table of answers).")


def check_cache_source(source: str) -> str:
    """The sqlite file of the cache at ``source``, opened read-only to check that it is one; raises
    ``GenerationError`` (one sentence) when it is missing or not a unitcoder request cache."""
    path = cache_file(source)
    try:
        db = sqlite3.connect(_read_only_uri(path), uri=True)
    except sqlite3.Error as error:
        raise GenerationError(f"cannot open {path} as a request cache ({error}).") from None
    try:
        _check_schema(db, "main", path)
    finally:
        db.close()
    return path


_open_caches: weakref.WeakSet[RequestCache] = weakref.WeakSet()


@atexit.register
def _flush_open_caches() -> None:
    # a normal interpreter exit (an exception, sys.exit, Ctrl-C) keeps what is still buffered
    for cache in list(_open_caches):
        try:
            cache.flush()
        except Exception as error:  # (at exit there is no one left to raise to)
            logger.warning("could not write the last answers to the request cache %s: %s", cache.path, error)


class RequestCache:
    """Answers by (backend, model, prompt, sampling, sample index), in sqlite (safe across processes).

    ``put`` buffers an answer; the buffer is written in one transaction when it holds
    ``batch_size`` answers, when its oldest answer is ``max_age`` seconds old (on the next
    ``put``, or by a timer thread when no ``put`` comes), on ``flush()`` and on ``close()``.
    ``get_many`` sees buffered answers too. All methods are thread-safe (one lock).

    Durability: the file is in WAL mode with ``synchronous=NORMAL``. A killed process
    (``kill -9``, out-of-memory) loses at most the answers still buffered (at most
    ``batch_size`` answers or ``max_age`` seconds' worth) and never corrupts the file: every
    committed transaction is in the WAL, which the next open replays. Only a crash of the
    operating system or a power loss can also undo the last transactions committed before
    it, still leaving a consistent file. This holds on a local disk only: the constructor
    refuses a directory on a network file system (``check_local``).
    """

    def __init__(self, directory: str, batch_size: int = 512, max_age: float = 0.5):
        check_local(directory)
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = os.path.join(directory, CACHE_FILE)
        self.batch_size = max(1, batch_size)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._pending: dict[str, tuple] = {}
        self._oldest = 0.0  # time.monotonic() of the oldest buffered answer
        self._timer: threading.Timer | None = None
        self._closed = False
        # autocommit mode: the transactions are ours (BEGIN IMMEDIATE ... COMMIT); uri=True lets merge_from
        # attach a source read-only (an absolute path is never taken for a URI)
        self._db = sqlite3.connect(
            os.path.abspath(self.path), timeout=60, check_same_thread=False, isolation_level=None, uri=True
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        _open_caches.add(self)

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def key(backend: str, model: str, request: Request, sample_index: int) -> str:
        payload = [backend, model, request.message_list(), request.temperature, request.top_p, request.max_tokens]
        payload += [request.seed - sample_index, sample_index]
        if request.is_raw or request.stop:  # (chat requests without stop strings keep their old keys)
            payload.append({"text": request.text, "stop": list(request.stop)})
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._lock:
            self._check_open()
            rest = []
            for key in keys:
                row = self._pending.get(key)
                if row is None:
                    rest.append(key)
                else:
                    found[key] = Completion(row[2], row[3], row[4], row[5])
            for start in range(0, len(rest), 500):
                chunk = rest[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, answer, prompt_tokens, completion_tokens, finish_reason FROM answers WHERE key IN ({marks})",
                    chunk,
                )
                for key, answer, prompt_tokens, completion_tokens, finish in rows:
                    found[key] = Completion(answer, prompt_tokens, completion_tokens, finish)
        return found

    def put(self, key: str, model: str, completion: Completion) -> None:
        """Buffer one answer (a later answer for the same key replaces it)."""
        row = (
            key,
            model,
            completion.text,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.finish_reason,
            time.time(),
        )
        with self._lock:
            self._check_open()
            now = time.monotonic()
            if not self._pending:
                self._oldest = now
            self._pending[key] = row
            if len(self._pending) >= self.batch_size or now - self._oldest >= self.max_age:
                self._write()
            elif self._timer is None:
                # invariant: while answers are buffered, a timer is pending
                self._timer = threading.Timer(self.max_age, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write every buffered answer now (one transaction); after it returns they survive a kill."""
        with self._lock:
            if not self._closed and self._pending:
                self._write()

    def merge_from(self, source: str) -> tuple[int, int]:
        """Copy into this cache, in one transaction, every answer of the cache at ``source`` (a
        directory or its ``requests.sqlite``, opened read-only) whose key this cache lacks;
        returns (answers added, answers in the source)."""
        path = cache_file(source)
        if os.path.samefile(path, self.path):
            raise GenerationError(f"{source} is the destination cache itself.")
        names = ", ".join(_COLUMNS)
        with self._lock:
            self._check_open()
            if self._pending:
                self._write()
            try:
                self._db.execute("ATTACH DATABASE ? AS source", (_read_only_uri(path),))
            except sqlite3.Error as error:
                raise GenerationError(f"cannot open {path} as a request cache ({error}).") from None
            try:
                _check_schema(self._db, "source", path)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    added = self._db.execute(
                        f"INSERT OR IGNORE INTO main.answers ({names}) SELECT {names} FROM source.answers"
                    ).rowcount
                    total = self._db.execute("SELECT count(*) FROM source.answers").fetchone()[0]
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                self._db.execute("DETACH DATABASE source")
        return added, total

    def count(self) -> int:
        """How many answers the cache holds (written or buffered)."""
        with self._lock:
            self._check_open()
            written = self._db.execute("SELECT count(*) FROM answers").fetchone()[0]
            if not self._pending:
                return written
            keys = list(self._pending)
            stored = 0
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                stored += self._db.execute(f"SELECT count(*) FROM answers WHERE key IN ({marks})", chunk).fetchone()[0]
            return written + len(keys) - stored

    def close(self) -> None:
        """Write what is buffered and close the file (closing twice is harmless)."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._pending:
                    self._write()
            finally:
                self._closed = True
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                _open_caches.discard(self)
                self._db.close()

    def _check_open(self) -> None:
        if self._closed:
            raise GenerationError(f"the request cache {self.path} is closed.")

    def _write(self) -> None:
        # (the lock is held) one transaction for the whole buffer; on failure the buffer is kept
        rows = list(self._pending.values())
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(f"INSERT OR REPLACE INTO answers VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._pending.clear()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed or not self._pending:
                return
            try:
                self._write()
            except Exception as error:  # kept buffered: the next flush (or put) tries again and raises
                logger.warning("could not write to the request cache %s (will retry): %s", self.path, error)
                self._timer = threading.Timer(self.max_age, self._on_timer)
                self._timer.daemon = True
                self._timer.start()
