"""The run spec: one typed, validated, serialisable description of a run.

A `RunSpec` says everything a run needs: the engine and its settings, the model, the workload,
the load plan with its SLOs, telemetry, the client's waiting mode and where results go. It is
built once, from the command line (bench.cli.run), from a YAML or JSON file (`bench run --spec
FILE`), or in Python, and `bench.run.execute(spec)` runs it. A spec holds the user's intent: a
field left as None takes its default when the run starts (e.g. `threads`: physical cores minus
one, on the machine that runs it), and the manifest records what was actually used.

Short forms are accepted wherever a person writes them, and kept in that form when written out:
lengths `128`, `uniform:64:256`, `normal:128:32`; warmup and cooldown `8` (requests) or `5s`;
SLOs `ttft=500ms,tpot=50ms`; lists `1,2,4`. spec -> JSON -> spec gives an equal spec. Error messages
name fields in backticks (`rate`), which the command line turns into the flags that set them (--rate).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

SPEC_VERSION = 1
SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
ARRIVALS = ("constant", "poisson", "gamma")
APIS = ("completions", "chat", "ollama-generate", "ollama-chat", "embeddings", "rerank")
Api = Literal["completions", "chat", "ollama-generate", "ollama-chat", "embeddings", "rerank"]
POOLING_APIS = ("embeddings", "rerank")  # one JSON answer per request, no generated tokens
Arrival = Literal["constant", "poisson", "gamma"]


class Strict(BaseModel):
    """Unknown fields are errors (a typo must not be ignored), and NaN or infinity is never a number."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


# -- short forms ---------------------------------------------------------------------------------
class Length(Strict):
    """A token-length distribution: fixed N, uniform MIN..MAX (inclusive), or normal MEAN, STD (rounded, >= 1)."""

    kind: Literal["fixed", "uniform", "normal"] = "fixed"
    a: float
    b: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("give N, uniform:MIN:MAX or normal:MEAN:STD")
        if isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            return value
        parts = value.strip().split(":")
        try:
            if len(parts) == 1:
                number = float(parts[0])
                if number != int(number):
                    raise ValueError
                return {"kind": "fixed", "a": int(number)}
            if parts[0] in ("uniform", "normal") and len(parts) == 3:
                return {"kind": parts[0], "a": float(parts[1]), "b": float(parts[2])}
        except (ValueError, OverflowError):  # not a number, or infinity
            pass
        raise ValueError(f"{value!r}: give N, uniform:MIN:MAX or normal:MEAN:STD")

    @model_validator(mode="after")
    def _in_range(self) -> Length:
        if self.a < 1 or self.b < 0 or (self.kind == "uniform" and self.b < self.a):
            raise ValueError(f"{self}: lengths must be at least 1, MIN <= MAX and STD >= 0")
        if self.kind == "uniform" and not (self.a.is_integer() and self.b.is_integer()):
            raise ValueError(f"{self}: uniform MIN and MAX are whole token counts")
        return self

    @model_serializer
    def _to_text(self) -> str:
        return str(self)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))

    def upper(self) -> int:
        """A length no sample exceeds in practice (for sizing contexts)."""
        return int(self.a if self.kind == "fixed" else self.b if self.kind == "uniform" else self.a + 4 * self.b)

    def __str__(self) -> str:
        return str(int(self.a)) if self.kind == "fixed" else f"{self.kind}:{self.a:g}:{self.b:g}"


class Amount(Strict):
    """Extra requests before or after a stage's measured ones: N requests, or N seconds (`5s`)."""

    requests: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s?)\s*", value)
        if not match or (not match.group(2) and "." in match.group(1)):
            raise ValueError(f"{value!r}: give a number of requests (8) or of seconds (5s)")
        number = match.group(1)
        return {"seconds": float(number)} if match.group(2) else {"requests": int(number)}

    @model_serializer
    def _to_text(self) -> str:
        return f"{self.seconds:g}s" if self.seconds else str(self.requests)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_slo(value: Any) -> Any:
    """`ttft=500ms,tpot=50ms,e2e=10s` -> thresholds in ms (a mapping is taken as ms already)."""
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        return value
    thresholds = {}
    for part in value.split(","):
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*", part)
        if not match or match.group(1) not in SLO_METRICS:
            raise ValueError(
                f"{value!r}: each item is METRIC=VALUE with a unit, METRIC one of {', '.join(SLO_METRICS)}, "
                "e.g. ttft=500ms,tpot=50ms,e2e=10s"
            )
        thresholds[match.group(1)] = float(match.group(2)) * _UNITS_MS[match.group(3)]
    return thresholds


def _number_list(value: Any) -> Any:
    """`1,2,4` (or one number) -> a list; a list stays a list."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list) and not value:  # a plan of no stages would start an engine and measure nothing
        raise ValueError("expected at least one number, e.g. 1,2,4")
    return value


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


# -- engines -------------------------------------------------------------------------------------
class EngineBase(Strict):
    host: str = Field(default="127.0.0.1", description="address the engine binds")
    port: int | None = Field(default=None, ge=1, le=65535, description="engine port (default: a free one)")
    ready_timeout_s: PositiveFloat = Field(default=300.0, description="how long to wait for the model to answer")


class LlamaCppEngine(EngineBase):
    kind: Literal["llamacpp"] = "llamacpp"
    launcher: Literal["auto", "xllamacpp", "llama-server", "llama-cpp-python"] = "auto"
    server_binary: str | None = Field(default=None, description="llama-server binary (implies that launcher)")
    python: str | None = Field(default=None, description="interpreter for xllamacpp and llama-cpp-python")
    threads: PositiveInt | None = Field(default=None, description="generation threads (default: cores minus one)")
    batch_threads: PositiveInt | None = None
    parallel: PositiveInt | None = Field(default=None, description="slots (default: the plan's most streams)")
    ctx_size: PositiveInt | None = Field(default=None, description="total context shared by the slots")
    gpu_layers: int = Field(default=0, ge=0)
    swa_full: bool | None = Field(
        default=None,
        description="full-size sliding-window cache (default: on when an SWA model's workload reuses prefixes)",
    )
    extra_args: list[str] = Field(default_factory=list)


class VllmEngine(EngineBase):
    kind: Literal["vllm"] = "vllm"
    ready_timeout_s: PositiveFloat = 600.0
    python: str | None = Field(default=None, description="vLLM's interpreter (default .venv-vllm/bin/python)")
    dtype: str = "auto"
    max_model_len: PositiveInt | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: PositiveInt | None = None
    quantization: str | None = None
    max_num_seqs: PositiveInt | None = None
    prefix_caching: bool | None = None
    enforce_eager: bool = False
    cpu_kv_cache_gib: PositiveInt = 1
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _env_pairs(cls, value: Any) -> Any:
        if isinstance(value, list):
            pairs = {}
            for item in value:
                name, sep, setting = str(item).partition("=")
                if not sep or not name:
                    raise ValueError(f"{item!r}: give NAME=VALUE")
                pairs[name] = setting
            return pairs
        return value


class OllamaEngine(EngineBase):
    kind: Literal["ollama"] = "ollama"
    binary: str = "ollama"
    tag: str | None = Field(
        default=None,
        description="a model Ollama already has, instead of the catalog's GGUF (a derived model carries the settings)",
    )
    threads: PositiveInt | None = Field(default=None, description="num_thread (default: Ollama's own)")
    parallel: PositiveInt | None = Field(
        default=None, description="OLLAMA_NUM_PARALLEL (default: the plan's most streams)"
    )
    ctx_size: PositiveInt | None = Field(
        default=None, description="total context over the slots; Ollama gets num_ctx = ctx_size / parallel per request"
    )
    gpu_layers: int = Field(default=0, ge=0, description="num_gpu (0: Ollama's own placement)")
    keep_alive: str = "10m"
    openai_compatible: bool = False


class EndpointEngine(Strict):
    """A server that is already running, a hosted API included; nothing is launched."""

    kind: Literal["endpoint"] = "endpoint"
    url: str
    api_key_env: str | None = Field(default=None, description="the environment variable holding the API key")
    ready_timeout_s: PositiveFloat = 300.0


EngineSpec = Annotated[LlamaCppEngine | VllmEngine | OllamaEngine | EndpointEngine, Field(discriminator="kind")]
ENGINE_KINDS = ("llamacpp", "vllm", "ollama")  # the launched ones; "endpoint" attaches


# -- workload and load ---------------------------------------------------------------------------
class WorkloadSpec(Strict):
    """What each request asks: synthetic prompts of given lengths, a prompt file, or a golden set."""

    input_tokens: Length = Length(a=128)
    output_tokens: Length = Length(a=64)
    prefix_count: int = Field(default=0, ge=0)
    prefix_tokens: int = Field(default=0, ge=0)
    turns: PositiveInt = 1
    prompts: Path | None = None
    golden: Path | None = None
    ignore_eos: bool | None = Field(default=None, description="default: True, except for golden sets")
    temperature: float = Field(default=0.0, ge=0)
    trace: Path | None = Field(default=None, description="replay arrivals and lengths from a trace file")
    trace_speed: PositiveFloat = Field(default=1.0, description="2 replays the trace twice as fast")
    trace_window: str | None = Field(default=None, description="START:END seconds of the trace to take")
    trace_block_tokens: PositiveInt = Field(default=512, description="prompt tokens per Mooncake hash id")
    batch_size: list[PositiveInt] | None = Field(
        default=None,
        description="embeddings and rerank: inputs (texts, or documents) per request; a list runs one stage each",
    )
    query_tokens: PositiveInt = Field(default=16, description="rerank: the query's length (documents: input_tokens)")

    _batches = field_validator("batch_size", mode="before")(classmethod(lambda cls, v: _number_list(v)))

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if (self.prefix_count > 0) != (self.prefix_tokens > 0):
            raise ValueError("`prefix_count` and `prefix_tokens` go together (N prefixes of P tokens)")
        if self.prompts is not None and self.golden is not None:
            raise ValueError("`golden` and `prompts` both give the prompts; use one")
        if self.trace is not None and (
            self.prompts is not None or self.golden is not None or self.turns > 1 or self.prefix_count
        ):
            raise ValueError(
                "`trace` gives the prompts' lengths, arrivals and shared prefixes; "
                "leave out `prompts`, `golden`, `turns`, `prefix_count`"
            )
        if self.trace is None and (self.trace_speed != 1.0 or self.trace_window or self.trace_block_tokens != 512):
            raise ValueError("`trace_speed`, `trace_window` and `trace_block_tokens` shape a `trace`; give one")
        if (self.prompts is not None or self.golden is not None) and (self.turns > 1 or self.prefix_count):
            raise ValueError("a prompt file gives each prompt whole; leave out `turns` and `prefix_count`")
        shortest = self.input_tokens.a if self.input_tokens.kind != "normal" else None
        if self.kind == "synthetic" and self.prefix_count and shortest is not None and shortest <= self.prefix_tokens:
            raise ValueError(
                f"each prompt is a shared prefix and text of its own: `prefix_tokens` {self.prefix_tokens} must be "
                f"below the shortest `input_tokens` ({shortest:g})"
            )
        if (self.prompts is not None or self.golden is not None) and self.output_tokens.kind != "fixed":
            raise ValueError('with a prompt file, give `output_tokens` as one number (or "max_tokens" per line)')
        if self.golden is not None and self.temperature != 0:
            raise ValueError(f"a golden set runs with fixed decoding; leave out `temperature` {self.temperature:g}")
        if self.batch_size is not None and (self.kind != "synthetic" or self.turns > 1 or self.prefix_count):
            raise ValueError("`batch_size` batches synthetic inputs; leave out prompts, trace and turns")
        return self

    @property
    def kind(self) -> Literal["synthetic", "file", "golden", "trace"]:
        return "golden" if self.golden else "file" if self.prompts else "trace" if self.trace else "synthetic"

    @property
    def asks_ignore_eos(self) -> bool:
        return self.kind != "golden" if self.ignore_eos is None else self.ignore_eos


class LoadSpec(Strict):
    """The load plan: closed-loop streams, open-loop rates, or a sweep; every stage bounded."""

    concurrency: list[PositiveInt] = Field(default_factory=lambda: [4])
    rate: list[PositiveFloat] | None = None
    arrival: Arrival = "poisson"
    burstiness: PositiveFloat = 1.0
    max_concurrency: PositiveInt | None = None
    sweep: PositiveInt | None = None
    requests: PositiveInt | None = Field(default=None, description="default 64; 1000 as a bound with duration_s")
    duration_s: PositiveFloat | None = None
    warmup: Amount | None = Field(default=None, description="default: one request per closed-loop stream")
    cooldown: Amount | None = None
    max_errors: int | None = Field(default=None, ge=0)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    slo: dict[Literal["ttft", "tpot", "itl", "e2e"], PositiveFloat] = Field(default_factory=dict)
    slo_percentile: float = Field(default=99.0, gt=0, le=100)
    stop_slo_fraction: float = Field(default=0.5, ge=0, le=1)
    request_timeout_s: PositiveFloat | None = Field(default=None, description="default: from the workload")
    ramp_s: PositiveFloat | None = Field(default=None, description="raise each stage's load linearly over this long")
    ramp_from: PositiveFloat | None = Field(default=None, description="the ramp's start: streams or req/s (1 / 0)")
    measure_ramp: bool = Field(default=False, description="count requests sent during the ramp as measured")
    search_rate: tuple[PositiveFloat, PositiveFloat] | None = Field(
        default=None, description="LOW:HIGH: the highest arrival rate between them whose SLOs hold, by bisection"
    )
    search_precision: float = Field(default=0.05, gt=0, lt=1, description="stop when the bracket is this narrow")
    workers: PositiveInt = Field(
        default=1, description="load generators; above 1, Ray actors drive an endpoint from several hosts"
    )
    ray_address: str | None = Field(
        default=None,
        description="the Ray cluster of the load workers (default: a private Ray instance here); with one worker, "
        "the load is generated by one actor there",
    )

    @property
    def on_ray(self) -> bool:
        """The load is generated by Ray actors (several, or one on a given cluster), not in this process."""
        return self.workers > 1 or self.ray_address is not None

    _lists = field_validator("concurrency", "rate", mode="before")(classmethod(lambda cls, v: _number_list(v)))
    _slo = field_validator("slo", mode="before")(classmethod(lambda cls, v: parse_slo(v)))

    @field_validator("search_rate", mode="before")
    @classmethod
    def _bounds(cls, value: Any) -> Any:
        if isinstance(value, str):
            low, sep, high = value.partition(":")
            if not sep:
                raise ValueError(f"{value!r}: give LOW:HIGH in requests/s, e.g. 0.5:8")
            return (low, high)
        return value

    @field_validator("search_precision", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        return float(value.rstrip("%")) / 100 if isinstance(value, str) and value.endswith("%") else value

    @model_validator(mode="after")
    def _consistent(self) -> LoadSpec:
        plans = [name for name in ("rate", "sweep", "search_rate") if getattr(self, name) is not None]
        if len(plans) > 1:
            raise ValueError(f"`{plans[0]}` and `{plans[1]}` are different plans; give one of them")
        if self.search_rate is not None:
            low, high = self.search_rate
            if low >= high:
                raise ValueError("`search_rate` LOW:HIGH needs LOW below HIGH")
            if not self.slo:
                raise ValueError("`search_rate` finds the highest rate whose SLOs hold: give `slo` too")
        closed_loop = self.rate is None and self.search_rate is None and self.sweep is None
        if closed_loop and self.ramp_from is not None and not self.ramp_from.is_integer():
            raise ValueError(f"`ramp_from` {self.ramp_from:g}: a closed loop ramps from a whole number of streams")
        if self.arrival != "gamma" and self.burstiness != 1.0:
            raise ValueError("`burstiness` shapes gamma arrivals; set `arrival` to gamma")
        return self


class TelemetrySpec(Strict):
    interval_s: PositiveFloat = 1.0


class ClientSpec(Strict):
    busy_poll: bool = False


class OutputSpec(Strict):
    results_dir: Path = Path("results")
    run_id: str | None = Field(default=None, description="default: time, engine, model and a random suffix")

    @field_validator("run_id")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value)):
            raise ValueError(f"{value!r}: a run id is a folder name: letters, digits, '.', '_' and '-', no '/'")
        return value


class RunSpec(Strict):
    spec_version: Literal[1] = SPEC_VERSION
    engine: EngineSpec
    model: str = Field(min_length=1, description="catalog model; with an endpoint, the served model's name")
    catalog: Path | None = None
    api: Api | None = Field(default=None, description="default: the catalog's API for the model, else chat")
    seed: int = 0
    workload: WorkloadSpec = WorkloadSpec()
    load: LoadSpec = LoadSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    client: ClientSpec = ClientSpec()
    hardware: str | None = Field(default=None, description="models.yaml hardware entry for the roofline")
    calibration: Path | None = Field(default=None, description="a calibration.json from `bench calibrate`")
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _load_workers(self) -> RunSpec:
        if self.load.on_ray and self.engine.kind != "endpoint":
            raise ValueError(
                "load workers (--load-workers, --ray) drive a running server from client hosts of a Ray cluster; "
                "give --endpoint URL (a launched engine listens on this machine's loopback)"
            )
        batches = self.workload.batch_size
        if batches is not None and self.api is not None and self.api not in POOLING_APIS:
            raise ValueError(f"`batch_size` is the inputs per embeddings or rerank request; --api {self.api} has none")
        dynamic = [n for n in ("sweep", "search_rate") if getattr(self.load, n) is not None]
        if batches is not None and len(batches) > 1 and dynamic:
            raise ValueError(f"a `{dynamic[0]}` plan runs one batch size; give `batch_size` one value")
        return self

    @property
    def attached(self) -> bool:
        return self.engine.kind == "endpoint"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)


# what a trace gives itself (arrivals, lengths): these would be dropped beside it without a word
TRACE_GIVES = (
    "load.concurrency",
    "load.rate",
    "load.sweep",
    "load.search_rate",
    "load.requests",
    "load.arrival",
    "load.burstiness",
    "load.ramp_s",
    "load.ramp_from",
    "load.measure_ramp",
    "workload.input_tokens",
    "workload.output_tokens",
)


def field_at(data: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of a spec's raw data (`load.rate`); KeyError where it is not given."""
    for part in path.split("."):
        if not isinstance(data, dict):
            raise KeyError(path)
        data = data[part]
    return data


def has_field(data: dict[str, Any], path: str) -> bool:
    try:
        field_at(data, path)
        return True
    except KeyError:
        return False


def dropped_beside_plan(data: dict[str, Any]) -> tuple[str, list[str]] | None:
    """Settings a person gave beside a plan that would ignore them, as (the plan's path, the dropped paths):
    arrivals and lengths beside a trace, or closed-loop streams beside an open-loop plan. Read from raw data
    (the command line's, a spec file's, a matrix cell's): a stored spec has its defaults filled in, streams
    beside a rate included, and loads as it was written."""
    if has_field(data, "workload.trace") and field_at(data, "workload.trace") is not None:
        given = [path for path in TRACE_GIVES if has_field(data, path)]
        if given:
            return "workload.trace", given
    load = data.get("load") if isinstance(data.get("load"), dict) else {}
    open_loop = next((f"load.{k}" for k in ("rate", "search_rate") if load.get(k) is not None), None)
    if open_loop is not None and "concurrency" in load:
        return open_loop, ["load.concurrency"]
    return None
