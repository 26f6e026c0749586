"""The timed client: sends a prepared request in one dialect and turns its response into one RequestRecord.

Sending and decoding are two halves. `send` is timed: it writes the request and reads the whole
response, every read timestamped as it arrives (bench.clients.http). `complete` is not: it decodes
the stream into the record after the stream ended, so decoding never delays a timestamp.

What a record says when a request goes wrong: an HTTP error status with the body's start; a stream
cut short (the connection closed, or the request timeout struck) keeps every chunk that arrived and
is marked `cut`; a 200 whose stream carried no output where output was asked for is an error naming
the dialect and what the stream carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench.clients.base import Dialect, PreparedRequest
from bench.clients.http import HttpClient, HttpProtocolError, PartialResponse, RequestTimeout, Response, perf_ns
from bench.records import RequestRecord

ERROR_BODY_CHARS = 300


@dataclass(slots=True)
class Sent:
    """A request whose response has fully arrived (or that failed), not yet decoded."""

    record: RequestRecord
    request: PreparedRequest
    response: Response | None  # the whole response; on a failure, what had arrived of it (or None)
    failure: str | None = None  # why the response did not complete

    @property
    def failed_early(self) -> bool:
        return self.failure is not None or self.response is None or self.response.status != 200


class StreamingClient:
    """Sends prepared requests in one dialect and turns each into one request record."""

    def __init__(
        self,
        http: HttpClient,
        dialect: Dialect,
        model: str,
        sampling: dict[str, Any],
        timeout_s: float,
        anchor_ns: int,
        count_tokens: Callable[..., int] | None = None,
        secrets: list[str] | None = None,
        count_chat_tokens: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        self.http, self.dialect, self.model, self.sampling = http, dialect, model, sampling
        self.timeout_s = timeout_s
        self.anchor_ns = anchor_ns  # records hold times relative to this perf_counter_ns reading
        self.count_tokens = count_tokens  # (text, add_special) -> tokens, used only when the server gives no usage
        self.secrets = [x for x in (secrets or []) if x]
        # a chat request's prompt tokens as the server renders it (its template applied), where usage is absent
        self.count_chat_tokens = count_chat_tokens

    @property
    def chat(self) -> bool:
        return self.dialect.name in ("chat", "ollama-chat")

    def mask(self, record: RequestRecord) -> RequestRecord:
        """The API key out of every text a record keeps: a server may echo it back (in an auth error, in the
        answer, its reasoning or a tool call's arguments), and an exception's message may carry it."""
        if not self.secrets:
            return record

        def masked(text):
            for secret in self.secrets:
                if text and secret in text:
                    text = text.replace(secret, "***")
            return text

        record.error, record.output_text = masked(record.error), masked(record.output_text)
        record.reasoning_text = masked(record.reasoning_text)
        if record.tool_calls:
            record.tool_calls = [
                {k: masked(v) if isinstance(v, str) else v for k, v in call.items()} for call in record.tool_calls
            ]
        return record

    def unfinished(
        self, request: PreparedRequest, request_id: int, worker: int, started_ns: int, status: str, error: str
    ) -> RequestRecord:
        """A request that never got a response to decode (cancelled in flight, or a client defect)."""
        a = self.anchor_ns
        return self.mask(
            RequestRecord(
                request_id=request_id,
                worker=worker,
                status=status,
                error=error,  # type: ignore[arg-type]
                t_send_ns=started_ns - a,
                t_end_ns=perf_ns() - a,
                max_tokens=request.max_tokens,
                prompt_tokens_expected=request.prompt_tokens_expected,
            )
        )

    async def send(self, request: PreparedRequest, worker: int, request_id: int) -> Sent:
        """The timed half: send and read the whole response. Decoding is left to complete()."""
        record = RequestRecord(
            request_id=request_id,
            worker=worker,
            max_tokens=request.max_tokens,
            prompt_tokens_expected=request.prompt_tokens_expected,
        )
        body = self.dialect.encode(self.model, request, self.sampling)
        started = perf_ns()
        try:
            response = await self.http.post(self.dialect.path, body, self.timeout_s, self.dialect.accept)
        except (RequestTimeout, ConnectionError, OSError, HttpProtocolError) as exc:
            kind = "timeout" if isinstance(exc, RequestTimeout) else type(exc).__name__
            partial = exc.partial if isinstance(exc, PartialResponse) else None
            record.t_send_ns = (partial.t_send_ns if partial else started) - self.anchor_ns
            record.t_end_ns = perf_ns() - self.anchor_ns
            return Sent(record, request, partial, f"{kind}: {exc}")
        return Sent(record, request, response)

    async def complete(self, sent: Sent) -> RequestRecord:
        """The untimed half: decode the stream into the request's record."""
        record = sent.record
        if sent.response is not None:
            await self._from_response(record, sent.request, sent.response, sent.failure)
        else:
            record.status, record.error = "error", sent.failure
        self.mask(record)
        self.http.look_for_first_reads()  # a decode is the longest stretch without a read
        return record

    async def execute(self, request: PreparedRequest, worker: int, request_id: int) -> RequestRecord:
        return await self.complete(await self.send(request, worker, request_id))

    async def _from_response(
        self, record: RequestRecord, request: PreparedRequest, response: Response, failure: str | None
    ) -> None:
        a = self.anchor_ns
        record.t_send_ns = response.t_send_ns - a
        if failure is None:
            record.t_end_ns = response.t_end_ns - a
        record.http_status, record.connect_ns = response.status, response.connect_ns
        if response.status != 200:
            text = (response.body or b"".join(p for _, p in response.events)).decode("utf-8", "replace")
            record.status, record.error = "error", f"HTTP {response.status}: {text[:ERROR_BODY_CHARS]}"
            if failure:
                record.error += f" ({failure})"
            return
        if not getattr(self.dialect, "streamed", True):  # embeddings, rerank: one JSON body (bench.clients.pooling)
            await self.dialect.fill(record, request, response.body, failure, self.count_tokens)  # type: ignore[attr-defined]
            return
        read_response = getattr(self.dialect, "read_response", None)  # OpenAI's: its usual events read from the body
        reading = read_response(response) if read_response else self.dialect.read(response.events)
        record.output_times_ns = [t - a for t in reading.output_times_ns]
        record.reasoning_text, record.tool_calls = reading.reasoning_text, reading.tool_calls
        record.t_first_reasoning_ns = reading.first_reasoning_ns - a if reading.first_reasoning_ns else None
        record.t_first_answer_ns = reading.first_answer_ns - a if reading.first_answer_ns else None
        record.output_text, record.finish_reason, record.server_timings = (
            reading.text,
            reading.finish_reason,
            reading.server_timings,
        )
        if failure is not None:
            record.cut = True
            record.error = f"{failure} (cut after {len(reading.output_times_ns)} output chunk(s))"
        elif reading.error is not None:
            record.cut = not reading.ended
            record.error = reading.error
        elif not reading.output_times_ns and request.max_tokens > 0:
            first = (reading.first_payload or b"")[:160].decode("utf-8", "replace")
            record.error = (
                f"HTTP 200 but no output in {self.dialect.output_fields()} ({self.dialect.name} "
                f"dialect); the stream's first event was {first!r}"
            )
        record.status = "error" if record.error else "ok"
        usage = reading.usage or {}
        output_tokens, prompt_tokens, source = usage.get("completion_tokens"), usage.get("prompt_tokens"), "usage"
        if output_tokens is None and self.count_tokens is not None:
            # Counted after the stream ended, so the extra calls never touch this request's timestamps.
            source = "tokenizer"
            output_tokens = await asyncio.to_thread(self.count_tokens, reading.text, False) if reading.text else 0
            if self.chat and self.count_chat_tokens is not None:  # the template's own tokens counted too
                body = orjson.loads(self.dialect.encode(self.model, request, self.sampling))
                prompt_tokens, source = await asyncio.to_thread(self.count_chat_tokens, body), "tokenizer+template"
            elif isinstance(request.prompt, str):
                prompt_tokens = await asyncio.to_thread(self.count_tokens, request.prompt, True)
        elif output_tokens is None:
            output_tokens, source = len(reading.output_times_ns), "chunks"
        if source.startswith("tokenizer") and reading.reasoning_text:  # the tokenizer counted the answer alone
            output_tokens += await asyncio.to_thread(self.count_tokens, reading.reasoning_text, False)
        record.output_tokens, record.prompt_tokens, record.tokens_source = output_tokens, prompt_tokens, source
        if reading.reasoning_text:  # of the output tokens, those spent reasoning: the server's count, else counted
            details = usage.get("completion_tokens_details") or {}
            record.reasoning_tokens = details.get("reasoning_tokens")
            if record.reasoning_tokens is None and self.count_tokens is not None:
                record.reasoning_tokens = await asyncio.to_thread(self.count_tokens, reading.reasoning_text, False)
        record.cached_prompt_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
