"""`bench run`: validate, launch the engine, run the plan's stages, write the run directory, stop cleanly."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import secrets
import shutil
import signal
import sys
import time
from collections import deque
from typing import Any

from bench.catalog import get_model, load_catalog, resolve_model_path, verified_digest
from bench.clients.http import HttpClient, perf_ns
from bench.clients.openai import StreamingClient
from bench.console import Progress, quality_lines, say, stage_table, summary_table
from bench.engines.base import Endpoint, EngineDriver
from bench.engines.endpoint import EndpointDriver
from bench.engines.llamacpp import LlamaCppDriver, LlamaCppSettings
from bench.engines.ollama import OllamaDriver, OllamaSettings
from bench.engines.prometheus import fetch, parse
from bench.engines.vllm import VllmDriver, VllmSettings
from bench.errors import EngineError, UsageError
from bench.hardware import inventory, software
from bench.load import prompts
from bench.load.runner import LoadRunner, Stage, WorkItem, keep_loop_hot, run_event_loop
from bench.load.schedules import OpenLoop
from bench.metrics import slo_report, summarize_requests
from bench.modelshape import read_shape
from bench.plan import SWEEP_STOP_ERROR_RATE, LoadPlan, build_plan
from bench.results import (
    ENGINE_METRICS,
    EVAL,
    GOLDEN_COPY,
    REQUESTS,
    TELEMETRY,
    JsonlAppender,
    RunDirectory,
    read_json,
    write_json_atomic,
)
from bench.roofline import HardwareLimits, cpu_limits
from bench.telemetry.nvml import open_nvml
from bench.telemetry.process import TelemetrySampler

ENGINES = ("llamacpp", "vllm", "ollama")
EXIT_OK, EXIT_ENGINE, EXIT_INTERRUPTED = 0, 3, 130  # bad input exits 2 (UsageError.exit_code)
CLOSED_LOOP_REQUESTS_PER_STREAM_SECOND = 4  # a guess for sizing time-based phases; more are made if needed


class Interrupted(BaseException):
    """SIGINT or SIGTERM outside the event loop; a BaseException so nothing swallows it."""


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)


def _ignore_signals() -> None:
    """While results are being finalised: a second Ctrl-C must not leave half-written files."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class WorkSource:
    """Prompts for the stages: made between stages, so no tokenizer call competes with measured requests."""

    def __init__(self, args, endpoint: Endpoint, rows: list[dict] | None) -> None:
        self.rows = prompts.file_items(rows, args.output_tokens) if rows else None
        self.ready: deque[WorkItem] = deque()
        self.made_during_stage = 0
        self.next_index = 0
        if rows:
            return
        if endpoint.count_tokens is None:
            raise UsageError("this endpoint exposes no tokenizer, so synthetic prompts cannot be sized; use --prompts")
        self.workload = prompts.SyntheticWorkload(
            prompts.Length.parse(args.input_tokens, "--input-tokens"),
            prompts.Length.parse(args.output_tokens_spec, "--output-tokens"),
            args.seed, args.prefix_count, args.prefix_tokens, args.turns,
        )  # fmt: skip
        self.fitter = prompts.TokenFitter(lambda text: endpoint.count_tokens(text, True),
                                          lambda text: endpoint.count_tokens(text, False))  # fmt: skip
        self.prefixes = prompts.shared_prefixes(self.workload, self.fitter)

    def prepare(self, requests: int) -> None:
        self.made_during_stage = 0
        if self.rows is not None:
            return
        count = max(0, requests - len(self.ready))  # work items: requests, or conversations with --turns
        self.ready.extend(prompts.synthetic_items(self.workload, count, self.fitter, self.next_index, self.prefixes))
        self.next_index += count

    def __iter__(self):
        return self

    def __next__(self) -> WorkItem:
        if self.rows is not None:
            return next(self.rows)
        if self.ready:
            return self.ready.popleft()
        self.made_during_stage += 1  # more than planned: made now, from word costs, with no tokenizer call
        (item,) = prompts.synthetic_items(self.workload, 1, self.fitter, self.next_index, self.prefixes, False)
        self.next_index += 1
        return item


def requests_needed(stage: Stage) -> int:
    per_second = (stage.schedule.rate if isinstance(stage.schedule, OpenLoop)
                  else stage.schedule.concurrency * CLOSED_LOOP_REQUESTS_PER_STREAM_SECOND)  # fmt: skip
    seconds = stage.warmup_s + stage.cooldown_s
    return stage.warmup_requests + stage.requests + stage.cooldown_requests + math.ceil(per_second * seconds)


def make_driver(args, entry, model_path, api: str, plan: LoadPlan) -> EngineDriver:
    if entry.engines and args.engine not in entry.engines:
        raise UsageError(f"--model {args.model} lists engines {entry.engines} in the catalog, not {args.engine}")
    if args.engine == "vllm":
        if entry.format != "hf":
            raise UsageError(f"--engine vllm serves Hugging Face folders; model {args.model} has format {entry.format}")
        extra_env = dict(item.partition("=")[::2] for item in args.engine_env)
        settings = VllmSettings(
            model_path=model_path, python=args.engine_python or VllmSettings.python, dtype=args.dtype,
            max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size, quantization=args.quantization,
            max_num_seqs=args.max_num_seqs, prefix_caching=args.prefix_caching, enforce_eager=args.enforce_eager,
            seed=args.seed, cpu_kv_cache_gib=args.cpu_kv_cache_gib, extra_args=args.engine_arg, extra_env=extra_env,
            host=args.host, port=args.port, ready_timeout_s=args.ready_timeout,
        )  # fmt: skip
        return VllmDriver(settings, api)
    if entry.format != "gguf":
        raise UsageError(f"--engine {args.engine} serves GGUF files; model {args.model} has format {entry.format}")
    if args.engine == "ollama":
        settings = OllamaSettings(
            binary=args.ollama_binary, model_path=None if args.ollama_tag else model_path, tag=args.ollama_tag,
            num_ctx=args.ctx_size, num_gpu=args.gpu_layers or None, num_thread=args.threads,
            num_parallel=args.parallel or plan.max_streams, keep_alive=args.keep_alive,
            openai_compatible=args.ollama_openai, host=args.host, port=args.port, ready_timeout_s=args.ready_timeout,
        )  # fmt: skip
        return OllamaDriver(settings, api)
    tokens = 0 if args.prompts else prompts.Length.parse(args.input_tokens, "--input-tokens").upper() * args.turns
    tokens += prompts.Length.parse(args.output_tokens_spec, "--output-tokens").upper() * args.turns
    settings = LlamaCppSettings(
        model_path=model_path, launcher=args.launcher, server_binary=args.llama_server,
        python=args.engine_python or sys.executable,
        ctx_size=args.ctx_size, threads=args.threads, batch_threads=args.batch_threads,
        parallel=args.parallel or plan.max_streams, gpu_layers=args.gpu_layers, extra_args=args.engine_arg,
        host=args.host, port=args.port, ready_timeout_s=args.ready_timeout, tokens_per_request=tokens,
    )  # fmt: skip
    driver = LlamaCppDriver(settings, api)
    if driver.serializes_requests and plan.max_streams > 1:
        raise UsageError(
            f"the {driver.launcher} server handles one request at a time, so {plan.max_streams} streams would "
            "measure queueing, not concurrency; use --concurrency 1 (and --max-concurrency 1 with --rate) "
            "or --launcher xllamacpp"
        )
    return driver


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _calibration_figures(path) -> dict[str, Any]:
    """The client-error figures of a `bench calibrate` report, to sit beside the run they qualify."""
    report = read_json(path)
    if not isinstance(report.get("shapes"), list):
        raise UsageError(f"--calibration {path}: not a calibration.json written by `bench calibrate`")
    return {"file": str(path), "created_at": report.get("created_at"),
            "shapes": [{k: v for k, v in shape.items() if k != "levels"} | {"levels": [
                {k: lv[k] for k in ("streams", "ttft_error_ms", "tpot_error_ms", "output_tokens_per_s")}
                for lv in shape["levels"]]} for shape in report["shapes"]]}  # fmt: skip


def _datasheet_limits(name: str, entry) -> HardwareLimits:
    """A `hardware:` entry of the catalog in the roofline's units."""
    flops = entry.peak_tflops * 1e12 if entry.peak_tflops else None
    return HardwareLimits(name, entry.memory_bandwidth_gb_s * 1e9, flops, f"{entry.source} (as of {entry.as_of})")


def _efficiency_inputs(args, catalog, catalog_path, model_path, hardware: dict[str, Any]) -> dict[str, Any]:
    """The model's shape and the hardware's limits that the roofline compares a run against."""
    inputs: dict[str, Any] = {"model_shape": None, "hardware_limits": None, "notes": []}
    if model_path is None:
        inputs["notes"].append("attach mode: the model's weights and hardware are not local; no efficiency figures")
        return inputs
    try:
        inputs["model_shape"] = read_shape(model_path).describe()
    except (OSError, ValueError, KeyError, UsageError) as exc:
        inputs["notes"].append(f"model shape unreadable ({exc}); no efficiency figures")
    if args.hardware:
        if args.hardware not in catalog.hardware:
            known = ", ".join(sorted(catalog.hardware)) or "none"
            raise UsageError(f"--hardware {args.hardware!r} is not in {catalog_path} (hardware: {known})")
        limits = _datasheet_limits(args.hardware, catalog.hardware[args.hardware])
    elif args.gpu_layers > 0 and hardware["gpus"]:
        name = hardware["gpus"][0]["name"] or ""
        matches = [(k, e) for k, e in catalog.hardware.items() if any(m.lower() in name.lower() for m in e.match)]
        if not matches:
            inputs["notes"].append(f"GPU {name!r} is not in {catalog_path} hardware; add it (or pass --hardware)")
            return inputs
        limits = _datasheet_limits(*matches[0])
    else:
        limits = cpu_limits(args.threads, hardware["cpu_model"])
        inputs["notes"].append("CPU run: bandwidth measured now; no peak FLOP/s, so no prefill utilization")
    inputs["hardware_limits"] = limits.describe()
    return inputs


def plan_stop_reason(plan: LoadPlan, stage_summary: dict[str, Any], stop: str | None) -> str | None:
    """Why a multi-stage plan should not go on after this stage, if it should not."""
    if stop:
        return f"stage {stage_summary['stage']} stopped early ({stop})"
    req = stage_summary["requests"]
    finished = req["successful"] + req["failed"]
    if finished and req["failed"] / finished > SWEEP_STOP_ERROR_RATE:
        return f"stage {stage_summary['stage']} failed {req['failed']} of {finished} requests"
    slo = stage_summary.get("slo")
    if slo and slo["fraction_meeting_all"] is not None and slo["fraction_meeting_all"] < plan.stop_slo_fraction:
        return (f"stage {stage_summary['stage']}: only {slo['fraction_meeting_all']:.0%} of requests met every SLO "
                f"(--stop-slo-fraction {plan.stop_slo_fraction:g})")  # fmt: skip
    return None


def sweep_rates(plan: LoadPlan, synchronous: dict[str, Any], throughput: dict[str, Any]) -> list[float]:
    low, high = synchronous["request_throughput_per_s"], throughput["request_throughput_per_s"]
    if not low or not high:
        return []
    low, high = min(low, high), max(low, high)
    return [low + (high - low) * (k + 1) / (plan.sweep_rates + 1) for k in range(plan.sweep_rates)]


def _prepare_golden(args) -> tuple[str, list[dict[str, Any]]] | None:
    """--golden: the set's digest and its cases as prompt rows; one pass, no warmup, fixed decoding, and
    the model free to stop (a check reads what it chose to say)."""
    if args.command == "eval" and not args.golden:
        raise UsageError("bench eval needs --golden FILE (a JSONL golden set; see bench/quality.py)")
    if not args.golden:
        return None
    if args.prompts:
        raise UsageError("--golden and --prompts both give the prompts; use one")
    from bench.quality import golden_digest, load_golden

    cases = load_golden(args.golden, f"--golden {args.golden}")
    if args.temperature != 0:
        raise UsageError(f"--golden runs with fixed decoding; leave out --temperature {args.temperature:g}")
    args.requests = args.requests or len(cases)
    args.warmup = args.warmup or "0"
    args.no_ignore_eos = True
    rows = [{"id": c.id, "max_tokens": c.max_tokens, **({"prompt": c.prompt} if c.prompt is not None
                                                         else {"messages": c.messages})} for c in cases]  # fmt: skip
    return golden_digest(args.golden), rows


def cmd_run(args) -> int:
    # Everything that can be wrong with the input is checked before anything starts or is written.
    if args.endpoint:
        if args.engine not in (None, "endpoint"):
            raise UsageError("--endpoint measures a running server; leave out --engine (or give --engine endpoint)")
        args.engine = "endpoint"
    elif args.engine is None:
        raise UsageError("give --engine (one of: " + ", ".join(ENGINES) + ") or --endpoint URL")
    elif args.engine not in ENGINES:
        raise UsageError(f"--engine {args.engine!r} is not known; choose one of: {', '.join(ENGINES)}")
    golden = _prepare_golden(args)
    plan = build_plan(args)
    prompts.Length.parse(args.input_tokens, "--input-tokens")
    output_length = prompts.Length.parse(args.output_tokens_spec, "--output-tokens")
    args.output_tokens = int(output_length.a)  # the default max_tokens for prompt files
    if (args.prefix_count > 0) != (args.prefix_tokens > 0):
        raise UsageError("--prefix-count and --prefix-tokens go together (N prefixes of P tokens)")
    catalog, catalog_path = load_catalog(args.catalog)
    attach = args.engine == "endpoint"
    # attach mode: --model is the served model's name; the catalog describes it if it knows it
    entry = catalog.models.get(args.model) if attach else get_model(catalog, catalog_path, args.model)
    rows = golden[1] if golden else prompts.load_prompt_file(args.prompts) if args.prompts else None
    if rows and output_length.kind != "fixed":
        raise UsageError('--prompts: give --output-tokens as one number (or "max_tokens" per line in the file)')
    api = args.api or (entry.api if entry else "chat")
    if rows and api == "completions" and any("messages" in row for row in rows):
        raise UsageError(
            f"--prompts {args.prompts}: chat messages need --api chat; model {args.model} uses completions"
        )
    if attach:
        model_path = digest = None
        driver: EngineDriver = EndpointDriver(args.endpoint, args.model, api, args.api_key_env, args.ready_timeout)
        driver.preflight()
    else:
        model_path = resolve_model_path(args.model, entry, catalog_path)
        driver = make_driver(args, entry, model_path, api, plan)
        say(f"model {args.model}: {model_path} (checking sha256 ...)")
        digest = verified_digest(args.model, entry, model_path, catalog_path)

    gpus, gpu_note = open_nvml()
    hardware = {**inventory(), "gpus": gpus.inventory() if gpus else [], "gpu_note": gpu_note}
    say(f"measuring what the hardware allows ({gpu_note}) ...")
    efficiency_inputs = _efficiency_inputs(args, catalog, catalog_path, model_path, hardware)

    # served model names can be paths: keep the last part, in characters safe for a folder name
    model_tag = re.sub(r"[^A-Za-z0-9._-]+", "-", args.model.rstrip("/").rsplit("/", 1)[-1])[:48]
    run_id = args.run_id or f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{args.engine}-{model_tag}-{secrets.token_hex(2)}"
    run_dir = RunDirectory.create(args.results_dir, run_id)
    anchor_perf, anchor_unix = perf_ns(), time.time_ns()
    spec = {
        "engine": args.engine, "model": args.model, "api": api,
        "plan": "sweep" if plan.sweep_rates else "stages", "sweep_rates": plan.sweep_rates,
        "workload": {"kind": "golden", "path": str(args.golden), "sha256": golden[0], "cases": len(rows),
                     "copy": GOLDEN_COPY, "output_tokens": args.output_tokens_spec} if golden
        else {"kind": "file", "path": str(args.prompts), "output_tokens": args.output_tokens_spec} if rows
        else {"kind": "synthetic", "input_tokens": args.input_tokens, "output_tokens": args.output_tokens_spec,
              "prefix_count": args.prefix_count, "prefix_tokens": args.prefix_tokens, "turns": args.turns},
        "ignore_eos": not args.no_ignore_eos, "busy_poll": args.busy_poll, "seed": args.seed,
        "temperature": args.temperature, "request_timeout_s": args.request_timeout,
        "slo": {"thresholds_ms": plan.slo_ms, "percentile": plan.slo_percentile} if plan.slo_ms else None,
        "efficiency_inputs": efficiency_inputs,
        "stages": [],  # each stage as it starts; a sweep's rates are decided during the run
    }  # fmt: skip
    manifest: dict[str, Any] = {
        "schema_version": 1, "run_id": run_dir.path.name, "status": "incomplete",
        "incomplete_reason": "the run did not finish (still running, or the rig itself was killed)",
        "started_at": _now_iso(), "ended_at": None, "command": sys.argv, "spec": spec,
        "model": {"name": args.model, "catalog": str(catalog_path), "entry": entry.model_dump() if entry else None,
                  "file": digest},
        "engine": driver.record(),
        "clock": {"anchor_perf_counter_ns": anchor_perf, "anchor_unix_ns": anchor_unix,
                  "note": "record times are perf_counter_ns minus the anchor; add anchor_unix_ns for wall time"},
        "hardware": hardware, "software": software(),
        "calibration": _calibration_figures(args.calibration) if args.calibration else None,
    }  # fmt: skip
    run_dir.write_manifest(manifest)
    if golden:
        shutil.copyfile(args.golden, run_dir.file(GOLDEN_COPY))  # the run keeps the cases it was scored on

    requests_out = JsonlAppender(run_dir.file(REQUESTS))
    telemetry_out = JsonlAppender(run_dir.file(TELEMETRY))
    sampler: TelemetrySampler | None = None
    stop_reason: str | None = None
    exit_code = EXIT_OK
    try:
        install_signal_handlers()
        launcher = getattr(driver, "launcher", None) or driver.record().get("launcher") or args.engine
        say(f"starting {args.engine} ({launcher}) ...")
        endpoint = driver.start(run_dir.path)
        manifest["engine"] = driver.record()
        run_dir.write_manifest(manifest)
        say(f"engine ready in {manifest['engine'].get('load_time_s', 0):.1f} s at {endpoint.base_url}")
        work = WorkSource(args, endpoint, rows)
        sampling: dict[str, Any] = {"temperature": args.temperature, "seed": args.seed}
        if endpoint.supports_ignore_eos and not args.no_ignore_eos:
            sampling["ignore_eos"] = True
        process = driver.process
        sampler = TelemetrySampler(telemetry_out, anchor_perf, process.tree_pids if process else list,
                                   args.telemetry_interval, gpus, driver.sample_gauges)  # fmt: skip
        sampler.start()
        stop_reason = run_event_loop(
            lambda: _drive(
                args, plan, endpoint, api, sampling, anchor_perf, driver, work, requests_out, manifest, run_dir
            )  # fmt: skip
        )
        install_signal_handlers()  # asyncio restored the defaults when the loop closed
    except Interrupted as exc:
        stop_reason = str(exc)
    except EngineError as exc:
        stop_reason = str(exc).splitlines()[0]
        exit_code = EXIT_ENGINE
        say(f"error: {exc}")
    finally:
        _ignore_signals()
        if sampler is not None:
            sampler.stop()
        engine_failure = driver.failure()
        driver.stop()
        requests_out.close()
        telemetry_out.close()
        summary, evaluation = run_dir.recompute(spec)
        run_dir.write_summary(summary)
        if evaluation is not None:
            write_json_atomic(run_dir.file(EVAL), evaluation)
        manifest["engine"] = driver.record()
        manifest["ended_at"] = _now_iso()
        manifest["status"] = "complete" if stop_reason is None and exit_code == EXIT_OK else "incomplete"
        manifest["incomplete_reason"] = stop_reason if manifest["status"] == "incomplete" else None
        run_dir.write_manifest(manifest)

    if stop_reason is not None and exit_code == EXIT_OK:
        exit_code = EXIT_ENGINE if engine_failure else EXIT_INTERRUPTED
    print_result(summary, manifest, run_dir, driver.record().get("launcher", args.engine), stop_reason)
    if exit_code == EXIT_ENGINE and engine_failure:
        process = driver.process
        kept = summary["requests"]
        say(f"error: run incomplete: {engine_failure}; kept {kept['successful'] + kept['failed']} finished "
            f"requests in {run_dir.file(REQUESTS)}; engine log {run_dir.file('engine.log')}, last lines:\n"
            f"{process.log_tail() if process else ''}")  # fmt: skip
    elif exit_code == EXIT_INTERRUPTED:
        say(f"run incomplete: {stop_reason}; finished requests are kept in {run_dir.file(REQUESTS)}")
    return exit_code


async def _drive(args, plan, endpoint, api, sampling, anchor_perf, driver, work, requests_out, manifest, run_dir):
    """Run the plan's stages in one event loop; return why the run stopped, or None."""
    stage_records: list[dict[str, Any]] = []
    progress = Progress()

    def sink(record: dict[str, Any]) -> None:
        requests_out.append(record)
        stage_records.append(record)
        progress.add(record)

    engine_metrics = JsonlAppender(run_dir.file(ENGINE_METRICS)) if driver.metrics_url else None

    def scrape(stage: int, when: str) -> None:
        """The engine's counters at a stage boundary, when no measured request is in flight."""
        if engine_metrics is None:
            return
        try:
            samples = parse(fetch(driver.metrics_url))
        except (OSError, ValueError) as exc:
            say(f"note: could not read the engine's /metrics ({exc}); server-side figures will be missing")
            return
        engine_metrics.append({"stage": stage, "when": when, "t_ns": perf_ns() - anchor_perf, "samples": samples})

    client = StreamingClient(HttpClient(endpoint.base_url, endpoint.headers), endpoint.api, endpoint.model, sampling,
                          args.request_timeout, anchor_perf, endpoint.count_tokens, driver.secrets)  # fmt: skip
    runner = LoadRunner(client, work, sink, driver.failure)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, runner.request_stop, "interrupted by SIGINT")
    loop.add_signal_handler(signal.SIGTERM, runner.request_stop, "interrupted by SIGTERM")
    ticker = asyncio.create_task(progress.ticker())
    hot = asyncio.create_task(keep_loop_hot()) if args.busy_poll else None
    stages = list(plan.stages)
    summaries: list[dict[str, Any]] = []
    try:
        index = 0
        while index < len(stages) and runner.stop_reason is None:
            stage = stages[index]
            work.prepare(requests_needed(stage))
            description = stage.describe()
            manifest["spec"]["stages"].append(description)
            run_dir.write_manifest(manifest)
            stage_records.clear()
            progress.start_stage(stage, len(stages) if not plan.sweep_rates else 2 + plan.sweep_rates)
            scrape(stage.index, "start")
            outcome = await runner.run_stage(stage, args.seed)
            scrape(stage.index, "end")
            description["outcome"] = {"stop_reason": outcome.stop_reason, "sent": outcome.sent,
                                      "prompts_made_during_stage": work.made_during_stage}  # fmt: skip
            run_dir.write_manifest(manifest)
            summary = {"stage": stage.index, **summarize_requests(stage_records)}
            if plan.slo_ms:
                summary["slo"] = slo_report(stage_records, plan.slo_ms, plan.slo_percentile)
            summaries.append(summary)
            if runner.stop_reason is None and index + 1 < max(len(stages), 2 + plan.sweep_rates):
                if reason := plan_stop_reason(plan, summary, outcome.stop_reason):
                    manifest["spec"]["plan_stopped_early"] = reason
                    say(f"plan stopped early: {reason}")
                    break
            if plan.sweep_rates and index == 1:
                rates = sweep_rates(plan, summaries[0], summaries[1])
                stages += [plan.rate_stage(2 + k, rate) for k, rate in enumerate(rates)]
                if not rates:
                    manifest["spec"]["plan_stopped_early"] = "no throughput measured in the first two stages"
            index += 1
    finally:
        for task in (ticker, hot):
            if task:
                task.cancel()
        await asyncio.gather(*(t for t in (ticker, hot) if t), return_exceptions=True)
        await client.http.close()
        if engine_metrics is not None:
            engine_metrics.close()
    return runner.stop_reason


def print_result(summary, manifest, run_dir, launcher: str, stop_reason: str | None) -> None:
    spec = manifest["spec"]
    if not summary["requests"]["measured"] and not summary["requests"]["warmup"]:
        return
    workload = spec["workload"]
    shape = (f"prompts from {workload['path']}" if workload["kind"] == "file"
             else f"golden set {workload['path']} ({workload['cases']} cases)" if workload["kind"] == "golden"
             else f"{workload['input_tokens']} input / {workload['output_tokens']} output tokens")  # fmt: skip
    heading = (f"Run {run_dir.path.name}: {manifest['status']}{'' if stop_reason is None else f' ({stop_reason})'}\n"
               f"  {spec['engine']} via {launcher}, model {spec['model']}, {spec['api']} API, {shape}")  # fmt: skip
    stages = summary["stages"]
    if len(stages) == 1:
        stage = spec["stages"][0]["label"] if spec["stages"] else ""
        print(summary_table(stages[0], f"{heading}, {stage}", str(run_dir.path), stages[0]["telemetry"],
                            busy_poll=spec.get("busy_poll", False)))  # fmt: skip
    else:
        print(stage_table(summary, heading, str(run_dir.path)))
    if spec.get("plan_stopped_early"):
        print(f"Plan         stopped early: {spec['plan_stopped_early']}")
    if summary.get("quality"):
        print(quality_lines(summary["quality"], str(run_dir.file(EVAL))))
