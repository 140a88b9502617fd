"""Every column of every stage's output: the contract between the stages and their consumers.

Stage 1 writes ``KEPT_FEATURES`` (retrieval only) or ``TESTED_FEATURES`` (with tests) to
its ``default`` config and ``STAGE1_REJECTED_FEATURES`` to ``rejected``; stage 2 reads
``STAGE2_INPUT_COLUMNS`` of that, works on ``STAGE2_WORK_COLUMNS`` (a row's progress as
columns, beside the output columns) and writes ``VERIFIED_FEATURES`` / ``STAGE2_REJECTED_FEATURES``; ``train/sft.py``
reads one of ``TRAINING_FORMATS`` from the verified rows.
"""

from __future__ import annotations

import datasets

STRING = datasets.Value("string")
STRINGS = datasets.Sequence(STRING)
INT = datasets.Value("int32")

# ----------------------------------------------------------------------------- stage 1

_FUNCTION = {
    "id": STRING,
    "language": STRING,  # the language package that retrieved it (processing.languages)
    "function_name": STRING,
    "code": STRING,
    "repo": STRING,
    "path": STRING,
    "licenses": STRINGS,
    "hexsha": STRING,
    "lineno": INT,
}
# ``decontaminated_against``: the benchmarks the function was checked against (stage 1's --decontaminate,
# less any that could not be loaded); stage 2 carries it to every row it publishes.
KEPT_FEATURES = datasets.Features(
    {**_FUNCTION, "imports": STRINGS, "packages": STRINGS, "decontaminated_against": STRINGS}
)
TESTED_FEATURES = datasets.Features(
    {**KEPT_FEATURES, "test_code": STRING, "test_model": STRING, "test_backend": STRING, "test_prompt_hash": STRING}
)
STAGE1_REJECTED_FEATURES = datasets.Features({**_FUNCTION, "level": STRING, "drop_reason": STRING, "detail": STRING})
# What the extraction map emits: file and function rows with what selection needs.
EXTRACTED_FEATURES = datasets.Features(
    {
        **KEPT_FEATURES,
        "level": STRING,
        "drop_reason": STRING,
        "detail": STRING,
        "file_bytes": datasets.Value("int64"),
        "exact_key": STRING,
        "signature": datasets.Sequence(datasets.Value("int64")),
        "contaminated": datasets.Value("bool"),
    }
)

# ----------------------------------------------------------------------------- stage 2

STAGE2_INPUT_COLUMNS = ("id", "code", "test_code", "function_name")
ATTEMPT = {"round": INT, "sample": INT, "status": STRING, "error": STRING}
_SOURCE = {
    "id": STRING,
    "language": STRING,
    "function_name": STRING,
    "code": STRING,
    "test_code": STRING,
    "original_code": STRING,
    "repo": STRING,
    "path": STRING,
    "licenses": STRINGS,
    "packages": STRINGS,
    "decontaminated_against": STRINGS,
    "fix_rounds": INT,
    "attempts": [ATTEMPT],
}
# How strong a verified row's tests are (``processing.steps.quality``); None when not measured.
QUALITY = {
    "strengthened": INT,  # strengthening rounds in which the tests grew (0: as written by stage 1)
    "mutation_score": datasets.Value("float64"),  # killed / mutants, 0..1
    "mutants": INT,
    "mutants_killed": INT,
    "surviving_mutants": STRINGS,  # up to 3, as unified diffs against code
    "line_coverage": datasets.Value("float64"),  # of the target function's statements, 0..1
    "branch_coverage": datasets.Value("float64"),  # of its branches, 0..1 (None: it has none)
    "uncovered_lines": datasets.Sequence(INT),  # lines of code the tests never ran
}
VERIFIED_FEATURES = datasets.Features(
    {
        **_SOURCE,
        **QUALITY,
        "refined": datasets.Value("bool"),
        "refine_status": STRING,
        "variants": STRINGS,
        "tests_run": INT,
        "tests_passed": INT,
        "verify_duration_s": datasets.Value("float64"),
        "prompt": STRING,
        "completion": STRING,
        "messages": [{"role": STRING, "content": STRING}],
    }
)
STAGE2_REJECTED_FEATURES = datasets.Features({**_SOURCE, **QUALITY, "drop_reason": STRING, "detail": STRING})
# A row's progress through stage 2, as columns (``state``: passing, failing or rejected).
STAGE2_WORK_COLUMNS = {
    "state": STRING,
    "current_code": STRING,  # failing rows: the attempt the next fix round starts from
    "current_error": STRING,
    "drop_reason": STRING,
    "detail": STRING,
}

# ----------------------------------------------------------------------------- training

TRAINING_FORMATS = {"prompt_completion": ("prompt", "completion"), "messages": ("messages",)}
