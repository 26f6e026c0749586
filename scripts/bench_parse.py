#!/usr/bin/env python3
"""The client's own work per streamed token, without the network: parse and decode, replayed.

A capacity-shape response (the calibration server's bytes: 256 completion tokens, then the final chunk
and [DONE]) is fed to the client's HTTP reader as reads of 1, 2 and 4 whole chunks (a loop that keeps up
reads one token per read; a busy one finds a few waiting), and then decoded as a run decodes it
(StreamingClient: split into events, the dialect's read, the record filled). Printed: microseconds of
CPU per token for the reads, for the decode, and both (the best pass's sum), each the best of --repeat
passes (the least disturbed by whatever else runs); with several trees the passes alternate tree by tree,
so a change in the machine's load falls on all of them alike. No sockets, so no kernel time: this is the
part of bench_client.py's CPU-s per million tokens that the client's Python decides.

    .venv/bin/python scripts/bench_parse.py
    mkdir /tmp/before && git archive <commit> bench | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_parse.py --tree before=/tmp/before --tree after=.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENS = 256
CHUNKS_PER_READ = (1, 2, 4)


def child(responses: int) -> dict:
    """In the tree's own interpreter: one pass, µs per token of each step, per read size."""
    import asyncio

    from bench.calibrate.server import END, HEAD, TOKEN, chunk
    from bench.clients.base import PreparedRequest
    from bench.clients.http import _Connection
    from bench.clients.openai import COMPLETIONS
    from bench.clients.streaming import Sent, StreamingClient
    from bench.records import RequestRecord

    final = {  # the server's last chunk, its truth (timings) left out
        "choices": [{"text": "", "index": 0, "finish_reason": "length"}],
        "object": "text_completion",
        "usage": {"prompt_tokens": 1, "completion_tokens": TOKENS, "total_tokens": TOKENS + 1},
    }
    final = chunk(b"data: " + json.dumps(final).encode() + b"\n\n") + END

    class Transport:
        def write(self, data):
            pass

        def is_closing(self):
            return False

    class NoFirstReads:  # in place of the HttpClient, which a decode only asks to look for first reads
        def look_for_first_reads(self):
            pass

    client = StreamingClient(NoFirstReads(), COMPLETIONS, "replay", {}, 60.0, 0)  # type: ignore[arg-type]
    request = PreparedRequest("replay", TOKENS)

    async def replay(per_read: int) -> tuple[float, float]:
        reads = [TOKEN * per_read] * (TOKENS // per_read)
        parse = decode = 0.0
        for _ in range(responses):
            conn = _Connection()
            conn.connection_made(Transport())
            pending = asyncio.ensure_future(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
            await asyncio.sleep(0)
            conn.feed(HEAD, 0)
            feed = conn.feed
            start = time.process_time()
            for now, data in enumerate(reads, 1):
                feed(data, now)
            parse += time.process_time() - start
            conn.feed(final, len(reads) + 1)
            response = await pending
            sent = Sent(RequestRecord(request_id=0, worker=0, max_tokens=TOKENS), request, response)
            start = time.process_time()
            record = await client.complete(sent)
            decode += time.process_time() - start
            assert record.status == "ok" and len(record.output_times_ns) == TOKENS, record  # every token parsed
        return parse / (responses * TOKENS) * 1e6, decode / (responses * TOKENS) * 1e6

    async def one_pass() -> dict:
        for per_read in CHUNKS_PER_READ:  # unmeasured, so the first read size measured is not the one that warms up
            await replay(per_read)
        return {str(per_read): await replay(per_read) for per_read in CHUNKS_PER_READ}

    return asyncio.run(one_pass())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", help="NAME=PATH of a tree whose client is measured; repeatable")
    parser.add_argument("--repeat", type=int, default=7, help="passes per tree; the best is printed (default 7)")
    parser.add_argument("--responses", type=int, default=200, help="responses per pass and read size (default 200)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.responses)))
        return 0
    trees = []
    for item in args.tree or [f"this={REPO}"]:
        name, _, where = item.rpartition("=")
        trees.append((name or Path(where).name, Path(where).resolve()))
    print(f"µs of CPU per token, best of {args.repeat} passes of {args.responses} responses x {TOKENS} tokens")
    print("| client | chunks per read | reads | decode | both |\n| --- | --- | --- | --- | --- |")
    best: dict[str, dict[str, list[float]]] = {name: {} for name, _ in trees}  # tree -> read size -> the three
    for _ in range(args.repeat):
        for name, tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, __file__, "--child", "--responses", str(args.responses)]
            one = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
            for per_read, (parse, decode) in one.items():
                old = best[name].setdefault(per_read, [parse, decode, parse + decode])
                best[name][per_read] = [min(old[0], parse), min(old[1], decode), min(old[2], parse + decode)]
    for name, _ in trees:
        for per_read, (parse, decode, both) in best[name].items():
            print(f"| {name} | {per_read} | {parse:.3f} | {decode:.3f} | {both:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
