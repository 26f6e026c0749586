"""A test double of llama.cpp's HTTP server started with `--reranking`, for the rerank dialect: no reranker model
ships on PyPI (flashrank 0.2.10, local-reranker 0.1.1 and mxbai-rerank 0.1.6 are 10-18 KB wheels that fetch their
weights from a hub at run time), so the real server cannot be run with one here.

What it emulates, written from the llama.cpp source that the llama-cpp-python 0.3.36 sdist vendors
(vendor/llama.cpp/tools/server; nothing here was recorded from a running server):

- the routes `/rerank`, `/reranking`, `/v1/rerank`, `/v1/reranking` (server.cpp), answered by `post_rerank`
  (server-context.cpp): 501 `This server does not support reranking. Start it with --reranking` unless the
  server was started in that mode; 400 when "query" is missing or not a string, or "documents" (or TEI's
  "texts") is empty; top_n defaults to every document;
- each document scored as one sequence built by `format_prompt_rerank` (server-common.cpp) for a vocabulary
  without a rerank template: [BOS] query [EOS] [SEP] document [EOS], each special token only where the
  vocabulary adds it (a BERT-like vocabulary: add_bos and add_eos, no add_sep);
- the answer of `format_response_rerank`: `{"model", "object": "list", "usage": {"prompt_tokens": n,
  "total_tokens": n}, "results": [{"index", "relevance_score"}, ...]}`, sorted by score, best first, cut to
  top_n, n the tokens of every sequence evaluated;
- `/tokenize` ({"content", "add_special"} -> {"tokens": [...]}) and `/v1/models`, which the rig's attach mode
  reads.

Its tokenizer is its own (one token per whitespace-separated word, BOS and EOS as the special tokens) and its
score a stand-in (the share of query words found in the document): the double checks the rig's wire dialect,
batching and token accounting, not a model. `drop_result=True` answers one result short (a server that ignored
top_n), which the rig must record as an error. Every request it served is kept in `served` (documents, usage).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOS, EOS = 101, 102  # a BERT-like vocabulary's [CLS] and [SEP], used as BOS and EOS
RERANK_PATHS = ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking")


def tokenize(text: str, add_special: bool) -> list[int]:
    words = [1000 + (sum(map(ord, w)) % 28000) for w in text.split()]
    return [BOS, *words, EOS] if add_special else words


def rerank_sequence(query: str, document: str) -> list[int]:
    """format_prompt_rerank without a rerank template: [BOS] query [EOS] [SEP] doc [EOS] (no add_sep here)."""
    return [BOS, *tokenize(query, False), EOS, *tokenize(document, False), EOS]


class RerankDouble:
    def __init__(
        self,
        model: str = "double-reranker",
        reranking: bool = True,
        drop_result: bool = False,
        seconds_per_document: float = 0.002,
    ) -> None:
        self.model, self.reranking, self.drop_result = model, reranking, drop_result
        self.seconds_per_document = seconds_per_document
        self.served: list[dict] = []
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": double.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/tokenize":
                    self._send(200, {"tokens": tokenize(body.get("content", ""), bool(body.get("add_special")))})
                elif self.path in RERANK_PATHS:
                    status, answer = double.rerank(body)
                    self._send(status, answer)
                else:
                    self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def rerank(self, body: dict) -> tuple[int, dict]:
        if not self.reranking:
            message = "This server does not support reranking. Start it with `--reranking`"
            return 501, {"error": {"code": 501, "message": message, "type": "not_supported_error"}}
        query = body.get("query")
        if query is None:
            return 400, {"error": {"code": 400, "message": '"query" must be provided', "type": "invalid_request_error"}}
        if not isinstance(query, str):
            return 400, {"error": {"code": 400, "message": '"query" must be a string', "type": "invalid_request_error"}}
        documents = body.get("documents", body.get("texts", []))
        if not documents:
            message = '"documents" must be a non-empty string array'
            return 400, {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
        top_n = int(body.get("top_n", len(documents)))
        time.sleep(self.seconds_per_document * len(documents))  # each document is one sequence to evaluate
        words = set(query.split())
        results, tokens = [], 0
        for index, document in enumerate(documents):
            tokens += len(rerank_sequence(query, document))
            score = len(words & set(document.split())) / max(1, len(words))
            results.append({"index": index, "relevance_score": score})
        results.sort(key=lambda r: r["relevance_score"], reverse=True)
        results = results[: min(top_n, len(results))]
        if self.drop_result:
            results = results[:-1]
        with self._lock:
            self.served.append({"documents": len(documents), "prompt_tokens": tokens})
        return 200, {
            "model": body.get("model", self.model),
            "object": "list",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "results": results,
        }

    def __enter__(self) -> RerankDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
