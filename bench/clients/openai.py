"""The OpenAI-compatible wire dialects: /v1/completions and /v1/chat/completions, streamed as
server-sent events.

Output rides in `choices[].text` (completions) or `choices[].delta.content` (chat; reasoning in
`reasoning_content` or `reasoning`, tool calls in `tool_calls`). Usage may ride on the last content
chunk, on a chunk of its own, or on both; it is believed only from a stream that reached [DONE], or
from a chunk of its own after the finish reason, since some servers (Ollama's /v1) put a zero-valued
usage on every chunk, the finish reason's included. Reasoning (a reasoning model's thinking) and tool
calls are kept apart from the answer: the record's output_text is the answer alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from bench.clients.base import PreparedRequest, StreamReading

if TYPE_CHECKING:
    from bench.clients.http import Response

try:  # the usual events' decode compiled (bench/clients/_sse.c), where the install could build it
    from bench.clients import _sse
except ImportError:
    _sse = None

NON_OPENAI_SAMPLING = ("ollama_", "keep_alive")  # sampling keys only Ollama's native API takes


class OpenAIDialect:
    accept = "text/event-stream"

    def __init__(self, name: str, path: str, chat: bool) -> None:
        self.name, self.path, self.chat = name, path, chat

    def encode(self, model: str, request: PreparedRequest, sampling: dict[str, Any]) -> bytes:
        sampling = {k: v for k, v in sampling.items() if not k.startswith(NON_OPENAI_SAMPLING)}
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **sampling,
            **request.extra_body,
        }
        if self.chat:
            prompt = request.prompt
            body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        else:
            if isinstance(request.prompt, list):
                raise ValueError("chat messages need the chat API; this model is served with /v1/completions")
            body["prompt"] = request.prompt
        return orjson.dumps(body)

    def output_fields(self) -> str:
        return "choices[].delta.content" if self.chat else "choices[].text"

    def read(self, events: list[tuple[int, bytes]]) -> StreamReading:
        # The leading events that only carry text are read in C (_sse.openai_prefix, where built), the rest here
        start, times, answer = _sse.openai_prefix(events, orjson.loads, self.chat) if _sse else (0, [], [])
        return self._read_rest(islice(events, start, None), times, answer, events[0][1] if events else None)

    def read_response(self, response: Response) -> StreamReading:
        """read(response.events), its leading usual events read in C straight from the body's pieces
        (_sse.openai_pieces), none of them made an event; the rest split and read as read() reads them."""
        if _sse is None or response.kind != "sse":
            return self.read(response.events)
        count, times, answer = _sse.openai_pieces(response.times, response.datas, orjson.loads, self.chat)
        if not count:
            return self.read(response.events)
        first_payload = response.datas[0][6:-2]  # a whole event "data: X\n\n", as openai_pieces took it
        return self._read_rest(response.events_after(count), times, answer, first_payload)

    def _read_rest(
        self, rest: Iterable[tuple[int, bytes]], times: list[int], answer: list[str], first_payload: bytes | None
    ) -> StreamReading:
        """The reading of a stream whose leading events gave times and answer, its other events still to read."""
        reasoning: list[str] = []
        calls: dict[int, dict[str, Any]] = {}  # tool calls by index, their arguments streamed in pieces
        first_answer = next(filter(None, times), None)  # as `first_answer or arrived_ns` would have kept it
        first_reasoning = None
        usage = finish = timings = error = None
        done = usage_alone = False
        for arrived_ns, payload in rest:
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
            if chunk.get("usage"):
                usage = chunk["usage"]
                usage_alone = not chunk.get("choices")  # a chunk of its own: the final count
            if chunk.get("timings"):
                timings = chunk["timings"]
            carried = False
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if not self.chat:
                    text = choice.get("text") or ""
                    if text:
                        answer.append(text)
                        first_answer = first_answer or arrived_ns
                        carried = True
                    continue
                delta = choice.get("delta") or {}
                thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
                if thought:
                    reasoning.append(thought)
                    first_reasoning = first_reasoning or arrived_ns
                    carried = True
                if delta.get("content"):
                    answer.append(delta["content"])
                    first_answer = first_answer or arrived_ns
                    carried = True
                for call in delta.get("tool_calls") or ():
                    slot = calls.setdefault(
                        int(call.get("index", len(calls))), {"id": None, "name": "", "arguments": ""}
                    )
                    function = call.get("function") or {}
                    slot["id"] = call.get("id") or slot["id"]
                    slot["name"] += function.get("name") or ""
                    slot["arguments"] += function.get("arguments") or ""
                    first_answer = first_answer or arrived_ns
                    carried = True
            if carried:
                times.append(arrived_ns)
        ended = error is None and (done or finish is not None)
        if error is None and not ended:
            error = "stream ended without a finish reason or [DONE]"
        # a usage is believed from a stream that reached [DONE], or from a chunk of its own after the finish
        # (Ollama's /v1 puts a zero-valued usage on every chunk, the finish reason's included)
        believed = usage if error is None and (done or (finish is not None and usage_alone)) else None
        return StreamReading(
            times,
            "".join(answer),
            believed,
            finish,
            timings,
            error,
            ended,
            first_payload,
            reasoning_text="".join(reasoning) or None,
            first_reasoning_ns=first_reasoning,
            first_answer_ns=first_answer,
            tool_calls=[calls[i] for i in sorted(calls)] or None,
        )


COMPLETIONS = OpenAIDialect("completions", "/v1/completions", chat=False)
CHAT = OpenAIDialect("chat", "/v1/chat/completions", chat=True)
