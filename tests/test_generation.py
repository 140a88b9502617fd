"""The generation layer: request cache, per-sample seeds, retries, vLLM request building, secrets."""

from __future__ import annotations

import json
import sys
import threading
import types
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from processing.args import as_dict, parse_args, redacted_command_line
from processing.generation import (
    AnswersMissing,
    GenerationArgs,
    GenerationError,
    Generator,
    OpenAIBackend,
    Request,
    RequestCache,
    Sampling,
    ScriptedBackend,
    VLLMBackend,
    build_generator,
    unusable_reason,
    vllm_batch,
)

CONVERSATIONS = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]


def scripted() -> ScriptedBackend:
    return ScriptedBackend([{"match": "question", "answer": "an answer"}])


def test_n_samples_per_conversation_in_order_with_per_sample_seeds(tmp_path):
    seen = []

    class Recording(ScriptedBackend):
        def complete(self, requests, done, checkpoint=None):
            seen.extend(r.seed for r in requests)
            super().complete(requests, done)

    generator = Generator(Recording([{"match": "question", "answer": "x"}]), RequestCache(str(tmp_path)))
    answers = generator.generate(CONVERSATIONS, Sampling(n=2, seed=10))
    assert answers == [["x", "x"]] * 3
    assert seen == [10, 11, 10, 11, 10, 11]


def test_raw_completions_are_cached_apart_from_chat_and_cut_at_stop(tmp_path):
    backend = ScriptedBackend([{"match": "def add", "answer": "    return a + b\n\nprint(add(1, 2))"}])
    generator = Generator(backend, RequestCache(str(tmp_path)))
    sampling = Sampling(n=2, stop=("\nprint(",))
    assert generator.complete(["def add(a, b):\n"], sampling) == [["    return a + b\n"] * 2]
    again = Generator(ScriptedBackend([]), RequestCache(str(tmp_path)))
    assert again.complete(["def add(a, b):\n"], sampling) == [["    return a + b\n"] * 2]
    assert again.usage.cached == 2
    chat = Request(({"role": "user", "content": "def add(a, b):\n"},), 0.7, 0.95, 1024, 0)
    raw = Request((), 0.7, 0.95, 1024, 0, text="def add(a, b):\n")
    assert RequestCache.key("b", "m", chat, 0) != RequestCache.key("b", "m", raw, 0)
    assert RequestCache.key("b", "m", raw, 0) != RequestCache.key("b", "m", replace(raw, stop=("x",)), 0)


def test_a_second_run_asks_the_model_nothing(tmp_path):
    first = scripted()
    assert (
        Generator(first, RequestCache(str(tmp_path))).generate(CONVERSATIONS, Sampling(n=3)) == [["an answer"] * 3] * 3
    )
    assert first.calls == 9
    second = scripted()
    generator = Generator(second, RequestCache(str(tmp_path)))
    assert generator.generate(CONVERSATIONS, Sampling(n=3)) == [["an answer"] * 3] * 3
    assert second.calls == 0 and generator.usage.cached == 9


def test_the_cache_key_covers_model_prompt_sampling_and_sample_index():
    request = Request(({"role": "user", "content": "q"},), 0.7, 0.95, 100, 0)
    base = RequestCache.key("openai", "m", request, 0)
    assert RequestCache.key("openai", "other", request, 0) != base
    assert RequestCache.key("openai", "m", Request(({"role": "user", "content": "q2"},), 0.7, 0.95, 100, 0), 0) != base
    assert RequestCache.key("openai", "m", Request(request.messages, 0.2, 0.95, 100, 0), 0) != base
    assert RequestCache.key("openai", "m", Request(request.messages, 0.7, 0.95, 100, 1), 1) != base


def test_only_missing_answers_are_asked_after_an_interruption(tmp_path):
    cache_dir = str(tmp_path)

    class Dies(ScriptedBackend):
        def complete(self, requests, done, checkpoint=None):
            done(0, self._answer(requests[0]))
            raise KeyboardInterrupt  # the run is killed after one answer

        def _answer(self, request):
            from processing.generation import Completion

            return Completion("an answer", finish_reason="stop")

    with pytest.raises(KeyboardInterrupt):
        Generator(Dies([]), RequestCache(cache_dir)).generate(CONVERSATIONS, Sampling())
    resumed = scripted()
    assert Generator(resumed, RequestCache(cache_dir)).generate(CONVERSATIONS, Sampling()) == [["an answer"]] * 3
    assert resumed.calls == 2


def test_failed_requests_raise_once_the_others_are_cached_and_a_rerun_asks_only_for_them(tmp_path):
    backend = ScriptedBackend([{"match": "question 1", "answer": "one"}])
    generator = Generator(backend, RequestCache(str(tmp_path)))
    with pytest.raises(AnswersMissing, match="2 of 3 requests failed") as raised:
        generator.generate(CONVERSATIONS, Sampling(), step="test")
    assert (raised.value.failed, raised.value.total) == (2, 3)
    assert generator.by_step["test"].failed == 2 and generator.by_step["test"].requests == 3
    again = ScriptedBackend([{"match": "question", "answer": "now"}])
    assert Generator(again, RequestCache(str(tmp_path))).generate(CONVERSATIONS, Sampling()) == [
        ["now"],
        ["one"],
        ["now"],
    ]
    assert again.calls == 2


def test_answers_keep_their_finish_reason_and_a_prompt_too_long_is_an_empty_answer(tmp_path):
    backend = ScriptedBackend(
        [
            {"match": "question 0", "answer": "cut sho", "finish_reason": "length"},
            {"match": "question 1", "answer": "", "finish_reason": "prompt_too_long"},
            {"match": "question 2", "answer": "whole"},
        ]
    )
    generator = Generator(backend, RequestCache(str(tmp_path)))
    (cut,), (too_long,), (whole,) = generator.generate(CONVERSATIONS, Sampling(), step="fix")
    assert (cut, cut.finish_reason, cut.truncated) == ("cut sho", "length", True)
    assert (too_long, too_long.prompt_too_long) == ("", True)
    assert (whole, whole.finish_reason) == ("whole", "stop")
    usage = generator.by_step["fix"]
    assert (usage.requests, usage.prompt_too_long, usage.truncated, usage.failed) == (3, 1, 1, 0)
    assert unusable_reason(cut, "no_function_in_answer") == "answer_truncated"
    assert unusable_reason(too_long, "no_code") == "prompt_too_long"
    assert unusable_reason(whole, "no_code") == "no_code"
    # from the cache: the finish reason comes back too, and the prompt that did not fit is asked again
    again = ScriptedBackend([{"match": "question", "answer": "fits now"}])
    (cut,), (fits,), _ = Generator(again, RequestCache(str(tmp_path))).generate(CONVERSATIONS, Sampling())
    assert cut.finish_reason == "length" and fits == "fits now" and again.calls == 1


# --------------------------------------------------------------------------- openai backend


class FlakyServer:
    """An OpenAI-compatible server on loopback that fails on purpose before answering."""

    def __init__(self, failures: list[int], models=("served-model",), retry_after: str | None = None):
        self.failures = list(failures)
        self.models = models
        self.posts = []
        self.paths = []
        self.headers = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, extra=None):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": m} for m in owner.models]})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.posts.append(payload)
                owner.headers.append(dict(self.headers))
                if owner.failures:
                    code = owner.failures.pop(0)
                    self._send(code, {"error": "on purpose"}, {"Retry-After": retry_after} if retry_after else None)
                    return
                owner.paths.append(self.path)
                if "prompt" in payload:  # /completions: raw text
                    text = f"{payload['prompt']} continued seed {payload['seed']}"
                    choice = {"text": text, "finish_reason": "stop"}
                else:
                    text = f"echo: {payload['messages'][-1]['content']} seed {payload['seed']}"
                    choice = {"message": {"content": text}, "finish_reason": "stop"}
                self._send(
                    200,
                    {
                        "choices": [choice],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky():
    servers = []

    def make(*args, **kwargs):
        server = FlakyServer(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def openai(server: FlakyServer, **kwargs) -> OpenAIBackend:
    settings = {"api_key": None, "max_concurrency": 2, "timeout": 10, "max_retries": 3, "backoff_s": 0.01} | kwargs
    return OpenAIBackend(server.url, "served-model", **settings)


def test_raw_completion_goes_to_the_completions_endpoint_with_stop_strings(flaky):
    server = flaky([])
    generator = Generator(openai(server), None)
    answers = generator.complete(["def f(x):"], Sampling(seed=3, stop=("seed",)))
    assert answers == [["def f(x): continued "]]  # cut before the stop string, as every engine does
    assert server.paths == ["/v1/completions"]
    assert server.posts[0]["prompt"] == "def f(x):" and server.posts[0]["stop"] == ["seed"]
    assert "messages" not in server.posts[0]


def test_retries_on_429_and_5xx_then_answers(flaky):
    server = flaky([429, 503, 500], retry_after="0")
    generator = Generator(openai(server, max_concurrency=1), None)
    assert generator.generate(CONVERSATIONS[:1], Sampling(seed=7)) == [["echo: question 0 seed 7"]]
    assert len(server.posts) == 4


def test_gives_up_after_the_retries_with_a_clear_error(flaky):
    server = flaky([503] * 10)
    with pytest.raises(GenerationError, match="1 of 1 requests .* failed after 2 retries each"):
        Generator(openai(server, max_retries=2), None).generate(CONVERSATIONS[:1], Sampling())
    assert len(server.posts) == 3


def test_a_refused_request_stops_the_run_with_the_servers_message(flaky):
    server = flaky([400])
    with pytest.raises(GenerationError, match="HTTP 400: on purpose"):
        Generator(openai(server, max_concurrency=1), None).generate(CONVERSATIONS[:2], Sampling())
    assert len(server.posts) == 1  # no retry, and nothing more asked


def test_wrong_model_name_is_a_clear_error(flaky):
    server = flaky([], models=("other-model",))
    with pytest.raises(GenerationError, match="does not serve model 'served-model'; it serves: other-model"):
        openai(server)


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(GenerationError, match="cannot reach an OpenAI-compatible server"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", None, 1, 2, 0)


def test_api_key_is_sent_but_never_logged(flaky, caplog, monkeypatch):
    server = flaky([])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-from-env")
    args = GenerationArgs(backend="openai", base_url=server.url, model="served-model")
    assert args.api_key == "sk-secret-from-env"
    backend = OpenAIBackend(args.base_url, args.model, args.api_key, 1, 5, 0)
    with caplog.at_level("DEBUG"):
        Generator(backend, None).generate(CONVERSATIONS[:1], Sampling())
    assert {k.lower(): v for k, v in server.headers[0].items()}["authorization"] == "Bearer sk-secret-from-env"
    assert "sk-secret" not in caplog.text
    assert as_dict(args)["api_key"] == "<redacted>"
    assert "sk-x" not in redacted_command_line(
        ["--api_key", "sk-x", "--api_key=sk-x", "--model", "m"], (GenerationArgs,)
    )


# --------------------------------------------------------------------------- vllm backend (without vLLM)


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_vllm_batch_is_one_request_per_sample_with_its_seed():
    requests = [Request(({"role": "user", "content": "q"},), 0.5, 0.9, 64, seed) for seed in (3, 4)]
    conversations, params = vllm_batch(requests, FakeSamplingParams)
    assert conversations == [[{"role": "user", "content": "q"}]] * 2
    assert [p.kwargs for p in params] == [
        {"n": 1, "temperature": 0.5, "top_p": 0.9, "max_tokens": 64, "seed": 3},
        {"n": 1, "temperature": 0.5, "top_p": 0.9, "max_tokens": 64, "seed": 4},
    ]


def test_vllm_backend_makes_one_chat_call_per_round(monkeypatch):
    calls = {}

    class FakeLLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            calls.setdefault("chat", []).append((messages, sampling_params, use_tqdm))
            sample = types.SimpleNamespace(text="ok", token_ids=[1, 2], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[sample], prompt_token_ids=[1, 2, 3]) for _ in messages]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams))
    backend = VLLMBackend("org/model", tensor_parallel_size=2, max_model_len=4096, gpu_memory_utilization=0.8, seed=1)
    generator = Generator(backend, None)
    assert generator.generate(CONVERSATIONS, Sampling(n=2)) == [["ok", "ok"]] * 3
    assert calls["init"] == {
        "model": "org/model",
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.8,
        "enable_prefix_caching": True,
        "seed": 1,
    }
    ((messages, params, use_tqdm),) = calls["chat"]
    assert len(messages) == 6 and len(params) == 6 and use_tqdm
    assert generator.usage.prompt_tokens == 18 and generator.usage.completion_tokens == 12


def test_vllm_backend_sends_raw_texts_to_generate_with_stop(monkeypatch):
    calls = {}

    class FakeLLM:
        def __init__(self, **kwargs):
            pass

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            calls["generate"] = (prompts, sampling_params)
            sample = types.SimpleNamespace(text="    return x\ndef g", token_ids=[1], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[sample], prompt_token_ids=[1]) for _ in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams))
    generator = Generator(VLLMBackend("org/model", 1, None, 0.9, 0), None)
    answers = generator.complete(["def f(x):\n"], Sampling(n=2, stop=("\ndef",)))
    assert answers == [["    return x", "    return x"]]
    prompts, params = calls["generate"]
    assert prompts == ["def f(x):\n"] * 2 and [p.kwargs["stop"] for p in params] == [["\ndef"]] * 2


class RecordingLLM:
    """A stand-in for ``vllm.LLM`` that records the engine arguments it was built with."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        RecordingLLM.built.append(kwargs)


@pytest.fixture
def fake_vllm(monkeypatch):
    RecordingLLM.built = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=RecordingLLM, SamplingParams=FakeSamplingParams))
    return RecordingLLM.built


def test_vllm_args_reach_the_engine_next_to_the_dedicated_flags(fake_vllm, tmp_path):
    args = GenerationArgs(
        backend="vllm",
        model="org/model",
        tensor_parallel_size=4,
        vllm_args='{"max_num_seqs": 512, "enable_chunked_prefill": true, "enable_prefix_caching": false}',
        cache_dir=str(tmp_path),
    )
    build_generator(args)
    assert fake_vllm == [
        {
            "model": "org/model",
            "tensor_parallel_size": 4,
            "max_model_len": None,
            "gpu_memory_utilization": 0.9,
            "enable_prefix_caching": False,  # --vllm_args may turn the default off
            "seed": 0,
            "max_num_seqs": 512,
            "enable_chunked_prefill": True,
        }
    ]


def test_vllm_args_from_a_yaml_recipe_mapping_equal_the_json_flag(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("backend: vllm\nmodel: org/model\nvllm_args:\n  max_num_seqs: 256\n  dtype: bfloat16\n")
    (from_yaml,) = parse_args((GenerationArgs,), "test", ["--config", str(recipe)])
    flag = ["--backend", "vllm", "--model", "org/model", "--vllm_args", '{"dtype": "bfloat16", "max_num_seqs": 256}']
    (from_flag,) = parse_args((GenerationArgs,), "test", flag)
    assert from_yaml.vllm_args == from_flag.vllm_args == {"max_num_seqs": 256, "dtype": "bfloat16"}


def test_a_bad_vllm_args_flag_is_a_usage_error_at_start_up(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args((GenerationArgs,), "test", ["--backend", "vllm", "--model", "m", "--vllm_args", "max_num_seqs=512"])
    assert stop.value.code == 2 and "--vllm_args must be a JSON object" in capsys.readouterr().err


def test_vllm_args_that_change_answers_change_the_cache_key_and_speed_settings_do_not(fake_vllm):
    plain = VLLMBackend("org/model", 1, None, 0.9, 0)
    faster = VLLMBackend("org/model", 1, None, 0.9, 0, {"max_num_seqs": 512, "enable_chunked_prefill": True})
    quantized = VLLMBackend("org/model", 1, None, 0.9, 0, {"quantization": "fp8", "max_num_seqs": 512})
    assert plain.cache_model == faster.cache_model == "org/model"  # the keys of earlier runs still hit
    assert quantized.cache_model != plain.cache_model and quantized.model_id == "org/model"
    request = Request(({"role": "user", "content": "q"},), 0.7, 0.95, 64, 0)
    before = RequestCache.key("vllm", "org/model", request, 0)
    assert RequestCache.key("vllm", quantized.cache_model, request, 0) != before


def test_vllm_args_with_a_dedicated_key_fail_when_the_backend_is_built_directly(fake_vllm):
    with pytest.raises(ValueError, match="use the dedicated flag --max_model_len"):
        VLLMBackend("org/model", 1, None, 0.9, 0, {"max_model_len": 4096})
    assert fake_vllm == []  # refused before an engine was started


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(GenerationError, match="needs vLLM"):
        VLLMBackend("m", 1, None, 0.9, 0)


VLLM = {"backend": "vllm", "model": "org/model"}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"backend": "nope"}, "--backend must be one of"),
        ({"backend": "openai", "model": "m"}, "needs --base_url and --model"),
        ({"backend": "vllm"}, "needs --model"),
        ({"temperature": -1}, "temperature"),
        (VLLM | {"vllm_args": "{max_num_seqs: 512}"}, "--vllm_args must be a JSON object .* not valid JSON"),
        (VLLM | {"vllm_args": "[512]"}, "--vllm_args must be a JSON object .* not a JSON array"),
        (VLLM | {"vllm_args": "512"}, "--vllm_args must be a JSON object .* not a JSON number"),
        (VLLM | {"vllm_args": '{"max-num-seqs": 512}'}, "written with underscores"),
        (VLLM | {"vllm_args": '{"tensor_parallel_size": 2}'}, "use the dedicated flag --tensor_parallel_size"),
        (VLLM | {"vllm_args": '{"max_model_len": 4096}'}, "use the dedicated flag --max_model_len"),
        (VLLM | {"vllm_args": {"gpu_memory_utilization": 0.5}}, "use the dedicated flag --gpu_memory_utilization"),
        (VLLM | {"vllm_args": '{"seed": 1}'}, "use the dedicated flag --seed"),
    ],
)
def test_bad_generation_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        GenerationArgs(**settings)


def test_two_model_files_with_one_name_get_different_ids(tmp_path):
    from processing.generation.backends.llama_cpp import file_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.gguf").write_bytes(b"GGUF" + b"\x00" * 1000)
    (tmp_path / "b" / "model.gguf").write_bytes(b"GGUF" + b"\x01" * 1000)
    first, second = file_digest(str(tmp_path / "a" / "model.gguf")), file_digest(str(tmp_path / "b" / "model.gguf"))
    assert first != second and len(first) == 12
    assert file_digest(str(tmp_path / "a" / "model.gguf"), chunk=7) == first  # read in any chunk size


def test_each_step_samples_with_its_flag_else_the_shared_one_else_unitcoders_default():
    from processing.generation import GenerationArgs

    defaults = GenerationArgs(backend="scripted", model="rules.jsonl")
    assert [(s.temperature, s.max_tokens) for s in map(defaults.sampling_for, ("test", "fix", "refine"))] == [
        (0.2, 2048),
        (0.5, 2048),
        (0.5, 2048),
    ]
    shared = GenerationArgs(backend="scripted", model="r", temperature=0.9, max_tokens=300, fix_temperature=0.1)
    assert (shared.sampling_for("test").temperature, shared.sampling_for("test").max_tokens) == (0.9, 300)
    assert (shared.sampling_for("fix").temperature, shared.sampling_for("refine").temperature) == (0.1, 0.9)
    assert shared.sampling_for("fix", n=3).n == 3 and shared.sampling_for("fix").seed == shared.seed
    with pytest.raises(ValueError, match="--refine_max_tokens"):
        GenerationArgs(backend="scripted", model="r", refine_max_tokens=0)


def test_a_fix_round_records_truncated_and_too_long_answers_and_says_which_flag_to_raise(caplog):
    from processing.languages import PromptTemplate
    from processing.steps.fix import fix_round_batch

    backend = ScriptedBackend(
        [
            {"match": "def f(", "answer": "```python\ndef f(x):\n    return (x +", "finish_reason": "length"},
            {"match": "def g(", "answer": "", "finish_reason": "prompt_too_long"},
        ]
    )
    batch = {
        "id": ["a", "b"], "function_name": ["f", "g"], "code": ["def f(x):\n    return 0\n", "def g(x):\n    return 0\n"],
        "current_code": ["def f(x):\n    return 0\n", "def g(x):\n    return 0\n"], "test_code": ["t", "t"],
        "current_error": ["boom", "boom"], "state": ["failing", "failing"], "attempts": [[], []],
        "drop_reason": [None, None], "detail": [None, None], "fix_rounds": [0, 0], "variants": [[], []],
    }  # fmt: skip
    with caplog.at_level("WARNING"):
        out = fix_round_batch(
            batch, round_=1, generator=Generator(backend, None), sandbox=None, template=PromptTemplate.load("fix"),
            sampling=Sampling(max_tokens=64), samples=2, keep_variants=1,
        )  # fmt: skip
    assert [a["status"] for a in out["attempts"][0]] == ["answer_truncated", "answer_truncated"]
    assert out["state"] == ["failing", "rejected"] and out["drop_reason"][1] == "prompt_too_long"
    assert "2 fix answers were cut at 64 tokens" in caplog.text and "--fix_max_tokens" in caplog.text
