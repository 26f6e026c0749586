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


# Texts (as the payload's bytes) that trip a template taken from one event's bytes: JSON's own syntax, the
# other fields' names and values, escapes, a byte JSON forbids in a string, bytes that are not UTF-8.
_TRICKY_TEXTS = [
    b" tok",
    b"a",
    b"",
    b"0",
    b"index",
    b"text",
    b"content",
    b",",
    b'"',
    b"\\",
    b"\\n",
    b"\\u0041",
    "é".encode(),
    b"\x01",
    b"\xff",
    b"\xc3",
    b'","x":"',
    b"null",
    b"}",
    b" tok tok",
    b"A",
]
_TRICKY_SHAPES = [
    b'{"choices":[{"text":"%s","index":0,"finish_reason":null}],"object":"text_completion"}',
    b'{"id":"0","choices":[{"text":"%s","index":0}]}',
    b'{"choices":[{"delta":{"content":"%s"},"index":0,"finish_reason":null}]}',
    b'{"choices":[{"delta":{"role":"assistant","content":"%s"},"index":0}],"created":1}',
    b'{"choices":[{"text":"a","index":0},{"text":"%s","index":1}]}',
    b'{"choices":[{"text":"%s","text":"a"}]}',
    b'{"choices":[{"text":"%s"}],"usage":{"completion_tokens":1}}',
    b' {"choices":[{"text":"%s","delta":{"content":"%s"}}]}',
    b'{"model":"%s","choices":[{"text":"\\u0041","delta":{"content":"\\u0041"}}]}',  # the text escaped, "A" beside
]


def _shaped(rng, shape):
    return shape % tuple(rng.choice(_TRICKY_TEXTS) for _ in range(shape.count(b"%s")))


@pytest.mark.parametrize("dialect", [COMPLETIONS, CHAT], ids=["completions", "chat"])
def test_the_compiled_decode_reads_events_that_differ_in_their_text_alone_as_the_python_loop_does(
    dialect, sse, monkeypatch
):
    """Streams where most events repeat one event's bytes around another text (what the compiled decode
    reads without a parse), with texts and neighbours chosen to make a template from bytes go wrong."""
    rng = random.Random(1015)
    for _ in range(4000):
        shape = rng.choice(_TRICKY_SHAPES)
        events = [
            (t, _shaped(rng, shape if rng.random() < 0.8 else rng.choice(_TRICKY_SHAPES)))
            for t in range(1, rng.randint(1, 10) + 1)  # arrival times, never 0 (perf_counter_ns)
        ]
        compiled = _read(dialect, events)
        with monkeypatch.context() as python:
            python.setattr(openai, "_sse", None)
            alone = _read(dialect, events)
        assert compiled == alone, events


def test_the_compiled_decode_takes_the_text_between_a_templates_bytes(sse):
    """After the first event, the same shape around other texts: each text as the parse would read it."""
    shape = b'{"choices":[{"text":"%s","index":0,"finish_reason":null}]}'
    texts = [b" The", b" quick", b"", " é".encode(), b" brown"]
    events = [(t, shape % text) for t, text in enumerate(texts, 1)]
    assert sse.openai_prefix(events, orjson.loads, False) == (5, [1, 2, 4, 5], [" The", " quick", " é", " brown"])


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


def _body_piece(rng, shape):
    kind = rng.random()
    if kind < 0.7:  # one whole event, as servers usually write them
        return b"data: " + _shaped(rng, shape) + b"\n\n"
    return rng.choice(
        [
            b"data: " + _shaped(rng, rng.choice(_TRICKY_SHAPES)) + b"\n\n",
            b'data: {"choices":[{"text":"",' + b'"finish_reason":"length"}]}\n\n',
            b"data: [DONE]\n\n",
            b"data: " + _shaped(rng, shape) + b"\n\ndata: " + _shaped(rng, shape) + b"\n\n",  # two in one read
            b"data: " + _shaped(rng, shape)[:7],  # an event cut across reads
            b"\n\n",
            b"data: " + _shaped(rng, shape) + b"\r\n\r\n",
            b": keep-alive\n\n",
            b"data:" + _shaped(rng, shape) + b"\n\n",
        ]
    )


def _sse_response(times, datas, complete):
    return http.Response(200, {}, 0, 0, 99, list(times), list(datas), kind="sse", complete=complete)


@pytest.mark.parametrize("dialect", [COMPLETIONS, CHAT], ids=["completions", "chat"])
def test_reading_a_response_from_its_pieces_gives_the_reading_of_its_events(dialect, sse, monkeypatch):
    """OpenAIDialect.read_response (the usual events read from the body's pieces) against read(events) of the
    same response with nothing compiled, on bodies cut at random into reads."""
    rng = random.Random(2015)
    from_pieces = 0
    for _ in range(3000):
        shape = rng.choice(_TRICKY_SHAPES)
        datas = [_body_piece(rng, shape) for _ in range(rng.randint(0, 10))]
        times = list(range(1, len(datas) + 1))
        complete = rng.random() < 0.8

        compiled = dialect.read_response(_sse_response(times, datas, complete))
        with monkeypatch.context() as python:
            python.setattr(openai, "_sse", None)
            python.setattr(http, "_sse", None)
            alone = dialect.read(_sse_response(times, datas, complete).events)
        assert compiled == alone, datas
        from_pieces += sse.openai_pieces(times, datas, orjson.loads, dialect.chat)[0] > 0
    assert from_pieces > 1000  # the pieces were read in C, not only handed to read(events)


def test_the_compiled_prefix_passes_on_what_loads_raises_but_a_malformed_payload(sse):
    """A ValueError (orjson's JSONDecodeError) ends the run for the Python loop to report; anything else (memory,
    a defect) is raised as it is; and a loads that empties the list it reads is no crash."""
    events = [(1, b'{"choices":[{"text":"a"}]}'), (2, b'{"choices":[{"text":"b"}]}')]

    def raising(error):
        def loads(payload):
            raise error

        return loads

    assert sse.openai_prefix(events, raising(ValueError("bad")), False) == (0, [], [])
    with pytest.raises(MemoryError):
        sse.openai_prefix(events, raising(MemoryError()), False)
    with pytest.raises(MemoryError):
        sse.openai_pieces([1], [b"data: " + events[0][1] + b"\n\n"], raising(MemoryError()), False)

    def emptying(payload):
        items.clear()
        return orjson.loads(payload)

    items = list(events)
    assert sse.openai_prefix(items, emptying, False) == (1, [1], ["a"])
    items = [b"data: " + p + b"\n\n" for _, p in events]
    assert sse.openai_pieces([1, 2], items, emptying, False) == (1, [1], ["a"])
