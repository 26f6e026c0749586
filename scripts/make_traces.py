"""Make the small traces the tests and README use, one per format (no download): 24 requests over about 12 s,
Poisson arrivals at 2 req/s, prompt and output lengths drawn small enough for the CPU demo model.

    python scripts/make_traces.py [OUT_DIR]      # default tests/fixtures/traces

mooncake.jsonl: timestamps in ms, lengths, and hash ids in blocks of 16 tokens (run with
--trace-block-tokens 16): three conversations' prefixes recur, so a third of the prompt tokens can be
served from the prefix cache. azure.csv: the Azure LLM inference trace's columns and date-time format.
bench.jsonl: this rig's own format, two of its rows with prompt text.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
from pathlib import Path

REQUESTS, RATE, BLOCK = 24, 2.0, 16


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests/fixtures/traces"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    t, rows = 0.0, []
    for i in range(REQUESTS):
        shared = rng.randrange(3)  # which recurring prefix this request opens with
        input_tokens, output_tokens = rng.randint(40, 80), rng.randint(4, 12)
        blocks = (input_tokens + BLOCK - 1) // BLOCK
        hash_ids = [shared * 100, shared * 100 + 1] + [1000 + i * 10 + k for k in range(blocks - 2)]
        rows.append((t, input_tokens, output_tokens, hash_ids))
        t += rng.expovariate(RATE)
    with (out / "mooncake.jsonl").open("w") as f:
        for t_s, inp, outp, ids in rows:
            f.write(
                json.dumps(
                    {"timestamp": round(t_s * 1000), "input_length": inp, "output_length": outp, "hash_ids": ids}
                )
                + "\n"
            )
    start = dt.datetime(2023, 11, 16, 18, 15, 46)
    with (out / "azure.csv").open("w") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for t_s, inp, outp, _ in rows:
            f.write(f"{(start + dt.timedelta(seconds=t_s)).strftime('%Y-%m-%d %H:%M:%S.%f')}0,{inp},{outp}\n")
    with (out / "bench.jsonl").open("w") as f:
        for i, (t_s, inp, outp, _) in enumerate(rows):
            row = {"t_s": round(t_s, 3), "input_tokens": inp, "output_tokens": outp}
            if i in (3, 11):
                row["prompt"] = "The capital of France is"
            f.write(json.dumps(row) + "\n")
    print(f"wrote {REQUESTS}-request traces (mooncake.jsonl, azure.csv, bench.jsonl) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
