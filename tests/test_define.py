"""Stage 1's define check: every kept function's code must define alone in the sandbox."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import Flaky
from processing import stage1
from processing.steps.define import define_batch, definition_header, failure_detail, preload_for
from sandbox import DEFAULT_PRELOAD, Sandbox, VerifyResult, WorkerFailure

OFFLINE = ["--decontaminate", "humaneval", "--skip_test_generation"]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
STDLIB_DIR = Path(sysconfig.get_paths()["stdlib"])

MISSING_MODULE = "import json.no_such_module_here\n\n\ndef load(x):\n    return json.no_such_module_here.loads(x)\n"
MISSING_NAME = "from os import no_such_name_here\n\n\ndef call(x):\n    return no_such_name_here(x)\n"
RAISING_DECORATOR = (
    "import functools\n\n\n@functools.lru_cache(maxsize='many')\ndef cached(x):\n    return functools.reduce(max, x)\n"
)
NUMPY = "import numpy as np\n\n\ndef norm(v: np.ndarray, axis=None) -> float:\n    return float(np.linalg.norm(v, axis=axis))\n"
STDLIB = "import os\n\n\ndef join(a, b='x'):\n    return os.path.join(a, b)\n"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def check(sandbox, *codes: str, **kwargs) -> dict[str, list]:
    kwargs.setdefault("batched", False)  # one program per code, unless a test is about batches
    return define_batch({"code": list(codes)}, sandbox=sandbox, **kwargs)


# --------------------------------------------------------------------------- the step on hand-made rows


def test_an_import_of_a_missing_module_does_not_define(sandbox):
    out = check(sandbox, MISSING_MODULE, MISSING_NAME)
    assert out["drop_reason"] == ["does_not_define", "does_not_define"]
    assert out["detail"][0].startswith("ModuleNotFoundError: No module named 'json.no_such_module_here'")
    assert out["detail"][1].startswith("ImportError: cannot import name 'no_such_name_here' from 'os'")
    assert all(len(d) <= 500 for d in out["detail"])


def test_a_decorator_that_raises_at_definition_does_not_define(sandbox):
    (detail,) = check(sandbox, RAISING_DECORATOR)["detail"]
    assert detail.startswith("TypeError: Expected first argument to be an integer, a callable, or None")


def test_a_numpy_or_stdlib_function_defines_and_is_kept(sandbox):
    out = check(sandbox, NUMPY, STDLIB)
    assert out["drop_reason"] == [None, None] and out["detail"] == [None, None]
    assert out["define_status"] == ["pass", "pass"]


def test_rows_already_dropped_are_not_checked(sandbox):
    out = define_batch(
        {"code": [MISSING_MODULE, STDLIB], "drop_reason": ["method", None], "detail": ["raw", None]}, sandbox=sandbox
    )
    assert out["drop_reason"] == ["method", None] and out["detail"] == ["raw", None]
    assert out["define_status"] == [None, "pass"]


def test_code_the_sandbox_refuses_is_dropped_with_its_reason(sandbox):
    tampering = "import sys\n\n\ndef forget(name):\n    return sys.modules.pop(name)\n"
    (detail,) = check(sandbox, tampering)["detail"]
    assert detail.startswith("rejected by the sandbox (patches_sys_modules)")


def test_functions_that_only_run_their_imports_share_one_program(sandbox):
    plain = [STDLIB, "import os\n\n\ndef base(p):\n    return os.path.basename(p)\n"]
    calls = []

    class Counting:
        def verify(self, pairs, **kwargs):
            calls.append(len(pairs))
            return sandbox.verify(pairs, **kwargs)

    verdicts: dict = {}
    out = check(Counting(), *plain, MISSING_MODULE, RAISING_DECORATOR, verdicts=verdicts)
    assert calls == [3] and out["define_shared"] == [False, True, False, False]
    assert out["drop_reason"] == [None, None, "does_not_define", "does_not_define"]
    again = check(Counting(), "import os\n\n\ndef ext(p):\n    return os.path.splitext(p)\n", verdicts=verdicts)
    assert calls == [3] and again["define_shared"] == [True]  # a later batch reuses the verdict


@pytest.mark.parametrize(
    "code, shares",
    [
        (STDLIB, True),
        ("import os\n\n\ndef f(a, b=-1, *, c=(None, 'x'), d: int = 0) -> str:\n    return os.sep\n", True),
        ("from __future__ import annotations\nimport os\n\n\ndef f(a: os.Missing):\n    return os.sep\n", True),
        (NUMPY, False),  # the annotation np.ndarray is an attribute lookup that runs
        (RAISING_DECORATOR, False),
        ("import os\n\n\ndef f(a=os.sep):\n    return a\n", False),
        ("import os\n\n\ndef f(a=undefined):\n    return os.sep\n", False),
        ("import os\n\n\ndef setUpModule(a):\n    return os.sep\n", False),
        ("import os\n\n\ndef __name__(a):\n    return os.sep\n", False),
        ("import sys\n\n\ndef forget(name):\n    return sys.modules.pop(name)\n", False),
        ("import os\n\n\ndef f(a):\n    nonlocal a\n    return os.sep\n", False),  # parses, does not compile
    ],
)
def test_which_functions_share_a_verdict(code, shares):
    assert (definition_header(code) is not None) is shares


@pytest.fixture(scope="module")
def real_kept_functions(tmp_path_factory) -> list[str]:
    """The code of what stage 1 keeps from a few real stdlib modules without the check."""
    root = tmp_path_factory.mktemp("real")
    for name in ("email", "json", "encodings", "shlex.py", "textwrap.py", "base64.py", "ntpath.py", "tarfile.py"):
        if (STDLIB_DIR / name).is_dir():
            shutil.copytree(STDLIB_DIR / name, root / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(STDLIB_DIR / name, root / "src" / name)
    args = ["--source_dir", str(root / "src"), "--output_dir", str(root / "out"), *OFFLINE, "--skip_define_check"]
    assert stage1.main(args) == 0
    return pq.read_table(root / "out" / "data" / "train-00000-of-00001.parquet")["code"].to_pylist()


def test_shared_verdicts_are_the_verdicts_of_each_own_program_on_real_functions(sandbox, real_kept_functions):
    """The stdlib functions stage 1 keeps, with and without shared verdicts: the same."""
    codes = real_kept_functions
    shared = check(sandbox, *codes)
    alone = check(sandbox, *codes, share=False)
    assert sum(shared["define_shared"]) > len(codes) // 4
    assert shared["define_status"] == alone["define_status"]
    assert shared["drop_reason"] == alone["drop_reason"]


def test_the_detail_keeps_the_exception_and_where_it_was_raised():
    details = (
        'Traceback (most recent call last):\n  File "program.py", line 7, in <module>\n    @deco\n     ^^^^\n'
        '  File "program.py", line 5, in deco\n    raise ValueError(\'already registered: ' + "x" * 900 + "')\n"
        "ValueError: already registered: " + "x" * 900 + "\n\n--- stderr (12 bytes) ---\nnoise"
    )
    detail = failure_detail(VerifyResult("error", details=details, reason="load_error"))
    assert detail.startswith("ValueError: already registered: xxx") and len(detail) <= 500
    assert "x..." in detail and '\n  at File "program.py", line 5, in deco' in detail
    timeout = failure_detail(VerifyResult("timeout", details="wall-clock limit reached", reason="wall_time"))
    assert timeout == "timeout (wall_time): wall-clock limit reached"


def test_the_preload_is_the_heavy_packages_the_functions_import():
    assert preload_for([STDLIB], DEFAULT_PRELOAD) == ()
    codes = [NUMPY, "import matplotlib.pyplot as plt\n\n\ndef f(x):\n    return plt.plot(x)\n"]
    assert preload_for(codes, DEFAULT_PRELOAD) == ("numpy", "matplotlib.pyplot")


# --------------------------------------------------------------------------- sandbox trouble


def test_a_sandbox_error_is_retried_and_the_row_kept(sandbox):
    flaky = Flaky(sandbox, failures=1, index=1)
    out = check(flaky, MISSING_MODULE, STDLIB)
    assert flaky.calls == [2, 1]  # only the pair that met the error ran again
    assert out["drop_reason"] == ["does_not_define", None] and out["define_status"] == ["error", "pass"]


def test_a_sandbox_error_that_persists_stops_the_step(sandbox):
    flaky = Flaky(sandbox, failures=99)
    with pytest.raises(WorkerFailure, match="sandbox error 3 times"):
        check(flaky, STDLIB)
    assert flaky.calls == [1, 1, 1]


def test_stage1_stops_with_exit_code_1_when_the_sandbox_keeps_failing(tmp_path, monkeypatch, caplog):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text(STDLIB)

    def broken(self, pairs, **kwargs):
        return [VerifyResult("sandbox_error", details="injected", reason="sandbox_internal") for _ in pairs]

    monkeypatch.setattr(Sandbox, "verify", broken)
    code = stage1.main(["--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out"), *OFFLINE])
    assert code == 1 and "the sandbox keeps failing" in caplog.text
    assert not (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").exists()


def test_skip_define_check_starts_no_sandbox(tmp_path, monkeypatch):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text(MISSING_MODULE)

    def refuse(self):
        raise AssertionError("the sandbox was started")

    monkeypatch.setattr(Sandbox, "start", refuse)
    out = tmp_path / "out"
    assert (
        stage1.main(["--source_dir", str(tmp_path / "src"), "--output_dir", str(out), *OFFLINE, "--skip_define_check"])
        == 0
    )
    assert kept(out) == [("repo/a.py", "load")]
    assert stats(out)["settings"]["define_check"] is False and stats(out)["define_check"] is None


# --------------------------------------------------------------------------- stage 1 on real code


def kept(out: Path) -> list[tuple[str, str]]:
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    return list(zip(table["path"].to_pylist(), table["function_name"].to_pylist()))


def rejected(out: Path) -> list[dict]:
    return pq.read_table(out / "rejected" / "train-00000-of-00001.parquet").to_pylist()


def stats(out: Path) -> dict:
    return json.loads((out / "stats" / "shard-00000-of-00001.json").read_text())


def dispatchable_file() -> Path:
    """A real networkx module whose top-level functions are registered by ``@nx._dispatchable``."""
    path = SITE_PACKAGES / "networkx" / "algorithms" / "tournament.py"
    if not path.is_file():
        pytest.skip("networkx (with algorithms/tournament.py) is not installed")
    return path


def test_real_library_functions_that_do_not_define_are_rejected(tmp_path):
    real = dispatchable_file()
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    shutil.copy(real, src / "tournament.py")
    (src / "paths.py").write_text(STDLIB)
    out = tmp_path / "out"
    assert stage1.main(["--source_dir", str(tmp_path / "src"), "--output_dir", str(out), *OFFLINE]) == 0
    dropped = [r for r in rejected(out) if r["drop_reason"] == "does_not_define"]
    assert dropped and all(r["path"] == "repo/tournament.py" for r in dropped)
    assert all("_dispatchable" in r["code"] and "already exists in dispatch namespace" in r["detail"] for r in dropped)
    assert all(r["level"] == "function" and r["id"] and r["lineno"] for r in dropped)
    assert ("repo/paths.py", "join") in kept(out)
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    for row in table:  # what is kept defines alone in a fresh interpreter
        proc = subprocess.run([sys.executable, "-I", "-c", row["code"]], cwd="/", capture_output=True, text=True)
        assert proc.returncode == 0, (row["function_name"], proc.stderr[-500:])
    record = stats(out)
    assert record["functions_dropped"]["does_not_define"] == len(dropped)
    assert record["dropped"]["does_not_define"] == len(dropped)
    assert record["define_check"]["dropped"] == len(dropped) and record["settings"]["define_check"] is True
    funnel = dict(record["funnel"])
    assert funnel["functions retrieved"] == len(table)
    assert funnel["functions dropped"] == sum(1 for r in rejected(out) if r["level"] == "function")


def test_the_limit_counts_only_functions_that_define(tmp_path):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    good = [
        STDLIB,
        "import re\n\n\ndef words(text, minimum=2):\n    return [w for w in re.findall(r'\\w+', text) if len(w) >= minimum]\n",
        "import math\n\n\ndef hypot3(x, y, z):\n    return math.sqrt(x * x + y * y + z * z)\n",
    ]
    bad = [MISSING_MODULE, RAISING_DECORATOR, MISSING_NAME]
    for i in range(6):  # bad, good, bad, good, bad, good in input order, one file each
        (src / f"f{i}.py").write_text(bad[i // 2] if i % 2 == 0 else good[i // 2])
    out = tmp_path / "out"
    args = ["--source_dir", str(tmp_path / "src"), "--output_dir", str(out), *OFFLINE, "--limit", "2"]
    assert stage1.main([*args, "--block_files", "1"]) == 0
    assert kept(out) == [("repo/f1.py", "join"), ("repo/f3.py", "words")]
    functions = [(r["path"], r["drop_reason"]) for r in rejected(out) if r["level"] == "function"]
    assert functions == [("repo/f0.py", "does_not_define"), ("repo/f2.py", "does_not_define")]  # nothing after f3
    record = stats(out)
    assert record["limit_reached"] and record["counts"]["kept"] == 2 and record["counts"]["files"] == 4
    assert stage1.main([*args[:3], str(tmp_path / "large"), *args[4:], "--block_files", "100"]) == 0
    assert kept(tmp_path / "large") == kept(out)


def test_a_sandbox_that_cannot_run_a_program_stops_stage1_before_any_output(tmp_path, caplog):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text(STDLIB)
    out = tmp_path / "out"
    args = ["--source_dir", str(tmp_path / "src"), "--output_dir", str(out), *OFFLINE, "--sandbox_memory_mb", "64"]
    with caplog.at_level("INFO"):
        assert stage1.main(args) == 2  # the canary cannot get its memory under a 64 MiB cap
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "--memory_mb" in errors[0] and "\n" not in errors[0]
    assert not out.exists()


# --------------------------------------------------------------------------- batches


def registering(name: str) -> str:
    """A function networkx's dispatcher registers under ``name``: a second one so named raises."""
    return f"import networkx as nx\n\n\n@nx._dispatchable\ndef {name}(G):\n    return len(G)\n"


def test_batches_give_the_verdicts_programs_alone_give(sandbox):
    pytest.importorskip("networkx")
    codes = [f"import os\n\n\ndef f{i}(p=os.sep):\n    return p * {i}\n" for i in range(40)]
    codes += [STDLIB, MISSING_MODULE, NUMPY, RAISING_DECORATOR, MISSING_NAME]
    codes += [registering("unitcoder_twice"), registering("unitcoder_twice")]  # collide only when together
    calls = []

    class Counting:
        def verify(self, pairs, **kwargs):
            calls.append(len(pairs))
            return sandbox.verify(pairs, **kwargs)

    alone = check(sandbox, *codes, share=False)
    batched = check(Counting(), *codes, share=False, batched=True)
    assert batched["drop_reason"] == alone["drop_reason"] and batched["define_status"] == alone["define_status"]
    assert alone["drop_reason"][-2:] == [None, None]  # each registering function defines alone
    assert sum(alone["drop_reason"][i] is not None for i in range(len(codes))) == 3
    # 47 programs: 2 batches (32 that pass + 15 that do not), then halves of the failing one
    assert calls[0] == 2 and sum(calls) < 2 + 15
