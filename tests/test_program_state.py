"""Nothing a program leaves behind reaches another program: IPC, network, keys, uids."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sandbox.bwrap
from conftest import unit_tests, verify_one

REPO = Path(__file__).resolve().parents[1]
NOOP = "def noop():\n    return None\n"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="programs switch to uids of their own only under root")


@pytest.fixture(params=["clone", "unshare"])
def one_worker(request, make_sandbox, monkeypatch):
    """A one-worker pool on each of the zygote's two ways to make a program's namespaces."""
    if request.param == "unshare":
        settings = sandbox.bwrap.zygote_settings
        monkeypatch.setattr(sandbox.bwrap, "zygote_settings", lambda *a: {**settings(*a), "no_clone": True})
    pool = make_sandbox(workers=1)
    assert pool._workers[0].hello["clone"] == (request.param == "clone")
    return pool


def uid_of(pool) -> int:
    result = verify_one(pool, NOOP, unit_tests("import os\nself.fail(f'uid={os.getuid()}')"))
    return int(re.search(r"uid=(\d+)", result.details).group(1))


# ---------------------------------------------------------------------------- SysV IPC and network

SHM_PLANT = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget({key}, 64 << 20, 0o1600)  # IPC_CREAT, 0600: 64 MiB that nobody removes
self.assertGreaterEqual(shmid, 0, ctypes.get_errno())
"""
SHM_CHECK = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
self.assertEqual(libc.shmget({key}, 0, 0), -1)
self.assertEqual(ctypes.get_errno(), errno.ENOENT)
self.assertEqual(open("/proc/sysvipc/shm").read().splitlines()[1:], [])
"""


def test_sysv_shared_memory_does_not_outlive_its_program(one_worker):
    key = random.randrange(1 << 16, 1 << 30)
    plant, check = unit_tests(SHM_PLANT.format(key=key)), unit_tests(SHM_CHECK.format(key=key))
    results = one_worker.verify([(NOOP, plant), (NOOP, check)])  # the same worker, one after the other
    assert results[0].status == "pass", results[0].details
    assert results[1].status == "pass", results[1].details


TIME_WAIT_PLANT = """
import socket
server = socket.socket()
server.bind(("127.0.0.1", {port}))
server.listen(1)
client = socket.create_connection(("127.0.0.1", {port}))
conn, _ = server.accept()
conn.close()  # the server's side closes first: port {port} waits in TIME_WAIT
client.close()
server.close()
states = [line.split()[3] for line in open("/proc/net/tcp").read().splitlines()[1:] if ":{port:04X} " in line]
self.assertIn("06", states)  # TCP_TIME_WAIT
"""
TIME_WAIT_CHECK = """
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", {port}))  # no SO_REUSEADDR: fails while a TIME_WAIT holds the port
self.assertEqual(open("/proc/net/tcp").read().splitlines()[1:], [])
"""


def test_tcp_time_wait_ports_do_not_carry_over(one_worker):
    port = random.randrange(20000, 30000)
    plant, check = unit_tests(TIME_WAIT_PLANT.format(port=port)), unit_tests(TIME_WAIT_CHECK.format(port=port))
    results = one_worker.verify([(NOOP, plant), (NOOP, check)])
    assert results[0].status == "pass", results[0].details
    assert results[1].status == "pass", results[1].details


# ---------------------------------------------------------------------------- the kernel keyring

ADD_KEYS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
nr = {{"x86_64": 248, "aarch64": 217}}[os.uname().machine]  # add_key
for keyring in (-3, -4, -5):  # the session, user and user-session keyrings
    libc.syscall(ctypes.c_long(nr), b"user", b"{desc}", b"secret", ctypes.c_size_t(6), ctypes.c_long(keyring))
"""
LIST_KEYS = """
self.assertNotIn("{desc}", open("/proc/keys").read())
"""


def key_counts() -> dict[int, int]:
    """Keys per uid the kernel holds (``/proc/key-users``: ``uid: usage nkeys/nikeys ...``)."""
    counts = {}
    with open("/proc/key-users") as f:
        for line in f:
            uid, rest = line.split(":", 1)
            counts[int(uid)] = int(rest.split()[1].split("/")[0])
    return counts


def keys_settle_at(uid: int, most: int, wait_s: float = 5.0) -> bool:
    """Whether ``uid`` holds at most ``most`` keys, once the kernel's key collector has run."""
    deadline = time.monotonic() + wait_s
    while key_counts().get(uid, 0) > most:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@root_only
def test_keys_a_program_adds_do_not_stay_on_the_host(make_sandbox):
    pool = make_sandbox()
    uid = uid_of(pool)
    before = key_counts().get(uid, 0)
    desc = f"unitcoder-planted-{random.randrange(1 << 30)}"
    verify_one(pool, NOOP, unit_tests(ADD_KEYS.format(desc=desc)))
    assert keys_settle_at(uid, before), key_counts()


def test_a_key_planted_by_a_program_is_not_seen_by_a_later_run(make_sandbox):
    desc = f"unitcoder-planted-{random.randrange(1 << 30)}"
    first = make_sandbox()
    verify_one(first, NOOP, unit_tests(ADD_KEYS.format(desc=desc)))
    first.close()
    later = make_sandbox()  # as root, the same uid as the first pool's
    result = verify_one(later, NOOP, unit_tests(LIST_KEYS.format(desc=desc)))
    assert result.status == "pass", result.details


# ---------------------------------------------------------------------------- concurrent pools

POOL_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from sandbox import Sandbox, SandboxConfig
with Sandbox(SandboxConfig(workers=1, preload=())) as pool:
    print(json.dumps(pool.verify([(sys.argv[2], sys.argv[3])])[0].to_dict()), flush=True)
"""

# Two pools at once, the way datasets.map(num_proc=2) makes them: the hog's pool in a
# forked process, the honest program's in this one. The hog holds every process its
# limit allows for a while; the honest program starts while it does and needs a few.
HOG_CODE = """
import os, time
def hog(seconds):
    children = 0
    while True:
        try:
            pid = os.fork()
        except OSError:  # RLIMIT_NPROC reached
            break
        if pid == 0:
            time.sleep(seconds)
            os._exit(0)
        children += 1
    time.sleep(seconds)
    return children
"""
HOG_TESTS = unit_tests("self.assertLess(hog(4), 16)")  # holds its processes 4 s: the honest run is checked to overlap
HONEST_CODE = """
import os
def spawn(n):
    pids = [os.fork() or os._exit(0) for _ in range(n)]
    return sorted(os.waitpid(pid, 0)[1] for pid in pids)
"""
HONEST_TESTS = unit_tests("self.assertEqual(spawn(4), [0, 0, 0, 0])")
TWO_POOLS_SCRIPT = """
import json, multiprocessing, os, sys, time
sys.path.insert(0, sys.argv[1])
from sandbox import Sandbox, SandboxConfig
hog_code, hog_tests, honest_code, honest_tests = json.loads(sys.argv[2])
config = SandboxConfig(workers=1, preload=(), max_procs=16, timeout=30)

def run_hog(out):
    with Sandbox(config) as pool:
        result = pool.verify([(hog_code, hog_tests)])[0]
    out.put((result.status, result.details, time.monotonic()))

def descendants(root):
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = 0, [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += len(kids)
        todo.extend(kids)
    return found

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    with Sandbox(config) as pool:
        hog = ctx.Process(target=run_hog, args=(out,))
        hog.start()
        deadline = time.monotonic() + 120
        # its pool's bwrap and zygote, the program and its children: 16 at the limit, as root
        # (an ordinary user's limit also counts the sandbox's own processes: a few fewer)
        while descendants(hog.pid) < 14 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the hog reaches its limit
        honest = pool.verify([(honest_code, honest_tests)])[0]
        honest_done = time.monotonic()
        hog_status, hog_details, hog_done = out.get(timeout=120)
        hog.join()
    print(json.dumps({"honest": [honest.status, honest.details], "hog": [hog_status, hog_details],
                      "overlapped": honest_done < hog_done}))
"""


def check_two_pools(report: dict) -> None:
    assert report["hog"][0] == "pass", report["hog"][1]  # it did reach its limit
    assert report["overlapped"], "the hog ended before the honest program ran: nothing was tested"
    assert report["honest"][0] == "pass", report["honest"][1]


@root_only
def test_concurrent_pools_in_several_processes_run_programs_under_distinct_uids(make_sandbox):
    here = [uid_of(make_sandbox()), uid_of(make_sandbox())]
    tests = unit_tests("import os\nself.fail(f'uid={os.getuid()}')")
    proc = subprocess.run(
        [sys.executable, "-c", POOL_SCRIPT, str(REPO), NOOP, tests], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    there = int(re.search(r"uid=(\d+)", json.loads(proc.stdout.splitlines()[-1])["details"]).group(1))
    uids = here + [there]
    assert len(set(uids)) == 3, uids
    assert all(uid >= sandbox.bwrap.UID_BASE for uid in uids)


@root_only
def test_one_pools_process_hog_cannot_fail_another_pools_program():
    programs = json.dumps([HOG_CODE, HOG_TESTS, HONEST_CODE, HONEST_TESTS])
    proc = subprocess.run(
        [sys.executable, "-c", TWO_POOLS_SCRIPT, str(REPO), programs], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    check_two_pools(json.loads(proc.stdout.splitlines()[-1]))


@root_only
def test_uid_leases_are_distinct_and_come_back_when_a_worker_goes(tmp_path):
    leases = sandbox.bwrap.UidLeases((str(tmp_path / "uids.lock"),))
    first, second = tmp_path / "worker-a", tmp_path / "worker-b"
    first.mkdir(), second.mkdir()
    uid_a, uid_b = leases.lease(str(first)), leases.lease(str(second))
    assert uid_a != uid_b and leases.lease(str(first)) == uid_a  # a restarted worker keeps its uid
    first.rmdir()  # the pool closed
    third = tmp_path / "worker-c"
    third.mkdir()
    assert leases.lease(str(third)) == uid_a  # the range is not used up by pools that came and went


@root_only
def test_uid_leases_are_exclusive_across_processes(tmp_path):
    lock = str(tmp_path / "uids.lock")
    worker = tmp_path / "worker"
    worker.mkdir()
    mine = sandbox.bwrap.UidLeases((lock,)).lease(str(worker))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from sandbox.bwrap import UidLeases; "
        "print(UidLeases((sys.argv[2],)).lease(sys.argv[3]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(REPO), lock, str(worker)], capture_output=True, text=True, check=True
    )
    assert int(other.stdout) != mine
