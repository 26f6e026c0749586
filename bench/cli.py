"""The `bench` command line: one subcommand per verb."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import __version__
from bench.catalog import get_model, load_catalog, resolve_model_path, verified_digest
from bench.clients.http import HttpClient, perf_ns
from bench.clients.openai import OpenAIClient
from bench.console import Progress, say, summary_table
from bench.engines.base import EngineDriver
from bench.engines.llamacpp import LAUNCHERS, LlamaCppDriver, LlamaCppSettings, default_threads
from bench.errors import BenchError, EngineError, UsageError
from bench.hardware import inventory, software
from bench.load import prompts
from bench.load.runner import ClosedLoop
from bench.metrics import summarize_run
from bench.results import REQUESTS, TELEMETRY, JsonlAppender, RunDirectory
from bench.telemetry.process import ProcessSampler

ENGINES = ("llamacpp",)
EXIT_OK, EXIT_USAGE, EXIT_ENGINE, EXIT_INTERRUPTED = 0, 2, 3, 130
EXIT_CODES_HELP = """exit codes:
  0    the run completed
  2    bad input (unknown engine or model, invalid catalog, missing file, busy port); nothing was started
  3    the engine failed to start or died during the run (the run directory keeps what was measured)
  130  interrupted by Ctrl-C or SIGTERM (the run directory keeps what was measured)"""


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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bench",
        description="Benchmark self-hosted LLM inference with real engines: latency, throughput, resources.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"selfhost-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="launch an engine with a model, drive load at it, write results/<run_id>/",
        description="Launch an engine with a catalog model on loopback, wait until it answers, run a "
        "closed-loop load (N concurrent streams, each sending its next request when the last ends), "
        "and write the run directory: manifest.json, requests.jsonl, telemetry.jsonl, summary.json, engine.log.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    what = run.add_argument_group("what to run")
    what.add_argument("--engine", required=True, help=f"engine driver: {', '.join(ENGINES)}")
    what.add_argument("--model", required=True, help="model name from the catalog (see `bench models`)")
    what.add_argument(
        "--catalog",
        type=Path,
        help="models.yaml to use (default: $BENCH_CATALOG, ./models.yaml, then the repository's)",
    )
    what.add_argument("--api", choices=("completions", "chat"), help="override the catalog's API for the model")

    load = run.add_argument_group("load")
    load.add_argument("--concurrency", type=_positive_int, default=4, help="concurrent streams (default 4)")
    load.add_argument("--requests", type=_positive_int, help="measured requests (default 64; 1000 with --duration)")
    load.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="also stop sending new measured requests after this many seconds",
    )
    load.add_argument(
        "--warmup",
        type=_non_negative_int,
        help="warmup requests run first and excluded from metrics (default: one per stream)",
    )
    load.add_argument(
        "--input-tokens",
        type=_positive_int,
        default=128,
        help="synthetic prompt length, counted with the served model's tokenizer (default 128)",
    )
    load.add_argument(
        "--output-tokens",
        type=_positive_int,
        default=64,
        help="tokens to generate per request (max_tokens; default 64)",
    )
    load.add_argument(
        "--no-ignore-eos",
        action="store_true",
        help="let the model stop at end-of-sequence (default: ask the engine to ignore EOS so "
        "every request generates --output-tokens)",
    )
    load.add_argument(
        "--prompts",
        type=Path,
        metavar="JSONL",
        help="prompts from a file instead of synthetic "
        'ones: one {"prompt": ...} or {"messages": [...]} per line, optional "max_tokens"',
    )
    load.add_argument("--seed", type=int, default=0, help="seed for prompts and sampling (default 0)")
    load.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    load.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="a request taking longer is recorded as failed (default 600)",
    )

    eng = run.add_argument_group("llama.cpp engine")
    eng.add_argument(
        "--launcher",
        default="auto",
        help=f"{', '.join(LAUNCHERS)} (default auto: xllamacpp if "
        "installed, else llama-server on PATH, else llama-cpp-python)",
    )
    eng.add_argument("--llama-server", metavar="PATH", help="llama-server binary to launch (e.g. a CUDA build)")
    eng.add_argument(
        "--engine-python",
        metavar="PATH",
        default=sys.executable,
        help="Python with xllamacpp or llama-cpp-python installed (default: this one)",
    )
    eng.add_argument(
        "--threads",
        type=_positive_int,
        default=default_threads(),
        help=f"generation threads (default {default_threads()}: physical cores minus one, so the load generator "
        "keeps a core and its timestamps are not delayed by engine threads; measured on 2 cores: 2 threads gave "
        "1.8x the throughput with a light client, 1 thread is steadier whenever anything else runs)",
    )
    eng.add_argument("--batch-threads", type=_positive_int, help="prompt-processing threads (default: --threads)")
    eng.add_argument("--parallel", type=_positive_int, help="parallel slots (default: --concurrency)")
    eng.add_argument(
        "--ctx-size",
        type=_positive_int,
        help="total context shared by the slots (default: enough for one request per slot)",
    )
    eng.add_argument("--gpu-layers", type=_non_negative_int, default=0, help="layers to offload to the GPU")
    eng.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the engine, repeatable (xllamacpp: NAME=VALUE of CommonParams)",
    )
    eng.add_argument("--host", default="127.0.0.1", help="address the engine binds (default 127.0.0.1)")
    eng.add_argument("--port", type=_positive_int, help="engine port (default: a free one)")
    eng.add_argument(
        "--ready-timeout",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for the model to answer (default 300)",
    )

    out = run.add_argument_group("output")
    out.add_argument("--results-dir", type=Path, default=Path("results"), help="where run directories go")
    out.add_argument("--run-id", help="name of the run directory (default: time, engine, model, random suffix)")
    out.add_argument(
        "--telemetry-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="process sampling interval (default 1)",
    )

    summ = sub.add_parser(
        "summarize",
        help="recompute a run's summary from requests.jsonl and telemetry.jsonl",
        description="Recompute summary.json from the raw records and print it; says whether "
        "it matches the summary.json on disk.",
    )
    summ.add_argument("run_dir", type=Path, help="a run directory written by `bench run`")
    summ.add_argument("--write", action="store_true", help="replace summary.json with the recomputed summary")

    models = sub.add_parser("models", help="list the models in the catalog")
    models.add_argument("--catalog", type=Path, help="models.yaml to read")
    return parser


# -- bench run -----------------------------------------------------------------------------------
def _build_requests(args, endpoint, prompt_rows, warmup_count: int, measured_count: int):
    if prompt_rows is not None:
        warmup = prompts.file_requests(
            prompt_rows, "warmup", warmup_count, args.output_tokens, start=len(prompt_rows) - warmup_count, first_id=0
        )
        measured = prompts.file_requests(
            prompt_rows, "measured", measured_count, args.output_tokens, start=0, first_id=warmup_count
        )
        return warmup, measured
    if endpoint.count_tokens is None:
        raise UsageError("this endpoint exposes no tokenizer, so synthetic prompts cannot be sized; use --prompts")

    def count(text: str) -> int:
        return endpoint.count_tokens(text, True)

    say(f"preparing {warmup_count + measured_count} prompts of {args.input_tokens} tokens (seed {args.seed}) ...")
    warmup = prompts.synthetic_requests(
        "warmup", warmup_count, args.input_tokens, args.output_tokens, args.seed, count, first_id=0
    )
    measured = prompts.synthetic_requests(
        "measured", measured_count, args.input_tokens, args.output_tokens, args.seed, count, first_id=warmup_count
    )
    return warmup, measured


def _make_driver(args, entry, model_path: Path, api: str) -> EngineDriver:
    if entry.engines and args.engine not in entry.engines:
        raise UsageError(f"--model {args.model} lists engines {entry.engines} in the catalog, not {args.engine}")
    if entry.format != "gguf":
        raise UsageError(f"--engine llamacpp serves GGUF files; model {args.model} has format {entry.format}")
    settings = LlamaCppSettings(
        model_path=model_path,
        launcher=args.launcher,
        server_binary=args.llama_server,
        python=args.engine_python,
        ctx_size=args.ctx_size,
        threads=args.threads,
        batch_threads=args.batch_threads,
        parallel=args.parallel or args.concurrency,
        gpu_layers=args.gpu_layers,
        extra_args=args.engine_arg,
        host=args.host,
        port=args.port,
        ready_timeout_s=args.ready_timeout,
        tokens_per_request=(0 if args.prompts else args.input_tokens) + args.output_tokens,
    )
    driver = LlamaCppDriver(settings, api)
    if driver.serializes_requests and args.concurrency > 1:
        raise UsageError(
            f"--concurrency {args.concurrency}: the {driver.launcher} server handles one request at a time, so "
            "this would measure queueing, not concurrency; use --concurrency 1 or --launcher xllamacpp"
        )
    return driver


def _run_id(engine: str, model: str) -> str:
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%d-%H%M%S}-{engine}-{model}-{secrets.token_hex(2)}"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _run_event_loop(coro_factory) -> Any:
    """Run on uvloop where installed: its lower per-event overhead tightens client timestamps."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_factory())


def cmd_run(args) -> int:
    if args.duration is None and args.requests is None:
        args.requests = 64
    measured_count = args.requests or 1000
    warmup_count = args.concurrency if args.warmup is None else args.warmup

    # Everything that can be wrong with the input is checked before anything starts or is written.
    catalog, catalog_path = load_catalog(args.catalog)
    entry = get_model(catalog, catalog_path, args.model)
    prompt_rows = prompts.load_prompt_file(args.prompts) if args.prompts else None
    api = args.api or entry.api
    if prompt_rows and api == "completions" and any("messages" in row for row in prompt_rows):
        raise UsageError(
            f"--prompts {args.prompts}: chat messages need --api chat; model {args.model} uses completions"
        )
    if args.engine not in ENGINES:
        raise UsageError(f"--engine {args.engine!r} is not known; choose one of: {', '.join(ENGINES)}")
    model_path = resolve_model_path(args.model, entry, catalog_path)
    driver = _make_driver(args, entry, model_path, api)
    say(f"model {args.model}: {model_path} (checking sha256 ...)")
    digest = verified_digest(args.model, entry, model_path, catalog_path)

    run_dir = RunDirectory.create(args.results_dir, args.run_id or _run_id(args.engine, args.model))
    anchor_perf, anchor_unix = perf_ns(), time.time_ns()
    manifest: dict[str, Any] = {
        "schema_version": 1,
        "run_id": run_dir.path.name,
        "status": "incomplete",
        "incomplete_reason": "the run did not finish (still running, or the rig itself was killed)",
        "started_at": _now_iso(),
        "ended_at": None,
        "command": sys.argv,
        "spec": {
            "engine": args.engine,
            "model": args.model,
            "api": api,
            "load": "closed-loop",
            "concurrency": args.concurrency,
            "requests": args.requests,
            "duration_s": args.duration,
            "warmup_requests": warmup_count,
            "input_tokens": None if args.prompts else args.input_tokens,
            "output_tokens": args.output_tokens,
            "ignore_eos": not args.no_ignore_eos,
            "prompts_file": str(args.prompts) if args.prompts else None,
            "seed": args.seed,
            "temperature": args.temperature,
            "request_timeout_s": args.request_timeout,
        },
        "model": {"name": args.model, "catalog": str(catalog_path), "entry": entry.model_dump(), "file": digest},
        "engine": driver.record(),
        "clock": {
            "anchor_perf_counter_ns": anchor_perf,
            "anchor_unix_ns": anchor_unix,
            "note": "record times are perf_counter_ns minus the anchor; add anchor_unix_ns for wall time",
        },
        "hardware": inventory(),
        "software": software(),
    }
    run_dir.write_manifest(manifest)

    requests_out = JsonlAppender(run_dir.file(REQUESTS))
    telemetry_out = JsonlAppender(run_dir.file(TELEMETRY))
    sampler: ProcessSampler | None = None
    stop_reason: str | None = None
    exit_code = EXIT_OK
    try:
        _install_signal_handlers()
        say(f"starting {args.engine} ({driver.launcher}) ...")
        endpoint = driver.start(run_dir.path)
        record = driver.record()
        manifest["engine"] = record
        run_dir.write_manifest(manifest)
        say(f"engine ready in {record.get('load_time_s', 0):.1f} s at {endpoint.base_url}")
        warmup, measured = _build_requests(args, endpoint, prompt_rows, warmup_count, measured_count)

        sampling: dict[str, Any] = {"temperature": args.temperature, "seed": args.seed}
        if endpoint.supports_ignore_eos and not args.no_ignore_eos:
            sampling["ignore_eos"] = True
        process = driver.process
        sampler = ProcessSampler(
            telemetry_out, anchor_perf, process.tree_pids if process else list, args.telemetry_interval
        )
        sampler.start()
        progress = Progress(
            {"warmup": len(warmup), "measured": len(measured)} if warmup else {"measured": len(measured)}
        )

        def sink(rec: dict[str, Any]) -> None:
            requests_out.append(rec)
            progress.add(rec)

        async def drive():
            client = OpenAIClient(
                HttpClient(endpoint.base_url, endpoint.headers),
                api,
                endpoint.model,
                sampling,
                args.request_timeout,
                anchor_perf,
                endpoint.count_tokens,
            )
            loop_runner = ClosedLoop(client, args.concurrency, sink, driver.failure)
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, loop_runner.request_stop, "interrupted by SIGINT")
            loop.add_signal_handler(signal.SIGTERM, loop_runner.request_stop, "interrupted by SIGTERM")
            ticker = asyncio.create_task(progress.ticker())
            try:
                return await loop_runner.run(warmup, measured, args.duration)
            finally:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
                await client.http.close()

        result = _run_event_loop(drive)
        _install_signal_handlers()  # asyncio restored the defaults when the loop closed
        stop_reason = result.stop_reason
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
        summary = summarize_run(run_dir.requests(), run_dir.telemetry())
        run_dir.write_summary(summary)
        manifest["engine"] = driver.record()
        manifest["ended_at"] = _now_iso()
        manifest["status"] = "complete" if stop_reason is None and exit_code == EXIT_OK else "incomplete"
        manifest["incomplete_reason"] = stop_reason if manifest["status"] == "incomplete" else None
        run_dir.write_manifest(manifest)

    if stop_reason is not None and exit_code == EXIT_OK:
        exit_code = EXIT_ENGINE if engine_failure else EXIT_INTERRUPTED
    kept = summary["requests"]
    heading = (
        f"Run {run_dir.path.name}: {manifest['status']}"
        f"{'' if stop_reason is None else f' ({stop_reason})'}\n"
        f"  {args.engine} via {driver.launcher}, model {args.model}, {api} API, concurrency {args.concurrency}, "
        f"{len(prompt_rows) if prompt_rows else args.input_tokens} {'prompts' if prompt_rows else 'input'} / "
        f"{args.output_tokens} output tokens"
    )
    if kept["measured"] or kept["warmup"]:
        print(summary_table(summary, heading, str(run_dir.path)))
    if exit_code == EXIT_ENGINE and engine_failure:
        process = driver.process
        say(
            f"error: run incomplete: {engine_failure}; kept {kept['successful'] + kept['failed']} finished "
            f"requests in {run_dir.file(REQUESTS)}; engine log {run_dir.file('engine.log')}, last lines:\n"
            f"{process.log_tail() if process else ''}"
        )
    elif exit_code == EXIT_INTERRUPTED:
        say(f"run incomplete: {stop_reason}; finished requests are kept in {run_dir.file(REQUESTS)}")
    return exit_code


# -- other verbs ---------------------------------------------------------------------------------
def cmd_summarize(args) -> int:
    run_dir = RunDirectory(args.run_dir)
    manifest = run_dir.manifest()
    recomputed = summarize_run(run_dir.requests(), run_dir.telemetry())
    on_disk = run_dir.summary() if run_dir.file("summary.json").exists() else None
    if args.write:
        run_dir.write_summary(recomputed)
    heading = f"Run {manifest.get('run_id')}: {manifest.get('status')} (recomputed from raw records)"
    print(summary_table(recomputed, heading, str(run_dir.path)))
    if on_disk is None:
        say("summary.json: missing" + (", written" if args.write else "; --write to create it"))
    elif on_disk == recomputed:
        say("summary.json: matches the recomputation")
    else:
        say(
            "summary.json: differs from the recomputation" + (", replaced" if args.write else "; --write to replace it")
        )
    return EXIT_OK


def cmd_models(args) -> int:
    catalog, path = load_catalog(args.catalog)
    print(f"catalog {path}")
    for name, entry in sorted(catalog.models.items()):
        engines = ",".join(entry.engines) or "any"
        print(f"  {name:24} {entry.format:5} {entry.api:12} engines={engines:10} {entry.description}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "summarize": cmd_summarize, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BenchError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except (KeyboardInterrupt, Interrupted):
        say("interrupted")
        return EXIT_INTERRUPTED
