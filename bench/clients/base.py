"""What every wire dialect provides: a request to send, and what a stream said once decoded.

A dialect knows one API's request body and how to read its stream; it knows nothing of schedules
or engines. bench.clients.dialects lists them all in one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class PreparedRequest:
    """One request, ready to send: the prompt (text or chat messages) and its decoding settings."""

    prompt: str | list[dict[str, Any]]
    max_tokens: int
    prompt_tokens_expected: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] | None = None  # embeddings: the texts to embed; rerank: the documents (prompt: the query)


@dataclass(slots=True)
class StreamReading:
    """What one streamed response said, decoded after the stream ended."""

    output_times_ns: list[int]
    text: str
    usage: dict[str, Any] | None  # output and prompt tokens as the server counted them
    finish_reason: str | None
    server_timings: dict[str, Any] | None
    error: str | None
    ended: bool  # the stream reached its own end ([DONE], a finish reason, Ollama's done object)
    first_payload: bytes | None = None  # for saying what a stream in an unexpected shape carried
    reasoning_text: str | None = None  # a reasoning model's thinking, apart from its answer
    first_reasoning_ns: int | None = None
    first_answer_ns: int | None = None  # the first chunk of the answer (text or a tool call)
    tool_calls: list[dict[str, Any]] | None = None  # {"id", "name", "arguments" (the JSON text as streamed)}
    inputs: int | None = None  # embeddings and rerank: the vectors or scores the response carried
    dimensions: int | None = None  # embeddings: each vector's length


class Dialect(Protocol):
    """A streamed dialect reads its events (`read`); one whose `streamed` is False (embeddings, rerank:
    bench.clients.pooling) answers with one JSON body, read by its `read_body(body)` instead."""

    name: str
    path: str  # the endpoint path under the server's base URL
    accept: str  # the stream's content type

    def encode(self, model: str, request: PreparedRequest, sampling: dict[str, Any]) -> bytes:
        """The request body."""

    def read(self, events: list[tuple[int, bytes]]) -> StreamReading:
        """Decode a stream's events: (arrival ns, one SSE event's data or one NDJSON line)."""

    def output_fields(self) -> str:
        """Where this dialect expects output, for an error that says so."""
