"""``python -m sandbox verify``: the command users run on their own files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import unit_tests

EXAMPLE = Path(__file__).resolve().parents[1] / "sandbox" / "examples" / "programs.jsonl"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", "verify", *args, "--no_progress", "--preload", ""],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bundled_example_gets_one_verdict_per_line_in_order(tmp_path):
    out = tmp_path / "verdicts.jsonl"
    proc = run_cli(str(EXAMPLE), "-o", str(out), "--timeout", "3")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert [(r["id"], r["status"]) for r in rows] == [
        ("add-ok", "pass"),
        ("column-means", "pass"),
        ("add-buggy", "fail"),
        ("loops-forever", "timeout"),
        ("fake-pass", "error"),
        ("patches-unittest", "rejected"),
        (None, "rejected"),
    ]
    assert all(set(r) == {"id", "status", "tests_run", "tests_passed", "details", "duration_s"} for r in rows)
    assert rows[2]["tests_run"] == 1 and "AssertionError" in rows[2]["details"]
    assert rows[5]["details"].startswith("patches_unittest")


def test_malformed_lines_are_reported_with_their_line_number(tmp_path):
    good = {
        "id": {"nested": [1, "x"]},
        "code": "def f():\n    return 1\n",
        "test_code": unit_tests("self.assertEqual(f(), 1)"),
    }
    lines = [json.dumps(good), "[1, 2]", "", '{"id": 7, "code": 5, "test_code": ""}', "{broken"]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_cli(str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "out.jsonl")
    assert rows[0]["id"] == {"nested": [1, "x"]} and rows[0]["status"] == "pass"  # id echoed verbatim
    assert rows[1]["status"] == "rejected" and "line 2" in rows[1]["details"]
    assert rows[2]["id"] == 7 and "line 4" in rows[2]["details"] and "'code'" in rows[2]["details"]
    assert "line 5" in rows[3]["details"] and len(rows) == 4
    assert "line 5" in proc.stderr


def test_stdin_to_stdout(tmp_path):
    row = {"id": "a", "code": "def f():\n    return 2\n", "test_code": unit_tests("self.assertEqual(f(), 2)")}
    proc = run_cli("-", "-o", "-", stdin=json.dumps(row) + "\n")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["status"] == "pass"


def test_missing_input_is_a_usage_error(tmp_path):
    proc = run_cli(str(tmp_path / "absent.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_bad_setting_is_a_usage_error(tmp_path):
    proc = run_cli(str(EXAMPLE), "-o", str(tmp_path / "out.jsonl"), "--workers", "0")
    assert proc.returncode == 2 and "workers must be at least 1" in proc.stderr


def test_unusable_bwrap_exits_3_with_a_clear_sentence(tmp_path):
    proc = run_cli(str(EXAMPLE), "-o", str(tmp_path / "out.jsonl"), "--bwrap", "/nonexistent/bwrap")
    assert proc.returncode == 3 and "not an executable file" in proc.stderr
