"""Real model answers: the embedded SmolLM2-135M-Instruct in-process, and behind a real llama.cpp server."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from processing import stage1
from processing.generation import (
    GenerationError,
    Generator,
    LlamaCppBackend,
    OpenAIBackend,
    RequestCache,
    Sampling,
    embedded_model_path,
)

pytestmark = pytest.mark.slow
QUESTION = [[{"role": "user", "content": "Write a Python function that adds two numbers."}]]
SHORT = Sampling(n=2, temperature=0.7, top_p=0.95, max_tokens=24, seed=5)


@pytest.fixture(scope="module")
def embedded():
    return LlamaCppBackend(None, 2048, 0)


def test_the_embedded_model_ships_in_a_wheel():
    path = Path(embedded_model_path())
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_in_process_llama_cpp_gives_n_answers_deterministically(embedded, tmp_path):
    first = Generator(embedded, None).generate(QUESTION, SHORT)
    assert len(first) == 1 and len(first[0]) == 2 and all(first[0])
    again = Generator(LlamaCppBackend(None, 2048, 0), None).generate(QUESTION, SHORT)
    assert again == first  # same seeds, same answers: what resuming relies on


def test_a_rerun_is_served_from_the_cache(embedded, tmp_path):
    first = Generator(embedded, RequestCache(str(tmp_path)))
    answers = first.generate(QUESTION, SHORT)
    assert first.usage.requests == 2
    second = Generator(embedded, RequestCache(str(tmp_path)))
    assert second.generate(QUESTION, SHORT) == answers and second.usage.requests == 0


def test_in_process_llama_cpp_continues_raw_text_up_to_a_stop_string(embedded):
    sampling = Sampling(n=1, temperature=0.0, max_tokens=48, stop=("\ndef ",))
    (answer,) = Generator(embedded, None).complete(['def add(a, b):\n    """Return a + b."""\n'], sampling)
    assert answer[0] and "\ndef " not in answer[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+b")  # a file: a full pipe would stall the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", embedded_model_path(), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama.cpp server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as response:
                json.loads(response.read())
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("llama.cpp server did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_openai_backend_against_a_real_llama_cpp_server(llama_server):
    backend = OpenAIBackend(llama_server, "smollm2", None, max_concurrency=2, timeout=120, max_retries=2)
    generator = Generator(backend, None)
    answers = generator.generate(QUESTION * 2, SHORT)
    assert [len(a) for a in answers] == [2, 2] and all(text for a in answers for text in a)
    assert generator.usage.completion_tokens > 0 and generator.usage.requests == 4


def test_the_real_server_rejects_a_wrong_model_name_clearly(llama_server):
    with pytest.raises(GenerationError, match="does not serve model 'gpt-nonexistent'"):
        OpenAIBackend(llama_server, "gpt-nonexistent", None, 1, 30, 0)


def test_stage1_end_to_end_with_the_embedded_model(tmp_path):
    src = tmp_path / "src" / "repo"
    src.mkdir(parents=True)
    (src / "a.py").write_text(
        "import os\n\ndef join_name(folder, name):\n    return os.path.join(folder, name + '.txt')\n"
    )
    (src / "b.py").write_text("import json\n\ndef dump_sorted(data):\n    return json.dumps(data, sort_keys=True)\n")
    out = tmp_path / "out"
    args = ["--source_dir", str(tmp_path / "src"), "--output_dir", str(out), "--decontaminate", "humaneval"]
    args += ["--max_tokens", "128", "--cache_dir", str(tmp_path / "cache")]
    assert stage1.main(args) == 0
    stats = json.loads((out / "stats" / "shard-00000-of-00001.json").read_text())["test_generation"]
    assert stats["functions"] == 2 and stats["answers"] == 2
    assert stats["test_backend"] == "llama_cpp" and re.fullmatch(r".+\.gguf@[0-9a-f]{12}", stats["test_model"])
    assert stats["kept"] + sum(stats["dropped"].values()) == 2


def test_transformers_backend_generates_from_the_dequantised_embedded_model():
    from processing.generation import TransformersBackend

    path = Path(embedded_model_path())
    backend = TransformersBackend(f"{path.parent}:{path.name}", batch_size=2)
    generator = Generator(backend, None)
    answers = generator.generate(QUESTION * 3, Sampling(n=1, temperature=0.0, max_tokens=12))
    assert [len(a) for a in answers] == [1, 1, 1] and all(a[0] for a in answers)
    assert answers[0] == answers[1] == answers[2]  # greedy: the same prompt, the same answer, batched or not
    raw = generator.complete(["def add(a, b):\n"], Sampling(n=1, temperature=0.0, max_tokens=12, stop=("\n\n",)))
    assert raw[0][0] and "\n\n" not in raw[0][0]


def test_stage2_end_to_end_with_the_embedded_model(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from processing import stage2

    (tmp_path / "in" / "data").mkdir(parents=True)
    tests = "import unittest\n\nclass TestCases(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
    rows = [
        {"id": "ok", "function_name": "add", "code": "def add(a, b):\n    return a + b\n", "test_code": tests},
        {"id": "broken", "function_name": "add", "code": "def add(a, b):\n    return a - b\n", "test_code": tests},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "data" / "train-00000-of-00001.parquet")
    args = [
        "--input_dir",
        str(tmp_path / "in"),
        "--output_dir",
        str(tmp_path / "out"),
        "--cache_dir",
        str(tmp_path / "cache"),
    ]
    assert stage2.main([*args, "--rounds", "1", "--samples", "2", "--max_tokens", "128", "--sandbox_workers", "1"]) == 0
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    funnel = dict(stats["funnel"])
    assert funnel["input rows"] == 2 and funnel["passed at first try"] == 1
    assert funnel["verified"] + sum(stats["dropped"].values()) == 2
    assert sum(step["requests"] for step in stats["usage"].values()) >= 2  # two fix samples (and refine answers)
