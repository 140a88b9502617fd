"""JavaScript end to end: stage 1 (retrieval with tree-sitter, the define check in node,
node:test tests from a scripted model) then stage 2 (verify, fix, refine, quality, the
published-form check) on a folder of .js/.mjs files, in the Hub layout, with the card
saying JavaScript; the embedded JavaScript corpus; decontamination against MultiPL-E's
translations; the clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from processing import evalsets, stage1, stage2
from processing.packages import default_packages, parse_packages
from sandbox import Sandbox, SandboxConfig
from sandbox.javascript import check_ready

try:
    check_ready()
    READY = None
except Exception as exc:  # noqa: BLE001 (the reason is shown on the skip)
    READY = str(exc)
pytestmark = pytest.mark.skipif(READY is not None, reason=f"no JavaScript sandbox here: {READY}")

SOURCES = {
    # CommonJS, a target package (lodash), a JSDoc comment: kept; its tests pass as written
    "slug.js": (
        "const _ = require('lodash');\nconst unused = require('semver');\n\n"
        "/**\n * Turn a title into a URL slug.\n * @param {string} title\n * @returns {string}\n */\n"
        "function slugify(title) {\n  return _.kebabCase(title);\n}\n\nmodule.exports = { slugify };\n"
    ),
    # ES module with a bug its tests find: stage 2 fixes it in round 1
    "ext.mjs": ("import path from 'node:path';\n\nexport function extOf(file) {\n  return path.basename(file);\n}\n"),
    # kept by retrieval; the model's tests are written in a loop: dropped as dynamic_tests
    "loop.js": "const os = require('os');\n\nfunction eolJoin(lines) {\n  return lines.join(os.EOL);\n}\n",
    # kept by retrieval; the model answers with ES-module tests for CommonJS code
    "mixed.js": ("const { format } = require('util');\n\nfunction greet(name) {\n  return format('hi %s', name);\n}\n"),
    # a module-level variable: not self-contained
    "state.js": "const fs = require('fs');\nlet count = 0;\n\nfunction bump(n) {\n  count += n;\n  return fs.existsSync('/') && count;\n}\n",
    # no import of a target package
    "plain.js": "function twice(x) {\n  return 2 * x;\n}\n",
}

SLUG_TESTS = (
    "const { test } = require('node:test');\nconst assert = require('node:assert/strict');\n\n"
    "test('spaces become dashes', () => {\n  assert.equal(slugify('Hello World'), 'hello-world');\n});\n\n"
    "test('camel case is split', () => {\n  assert.equal(slugify('fooBar'), 'foo-bar');\n});\n"
)
EXT_TESTS = (
    "import { describe, it } from 'node:test';\nimport assert from 'node:assert/strict';\n\n"
    "describe('extOf', () => {\n"
    "  it('gives the extension', () => {\n    assert.equal(extOf('a/b.txt'), '.txt');\n  });\n"
    "  it('gives nothing without one', () => {\n    assert.equal(extOf('a/b'), '');\n  });\n"
    "});\n"
)
LOOP_TESTS = (
    "const { test } = require('node:test');\nconst assert = require('node:assert/strict');\n\n"
    "for (const n of [1, 2]) {\n  test(`joins ${n}`, () => {\n    assert.ok(eolJoin(['a']).length >= n - 1);\n  });\n}\n"
)
MIXED_TESTS = (
    "import { test } from 'node:test';\nimport assert from 'node:assert/strict';\n\n"
    "test('greets', () => {\n  assert.equal(greet('x'), 'hi x');\n});\n"
)
TEST_PROMPT = "Write unit tests for the JavaScript function below."
FIX_PROMPT = "The function below fails some of its unit tests."
REFINE_PROMPT = "Rewrite the JavaScript function below as clean"
FIXED_EXT = "```javascript\nimport path from 'node:path';\n\nexport function extOf(file) {\n  return path.extname(file);\n}\n```"
REFINED_EXT = (
    "```javascript\nimport path from 'node:path';\n\n"
    "/**\n * The extension of a file name, with its dot.\n * @param {string} file - a path\n"
    " * @returns {string} the extension ('' when there is none)\n */\n"
    "export function extOf(file) {\n  return path.extname(file);\n}\n```"
)
REFINED_SLUG = (
    "```javascript\nconst _ = require('lodash');\n\n"
    "/**\n * Turn a title into a URL slug.\n * @param {string} title - any text\n"
    " * @returns {string} the words in lower case, joined by dashes\n */\n"
    "function slugify(title) {\n  return _.kebabCase(title);\n}\n```"
)


def fenced(code: str) -> str:
    return f"Here are the tests.\n\n```javascript\n{code}```\n"


RULES = [
    {"match": [TEST_PROMPT, "function slugify("], "answer": fenced(SLUG_TESTS)},
    {"match": [TEST_PROMPT, "function extOf("], "answer": fenced(EXT_TESTS)},
    {"match": [TEST_PROMPT, "function eolJoin("], "answer": fenced(LOOP_TESTS)},
    {"match": [TEST_PROMPT, "function greet("], "answer": fenced(MIXED_TESTS)},
    {"match": [FIX_PROMPT, "function extOf("], "answer": FIXED_EXT},
    {"match": [REFINE_PROMPT, "function extOf("], "answer": REFINED_EXT},
    {"match": [REFINE_PROMPT, "function slugify("], "answer": REFINED_SLUG},
]


def write_sources(root: Path) -> Path:
    repo = root / "src" / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for name, text in SOURCES.items():
        (repo / name).write_text(text)
    return root / "src"


def parquet_rows(out: Path, folder: str) -> list[dict]:
    """The rows of one config's files (``load_dataset`` refuses a config with no rows)."""
    return [row for path in sorted((out / folder).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def load(out: Path, config: str = "default") -> list[dict]:
    return list(load_dataset(str(out), config, split="train", cache_dir=str(out.parent / f".c-{out.name}-{config}")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 then stage 2 on the JavaScript folder, with the scripted model (run once)."""
    root = tmp_path_factory.mktemp("js-pipeline")
    rules = root / "rules.jsonl"
    rules.write_text("\n".join(json.dumps(r) for r in RULES) + "\n")
    common = ["--backend", "scripted", "--model", str(rules), "--cache_dir", str(root / "cache")]
    one = stage1.main(
        ["--language", "javascript", "--source_dir", str(write_sources(root)), "--output_dir", str(root / "s1"),
         "--sandbox_workers", "2", *common]
    )  # fmt: skip
    two = stage2.main(
        ["--input_dir", str(root / "s1"), "--output_dir", str(root / "s2"), "--rounds", "1", "--samples", "1",
         "--max_mutants", "6", "--sandbox_workers", "2", *common]
    )  # fmt: skip
    return {"codes": (one, two), "s1": root / "s1", "s2": root / "s2"}


def test_both_stages_exit_0(runs):
    assert runs["codes"] == (0, 0)


def test_stage1_keeps_the_functions_whose_tests_are_usable_and_says_why_of_the_others(runs):
    kept = {r["function_name"]: r for r in load(runs["s1"])}
    assert sorted(kept) == ["extOf", "slugify"]
    assert {r["language"] for r in kept.values()} == {"javascript"}
    # the kept code is exactly the require/import lines it uses, then its source (with its JSDoc)
    assert kept["slugify"]["code"].startswith("const _ = require('lodash');\n\n/**")
    assert "semver" not in kept["slugify"]["code"]
    assert "test('spaces become dashes'" in kept["slugify"]["test_code"]
    rejected = {r["function_name"] or r["path"]: r for r in load(runs["s1"], "rejected")}
    assert rejected["eolJoin"]["drop_reason"] == "dynamic_tests"
    assert rejected["greet"]["drop_reason"] == "module_format_mismatch"
    assert rejected["bump"]["drop_reason"] == "uses_module_globals"
    assert rejected["repo/plain.js"]["drop_reason"] == "no_target_import"
    assert all(r["drop_reason"] for r in rejected.values())


def test_stage1_card_says_javascript_and_that_no_benchmark_was_checked_offline(runs):
    card = (runs["s1"] / "README.md").read_text()
    assert "Language: javascript" in card and "- javascript" in card
    stats = json.loads(next((runs["s1"] / "stats").glob("shard-*.json")).read_text())
    assert stats["settings"]["language"] == "javascript"
    assert set(stats["decontamination_skipped"]) == {"humaneval", "mbpp"}  # MultiPL-E's need the Hub
    assert {r["decontaminated_against"] == [] for r in load(runs["s1"])} == {True}
    assert "lodash" in stats["settings"]["packages"] and "fs" in stats["settings"]["packages"]


def test_stage2_verifies_fixes_and_refines_javascript(runs):
    verified = {r["function_name"]: r for r in load(runs["s2"])}
    assert sorted(verified) == ["extOf", "slugify"]
    ext, slug = verified["extOf"], verified["slugify"]
    assert ext["language"] == slug["language"] == "javascript"
    assert ext["fix_rounds"] == 1 and "path.extname(file)" in ext["code"]
    assert slug["fix_rounds"] == 0
    for row in (ext, slug):
        assert row["code"].count("/**") == 1 and "@returns" in row["code"]  # refined: the published code
        assert row["prompt"] + row["completion"] == row["code"]
        assert row["mutation_score"] is not None and row["mutants"] >= 1
        assert row["line_coverage"] is None  # coverage is measured for Python only
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


def test_every_published_javascript_row_passes_its_tests_in_a_fresh_sandbox(runs):
    rows = load(runs["s2"])
    with Sandbox(SandboxConfig(language="javascript", workers=2)) as sandbox:
        verdicts = sandbox.verify([(r["code"], r["test_code"]) for r in rows])
    assert [v.status for v in verdicts] == ["pass"] * len(rows)
    assert [v.tests_run for v in verdicts] == [2, 2]


def test_stage2_card_says_javascript(runs):
    card = (runs["s2"] / "README.md").read_text()
    assert "Language: javascript" in card and "- javascript" in card


# --------------------------------------------------------------------------- embedded corpus, errors


def test_no_input_means_the_installed_javascript_packages_and_every_kept_function_defines(tmp_path):
    out = tmp_path / "out"
    args = ["--language", "javascript", "--skip_test_generation", "--limit", "15", "--output_dir", str(out)]
    assert stage1.main(args) == 0
    rows = load(out)
    assert len(rows) == 15 and {r["language"] for r in rows} == {"javascript"}
    stats = json.loads(next((out / "stats").glob("shard-*.json")).read_text())
    assert "installed JavaScript packages" in stats["input"]
    assert (
        stats["define_check"]["checked"] >= 15 and stats["define_check"]["programs"] == stats["define_check"]["checked"]
    )
    # each kept function's code runs alone in node (the define check's program, run again here)
    from processing.languages.javascript import DEFINE_TESTS

    with Sandbox(SandboxConfig(language="javascript", workers=2)) as sandbox:
        verdicts = sandbox.verify([(r["code"], DEFINE_TESTS) for r in rows])
    assert {v.status for v in verdicts} == {"pass"}


def test_missing_packages_stop_stage1_naming_the_setup_command(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("UNITCODER_JS_PACKAGES", str(tmp_path / "nothing"))
    write_sources(tmp_path)
    code = stage1.main(
        ["--language", "javascript", "--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out"),
         "--skip_test_generation"]
    )  # fmt: skip
    assert code == 2
    assert "python -m sandbox setup javascript" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--decontaminate", "bigcodebench"], "has no javascript version"),
        (["--packages", "lodash,not a name"], "package names"),
    ],
)
def test_bad_javascript_arguments_are_one_sentence(tmp_path, extra, message, caplog):
    write_sources(tmp_path)
    args = ["--language", "javascript", "--source_dir", str(tmp_path / "src"), "--output_dir", str(tmp_path / "o")]
    assert stage1.main([*args, "--skip_test_generation", *extra]) == 2
    assert message in caplog.text


def test_default_javascript_packages_are_node_builtins_and_the_sandbox_list():
    packages = default_packages("javascript")
    assert {"fs", "path", "crypto", "lodash", "date-fns", "uuid"} <= set(packages)
    assert parse_packages("node:fs, @scope/pkg", None, "javascript") == ("@scope/pkg", "fs")
    assert "numpy" in default_packages("python")


MULTIPL_E = {
    "humaneval-js": [
        {
            "name": "HumanEval_0_has_close_elements",
            "language": "js",
            "prompt": "//Check if in given array of numbers, are any two numbers closer to each other than\n"
            "// given threshold.\nfunction has_close_elements(numbers, threshold){\n",
            "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = has_close_elements;\n"
            "  assert.deepEqual(candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3),true);\n"
            "  assert.deepEqual(candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05),false);\n}\n\ntest();",
        }
    ],
    "mbpp-js": [
        {
            "name": "mbpp_2_similar_elements",
            "language": "js",
            "prompt": "//Write a function to find the shared elements from the given two arrays.\n"
            "function similar_elements(test_tup1, test_tup2){\n",
            "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = similar_elements;\n"
            "  assert.deepEqual(candidate([3, 4, 5, 6], [5, 7, 4, 10]),[4, 5]);\n}\n\ntest();",
        }
    ],
}


def test_decontamination_uses_multipl_e_translations_when_the_hub_answers(tmp_path, monkeypatch):
    import datasets

    def fake_load(repo, config=None, split=None, **kwargs):
        assert repo == "nuprl/MultiPL-E" and split == "test", (repo, config, split)
        return MULTIPL_E[config]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(stage1, "hub_reachable", lambda: True)
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    # the benchmark's translated prompt (its description as a JSDoc) with a body, and an unrelated function
    (src / "close.js").write_text(
        "const assert = require('node:assert');\n\n"
        "/**\n * Check if in given array of numbers, are any two numbers closer to each other than\n"
        " * given threshold.\n */\nfunction has_close_elements(numbers, threshold){\n"
        "  assert.ok(Array.isArray(numbers));\n"
        "  return numbers.some((a, i) => numbers.some((b, j) => i !== j && Math.abs(a - b) < threshold));\n}\n"
    )
    (src / "other.js").write_text(
        "const path = require('path');\n\nfunction stem(p) {\n  return path.parse(p).name;\n}\n"
    )
    out = tmp_path / "out"
    assert stage1.main(["--language", "javascript", "--source_dir", str(tmp_path / "src"), "--output_dir", str(out),
                        "--skip_test_generation", "--skip_define_check"]) == 0  # fmt: skip
    kept = load(out)
    assert [r["function_name"] for r in kept] == ["stem"]
    assert kept[0]["decontaminated_against"] == ["humaneval", "mbpp"]
    rejected = {r["function_name"]: r for r in load(out, "rejected") if r["function_name"]}
    assert rejected["has_close_elements"]["drop_reason"] == "contaminated"
    assert evalsets.benchmarks_for("javascript") == ("humaneval", "mbpp")


@pytest.mark.slow
def test_both_stages_with_the_embedded_model_end_every_function_once(runs, tmp_path):
    """Plumbing with the real model (SmolLM2 via llama.cpp): stage 1 writes tests (or says
    why not) and stage 2 answers the fix prompt for the scripted stage-1 rows."""
    pytest.importorskip("llama_cpp")
    cache = ["--cache_dir", str(tmp_path / "cache"), "--sandbox_workers", "2"]
    out1 = tmp_path / "s1"
    assert stage1.main(
        ["--language", "javascript", "--source_dir", str(write_sources(tmp_path)), "--output_dir", str(out1),
         "--limit", "1", "--max_tokens", "64", *cache]
    ) == 0  # fmt: skip
    rows = parquet_rows(out1, "data") + [
        r for r in parquet_rows(out1, "rejected") if r["function_name"] in ("extOf", "slugify")
    ]
    assert [r["function_name"] for r in rows] == ["extOf"]  # the first kept function, with tests or a reason
    out2 = tmp_path / "s2"
    assert stage2.main(
        ["--input_dir", str(runs["s1"]), "--output_dir", str(out2), "--rounds", "1", "--samples", "1",
         "--max_tokens", "96", "--skip_refine", "--skip_quality", *cache]
    ) == 0  # fmt: skip
    ended = sorted(r["function_name"] for folder in ("data", "rejected") for r in parquet_rows(out2, folder))
    assert ended == ["extOf", "slugify"]
    assert "Language: javascript" in (out2 / "README.md").read_text()
