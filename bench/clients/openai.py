"""The OpenAI-compatible wire dialects: /v1/completions and /v1/chat/completions, streamed as
server-sent events.

Output rides in `choices[].text` (completions) or `choices[].delta.content` (chat; reasoning in
`reasoning_content` or `reasoning`, tool calls in `tool_calls`). Usage may ride on the last content
chunk, on a chunk of its own, or on both; it is believed only when the stream ended ([DONE] or a
finish reason), since some servers (Ollama's /v1) put a zero-valued usage on every chunk.
"""

from __future__ import annotations

from typing import Any

import orjson

from bench.clients.base import PreparedRequest, StreamReading

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

    def _output(self, choice: dict[str, Any]) -> str:
        if not self.chat:
            return choice.get("text") or ""
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        if delta.get("tool_calls"):
            text += orjson.dumps(delta["tool_calls"]).decode()
        return reasoning + text

    def read(self, events: list[tuple[int, bytes]]) -> StreamReading:
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
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("timings"):
                timings = chunk["timings"]
            carried = ""
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict):
                    carried += self._output(choice)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            if carried:
                times.append(arrived_ns)
                pieces.append(carried)
        ended = error is None and (done or finish is not None)
        if error is None and not ended:
            error = "stream ended without a finish reason or [DONE]"
        return StreamReading(
            times,
            "".join(pieces),
            usage if ended else None,
            finish,
            timings,
            error,
            ended,
            events[0][1] if events else None,
        )


COMPLETIONS = OpenAIDialect("completions", "/v1/completions", chat=False)
CHAT = OpenAIDialect("chat", "/v1/chat/completions", chat=True)
