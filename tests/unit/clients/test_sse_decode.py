"""The compiled decode (bench.clients._sse) against the Python it stands in for, on streams built at random from
the event kinds servers send and the unusual ones they should not: the same events, the same reading, the same
error. The oracle is the Python path (split_sse's general path, OpenAIDialect.read's loop), which the other tests
check against hand-written expectations; a seeded generator makes each failure reproducible."""

import random

import orjson
import pytest

from bench.clients import http, openai
from bench.clients.openai import CHAT, COMPLETIONS


@pytest.fixture
def sse():
    if http._sse is None:
        from tests.unit.clients.conftest import _required_or_skip

        _required_or_skip("bench.clients._sse")
    return http._sse


def _text_event(rng, chat):
    text = rng.choice([" tok", "", None, 'é\\n"', 5, "x" * 300])
    if chat:
        delta = rng.choice(
            [
                {"content": text},
                {"content": text, "role": "assistant"},
                {"reasoning_content": "think"},
                {"reasoning": "", "content": text},
                {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]},
                {"tool_calls": []},
                None,
                "not a dict",
                {},
            ]
        )
        choice = {"delta": delta, "index": 0, "finish_reason": rng.choice([None, None, None, "stop", ""])}
    else:
        choice = {"text": text, "index": 0, "finish_reason": rng.choice([None, None, None, "length", ""])}
    return rng.choice(
        [
            {"choices": [choice]},
            {"choices": [choice, choice]},
            {"choices": [choice], "usage": rng.choice([None, {}, {"completion_tokens": 3}])},
            {"choices": [choice], "timings": rng.choice([None, {"predicted_ms": 1.0}])},
            {"choices": [choice, "not a dict"]},
            {"choices": []},
            {"choices": None},
            {"choices": rng.choice([{}, 0, "x"])},
            {"error": rng.choice([None, "", {"message": "overloaded"}])},
            {},
        ]
    )


def _payload(rng, chat):
    kind = rng.random()
    if kind < 0.8:
        return orjson.dumps(_text_event(rng, chat))
    return rng.choice(
        [b"[DONE]", b" [DONE] ", b"{not json", b"[1, 2]", b"  " + orjson.dumps(_text_event(rng, chat)), b""]
    )


def _read(dialect, events):
    try:
        return dialect.read(events)
    except Exception as exc:  # a defect the decode raises must be raised by both paths alike
        return type(exc).__name__


@pytest.mark.parametrize("dialect", [COMPLETIONS, CHAT], ids=["completions", "chat"])
def test_the_compiled_openai_decode_reads_every_stream_as_the_python_loop_does(dialect, sse, monkeypatch):
    rng = random.Random(15)
    compared = 0
    for _ in range(3000):
        events = [(t, _payload(rng, dialect.chat)) for t in range(1, rng.randint(0, 12) + 1)]
        if rng.random() < 0.7:  # most streams: a run of usual text first, as servers send them
            usual = [
                (t, orjson.dumps({"choices": [{"text": " a", "delta": {"content": " a"}}]})) for t in range(100, 104)
            ]
            events = usual + events
        compiled = _read(dialect, events)
        with monkeypatch.context() as python:
            python.setattr(openai, "_sse", None)
            alone = _read(dialect, events)
        assert compiled == alone, events
        compared += 1
    assert compared == 3000


def test_the_compiled_prefix_stops_at_the_first_unusual_event(sse):
    usual = orjson.dumps({"choices": [{"text": " a", "index": 0, "finish_reason": None}]})
    finish = orjson.dumps({"choices": [{"text": "", "index": 0, "finish_reason": "length"}]})
    count, times, pieces = sse.openai_prefix([(1, usual), (2, usual), (3, finish), (4, usual)], orjson.loads, False)
    assert (count, times, pieces) == (2, [1, 2], [" a", " a"])
    assert sse.openai_prefix([(1, b"[DONE]")], orjson.loads, False) == (0, [], [])
    assert sse.openai_prefix([], orjson.loads, True) == (0, [], [])


def _piece(rng):
    return rng.choice(
        [
            b'data: {"n": 1}\n\n',
            b"data: \n\n",
            b'data: {"n": 1}\r\n\r\n',
            b'data: {"a":',
            b" 1}\n\n",
            b'data: {"n": 1}\n\ndata: {"n": 2}\n\n',
            b"data:{}\n\n",
            b": comment\n\n",
            b"data: one\ndata: two\n\n",
            b"data: [DONE]\n\n",
            b"\n",
            b"",
        ]
    )


def test_the_compiled_sse_split_cuts_every_stream_as_the_python_path_does(sse, monkeypatch):
    rng = random.Random(15)
    usual = 0
    for _ in range(3000):
        datas = [_piece(rng) for _ in range(rng.randint(0, 6))]
        times = list(range(1, len(datas) + 1))
        t_end = rng.choice([None, 99])
        compiled = http.split_sse(times, datas, t_end)
        with monkeypatch.context() as python:
            python.setattr(http, "_sse", None)
            alone = http.split_sse(times, datas, t_end)
        assert compiled == alone, datas
        usual += sse.split(times, datas) is not None
    assert usual > 100  # the quick path itself was exercised, not only its refusals
    assert sse.split([1], [b"data: x\n\n", b"data: y\n\n"]) is None  # lengths that differ: the general path raises
