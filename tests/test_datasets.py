"""``verify_batch`` inside ``datasets.map(batched=True)``, with and without num_proc."""

from __future__ import annotations

from datasets import Dataset

from conftest import unit_tests
from sandbox import SandboxConfig, verify_batch


def rows(n: int) -> dict[str, list]:
    codes = [f"def f():\n    return {i}\n" for i in range(n)]
    tests = [unit_tests(f"self.assertEqual(f(), {i if i % 2 else -1})") for i in range(n)]
    return {"id": [f"row-{i}" for i in range(n)], "code": codes, "test_code": tests}


def test_verify_batch_adds_verdict_columns_in_row_order():
    config = SandboxConfig(workers=2, preload=())
    data = Dataset.from_dict(rows(10))
    out = data.map(
        verify_batch, batched=True, batch_size=4, fn_kwargs={"config": config}, new_fingerprint="verify-inline-test"
    )
    assert out["verify_status"] == ["fail" if i % 2 == 0 else "pass" for i in range(10)]
    assert out["id"] == data["id"]
    assert set(out.column_names) >= {"verify_tests_run", "verify_tests_passed", "verify_details", "verify_reason"}


def test_verify_batch_works_with_num_proc():
    config = SandboxConfig(workers=1, preload=())
    data = Dataset.from_dict(rows(8))
    out = data.map(
        verify_batch,
        batched=True,
        batch_size=2,
        num_proc=2,
        fn_kwargs={"config": config},
        new_fingerprint="verify-num-proc-test",
    )
    assert out["verify_status"] == ["fail" if i % 2 == 0 else "pass" for i in range(8)]
