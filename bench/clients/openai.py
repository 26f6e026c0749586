"""The OpenAI-compatible wire dialect: /v1/completions and /v1/chat/completions, streamed.

This module knows request bodies and how to read a stream into a request record; it knows nothing
of schedules or engines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bench.clients import ollama
from bench.clients.http import HttpClient, HttpProtocolError, RequestTimeout, Response, perf_ns

Api = Literal["completions", "chat", "ollama-generate", "ollama-chat"]
API_PATHS: dict[str, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
    "ollama-generate": "/api/generate",  # Ollama's native NDJSON dialect (bench/clients/ollama.py)
    "ollama-chat": "/api/chat",
}
ERROR_BODY_CHARS = 300


@dataclass(slots=True)
class PreparedRequest:
    """One request, ready to send: the prompt (text or chat messages) and its decoding settings."""

    prompt: str | list[dict[str, Any]]
    max_tokens: int
    prompt_tokens_expected: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StreamReading:
    """What one streamed response said, decoded after the stream ended."""

    output_times_ns: list[int]
    text: str
    usage: dict[str, Any] | None
    finish_reason: str | None
    server_timings: dict[str, Any] | None
    error: str | None


def encode_body(api: Api, model: str, request: PreparedRequest, sampling: dict[str, Any]) -> bytes:
    if api.startswith("ollama"):
        return ollama.encode(api, model, request.prompt, request.max_tokens, sampling)
    sampling = {k: v for k, v in sampling.items() if not k.startswith(("ollama_", "keep_alive"))}
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling,
        **request.extra_body,
    }
    if api == "chat":
        messages = request.prompt if isinstance(request.prompt, list) else [{"role": "user", "content": request.prompt}]
        body["messages"] = messages
    else:
        if isinstance(request.prompt, list):
            raise ValueError("chat messages need the chat API; this model is served with /v1/completions")
        body["prompt"] = request.prompt
    return orjson.dumps(body)


def _chunk_output(api: Api, choice: dict[str, Any]) -> str:
    if api == "completions":
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    text = delta.get("content") or ""
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    if delta.get("tool_calls"):
        text += orjson.dumps(delta["tool_calls"]).decode()
    return reasoning + text


def read_stream(api: Api, events: list[tuple[int, bytes]]) -> StreamReading:
    """Decode server-sent events: output-carrying chunk times, text, usage wherever it appears."""
    if api.startswith("ollama"):
        return ollama.read(api, events)
    times: list[int] = []
    pieces: list[str] = []
    usage = finish = timings = error = None
    done = False
    for arrived_ns, payload in events:
        if payload.strip() == b"[DONE]":
            done = True
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            error = f"malformed stream chunk: {payload[:80]!r}"
            break
        if not isinstance(chunk, dict):
            error = f"malformed stream chunk: {payload[:80]!r}"
            break
        if chunk.get("error"):
            err = chunk["error"]
            error = f"server error in stream: {err.get('message', err) if isinstance(err, dict) else err}"
            break
        # usage may ride on the last content chunk, on a chunk of its own, or on both
        if chunk.get("usage"):
            usage = chunk["usage"]
        if chunk.get("timings"):
            timings = chunk["timings"]
        carried = ""
        for choice in chunk.get("choices") or ():
            carried += _chunk_output(api, choice)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if carried:
            times.append(arrived_ns)
            pieces.append(carried)
    if error is None and not done and finish is None:
        error = "stream ended without a finish reason or [DONE]"
    return StreamReading(times, "".join(pieces), usage, finish, timings, error)


@dataclass(slots=True)
class Sent:
    """A request whose response has fully arrived (or that failed), not yet decoded."""

    record: dict[str, Any]
    request: PreparedRequest
    response: Response | None  # None when it failed before a complete response

    @property
    def failed_early(self) -> bool:
        return self.response is None or self.response.status != 200


class StreamingClient:
    """Sends prepared requests in one dialect (OpenAI or Ollama) and turns each into one request record."""

    def __init__(
        self,
        http: HttpClient,
        api: Api,
        model: str,
        sampling: dict[str, Any],
        timeout_s: float,
        anchor_ns: int,
        count_tokens=None,
        secrets: list[str] | None = None,
    ) -> None:
        self.http, self.api, self.model, self.sampling = http, api, model, sampling
        self.timeout_s = timeout_s
        self.anchor_ns = anchor_ns  # records hold times relative to this perf_counter_ns reading
        self.count_tokens = count_tokens  # text -> tokens, used only when the server reports no usage
        self.secrets = [x for x in (secrets or []) if x]

    async def send(self, request: PreparedRequest, worker: int, request_id: int) -> Sent:
        """The timed half: send and read the whole response. Decoding is left to complete()."""
        record: dict[str, Any] = {
            "request_id": request_id,
            "worker": worker,
            "max_tokens": request.max_tokens,
            "prompt_tokens_expected": request.prompt_tokens_expected,
        }
        body = encode_body(self.api, self.model, request, self.sampling)
        started = perf_ns()
        try:
            response = await self.http.post(API_PATHS[self.api], body, self.timeout_s)
        except (RequestTimeout, ConnectionError, OSError, HttpProtocolError) as exc:
            kind = "timeout" if isinstance(exc, RequestTimeout) else type(exc).__name__
            record.update(
                status="error",
                error=f"{kind}: {exc}",
                t_send_ns=started - self.anchor_ns,
                t_end_ns=perf_ns() - self.anchor_ns,
            )
            self._finish(record, [], None, None)
            return Sent(record, request, None)
        return Sent(record, request, response)

    async def complete(self, sent: Sent) -> dict[str, Any]:
        """The untimed half: decode the stream into the request's record."""
        record = sent.record
        if sent.response is not None:
            record = await self._from_response(sent.record, sent.request, sent.response)
        for secret in self.secrets:  # a server may echo the key back (e.g. in an auth error)
            for key in ("error", "output_text"):
                if isinstance(record.get(key), str) and secret in record[key]:
                    record[key] = record[key].replace(secret, "***")
        return record

    async def execute(self, request: PreparedRequest, worker: int, request_id: int) -> dict[str, Any]:
        return await self.complete(await self.send(request, worker, request_id))

    async def _from_response(self, record: dict[str, Any], request: PreparedRequest, response) -> dict[str, Any]:
        a = self.anchor_ns
        record.update(
            t_send_ns=response.t_send_ns - a,
            t_end_ns=response.t_end_ns - a,
            http_status=response.status,
            connect_ns=response.connect_ns,
        )
        if response.status != 200:
            text = (response.body or b"".join(p for _, p in response.events)).decode("utf-8", "replace")
            record.update(status="error", error=f"HTTP {response.status}: {text[:ERROR_BODY_CHARS]}")
            return self._finish(record, [], None, None)
        reading = read_stream(self.api, response.events)
        record.update(
            output_text=reading.text,
            finish_reason=reading.finish_reason,
            server_timings=reading.server_timings,
            status="error" if reading.error else "ok",
            error=reading.error,
        )
        usage = reading.usage or {}
        output_tokens, prompt_tokens, source = usage.get("completion_tokens"), usage.get("prompt_tokens"), "usage"
        if output_tokens is None and self.count_tokens is not None:
            # Counted after the stream ended, so the extra calls never touch this request's timestamps.
            source = "tokenizer"
            output_tokens = await asyncio.to_thread(self.count_tokens, reading.text, False) if reading.text else 0
            if isinstance(request.prompt, str):
                prompt_tokens = await asyncio.to_thread(self.count_tokens, request.prompt, True)
        elif output_tokens is None:
            output_tokens, source = len(reading.output_times_ns), "chunks"
        record["cached_prompt_tokens"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return self._finish(record, [t - a for t in reading.output_times_ns], output_tokens, source, prompt_tokens)

    @staticmethod
    def _finish(record, output_times, output_tokens, source, prompt_tokens=None) -> dict[str, Any]:
        record.update(
            output_times_ns=output_times,
            output_tokens=output_tokens,
            prompt_tokens=prompt_tokens,
            tokens_source=source,
        )
        return record
