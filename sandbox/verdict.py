"""Turning what the sandbox observed into one verdict per program."""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass

from sandbox.static import TestPlan

PASS, FAIL, ERROR, TIMEOUT, OOM, REJECTED, SANDBOX_ERROR = (
    "pass",
    "fail",
    "error",
    "timeout",
    "oom",
    "rejected",
    "sandbox_error",
)
STATUSES = (PASS, FAIL, ERROR, TIMEOUT, OOM, REJECTED, SANDBOX_ERROR)


@dataclass
class VerifyResult:
    """The verdict on one ``(code, test_code)`` pair.

    ``status`` is one of ``STATUSES``; ``reason`` is a short snake_case cause for
    ``rejected``, ``error``, ``timeout``, ``oom`` and ``sandbox_error`` (None on pass and
    fail); ``details`` is a bounded excerpt of what went wrong (failing tests' tracebacks
    first), which is what a fix prompt reads.

    ``coverage`` (only when ``Sandbox.verify(coverage=True)`` asked for it, and the runner
    handed back a result that is not ``rejected``) is ``{"lines": [...], "arcs": [[from,
    to], ...]}``: the line numbers of the code part (``1..len(code lines)``) that ran, and
    the arcs between them that ran (negative numbers: entering or leaving the code object
    that starts at that line, as coverage.py records them). Both lists are empty when the
    measurement cannot be trusted (the program made code under its own file name). None
    when not asked or not measured (a timeout, a crash, coverage.py missing in the sandbox);
    ``sandbox.coverage_report.summarize`` turns it into coverage figures.
    """

    status: str
    tests_run: int = 0
    tests_passed: int = 0
    details: str = ""
    duration_s: float = 0.0
    reason: str | None = None
    coverage: dict | None = None

    def __post_init__(self) -> None:
        # Program output can hold lone surrogates (bytes decoded with surrogateescape);
        # escaped here, so every verdict can be written as UTF-8 (JSONL, parquet, logs).
        self.details = encodable(self.details)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_dict(self) -> dict:
        return asdict(self)


def encodable(text) -> str:
    """``text`` as a string that encodes to UTF-8: lone surrogates become ``\\udcXX`` escapes."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"\n... [{len(text) - limit} more characters]"
    return text[: max(0, limit - len(marker))] + marker


def _streams(report: dict, limit: int) -> str:
    parts = []
    for key in ("stderr", "stdout"):
        text = (report.get(key) or "").strip()
        if text:
            total = report.get(f"{key}_bytes", len(text))
            parts.append(f"--- {key} ({total} bytes) ---\n{clip(text, limit)}")
    return "\n".join(parts)


_MALFORMED = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError, OverflowError)


def compose(report: dict, plan: TestPlan, cpu_limit: float, details_chars: int) -> VerifyResult:
    """Build the verdict from the zygote's report on one program.

    Whatever shape the report has, this returns a verdict: a result the program could have
    shaped (the ``result`` part) that cannot be read is ``rejected`` (``forged_result``),
    never an exception that would lose the batch."""
    try:
        return _compose(report, plan, cpu_limit, details_chars)
    except _MALFORMED as exc:
        return VerifyResult(
            REJECTED, details=f"the program's result could not be read ({type(exc).__name__})", reason="forged_result"
        )


def _coverage(result: dict) -> dict | None:
    """The runner's coverage of the code part, checked and copied; None when it measured none."""
    measured = result.get("coverage")
    if measured is None:
        return None
    lines, arcs = measured["lines"], measured["arcs"]
    if not all(type(n) is int for n in lines) or not all(
        type(arc) is list and len(arc) == 2 and all(type(n) is int for n in arc) for arc in arcs
    ):
        raise ValueError("malformed coverage")
    return {"lines": sorted(set(lines)), "arcs": [[a, b] for a, b in sorted({(a, b) for a, b in arcs})]}


def _compose(report: dict, plan: TestPlan, cpu_limit: float, details_chars: int) -> VerifyResult:
    result = report.get("result")
    verdict = _verdict(report, plan, cpu_limit, details_chars)
    if result is not None and verdict.status not in (REJECTED, SANDBOX_ERROR):
        verdict.coverage = _coverage(result)
    return verdict


def _verdict(report: dict, plan: TestPlan, cpu_limit: float, details_chars: int) -> VerifyResult:
    duration = round(float(report.get("wall_s") or 0.0), 4)

    def verdict(status, details="", reason=None, run=0, passed=0):
        return VerifyResult(status, run, passed, clip(details, details_chars), duration, reason)

    if report.get("infra_error"):
        return verdict(SANDBOX_ERROR, report["infra_error"], "sandbox_internal")
    if not report.get("setup_done"):
        return verdict(
            SANDBOX_ERROR,
            f"the sandbox could not set up the program (exit code {report.get('exit_code')})\n"
            + _streams(report, details_chars // 2),
            "setup_failed",
        )
    if report.get("result_forged"):
        return verdict(
            REJECTED,
            "the program wrote to the sandbox's result channel; the verdict was discarded",
            "forged_result",
        )
    if report.get("timed_out"):
        return verdict(
            TIMEOUT,
            f"wall-clock limit reached and every process killed\n{_streams(report, details_chars // 2)}",
            "wall_time",
        )
    result = report.get("result")
    if result is None:
        code = report.get("exit_code")
        cpu = float(report.get("cpu_s") or 0.0)
        if code in (-signal.SIGXCPU, -signal.SIGKILL) and cpu >= cpu_limit - 0.5:
            return verdict(TIMEOUT, f"CPU-time limit of {cpu_limit:g}s reached", "cpu_time")
        if code == -signal.SIGKILL:
            return verdict(OOM, "killed by the kernel (out of memory)", "killed")
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return verdict(ERROR, f"the program crashed with {name}\n{_streams(report, details_chars // 2)}", "crashed")
        return verdict(
            ERROR,
            f"the program exited (code {code}) before the tests finished\n{_streams(report, details_chars // 2)}",
            "exited_early",
        )
    if result.get("tamper"):
        names = ", ".join(result["tamper"])
        reason = (
            "tampered_builtins"
            if all(n.startswith("builtins.") for n in result["tamper"])
            else ("tampered_test_machinery")
        )
        return verdict(REJECTED, f"the run changed the test machinery: {names}", reason)
    if result.get("load_error"):
        status = OOM if result.get("load_error_kind") == "oom" else ERROR
        return verdict(
            status,
            result["load_error"] + "\n" + _streams(report, details_chars // 4),
            "memory_error" if status == OOM else "load_error",
        )
    records = result.get("records") or []
    started = int(result.get("started") or 0)
    passed = sum(1 for _, outcome, _ in records if outcome == "pass")
    failing = [(name, outcome, trace) for name, outcome, trace in records if outcome != "pass"]
    if failing:
        text = "\n".join(f"{outcome.upper()}: {name}\n{trace}".rstrip() for name, outcome, trace in failing)
        if any(outcome == "oom" for _, outcome, _ in failing):
            return verdict(OOM, text, "memory_error", started, passed)
        return verdict(FAIL, text, None, started, passed)
    if started != plan.count or passed != plan.count:
        return verdict(
            ERROR,
            f"{started} tests ran and {passed} passed, but the test code defines {plan.count}",
            "test_count_mismatch",
            started,
            passed,
        )
    return verdict(PASS, "", None, started, passed)
