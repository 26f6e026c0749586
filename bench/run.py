"""Running a spec: `execute(spec)` checks it, starts the engine, runs the plan's stages, writes the run
directory, stops the engine, and returns what happened. The command line, a spec file and Python all
come here (bench.cli only builds the spec and prints).

The flow, in order: prepare (every check; nothing started or written) -> create the run directory and
its manifest (`incomplete` from the first write) -> engine up -> samplers -> stages -> engine down ->
summary -> status from evidence.

Status from positive evidence: `complete` only when every stage ended by its own bounds (or the plan's
own stop rule), the engine lived to the end (read from its reaped process) and nothing escaped;
`failed` when no measured request succeeded; otherwise `incomplete` with the reason.

Exit codes: 0 complete; 1 an internal error (its traceback in the run directory's error.txt) or a disk
that filled; 2 bad input, nothing started; 3 the engine failed to start or died; 4 the run ended but
measured nothing, or more requests failed than allowed; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import math
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis import analyse
from bench.catalog import Catalog, ModelEntry, get_model, load_catalog, resolve_model_path, verified_digest
from bench.clients.dialects import dialect
from bench.clients.http import HttpClient, perf_ns
from bench.clients.streaming import StreamingClient
from bench.console import RunDisplay
from bench.engines.base import CHARS_PER_TOKEN, EngineDriver, LaunchContext
from bench.engines.prometheus import fetch, parse
from bench.engines.registry import make_driver
from bench.errors import BenchError, EngineError, UsageError
from bench.hardware import inventory, software
from bench.load.plan import LoadPlan, Stage, build_plan
from bench.load.runner import LoadRunner, keep_loop_hot, run_event_loop
from bench.load.schedules import TraceArrivals
from bench.load.trace import Trace, load_trace
from bench.load.workload import WorkSource, load_prompt_file
from bench.metrics.requests import slo_report, summarize_requests, table_of
from bench.modelshape import read_shape
from bench.quality import golden_digest, load_golden
from bench.records import (
    ClockRecord,
    EngineRecord,
    HardwareRecord,
    Manifest,
    ModelRecord,
    RequestRecord,
    SloTargets,
    StageOutcome,
    WorkloadRecord,
)
from bench.redact import recorded_argv, recorded_command, recorded_env
from bench.results import (
    ENGINE_METRICS,
    ERROR_FILE,
    EVAL,
    GOLDEN_COPY,
    REQUESTS,
    TELEMETRY,
    JsonlAppender,
    RunDirectory,
    read_json,
    write_atomic,
    write_json_atomic,
)
from bench.roofline import HardwareLimits, cpu_limits
from bench.spec import POOLING_APIS, RunSpec
from bench.summary import RunSummary, StageSummary
from bench.telemetry.nvml import open_nvml
from bench.telemetry.process import TelemetrySampler

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_ENGINE, EXIT_NOT_MEASURED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = {
    EXIT_OK: "the run completed: every stage ended by its bounds and the engine lived to the end",
    EXIT_INTERNAL: "an internal error (its traceback is in the run directory's error.txt), a full disk, or the "
    "load's own machines could not go on (a limit such as ports or file descriptors, a lost Ray load worker)",
    EXIT_USAGE: "bad input (a flag, file, catalog entry, model file or busy port); nothing was started, unless "
    "only the engine could find it (a refused API key, a prompt it cannot fit): then the run directory says why",
    EXIT_ENGINE: "the engine failed to start or died during the run (what was measured is kept)",
    EXIT_NOT_MEASURED: "the run ended but no measured request succeeded, more failed than allowed, or a plan "
    "stopped after a stage that failed more than half its requests",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C or SIGTERM (what was measured is kept)",
}
CLOSED_LOOP_REQUESTS_PER_STREAM_SECOND = 4  # a guess for sizing time-based phases; more are made if needed
CHAT_TEMPLATE_TOKENS = 64  # room for a chat template's own tokens around a prompt
# the default request timeout: REQUEST_TIMEOUT_FACTOR x a slow machine's time for the longest request
SLOW_PREFILL_TOKENS_PER_S, SLOW_DECODE_TOKENS_PER_S, REQUEST_TIMEOUT_FACTOR, REQUEST_TIMEOUT_FLOOR_S = 500, 5, 10, 30


class Interrupted(BaseException):
    """SIGINT or SIGTERM outside the event loop; a BaseException so nothing swallows it."""


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def _install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)


def _ignore_signals() -> None:
    """While results are being finalised: a second Ctrl-C must not leave half-written files."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _signal_handlers() -> dict[int, Any]:
    """The caller's SIGINT and SIGTERM handlers, given back when a run ends (a caller that runs several, or a
    test process, keeps its Ctrl-C, and its children do not inherit an ignored SIGTERM)."""
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class RunResult:
    run_dir: RunDirectory
    manifest: Manifest
    summary: RunSummary
    exit_code: int
    message: str | None = None  # one line on what went wrong, for the person who ran it

    @property
    def path(self) -> Path:
        return self.run_dir.path


# -- prepare: every check, before anything starts ------------------------------------------------
@dataclass
class Prepared:
    spec: RunSpec
    catalog: Catalog
    catalog_path: Path
    entry: ModelEntry | None
    model_path: Path | None
    api: str
    plan: LoadPlan
    rows: list[dict[str, Any]] | None  # prompt rows (a prompt file's, or a golden set's cases)
    workload: WorkloadRecord
    driver: EngineDriver
    request_timeout_s: float
    request_timeout_basis: str
    run_id: str
    calibration: dict[str, Any] | None
    digest: dict[str, Any] | None = None
    hardware: HardwareRecord = field(default_factory=HardwareRecord)
    gpus: Any = None
    efficiency_inputs: dict[str, Any] = field(default_factory=dict)
    trace: Trace | None = None


def _golden_rows(path: Path) -> tuple[list[dict[str, Any]], WorkloadRecord]:
    cases = load_golden(path, f"--golden {path}")
    rows = [
        {
            "id": c.id,
            "max_tokens": c.max_tokens,
            **({"prompt": c.prompt} if c.prompt is not None else {"messages": c.messages}),
        }
        for c in cases
    ]
    return rows, WorkloadRecord(
        kind="golden", path=str(path), sha256=golden_digest(path), cases=len(cases), copy=GOLDEN_COPY
    )


def _longest_request(
    spec: RunSpec, rows: list[dict[str, Any]] | None, trace: Trace | None, chat: bool
) -> tuple[int, int]:
    """(prompt, output) tokens of the longest request, by the workload (a prompt file's length is estimated
    from its characters, generously; a chat template adds its own tokens)."""
    w = spec.workload
    if trace is not None:
        row = max(trace.rows, key=lambda r: r.input_tokens + r.output_tokens)
        return row.input_tokens, row.output_tokens
    if rows is None:
        return w.input_tokens.upper() * w.turns, w.output_tokens.upper() * w.turns
    default_output = int(w.output_tokens.a)
    sizes = []
    for row in rows:
        text = row["prompt"] if "prompt" in row else "".join(str(m.get("content", "")) for m in row["messages"])
        prompt = math.ceil(len(text) / CHARS_PER_TOKEN * 1.5) + (CHAT_TEMPLATE_TOKENS if chat else 0)
        sizes.append((prompt, row.get("max_tokens") or row.get("output_tokens") or default_output))
    return max(sizes, key=sum)


def _check_results_dir(root: Path) -> None:
    """The results folder is, or can be made, a folder that takes files; else a UsageError saying why.
    Nothing is created here: the folder nearest to it that exists is tried with a temporary file."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--results-dir {root}: {existing} is a file, not a folder; choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".bench-write-check-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"--results-dir {root}: cannot write in {existing} ({exc.strerror or exc}); choose a writable folder"
        ) from None


def _calibration_figures(path: Path | None, results_dir: Path, streams: int, busy_poll: bool) -> dict[str, Any]:
    """Which calibration covers this run and the client's error bound it gives, to sit in the manifest: the
    --calibration file, else the newest `bench calibrate` report of this machine under --results-dir, else
    a record that none does (bench.calibrate.calibration_cover says what each field means)."""
    from bench.calibrate import calibration_cover, find_calibration, no_calibration

    how = "given"
    if path is None:
        path, how = find_calibration(results_dir, busy_poll, streams) if results_dir.is_dir() else None, "automatic"
        if path is None:
            return no_calibration(streams, busy_poll, results_dir)
    report = read_json(path)
    if not isinstance(report.get("shapes"), list):
        raise UsageError(f"--calibration {path}: not a calibration.json written by `bench calibrate`")
    return calibration_cover(report, path, streams, busy_poll, how)


def _datasheet_limits(name: str, entry) -> HardwareLimits:
    """A `hardware:` entry of the catalog in the roofline's units."""
    flops = entry.peak_tflops * 1e12 if entry.peak_tflops else None
    return HardwareLimits(name, entry.memory_bandwidth_gb_s * 1e9, flops, f"{entry.source} (as of {entry.as_of})")


def _efficiency_inputs(spec: RunSpec, p: Prepared) -> dict[str, Any]:
    """The model's shape and the hardware's limits that the roofline compares a run against."""
    inputs: dict[str, Any] = {"model_shape": None, "hardware_limits": None, "notes": []}
    if p.model_path is None:
        inputs["notes"].append("attach mode: the model's weights and hardware are not local; no efficiency figures")
        return inputs
    inputs["model_shape"] = read_shape(p.model_path).describe()  # checked in prepare: readable here
    gpu_layers = getattr(spec.engine, "gpu_layers", 0)
    if spec.hardware:
        limits = _datasheet_limits(spec.hardware, p.catalog.hardware[spec.hardware])
    elif gpu_layers > 0 and p.hardware.gpus:
        name = p.hardware.gpus[0].get("name") or ""
        matches = [(k, e) for k, e in p.catalog.hardware.items() if any(m.lower() in name.lower() for m in e.match)]
        if not matches:
            inputs["notes"].append(f"GPU {name!r} is not in {p.catalog_path} hardware; add it (or pass --hardware)")
            return inputs
        limits = _datasheet_limits(*matches[0])
    else:
        threads = getattr(getattr(p.driver, "settings", None), "threads", None) or p.hardware.cpu_cores_physical or 1
        limits = cpu_limits(threads, p.hardware.cpu_model or "CPU")
        inputs["notes"].append("CPU run: bandwidth measured now; no peak FLOP/s, so no prefill utilization")
    inputs["hardware_limits"] = limits.describe()
    return inputs


def _per_slot_context(engine) -> int | None:
    """The context each request gets when the user sized it (--ctx-size over --parallel), else None."""
    ctx, parallel = getattr(engine, "ctx_size", None), getattr(engine, "parallel", None)
    return ctx // (parallel or 1) if ctx else None


def default_request_timeout(prompt: int, output: int) -> tuple[float, str]:
    """A generous multiple of the time the longest request takes on a slow machine, with a floor."""
    expected = prompt / SLOW_PREFILL_TOKENS_PER_S + output / SLOW_DECODE_TOKENS_PER_S
    timeout = max(REQUEST_TIMEOUT_FLOOR_S, math.ceil(REQUEST_TIMEOUT_FACTOR * expected))
    return float(timeout), (
        f"{REQUEST_TIMEOUT_FACTOR} x the {expected:.0f} s a {prompt}+{output}-token request "
        f"takes at {SLOW_PREFILL_TOKENS_PER_S} prompt and {SLOW_DECODE_TOKENS_PER_S} output "
        f"tok/s, at least {REQUEST_TIMEOUT_FLOOR_S} s"
    )


def _workload_input(
    spec: RunSpec, window: int | None, display: RunDisplay
) -> tuple[list[dict[str, Any]] | None, WorkloadRecord, Trace | None]:
    """The workload's rows (a golden set or prompt file), its record for the manifest, and its trace (capped
    to the context each request gets)."""
    workload = spec.workload
    if workload.golden is not None:
        rows, record = _golden_rows(workload.golden)
        return rows, record, None
    if workload.prompts is not None:
        record = WorkloadRecord(kind="file", path=str(workload.prompts), output_tokens=str(workload.output_tokens))
        return load_prompt_file(workload.prompts), record, None
    if workload.trace is None:
        record = WorkloadRecord(
            kind="synthetic",
            input_tokens=str(workload.input_tokens),
            output_tokens=str(workload.output_tokens),
            prefix_count=workload.prefix_count,
            prefix_tokens=workload.prefix_tokens,
            turns=workload.turns,
        )
        return None, record, None
    slot = _per_slot_context(spec.engine)
    limit = min(x for x in (window, slot) if x) if (window or slot) else None
    trace = load_trace(workload.trace, workload.trace_speed, workload.trace_window, limit)
    replay = {
        "speed": workload.trace_speed,
        "window": workload.trace_window,
        "block_tokens": workload.trace_block_tokens,
    }
    record = WorkloadRecord(
        kind="trace", path=str(workload.trace), sha256=golden_digest(workload.trace), trace=trace.describe() | replay
    )
    if trace.capped:
        display.note(
            f"{trace.capped} of {len(trace.rows)} trace requests were capped to the {limit:,}-token context "
            "(prompt + output)"
        )
    return None, record, trace


def _request_sizes(
    spec: RunSpec, api: str, rows: list[dict[str, Any]] | None, trace: Trace | None, record: WorkloadRecord
) -> tuple[int, int, int]:
    """(prompt, output) tokens of the longest request, and the tokens it sends (for its timeout): for
    embeddings and rerank a sequence is one input (a rerank pair: query and document) and nothing is generated."""
    workload = spec.workload
    if api not in POOLING_APIS:
        if workload.batch_size is not None:
            raise UsageError(f"--batch-size is the inputs per embeddings or rerank request; --api {api} has none")
        prompt_tokens, output_tokens = _longest_request(spec, rows, trace, api in ("chat", "ollama-chat"))
        return prompt_tokens, output_tokens, prompt_tokens
    if spec.engine.kind == "ollama":
        raise UsageError(f"--api {api}: the Ollama driver speaks its generate and chat APIs only")
    prompt_tokens = workload.input_tokens.upper() + (workload.query_tokens + 4 if api == "rerank" else 0)
    record.batch_size = workload.batch_size or [1]
    return prompt_tokens, 0, prompt_tokens * max(record.batch_size)


def _check_choices(spec: RunSpec, catalog, catalog_path: Path, api: str, rows: list[dict[str, Any]] | None) -> None:
    """Flags that must agree with the catalog, the engine and the workload."""
    workload = spec.workload
    if rows and api == "completions" and any("messages" in row for row in rows):
        raise UsageError(
            f"{'--golden' if workload.golden else '--prompts'} {workload.golden or workload.prompts}: "
            f"chat messages need --api chat; model {spec.model} uses completions"
        )
    if spec.hardware and spec.hardware not in catalog.hardware:
        known = ", ".join(sorted(catalog.hardware)) or "none"
        raise UsageError(f"--hardware {spec.hardware!r} is not in {catalog_path} (hardware: {known})")
    if spec.api is not None and spec.api.startswith("ollama") and spec.engine.kind not in ("ollama", "endpoint"):
        raise UsageError(f"--api {spec.api} is Ollama's own API; --engine {spec.engine.kind} serves OpenAI's")
    _check_results_dir(spec.output.results_dir)
    if spec.load.on_ray:  # load from client hosts of a Ray cluster (bench.scale.workers): Ray must be installed
        from bench.scale.workers import check

        check(spec)


def _new_run_id(spec: RunSpec) -> str:
    """--run-id, else time, engine, model and a random tag; never a directory that exists."""
    # served model names can be paths: keep the last part, in characters safe for a folder name
    model_tag = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.model.rstrip("/").rsplit("/", 1)[-1])[:48]
    kind = spec.engine.kind
    run_id = spec.output.run_id or f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{kind}-{model_tag}-{secrets.token_hex(2)}"
    if (spec.output.results_dir / run_id).exists():
        raise UsageError(f"run directory {spec.output.results_dir / run_id} already exists; choose another --run-id")
    return run_id


def prepare(spec: RunSpec, display: RunDisplay) -> Prepared:
    """Everything that can be wrong with the input, checked before anything starts or is written."""
    catalog, catalog_path = load_catalog(spec.catalog)
    attached = spec.attached
    # attach mode: the model is the served model's name; the catalog describes it if it knows it
    entry = catalog.models.get(spec.model) if attached else get_model(catalog, catalog_path, spec.model)
    model_path = None if attached else resolve_model_path(spec.model, entry, catalog_path)
    # the model's context (from the catalog, else its header, which is checked to be a whole model here)
    window = (entry.context_window if entry else None) or (
        read_shape(model_path).context_length if model_path else None
    )
    workload = spec.workload
    rows, record, trace = _workload_input(spec, window, display)
    api = spec.api or (entry.api if entry else "chat")
    _check_choices(spec, catalog, catalog_path, api, rows)
    offsets = (trace.offsets_s, trace.path.name) if trace else None
    plan = build_plan(spec.load, workload, len(rows) if workload.golden else None, offsets)
    for note in plan.notes:
        display.note(note)
    prompt_tokens, output_tokens, request_tokens = _request_sizes(spec, api, rows, trace, record)
    longest = prompt_tokens + output_tokens
    if model_path is not None and window and longest > window:
        raise UsageError(
            f"a request needs up to {longest:,} tokens (prompt + output), more than model "
            f"{spec.model}'s {window:,}-token context; lower --output-tokens or --input-tokens"
        )
    calibration = _calibration_figures(
        spec.calibration, spec.output.results_dir, plan.max_streams, spec.client.busy_poll
    )
    reuses = workload.prefix_count > 0 or workload.turns > 1 or bool(trace and any(r.hash_ids for r in trace.rows))
    launch = LaunchContext(spec.model, entry, model_path, api, plan.max_streams, longest, spec.seed, reuses)
    driver = make_driver(spec.engine, launch)
    timeout, basis = (
        (spec.load.request_timeout_s, "--request-timeout")
        if spec.load.request_timeout_s
        else default_request_timeout(request_tokens, output_tokens)
    )
    run_id = _new_run_id(spec)
    prepared = Prepared(
        spec=spec,
        catalog=catalog,
        catalog_path=catalog_path,
        entry=entry,
        model_path=model_path,
        api=api,
        plan=plan,
        rows=rows,
        workload=record,
        driver=driver,
        request_timeout_s=timeout,
        request_timeout_basis=basis,
        run_id=run_id,
        calibration=calibration,
        trace=trace,
    )
    if model_path is not None:
        checking = " (checking sha256 ...)" if entry and entry.sha256 else ""
        display.note(f"model {spec.model}: {model_path}{checking}")
        prepared.digest = verified_digest(spec.model, entry, model_path, catalog_path)
    gpus, gpu_note = open_nvml()
    prepared.gpus = gpus
    prepared.hardware = HardwareRecord(**inventory(), gpus=gpus.inventory() if gpus else [], gpu_note=gpu_note)
    display.note(f"measuring what the hardware allows ({gpu_note}) ...")
    prepared.efficiency_inputs = _efficiency_inputs(spec, prepared)
    return prepared


# -- the run ------------------------------------------------------------------------------------
def requests_needed(stage: Stage) -> int:
    """Work items to make before a stage: its count bounds, or for a time-bound stage what its duration is
    likely to use (a guess of CLOSED_LOOP_REQUESTS_PER_STREAM_SECOND per stream; more are made during the
    stage from word costs, with no tokenizer call, if the guess falls short); a trace's, all of them."""
    if isinstance(stage.schedule, TraceArrivals):
        return len(stage.schedule.offsets_s)
    streams = stage.schedule.concurrency if not stage.open_loop else 0  # type: ignore[union-attr]
    per_second = stage.schedule.rate if stage.open_loop else streams * CLOSED_LOOP_REQUESTS_PER_STREAM_SECOND  # type: ignore[union-attr]
    measured = stage.requests
    if stage.duration_s is not None:
        measured = min(measured, math.ceil(per_second * stage.duration_s))
    seconds = stage.warmup_s + stage.cooldown_s
    return stage.warmup_requests + measured + stage.cooldown_requests + math.ceil(per_second * seconds)


class DiskFull(Exception):
    """Writing a result failed for lack of space (or quota)."""


class Run:
    """One run of a prepared spec: owns its directory, manifest, engine and samplers until it ends."""

    def __init__(self, prepared: Prepared, display: RunDisplay, command: list[str]) -> None:
        self.p, self.display = prepared, display
        spec = prepared.spec
        self.run_dir = RunDirectory.create(spec.output.results_dir, prepared.run_id)
        self.anchor_perf, anchor_unix = perf_ns(), time.time_ns()
        load = spec.load
        self.manifest = Manifest(
            run_id=self.run_dir.path.name,
            started_at=_now_iso(),
            command=recorded_command(command),
            spec=_recorded_spec(spec),
            api=prepared.api,
            engine_kind=spec.engine.kind,
            workload=prepared.workload,
            slo=SloTargets(thresholds_ms=dict(load.slo), percentile=load.slo_percentile) if load.slo else None,
            seed=spec.seed,
            temperature=spec.workload.temperature,
            ignore_eos=spec.workload.asks_ignore_eos,
            busy_poll=spec.client.busy_poll,
            request_timeout_s=prepared.request_timeout_s,
            sweep_rates=prepared.plan.sweep_rates,
            search=(
                {
                    "low": plan_search.low,
                    "high": plan_search.high,
                    "precision": plan_search.precision,
                    "percentile": load.slo_percentile,
                    "requests_per_stage": plan_search.min_requests,
                }
                if (plan_search := prepared.plan.search)
                else None
            ),
            efficiency_inputs=prepared.efficiency_inputs,
            model=ModelRecord(
                name=spec.model,
                catalog=str(prepared.catalog_path),
                entry=prepared.entry.model_dump() if prepared.entry else None,
                file=prepared.digest,
            ),
            engine=_engine_record(prepared.driver),
            clock=ClockRecord(anchor_perf_counter_ns=self.anchor_perf, anchor_unix_ns=anchor_unix),
            hardware=prepared.hardware,
            software=software(),
            calibration=prepared.calibration,
        )
        self.write_manifest()
        if spec.workload.golden is not None:
            shutil.copyfile(spec.workload.golden, self.run_dir.file(GOLDEN_COPY))  # the cases it was scored on
        self.requests_out = JsonlAppender(self.run_dir.file(REQUESTS))
        self.telemetry_out = JsonlAppender(self.run_dir.file(TELEMETRY))
        self.sampler: TelemetrySampler | None = None
        self.stop_reason: str | None = None  # why the run as a whole ended early
        self.signalled = False  # a SIGINT or SIGTERM stopped the load
        self.exit_code = EXIT_OK
        self.message: str | None = None
        self.stage_summaries: list[StageSummary] = []

    def write_manifest(self) -> None:
        try:
            self.run_dir.write_manifest(self.manifest)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(str(exc)) from exc
            raise

    def go(self) -> RunResult:
        driver = self.p.driver
        callers_handlers = _signal_handlers()
        try:
            _install_signal_handlers()
            launcher = getattr(driver, "launcher", None) or driver.record().get("launcher") or self.p.spec.engine.kind
            self.display.note(f"starting {self.p.spec.engine.kind} ({launcher}) ...")
            if self.p.gpus is not None:
                self.p.gpus.mark_engine_start()
            endpoint = driver.start(self.run_dir.path)
            self.manifest.engine = _engine_record(driver)
            self.write_manifest()
            self.display.note(
                f"engine ready in {self.manifest.engine.load_time_s or 0:.1f} s at {endpoint.base_url}; "
                f"request timeout {self.p.request_timeout_s:g} s ({self.p.request_timeout_basis})"
            )
            work = WorkSource(
                self.p.spec.workload, self.p.spec.seed, endpoint.count_tokens, self.p.rows, self.p.trace, self.p.api
            )
            process = driver.process
            self.sampler = TelemetrySampler(
                self.telemetry_out,
                self.anchor_perf,
                process.tree_pids if process else list,
                self.p.spec.telemetry.interval_s,
                self.p.gpus,
                driver.sample_gauges,
            )
            self.sampler.start()
            self.stop_reason = run_event_loop(lambda: self._drive(endpoint, work))
            _install_signal_handlers()  # asyncio restored the defaults when the loop closed
            if self.stop_reason is not None:  # the load stopped the run: the engine died, a signal came, or the
                # load's own machines could not go on (a limit, a lost Ray worker)
                self.exit_code = (
                    EXIT_ENGINE if driver.failure() else EXIT_INTERRUPTED if self.signalled else EXIT_INTERNAL
                )
            if self.sampler.write_error is not None:
                raise DiskFull(str(self.sampler.write_error))
        except (Interrupted, KeyboardInterrupt) as exc:  # KeyboardInterrupt: Python's own SIGINT handler, which
            # the loop puts back as it closes, until ours is installed again
            self.stop_reason, self.exit_code = str(exc) or "interrupted by SIGINT", EXIT_INTERRUPTED
        except EngineError as exc:
            self.stop_reason, self.exit_code = str(exc).splitlines()[0], EXIT_ENGINE
            self.message = str(exc)
        except DiskFull as exc:
            self.stop_reason, self.exit_code = f"the disk is full ({exc})", EXIT_INTERNAL
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._internal_error(exc)
            else:
                self.stop_reason, self.exit_code = f"the disk is full ({exc})", EXIT_INTERNAL
        except BenchError as exc:  # e.g. a prompt the engine's tokenizer could not fit
            self.stop_reason, self.exit_code, self.message = str(exc), exc.exit_code, str(exc)
        except Exception as exc:  # a defect: kept on disk, said in one line
            self._internal_error(exc)
        finally:
            _ignore_signals()
            try:
                summary = self._finish()
            finally:
                _restore_signal_handlers(callers_handlers)
        return RunResult(self.run_dir, self.manifest, summary, self.exit_code, self.message)

    def _internal_error(self, exc: BaseException) -> None:
        self.exit_code = EXIT_INTERNAL
        self.stop_reason = f"internal error: {type(exc).__name__}: {exc}"
        try:
            write_atomic(self.run_dir.file(ERROR_FILE), "".join(traceback.format_exception(exc)))
            self.manifest.error_file = ERROR_FILE
            self.message = (
                f"internal error ({type(exc).__name__}: {exc}); the traceback is in {self.run_dir.file(ERROR_FILE)}"
            )
        except OSError:
            self.message = f"internal error ({type(exc).__name__}: {exc})"

    def _finish(self) -> RunSummary:
        """Stop everything, then write the summary and the status the evidence supports."""
        driver = self.p.driver
        if self.sampler is not None:
            self.sampler.stop()
        failure_before_stop = driver.failure()
        try:
            driver.stop()
        except Exception as exc:  # noqa: BLE001 - the summary and the manifest are still written
            stuck = f"the engine could not be stopped: {exc}"  # said beside any earlier reason, never instead
            self.stop_reason = f"{self.stop_reason}; {stuck}" if self.stop_reason else stuck
            if self.message:  # on its first line, which is the one printed before an engine log's tail
                first, newline, rest = self.message.partition("\n")
                self.message = f"{first}; {stuck}{newline}{rest}"
            if self.exit_code in (EXIT_OK, EXIT_NOT_MEASURED):
                self.exit_code = EXIT_ENGINE
        # An interrupted run does not wait on an endpoint's liveness probe (attach mode has no process to read):
        # a supervisor's SIGTERM grace period is for writing the results.
        probe_only = driver.process is None
        death = failure_before_stop or (None if probe_only and self.exit_code == EXIT_INTERRUPTED else driver.death())
        for out in (self.requests_out, self.telemetry_out):
            try:
                out.close()
            except OSError:
                pass
        summary = RunSummary()
        try:
            analysis = analyse(self.run_dir, self.manifest)
            summary = analysis.summary
            self.run_dir.write_summary(summary)
            if analysis.evaluation is not None:
                write_json_atomic(self.run_dir.file(EVAL), analysis.evaluation)
        except OSError as exc:
            self.stop_reason = self.stop_reason or f"the summary could not be written ({exc})"
            self.exit_code = self.exit_code or EXIT_INTERNAL
        except Exception as exc:  # noqa: BLE001 - a defect in the analysis must not cost the final manifest
            reason, code = self.stop_reason, self.exit_code
            self._internal_error(exc)
            self.stop_reason, self.exit_code = reason or self.stop_reason, code or self.exit_code
        try:
            self.manifest.engine = _engine_record(driver)
        except Exception:  # noqa: BLE001 - a record that cannot be read must not cost the manifest
            pass
        self._decide_status(summary, death)
        self.manifest.ended_at = _now_iso()
        try:
            self.run_dir.write_manifest(self.manifest)
        except OSError as exc:
            self.message = (self.message or "") + f" (the final manifest could not be written: {exc})"
        return summary

    def _decide_status(self, summary: RunSummary, death: str | None) -> None:
        m = self.manifest
        if death and self.exit_code in (EXIT_OK, EXIT_NOT_MEASURED):
            self.exit_code = EXIT_ENGINE
            self.stop_reason = self.stop_reason or death
        stage_stops = [
            f"stage {s.index} stopped early: {s.outcome.stop_reason}"
            for s in m.stages
            if s.outcome is not None and s.outcome.stop_reason
        ]
        planned = self.p.plan.total_stages
        plan_error = m.plan_stopped_early if m.plan_stopped_early and "failed" in m.plan_stopped_early else None
        unfinished = len([s for s in m.stages if s.outcome is not None]) < len(m.stages)
        reasons = [r for r in (self.stop_reason, death, *stage_stops, plan_error) if r]
        if unfinished and not reasons:
            reasons.append("a stage did not finish")
        if not m.stages and not reasons:
            reasons.append(f"no stage ran of the {planned} planned")
        measured_ok = summary.requests.successful
        if self.exit_code == EXIT_OK and (stage_stops or plan_error):
            self.exit_code = EXIT_NOT_MEASURED  # more requests failed than --max-errors/--max-error-rate allow
        if measured_ok == 0 and self.exit_code == EXIT_OK:
            self.exit_code = EXIT_NOT_MEASURED
            reasons.append(f"no measured request succeeded ({summary.requests.failed} failed)")
        m.exit_code = self.exit_code
        if not reasons and self.exit_code == EXIT_OK:
            m.status, m.incomplete_reason = "complete", None
            return
        m.status = "failed" if measured_ok == 0 else "incomplete"
        m.incomplete_reason = "; ".join(dict.fromkeys(reasons)) or "the run did not finish"

    # -- the stages, in one event loop ----------------------------------------------------------
    async def _drive(self, endpoint, work: WorkSource) -> str | None:
        """Run the plan's stages; return why the run stopped, or None."""
        spec, driver, display = self.p.spec, self.p.driver, self.display
        stage_records: list[RequestRecord] = []
        write_failed: list[OSError] = []

        def sink(record: RequestRecord) -> None:
            try:
                self.requests_out.append(record)
            except OSError as exc:  # a full disk: stop the run; what is on disk stays
                if not write_failed:
                    write_failed.append(exc)
                    runner.request_stop(f"requests.jsonl could not be written ({exc.strerror or exc})")
            stage_records.append(record)
            display.record(record)

        engine_metrics = JsonlAppender(self.run_dir.file(ENGINE_METRICS)) if driver.metrics_url else None

        def scrape(stage: int, when: str) -> None:
            """The engine's counters at a stage boundary, when no measured request is in flight."""
            if engine_metrics is None:
                return
            try:
                samples = parse(fetch(driver.metrics_url))
            except (OSError, ValueError) as exc:
                display.note(f"note: could not read the engine's /metrics ({exc}); server-side figures will be missing")
                return
            engine_metrics.append(
                {"stage": stage, "when": when, "t_ns": perf_ns() - self.anchor_perf, "samples": samples}
            )

        sampling: dict[str, Any] = {"temperature": spec.workload.temperature, "seed": spec.seed}
        if endpoint.supports_ignore_eos and spec.workload.asks_ignore_eos:
            sampling["ignore_eos"] = True
        client = StreamingClient(
            HttpClient(endpoint.base_url, endpoint.headers),
            dialect(endpoint.api),
            endpoint.model,
            sampling,
            self.p.request_timeout_s,
            self.anchor_perf,
            endpoint.count_tokens,
            driver.secrets,
            endpoint.count_chat_tokens,
        )
        runner = LoadRunner(client, work, sink, driver.failure)
        if spec.load.on_ray:  # load from client hosts: Ray actors, records merged (bench.scale.workers)
            from bench.scale.workers import WorkerPool

            runner = WorkerPool(self, endpoint, work, sink, sampling)
        loop = asyncio.get_running_loop()

        def interrupted(name: str) -> None:
            self.signalled = True  # the one stop that exits 130: a lost worker or a machine's limit is none
            runner.request_stop(f"interrupted by {name}")

        loop.add_signal_handler(signal.SIGINT, interrupted, "SIGINT")
        loop.add_signal_handler(signal.SIGTERM, interrupted, "SIGTERM")
        ticker = asyncio.create_task(self._tick())
        hot = asyncio.create_task(keep_loop_hot()) if spec.client.busy_poll else None
        plan = self.p.plan
        stages = list(plan.stages)
        try:
            index = 0
            while index < len(stages) and runner.stop_reason is None:
                stage = stages[index]
                work.prepare(requests_needed(stage), stage.batch_size)
                record = stage.record()
                self.manifest.stages.append(record)
                self.write_manifest()
                stage_records.clear()
                display.stage_started(stage, plan.total_stages)
                scrape(stage.index, "start")
                outcome = await runner.run_stage(stage, spec.seed)
                scrape(stage.index, "end")
                display.stage_ended()
                record.outcome = StageOutcome(
                    stop_reason=outcome.stop_reason, sent=outcome.sent, prompts_made_during_stage=work.made_during_stage
                )
                self.write_manifest()
                table = table_of(stage_records)
                summary = StageSummary(stage=stage.index, **dict(summarize_requests(table)))
                if plan.spec and plan.spec.slo:
                    summary.slo = slo_report(table, plan.spec.slo, plan.spec.slo_percentile)
                self.stage_summaries.append(summary)
                if runner.stop_reason is None and index + 1 < plan.total_stages:
                    if reason := plan.stop_reason(summary, outcome.stop_reason):
                        self.manifest.plan_stopped_early = reason
                        display.note(f"plan stopped early: {reason}")
                        break
                added = plan.next_stages(self.stage_summaries)
                if plan.sweep_rates and index == 1 and not added:
                    self.manifest.plan_stopped_early = "no throughput measured in the first two stages"
                stages += added
                index += 1
        finally:
            if not hasattr(runner, "aclose"):  # this process's client read every request: how it read and timed them
                self.manifest.client_reads = client.http.read_figures()
            for task in (ticker, hot):
                if task:
                    task.cancel()
            await asyncio.gather(*(t for t in (ticker, hot) if t), return_exceptions=True)
            if hasattr(runner, "aclose"):  # the load workers: clocks measured again, actors stopped
                await runner.aclose()
            await client.http.close()
            if engine_metrics is not None:
                engine_metrics.close()
        if write_failed:
            raise DiskFull(str(write_failed[0]))
        return runner.stop_reason

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.display.interval_s)
            self.display.tick()


def _recorded_spec(spec: RunSpec) -> RunSpec:
    """The spec as the manifest keeps it: an engine variable that holds a secret keeps its name, not its value,
    and an engine argument that carries one (--api-key K) its flag."""
    update: dict[str, Any] = {}
    if env := getattr(spec.engine, "env", None):
        update["env"] = recorded_env(env)
    if extra_args := getattr(spec.engine, "extra_args", None):
        update["extra_args"] = recorded_argv(extra_args)
    return spec.model_copy(update={"engine": spec.engine.model_copy(update=update)}) if update else spec


def _engine_record(driver) -> EngineRecord:
    """What ran, as the manifest keeps it: the engine's argv without the secrets its flags carry."""
    record = driver.record()
    if record.get("argv"):
        record = {**record, "argv": recorded_argv(record["argv"])}
    return EngineRecord(**record)


def execute(spec: RunSpec, display: RunDisplay | None = None, command: list[str] | None = None) -> RunResult:
    """Run a spec end to end and return the run directory with its manifest and summary.

    Bad input raises UsageError before anything starts or is written; everything after that ends in a
    RunResult whose exit_code and manifest status say how the run ended."""
    display = display or RunDisplay()
    prepared = prepare(spec, display)
    run_path = spec.output.results_dir / prepared.run_id
    existed = run_path.exists()
    try:
        run = Run(prepared, display, command if command is not None else sys.argv)
    except (OSError, DiskFull) as exc:  # nothing ran: no directory is left half-written
        if not existed:
            shutil.rmtree(run_path, ignore_errors=True)
        display.close()
        raise UsageError(f"--results-dir {spec.output.results_dir}: cannot write the run directory ({exc})") from None
    try:
        return run.go()
    finally:
        display.close()
