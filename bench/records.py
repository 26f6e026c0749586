"""What a run directory holds, as types: a request record, a telemetry sample, a stage as it ran, and the
manifest. Each is built in one place (the client builds request records, the sampler telemetry samples,
bench.run the manifest); everything above reads attributes, never string keys.

Request records and telemetry samples are slotted dataclasses: one is written per request or sample,
and orjson serialises them directly. The manifest is a pydantic model. `bench/schemas/*.json` are their
JSON Schemas (`python -m bench.schemas` writes them; a test checks they are current), so a run directory
can be read without this package.

Times are `time.perf_counter_ns()` minus the manifest's clock anchor (`clock.anchor_perf_counter_ns`).

Schema versions: 1 is the first release (its manifest kept the stages, SLOs and workload under `spec`);
2 adds the typed run spec. Version 1 directories load: `Manifest.load` moves their fields into place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bench.spec import RunSpec

SCHEMA_VERSION = 2
Phase = Literal["warmup", "measured", "cooldown"]
Status = Literal["ok", "error", "cancelled"]
RunStatus = Literal["complete", "incomplete", "failed"]
# tokenizer+template: a chat prompt counted as the server renders it (its chat template applied), output by tokenizer
TokensSource = Literal["usage", "tokenizer", "tokenizer+template", "chunks"]


@dataclass(slots=True)
class RequestRecord:
    """One request, as the client saw it. Written to requests.jsonl the moment it ends.

    output_times_ns holds the arrival of every streamed chunk that carried output (also when the
    stream was cut: `cut` is then true and `error` says how). Token counts come from the server's
    usage, else the served model's tokenizer, else the number of chunks (`tokens_source`).
    """

    request_id: int
    stage: int = 0
    phase: Phase = "measured"
    status: Status = "ok"
    error: str | None = None
    worker: int = 0
    t_intended_ns: int | None = None  # open loop: when the schedule meant to send it
    t_send_ns: int | None = None
    output_times_ns: list[int] = field(default_factory=list)
    t_end_ns: int | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tokens_source: TokensSource | None = None
    cached_prompt_tokens: int | None = None
    max_tokens: int | None = None
    prompt_tokens_expected: int | None = None
    finish_reason: str | None = None
    http_status: int | None = None
    connect_ns: int | None = None
    cut: bool = False  # the stream ended before its end (connection closed, timeout): what came is kept
    output_text: str | None = None  # the answer (a reasoning model's thinking is in reasoning_text)
    reasoning_text: str | None = None
    reasoning_tokens: int | None = None  # of output_tokens, those spent reasoning (usage, else counted)
    t_first_reasoning_ns: int | None = None
    t_first_answer_ns: int | None = None  # the first chunk of the answer: text or a tool call
    tool_calls: list[dict[str, Any]] | None = None  # {"id", "name", "arguments" (JSON text as streamed)}
    server_timings: dict[str, Any] | None = None  # the engine's own per-request figures (llama.cpp, Ollama)
    conversation: int | None = None
    turn: int | None = None
    case_id: str | None = None  # a prompt file's or golden set's id
    ramp_level: float | None = None  # sent during a ramp: the streams running, or the arrival rate, then
    inputs: int | None = None  # embeddings and rerank: the texts embedded, or documents scored, in this request
    dimensions: int | None = None  # embeddings: the length of each vector returned

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RequestRecord:
        """A record read back from requests.jsonl (any schema version: unknown keys are dropped). A field
        missing or not of its type raises pydantic's ValidationError, naming it."""
        return _REQUEST_ROW.validate_python(row)

    @property
    def measured(self) -> bool:
        return self.phase == "measured"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_REQUEST_ROW = TypeAdapter(RequestRecord)


@dataclass(slots=True)
class GpuSample:
    index: int
    memory_used_bytes: int | None = None
    utilization_percent: float | None = None
    memory_utilization_percent: float | None = None
    power_w: float | None = None
    energy_mj: int | None = None  # the board's total-energy counter, where it has one
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    temperature_c: int | None = None
    throttle_reasons: list[str] | None = None
    engine_memory_bytes: int | None = None  # the engine's own use: per process, or the device's rise since start
    engine_memory_source: str | None = None  # "per-process" or "device delta since engine start"


@dataclass(slots=True)
class TelemetrySample:
    """One row of telemetry.jsonl: the engine's process tree, the client, the system and each GPU."""

    t_ns: int
    engine_processes: int = 0
    engine_rss_bytes: int | None = None
    engine_cpu_percent: float | None = None  # 100 = one core
    client_cpu_percent: float | None = None
    system_cpu_percent: float | None = None
    system_memory_used_bytes: int | None = None
    gpus: list[GpuSample] | None = None
    engine_gauges: dict[str, float | None] | None = None  # the engine's own gauges (KV cache, queue)
    sample_cost_us: float | None = None  # what taking this sample cost

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TelemetrySample:
        """A sample read back from telemetry.jsonl (unknown keys dropped; a field missing or not of its type
        raises pydantic's ValidationError, naming it)."""
        return _TELEMETRY_ROW.validate_python(row)


_TELEMETRY_ROW = TypeAdapter(TelemetrySample)


@dataclass(slots=True)
class EngineMetricsSnapshot:
    """One row of engine-metrics.jsonl: the engine's /metrics samples (`name{labels}` -> value) at a stage's
    start or end, scraped when no measured request is in flight."""

    stage: int
    when: Literal["start", "end"]
    samples: dict[str, float | None]  # a NaN reading is written as null
    t_ns: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EngineMetricsSnapshot:
        return _ENGINE_METRICS_ROW.validate_python(row)


_ENGINE_METRICS_ROW = TypeAdapter(EngineMetricsSnapshot)


class CaseVerdictKeys(BaseModel):
    """The keys of one eval.json case that bench check, route and the MDR read (quality.verdict writes it
    with more, which are kept)."""

    model_config = ConfigDict(extra="allow")
    id: str
    request_id: int
    passed: bool
    variant_of: str | None = None
    tags: list[str] = Field(default_factory=list)
    format: Literal["valid", "invalid"] | None = None


class EvaluationFile(BaseModel):
    """eval.json: a golden run's quality summary and each prompt's verdict."""

    summary: dict[str, Any]
    cases: list[CaseVerdictKeys]


# -- the manifest --------------------------------------------------------------------------------
class Record(BaseModel):
    """A manifest part: extra keys are kept (drivers and older versions add their own)."""

    model_config = ConfigDict(extra="allow")


class StageOutcome(Record):
    stop_reason: str | None = None  # why the stage ended before its bounds, or None
    sent: dict[str, int] = Field(default_factory=dict)  # requests started per phase
    prompts_made_during_stage: int = 0


class StageRecord(Record):
    """A stage as it started (its definition, with every default resolved) and, once ended, its outcome."""

    index: int
    name: str
    kind: Literal["closed-loop", "open-loop"]
    label: str
    schedule: dict[str, Any]
    requests: int
    duration_s: float | None = None
    warmup_requests: int = 0
    warmup_s: float = 0.0
    cooldown_requests: int = 0
    cooldown_s: float = 0.0
    max_errors: int | None = None
    max_error_rate: float | None = None
    batch_size: int | None = None  # embeddings and rerank: inputs per request in this stage
    outcome: StageOutcome | None = None


class SloTargets(Record):
    thresholds_ms: dict[str, float]
    percentile: float = 99.0


class WorkloadRecord(Record):
    """The workload as it ran: synthetic lengths, or the prompt file or golden set with its digest."""

    kind: Literal["synthetic", "file", "golden", "trace"]
    input_tokens: str | None = None
    output_tokens: str | None = None
    prefix_count: int = 0
    prefix_tokens: int = 0
    turns: int = 1
    path: str | None = None
    sha256: str | None = None
    cases: int | None = None
    copy_: str | None = Field(default=None, alias="copy")  # the run's own copy of a golden set
    trace: dict[str, Any] | None = None  # a trace's format, requests, span, capped count, speed and window
    batch_size: list[int] | None = None  # embeddings and rerank: the inputs per request, one stage each
    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)


class ModelRecord(Record):
    name: str
    catalog: str | None = None
    entry: dict[str, Any] | None = None
    file: dict[str, Any] | None = None  # path, sha256 and size (a folder: every file's)


class EngineRecord(Record):
    """What ran: the driver's own record (launcher, version and build, argv, pid, settings, limits)."""

    engine: str
    launcher: str | None = None
    version: Any = None
    argv: list[str] | None = None
    pid: int | None = None
    base_url: str | None = None
    load_time_s: float | None = None
    exit_code: int | None = None
    settings: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None


class HardwareRecord(Record):
    cpu_model: str | None = None
    cpu_flags: list[str] = Field(default_factory=list)
    cpu_cores_physical: int | None = None
    cpu_cores_logical: int | None = None
    cpus_usable: int | None = None
    memory_total_bytes: int | None = None
    os: str | None = None
    machine: str | None = None
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    gpu_note: str | None = None


class ClockRecord(Record):
    anchor_perf_counter_ns: int
    anchor_unix_ns: int
    note: str = "record times are perf_counter_ns minus the anchor; add anchor_unix_ns for wall time"


class Manifest(Record):
    """manifest.json: what ran and how it ended. `incomplete` from the first write; `complete` only at a
    clean end (every stage ended by its bounds, the engine alive to the end); `failed` when nothing was
    measured."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: RunStatus = "incomplete"
    incomplete_reason: str | None = "the run did not finish (still running, or the rig itself was killed)"
    exit_code: int | None = None
    error_file: str | None = None  # a file in the run directory holding an internal error's traceback
    started_at: str
    ended_at: str | None = None
    command: list[str] = Field(default_factory=list)
    spec: RunSpec | None = None  # None only for schema version 1 runs
    api: str | None = None
    engine_kind: str | None = None
    workload: WorkloadRecord | None = None
    slo: SloTargets | None = None
    seed: int = 0
    temperature: float = 0.0
    ignore_eos: bool | None = None
    busy_poll: bool = False
    request_timeout_s: float | None = None
    sweep_rates: int = 0
    stages: list[StageRecord] = Field(default_factory=list)
    plan_stopped_early: str | None = None
    search: dict[str, Any] | None = None  # a max-rate search's range, precision, percentile, requests per stage
    efficiency_inputs: dict[str, Any] = Field(default_factory=dict)
    model: ModelRecord | None = None
    engine: EngineRecord | None = None
    clock: ClockRecord | None = None
    hardware: HardwareRecord = Field(default_factory=HardwareRecord)
    software: dict[str, Any] = Field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    # how the client read and timed this run's sockets (HttpClient.read_figures: read path, reads, late reads, first
    # reads made ahead of the loop), warm-up included; None under Ray (its workers' clients are their own)
    client_reads: dict[str, Any] | None = None

    @classmethod
    def load(cls, raw: dict[str, Any]) -> Manifest:
        """A manifest of any schema version."""
        if raw.get("schema_version", 1) < 2:
            raw = _from_version_1(raw)
        return cls.model_validate(raw)

    @property
    def golden(self) -> bool:
        """A golden-set run: its verdicts are in eval.json."""
        return self.workload is not None and self.workload.kind == "golden"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _from_version_1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the resolved run under `spec` (an untyped dict); version 2 keeps the typed spec there."""
    old = dict(raw.get("spec") or {})
    out = {k: v for k, v in raw.items() if k != "spec"}
    slo = old.get("slo")
    out.update(
        schema_version=1,
        engine_kind=old.get("engine"),
        api=old.get("api"),
        workload=old.get("workload"),
        slo=slo if slo else None,
        seed=old.get("seed", 0),
        temperature=old.get("temperature", 0.0),
        ignore_eos=old.get("ignore_eos"),
        busy_poll=old.get("busy_poll", False),
        request_timeout_s=old.get("request_timeout_s"),
        sweep_rates=old.get("sweep_rates", 0),
        stages=old.get("stages") or [],
        plan_stopped_early=old.get("plan_stopped_early"),
        efficiency_inputs=old.get("efficiency_inputs") or {},
        legacy_spec=old,
    )
    return out
