"""Reading OpenAI-style streams: output chunks, usage wherever it rides, errors."""

import orjson
import pytest

from bench.clients.base import PreparedRequest
from bench.clients.dialects import DIALECTS


@pytest.fixture(autouse=True)
def _both_decode_paths(decode_path):
    """Every stream here is read by the compiled decode (bench.clients._sse) and by the Python alone."""


def read_stream(api, events):
    return DIALECTS[api].read(events)


def encode_body(api, model, request, sampling):
    return DIALECTS[api].encode(model, request, sampling)


def ev(t, obj):
    return (t, obj if isinstance(obj, bytes) else orjson.dumps(obj))


def completion(text, finish=None, **extra):
    return {"choices": [{"text": text, "index": 0, "finish_reason": finish}], **extra}


def test_usage_on_the_last_content_chunk_is_counted():
    # llama.cpp puts usage on the final chunk together with choices; a reader that skips it halves TPOT.
    events = [
        ev(1, completion(" a")),
        ev(2, completion(" b")),
        ev(3, completion("", "length", usage={"completion_tokens": 2, "prompt_tokens": 5})),
        ev(4, b"[DONE]"),
    ]
    reading = read_stream("completions", events)
    assert reading.output_times_ns == [1, 2]  # the empty final chunk carries no output
    assert reading.usage == {"completion_tokens": 2, "prompt_tokens": 5}
    assert reading.text == " a b" and reading.finish_reason == "length" and reading.error is None


def test_usage_on_a_chunk_of_its_own_with_empty_choices():
    events = [
        ev(1, completion("x", "stop")),
        ev(2, {"choices": [], "usage": {"completion_tokens": 1, "prompt_tokens": 3}}),
        ev(3, b"[DONE]"),
    ]
    reading = read_stream("completions", events)
    assert reading.usage["completion_tokens"] == 1 and reading.output_times_ns == [1]


def test_chat_deltas_and_reasoning_count_as_output():
    events = [
        ev(1, {"choices": [{"delta": {"role": "assistant"}}]}),
        ev(2, {"choices": [{"delta": {"reasoning_content": "think"}}]}),
        ev(3, {"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}),
        ev(4, b"[DONE]"),
    ]
    reading = read_stream("chat", events)
    assert reading.output_times_ns == [2, 3] and reading.text == "hi" and reading.reasoning_text == "think"
    assert (reading.first_reasoning_ns, reading.first_answer_ns) == (2, 3)


def test_tool_call_deltas_are_assembled_by_index():
    call = [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]
    events = [
        ev(1, {"choices": [{"delta": {"tool_calls": call}}]}),
        ev(2, {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]}),
        ev(3, {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}}]}),
        ev(4, {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
        ev(5, b"[DONE]"),
    ]
    reading = read_stream("chat", events)
    assert reading.tool_calls == [{"id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    assert reading.output_times_ns == [1, 2, 3] and reading.first_answer_ns == 1 and reading.text == ""


def test_a_zero_usage_on_the_finish_chunk_is_not_the_count():
    zero = {"completion_tokens": 0, "prompt_tokens": 0}
    cut_before_usage = [ev(1, completion("a")), ev(2, completion("", "length", usage=zero))]
    assert read_stream("completions", cut_before_usage).usage is None
    with_usage_chunk = [*cut_before_usage, ev(3, {"choices": [], "usage": {"completion_tokens": 1}})]
    assert read_stream("completions", with_usage_chunk).usage == {"completion_tokens": 1}


def test_error_event_and_truncated_and_malformed_streams():
    assert "boom" in read_stream("completions", [ev(1, {"error": {"message": "boom"}})]).error
    cut = read_stream("completions", [ev(1, completion("a"))])
    assert "without a finish reason" in cut.error and not cut.ended and cut.output_times_ns == [1]
    assert "malformed" in read_stream("completions", [ev(1, b"{not json")]).error


def test_usage_of_a_stream_that_did_not_end_is_not_believed():
    """Ollama's /v1 puts a zero-valued usage on every chunk: a cut stream must not count 0 tokens from it."""
    zero = {"completion_tokens": 0, "prompt_tokens": 0}
    events = [ev(1, completion("a", usage=zero)), ev(2, completion("b", usage=zero))]
    assert read_stream("completions", events).usage is None


def test_encode_body_asks_for_usage_and_wraps_text_for_chat():
    request = PreparedRequest("hello", 8)
    body = orjson.loads(encode_body("chat", "m", request, {"temperature": 0}))
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 8 and body["temperature"] == 0
    assert orjson.loads(encode_body("completions", "m", request, {}))["prompt"] == "hello"
