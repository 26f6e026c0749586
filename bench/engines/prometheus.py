"""An engine's own metrics: Prometheus text from /metrics, parsed with prometheus_client's parser.

Snapshots are flattened to {"name{label=value,...}": value}, labels sorted, so two snapshots
subtract key by key (bench.metrics.server turns a stage's two snapshots into the server's figures).
"""

from __future__ import annotations

import http.client
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# gauges worth a time series during a run (cheap to pick out of the text before parsing)
SERIES_GAUGES = (
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
)


def fetch(url: str, timeout_s: float = 5.0) -> str:
    """/metrics as text; OSError when it cannot be read whole (unreachable, or cut off as the engine dies)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode("utf-8", "replace")
    except http.client.HTTPException as exc:  # not an OSError: a body cut short, a garbled status line
        raise ConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc


def parse(text: str) -> dict[str, float]:
    flat: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            flat[f"{sample.name}{{{labels}}}"] = sample.value
    return flat


def _metric_name(line: str) -> str:
    if line.startswith("# "):  # "# HELP name ..." or "# TYPE name kind"
        parts = line.split(" ", 3)
        return parts[2] if len(parts) > 2 else ""
    return line.split("{", 1)[0].split(" ", 1)[0]


def gauges_only(text: str) -> dict[str, float]:
    """The series gauges alone: their lines are picked out by name, then parsed (small, fast)."""
    keep = [line for line in text.splitlines() if _metric_name(line) in SERIES_GAUGES]
    return {name.split("{", 1)[0]: value for name, value in parse("\n".join(keep) + "\n").items()}
