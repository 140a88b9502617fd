"""Shared fixtures: real bubblewrap sandboxes, and helpers to write small programs."""

from __future__ import annotations

import os
import textwrap

import pytest

from sandbox import Sandbox, SandboxConfig
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
