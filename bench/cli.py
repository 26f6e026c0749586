"""The `bench` command line: one subcommand per verb."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench import __version__
from bench.calibrate import cmd_calibrate
from bench.catalog import load_catalog
from bench.console import quality_lines, say, stage_table, summary_table
from bench.engines.llamacpp import LAUNCHERS, default_threads
from bench.errors import BenchError, UsageError
from bench.load.schedules import ARRIVALS
from bench.metrics import SLO_METRICS
from bench.plan import parse_list
from bench.results import RunDirectory
from bench.run import ENGINES, EXIT_INTERRUPTED, EXIT_OK, Interrupted, cmd_run

EXIT_CODES_HELP = """exit codes:
  0    the run completed
  2    bad input (unknown engine or model, invalid catalog, missing file, busy port); nothing was started
  3    the engine failed to start or died during the run (the run directory keeps what was measured)
  130  interrupted by Ctrl-C or SIGTERM (the run directory keeps what was measured)"""


BUSY_POLL_HELP = (
    "keep the client's event loop from ever sleeping: removes the kernel's (and a VM's) wake-up latency from "
    "timestamps at the cost of one busy core; measured on a 2-core VM: p99 TTFT error 0.6-2.7 ms idle, "
    "0.04-0.12 ms busy-polling. Best when the client has a core to itself (the default --threads leaves one)"
)


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
        aliases=["eval"],
        help="launch an engine with a model, drive load at it, write results/<run_id>/ (eval: a golden set)",
        description="Launch an engine with a catalog model on loopback, wait until it answers, run the load plan "
        "(closed-loop streams, open-loop arrival rates, or a sweep; one or more stages), and write the run "
        "directory: manifest.json, requests.jsonl, telemetry.jsonl, summary.json, engine.log. "
        "Example: bench run --engine llamacpp --model gemma3-270m --concurrency 4 --requests 64. "
        "`bench eval --golden FILE` (or `bench run --golden FILE`) runs a golden set instead and scores each case.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    what = run.add_argument_group("what to run")
    what.add_argument("--engine", help=f"engine driver to launch: {', '.join(ENGINES)}")
    what.add_argument(
        "--endpoint",
        metavar="URL",
        help="attach to a running OpenAI-compatible server or hosted API "
        "instead of launching one (e.g. http://127.0.0.1:8000); --model is then the served model name",
    )
    what.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="with --endpoint: the environment variable holding the "
        "API key (sent as a bearer token; never written to results or logs)",
    )
    what.add_argument("--model", required=True, help="model name from the catalog (see `bench models`)")
    what.add_argument(
        "--catalog",
        type=Path,
        help="models.yaml to use (default: $BENCH_CATALOG, ./models.yaml, then the repository's)",
    )
    what.add_argument(
        "--api",
        choices=("completions", "chat", "ollama-generate", "ollama-chat"),
        help="override the catalog's API for the model",
    )

    load = run.add_argument_group(
        "load plan",
        "closed loop: --concurrency N or a list (1,2,4,8) run as consecutive stages; open loop: --rate R or a list, "
        "with --arrival and optionally --max-concurrency; --sweep N: a synchronous stage, a throughput stage, then "
        "N rates evenly between them (as GuideLLM's sweep). Every stage is bounded by --requests and/or --duration.",
    )
    load.add_argument("--concurrency", default="4", help="closed-loop streams, or a list of stages (default 4)")
    load.add_argument("--rate", help="open-loop arrival rate(s) in requests/s, e.g. 2 or 1,2,4")
    load.add_argument(
        "--arrival", default="poisson", help=f"open-loop arrivals: {', '.join(ARRIVALS)} (default poisson)"
    )
    load.add_argument(
        "--burstiness",
        type=_positive_float,
        default=1.0,
        help="gamma shape k: CV of gaps = 1/sqrt(k); 1 is Poisson, below 1 is burstier",
    )
    load.add_argument(
        "--max-concurrency",
        type=_positive_int,
        help="open loop: most requests in flight; the "
        "wait is recorded as client queue. With --sweep: the throughput stage's streams",
    )
    load.add_argument(
        "--sweep",
        type=int,
        metavar="N",
        help="sweep with N open-loop rates between the synchronous and throughput stages",
    )
    load.add_argument(
        "--requests",
        type=_positive_int,
        help="measured requests per stage, conversations with --turns (default 64; 1000 as a bound with --duration)",
    )
    load.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop sending measured requests of a stage after this many seconds",
    )
    load.add_argument(
        "--warmup",
        metavar="N|Ns",
        help="per stage, before the measured requests: N requests or N "
        "seconds (e.g. 5s); kept on disk, excluded from metrics (default: one per closed-loop stream)",
    )
    load.add_argument(
        "--cooldown",
        metavar="N|Ns",
        help="per stage, after the measured requests: keeps the load up "
        "while they finish; kept on disk, excluded from metrics (default none)",
    )
    load.add_argument("--max-errors", type=_non_negative_int, help="stop a stage after more errors than this")
    load.add_argument(
        "--max-error-rate",
        type=float,
        metavar="FRACTION",
        help="stop a stage when this fraction of its finished requests failed (after 10)",
    )
    load.add_argument(
        "--slo",
        metavar="SPEC",
        help=f"service-level objectives, any of {', '.join(SLO_METRICS)}: "
        "e.g. ttft=500ms,tpot=50ms,e2e=10s (units us, ms, s); adds goodput and SLO fractions",
    )
    load.add_argument(
        "--slo-percentile",
        type=float,
        default=99.0,
        help="percentile a stage must meet the SLOs at to count as compliant (default 99)",
    )
    load.add_argument(
        "--stop-slo-fraction",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="a multi-stage plan stops after a stage where fewer requests met every SLO (default 0.5)",
    )

    work = run.add_argument_group("workload")
    work.add_argument(
        "--input-tokens",
        default="128",
        metavar="LEN",
        help="prompt length by the served model's tokenizer: N, uniform:MIN:MAX or normal:MEAN:STD (default 128)",
    )
    work.add_argument(
        "--output-tokens",
        dest="output_tokens_spec",
        default="64",
        metavar="LEN",
        help="tokens to generate (max_tokens), same forms (default 64)",
    )
    work.add_argument("--prefix-count", type=_non_negative_int, default=0, help="N distinct shared prefixes ...")
    work.add_argument(
        "--prefix-tokens",
        type=_non_negative_int,
        default=0,
        help="... of P tokens each, reused round-robin to show prefix caching; part of --input-tokens. Models with "
        "sliding-window attention (Gemma 3) reuse prefixes on llama.cpp only with --engine-arg swa_full=true",
    )
    work.add_argument(
        "--turns",
        type=_positive_int,
        default=1,
        help="conversations of K turns, each prompt holding the earlier turns and answers; --requests then "
        "counts conversations (default 1)",
    )
    work.add_argument(
        "--no-ignore-eos",
        action="store_true",
        help="let the model stop at end-of-sequence (default: ask the engine to ignore EOS so "
        "every request generates its max_tokens)",
    )
    work.add_argument(
        "--prompts",
        type=Path,
        metavar="JSONL",
        help="prompts from a file instead of synthetic ones: "
        'one {"prompt": ...} or {"messages": [...]} per line, optional "max_tokens"',
    )
    work.add_argument(
        "--golden",
        type=Path,
        metavar="JSONL",
        help="run a golden set (cases with checks; see bench/quality.py) once, with temperature 0 and the "
        "model free to stop; each case's verdict goes to eval.json, the success rate with its Wilson interval "
        "to summary.json. `bench eval --golden FILE ...` is the same",
    )
    work.add_argument("--seed", type=int, default=0, help="seed for prompts, arrivals and sampling (default 0)")
    work.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    work.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="a request taking longer is recorded as failed (default 600)",
    )

    vllm = run.add_argument_group("vLLM engine (--engine vllm; the model is a Hugging Face folder)")
    vllm.add_argument("--dtype", default="auto", help="weights and activations dtype (default auto)")
    vllm.add_argument("--max-model-len", type=_positive_int, help="context length the server allows")
    vllm.add_argument("--gpu-memory-utilization", type=float, help="fraction of GPU memory vLLM may take")
    vllm.add_argument("--tensor-parallel-size", type=_positive_int, help="GPUs to shard the model over")
    vllm.add_argument("--quantization", help="quantization method, e.g. awq, gptq, fp8")
    vllm.add_argument("--max-num-seqs", type=_positive_int, help="most sequences in one batch")
    vllm.add_argument(
        "--prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="turn automatic prefix caching on or off (default: vLLM's own)",
    )
    vllm.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / compilation")
    vllm.add_argument(
        "--cpu-kv-cache-gib",
        type=_positive_int,
        default=1,
        help="KV cache size on CPU builds (VLLM_CPU_KVCACHE_SPACE; default 1)",
    )
    vllm.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the engine process, repeatable",
    )

    oll = run.add_argument_group(
        "Ollama engine (--engine ollama; --threads, --parallel, --ctx-size, --gpu-layers apply)"
    )
    oll.add_argument(
        "--ollama-binary", default="ollama", metavar="PATH", help="the ollama executable (default: on PATH)"
    )
    oll.add_argument(
        "--ollama-tag", metavar="NAME", help="use a model Ollama already has instead of importing the catalog's GGUF"
    )
    oll.add_argument(
        "--ollama-openai",
        action="store_true",
        help="send requests to Ollama's OpenAI-compatible /v1 path instead of its native /api/generate and /api/chat",
    )
    oll.add_argument("--keep-alive", default="10m", help="how long Ollama keeps the model loaded (default 10m)")

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
        help="Python that runs the engine: with xllamacpp or llama-cpp-python (default: this one), or vLLM's own "
        "environment (default .venv-vllm/bin/python, made by scripts/setup_vllm.sh)",
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
    eng.add_argument("--parallel", type=_positive_int, help="parallel slots (default: the most streams in the plan)")
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
    eng.add_argument(
        "--hardware",
        metavar="NAME",
        help="the hardware entry in models.yaml whose datasheet limits the efficiency figures use (default: the "
        "GPU NVML names when layers are offloaded, else the CPU's bandwidth measured at run start)",
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
    out.add_argument("--busy-poll", action="store_true", help=BUSY_POLL_HELP)
    out.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="a calibration.json from `bench calibrate`, "
        "copied into the manifest so the run carries the client's measured timing error",
    )
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

    cal = sub.add_parser(
        "calibrate",
        help="measure the load generator's own timing error against a loopback server with known timing",
        description="Start a loopback streaming server whose TTFT, inter-token gap and length are set exactly and "
        "which records when it wrote each token; drive it with this rig's client at several stream counts; report "
        "the client's error (measured minus truth) for TTFT and TPOT at p50 and p99, tokens/s delivered, and the "
        "most streams whose p99 TTFT error stays within 1 ms. The server and the client share this machine's cores.",
    )
    cal.add_argument(
        "--shape",
        nargs="+",
        choices=("latency", "capacity"),
        default=["latency", "capacity"],
        help="latency: TTFT 50 ms, gap 10 ms, 64 tokens at 1-256 streams; capacity: TTFT 5 ms, "
        "gap 1 ms, 256 tokens at 64 and 256 streams (default both)",
    )
    cal.add_argument(
        "--streams", type=lambda t: parse_list(t, "--streams"), help="stream counts to test, e.g. 1,64,256"
    )
    cal.add_argument(
        "--requests-per-stream",
        type=_positive_int,
        default=2,
        help="measured requests per stream at each level (at least 64 in all; default 2)",
    )
    cal.add_argument("--busy-poll", action="store_true", help=BUSY_POLL_HELP)
    cal.add_argument("--results-dir", type=Path, default=Path("results"), help="where the report folder goes")
    cal.add_argument("--run-id", help="name of the report folder (default calibration-<time>)")

    cost = sub.add_parser(
        "cost",
        help="price a run: self-hosted cost per token and task against API offers, break-even volume",
        description="Turn a run's measured throughput (its max SLO-compliant throughput when SLOs were set, else "
        "its fastest stage) and a hardware offer's price into cost per 1M tokens, per task and per successful "
        "task at a stated utilization, and compare monthly cost with each API offer in models.yaml. Writes "
        "cost.json into the run directory. Every price is printed with its source and date.",
    )
    cost.add_argument("run_dir", type=Path, help="a run directory written by `bench run`")
    cost.add_argument("--hardware-offer", required=True, metavar="NAME", help="a hardware_offers entry of models.yaml")
    _add_pricing_args(cost)

    report = sub.add_parser(
        "report",
        help="write the self-host-versus-API cost report (Markdown and self-contained HTML with plots)",
        description="Build report.md, report.html (self-contained: plots embedded, nothing fetched), plots/*.png "
        "and report.json from one or more run directories: latency against throughput by stage, self-hosted cost "
        "per 1M tokens and per (successful) task at a stated utilization, monthly cost against each API offer with "
        "the break-even volume, and telemetry over time. Every price is printed with its source and date. "
        "Example: bench report results/RUN --hardware-offer cpu-2-core-vm",
    )
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help="run directories written by `bench run`")
    report.add_argument(
        "--hardware-offer",
        required=True,
        action="append",
        metavar="NAME",
        help="hardware_offers entry the runs ran on: once for all runs, or once per run in order",
    )
    report.add_argument("--out", type=Path, help="report folder (default: RUN/report for one run, else "
                        "results/report-<time>)")  # fmt: skip
    _add_pricing_args(report)

    for verb, summary, extra in (
        ("compare", "write the comparison table of the catalog's candidates, from measured runs and catalog facts",
         "Writes compare.md and compare.json."),
        ("mdr", "write a model decision record (Markdown) from measured runs and catalog facts",
         "Sections: decision and context, candidates, evaluation, rationale, default and fallback, risks, review "
         "triggers. The default is the cheapest candidate per successful task among those that meet "
         "--min-success-rate on the golden set, unless --choose names one."),
    ):  # fmt: skip
        p = sub.add_parser(
            verb,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. Candidates come from models.yaml `candidates:`; runs "
            "are matched to them by model name (a golden run from `bench eval` gives task fit; a load run gives "
            "latency and throughput). Every cell says whether it was measured or read from the catalog. " + extra,
        )
        p.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN", help="run directories to draw figures from")
        p.add_argument("--candidate", action="append", default=[], metavar="NAME",
                       help="catalog candidates to include (default: all)")  # fmt: skip
        p.add_argument("--hardware-offer", metavar="NAME", help="hardware_offers entry that prices self-hosted runs")
        p.add_argument("--min-success-rate", type=float, default=0.9,
                       help="the golden-set success rate a candidate must reach (default 0.9)")  # fmt: skip
        p.add_argument("--out", type=Path, help=f"output file (default: results/{verb}-<date>.md)")
        if verb == "mdr":
            p.add_argument("--title", default="model choice", help="what is being decided")
            p.add_argument("--context", default="not given (--context TEXT: the task, its users and constraints)",
                           help="the task, its users and constraints, in a sentence or two")  # fmt: skip
            p.add_argument("--choose", metavar="NAME", help="the default model, chosen by hand (the record says so)")
        _add_pricing_args(p, api_offers=False)

    prices = sub.add_parser(
        "prices",
        help="import API prices from LiteLLM's bundled price map",
        description="Work with API prices. `bench prices import PATTERN...` reads the model price map that the "
        "litellm package ships (install it with `pip install --no-deps litellm`; no service is called), converts "
        "the chat and completion models whose names match the patterns into api_offers, and merges them into "
        "prices.yaml beside the catalog. The catalog loads that file; an api_offers entry of the same name in "
        "models.yaml overrides an imported one. Example: bench prices import gpt-4.1-mini 'claude-haiku-4-5*'",
    )
    prices_sub = prices.add_subparsers(dest="prices_command", metavar="ACTION", required=True)
    prices_import = prices_sub.add_parser("import", help="import offers matching shell-style patterns")
    prices_import.add_argument("patterns", nargs="+", metavar="PATTERN", help="LiteLLM model names or globs")
    prices_import.add_argument("--from", dest="from_file", type=Path, metavar="FILE",
                               help="a LiteLLM-format JSON price map to read instead of the installed one")  # fmt: skip
    prices_import.add_argument("--catalog", type=Path, help="the catalog whose prices.yaml to update")
    prices_import.add_argument("--out", type=Path, help="where to write (default: prices.yaml beside the catalog)")

    models = sub.add_parser("models", help="list the models in the catalog")
    models.add_argument("--catalog", type=Path, help="models.yaml to read")
    return parser


def _add_pricing_args(parser, api_offers: bool = True) -> None:
    """Prices and the task profile, shared by `bench cost`, `report`, `compare` and `mdr`."""
    if api_offers:
        parser.add_argument(
            "--api-offer", action="append", default=[], metavar="NAME", help="api_offers to compare (default: all)"
        )
    parser.add_argument("--catalog", type=Path, help="models.yaml to read prices from (and prices.yaml beside it)")
    task = parser.add_argument_group("task profile", "what one task is and how many there are; token counts default "
                                     "to the (first) run's measured means")  # fmt: skip
    task.add_argument("--tasks-per-month", type=float, default=1_000_000, help="monthly volume (default 1,000,000)")
    task.add_argument("--utilization", type=float, default=0.5, help="share of paid hours doing the work (default 0.5)")
    task.add_argument("--peak-to-average", type=float, default=1.0, help="traffic peak over its mean (default 1)")
    task.add_argument("--input-tokens", type=float, help="tokens in per task (default: the run's mean)")
    task.add_argument("--output-tokens", type=float, help="tokens out per task (default: the run's mean)")
    flow = parser.add_argument_group("API workflow terms", "the full monthly cost of a workflow; each defaults to 0")
    flow.add_argument("--reasoning-tokens", type=float, default=0.0, help="reasoning tokens per call, billed as output")
    flow.add_argument("--tool-calls", type=float, default=0.0, help="extra model calls per task (tool loops)")
    flow.add_argument(
        "--cached-input-share", type=float, help="share of input billed cached (default: the run's prefix-cache hits)"
    )
    flow.add_argument("--batch-share", type=float, default=0.0, help="share of tasks sent at the batch discount")
    flow.add_argument(
        "--retry-rate",
        type=float,
        default=0.0,
        help="extra API calls per task for failed or invalid outputs (the API model's own rate; the run's "
        "failures already count in $ per successful task)",
    )
    flow.add_argument("--escalation-rate", type=float, default=0.0, help="share of tasks escalated to a person")
    flow.add_argument("--human-review-cost", type=float, default=0.0, help="$ per escalated task")
    parser.add_argument(
        "--electricity-per-kwh", type=float, help="tariff for the energy cost of rented hardware (owned offers: theirs)"
    )


def _task_profile(args):
    from bench.cost import TaskProfile

    for flag in ("utilization", "cached_input_share", "batch_share", "retry_rate", "escalation_rate"):
        value = getattr(args, flag)
        if value is None:  # measured from the run
            continue
        low_ok = flag != "utilization" and value == 0
        if not (0 < value <= 1 or low_ok):
            raise UsageError(f"--{flag.replace('_', '-')} {value:g}: give a fraction between 0 and 1 (0.5 = 50%)")
    for flag in ("tasks_per_month", "peak_to_average", "reasoning_tokens", "tool_calls", "human_review_cost"):
        if getattr(args, flag) < 0 or (flag == "peak_to_average" and args.peak_to_average < 1):
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag):g}: must be "
                             + ("at least 1" if flag == "peak_to_average" else "0 or more"))  # fmt: skip
    return TaskProfile(
        input_tokens=args.input_tokens, output_tokens=args.output_tokens, tasks_per_month=args.tasks_per_month,
        peak_to_average=args.peak_to_average, utilization=args.utilization, reasoning_tokens=args.reasoning_tokens,
        tool_calls_per_task=args.tool_calls, cached_input_share=args.cached_input_share, batch_share=args.batch_share,
        retry_rate=args.retry_rate, escalation_rate=args.escalation_rate, human_review_cost=args.human_review_cost,
    )  # fmt: skip


def _pricing_catalog(args, hardware_offers: list[str]):
    """The catalog, the checked hardware offer names and the API offers to compare."""
    catalog, catalog_path = load_catalog(args.catalog)
    for name in hardware_offers:
        if name not in catalog.hardware_offers:
            known = ", ".join(sorted(catalog.hardware_offers)) or "none"
            raise UsageError(f"--hardware-offer {name!r} is not in {catalog_path} (offers: {known})")
    unknown = [name for name in args.api_offer if name not in catalog.api_offers]
    if unknown:
        raise UsageError(f"--api-offer {unknown[0]!r} is not in {catalog_path} or its prices.yaml (offers: "
                         f"{', '.join(sorted(catalog.api_offers)) or 'none'})")  # fmt: skip
    return catalog, args.api_offer or sorted(catalog.api_offers)


# -- other verbs ---------------------------------------------------------------------------------
def cmd_summarize(args) -> int:
    run_dir = RunDirectory(args.run_dir)
    manifest = run_dir.manifest()
    recomputed = run_dir.recompute_summary(manifest.get("spec"))
    on_disk = run_dir.summary() if run_dir.file("summary.json").exists() else None
    if args.write:
        run_dir.write_summary(recomputed)
    heading = f"Run {manifest.get('run_id')}: {manifest.get('status')} (recomputed from raw records)"
    stages = recomputed["stages"]
    if len(stages) == 1:
        print(summary_table(stages[0], heading, str(run_dir.path), recomputed["telemetry"]))
    else:
        print(stage_table(recomputed, heading, str(run_dir.path)))
    if recomputed.get("quality"):
        print(quality_lines(recomputed["quality"], str(run_dir.file("eval.json"))))
    if on_disk is None:
        say("summary.json: missing" + (", written" if args.write else "; --write to create it"))
    elif on_disk == recomputed:
        say("summary.json: matches the recomputation")
    else:
        say(
            "summary.json: differs from the recomputation" + (", replaced" if args.write else "; --write to replace it")
        )
    return EXIT_OK


def cmd_cost(args) -> int:
    from bench.cost import CostError, cost_report, priced_throughput, with_measured_tokens
    from bench.results import write_json_atomic

    task = _task_profile(args)
    catalog, api_names = _pricing_catalog(args, [args.hardware_offer])
    run_dir = RunDirectory(args.run_dir)
    summary = run_dir.summary()
    try:
        measured = priced_throughput(summary)
        report = cost_report(measured, args.hardware_offer, catalog.hardware_offers[args.hardware_offer],
                             {n: catalog.api_offers[n] for n in api_names}, with_measured_tokens(task, measured),
                             args.electricity_per_kwh)  # fmt: skip
    except CostError as exc:
        raise UsageError(f"{args.run_dir}: {exc}") from None
    write_json_atomic(run_dir.file("cost.json"), report)
    print(format_cost(report))
    return EXIT_OK


def cmd_report(args) -> int:
    import time

    from bench.report import build_report, write_report

    task = _task_profile(args)
    catalog, api_names = _pricing_catalog(args, args.hardware_offer)
    out = args.out
    if out is None:
        out = (
            args.run_dirs[0] / "report"
            if len(args.run_dirs) == 1
            else Path("results") / time.strftime("report-%Y%m%d-%H%M%S")
        )
    data = build_report(args.run_dirs, args.hardware_offer, catalog, api_names, task, args.electricity_per_kwh)
    say(f"drawing the plots and writing the report of {len(args.run_dirs)} run(s) to {out}")
    paths = write_report(data, out)
    for warning in data["warnings"]:
        say(f"warning: {warning}")
    print(f"report  {paths['markdown']}\nhtml    {paths['html']}  (self-contained)\nplots   {out / 'plots'}")
    return EXIT_OK


def format_cost(report) -> str:
    from bench.console import money

    tp, sh, task = report["throughput"], report["self_hosted"], report["task"]

    def volume(v):
        return (
            "never (the API is cheaper per task than a fully used instance)" if v is None else f"{v:,.0f} tasks/month"
        )

    lines = [
        f"Priced throughput  {tp['requests_per_s']:.3f} req/s, {tp['output_tokens_per_s']:,.1f} output tok/s "
        f"({tp['basis']}: stage {tp['stage']}, {tp['label']}); success rate {tp['success_rate']:.0%}",
        f"Task               {task['input_tokens']:,.0f} input + {task['output_tokens']:,.0f} output tokens; "
        f"{task['tasks_per_month']:,.0f} tasks/month, peak/average {task['peak_to_average']:g}",
        f"Self-hosted        {sh['offer']} at {money(sh['hourly'])}/h ({sh['price_source']}, as of {sh['as_of']}), "
        f"utilization {sh['utilization']:.0%}",
        f"                   {money(sh['per_1m_output_tokens'])} per 1M output tokens"
        + (f" (95% CI {money(sh['per_1m_output_tokens_ci95'][0])}-{money(sh['per_1m_output_tokens_ci95'][1])})"
           if sh.get("per_1m_output_tokens_ci95") else "")
        + f", {money(sh['per_1m_total_tokens'])} per 1M total tokens",
        f"                   {money(sh['per_task'])} per task, {money(sh['per_successful_task'])} per successful task;"
        f" {sh['instances']} instance(s), {money(sh['monthly'])}/month",
        "                   per task by utilization: "
        + ", ".join(f"{k} {money(v)}" for k, v in sh["per_task_by_utilization"].items()),
        "",
    ]  # fmt: skip
    if not report["apis"]:
        lines.append("No API offers in the catalog to compare with (add api_offers to models.yaml).")
    for api in report["apis"]:
        lines.append(f"{api['offer']:<30} {money(api['per_task'])} per task, {money(api['monthly'])}/month "
                     f"({api['price_source']}, as of {api['as_of']})")  # fmt: skip
        by_price = " / ".join(volume(api["break_even_by_price"][k]).split(" (")[0] for k in ("-50%", "+50%"))
        lines.append(f"{'':<30} break-even {volume(api['break_even_tasks_per_month'])}; at API prices -50%/+50%: "
                     f"{by_price}")  # fmt: skip
    return "\n".join(lines)


def cmd_prices(args) -> int:
    from bench.catalog import PRICE_FILE, default_catalog_path
    from bench.prices import import_prices

    catalog_path = args.catalog or default_catalog_path()
    out = args.out or catalog_path.parent / PRICE_FILE
    offers = import_prices(args.patterns, out, args.from_file)
    load_catalog(catalog_path)  # the merged catalog must still load
    for name, offer in sorted(offers.items()):
        print(f"{name:40} ${offer['input_per_1m']:g} in / ${offer['output_per_1m']:g} out per 1M tokens "
              f"({offer['source']}, as of {offer['as_of']})")  # fmt: skip
    say(f"{len(offers)} offer(s) written to {out}; models.yaml entries of the same name override them")
    return EXIT_OK


def cmd_decision(args) -> int:
    """bench compare and bench mdr."""
    import datetime

    from bench.decision import assess, comparison_blocks, mdr_blocks
    from bench.report.render import markdown
    from bench.results import write_atomic, write_json_atomic

    if not 0 < args.min_success_rate <= 1:
        raise UsageError(f"--min-success-rate {args.min_success_rate:g}: give a fraction between 0 and 1")
    task = _task_profile(args)
    catalog, _ = load_catalog(args.catalog)
    names = args.candidate or sorted(catalog.candidates)
    if not names:
        raise UsageError("the catalog has no candidates: add a `candidates:` section to models.yaml")
    assessment = assess(catalog, args.run_dirs, names, args.hardware_offer, task, args.min_success_rate)
    if args.command == "compare":
        blocks = comparison_blocks(assessment)
    else:
        blocks = mdr_blocks(assessment, args.title, args.context, args.choose)
    out = args.out or Path("results") / f"{args.command}-{datetime.date.today():%Y%m%d}.md"
    text = markdown(blocks)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text)
    write_json_atomic(out.with_suffix(".json"), assessment)
    print(text)
    say(f"written: {out} (and {out.with_suffix('.json').name}, the figures behind it)")
    return EXIT_OK


def cmd_models(args) -> int:
    catalog, path = load_catalog(args.catalog)
    print(f"catalog {path}")
    for name, entry in sorted(catalog.models.items()):
        engines = ",".join(entry.engines) or "any"
        print(f"  {name:24} {entry.format:5} {entry.api:12} engines={engines:10} {entry.description}")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "eval": cmd_run,
    "summarize": cmd_summarize,
    "models": cmd_models,
    "calibrate": cmd_calibrate,
    "cost": cmd_cost,
    "prices": cmd_prices,
    "report": cmd_report,
    "compare": cmd_decision,
    "mdr": cmd_decision,
}


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
