"""Ollama's native wire dialects: /api/generate and /api/chat, streamed as NDJSON.

Each line is a JSON object; output rides in `response` (generate) or `message.content` (chat;
`thinking` for reasoning models). The final object has `done: true` and Ollama's own accounting,
all durations in ns: load_duration, prompt_eval_count, prompt_eval_duration, eval_count,
eval_duration, total_duration. eval_count and prompt_eval_count are the token counts (recorded as
the server's usage); prompt_eval_count counts the whole prompt, cached tokens included (Ollama
v0.32.15, llm/llama_server.go: cache_n + prompt_n), and after a silent truncation it is the kept
part. Checked against Ollama v0.32.15's docs/api.md and api/types.go (GenerateResponse, ChatResponse).
Usage is taken only from the final `done` object, so a cut stream never counts zero tokens from it.
"""

from __future__ import annotations

from typing import Any

import orjson

from bench.clients.base import PreparedRequest, StreamReading

TIMING_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


class OllamaDialect:
    accept = "application/x-ndjson"

    def __init__(self, name: str, path: str, chat: bool) -> None:
        self.name, self.path, self.chat = name, path, chat

    def encode(self, model: str, request: PreparedRequest, sampling: dict[str, Any]) -> bytes:
        options = {"num_predict": request.max_tokens, **(sampling.get("ollama_options") or {})}
        for key in ("temperature", "seed"):
            if key in sampling:
                options[key] = sampling[key]
        body: dict[str, Any] = {"model": model, "stream": True, "options": options}
        if "keep_alive" in sampling:
            body["keep_alive"] = sampling["keep_alive"]
        prompt = request.prompt
        if self.chat:
            body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        else:
            if isinstance(prompt, list):
                raise ValueError("chat messages need --api ollama-chat")
            body["prompt"] = prompt
        return orjson.dumps(body)

    def output_fields(self) -> str:
        return "message.content" if self.chat else "response"

    def read(self, events: list[tuple[int, bytes]]) -> StreamReading:
        times: list[int] = []
        pieces: list[str] = []
        thinking: list[str] = []
        first_answer = first_reasoning = None
        usage = timings = finish = error = None
        done = False
        for arrived_ns, line in events:
            try:
                chunk = orjson.loads(line)
            except orjson.JSONDecodeError:
                error = f"malformed stream line: {line[:80]!r}"
                break
            if not isinstance(chunk, dict):
                error = f"malformed stream line: {line[:80]!r}"
                break
            if chunk.get("error"):
                error = f"server error in stream: {chunk['error']}"
                break
            message = chunk.get("message") or {}
            text = ((chunk.get("response") or "") if not self.chat else "") + (message.get("content") or "")
            thought = (message.get("thinking") or "") + (chunk.get("thinking") or "")
            if thought:
                thinking.append(thought)
                first_reasoning = first_reasoning or arrived_ns
            if text:
                pieces.append(text)
                first_answer = first_answer or arrived_ns
            if text or thought:
                times.append(arrived_ns)
            if chunk.get("done"):
                done = True
                finish = chunk.get("done_reason") or "stop"
                timings = {k: chunk[k] for k in TIMING_FIELDS if k in chunk}
                if "eval_count" in chunk:
                    usage = {"completion_tokens": chunk["eval_count"], "prompt_tokens": chunk.get("prompt_eval_count")}
        if error is None and not done:
            error = "stream ended before the final done object"
        return StreamReading(
            times,
            "".join(pieces),
            usage,
            finish,
            timings,
            error,
            error is None and done,
            events[0][1] if events else None,
            reasoning_text="".join(thinking) or None,
            first_reasoning_ns=first_reasoning,
            first_answer_ns=first_answer,
        )


GENERATE = OllamaDialect("ollama-generate", "/api/generate", chat=False)
CHAT = OllamaDialect("ollama-chat", "/api/chat", chat=True)
