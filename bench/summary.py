"""summary.json as types: the derived figures of a run, overall and per stage.

Built only by bench.analysis (from the records, the telemetry and the manifest, with bench.metrics'
formulas), so it is a pure function of the raw files; every reader above (console, cost, report,
decision) reads these attributes. The definitions of each figure are in bench/metrics/.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

SUMMARY_VERSION = 2


class Part(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)


class Stats(Part):
    """n, mean, population std, min, max and linearly interpolated percentiles; None where n = 0."""

    n: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p99_9: float | None = Field(default=None, alias="p99.9")

    def at(self, key: str) -> float | None:
        """A statistic by its printed name (mean, p50, p99.9, ...)."""
        return getattr(self, key.replace(".", "_"))


class RequestCounts(Part):
    measured: int = 0
    successful: int = 0
    failed: int = 0
    cancelled: int = 0
    warmup: int = 0

    @property
    def finished(self) -> int:
        return self.successful + self.failed


class ErrorKind(Part):
    error: str
    count: int


class SloMetric(Part):
    threshold_ms: float
    fraction_meeting: float | None = None
    at_percentile: float | None = None  # the stage's value at the SLO percentile (a failure counts as infinite)
    met_at_percentile: bool = False


class SloReport(Part):
    percentile: float
    requests_judged: int
    fraction_meeting_all: float | None = None
    goodput_requests_per_s: float | None = None
    compliant: bool = False
    by_metric: dict[str, SloMetric] = Field(default_factory=dict)


class Intervals(Part):
    """95 % intervals: bootstrap (or, for large n, the order-statistic interval) of the percentiles,
    and Student's t interval of the mean of per-slice output throughputs."""

    ttft_p50_ms: list[float] | None = None
    ttft_p99_ms: list[float] | None = None
    tpot_p50_ms: list[float] | None = None
    tpot_p99_ms: list[float] | None = None
    output_throughput_tokens_per_s: list[float] | None = None

    def shown(self) -> dict[str, list[float]]:
        return {k: v for k, v in self.model_dump().items() if v}


class GaugeStats(Part):
    max: float
    mean: float


class GpuSummary(Part):
    index: int
    memory_peak_bytes: float | None = None
    memory_steady_bytes: float | None = None  # the median over the window
    engine_memory_peak_bytes: float | None = None
    engine_memory_source: str | None = None
    utilization_percent_mean: float | None = None
    power_w_mean: float | None = None
    energy_j: float | None = None
    energy_method: str | None = None
    throttle_reasons_seen: list[str] = Field(default_factory=list)


class TelemetrySummary(Part):
    samples: int = 0
    engine_peak_rss_bytes: float | None = None
    engine_cpu_percent_mean: float | None = None
    client_cpu_percent_mean: float | None = None
    sample_cost_us_mean: float | None = None
    engine_gauges: dict[str, GaugeStats] | None = None
    gpus: list[GpuSummary] | None = None
    gpu_energy_j: float | None = None  # a stage's: over its window; the run's: every sample, the engine's load too
    gpu_energy_j_per_output_token: float | None = None  # the run's: its stages' energy over their output tokens


class Efficiency(Part):
    hardware: str | None = None
    context_tokens_mean: float | None = None
    decode_streams_mean: float | None = None
    decode_tokens_per_s_per_stream: float | None = None
    decode_bound_tokens_per_s_per_stream: float | None = None
    decode_bandwidth_utilization: float | None = None
    prefill_tokens_per_s: float | None = None
    prefill_source: str | None = None
    prefill_bound_tokens_per_s: float | None = None
    prefill_flops_utilization: float | None = None


class Quantile(Part):
    estimate: float
    bucket_ms: list[float]


class ServerHistogram(Part):
    n: int
    mean: float
    p50: Quantile | None = None
    p99: Quantile | None = None


class ServerFigures(Part):
    """Deltas of the engine's own /metrics between a scrape before the stage and one after it."""

    processed_prompt_tokens: float | None = None  # the prompt tokens the engine computed (llama.cpp: cache misses)
    prompt_tokens: float | None = None  # whole prompts, cached part included
    generation_tokens: float | None = None
    cached_prompt_tokens: float | None = None
    prefix_cache_queries: float | None = None
    prefix_cache_hit_rate: float | None = None
    preemptions: float | None = None
    requests_finished: float | None = None
    ttft_ms: ServerHistogram | None = None
    queue_ms: ServerHistogram | None = None
    prefill_ms: ServerHistogram | None = None
    decode_ms: ServerHistogram | None = None
    e2e_ms: ServerHistogram | None = None
    itl_ms: ServerHistogram | None = None


class ToolCalls(Part):
    requests: int  # successful requests that called a tool
    calls: int
    well_formed: int  # calls with a function name and JSON-object arguments
    well_formed_share: float


class PoolingFigures(Part):
    """Embeddings and rerank requests (bench.clients.pooling): nothing is generated, so the figures are the
    inputs (texts embedded, or documents scored) and the tokens the server processed, over the window."""

    api: str | None = None  # embeddings or rerank
    inputs: int = 0  # inputs of the successful measured requests
    inputs_per_s: float | None = None
    tokens: int = 0  # their prompt tokens (usage, else counted)
    tokens_per_s: float | None = None  # embedded (or scored) tokens per second
    tokens_per_input: float | None = None
    batch_size: Stats = Field(default_factory=Stats)  # inputs per request
    ms_per_input: Stats = Field(default_factory=Stats)  # each request's E2E over its inputs
    dimensions: int | None = None  # embeddings: each vector's length


class RequestSummary(Part):
    """The figures of a set of measured requests (a stage, or the whole run)."""

    requests: RequestCounts = Field(default_factory=RequestCounts)
    window_s: float = 0.0  # measured seconds; over several stages, the union of their windows (no gaps)
    request_throughput_per_s: float | None = None
    output_throughput_tokens_per_s: float | None = None
    total_token_throughput_tokens_per_s: float | None = None
    total_output_tokens: int = 0
    total_prompt_tokens: int = 0
    prefix_cache_hit_rate: float | None = None
    ttft_ms: Stats = Field(default_factory=Stats)
    tpot_ms: Stats = Field(default_factory=Stats)
    itl_ms: Stats = Field(default_factory=Stats)
    e2e_ms: Stats = Field(default_factory=Stats)
    output_tokens_per_s_per_request: Stats = Field(default_factory=Stats)
    prompt_tokens: Stats = Field(default_factory=Stats)
    output_tokens: Stats = Field(default_factory=Stats)
    tokens_source: dict[str, int] = Field(default_factory=dict)
    output_length_differs_from_max_tokens: int = 0
    cut_streams: int = 0
    # ok requests whose first output chunk came in one read with the next (one time, the later one's): where they
    # were apart on the wire, that TTFT is late by the gap between them (the client read it late)
    first_chunk_read_with_the_next: int = 0
    errors: list[ErrorKind] = Field(default_factory=list)
    reasoning_tokens: Stats | None = None  # a reasoning model's thinking tokens per request
    reasoning_token_share: float | None = None  # of the output tokens
    time_to_first_answer_ms: Stats | None = None  # t_first_answer - t_send, past the thinking
    tool_calls: ToolCalls | None = None
    pooling: PoolingFigures | None = None  # embeddings and rerank runs: inputs/s and tokens/s
    client_queue_ms: Stats | None = None  # open loop only
    ttft_from_intended_ms: Stats | None = None
    e2e_from_intended_ms: Stats | None = None


class StageSummary(RequestSummary):
    stage: int
    name: str | None = None
    label: str | None = None
    ci95: Intervals = Field(default_factory=Intervals)
    telemetry: TelemetrySummary = Field(default_factory=TelemetrySummary)
    efficiency: Efficiency | None = None
    slo: SloReport | None = None
    server: ServerFigures | None = None


class MaxSloCompliant(Part):
    stage: int
    label: str | None = None
    request_throughput_per_s: float
    output_throughput_tokens_per_s: float | None = None
    goodput_requests_per_s: float | None = None


class RunSlo(Part):
    thresholds_ms: dict[str, float]
    percentile: float
    max_slo_compliant: MaxSloCompliant | None = None


class Rate(Part):
    cases: int
    passed: int
    success_rate: float | None = None
    ci95: list[float] | None = None  # Wilson score interval


class CheckCount(Part):
    checks: int
    passed: int


class CaseFailure(Part):
    id: str
    tags: list[str] = Field(default_factory=list)
    output: str = ""
    failed: list[str] = Field(default_factory=list)


class CaseConsistency(Part):
    id: str
    tags: list[str] = Field(default_factory=list)
    prompts: int  # the case's own prompt and its answered variants
    passed: int
    consistent: bool
    verdicts: dict[str, bool] = Field(default_factory=dict)  # prompt id -> passed


class Consistency(Part):
    """Consistency under rephrasing: a case is consistent when every answered prompt of it (its own and its
    variants') got the same verdict."""

    cases: int  # cases with at least one answered variant
    consistent: int
    share: float | None = None
    ci95: list[float] | None = None  # Wilson score interval
    consistent_passing: int = 0
    consistent_failing: int = 0
    variants_answered: int = 0
    inconsistent: list[CaseConsistency] = Field(default_factory=list)


class OutputValidity(Part):
    """Outputs that broke a format check (json, a format regex), among answered cases with one; apart from
    wrong answers (a valid format, another check failed)."""

    cases: int
    invalid: int
    rate: float | None = None
    ci95: list[float] | None = None  # Wilson score interval
    wrong_answer: int = 0
    passed: int = 0
    by_kind: dict[str, int] = Field(default_factory=dict)  # not JSON, JSON against the schema, format regex
    invalid_cases: list[str] = Field(default_factory=list)


class Quality(Rate):
    """A golden run's verdict: success rate with its Wilson interval, by tag and check, the failures; how
    the failures split (wrong answer, invalid output, failed request), consistency across variants and the
    invalid-output rate (None where the set has no variants or no format check)."""

    cases_in_set: int = 0
    not_run: list[str] = Field(default_factory=list)
    by_tag: dict[str, Rate] = Field(default_factory=dict)
    by_check: dict[str, CheckCount] = Field(default_factory=dict)
    failures: list[CaseFailure] = Field(default_factory=list)
    golden: dict[str, Any] = Field(default_factory=dict)  # path, sha256, cases, prompts, temperature, seed
    outcomes: dict[str, int] = Field(default_factory=dict)  # passed, wrong answer, invalid output, request failed
    consistency: Consistency | None = None
    output_validity: OutputValidity | None = None


class SearchResult(Part):
    """A max-rate search's answer: the highest rate whose SLOs held, and the bracket that contains the true one."""

    found_rate: float | None = None  # None: not even the lowest rate held
    bracket: list[float | None] = Field(default_factory=list)  # [highest that held, lowest above it that failed]
    steps: list[dict[str, Any]] = Field(default_factory=list)  # every stage measured: stage, rate, compliant
    precision: float
    precision_reached: bool = False


class RunSummary(RequestSummary):
    summary_version: int = SUMMARY_VERSION
    stages: list[StageSummary] = Field(default_factory=list)
    telemetry: TelemetrySummary = Field(default_factory=TelemetrySummary)
    slo: RunSlo | None = None
    search: SearchResult | None = None
    quality: Quality | None = None

    @classmethod
    def load(cls, raw: dict[str, Any]) -> RunSummary:
        """A summary.json of any version (version 1 named the SLO percentile's value by the percentile)."""
        if raw.get("summary_version", 1) < 2:
            for stage in raw.get("stages") or []:
                slo = stage.get("slo")
                for metric in (slo or {}).get("by_metric", {}).values():
                    metric.setdefault("at_percentile", metric.get(f"p{slo['percentile']:g}"))
        return cls.model_validate(raw)

    def to_json(self) -> dict[str, Any]:
        """As summary.json holds it: an infinite value (a percentile over failed requests) is null in JSON."""
        return orjson.loads(orjson.dumps(self.model_dump(mode="json", by_alias=True)))

    def stage(self, index: int) -> StageSummary:
        return next(s for s in self.stages if s.stage == index)
