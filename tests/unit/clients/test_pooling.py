"""The embeddings and rerank dialects: request bodies, answers checked against what was sent, token counts."""

import asyncio

import orjson
import pytest

from bench.clients.base import PreparedRequest
from bench.clients.http import Response
from bench.clients.pooling import EMBEDDINGS, RERANK
from bench.clients.streaming import StreamingClient
from bench.records import RequestRecord


def embeddings_answer(vectors, usage=None) -> bytes:
    body = {"object": "list", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}
    return orjson.dumps(body | ({"usage": usage} if usage else {}))


def test_bodies_carry_every_input_and_ask_rerank_to_score_them_all():
    request = PreparedRequest("", 0, inputs=["a b", "c"])
    assert orjson.loads(EMBEDDINGS.encode("m", request, {"temperature": 0})) == {
        "model": "m",
        "input": ["a b", "c"],
        "encoding_format": "float",
    }
    query = PreparedRequest("q", 0, inputs=["d1", "d2", "d3"])
    assert orjson.loads(RERANK.encode("m", query, {})) == {
        "model": "m",
        "query": "q",
        "documents": ["d1", "d2", "d3"],
        "top_n": 3,
    }
    with pytest.raises(ValueError, match="takes texts"):
        EMBEDDINGS.encode("m", PreparedRequest([{"role": "user", "content": "x"}], 0), {})


def test_an_answer_must_hold_one_vector_of_one_length_per_input():
    good = EMBEDDINGS.read_body(embeddings_answer([[0.1, 0.2], [0.3, 0.4]], {"prompt_tokens": 7}), 2)
    assert (good.error, good.inputs, good.dimensions, good.usage) == (None, 2, 2, {"prompt_tokens": 7})
    assert EMBEDDINGS.read_body(embeddings_answer([[0.1]]), 2).error == "2 inputs sent, 1 embeddings returned"
    mixed = EMBEDDINGS.read_body(embeddings_answer([[0.1], [0.1, 0.2]]), 2)
    assert mixed.error == "embeddings of mixed or missing lengths ([1, 2]) for 2 inputs"
    assert EMBEDDINGS.read_body(b"<html>", 1).error.startswith("not a JSON answer")
    assert EMBEDDINGS.read_body(b'{"error": {"message": "too large"}}', 1).error == "server error: too large"
    assert "no data[].embedding" in EMBEDDINGS.read_body(b'{"object": "list"}', 1).error


def test_rerank_answer_must_score_every_document_once():
    def answer(indices):
        return orjson.dumps({"results": [{"index": i, "relevance_score": 0.5} for i in indices]})

    assert RERANK.read_body(answer([2, 0, 1]), 3).error is None
    assert RERANK.read_body(answer([0, 1]), 3).error == "3 documents sent, 2 scored (2 results)"
    assert RERANK.read_body(answer([0, 0, 1]), 3).error == "3 documents sent, 2 scored (3 results)"


def client(dialect, count_tokens=None) -> StreamingClient:
    return StreamingClient(None, dialect, "m", {}, 10.0, 0, count_tokens)  # type: ignore[arg-type]


def response(body: bytes, status: int = 200) -> Response:
    return Response(status, {}, 100, 150, 900, times=[850], datas=[body])


def test_client_records_inputs_dimensions_and_the_servers_token_count():
    record = RequestRecord(request_id=1)
    request = PreparedRequest("", 0, prompt_tokens_expected=9, inputs=["a b c", "d e f g"])
    body = embeddings_answer([[0.0] * 4, [0.0] * 4], {"prompt_tokens": 9, "total_tokens": 9})
    asyncio.run(client(EMBEDDINGS)._from_response(record, request, response(body), None))
    assert (record.status, record.inputs, record.dimensions) == ("ok", 2, 4)
    assert (record.prompt_tokens, record.tokens_source, record.output_tokens) == (9, "usage", 0)
    assert record.output_times_ns == [] and (record.t_send_ns, record.t_end_ns) == (100, 900)


def test_without_usage_the_served_tokenizer_counts_each_input_and_each_rerank_pair():
    words = lambda text, special=False: len(text.split()) + (2 if special else 0)  # noqa: E731
    record = RequestRecord(request_id=1)
    asyncio.run(
        client(EMBEDDINGS, words)._from_response(
            record, PreparedRequest("", 0, inputs=["a b c", "d e"]), response(embeddings_answer([[1.0], [1.0]])), None
        )
    )
    assert (record.prompt_tokens, record.tokens_source) == (5 + 4, "tokenizer")
    pair = RequestRecord(request_id=2)
    scores = orjson.dumps({"results": [{"index": 0, "relevance_score": 1.0}, {"index": 1, "relevance_score": 0.0}]})
    asyncio.run(
        client(RERANK, words)._from_response(
            pair, PreparedRequest("q r", 0, inputs=["a", "b c"]), response(scores), None
        )
    )
    assert (pair.prompt_tokens, pair.tokens_source, pair.inputs) == ((4 + 3) + (4 + 4), "tokenizer", 2)


def test_a_cut_or_short_answer_is_an_error_and_an_http_error_keeps_its_body():
    request = PreparedRequest("", 0, inputs=["a", "b"])
    short = RequestRecord(request_id=1)
    asyncio.run(client(EMBEDDINGS)._from_response(short, request, response(embeddings_answer([[1.0]])), None))
    assert short.status == "error" and short.error == "2 inputs sent, 1 embeddings returned"
    cut = RequestRecord(request_id=2)
    asyncio.run(client(EMBEDDINGS)._from_response(cut, request, response(b'{"data": ['), "timeout: 10 s"))
    assert cut.status == "error" and cut.cut and cut.error == "timeout: 10 s (the answer was cut)"
    refused = RequestRecord(request_id=3)
    asyncio.run(client(RERANK)._from_response(refused, request, response(b'{"error": "no"}', 501), None))
    assert refused.error == 'HTTP 501: {"error": "no"}'
