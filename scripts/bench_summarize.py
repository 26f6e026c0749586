"""Benchmark (not a test): time `bench summarize` and its peak memory on a synthetic run of N requests.

    python scripts/bench_summarize.py                        # 1,000,000 requests of 64 tokens, this checkout
    python scripts/bench_summarize.py --requests 100000 --python /other/checkout/.venv/bin/python

Writes a run directory (a version-1 manifest, which every version of the rig reads; requests.jsonl with
64 chunk times per request, as a streamed 64-token request records them; telemetry at 1 Hz) once into
--dir, then runs `python -m bench summarize DIR` under /usr/bin/time and prints wall time and peak RSS.
Target on the 2-core development VM: at most 30 s and 4 GiB for 1,000,000 requests.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

MS = 1_000_000


def make_run(path: Path, requests: int, tokens: int, streams: int = 64) -> None:
    path.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    manifest = {
        "schema_version": 1,
        "run_id": path.name,
        "status": "complete",
        "incomplete_reason": None,
        "started_at": "2026-12-01T00:00:00.000+00:00",
        "ended_at": None,
        "command": ["synthetic"],
        "model": {"name": "synthetic"},
        "engine": {"engine": "synthetic"},
        "hardware": {},
        "software": {},
        "spec": {
            "engine": "synthetic",
            "model": "synthetic",
            "api": "completions",
            "workload": {"kind": "synthetic", "input_tokens": "128", "output_tokens": str(tokens)},
            "slo": {"thresholds_ms": {"ttft": 200.0, "tpot": 20.0}, "percentile": 99.0},
            "stages": [
                {
                    "index": 0,
                    "name": f"c{streams}",
                    "kind": "closed-loop",
                    "label": f"concurrency {streams}",
                    "schedule": {"concurrency": streams},
                    "requests": requests,
                }
            ],
        },
    }
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with (path / "requests.jsonl").open("wb") as out:
        clock = [0] * streams
        for i in range(requests):
            s = i % streams
            send = clock[s]
            first = send + int(rng.uniform(50, 150) * MS)
            gap = int(rng.uniform(8, 12) * MS)
            times = [first + k * gap for k in range(tokens)]
            end = times[-1] + MS
            clock[s] = end
            row = {
                "request_id": i,
                "worker": s,
                "stage": 0,
                "phase": "measured",
                "status": "ok",
                "error": None,
                "t_send_ns": send,
                "output_times_ns": times,
                "t_end_ns": end,
                "output_tokens": tokens,
                "prompt_tokens": 128,
                "tokens_source": "usage",
                "max_tokens": tokens,
            }
            out.write(orjson.dumps(row) + b"\n")
    span_s = max(clock) // 1_000_000_000 + 1
    with (path / "telemetry.jsonl").open("wb") as out:
        for t in range(span_s):
            out.write(
                orjson.dumps({"t_ns": t * 1_000_000_000, "engine_rss_bytes": 2**30, "client_cpu_percent": 30.0}) + b"\n"
            )


def measure(python: str, run_dir: Path, cwd: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS GiB, exit code) of `python -m bench summarize run_dir`."""
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-v", python, "-m", "bench", "summarize", str(run_dir)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return wall, int(peak.group(1)) / 2**20 if peak else float("nan"), done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-summarize"))
    parser.add_argument("--python", default=sys.executable, help="the Python whose `bench` to time")
    parser.add_argument("--cwd", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    run_dir = args.dir / f"synthetic-{args.requests}x{args.tokens}"
    if not (run_dir / "requests.jsonl").exists():
        started = time.monotonic()
        make_run(run_dir, args.requests, args.tokens)
        size = (run_dir / "requests.jsonl").stat().st_size / 2**30
        print(f"made {run_dir} ({args.requests:,} requests, {size:.2f} GiB) in {time.monotonic() - started:.0f} s")
    wall, peak, code = measure(args.python, run_dir, args.cwd)
    print(
        f"bench summarize: {args.requests:,} requests x {args.tokens} tokens: {wall:.1f} s wall, peak RSS "
        f"{peak:.2f} GiB, exit {code} ({args.python})"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
