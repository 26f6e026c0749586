"""The soak run behind scripts/soak.sh: one long closed-loop stage against the demo model, watched from outside."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def rss_mib(pid: int | None, tree: bool) -> float | None:
    """RSS of a process (and its descendants, with tree), MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)] if tree else [root]
        return sum(p.memory_info().rss for p in processes) / 2**20
    except (psutil.Error, TypeError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args, extra = parser.parse_known_args()
    seconds = args.minutes * 60
    run_id = f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--engine",
        "llamacpp",
        "--model",
        "gemma3-270m",
        "--concurrency",
        "2",
        "--requests",
        "10000000",
        "--duration",
        str(seconds),
        "--input-tokens",
        "64",
        "--output-tokens",
        "32",
        "--results-dir",
        str(args.results_dir),
        "--run-id",
        run_id,
        *extra,
    ]
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = args.results_dir / run_id
    samples = []
    started = time.monotonic()
    marks = [30.0, seconds / 2, seconds - 5]  # start (after warm-up), middle, end
    while bench.poll() is None:
        elapsed = time.monotonic() - started
        if marks and elapsed >= marks[0]:
            marks.pop(0)
            engine_pid = None
            try:
                engine_pid = json.loads((run_dir / "manifest.json").read_text())["engine"].get("pid")
            except (OSError, ValueError, KeyError):
                pass
            lines = sum(1 for _ in (run_dir / "requests.jsonl").open()) if (run_dir / "requests.jsonl").exists() else 0
            samples.append((elapsed, rss_mib(bench.pid, tree=False), rss_mib(engine_pid, tree=True), lines))
        time.sleep(1)
    output = bench.stdout.read()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    sent = sum(sum((s.get("outcome") or {}).get("sent", {}).values()) for s in manifest["stages"])
    errors = sum(r["status"] == "error" for r in records)
    print(output.rstrip().splitlines()[0] if output.strip() else "")
    print(f"soak {args.minutes:g} min: exit {bench.returncode}, status {manifest['status']}")
    print(
        f"requests sent {sent}, records written {len(records)} ({'equal' if sent == len(records) else 'DIFFERENT'})"
        f", errors {errors}, cancelled {sum(r['status'] == 'cancelled' for r in records)}"
    )
    for (elapsed, client, engine, lines), name in zip(samples, ("start", "middle", "end"), strict=False):
        client_text = f"{client:,.0f} MiB" if client is not None else "-"
        engine_text = f"{engine:,.0f} MiB" if engine is not None else "-"
        print(
            f"{name:6} at {elapsed:6.0f} s: client RSS {client_text}, engine RSS {engine_text}, {lines} records on disk"
        )
    return 0 if sent == len(records) and bench.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
