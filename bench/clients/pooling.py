"""The pooling dialects: embeddings (`/v1/embeddings`) and rerank (`/v1/rerank`), answered with one JSON
body each, not a stream.

Embeddings, as OpenAI's API and the servers that copy it (llama.cpp's server with `--embedding`, vLLM with a
pooling model) take them: `{"model", "input": [text, ...], "encoding_format": "float"}` and answer
`{"data": [{"index", "embedding": [float, ...]}, ...], "usage": {"prompt_tokens", "total_tokens"}}`.

Rerank, in the Jina/Cohere shape that llama.cpp's server (`--reranking`; tools/server `post_rerank`) and vLLM
(`/v1/rerank`) take: `{"model", "query", "documents": [text, ...], "top_n": N}`, answered with
`{"results": [{"index", "relevance_score"}, ...] (best first), "usage": {"prompt_tokens", "total_tokens"}}`.
top_n is every document, so the answer must score each one.

A request's latency is end to end (the body arrives whole); its record carries the inputs it sent
(`inputs`: texts embedded or documents scored), the vector length (`dimensions`) and the tokens the server
processed (`prompt_tokens`: usage, else counted with the served model's tokenizer, `tokens_source` saying
which). There are no output tokens. An answer with fewer vectors or scores than inputs, or vectors of mixed
lengths, is an error naming what came back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from bench.clients.base import PreparedRequest, StreamReading
from bench.records import RequestRecord

ERROR_BODY_CHARS = 300


class PoolingDialect:
    streamed = False
    accept = "application/json"

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path

    @property
    def rerank(self) -> bool:
        return self.name == "rerank"

    def encode(self, model: str, request: PreparedRequest, sampling: dict[str, Any]) -> bytes:
        inputs = request.inputs if request.inputs is not None else [request.prompt]
        if not inputs or not all(isinstance(x, str) for x in inputs):
            raise ValueError(f"the {self.name} API takes texts; this request has {type(request.prompt).__name__}")
        if self.rerank:
            return orjson.dumps({"model": model, "query": request.prompt, "documents": inputs, "top_n": len(inputs)})
        return orjson.dumps({"model": model, "input": inputs, "encoding_format": "float", **request.extra_body})

    def output_fields(self) -> str:
        return "results[].relevance_score" if self.rerank else "data[].embedding"

    def read(self, events: list[tuple[int, bytes]]) -> StreamReading:
        """A pooling answer is one body; a stream of events is not one (read_body reads the body)."""
        return self.read_body(b"".join(payload for _, payload in events), 0)

    def read_body(self, body: bytes, sent: int) -> StreamReading:
        """The answer to a request of `sent` inputs: how many vectors or scores came back, and the usage."""
        reading = StreamReading([], "", None, None, None, None, True, body[:160] or None)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            reading.error = f"not a JSON answer: {body[:80]!r}"
            return reading
        if not isinstance(answer, dict):
            reading.error = f"not a JSON object: {body[:80]!r}"
            return reading
        if answer.get("error"):
            err = answer["error"]
            reading.error = f"server error: {err.get('message', err) if isinstance(err, dict) else err}"
            return reading
        usage = answer.get("usage")
        reading.usage = usage if isinstance(usage, dict) else None
        items = answer.get("results" if self.rerank else "data")
        if not isinstance(items, list):
            reading.error = f"HTTP 200 but no {self.output_fields()} in the answer: {body[:160]!r}"
            return reading
        reading.inputs = len(items)
        if self.rerank:
            scored = {
                x.get("index")
                for x in items
                if isinstance(x, dict) and isinstance(x.get("relevance_score"), int | float)
            }
            if len(scored) != sent or scored != set(range(sent)):
                reading.error = f"{sent} documents sent, {len(scored)} scored ({len(items)} results)"
            return reading
        lengths = {len(x["embedding"]) for x in items if isinstance(x, dict) and isinstance(x.get("embedding"), list)}
        if len(items) != sent:
            reading.error = f"{sent} inputs sent, {len(items)} embeddings returned"
        elif len(lengths) != 1:
            shown = sorted(lengths) or "none"
            reading.error = f"embeddings of mixed or missing lengths ({shown}) for {sent} inputs"
        else:
            reading.dimensions = lengths.pop()
        return reading

    async def fill(
        self,
        record: RequestRecord,
        request: PreparedRequest,
        body: bytes,
        failure: str | None,
        count_tokens: Callable[..., int] | None,
    ) -> None:
        """The record of a 200 answer (its times and status already set by the client)."""
        inputs = request.inputs if request.inputs is not None else [request.prompt]
        record.inputs = len(inputs)
        record.output_tokens = 0
        reading = self.read_body(body, len(inputs))
        record.dimensions = reading.dimensions
        record.error = f"{failure} (the answer was cut)" if failure else reading.error
        record.cut = failure is not None
        record.status = "error" if record.error else "ok"
        usage = reading.usage or {}
        tokens = usage.get("prompt_tokens") or usage.get("total_tokens")
        if tokens is not None:
            record.prompt_tokens, record.tokens_source = int(tokens), "usage"
        elif count_tokens is not None:  # counted after the answer arrived, so never inside its timing
            if self.rerank:  # each document is scored as a pair with the query, both with their special tokens
                query = await asyncio.to_thread(count_tokens, request.prompt, True)
                docs = [await asyncio.to_thread(count_tokens, d, True) for d in inputs]
                record.prompt_tokens = sum(query + d for d in docs)
            else:
                record.prompt_tokens = sum([await asyncio.to_thread(count_tokens, x, True) for x in inputs])
            record.tokens_source = "tokenizer"


EMBEDDINGS = PoolingDialect("embeddings", "/v1/embeddings")
RERANK = PoolingDialect("rerank", "/v1/rerank")
