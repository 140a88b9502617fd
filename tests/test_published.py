"""Issue 11's properties: what stage 2 publishes is exactly what it verified.

Scripted answers (a deterministic model) drive stage 2 through a real sandbox; every
published row is then run again *as published* (``prompt + completion`` with its tests)
in a plain fresh interpreter, outside our sandbox.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from conftest import FakeHub, Flaky, unit_tests
from processing import stage2
from processing.languages.python import (
    chat_messages,
    publishable_layout,
    published_form_problem,
    signature_change,
    split_prompt_completion,
)
from processing.steps.verify import run_programs
from sandbox import WorkerFailure

ALL_BENCHMARKS = ["humaneval", "mbpp", "bigcodebench"]
REFINE = "Rewrite the Python function below as clean"


def fenced(code: str) -> str:
    return f"Here it is.\n\n```python\n{code}```\n"


# id, function, code, tests
LAYOUT_ROWS = [
    # fails; the fix moves the work into a helper defined AFTER the target
    ("after", "double", "def double(x):\n    return x + 1\n", unit_tests("self.assertEqual(double(2), 4)", "self.assertEqual(double(5), 10)")),
    # passes as it is; a helper defined BEFORE the target
    ("before", "inc", "def _step():\n    return 1\n\n\ndef inc(x):\n    return x + _step()\n", unit_tests("self.assertEqual(inc(2), 3)")),
    # a one-line function: its def line must stay in the prompt
    ("oneline", "twice", "import math\ndef twice(x): return math.floor(x) * 2", unit_tests("self.assertEqual(twice(2.5), 4)")),
    # a one-liner with a docstring and a second statement on its line
    ("semi", "halve", "def halve(x): '''Half of x.'''; return x / 2\n", unit_tests("self.assertEqual(halve(3), 1.5)")),
]  # fmt: skip
LAYOUT_RULES = [
    {
        "match": "def double(",
        "answer": fenced("def double(x):\n    return _times(x, 2)\n\n\ndef _times(x, k):\n    return x * k\n"),
    },
]

REFINE_ROWS = [
    ("rename", "area", "def area(w, h):\n    return w * h\n", unit_tests("self.assertEqual(area(2, 3), 6)")),
    ("add", "greet", "def greet(name):\n    return 'hi ' + name\n", unit_tests("self.assertEqual(greet('a'), 'hi a')")),
    ("default", "power", "def power(x, n=2):\n    return x ** n\n", unit_tests("self.assertEqual(power(3, 2), 9)")),
    ("kind", "scale", "def scale(x, k):\n    return x * k\n", unit_tests("self.assertEqual(scale(2, 3), 6)")),
    ("good", "mean", "def mean(xs):\n    return sum(xs) / len(xs)\n", unit_tests("self.assertEqual(mean([1, 3]), 2)")),
    ("bad", "neg", "def neg(a):\n    return -a\n", unit_tests("self.assertEqual(neg(3), -3)")),
]  # fmt: skip
REFINE_RULES = [
    {"match": [REFINE, "def area("], "answer": fenced("def area(width, height):\n    '''Area.'''\n    return width * height\n")},
    {"match": [REFINE, "def greet("], "answer": fenced("def greet(name, punct=''):\n    '''Greet.'''\n    return 'hi ' + name + punct\n")},
    {"match": [REFINE, "def power("], "answer": fenced("def power(x, n=3):\n    '''Power.'''\n    return x ** n\n")},
    {"match": [REFINE, "def scale("], "answer": fenced("def scale(x, *, k):\n    '''Scale.'''\n    return x * k\n")},
    {
        "match": [REFINE, "def mean("],
        "answer": fenced("def mean(xs: list[float]) -> float:\n    '''The arithmetic mean of xs.'''\n    return _total(xs) / len(xs)\n\n\ndef _total(xs):\n    return sum(xs)\n"),
    },
    {"match": [REFINE, "def neg("], "answer": fenced("def neg(a: int) -> int:\n    '''Negate.'''\n    return a\n")},
]  # fmt: skip


def write_input(folder: Path, rows, decontaminated=ALL_BENCHMARKS) -> Path:
    (folder / "data").mkdir(parents=True)
    table = [
        {"id": i, "function_name": f, "code": c, "test_code": t, "packages": [], "decontaminated_against": decontaminated}
        for i, f, c, t in rows
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(table), folder / "data" / "train-00000-of-00001.parquet")
    return folder


def run(
    tmp_path: Path, rows, rules, out: str, *extra: str, decontaminated=ALL_BENCHMARKS, input_name: str | None = None
) -> tuple[int, Path]:
    folder = tmp_path / f"in-{input_name or out}"
    if not folder.exists():
        write_input(folder, rows, decontaminated)
    (tmp_path / f"rules-{out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rules))
    argv = [
        "--input_dir", str(folder), "--output_dir", str(tmp_path / out), "--backend", "scripted",
        "--model", str(tmp_path / f"rules-{out}.jsonl"), "--cache_dir", str(tmp_path / "cache"),
        "--sandbox_workers", "2", "--rounds", "1", "--samples", "1", *extra,
    ]  # fmt: skip
    return stage2.main(argv), tmp_path / out


def rows_of(out: Path, folder: str = "data") -> dict[str, dict]:
    return {r["id"]: r for path in sorted((out / folder).glob("*.parquet")) for r in pq.read_table(path).to_pylist()}


def runs_in_a_plain_interpreter(row: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """The published pair, as a user would run it: ``prompt + completion`` then the tests,
    one module, a fresh ``python`` (not our sandbox, not our runner)."""
    script = tmp_path / f"published_{row['id']}.py"
    script.write_text(row["prompt"] + row["completion"] + "\n\n" + row["test_code"] + "\n\nunittest.main()\n")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def assert_published_exactly(row: dict, tmp_path: Path) -> None:
    assert row["prompt"] + row["completion"] == row["code"]
    assert row["messages"][1]["content"] == f"```python\n{row['code']}```"
    result = runs_in_a_plain_interpreter(row, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def layout_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    code, out = run(tmp, LAYOUT_ROWS, LAYOUT_RULES, "out", "--skip_refine")
    assert code == 0
    return out


def test_a_helper_after_the_target_lands_in_the_completion(layout_run, tmp_path):
    row = rows_of(layout_run)["after"]
    assert row["fix_rounds"] == 1
    assert row["prompt"] == "def double(x):\n"
    assert "def _times(x, k):" in row["completion"]
    assert_published_exactly(row, tmp_path)


def test_a_helper_before_the_target_lands_in_the_prompt(layout_run, tmp_path):
    row = rows_of(layout_run)["before"]
    assert row["prompt"].startswith("def _step():") and row["prompt"].endswith("def inc(x):\n")
    assert_published_exactly(row, tmp_path)


def test_a_one_line_function_keeps_its_def_line_in_the_prompt(layout_run, tmp_path):
    rows = rows_of(layout_run)
    assert rows["oneline"]["prompt"] == "import math\ndef twice(x):\n"
    assert rows["oneline"]["completion"] == "    return math.floor(x) * 2\n"
    assert rows["semi"]["prompt"] == "def halve(x):\n    '''Half of x.'''\n"
    assert rows["semi"]["completion"] == "    return x / 2\n"
    for key in ("oneline", "semi"):
        assert_published_exactly(rows[key], tmp_path)


def test_without_a_docstring_the_chat_task_does_not_ask_for_one(layout_run):
    rows = rows_of(layout_run)
    assert "docstring" not in rows["after"]["messages"][0]["content"]
    assert "does what its docstring says" in rows["semi"]["messages"][0]["content"]


@pytest.fixture(scope="module")
def refine_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    strict = run(tmp, REFINE_ROWS, REFINE_RULES, "strict")
    kept = run(tmp, REFINE_ROWS, REFINE_RULES, "kept", "--keep_unrefined")
    assert strict[0] == 0 and kept[0] == 0
    return strict[1], kept[1]


@pytest.mark.parametrize("row_id", ["rename", "add", "default", "kind"])
def test_a_refine_that_changes_the_signature_fails(refine_runs, row_id):
    strict, kept = refine_runs
    rejected = rows_of(strict, "rejected")[row_id]
    assert rejected["drop_reason"] == "refine_failed" and "signature_changed" in rejected["detail"]
    unrefined = rows_of(kept)[row_id]  # --keep_unrefined: the verified code stays
    assert (unrefined["refined"], unrefined["refine_status"]) == (False, "signature_changed")
    assert unrefined["code"] == dict((i, c) for i, _, c, _ in REFINE_ROWS)[row_id]


def test_a_refine_that_keeps_the_signature_is_published_refined(refine_runs, tmp_path):
    strict, _ = refine_runs
    row = rows_of(strict)["good"]
    assert row["refined"] and "def _total(xs):" in row["completion"]
    assert_published_exactly(row, tmp_path)
    assert set(rows_of(strict)) == {"good"}  # every other row's refine failed


def test_a_failed_refine_rejects_the_row_unless_keep_unrefined(refine_runs, tmp_path):
    strict, kept = refine_runs
    rejected = rows_of(strict, "rejected")["bad"]
    assert rejected["drop_reason"] == "refine_failed" and "does not pass its tests" in rejected["detail"]
    row = rows_of(kept)["bad"]
    assert (row["refined"], row["refine_status"], row["code"]) == (False, "fail", "def neg(a):\n    return -a\n")
    assert "docstring" not in row["messages"][0]["content"]  # it has none, so the task does not ask for one
    assert_published_exactly(row, tmp_path)
    stats = json.loads((strict / "stats" / "shard-00000-of-00001.json").read_text())
    assert dict(stats["funnel"])["refine failed (rejected)"] == 5


def test_the_refine_prompt_shows_the_tests():
    from processing.languages import PromptTemplate

    text = PromptTemplate.load("refine").conversation(code="C", test_code="TESTS", function_name="f")[1]["content"]
    assert "TESTS" in text and "`f`" in text


# --------------------------------------------------------------------------- sandbox errors are never verdicts


def test_a_sandbox_error_at_first_verification_is_retried_not_a_verdict(sandbox):
    from processing.steps.verify import verify_batch

    code, tests = LAYOUT_ROWS[1][2], LAYOUT_ROWS[1][3]
    batch = {"id": ["x", "y"], "code": [code, "def f(:\n"], "test_code": [tests, tests], "function_name": ["inc", "f"]}
    out = verify_batch(batch, sandbox=Flaky(sandbox, failures=2))  # the pair at index 0, twice
    assert out["state"] == ["passing", "failing"] and "does not parse" in out["current_error"][1]
    with pytest.raises(WorkerFailure, match="sandbox error 3 times"):
        verify_batch(batch, sandbox=Flaky(sandbox, failures=3))


def test_a_sandbox_error_in_the_guard_does_not_count_as_a_biting_test(sandbox):
    """A stub that errors for infrastructure reasons must not make tests look like they bite."""
    from processing.steps.guard import guard_batch

    code, name = "def ident(a):\n    return a\n", "ident"
    vacuous = unit_tests("self.assertTrue(True)")
    batch = {"code": [code], "test_code": [vacuous], "function_name": [name], "state": ["passing"]}
    batch |= {"drop_reason": [None], "detail": [None]}
    stubs = Flaky(sandbox, failures=1)
    out = guard_batch(batch, sandbox=stubs)
    assert out["drop_reason"] == ["vacuous_tests"] and stubs.calls == [2, 1]  # the errored stub ran again


def test_stage_2_stops_with_exit_1_when_sandbox_errors_persist(tmp_path, monkeypatch, caplog):
    import processing.steps.verify as verify_step

    def always_broken(sandbox, pairs, **kw):
        raise WorkerFailure("3 programs met a sandbox error 3 times while verifying")

    monkeypatch.setattr(verify_step, "run_programs", always_broken)
    code, out = run(tmp_path, LAYOUT_ROWS[1:2], [], "broken", "--skip_refine")
    assert code == 1 and "rerun the same command to resume" in caplog.text
    assert not (out / "data").exists()  # nothing was published from it


def test_run_programs_passes_clean_verdicts_through(sandbox):
    code, tests = LAYOUT_ROWS[1][2], LAYOUT_ROWS[1][3]
    (verdict,) = run_programs(sandbox, [(code, tests)], desc="checking")
    assert verdict.status == "pass"


# --------------------------------------------------------------------------- versions and pushes


def test_the_version_tag_follows_the_rows_not_unitcoders_code(tmp_path, monkeypatch):
    hub = FakeHub()
    hub.install(monkeypatch)
    push = ("--skip_refine", "--push", "--repo_id", "me/x")
    rows = LAYOUT_ROWS[1:3]
    assert run(tmp_path, rows, [], "first", *push, input_name="same")[0] == 0
    assert len(hub.tags) == 1 and "source digest" in hub.uploads[0]["card"]
    # unitcoder's code changed, the rows did not: nothing new is published
    monkeypatch.setattr(stage2, "unitcoder_identity", lambda: {"version": "9.9", "source_digest": "changed"})
    assert run(tmp_path, rows, [], "second", *push, input_name="same")[0] == 0
    assert len(hub.tags) == 1 and len(hub.uploads) == 1
    # the same settings, different rows (one more input row verifies): a new version
    assert run(tmp_path, LAYOUT_ROWS[1:4], [], "third", *push)[0] == 0
    assert len(hub.tags) == 2 and hub.tags[0] != hub.tags[1]


def test_push_refuses_an_empty_default_config(tmp_path, monkeypatch, caplog):
    hub = FakeHub()
    hub.install(monkeypatch)
    never = [("n", "f", "def f(x):\n    return 0\n", unit_tests("self.assertEqual(f(1), 1)"))]
    rules = [{"match": "", "answer": "I cannot fix this."}]  # every fix answer gives no code: not_fixed
    code, out = run(tmp_path, never, rules, "empty", "--skip_refine", "--push", "--repo_id", "me/x")
    assert code == 1 and "not pushing: nothing was verified" in caplog.text and hub.uploads == []
    assert "streaming=True" in (out / "README.md").read_text()  # the card says how to read an empty config
    assert list(load_dataset(str(out), split="train", streaming=True)) == []  # and that way works


def test_push_refuses_partial_decontamination_unless_allowed(tmp_path, monkeypatch, caplog):
    hub = FakeHub()
    hub.install(monkeypatch)
    rows = LAYOUT_ROWS[1:2]
    flags = ("--skip_refine", "--push", "--repo_id", "me/x")
    code, out = run(tmp_path, rows, [], "partial", *flags, decontaminated=["humaneval"])
    assert code == 1 and "not checked against bigcodebench, mbpp" in caplog.text and hub.uploads == []
    card = (out / "README.md").read_text()
    assert "humaneval: 1 rows" in card and "not checked against bigcodebench, mbpp" in card
    code, _ = run(
        tmp_path, rows, [], "allowed", *flags, "--allow_partial_decontamination", decontaminated=["humaneval"]
    )
    assert code == 0 and len(hub.uploads) == 1


def test_the_card_names_local_paths_by_their_names_only(layout_run):
    card = (layout_run / "README.md").read_text()
    assert "local folder in-out" in card and "--input_dir in-out" in card and str(layout_run.parent) not in card


# --------------------------------------------------------------------------- the forms, on many inputs


def humaneval_programs() -> list[tuple[str, str]]:
    from processing.evalsets import load_rows

    return [(p["prompt"] + p["canonical_solution"], p["entry_point"]) for p in load_rows("humaneval")]


SQUEEZED = [  # one-liners, docstrings sharing a line, decorators, unicode, CRLF, a form feed, helpers around
    ("import os\ndef f(p): return os.path.basename(p)\n", "f"),
    ("def f(x): '''Doc.'''; y = x; return y", "f"),
    ("def f(x='\u00e9'):  return '\u00fc' + x  # comment\n", "f"),
    ("import functools\n\n@functools.lru_cache(maxsize=None)\ndef f(x):\n    '''Cached.'''\n    return x\n", "f"),
    ("def f(x):\r\n    return x\r\n\r\ndef g():\r\n    return f(1)\r\n", "f"),
    ("import math\n\x0c\ndef _h(x):\n    return math.sqrt(x)\n\ndef f(x): return _h(x)\n\nK = 2\n", "f"),
    ("async def f(x):\n    return x\n", "f"),
    ("def f(x,\n      y=1): return (x +\n                  y)\n", "f"),
]


@pytest.mark.parametrize(("code", "name"), [*SQUEEZED, *humaneval_programs()])
def test_every_layout_splits_into_a_pair_that_is_the_code_and_behaves_the_same(code, name):
    import ast

    laid_out = publishable_layout(code, name)
    assert ast.dump(ast.parse(laid_out)) == ast.dump(ast.parse(code))  # only layout moved
    prompt, completion = split_prompt_completion(laid_out, name)
    assert prompt + completion == laid_out
    assert published_form_problem(laid_out, name, prompt, completion, chat_messages(laid_out, name, prompt)) is None


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        ("def f(a, b=1): pass", "def f(a: int, b: int = 1) -> None:\n    '''Doc.'''", False),
        ("def f(a, /, b, *c, d=2, **e): pass", "def f(a, /, b, *c, d=2, **e): return 1", False),
        ("def f(a, b): pass", "def f(b, a): pass", True),
        ("def f(a, /, b): pass", "def f(a, b): pass", True),
        ("def f(a, *c): pass", "def f(a, *args): pass", True),
        ("def f(a, b=1): pass", "def f(a, b=1.0): pass", True),
        ("def f(a): pass", "async def f(a): pass", True),
        ("def f(a, **kw): pass", "def f(a): pass", True),
    ],
)
def test_signature_change_sees_names_order_kinds_and_defaults(before, after, changed):
    assert (signature_change(before, after, "f") is not None) == changed


def test_the_funnel_plotter_draws_in_its_process_or_here_if_that_died(tmp_path):
    from dataset_card.card import FunnelPlotter

    funnel = [["files read", 10], ["functions kept", 3]]
    plotter = FunnelPlotter()
    plotter.draw(funnel, tmp_path / "a.png", "t")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    dead = FunnelPlotter()
    dead.close()  # killed before it was asked: the picture is drawn in this process instead
    dead.draw(funnel, tmp_path / "b.png", "t")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_a_plotter_started_early_is_the_one_the_next_plotter_uses(tmp_path):
    from dataset_card.card import FunnelPlotter

    FunnelPlotter.start_early()
    early = FunnelPlotter._early
    plotter = FunnelPlotter()
    assert plotter._process is early and FunnelPlotter._early is None
    plotter.draw([["files read", 4]], tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert plotter.close() == ""  # it ended by itself, saying nothing on stderr
    assert FunnelPlotter()._process is not early  # used once only
