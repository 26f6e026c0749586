"""ReplayOllamaServer: replays recorded Ollama wire traffic on loopback, for contract tests.

Ollama's server cannot be installed on these machines, so the Ollama client and driver are tested
against this replay of its documented API: NDJSON streams (fixtures/*.ndjson: token lines, then
the final `done: true` object with Ollama's ns timings), /api/version, /api/tags and /api/ps. It
is not an engine: it generates nothing and answers every prompt with the same recorded stream.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).with_name("fixtures")
MODEL = "gemma3-270m:latest"
LINE_GAP_S = 0.005


class ReplayOllamaServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []  # (path, JSON body) of every POST received
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _json(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    return self._json({"version": "0.12.6"})
                if self.path == "/api/tags":
                    return self._json({"models": [{"name": MODEL, "model": MODEL, "size": 291_553_000}]})
                if self.path == "/api/ps":
                    return self._json(
                        {
                            "models": [
                                {
                                    "name": MODEL,
                                    "model": MODEL,
                                    "size": 412_000_000,
                                    "size_vram": 0,
                                    "expires_at": "2025-10-14T09:10:00Z",
                                }
                            ]
                        }
                    )
                return self._json({"error": "not found"}, 404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                replay.requests.append((self.path, body))
                if self.path not in ("/api/generate", "/api/chat"):
                    return self._json({"error": "not found"}, 404)
                if body.get("keep_alive") == 0 and not body.get("prompt") and not body.get("messages"):
                    return self._json({"model": body["model"], "response": "", "done": True, "done_reason": "unload"})
                fixture = "ollama_chat.ndjson" if self.path == "/api/chat" else "ollama_generate.ndjson"
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in (FIXTURES / fixture).read_bytes().splitlines(keepends=True):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    time.sleep(LINE_GAP_S)
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReplayOllamaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
