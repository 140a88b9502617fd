"""Shared fixtures: real bubblewrap sandboxes, and helpers to write small programs."""

from __future__ import annotations

import os
import textwrap
import types
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig, VerifyResult
from sandbox.bwrap import UID_BASE


def unit_tests(*bodies: str, setup: str = "") -> str:
    """A ``TestCases`` module with one test method per body (bodies are dedented)."""
    lines = ["import unittest", "", setup, "", "class TestCases(unittest.TestCase):"]
    for index, body in enumerate(bodies):
        lines.append(f"    def test_{index}(self):")
        lines.append(textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8))
    return "\n".join(lines) + "\n"


def sandbox_processes() -> list[int]:
    """Host pids of processes running as one of the sandbox's per-slot uids."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) >= UID_BASE:
                            pids.append(int(entry))
                        break
        except OSError:
            continue
    return pids


@pytest.fixture(scope="session")
def sandbox():
    """Two workers with the default preload, a short timeout: the common case."""
    with Sandbox(SandboxConfig(workers=2, timeout=8)) as pool:
        yield pool


@pytest.fixture
def make_sandbox():
    """Start pools with custom settings (no preload unless asked); closed after the test."""
    pools = []

    def make(**settings) -> Sandbox:
        settings.setdefault("preload", ())
        settings.setdefault("workers", 1)
        pool = Sandbox(SandboxConfig(**settings)).start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def verify_one(pool: Sandbox, code: str, test_code: str):
    (result,) = pool.verify([(code, test_code)])
    return result


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records what would be sent."""

    def __init__(self, tags=()):
        self.tags = list(tags)
        self.calls = []

    def install(self, monkeypatch):
        import huggingface_hub

        hub = self
        monkeypatch.setattr(
            huggingface_hub.HfApi,
            "create_repo",
            lambda self, repo_id, **kw: hub.calls.append(("create_repo", repo_id, kw)),
        )
        monkeypatch.setattr(
            huggingface_hub.HfApi,
            "list_repo_refs",
            lambda self, repo_id, **kw: types.SimpleNamespace(tags=[types.SimpleNamespace(name=t) for t in hub.tags]),
        )

        def upload_folder(self, **kw):
            folder = Path(kw["folder_path"])
            files = sorted(
                p.relative_to(folder).as_posix()
                for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".")
            )
            hub.calls.append(("upload_folder", kw, files, (folder / "README.md").read_text()))
            return types.SimpleNamespace(oid="c0ffee", commit_url="https://huggingface.co/datasets/me/x/commit/c0ffee")

        def create_tag(self, repo_id, **kw):
            hub.calls.append(("create_tag", repo_id, kw))
            hub.tags.append(kw["tag"])

        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_tag", create_tag)

    @property
    def uploads(self) -> list[dict]:
        """What each upload_folder call would have sent: its files and card."""
        return [{"files": files, "card": card} for kind, _, files, card in self._uploads()]

    def _uploads(self):
        return [call for call in self.calls if call[0] == "upload_folder"]


class Flaky:
    """The real sandbox, except that the first ``failures`` calls return a sandbox_error for the pair at
    ``index`` (as when a worker dies): infrastructure trouble, injected."""

    def __init__(self, real, failures: int, index: int = 0):
        self.real, self.failures, self.index, self.calls = real, failures, index, []

    def verify(self, pairs, **kwargs):
        pairs = list(pairs)
        self.calls.append(len(pairs))
        results = self.real.verify(pairs, **kwargs)
        if len(self.calls) <= self.failures:
            results[min(self.index, len(results) - 1)] = VerifyResult(
                "sandbox_error", details="the sandbox worker failed: injected", reason="sandbox_internal"
            )
        return results
