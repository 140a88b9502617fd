"""The OpenAI-compatible backend against a loopback server started in the test: hundreds of
requests in flight, refusals that stop the run with the server's message and no rejected
rows, Retry-After, the failed-share limit, truncated answers and prompts too long."""

from __future__ import annotations

import json
import time

import pytest
from test_stage2 import ROWS, args_for, stage1_output  # noqa: F401  (the fixture)

from processing import stage2
from processing.generation import AnswersMissing, GenerationError, Generator, OpenAIBackend, RequestCache, Sampling
from processing.generation.loopback import LoopbackServer, echo


def conversations(n: int, prefix: str = "question") -> list[list[dict]]:
    return [[{"role": "user", "content": f"{prefix} {i}"}] for i in range(n)]


def backend(server: LoopbackServer, **settings) -> OpenAIBackend:
    options = {"api_key": None, "max_concurrency": 8, "timeout": 30, "max_retries": 2, "backoff_s": 0.01}
    return OpenAIBackend(server.url, server.model, **(options | settings))


def refusing(status: int, message: str, when=lambda payload: True):
    def respond(path: str, payload: dict):
        if when(payload):
            return status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}
        return echo(path, payload)

    return respond


def last_message(payload: dict) -> str:
    return payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]


def test_hundreds_of_requests_are_in_flight_at_once_each_its_own_sample():
    with LoopbackServer(latency_s=0.5) as server:
        client = backend(server, max_concurrency=256)
        answers = Generator(client, None).generate(conversations(150), Sampling(n=2, seed=10))
        assert server.requests == 300
        assert server.peak_in_flight >= 200 and client.peak_in_flight == 256  # counted on both ends
        assert answers[7] == ["echo: question 7 seed 10", "echo: question 7 seed 11"]  # seed + i, one request each
        assert sorted(p["seed"] for p in server.payloads if last_message(p) == "question 3") == [10, 11]
        assert all(p["n"] == 1 for p in server.payloads)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_a_refusal_stops_the_run_at_once_with_the_servers_message(status):
    message = f"The model `nope` does not exist ({status})"
    with LoopbackServer(respond=refusing(status, message)) as server:
        with pytest.raises(GenerationError, match=f"HTTP {status}: The model `nope` does not exist") as raised:
            Generator(backend(server, max_concurrency=4), None).generate(conversations(200), Sampling())
        assert not isinstance(raised.value, AnswersMissing)
        assert server.requests <= 8  # no retries, and the other requests are not sent


def test_a_400_about_the_context_length_marks_that_prompt_too_long_only(tmp_path):
    vllm_words = "This model's maximum context length is 2048 tokens. However, you requested 5000 tokens."
    respond = refusing(400, vllm_words, when=lambda p: "huge" in last_message(p))
    with LoopbackServer(respond=respond) as server:
        generator = Generator(backend(server), RequestCache(str(tmp_path)))
        prompts = conversations(3) + conversations(1, "huge")
        *fine, (too_long,) = generator.generate(prompts, Sampling(), step="test")
        assert [a[0] for a in fine] == [f"echo: question {i} seed 0" for i in range(3)]
        assert too_long == "" and too_long.prompt_too_long
        assert generator.by_step["test"].prompt_too_long == 1 and generator.by_step["test"].failed == 0
        assert server.requests == 4  # a verdict on the prompt: not retried


def test_retry_after_is_honoured_then_the_answer_comes():
    failures = [1]

    def respond(path, payload):
        if failures:
            failures.pop()
            return 503, {"error": {"message": "warming up"}}, {"Retry-After": "1"}
        return echo(path, payload)

    with LoopbackServer(respond=respond) as server:
        start = time.monotonic()
        answers = Generator(backend(server, max_concurrency=1), None).generate(conversations(1), Sampling())
        assert time.monotonic() - start >= 1.0  # the backoff alone would wait 10 ms
        assert answers == [["echo: question 0 seed 0"]] and server.requests == 2


def test_failures_under_the_limit_defer_their_rows_and_over_it_stop_the_run(tmp_path):
    respond = refusing(503, "overloaded", when=lambda p: last_message(p) in ("question 3", "question 7"))
    with LoopbackServer(respond=respond) as server:
        generator = Generator(backend(server, max_retries=1, max_failed_fraction=0.05), RequestCache(str(tmp_path)))
        with pytest.raises(AnswersMissing, match="2 of 100 requests failed") as raised:
            generator.generate(conversations(100), Sampling())
        assert raised.value.failed == 2 and "overloaded" in str(raised.value)
        assert server.requests == 98 + 2 * 2  # each failing request tried twice
        assert RequestCache(str(tmp_path)).count() == 98  # the answers received are kept
        strict = Generator(backend(server, max_retries=1, max_failed_fraction=0.01), None)
        with pytest.raises(GenerationError, match="more than --max_failed_fraction 0.01") as stopped:
            strict.generate(conversations(100), Sampling())
        assert not isinstance(stopped.value, AnswersMissing)


def test_an_answer_cut_by_max_tokens_says_so():
    def respond(path, payload):
        status, body = echo(path, payload)
        body["choices"][0]["finish_reason"] = "length"
        return status, body

    with LoopbackServer(respond=respond) as server:
        ((answer,),) = Generator(backend(server), None).generate(conversations(1), Sampling(max_tokens=5))
        assert answer.truncated and server.payloads[0]["max_tokens"] == 5


def test_a_server_that_refuses_every_completion_stops_stage_2_with_no_rejected_rows(tmp_path, stage1_output, caplog):  # noqa: F811
    with LoopbackServer(respond=refusing(404, "no such route: /v1/chat/completions")) as server:
        argv = args_for(tmp_path, stage1_output)
        argv[argv.index("--backend") + 1] = "openai"
        argv[argv.index("--model") + 1] = server.model
        argv += ["--base_url", server.url]
        assert stage2.main(argv) == 1
    assert "HTTP 404: no such route" in caplog.text
    out = tmp_path / "out"
    assert not (out / "rejected").exists() and not (out / "data").exists()  # no row judged on a missing answer
    assert not list(out.glob(".work/*/chunk-*"))  # and no chunk marked done


def test_stage_2_leaves_chunks_whose_answers_failed_for_a_rerun_that_finishes_them(tmp_path, stage1_output, caplog):  # noqa: F811
    down = {"on": True}

    def respond(path, payload):
        if down["on"] and "def sub(" in last_message(payload):
            return 503, {"error": {"message": "overloaded"}}
        return 200, {"choices": [{"message": {"content": "I cannot."}, "finish_reason": "stop"}], "usage": {}}

    with LoopbackServer(respond=respond) as server:
        argv = args_for(tmp_path, stage1_output)
        argv[argv.index("--backend") + 1] = "openai"
        argv[argv.index("--model") + 1] = server.model
        argv += ["--base_url", server.url, "--max_retries", "0", "--max_failed_fraction", "0.6", "--chunk_size", "3"]
        assert stage2.main(argv) == 1
        assert "left for a rerun" in caplog.text
        # the first chunk's fix round asked for "sub" and "mul": half failed, under the limit, so that chunk
        # waits (nothing of it kept or rejected) while the next chunk is done
        assert not (tmp_path / "out" / "rejected").exists()
        assert len(list((tmp_path / "out" / ".work").glob("*/chunk-00001*"))) >= 1
        down["on"] = False
        assert stage2.main(argv) == 0
    stats = json.loads((tmp_path / "out" / "stats" / "shard-00000-of-00001.json").read_text())
    assert stats["rows"] == len(ROWS) and stats["this_run"]["chunks_skipped"] >= 1
    assert set(stats["usage"]) >= {"fix"}
