"""Rounds in several engine calls, and prompts that do not fit the model's context: vLLM
through a stand-in module, llama.cpp with the real embedded model."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from processing.generation import Generator, LlamaCppBackend, RequestCache, Sampling, VLLMBackend
from processing.generation.types import PROMPT_TOO_LONG, Completion, Request

# --------------------------------------------------------------------------- vLLM (a stand-in module)


class WordTokenizer:
    """A stand-in for the engine's Hugging Face tokenizer: one token per word; a chat
    prompt adds two tokens per message and two for the generation prompt."""

    def __init__(self, as_dict: bool = False):
        self.as_dict = as_dict  # like transformers' BatchEncoding from apply_chat_template
        self.counted = 0

    def encode(self, text):
        self.counted += 1
        return list(range(len(text.split())))

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
        assert tokenize and add_generation_prompt
        self.counted += 1
        ids = [0] * (sum(len(m["content"].split()) + 2 for m in messages) + 2)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)} if self.as_dict else ids


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class EngineLLM:
    """A stand-in for ``vllm.LLM``: records each call's prompts, answers each prompt with
    its position in the round (``a0``, ``a1``, ...), and exposes a context length."""

    context: int | None = 1000
    tokenizer: WordTokenizer = WordTokenizer()
    fail_on_call: int | None = None  # this call (1-based) raises, as a kill would end it
    on_call = None  # called with the call's number before it answers

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[tuple[str, list]] = []
        self.answered = 0
        if self.context is not None:
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=self.context))

    def get_tokenizer(self):
        return self.tokenizer

    def _answer(self, kind, prompts, sampling_params):
        assert len(prompts) == len(sampling_params)
        self.calls.append((kind, list(prompts)))
        if self.on_call:
            self.on_call(len(self.calls))
        if self.fail_on_call == len(self.calls):
            raise KeyboardInterrupt
        outputs = []
        for _ in prompts:
            sample = types.SimpleNamespace(text=f"a{self.answered}", token_ids=[1, 2], finish_reason="stop")
            outputs.append(types.SimpleNamespace(outputs=[sample], prompt_token_ids=[7] * 3))
            self.answered += 1
        return outputs

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        return self._answer("chat", messages, sampling_params)

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        return self._answer("generate", prompts, sampling_params)


@pytest.fixture
def engine(monkeypatch):
    """The stand-in ``vllm`` module; set ``EngineLLM`` attributes on the returned class
    (a fresh subclass per test) before building the backend."""
    cls = type("LLM", (EngineLLM,), {"tokenizer": WordTokenizer()})
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=cls, SamplingParams=SamplingParams))
    return cls


def chat(words: int, seed: int = 0) -> Request:
    return Request(({"role": "user", "content": " ".join(["w"] * words)},), 0.0, 1.0, 16, seed)


def raw(words: int, seed: int = 0) -> Request:
    return Request((), 0.0, 1.0, 16, seed, text=" ".join(["w"] * words))


def run(backend, requests):
    """Complete ``requests``; returns the events (``("done", position, completion)`` and
    ``("checkpoint",)``) in order and the answers by position."""
    events: list[tuple] = []
    answers: dict[int, Completion] = {}

    def done(position, completion):
        events.append(("done", position, completion))
        answers[position] = completion

    backend.complete(requests, done, lambda: events.append(("checkpoint",)))
    return events, answers


def test_a_round_takes_calls_of_at_most_generation_chunk_and_checkpoints_after_each(engine, caplog):
    backend = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=4)
    with caplog.at_level(logging.INFO, logger="processing.generation.backends.vllm"):
        events, answers = run(backend, [chat(5, seed) for seed in range(10)])
    assert [len(prompts) for _, prompts in backend.llm.calls] == [4, 4, 2]
    shape = ["checkpoint" if e[0] == "checkpoint" else e[1] for e in events]
    assert shape == [0, 1, 2, 3, "checkpoint", 4, 5, 6, 7, "checkpoint", 8, 9, "checkpoint"]
    assert [answers[i].text for i in range(10)] == [f"a{i}" for i in range(10)]
    assert answers[0] == Completion("a0", 3, 2, "stop")
    assert "10 requests in 3 engine calls of at most 4" in caplog.text


def test_one_call_rounds_log_nothing_about_calls_and_chat_and_raw_keep_their_calls(engine, caplog):
    backend = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=4)
    with caplog.at_level(logging.INFO, logger="processing.generation.backends.vllm"):
        run(backend, [chat(3, 1), chat(3, 2)])
    assert "engine calls" not in caplog.text
    mixed = [chat(3, 0), raw(3, 1), chat(3, 2), raw(3, 3), chat(3, 4)]
    backend = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=2)
    events, answers = run(backend, mixed)
    assert [(kind, len(prompts)) for kind, prompts in backend.llm.calls] == [("chat", 2), ("chat", 1), ("generate", 2)]
    assert [e[1] for e in events if e[0] == "done"] == [0, 2, 4, 1, 3]
    assert backend.llm.calls[2][1] == ["w w w"] * 2


@pytest.mark.parametrize("as_dict", [False, True], ids=["ids", "batch_encoding"])
def test_a_prompt_longer_than_the_context_is_reported_and_never_sent(engine, as_dict):
    engine.context = 50
    engine.tokenizer = WordTokenizer(as_dict=as_dict)
    backend = VLLMBackend("org/model", 1, None, 0.9, 0)
    # chat prompts count words + 4: 46 words fill the context exactly, 45 leave one token
    requests = [chat(5), chat(200, 1), chat(46, 2), chat(45, 3), raw(50, 4), raw(49, 5)]
    events, answers = run(backend, requests)
    sent = [prompt for _, prompts in backend.llm.calls for prompt in prompts]
    assert len(sent) == 3 and sent[-1] == " ".join(["w"] * 49)
    assert [len(p[0]["content"].split()) for p in sent[:2]] == [5, 45]
    for position, tokens in ((1, 204), (2, 50), (4, 50)):
        assert answers[position] == Completion(
            None,
            prompt_tokens=tokens,
            finish_reason=PROMPT_TOO_LONG,
            error=f"the prompt has {tokens} tokens; the model's context is 50",
        )
    assert all(answers[i].text for i in (0, 3, 5))
    assert events[-1] == ("checkpoint",)


def test_max_model_len_given_to_the_backend_wins_over_the_engines(engine):
    engine.context = 1000
    backend = VLLMBackend("org/model", 1, 20, 0.9, 0)
    _, answers = run(backend, [chat(30), chat(3, 1)])
    assert answers[0].finish_reason == PROMPT_TOO_LONG and answers[0].prompt_tokens == 34
    assert "context is 20" in answers[0].error and answers[1].text
    assert [len(prompts) for _, prompts in backend.llm.calls] == [1]


def test_an_engine_without_a_known_context_answers_everything_unchecked(engine):
    engine.context = None  # no llm_engine.model_config.max_model_len
    backend = VLLMBackend("org/model", 1, None, 0.9, 0)
    _, answers = run(backend, [chat(5000), raw(3, 1)])
    assert [answers[0].text, answers[1].text] == ["a0", "a1"]
    assert engine.tokenizer.counted == 0  # nothing tokenized without a context to compare with


def test_a_call_whose_prompts_all_do_not_fit_is_not_made(engine):
    engine.context = 10
    backend = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=2)
    events, answers = run(backend, [chat(20), chat(30, 1), chat(2, 2)])
    assert [len(prompts) for _, prompts in backend.llm.calls] == [1]
    assert [e[0] for e in events] == ["done", "done", "checkpoint", "done", "checkpoint"]
    assert answers[2].text == "a0"


def test_a_kill_during_the_second_call_keeps_the_first_calls_answers(engine):
    engine.fail_on_call = 2
    backend = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=3)
    events: list[tuple] = []
    with pytest.raises(KeyboardInterrupt):
        backend.complete(
            [chat(4, seed) for seed in range(7)],
            lambda position, completion: events.append((position, completion.text)),
            lambda: events.append("checkpoint"),
        )
    assert events == [(0, "a0"), (1, "a1"), (2, "a2"), "checkpoint"]


def test_answers_of_finished_calls_are_on_disk_while_the_next_call_runs(engine, tmp_path):
    on_disk = []

    def look(call):  # another process's view of the cache: only what was written
        with RequestCache(str(tmp_path)) as other:
            on_disk.append(other.count())

    engine.on_call = staticmethod(look)
    engine.fail_on_call = 3
    cache = RequestCache(str(tmp_path), batch_size=10_000, max_age=3600)  # writes only when told to
    backend = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=2)
    with pytest.raises(KeyboardInterrupt):
        Generator(backend, cache).generate([[{"role": "user", "content": "q"}]], Sampling(n=5, temperature=0.0))
    assert on_disk == [0, 2, 4]
    cache.close()
    engine.fail_on_call = engine.on_call = None
    rerun = VLLMBackend("org/model", 1, None, 0.9, 0, generation_chunk=2)
    with RequestCache(str(tmp_path)) as cache:
        Generator(rerun, cache).generate([[{"role": "user", "content": "q"}]], Sampling(n=5, temperature=0.0))
    assert [len(prompts) for _, prompts in rerun.llm.calls] == [1]  # only the answer the kill lost


# --------------------------------------------------------------------------- llama.cpp (the embedded model)

LONG = " ".join(f"word{i % 50}" for i in range(2000))


@pytest.fixture(scope="module")
def small_context():
    return LlamaCppBackend(None, 256, 0)


def test_llama_cpp_reports_a_chat_prompt_that_does_not_fit_and_answers_the_others(small_context, monkeypatch):
    sent = []
    answer = small_context.llm.create_chat_completion
    monkeypatch.setattr(small_context.llm, "create_chat_completion", lambda **kw: sent.append(kw) or answer(**kw))
    requests = [
        Request(({"role": "user", "content": LONG},), 0.0, 1.0, 8, 0),
        Request(({"role": "user", "content": "Say hello."},), 0.0, 1.0, 8, 0),
    ]
    _, answers = run(small_context, requests)
    assert [kw["messages"][0]["content"] for kw in sent] == ["Say hello."]  # counted here, never sent
    long, short = answers[0], answers[1]
    assert long.text is None and long.finish_reason == PROMPT_TOO_LONG and long.prompt_tokens > 256
    assert long.error == f"the prompt has {long.prompt_tokens} tokens; the model's context is 256"
    assert short.text and short.finish_reason in ("stop", "length") and 0 < short.prompt_tokens < 256


def test_llama_cpp_counts_a_chat_prompt_as_llama_cpp_python_does(small_context):
    """The count from the GGUF's chat template equals the one llama-cpp-python refuses with."""
    request = Request(({"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG}), 0.0, 1.0, 8, 0)
    with pytest.raises(ValueError, match=rf"Requested tokens \({small_context.prompt_tokens(request)}\) exceed"):
        small_context.llm.create_chat_completion(messages=request.message_list(), max_tokens=8)
    short = Request(({"role": "user", "content": "Say hello."},), 0.0, 1.0, 8, 0)
    _, answers = run(small_context, [short])
    assert answers[0].prompt_tokens == small_context.prompt_tokens(short)


def test_llama_cpp_reports_a_raw_prompt_that_does_not_fit(small_context):
    requests = [Request((), 0.0, 1.0, 8, 0, text=LONG), Request((), 0.0, 1.0, 8, 0, text="def add(a, b):\n")]
    _, answers = run(small_context, requests)
    assert answers[0].finish_reason == PROMPT_TOO_LONG and answers[0].prompt_tokens > 256
    assert answers[1].text is not None and answers[1].prompt_tokens == small_context.prompt_tokens(requests[1])


def test_llama_cpp_maps_the_engines_refusal_when_it_cannot_count(small_context, monkeypatch):
    """A chat format whose prompt is not counted here still gives prompt_too_long, from
    llama-cpp-python's own refusal; other ValueErrors stay failures."""
    monkeypatch.setattr(small_context, "chat_formatter", None)
    long = Request(({"role": "user", "content": LONG},), 0.0, 1.0, 8, 0)
    assert small_context.prompt_tokens(long) is None
    _, answers = run(small_context, [long])
    assert answers[0].finish_reason == PROMPT_TOO_LONG and answers[0].prompt_tokens > 256
    assert "context is 256" in answers[0].error

    def refuse(**kwargs):
        raise ValueError("something else")

    monkeypatch.setattr(small_context.llm, "create_chat_completion", refuse)
    _, answers = run(small_context, [Request(({"role": "user", "content": "hi"},), 0.0, 1.0, 8, 0)])
    assert answers[0] == Completion(None, error="something else")
