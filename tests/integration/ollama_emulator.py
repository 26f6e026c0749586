"""Ollama0_32_15Emulator: an emulation of Ollama v0.32.15's HTTP API on loopback, for contract tests.

What it is: a stand-in written from Ollama v0.32.15's source (tag v0.32.15, commit b7871fc0,
2026-08-19: server/routes.go, server/create.go, server/sched.go, llm/llama_server.go,
middleware/openai.go, openai/openai.go, api/types.go, types/model/name.go) and its docs/api.md.
It is not a recording: no Ollama ran on these machines (its server cannot be installed here), so no
byte of this traffic was captured from a real server. It generates no text: output is a fixed word
list, durations are the emulator's own measured times, and tokens are counted by a stand-in (one
token per 3 characters, denser than the rig's 4-characters estimate, as real tokenizers often are).

What it reproduces, because the rig's Ollama driver and clients depend on it:
- /api/ps, /api/tags list models by their short name with the tag (`bench-x:latest`,
  DisplayShortest), with size, size_vram, digest, details, expires_at and context_length (the
  per-request num_ctx the runner was loaded with);
- the runner takes num_ctx per request and is launched with `-c num_ctx*num_parallel -np
  num_parallel` (logged as in llm/llama_server.go); request options that change num_ctx, num_gpu or
  num_thread reload it (counted in `loads`);
- an empty prompt loads the model and answers one JSON object with done_reason "load" (docs/api.md
  still shows none); keep_alive 0 with no prompt unloads, done_reason "unload";
- models are created from uploaded blobs (`POST /api/blobs/sha256:...`, digest checked; HEAD says
  whether one exists) and `files`, or `from` another model, with `parameters`; show, delete, 404s
  as `{"error": "model 'x' not found"}`;
- a prompt longer than num_ctx is cut (context shift: keep num_keep+1 tokens, free half of the rest)
  and logged `level=WARN ... msg="truncating input prompt" limit= prompt= keep= new=`;
- native NDJSON streams: token objects, then the `done` object with done_reason and ns timings;
- /v1/completions with stream_options.include_usage: every chunk carries a zero-valued `usage`,
  the final content chunk its finish_reason, then a chunk with no choices and the real usage,
  then [DONE] (middleware/openai.go CompleteWriter); /v1/chat/completions: content chunks, a finish
  chunk with an empty delta, the usage chunk, [DONE] (ChatWriter).
- GPU: none, unless OLLAMA_EMULATOR_VRAM_BYTES is set (then a model loaded with num_gpu != 0 holds
  up to that many bytes in VRAM).

Blobs are not kept: an upload is hashed and only its digest and size are stored. State (created
models, blob digests) persists in OLLAMA_MODELS as small JSON files, as Ollama's store does.

Run in-process (`with Ollama0_32_15Emulator() as server: server.url`) or as a stand-in `ollama`
executable: `python ollama_emulator.py serve` reads OLLAMA_HOST, OLLAMA_MODELS, OLLAMA_NUM_PARALLEL
and logs to stderr like `ollama serve`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VERSION = "0.32.15"
WORDS = " The capital of France is Paris. It is known for the Eiffel Tower and art".split(" ")[1:]
TOKEN_GAP_S = 0.005
CHARS_PER_TOKEN = 3  # the stand-in tokenizer
DEFAULT_NUM_CTX = 4096  # envconfig.ContextLength() when OLLAMA_CONTEXT_LENGTH is unset (no GPU)
NUM_KEEP = 4  # api.DefaultOptions
RUNNER_OPTIONS = ("num_ctx", "num_gpu", "num_thread")


def short_name(name: str) -> str:
    """types/model/name.go: ParseName(name).DisplayShortest()."""
    rest, tag = name, "latest"
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
    parts = rest.split("/")
    host, namespace = "registry.ollama.ai", "library"
    if len(parts) == 2:
        namespace = parts[0]
    elif len(parts) >= 3:
        host, namespace = parts[0], "/".join(parts[1:-1])
    prefix = (
        f"{host}/{namespace}/" if host != "registry.ollama.ai" else f"{namespace}/" if namespace != "library" else ""
    )
    return f"{prefix}{parts[-1]}:{tag}"


def tokens_of(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + 1  # + BOS


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class Ollama0_32_15Emulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        models_dir: Path | None = None,
        num_parallel: int = 1,
        vram_bytes: int = 0,
        log=None,
        cut_after_events: int | None = None,
    ) -> None:
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, JSON body) of every request with a body
        self.loads = 0  # runner (re)loads
        self.num_parallel = num_parallel
        self.vram_bytes = vram_bytes
        self.log_stream = log  # where `ollama serve` would log (stderr when run as the executable)
        self.log_lines: list[str] = []
        self.cut_after_events = cut_after_events  # a test knob: close streams after this many events
        self.stop_after_tokens: int | None = None  # a test knob: the model ends its answer (EOS) after this many
        self._tmp = None
        if models_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ollama-emulator-")
            models_dir = Path(self._tmp.name)
        self.store = Path(models_dir)
        (self.store / "emulator").mkdir(parents=True, exist_ok=True)
        self.loaded: dict[str, dict[str, Any]] = {}  # short name -> runner
        self.lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Go's net/http, and so Ollama, sets TCP_NODELAY on every connection: each streamed line
                # leaves at once (without it, Nagle's algorithm holds 5 ms-apart lines for the client's ACK)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", kind: str = "application/json; charset=utf-8") -> None:
                self.send_response(status)
                if body or kind:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def json(self, body: Any, status: int = 200) -> None:
                self._send(status, json.dumps(body).encode())

            def error(self, status: int, message: str) -> None:
                self.json({"error": message}, status)

            def stream(self, kind: str, pieces) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for sent, piece in enumerate(pieces):
                    if emulator.cut_after_events is not None and sent >= emulator.cut_after_events:
                        self.close_connection = True  # the connection drops mid-stream: no final chunk
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def body(self) -> dict:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                return json.loads(raw or b"{}")

            def do_HEAD(self) -> None:
                if self.path == "/api/version":
                    return self.json({"version": VERSION})
                if self.path.startswith("/api/blobs/"):
                    exists = emulator._blob(self.path.rsplit("/", 1)[-1]) is not None
                    return self._send(200 if exists else 404, kind="")
                return self._send(404, kind="")

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    return self.json({"version": VERSION})
                if self.path == "/api/tags":
                    return self.json({"models": emulator.tags()})
                if self.path == "/api/ps":
                    return self.json({"models": emulator.ps()})
                if self.path == "/v1/models":  # openai.ToListCompletion
                    data = [
                        {"id": m["name"], "object": "model", "created": 0, "owned_by": "library"}
                        for m in emulator.tags()
                    ]
                    return self.json({"object": "list", "data": data})
                return self.error(404, "404 page not found")

            def do_DELETE(self) -> None:
                body = self.body()
                emulator.requests.append(("DELETE", self.path, body))
                if self.path != "/api/delete":
                    return self.error(404, "404 page not found")
                name = body.get("model") or body.get("name") or ""
                if not emulator.delete(name):
                    return self.error(404, f"model '{name}' not found")
                return self._send(200, kind="")

            def do_POST(self) -> None:
                if self.path.startswith("/api/blobs/"):
                    return self.upload(self.path.rsplit("/", 1)[-1])
                body = self.body()
                emulator.requests.append(("POST", self.path, body))
                routes = {
                    "/api/create": self.create,
                    "/api/show": self.show,
                    "/api/generate": self.generate,
                    "/api/chat": self.generate,
                    "/v1/completions": self.openai,
                    "/v1/chat/completions": self.openai,
                }
                if self.path not in routes:
                    return self.error(404, "404 page not found")
                return routes[self.path](body)

            def upload(self, digest: str) -> None:
                length, hasher = int(self.headers.get("Content-Length", 0)), hashlib.sha256()
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    hasher.update(chunk)
                    left -= len(chunk)
                got = f"sha256:{hasher.hexdigest()}"
                if got != digest:
                    return self.error(400, f'digest mismatch, expected "{digest}", got "{got}"')
                emulator._write("blobs", digest, {"size": length})
                return self._send(201, kind="")

            def create(self, body: dict) -> None:
                status, answer = emulator.create(body)
                if status != 200:
                    return self.error(status, answer)
                if body.get("stream") is False:
                    return self.json({"status": "success"})
                lines = [{"status": "using existing layer"}, {"status": "writing manifest"}, {"status": "success"}]
                return self.stream("application/x-ndjson", [json.dumps(x).encode() + b"\n" for x in lines])

            def show(self, body: dict) -> None:
                name = body.get("model") or body.get("name") or ""
                model = emulator.model(name)
                if model is None:
                    return self.error(404, f"model '{name}' not found")
                params = "\n".join(f"{k:<30} {v}" for k, v in model["parameters"].items())
                return self.json(
                    {
                        "modelfile": f"FROM {model.get('from') or 'blobs'}\n",
                        "parameters": params,
                        "template": "{{ .Prompt }}",
                        "details": model["details"],
                        "model_info": {"general.architecture": "gemma3"},
                        "capabilities": ["completion"],
                        "modified_at": model["modified_at"],
                    }
                )

            def generate(self, body: dict) -> None:
                chat = self.path == "/api/chat"
                name = body.get("model") or ""
                model = emulator.model(name)
                if model is None:
                    return self.error(404, f"model '{name}' not found")
                prompt = (
                    "".join(str(m.get("content", "")) for m in body.get("messages") or [])
                    if chat
                    else body.get("prompt") or ""
                )
                keep_alive = body.get("keep_alive")
                base = {"model": name, "created_at": now()}
                if not prompt and keep_alive in (0, "0", "0s"):
                    emulator.unload(name)
                    out = {**base, "done": True, "done_reason": "unload"}
                    out.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
                    return self.json(out)
                started = time.perf_counter_ns()
                runner, load_ns = emulator.runner(name, model, body.get("options") or {})
                if not prompt:
                    out = {**base, "done": True, "done_reason": "load"}
                    out.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
                    return self.json(out)
                pieces = emulator.completion(runner, prompt, body.get("options") or {}, started, load_ns)
                if body.get("stream") is False:
                    final = {}
                    text = []
                    for piece in pieces:
                        text.append(piece.get("text", ""))
                        final = piece
                    return self.json(emulator.native(final, base, chat, "".join(text)))
                lines = (json.dumps(emulator.native(p, base, chat, p.get("text", ""))).encode() + b"\n" for p in pieces)
                return self.stream("application/x-ndjson", lines)

            def openai(self, body: dict) -> None:
                chat = self.path == "/v1/chat/completions"
                name = body.get("model") or ""
                model = emulator.model(name)
                if model is None:
                    return self.error(404, f"model '{name}' not found")
                if chat:
                    prompt = "".join(str(m.get("content", "")) for m in body.get("messages") or [])
                else:
                    prompt = body.get("prompt") or ""
                options = {"num_predict": body.get("max_tokens")} if body.get("max_tokens") else {}
                for key in ("temperature", "seed"):
                    if key in body:
                        options[key] = body[key]
                started = time.perf_counter_ns()
                runner, load_ns = emulator.runner(name, model, {})
                pieces = emulator.completion(runner, prompt, options, started, load_ns)
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return self.stream("text/event-stream", emulator.sse(pieces, name, chat, usage))

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- the store ---------------------------------------------------------------------------------
    def _key(self, kind: str, name: str) -> Path:
        return self.store / "emulator" / kind / (hashlib.sha256(name.encode()).hexdigest() + ".json")

    def _write(self, kind: str, name: str, value: dict) -> None:
        path = self._key(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": name, **value}))

    def _read(self, kind: str, name: str) -> dict | None:
        path = self._key(kind, name)
        return json.loads(path.read_text()) if path.exists() else None

    def _blob(self, digest: str) -> dict | None:
        return self._read("blobs", digest)

    def model(self, name: str) -> dict | None:
        return self._read("models", short_name(name))

    def tags(self) -> list[dict]:
        folder = self.store / "emulator" / "models"
        models = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
        return [
            {
                "name": m["name"],
                "model": m["name"],
                "modified_at": m["modified_at"],
                "size": m["size"],
                "digest": m["digest"],
                "details": m["details"],
            }
            for m in models
        ]

    def create(self, body: dict) -> tuple[int, Any]:
        name = short_name(body.get("model") or body.get("name") or "")
        parameters = dict(body.get("parameters") or {})
        if body.get("from"):
            source = self.model(body["from"])
            if source is None:
                return 404, f"model '{body['from']}' not found"
            size, details = source["size"], source["details"]
            parameters = {**source["parameters"], **parameters}
        elif body.get("files"):
            size = 0
            for file, digest in body["files"].items():
                blob = self._blob(digest)
                if blob is None:
                    return 400, f"blob {digest} for {file} not found: upload it with POST /api/blobs/{digest}"
                size += blob["size"]
            details = {
                "parent_model": "",
                "format": "gguf",
                "family": "gemma3",
                "families": ["gemma3"],
                "parameter_size": "268.10M",
                "quantization_level": "Q4_K_M",
            }
        else:
            return 400, "neither 'from' nor 'files' was specified"
        digest = hashlib.sha256(
            json.dumps([name, body.get("files"), body.get("from"), parameters]).encode()
        ).hexdigest()
        self._write(
            "models",
            name,
            {
                "from": body.get("from"),
                "files": body.get("files"),
                "parameters": parameters,
                "size": size,
                "digest": digest,
                "details": details,
                "modified_at": now(),
            },
        )
        self.log("INFO", "server/create.go:347", "created model", model=name)
        return 200, "success"

    def delete(self, name: str) -> bool:
        path = self._key("models", short_name(name))
        if not path.exists():
            return False
        self.unload(name)
        path.unlink()
        return True

    # -- runners -----------------------------------------------------------------------------------
    def log(self, level: str, source: str, msg: str, **fields) -> None:
        parts = [f"time={now()}", f"level={level}", f"source={source}", f'msg="{msg}"']
        for k, v in fields.items():
            text = str(v)
            parts.append(f'{k}="{text}"' if re.search(r'[\s"=]', text) or not text else f"{k}={text}")
        self.log_lines.append(" ".join(parts))
        if self.log_stream is not None:
            print(self.log_lines[-1], file=self.log_stream, flush=True)

    def runner(self, name: str, model: dict, options: dict) -> tuple[dict, int]:
        """The loaded runner for a model, (re)loading it when its load-time options differ."""
        started = time.perf_counter_ns()
        short = short_name(name)
        wanted = {**{"num_ctx": DEFAULT_NUM_CTX}, **model["parameters"]}
        wanted.update({k: options[k] for k in RUNNER_OPTIONS if k in options})
        with self.lock:
            runner = self.loaded.get(short)
            if runner is not None and all(runner["options"].get(k) == wanted.get(k) for k in RUNNER_OPTIONS):
                return runner, 0
            num_ctx = int(wanted["num_ctx"])
            self.log(
                "INFO",
                "llama_server.go:433",
                "starting llama-server",
                cmd=f"llama-server --model blobs/{model['digest'][:12]} -c {num_ctx * self.num_parallel} "
                f"-np {self.num_parallel}",
            )
            kv = num_ctx * self.num_parallel * 18 * 1024  # the emulator's KV-cache size per token of context
            size = model["size"] + kv
            on_gpu = self.vram_bytes and wanted.get("num_gpu", -1) != 0
            runner = {
                "name": short,
                "model": model,
                "options": wanted,
                "size": size,
                "size_vram": min(size, self.vram_bytes) if on_gpu else 0,
                "num_ctx": num_ctx,
                "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat().replace("+00:00", "Z"),
            }
            self.loaded[short] = runner
            self.loads += 1
            elapsed = (time.perf_counter_ns() - started) / 1e9
            self.log("INFO", "llama_server.go:1362", f"llama-server started in {elapsed:0.2f} seconds")
            return runner, time.perf_counter_ns() - started

    def unload(self, name: str) -> None:
        with self.lock:
            self.loaded.pop(short_name(name), None)

    def ps(self) -> list[dict]:
        with self.lock:
            runners = list(self.loaded.values())
        return [
            {
                "name": r["name"],
                "model": r["name"],
                "size": r["size"],
                "digest": r["model"]["digest"],
                "details": r["model"]["details"],
                "expires_at": r["expires_at"],
                "size_vram": r["size_vram"],
                "context_length": r["num_ctx"],
            }
            for r in runners
        ]

    def completion(self, runner: dict, prompt: str, options: dict, started_ns: int, load_ns: int):
        """The runner's output: one dict per token, then the done dict with Ollama's counts and ns timings."""
        num_ctx = runner["num_ctx"]
        prompt_tokens = tokens_of(prompt)
        if prompt_tokens > num_ctx - 1:  # context shift (llm/llama_server.go completionPromptForRequest)
            keep = min(int(options.get("num_keep", NUM_KEEP)) + 1, num_ctx - 1)
            limit = num_ctx - max((num_ctx - keep) // 2, 1)
            self.log(
                "WARN",
                "llama_server.go:317",
                "truncating input prompt",
                limit=limit,
                prompt=prompt_tokens,
                keep=keep,
                new=limit,
            )
            prompt_tokens = limit
        predict = int(options.get("num_predict") or -1)
        count = predict if predict > 0 else len(WORDS)
        stopped = self.stop_after_tokens is not None and self.stop_after_tokens < count
        count = self.stop_after_tokens if stopped else count
        prompt_done = time.perf_counter_ns()
        for i in range(count):
            time.sleep(TOKEN_GAP_S)
            yield {"text": " " + WORDS[i % len(WORDS)]}
        end = time.perf_counter_ns()
        yield {
            "text": "",
            "done": True,
            "done_reason": "length" if predict > 0 and not stopped else "stop",
            "total_duration": end - started_ns,
            "load_duration": load_ns,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": prompt_done - started_ns - load_ns,
            "eval_count": count,
            "eval_duration": end - prompt_done,
        }

    @staticmethod
    def native(piece: dict, base: dict, chat: bool, text: str) -> dict:
        out = dict(base, created_at=now())
        if chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out["done"] = bool(piece.get("done"))
        if piece.get("done"):
            out["done_reason"] = piece["done_reason"]
            if not chat:
                out["context"] = [2, 818, 5279]
            out.update({k: v for k, v in piece.items() if k not in ("text", "done", "done_reason")})
        return out

    @staticmethod
    def sse(pieces, model: str, chat: bool, include_usage: bool):
        """middleware/openai.go: CompleteWriter (completions) and ChatWriter (chat), streamed."""
        created, first = int(time.time()), True
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{int(time.time() * 1000) % 1000}"
        head = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_ollama",
        }

        def event(body: dict) -> bytes:
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        for piece in pieces:
            done = bool(piece.get("done"))
            usage = {
                "prompt_tokens": piece.get("prompt_eval_count", 0),
                "completion_tokens": piece.get("eval_count", 0),
                "total_tokens": piece.get("prompt_eval_count", 0) + piece.get("eval_count", 0),
            }
            if chat:
                if piece["text"] or first:
                    delta = {"role": "assistant", "content": piece["text"]} if first else {"content": piece["text"]}
                    yield event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                    first = False
                if done:
                    yield event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": piece["done_reason"]}]})
                    if include_usage:
                        yield event({**head, "choices": [], "usage": usage})
                    yield b"data: [DONE]\n\n"
                continue
            chunk = {
                **head,
                "choices": [
                    {"text": piece["text"], "index": 0, "finish_reason": piece["done_reason"] if done else None}
                ],
            }
            if include_usage:
                chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            yield event(chunk)
            if done:
                if include_usage:
                    yield event({**chunk, "choices": [], "usage": usage})
                yield b"data: [DONE]\n\n"

    # -- serving -----------------------------------------------------------------------------------
    def __enter__(self) -> Ollama0_32_15Emulator:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()


def main(argv: list[str]) -> int:
    """`ollama serve` as the emulator: OLLAMA_HOST, OLLAMA_MODELS, OLLAMA_NUM_PARALLEL as Ollama reads them."""
    if argv[:1] != ["serve"]:
        print(f"the Ollama {VERSION} emulator knows only `serve` (got {argv})", file=sys.stderr)
        return 2
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    models = Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
    emulator = Ollama0_32_15Emulator(
        host or "127.0.0.1",
        int(port),
        models,
        num_parallel=int(os.environ.get("OLLAMA_NUM_PARALLEL") or 1),
        vram_bytes=int(os.environ.get("OLLAMA_EMULATOR_VRAM_BYTES") or 0),
        log=sys.stderr,
    )
    emulator.log("INFO", "routes.go:2008", f"Listening on {emulator.url.removeprefix('http://')} (version {VERSION})")
    try:
        emulator.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main(sys.argv[1:]))
