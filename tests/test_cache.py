"""The request cache: batched writes, durability (a flush, a close, a kill -9), the refusal
of network file systems, and ``python -m processing.generation merge-caches``."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import processing.generation.cache as cache_module
from processing.generation import Completion, GenerationError, Generator, RequestCache, Sampling, ScriptedBackend
from processing.generation.cache import default_cache_dir, filesystem_type, is_network_filesystem

REPO = Path(__file__).resolve().parent.parent


def answer(i: int, size: int = 2000) -> Completion:
    return Completion(f"answer {i} " + "x" * size, 10 + i, 20 + i, "stop")


def stored_keys(directory: Path) -> set[str]:
    """The keys committed to the file, read by an independent connection (no buffer)."""
    db = sqlite3.connect(directory / "requests.sqlite")
    try:
        return {row[0] for row in db.execute("SELECT key FROM answers")}
    finally:
        db.close()


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def merge(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "processing.generation", "merge-caches", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- batched writes


def test_buffered_answers_are_seen_by_get_many_and_written_on_flush(tmp_path):
    cache = RequestCache(str(tmp_path), batch_size=1000, max_age=60)
    for i in range(3):
        cache.put(f"k{i}", "m", answer(i))
    cache.put("k1", "m", Completion("replaced", 1, 2, "length"))  # the last answer for a key wins
    found = cache.get_many(["k0", "k1", "k2", "missing"])
    assert set(found) == {"k0", "k1", "k2"}
    assert found["k0"] == answer(0) and found["k1"] == Completion("replaced", 1, 2, "length")
    assert cache.count() == 3
    assert stored_keys(tmp_path) == set()  # still buffered
    cache.flush()
    assert stored_keys(tmp_path) == {"k0", "k1", "k2"}
    cache.put("k3", "m", answer(3))
    cache.close()
    cache.close()  # (twice is harmless)
    reopened = RequestCache(str(tmp_path))
    found = reopened.get_many([f"k{i}" for i in range(4)])
    assert found == {"k0": answer(0), "k1": Completion("replaced", 1, 2, "length"), "k2": answer(2), "k3": answer(3)}
    reopened.close()
    with pytest.raises(GenerationError, match="closed"):
        reopened.put("k4", "m", answer(4))


def test_the_buffer_is_written_when_full_and_when_old(tmp_path):
    full = RequestCache(str(tmp_path / "full"), batch_size=4, max_age=60)
    for i in range(6):
        full.put(f"k{i}", "m", answer(i))
    assert stored_keys(tmp_path / "full") == {"k0", "k1", "k2", "k3"}
    old = RequestCache(str(tmp_path / "old"), batch_size=1000, max_age=0.1)
    old.put("a", "m", answer(0))  # no later put: the timer thread writes it
    assert wait_for(lambda: stored_keys(tmp_path / "old") == {"a"})
    old.put("b", "m", answer(1))  # a buffer started after a write gets its own timer
    time.sleep(0.15)
    old.put("c", "m", answer(2))
    assert wait_for(lambda: stored_keys(tmp_path / "old") == {"a", "b", "c"})
    full.close()
    old.close()


def test_answers_are_durable_when_a_generation_call_returns(tmp_path):
    cache = RequestCache(str(tmp_path), batch_size=1000, max_age=60)
    generator = Generator(ScriptedBackend([{"match": "question", "answer": "an answer"}]), cache)
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    assert generator.generate(conversations, Sampling(n=2)) == [["an answer"] * 2] * 5
    assert len(stored_keys(tmp_path)) == 10  # written before generate returned, though the buffer was not full


def test_a_kill_9_mid_write_loses_nothing_flushed_and_corrupts_nothing(tmp_path):
    child = textwrap.dedent(
        """
        import sys
        from processing.generation.cache import RequestCache
        from processing.generation.types import Completion

        cache = RequestCache(sys.argv[1], batch_size=64, max_age=60)
        i = 0
        while True:
            cache.put(f"k{i}", "m", Completion(f"answer {i} " + "x" * 2000, 1, 2, "stop"))
            i += 1
            if i % 100 == 0:
                cache.flush()
                print(i, flush=True)
        """
    )
    directory = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, "-c", child, str(directory)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flushed = 0
    try:
        while flushed < 3000:
            line = process.stdout.readline()
            assert line, f"the writer died: {process.stderr.read()}"
            flushed = int(line)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    db = sqlite3.connect(directory / "requests.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    reopened = RequestCache(str(directory))
    keys = [f"k{i}" for i in range(flushed)]
    found = reopened.get_many(keys)
    assert len(found) == flushed
    assert found[f"k{flushed - 1}"].text == f"answer {flushed - 1} " + "x" * 2000
    reopened.close()


# --------------------------------------------------------------------------- network file systems


def mount_point(path: Path) -> str:
    return os.path.realpath(path).replace("\\", "\\134").replace(" ", "\\040")


def test_the_file_system_type_comes_from_the_longest_mount_point(tmp_path):
    home = tmp_path / "home dir"
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw,relatime 0 0\n"
        f"server:/export {mount_point(tmp_path / 'home')} nfs4 rw 0 0\n"  # a sibling prefix, not a parent
        f"server:/export/home {mount_point(home)} nfs4 rw 0 0\n"
        f"tmpfs {mount_point(home / 'scratch')} tmpfs rw 0 0\n"
        f"user@host:/d {mount_point(tmp_path / 'remote')} fuse.sshfs rw 0 0\n"
        f"/dev/vdb {mount_point(tmp_path / 'remote')} xfs rw 0 0\n"  # mounted over it: the last one shows
    )
    assert filesystem_type(str(home / "u" / ".cache"), str(mounts)) == "nfs4"
    assert filesystem_type(str(home), str(mounts)) == "nfs4"
    assert filesystem_type(str(home / "scratch" / "c"), str(mounts)) == "tmpfs"
    assert filesystem_type(str(tmp_path / "home2"), str(mounts)) == "ext4"
    assert filesystem_type(str(tmp_path / "remote" / "c"), str(mounts)) == "xfs"
    assert filesystem_type(str(tmp_path), str(tmp_path / "no-such-table")) is None
    assert all(map(is_network_filesystem, ["nfs", "NFS4", "lustre", "gpfs", "fuse.sshfs", "fuse.glusterfs", "9p"]))
    assert not any(map(is_network_filesystem, ["ext4", "xfs", "tmpfs", "overlay", "fuse.lxcfs", None]))


def test_the_cache_refuses_a_home_directory_on_nfs(tmp_path, monkeypatch):
    home = tmp_path / "home"
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export/home {mount_point(home)} nfs4 rw,relatime 0 0\n")
    monkeypatch.setattr(cache_module, "MOUNTS_FILE", str(mounts))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    with pytest.raises(GenerationError) as refused:
        RequestCache(default_cache_dir())
    sentence = str(refused.value)
    assert f"{home / '.cache' / 'unitcoder'} is on a nfs4 network file system" in sentence
    for advice in ("--cache_dir", "$TMPDIR", "--no_cache", "job array", "python -m processing.generation merge-caches"):
        assert advice in sentence
    assert sentence.endswith(".") and ". " not in sentence.replace("SRC...", "SRC")  # one sentence
    assert not (home / ".cache").exists()  # nothing was created there
    local = RequestCache(str(tmp_path / "local"))  # the same table, a directory on the local disk
    local.close()


# --------------------------------------------------------------------------- merge-caches


def filled(directory: Path, answers: dict[str, str]) -> Path:
    with RequestCache(str(directory)) as cache:
        for key, text in answers.items():
            cache.put(key, "m", Completion(text, 1, 2, "stop"))
    return directory


def test_merge_caches_copies_what_dest_lacks(tmp_path):
    first = filled(tmp_path / "task-0", {"a": "a from 0", "b": "b from 0"})
    second = filled(tmp_path / "task-1", {"b": "b from 1", "c": "c from 1"})
    dest = filled(tmp_path / "merged", {"z": "z from dest", "a": "a from dest"})
    result = merge(str(first), str(second / "requests.sqlite"), str(dest))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{first}: 1 answers added (1 of its 2 already in")
    assert lines[1].startswith(f"{second / 'requests.sqlite'}: 1 answers added (1 of its 2 already in")
    assert lines[2].endswith("4 answers in all")
    with RequestCache(str(dest)) as merged:
        found = merged.get_many(["a", "b", "c", "z"])
    assert {key: c.text for key, c in found.items()} == {
        "a": "a from dest",  # what DEST had is kept
        "b": "b from 0",  # the first source that has a key gives its answer
        "c": "c from 1",
        "z": "z from dest",
    }
    again = merge(str(first), str(second), str(tmp_path / "new"))  # a new DEST is created
    assert again.returncode == 0 and "2 answers added" in again.stdout and "3 answers in all" in again.stdout


def test_merge_caches_stops_on_a_missing_source_or_a_file_that_is_not_a_cache(tmp_path):
    good = filled(tmp_path / "good", {"a": "a"})
    dest = tmp_path / "dest"
    missing = merge(str(good), str(tmp_path / "nowhere"), str(dest))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and f"no request cache at {tmp_path / 'nowhere'}" in missing.stderr
    assert not dest.exists()  # every source is checked before anything is written
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 100)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    for bad in (text, other):
        result = merge(str(bad), str(dest))
        assert result.returncode == 2 and f"{bad} is not a unitcoder request cache" in result.stderr
        assert result.stderr.count("\n") == 1


def test_a_refused_cache_stops_the_run_before_a_model_is_loaded(tmp_path, monkeypatch):
    from processing.generation import GenerationArgs, build_generator

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/scratch {mount_point(tmp_path)} nfs rw 0 0\n")
    monkeypatch.setattr(cache_module, "MOUNTS_FILE", str(mounts))
    args = GenerationArgs(
        backend="scripted", model=str(tmp_path / "no-such-rules.jsonl"), cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(GenerationError, match="network file system"):  # not "does not exist": the model never loads
        build_generator(args)
