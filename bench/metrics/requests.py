"""Request records -> latency, throughput and SLO figures. Every derived request figure comes from here.

Definitions (DESIGN.md; they match vLLM's serving benchmark). Per request, with t_send the moment
the request was written, t_1..t_k the arrival of each streamed chunk that carried output, t_end the
end of the stream and n the output tokens:

    TTFT   = t_1 - t_send
    E2E    = t_end - t_send
    TPOT   = (t_k - t_1) / (n - 1)          only for n >= 2
    ITL    = every t_i - t_(i-1)            pooled over requests
    output tokens/s of one request = n / (t_end - t_send)

The measured window runs from the first t_send to the last t_end of the measured phase (warmup and
cooldown excluded; failed and cancelled requests included). Over several stages (a run's own figures) it is
the union of the stages' windows, so the time between stages is not counted:

    output throughput  = sum(n of successful requests) / window
    request throughput = successful requests / window

Latency statistics use successful measured requests only (bench.metrics.stats says how percentiles
and intervals are computed).

Open loop: each request also has an intended send time t_intended from the schedule.
client_queue = t_send - t_intended (time the client held it: a concurrency cap, or a late loop),
and TTFT and E2E are also reported from t_intended, so queueing in the client is never hidden.

SLOs (ttft, tpot, itl, e2e thresholds in ms): a measured request meets an SLO when it succeeded and
its value is within the threshold (open loop: TTFT and E2E from t_intended; ITL: its worst gap; a
one-token answer has no TPOT or ITL to miss). goodput = requests meeting every SLO / window. A stage
is SLO-compliant when, for every SLO, the chosen percentile over its measured requests (cancelled ones
excluded) is within the threshold, counting a failed request as infinitely slow. The max
SLO-compliant throughput is the highest request throughput among compliant stages.

Intervals: p50 and p99 of TTFT and TPOT over requests (the percentile bootstrap); output throughput:
Student's t interval of the mean of per-slice throughputs over THROUGHPUT_SLICES equal slices of the
window, each chunk's tokens counted in the slice where it arrived (a request's n tokens spread evenly over
its chunks).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import orjson

from bench.errors import UsageError
from bench.metrics.stats import bootstrap_percentile_ci, describe, mean_t_interval, percentiles
from bench.records import RequestRecord
from bench.summary import (
    ErrorKind,
    Intervals,
    MaxSloCompliant,
    PoolingFigures,
    RequestCounts,
    RequestSummary,
    SloMetric,
    SloReport,
    ToolCalls,
)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
THROUGHPUT_SLICES = 10
PHASES = ("warmup", "measured", "cooldown")
STATUSES = ("ok", "error", "cancelled")
WARMUP, MEASURED, COOLDOWN = 0, 1, 2
OK, ERROR, CANCELLED = 0, 1, 2
NAN = float("nan")


@dataclass
class RequestTable:
    """Request records as columns (one row per request); a missing number is NaN.

    Chunk arrival times are kept flat (int64 ns): row i's chunks are chunks[chunk_start[i]:chunk_start[i + 1]].
    Other times are float64 ns (exact below 2**53 ns, about 104 days). Derived columns are computed once.
    """

    request_id: np.ndarray
    stage: np.ndarray
    phase: np.ndarray
    status: np.ndarray
    t_intended: np.ndarray
    t_send: np.ndarray
    t_end: np.ndarray
    output_tokens: np.ndarray
    prompt_tokens: np.ndarray
    cached_prompt_tokens: np.ndarray
    max_tokens: np.ndarray
    cut: np.ndarray
    server_prompt_per_s: np.ndarray  # the engine's own prefill speed per request, where it reports one
    reasoning_tokens: np.ndarray
    t_first_answer: np.ndarray
    tool_calls: np.ndarray  # calls per request
    tool_calls_well_formed: np.ndarray  # of them, those with a name and JSON-object arguments
    inputs: np.ndarray  # embeddings and rerank: inputs per request (NaN for generation)
    dimensions: np.ndarray  # embeddings: each vector's length
    chunk_start: np.ndarray
    chunks: np.ndarray
    tokens_source: list[str | None] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # row -> error, for failed rows

    def __len__(self) -> int:
        return len(self.request_id)

    @cached_property
    def chunk_counts(self) -> np.ndarray:
        return np.diff(self.chunk_start)

    def _chunk_at(self, index: np.ndarray) -> np.ndarray:
        out = np.full(len(self), NAN)
        has = self.chunk_counts > 0
        out[has] = self.chunks[index[has]]
        return out

    @cached_property
    def first_chunk(self) -> np.ndarray:
        return self._chunk_at(self.chunk_start[:-1])

    @cached_property
    def last_chunk(self) -> np.ndarray:
        return self._chunk_at(self.chunk_start[1:] - 1)

    @cached_property
    def chunk_owner(self) -> np.ndarray:
        """The row each chunk belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.chunk_counts)

    def select(self, mask: np.ndarray) -> RequestTable:
        """The rows where mask is true, in order (this table itself when that is every row)."""
        if mask.all():
            return self
        rows = np.flatnonzero(mask)
        start = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(self.chunk_counts[rows], out=start[1:])
        chunks = self.chunks[mask[self.chunk_owner]] if len(self.chunks) else self.chunks
        failed = np.fromiter(self.errors, dtype=np.int64, count=len(self.errors))
        kept = failed[mask[failed]] if len(failed) else failed
        columns = {name: getattr(self, name)[rows] for name in _ROW_COLUMNS}
        return RequestTable(
            **columns,
            chunk_start=start,
            chunks=chunks,
            tokens_source=[self.tokens_source[i] for i in rows],
            errors={int(n): self.errors[int(o)] for o, n in zip(kept, np.searchsorted(rows, kept), strict=True)},
        )

    # -- per request ------------------------------------------------------------------------------
    def ttft_ms(self) -> np.ndarray:
        return (self.first_chunk - self.t_send) / NS_PER_MS

    def e2e_ms(self) -> np.ndarray:
        return (self.t_end - self.t_send) / NS_PER_MS

    def tpot_ms(self) -> np.ndarray:
        """NaN below two output tokens or without chunks."""
        n = self.output_tokens
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (self.last_chunk - self.first_chunk) / (n - 1) / NS_PER_MS
        out[~(n >= 2)] = NAN
        return out

    def gaps_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """(every gap between consecutive chunks of one request in ms, the row each belongs to)."""
        return self._gaps

    @cached_property
    def _gaps(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.chunks) < 2:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        owner = self.chunk_owner
        same = owner[1:] == owner[:-1]
        return np.diff(self.chunks)[same] / NS_PER_MS, owner[1:][same]


_ROW_COLUMNS = (
    "request_id",
    "stage",
    "phase",
    "status",
    "t_intended",
    "t_send",
    "t_end",
    "output_tokens",
    "prompt_tokens",
    "cached_prompt_tokens",
    "max_tokens",
    "cut",
    "server_prompt_per_s",
    "reasoning_tokens",
    "t_first_answer",
    "tool_calls",
    "tool_calls_well_formed",
    "inputs",
    "dimensions",
)
_FLOAT_FIELDS = (
    ("t_intended", "t_intended_ns"),
    ("t_send", "t_send_ns"),
    ("t_end", "t_end_ns"),
    ("output_tokens", "output_tokens"),
    ("prompt_tokens", "prompt_tokens"),
    ("cached_prompt_tokens", "cached_prompt_tokens"),
    ("max_tokens", "max_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
    ("t_first_answer", "t_first_answer_ns"),
    ("inputs", "inputs"),
    ("dimensions", "dimensions"),
)


def well_formed_call(call: dict[str, Any]) -> bool:
    """A tool call with a function name whose arguments are a JSON object."""
    try:
        return bool(call.get("name")) and isinstance(orjson.loads(call.get("arguments") or ""), dict)
    except orjson.JSONDecodeError:
        return False


class TableBuilder:
    """Builds a RequestTable from records or requests.jsonl rows, one at a time, into compact C arrays
    (a million 64-token records take about 1 GB as columns, against several as Python objects)."""

    def __init__(self) -> None:
        self._ints = {name: array("q") for name in ("request_id", "stage", "tool_calls", "tool_calls_well_formed")}
        self._small = {name: array("b") for name in ("phase", "status", "cut")}
        self._floats = {name: array("d") for name, _ in _FLOAT_FIELDS}
        self._prefill = array("d")
        self._chunks = array("q")
        self._chunk_start = array("q", [0])
        self._sources: list[str | None] = []
        self._errors: dict[int, str] = {}

    def add_row(self, row: Mapping[str, Any] | _RecordView) -> None:
        try:
            self._add_row(row)
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:  # a hand-edited or damaged record
            raise UsageError(
                f"requests.jsonl, record {len(self._sources) + 1}: a field is not of its type ({exc}); the "
                "file is damaged (bench.records.RequestRecord lists each field's type)"
            ) from None

    def _add_row(self, row: Mapping[str, Any] | _RecordView) -> None:
        get = row.get
        index = len(self._sources)
        self._ints["request_id"].append(get("request_id") or 0)
        self._ints["stage"].append(get("stage") or 0)
        self._small["phase"].append(_PHASE_CODES.get(get("phase"), MEASURED))
        status = _STATUS_CODES.get(get("status"), ERROR)
        self._small["status"].append(status)
        self._small["cut"].append(1 if get("cut") else 0)
        for name, key in _FLOAT_FIELDS:
            value = get(key)
            self._floats[name].append(NAN if value is None else value)
        timings = get("server_timings")
        speed = timings.get("prompt_per_second") if isinstance(timings, dict) else None
        self._prefill.append(NAN if speed is None else speed)
        calls = get("tool_calls") or ()
        self._ints["tool_calls"].append(len(calls))
        self._ints["tool_calls_well_formed"].append(sum(well_formed_call(c) for c in calls) if calls else 0)
        times = get("output_times_ns")
        if times:
            self._chunks.fromlist(times)
        self._chunk_start.append(len(self._chunks))
        self._sources.append(get("tokens_source"))
        if status == ERROR:
            self._errors[index] = get("error") or "unknown error"

    def add(self, record: RequestRecord) -> None:
        self.add_row(_RecordView(record))

    def build(self) -> RequestTable:
        def column(buffer: array, dtype) -> np.ndarray:  # a view of the C array, no copy
            return np.frombuffer(buffer, dtype=dtype) if len(buffer) else np.zeros(0, dtype=dtype)

        return RequestTable(
            **{k: column(v, np.int64) for k, v in self._ints.items()},
            phase=column(self._small["phase"], np.int8),
            status=column(self._small["status"], np.int8),
            cut=column(self._small["cut"], np.int8).astype(bool),
            **{k: column(v, np.float64) for k, v in self._floats.items()},
            server_prompt_per_s=column(self._prefill, np.float64),
            chunk_start=column(self._chunk_start, np.int64),
            chunks=column(self._chunks, np.int64),
            tokens_source=self._sources,
            errors=self._errors,
        )


_PHASE_CODES = {name: code for code, name in enumerate(PHASES)} | {None: MEASURED}
_STATUS_CODES = {name: code for code, name in enumerate(STATUSES)}


class _RecordView:
    """A RequestRecord read through the row interface add_row uses (`get`), without copying it."""

    __slots__ = ("record",)

    def __init__(self, record: RequestRecord) -> None:
        self.record = record

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self.record, key, default)


def table_of(records: Iterable[RequestRecord | Mapping[str, Any]]) -> RequestTable:
    builder = TableBuilder()
    for record in records:
        builder.add(record) if isinstance(record, RequestRecord) else builder.add_row(record)
    return builder.build()


# -- the measured window ---------------------------------------------------------------------------
def measured_window(table: RequestTable) -> tuple[float, float] | None:
    """(first t_send, last t_end) over the measured requests that were sent, or None."""
    sent = (table.phase == MEASURED) & ~np.isnan(table.t_send) & ~np.isnan(table.t_end)
    if not sent.any():
        return None
    return float(table.t_send[sent].min()), float(table.t_end[sent].max())


def window_seconds(table: RequestTable) -> float:
    """Seconds measured: the length of the union of each stage's measured window, so the rates of requests from
    several stages leave out the time between stages (a stage's own warmup, drain and engine restarts)."""
    sent = (table.phase == MEASURED) & ~np.isnan(table.t_send) & ~np.isnan(table.t_end)
    stages = np.unique(table.stage[sent])
    if len(stages) <= 1:
        window = measured_window(table)
        return (window[1] - window[0]) / NS_PER_S if window else 0.0
    spans = sorted(
        (float(table.t_send[sent & (table.stage == s)].min()), float(table.t_end[sent & (table.stage == s)].max()))
        for s in stages
    )
    total, (start, end) = 0.0, spans[0]
    for next_start, next_end in spans[1:]:
        if next_start > end:  # a gap: what came before is one stretch of measured time
            total, start = total + end - start, next_start
        end = max(end, next_end)
    return (total + end - start) / NS_PER_S


# -- summaries -------------------------------------------------------------------------------------
def summarize_requests(table: RequestTable) -> RequestSummary:
    """The figures of the measured phase of these requests."""
    measured = table.phase == MEASURED
    ok_mask = measured & (table.status == OK)
    ok = table.select(ok_mask)
    window_s = window_seconds(table)

    def rate(amount: float) -> float | None:
        return amount / window_s if window_s > 0 else None

    output_tokens = int(np.nansum(ok.output_tokens))
    prompt_tokens = int(np.nansum(ok.prompt_tokens))
    reporting = ~np.isnan(ok.cached_prompt_tokens) & (np.nan_to_num(ok.prompt_tokens) != 0)
    ttft, tpot, e2e = ok.ttft_ms(), ok.tpot_ms(), ok.e2e_ms()
    n, e2e_s = ok.output_tokens, (ok.t_end - ok.t_send) / NS_PER_S
    per_request_rate = (n > 0) & (e2e_s > 0)
    failed_rows = np.flatnonzero(measured & (table.status == ERROR))
    error_kinds = Counter(table.errors.get(int(i), "unknown error")[:120] for i in failed_rows)
    differs = ~np.isnan(n) & (n != ok.max_tokens)
    summary = RequestSummary(
        requests=RequestCounts(
            measured=int(measured.sum()),
            successful=int(ok_mask.sum()),
            failed=len(failed_rows),
            cancelled=int((measured & (table.status == CANCELLED)).sum()),
            warmup=int((table.phase == WARMUP).sum()),
        ),
        window_s=window_s,
        request_throughput_per_s=rate(len(ok)),
        output_throughput_tokens_per_s=rate(output_tokens),
        total_token_throughput_tokens_per_s=rate(output_tokens + prompt_tokens),
        total_output_tokens=output_tokens,
        total_prompt_tokens=prompt_tokens,
        # the share of prompt tokens the server served from its prefix cache, where it reports them
        prefix_cache_hit_rate=(
            float(ok.cached_prompt_tokens[reporting].sum() / ok.prompt_tokens[reporting].sum())
            if reporting.any()
            else None
        ),
        ttft_ms=describe(ttft[~np.isnan(ttft)]),
        tpot_ms=describe(tpot[~np.isnan(tpot)]),
        itl_ms=describe(ok.gaps_ms()[0]),
        e2e_ms=describe(e2e),
        output_tokens_per_s_per_request=describe(n[per_request_rate] / e2e_s[per_request_rate]),
        prompt_tokens=describe(ok.prompt_tokens[~np.isnan(ok.prompt_tokens)]),
        output_tokens=describe(n[~np.isnan(n)]),
        tokens_source=dict(Counter(source or "none" for source in ok.tokens_source)),
        output_length_differs_from_max_tokens=int(differs.sum()),
        cut_streams=int((measured & table.cut).sum()),
        first_chunk_read_with_the_next=_first_chunk_read_with_the_next(ok),
        errors=[ErrorKind(error=kind, count=count) for kind, count in error_kinds.most_common(10)],
    )
    reasoned = ~np.isnan(ok.reasoning_tokens)
    if reasoned.any():  # a reasoning model: its thinking apart, and the wait for the answer itself
        summary.reasoning_tokens = describe(ok.reasoning_tokens[reasoned])
        summary.reasoning_token_share = (
            float(ok.reasoning_tokens[reasoned].sum() / output_tokens) if output_tokens else None
        )
        answered = ~np.isnan(ok.t_first_answer)
        summary.time_to_first_answer_ms = describe((ok.t_first_answer - ok.t_send)[answered] / NS_PER_MS)
    pooled = ~np.isnan(ok.inputs)
    if pooled.any():  # embeddings or rerank: inputs and the tokens processed, not generated
        inputs, tokens = float(ok.inputs[pooled].sum()), float(np.nansum(ok.prompt_tokens[pooled]))
        dims = ok.dimensions[pooled & ~np.isnan(ok.dimensions)]
        summary.pooling = PoolingFigures(
            api="embeddings" if len(dims) else "rerank",
            inputs=int(inputs),
            inputs_per_s=rate(inputs),
            tokens=int(tokens),
            tokens_per_s=rate(tokens),
            tokens_per_input=tokens / inputs if inputs else None,
            batch_size=describe(ok.inputs[pooled]),
            ms_per_input=describe(e2e[pooled] / ok.inputs[pooled]),
            dimensions=int(np.bincount(dims.astype(np.int64)).argmax()) if len(dims) else None,
        )
    if ok.tool_calls.any():
        calls = int(ok.tool_calls.sum())
        summary.tool_calls = ToolCalls(
            requests=int((ok.tool_calls > 0).sum()),
            calls=calls,
            well_formed=int(ok.tool_calls_well_formed.sum()),
            well_formed_share=float(ok.tool_calls_well_formed.sum() / calls),
        )
    open_loop = ~np.isnan(ok.t_intended)
    if open_loop.any():
        first = ok.first_chunk[open_loop]
        intended = ok.t_intended[open_loop]
        from_intended = (first - intended) / NS_PER_MS
        summary.client_queue_ms = describe((ok.t_send[open_loop] - intended) / NS_PER_MS)
        summary.ttft_from_intended_ms = describe(from_intended[~np.isnan(from_intended)])
        summary.e2e_from_intended_ms = describe((ok.t_end[open_loop] - intended) / NS_PER_MS)
    return summary


def _first_chunk_read_with_the_next(table: RequestTable) -> int:
    """Requests whose first two output chunks carry one time (one read brought both)."""
    firsts = table.chunk_start[:-1][table.chunk_counts >= 2]
    return int((table.chunks[firsts] == table.chunks[firsts + 1]).sum()) if len(firsts) else 0


def _worst_gap_ms(table: RequestTable) -> np.ndarray:
    """Each request's largest gap between chunks (NaN with fewer than two chunks)."""
    gaps, owner = table.gaps_ms()
    out = np.full(len(table), NAN)
    if len(gaps):
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        out[owner[starts]] = np.maximum.reduceat(gaps, starts)
    return out


def intended_start(table: RequestTable) -> np.ndarray:
    """Per request, when it was meant to be sent: its intended time in open loop or a trace, else its send."""
    return np.where(np.isnan(table.t_intended), table.t_send, table.t_intended)


def _slo_values(table: RequestTable, metric: str) -> np.ndarray:
    """The value an SLO judges per request; open-loop TTFT and E2E count from the intended send time."""
    if metric == "itl":
        return _worst_gap_ms(table)
    if metric == "tpot":
        return table.tpot_ms()
    end = table.first_chunk if metric == "ttft" else table.t_end
    return (end - intended_start(table)) / NS_PER_MS


def slo_report(table: RequestTable, slo_ms: Mapping[str, float], percentile_q: float) -> SloReport:
    """Fractions meeting each SLO, goodput, and whether the chosen percentile meets every SLO."""
    judged = table.select((table.phase == MEASURED) & (table.status != CANCELLED))
    ok = judged.status == OK
    n = len(judged)
    window_s = window_seconds(table)
    meets_all = ok.copy()
    by_metric = {}
    for metric, limit in slo_ms.items():
        raw = _slo_values(judged, metric)
        meets_all &= np.isnan(raw) | (raw <= limit)
        # a failure misses everything; an answer with nothing to judge (one token: no TPOT) misses nothing
        values = np.where(ok, np.nan_to_num(raw, nan=0.0), np.inf)
        at = percentiles(values, [percentile_q])[0] if n else None
        by_metric[metric] = SloMetric(
            threshold_ms=limit,
            fraction_meeting=float((values <= limit).sum() / n) if n else None,
            at_percentile=at,
            met_at_percentile=at is not None and at <= limit,
        )
    meeting = int(meets_all.sum())
    return SloReport(
        percentile=percentile_q,
        requests_judged=n,
        fraction_meeting_all=meeting / n if n else None,
        goodput_requests_per_s=meeting / window_s if window_s > 0 else None,
        compliant=bool(n) and all(m.met_at_percentile for m in by_metric.values()),
        by_metric=by_metric,
    )


def throughput_slices(table: RequestTable) -> list[float]:
    """Output tokens/s in each of THROUGHPUT_SLICES equal slices of the measured window, each chunk's
    tokens counted in the slice where the chunk arrived."""
    measured = (table.phase == MEASURED) & ~np.isnan(table.t_send)
    ok = table.select(measured & (table.status == OK) & (table.chunk_counts > 0))
    if not len(ok):
        return []
    start = float(table.t_send[measured].min())
    width = (float(np.nanmax(table.t_end[measured])) - start) / THROUGHPUT_SLICES
    if width <= 0:
        return []
    per_chunk = np.nan_to_num(ok.output_tokens) / ok.chunk_counts
    slot = np.clip(np.trunc((ok.chunks - start) / width), 0, THROUGHPUT_SLICES - 1).astype(np.int64)
    tokens = np.bincount(slot, weights=per_chunk[ok.chunk_owner], minlength=THROUGHPUT_SLICES)
    return [float(t) / (width / NS_PER_S) for t in tokens]


def confidence_intervals(table: RequestTable) -> Intervals:
    ok = table.select((table.phase == MEASURED) & (table.status == OK))
    ttft, tpot = ok.ttft_ms(), ok.tpot_ms()
    ttft, tpot = ttft[~np.isnan(ttft)], tpot[~np.isnan(tpot)]
    return Intervals(
        ttft_p50_ms=bootstrap_percentile_ci(ttft, 50),
        ttft_p99_ms=bootstrap_percentile_ci(ttft, 99),
        tpot_p50_ms=bootstrap_percentile_ci(tpot, 50),
        tpot_p99_ms=bootstrap_percentile_ci(tpot, 99),
        output_throughput_tokens_per_s=mean_t_interval(throughput_slices(table)),
    )


def max_slo_compliant(stages) -> MaxSloCompliant | None:
    """The compliant stage with the highest request throughput: the number the cost module prices."""
    compliant = [s for s in stages if s.slo is not None and s.slo.compliant and s.request_throughput_per_s]
    if not compliant:
        return None
    best = max(compliant, key=lambda s: s.request_throughput_per_s)
    return MaxSloCompliant(
        stage=best.stage,
        label=best.label,
        request_throughput_per_s=best.request_throughput_per_s,
        output_throughput_tokens_per_s=best.output_throughput_tokens_per_s,
        goodput_requests_per_s=best.slo.goodput_requests_per_s,
    )
