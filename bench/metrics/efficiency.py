"""A stage's distance from the roofline (bench.roofline has the bounds): decode bandwidth utilization
(MBU) and prefill FLOP utilization (MFU), from its successful measured requests (no I/O).

    context      = mean prompt tokens + mean output tokens / 2      (the KV length of a mean decode step)
    streams      = mean number of requests between their first and last chunk, over the span any was
    decode speed = 1000 / mean TPOT (ms)       per stream;  MBU = decode speed / decode bound
    prefill speed= the engine's own prompt_per_second where it reports one (llama.cpp), else
                   prompt tokens / TTFT;                    MFU = prefill speed / prefill bound
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics.requests import MEASURED, NS_PER_S, OK, RequestTable
from bench.roofline import decode_bound, prefill_bound
from bench.summary import Efficiency


def mean_concurrent_decoders(first: np.ndarray, last: np.ndarray) -> float:
    """Mean number of requests between their first and last token, over the span where any was."""
    if not len(first):
        return 1.0
    window = float(last.max() - first.min())
    return max(1.0, float((last - first).sum()) / window) if window > 0 else 1.0


def efficiency(table: RequestTable, shape: dict[str, Any], limits: dict[str, Any]) -> Efficiency | None:
    ok = table.select((table.phase == MEASURED) & (table.status == OK) & (table.chunk_counts > 0))
    if not len(ok):
        return None
    tpot = ok.tpot_ms()
    tpots = tpot[~np.isnan(tpot) & (tpot != 0)]
    prompt = ok.prompt_tokens[np.nan_to_num(ok.prompt_tokens) != 0]
    output = ok.output_tokens[np.nan_to_num(ok.output_tokens) != 0]
    context = (prompt.mean() if len(prompt) else 0.0) + (output.mean() / 2 if len(output) else 0.0)
    spans = ok.chunk_counts >= 2
    streams = mean_concurrent_decoders(ok.first_chunk[spans], ok.last_chunk[spans])
    out = Efficiency(hardware=limits["name"], context_tokens_mean=float(context), decode_streams_mean=streams)
    if len(tpots):
        measured = 1000.0 / float(tpots.mean())
        bound = decode_bound(shape, limits, float(context), streams)
        out.decode_tokens_per_s_per_stream = measured
        out.decode_bound_tokens_per_s_per_stream = bound
        out.decode_bandwidth_utilization = measured / bound
    reported = ok.server_prompt_per_s[np.nan_to_num(ok.server_prompt_per_s) != 0]
    if len(reported):
        speeds, out.prefill_source = reported, "server timings"
    else:
        has_prompt = np.nan_to_num(ok.prompt_tokens) != 0
        speeds = ok.prompt_tokens[has_prompt] / ((ok.first_chunk - ok.t_send)[has_prompt] / NS_PER_S)
        out.prefill_source = "prompt tokens / TTFT"
    if len(speeds):
        out.prefill_tokens_per_s = float(speeds.mean())
    else:
        out.prefill_source = None
    bound = prefill_bound(shape, limits)
    if len(speeds) and bound:
        out.prefill_bound_tokens_per_s = bound
        out.prefill_flops_utilization = out.prefill_tokens_per_s / bound
    return out
