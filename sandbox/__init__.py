"""Fast, contained verification of generated code against its unittest tests.

Python API::

    from sandbox import Sandbox, SandboxConfig
    with Sandbox(SandboxConfig(timeout=10)) as sandbox:
        results = sandbox.verify([(code, test_code), ...])

For the test-quality step: ``verify(pairs, timeouts=[...], coverage=True)`` (per-pair time
limits; the lines and arcs of the code that ran, summarized by
``sandbox.coverage_report.summarize``) and ``confirm(pairs, hash_seed=..., order_seed=...)``
(a fresh interpreter with another hash seed and test order).

JavaScript (``node:test`` tests, run by Node under the same isolation):
``SandboxConfig(language="javascript")``, after ``python -m sandbox setup javascript``.

CLI: ``python -m sandbox verify IN.jsonl -o OUT.jsonl [--language javascript]``. The threat model is in
``sandbox/README.md``.
"""

from sandbox.bwrap import SandboxUnavailable, preflight
from sandbox.config import DEFAULT_PRELOAD, SandboxConfig
from sandbox.pool import Sandbox, SandboxBroken, WorkerFailure, default_sandbox, verify, verify_batch
from sandbox.verdict import STATUSES, VerifyResult

__all__ = [
    "DEFAULT_PRELOAD",
    "STATUSES",
    "Sandbox",
    "SandboxBroken",
    "SandboxConfig",
    "SandboxUnavailable",
    "VerifyResult",
    "WorkerFailure",
    "default_sandbox",
    "preflight",
    "verify",
    "verify_batch",
]
