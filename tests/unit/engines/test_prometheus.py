"""An engine's /metrics as the rig reads it. The llama.cpp texts are recorded: fixtures/llama-server-0c1e570-*
are GET /metrics of llama-server built from the llama.cpp that llama-cpp-python 0.3.36 vendors (version
0.5.0-dev, commit 0c1e570), serving Gemma 3 270M with --swa-full, before and after two completions that
share a 33-token prefix."""

from pathlib import Path

from bench.engines.prometheus import SERIES_GAUGES, gauges_only, parse
from bench.metrics.server import deltas

FIXTURES = Path(__file__).with_name("fixtures")
START = (FIXTURES / "llama-server-0c1e570-metrics-start.txt").read_text()
AFTER = (FIXTURES / "llama-server-0c1e570-metrics-after-2-requests.txt").read_text()


def test_every_llama_cpp_series_gauge_exists_in_llama_server_metrics():
    """llamacpp:kv_cache_usage_ratio was removed upstream; a series of a name the server never sends is empty."""
    exported = set(parse(AFTER)) | {name.split("{", 1)[0] for name in parse(AFTER)}
    for name in SERIES_GAUGES:
        if name.startswith("llamacpp:"):
            assert name in exported, name
    assert "llamacpp:kv_cache_usage_ratio" not in SERIES_GAUGES
    assert gauges_only(AFTER) == {"llamacpp:requests_processing": 0.0, "llamacpp:requests_deferred": 0.0}


def test_llama_cpp_prompt_tokens_are_the_processed_ones_and_the_full_prompt_adds_the_cached():
    figures = deltas(parse(START), parse(AFTER))
    assert figures.processed_prompt_tokens == 35  # llamacpp:prompt_tokens_total excludes cache hits
    assert figures.cached_prompt_tokens == 33  # llamacpp:prompt_tokens_cached_total
    assert figures.prompt_tokens == 68  # the whole prompts, as vllm:prompt_tokens_total counts them
    assert figures.generation_tokens == 8 and figures.prefix_cache_hit_rate == 33 / 68


def test_a_reply_cut_off_as_the_engine_dies_is_an_oserror_the_run_notes(tmp_path):
    """A real loopback server that promises 100 bytes and closes after 10 (or answers no status line):
    http.client's IncompleteRead and BadStatusLine are no OSError, so the stage scrape, the telemetry
    sampler and the readiness poll, which expect OSError, would have died on them."""
    import socket
    import threading

    import pytest

    from bench.engines.base import http_json
    from bench.engines.prometheus import fetch

    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n0123456789",  # an error page cut short
    ]
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        for reply in replies * 2:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(reply)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for read in (
        lambda: fetch(f"http://127.0.0.1:{port}/metrics"),
        lambda: http_json("GET", f"http://127.0.0.1:{port}/"),
    ):
        for _ in replies:
            with pytest.raises(OSError):  # what the callers catch (an HTTPError for /metrics' error page)
                read()
    thread.join(timeout=5)
    server.close()
