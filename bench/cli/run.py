"""`bench run` and `bench eval`: flags (or a spec file) -> a RunSpec -> bench.run.execute -> the result printed.

Each flag names the spec field it sets (FLAGS); the parser, the help's defaults and the error messages
all come from that one table and from bench.spec, where the defaults and the checks live. A flag that
is not given leaves the field to the spec file (`--spec`) or to the spec's default.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bench.clients.http import LATE_READ_NS
from bench.console import display_for, say
from bench.errors import UsageError
from bench.format import pooling_table, quality_lines, search_line, stage_table, summary_table
from bench.results import EVAL, REQUESTS, read_yaml
from bench.run import EXIT_CODES, EXIT_ENGINE, EXIT_INTERRUPTED, EXIT_OK, RunResult, execute
from bench.spec import (
    APIS,
    ARRIVALS,
    ENGINE_KINDS,
    SLO_METRICS,
    LoadSpec,
    RunSpec,
    WorkloadSpec,
    dropped_beside_plan,
    field_at,
    has_field,
)
from bench.summary import RequestSummary

BUSY_POLL_HELP = (
    "keep the client's event loop from ever sleeping: removes the kernel's (and a VM's) wake-up latency from "
    "timestamps at the cost of one busy core (bench calibrate --busy-poll measures this mode, without it the "
    "default one)"
)


def exit_codes_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())


@dataclass(frozen=True)
class Flag:
    name: str
    path: str  # the spec field it sets, dotted
    help: str
    group: str
    metavar: str | None = None
    action: str | None = None  # store_true, append, or BooleanOptionalAction
    choices: tuple[str, ...] | None = None


WHAT, LOAD, WORKLOAD, VLLM, OLLAMA, LLAMACPP, OUTPUT = (
    "what to run",
    "load plan",
    "workload",
    "vLLM engine (--engine vllm; the model is a Hugging Face folder)",
    "Ollama engine (--engine ollama; --threads, --parallel, --ctx-size, --gpu-layers apply)",
    "llama.cpp engine",
    "output",
)
FLAGS = (
    Flag("--model", "model", "catalog model (see `bench models`); with --endpoint, the served model's name", WHAT),
    Flag(
        "--catalog",
        "catalog",
        "models.yaml to use (default: $BENCH_CATALOG, ./models.yaml, then the repository's)",
        WHAT,
        "FILE",
    ),
    Flag(
        "--api",
        "api",
        "the API to send requests in (default: the catalog's for the model, else chat)",
        WHAT,
        choices=APIS,
    ),
    Flag(
        "--api-key-env",
        "engine.api_key_env",
        "with --endpoint: the environment variable holding the API key (sent "
        "as a bearer token; never written to results or logs)",
        WHAT,
        "NAME",
    ),
    Flag(
        "--concurrency", "load.concurrency", "closed-loop streams, or a list run as consecutive stages (1,2,4,8)", LOAD
    ),
    Flag("--rate", "load.rate", "open-loop arrival rate(s) in requests/s, e.g. 2 or 1,2,4", LOAD),
    Flag("--arrival", "load.arrival", "open-loop arrivals", LOAD, choices=ARRIVALS),
    Flag(
        "--burstiness", "load.burstiness", "gamma shape k: CV of gaps = 1/sqrt(k); 1 is Poisson, below 1 burstier", LOAD
    ),
    Flag(
        "--max-concurrency",
        "load.max_concurrency",
        "open loop: most requests in flight (the wait is recorded as "
        "client queue); with --sweep: the throughput stage's streams",
        LOAD,
    ),
    Flag(
        "--sweep",
        "load.sweep",
        "a synchronous stage, a throughput stage, then N open-loop rates between them",
        LOAD,
        "N",
    ),
    Flag(
        "--requests",
        "load.requests",
        "measured requests per stage (conversations with --turns); default 64, 1000 "
        "as a bound with --duration, a golden set's size with --golden",
        LOAD,
    ),
    Flag(
        "--duration",
        "load.duration_s",
        "stop sending a stage's measured requests after this many seconds",
        LOAD,
        "SECONDS",
    ),
    Flag(
        "--warmup",
        "load.warmup",
        "per stage, before the measured requests: N requests or N seconds (5s); kept on "
        "disk, excluded from metrics (default: one per closed-loop stream; none for golden sets)",
        LOAD,
        "N|Ns",
    ),
    Flag(
        "--cooldown",
        "load.cooldown",
        "per stage, after the measured requests: keeps the load up while they finish",
        LOAD,
        "N|Ns",
    ),
    Flag(
        "--max-errors",
        "load.max_errors",
        "stop a stage after more errors than this, warmup included (the run then exits 4)",
        LOAD,
    ),
    Flag(
        "--max-error-rate",
        "load.max_error_rate",
        "stop a stage when this fraction of its finished requests failed (judged after 10; the run then exits 4)",
        LOAD,
        "FRACTION",
    ),
    Flag(
        "--slo",
        "load.slo",
        f"service-level objectives, any of {', '.join(SLO_METRICS)}: e.g. "
        "ttft=500ms,tpot=50ms,e2e=10s (units us, ms, s); adds goodput and SLO fractions",
        LOAD,
        "SPEC",
    ),
    Flag("--slo-percentile", "load.slo_percentile", "percentile a stage must meet the SLOs at to be compliant", LOAD),
    Flag(
        "--stop-slo-fraction",
        "load.stop_slo_fraction",
        "a multi-stage plan stops after a stage where fewer requests met every SLO",
        LOAD,
        "FRACTION",
    ),
    Flag(
        "--request-timeout",
        "load.request_timeout_s",
        "a request taking longer is recorded as failed (default: 10x "
        "the time the longest request takes on a slow machine, at least 30 s; printed at start)",
        LOAD,
        "SECONDS",
    ),
    Flag(
        "--ramp",
        "load.ramp_s",
        "raise each stage's streams or rate linearly over this many seconds; requests "
        "sent during the ramp are warmup unless --measure-ramp",
        LOAD,
        "SECONDS",
    ),
    Flag(
        "--ramp-from",
        "load.ramp_from",
        "the ramp's start: streams (closed loop, default 1) or req/s (open loop, default 0)",
        LOAD,
        "N",
    ),
    Flag(
        "--measure-ramp",
        "load.measure_ramp",
        "count the requests sent during the ramp as measured",
        LOAD,
        action="store_true",
    ),
    Flag(
        "--search-rate",
        "load.search_rate",
        "find the highest arrival rate in LOW:HIGH req/s whose --slo holds at "
        "--slo-percentile, by bisection on measured stages (each long enough for the percentile)",
        LOAD,
        "LOW:HIGH",
    ),
    Flag(
        "--search-precision",
        "load.search_precision",
        "with --search-rate: stop when the bracket is this narrow, relative (5%% or 0.05)",
        LOAD,
        "FRACTION",
    ),
    Flag(
        "--load-workers",
        "load.workers",
        "with --endpoint: N load generators, Ray actors (one CPU each, spread over the nodes) each driving its "
        "share of the streams or rate; records merged on one clock (pip install .[ray])",
        LOAD,
        "N",
    ),
    Flag(
        "--ray",
        "load.ray_address",
        "with --endpoint: the Ray cluster of the load workers (auto, HOST:PORT, ray://HOST:10001; default with "
        "--load-workers: a private Ray instance on this machine); alone, one load worker runs there",
        LOAD,
        "ADDRESS",
    ),
    Flag(
        "--input-tokens",
        "workload.input_tokens",
        "prompt length by the served model's tokenizer: N, uniform:MIN:MAX or normal:MEAN:STD",
        WORKLOAD,
        "LEN",
    ),
    Flag("--output-tokens", "workload.output_tokens", "tokens to generate (max_tokens), same forms", WORKLOAD, "LEN"),
    Flag("--prefix-count", "workload.prefix_count", "N distinct shared prefixes ...", WORKLOAD),
    Flag(
        "--prefix-tokens",
        "workload.prefix_tokens",
        "... of P tokens each, reused round-robin to show prefix caching; part of --input-tokens",
        WORKLOAD,
    ),
    Flag(
        "--turns",
        "workload.turns",
        "conversations of K turns, each prompt holding the earlier turns and answers; "
        "--requests then counts conversations",
        WORKLOAD,
    ),
    Flag(
        "--no-ignore-eos",
        "workload.ignore_eos",
        "let the model stop at end-of-sequence (default: ask the engine to "
        "ignore EOS so every request generates its max_tokens, except golden sets)",
        WORKLOAD,
        action="store_false",
    ),
    Flag(
        "--prompts",
        "workload.prompts",
        'prompts from a file: one {"prompt": ...} or {"messages": [...]} per line, optional "max_tokens"',
        WORKLOAD,
        "JSONL",
    ),
    Flag(
        "--golden",
        "workload.golden",
        "run a golden set (cases with checks; see bench/quality.py) once, with "
        "temperature 0 and the model free to stop; verdicts go to eval.json",
        WORKLOAD,
        "JSONL",
    ),
    Flag(
        "--trace",
        "workload.trace",
        "replay a trace: arrivals and lengths from a Mooncake JSONL, an Azure LLM "
        "inference CSV or this rig's own JSONL (t_s, input_tokens, output_tokens, optional prompt); see "
        "bench/load/trace.py",
        WORKLOAD,
        "FILE",
    ),
    Flag(
        "--trace-speed", "workload.trace_speed", "replay the trace this many times faster (0.5: slower)", WORKLOAD, "X"
    ),
    Flag(
        "--trace-window",
        "workload.trace_window",
        "take the trace's requests from START to END seconds",
        WORKLOAD,
        "START:END",
    ),
    Flag("--trace-block-tokens", "workload.trace_block_tokens", "prompt tokens per Mooncake hash id", WORKLOAD, "N"),
    Flag(
        "--batch-size",
        "workload.batch_size",
        "--api embeddings or rerank: inputs per request (texts embedded, or documents scored against one "
        "query), each --input-tokens long; a list (1,8,32) runs one stage per batch size and stream count",
        WORKLOAD,
        "N",
    ),
    Flag("--query-tokens", "workload.query_tokens", "--api rerank: the query's length in tokens", WORKLOAD, "N"),
    Flag("--seed", "seed", "seed for prompts, arrivals and sampling", WORKLOAD),
    Flag("--temperature", "workload.temperature", "sampling temperature", WORKLOAD),
    Flag("--dtype", "engine.dtype", "weights and activations dtype", VLLM),
    Flag("--max-model-len", "engine.max_model_len", "context length the server allows", VLLM),
    Flag("--gpu-memory-utilization", "engine.gpu_memory_utilization", "fraction of GPU memory vLLM may take", VLLM),
    Flag("--tensor-parallel-size", "engine.tensor_parallel_size", "GPUs to shard the model over", VLLM),
    Flag("--quantization", "engine.quantization", "quantization method, e.g. awq, gptq, fp8", VLLM),
    Flag("--max-num-seqs", "engine.max_num_seqs", "most sequences in one batch", VLLM),
    Flag(
        "--prefix-caching",
        "engine.prefix_caching",
        "turn automatic prefix caching on or off (default: vLLM's own)",
        VLLM,
        action="boolean",
    ),
    Flag("--enforce-eager", "engine.enforce_eager", "no CUDA graphs / compilation", VLLM, action="store_true"),
    Flag("--cpu-kv-cache-gib", "engine.cpu_kv_cache_gib", "KV cache size on CPU builds (VLLM_CPU_KVCACHE_SPACE)", VLLM),
    Flag(
        "--engine-env",
        "engine.env",
        "environment variable for the engine process, repeatable",
        VLLM,
        "NAME=VALUE",
        action="append",
    ),
    Flag("--ollama-binary", "engine.binary", "the ollama executable (default: on PATH)", OLLAMA, "PATH"),
    Flag(
        "--ollama-tag",
        "engine.tag",
        "use a model Ollama already has instead of importing the catalog's GGUF",
        OLLAMA,
        "NAME",
    ),
    Flag(
        "--ollama-openai",
        "engine.openai_compatible",
        "send requests to Ollama's OpenAI-compatible /v1 path instead of its native /api/generate and /api/chat",
        OLLAMA,
        action="store_true",
    ),
    Flag("--keep-alive", "engine.keep_alive", "how long Ollama keeps the model loaded", OLLAMA),
    Flag(
        "--launcher",
        "engine.launcher",
        "how llama.cpp starts (auto: llama-server on PATH or --llama-server, else xllamacpp, else llama-cpp-python)",
        LLAMACPP,
        choices=("auto", "xllamacpp", "llama-server", "llama-cpp-python"),
    ),
    Flag(
        "--llama-server", "engine.server_binary", "llama-server binary to launch (e.g. a CUDA build)", LLAMACPP, "PATH"
    ),
    Flag(
        "--engine-python",
        "engine.python",
        "Python that runs the engine: xllamacpp or llama-cpp-python (default: "
        "this one), or vLLM's own environment (default .venv-vllm/bin/python, from scripts/setup_vllm.sh)",
        LLAMACPP,
        "PATH",
    ),
    Flag(
        "--threads",
        "engine.threads",
        "generation threads (default: physical cores minus one, so the load "
        "generator keeps a core; measured on 2 cores: 2 threads gave 1.8x the throughput with a light client, "
        "1 thread is steadier whenever anything else runs)",
        LLAMACPP,
    ),
    Flag("--batch-threads", "engine.batch_threads", "prompt-processing threads (default: --threads)", LLAMACPP),
    Flag("--parallel", "engine.parallel", "parallel slots (default: the most streams in the plan)", LLAMACPP),
    Flag(
        "--ctx-size",
        "engine.ctx_size",
        "total context shared by the slots (default: enough for the longest request in every slot); Ollama gets "
        "num_ctx = this / --parallel per request",
        LLAMACPP,
    ),
    Flag(
        "--swa-full",
        "engine.swa_full",
        "full-size sliding-window cache, so Gemma 3 and other sliding-window models "
        "reuse prefixes (default: on when the workload shares prefixes)",
        LLAMACPP,
        action="boolean",
    ),
    Flag("--gpu-layers", "engine.gpu_layers", "layers to offload to the GPU", LLAMACPP),
    Flag(
        "--engine-arg",
        "engine.extra_args",
        "extra argument for the engine, repeatable (xllamacpp: NAME=VALUE of CommonParams)",
        LLAMACPP,
        "ARG",
        action="append",
    ),
    Flag(
        "--hardware",
        "hardware",
        "the models.yaml hardware entry whose datasheet limits the efficiency figures use "
        "(default: the GPU NVML names when layers are offloaded, else the CPU's bandwidth measured at start)",
        LLAMACPP,
        "NAME",
    ),
    Flag("--host", "engine.host", "address the engine binds (default 127.0.0.1)", LLAMACPP),
    Flag("--port", "engine.port", "engine port (default: a free one)", LLAMACPP),
    Flag(
        "--ready-timeout",
        "engine.ready_timeout_s",
        "how long to wait for the model to answer (default 300 s; vLLM 600 s)",
        LLAMACPP,
        "SECONDS",
    ),
    Flag("--results-dir", "output.results_dir", "where run directories go", OUTPUT, "DIR"),
    Flag(
        "--run-id", "output.run_id", "name of the run directory (default: time, engine, model, random suffix)", OUTPUT
    ),
    Flag("--busy-poll", "client.busy_poll", BUSY_POLL_HELP, OUTPUT, action="store_true"),
    Flag(
        "--calibration",
        "calibration",
        "a calibration.json from `bench calibrate`, copied into the manifest so the "
        "run carries the client's measured timing error",
        OUTPUT,
        "FILE",
    ),
    Flag("--telemetry-interval", "telemetry.interval_s", "process and GPU sampling interval", OUTPUT, "SECONDS"),
)
BY_PATH = {f.path: f for f in FLAGS}
MODELS = {"load": LoadSpec, "workload": WorkloadSpec, "": RunSpec}


def _field_default(path: str) -> Any:
    """The spec's default for a dotted field path (engine fields: the llama.cpp engine's), or None."""
    from bench.spec import LlamaCppEngine, OllamaEngine, VllmEngine

    head, _, leaf = path.rpartition(".")
    if head == "engine":
        for model in (LlamaCppEngine, VllmEngine, OllamaEngine):
            if leaf in model.model_fields:
                return model.model_fields[leaf].get_default(call_default_factory=True)
        return None
    model: type[BaseModel] = RunSpec
    for part in head.split(".") if head else []:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    value = model.model_fields[leaf].get_default(call_default_factory=True)
    return value


def _default_text(flag: Flag) -> str:
    if flag.action in ("store_true", "store_false", "append") or "(default" in flag.help:
        return ""
    value = _field_default(flag.path)
    if value is None or value == [] or value == {} or type(value).__name__ == "PydanticUndefinedType":
        return ""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f" (default {value})"


def add_run_parser(sub, epilog: str) -> None:
    for verb, summary in (
        ("run", "launch an engine with a model, drive load at it, write results/<run_id>/"),
        ("eval", "run a golden set (--golden FILE) on an engine and score each case"),
    ):
        p = sub.add_parser(
            verb,
            help=summary,
            argument_default=argparse.SUPPRESS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=epilog,
            description=f"{summary[0].upper()}{summary[1:]}: start the engine with a catalog model on loopback (or "
            "attach to a running server with --endpoint), wait until it answers, run the load plan (closed-loop "
            "streams, open-loop arrival rates, or a sweep; one or more stages), and write the run directory: "
            "manifest.json, requests.jsonl, telemetry.jsonl, summary.json, engine.log. Flags override a --spec file, "
            "whose fields are those of bench.spec.RunSpec. Example: bench run --engine llamacpp --model gemma3-270m "
            "--concurrency 4 --requests 64",
        )
        p.add_argument(
            "--spec",
            type=Path,
            metavar="FILE",
            help="a run spec (YAML or JSON; see bench/spec.py); flags given as well override its fields",
        )
        p.add_argument("--engine", help=f"engine to launch: {', '.join(ENGINE_KINDS)}")
        p.add_argument(
            "--endpoint",
            metavar="URL",
            help="attach to a running OpenAI-compatible server or hosted API "
            "instead of launching one (e.g. http://127.0.0.1:8000)",
        )
        groups: dict[str, Any] = {}
        for flag in FLAGS:
            group = groups.get(flag.group) or groups.setdefault(flag.group, p.add_argument_group(flag.group))
            kwargs: dict[str, Any] = {"dest": flag.path, "help": flag.help + _default_text(flag)}
            if flag.action == "boolean":
                kwargs["action"] = argparse.BooleanOptionalAction
            elif flag.action:
                kwargs["action"] = flag.action
            if flag.action not in ("store_true", "store_false", "boolean") and not flag.choices:
                kwargs["metavar"] = flag.metavar or flag.name.lstrip("-").upper().replace("-", "_")
            if flag.choices:
                kwargs["choices"] = flag.choices
            group.add_argument(flag.name, **kwargs)


# -- flags -> spec -------------------------------------------------------------------------------
def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_spec_file(path: Path) -> dict[str, Any]:
    data = read_yaml(path, f"--spec {path}")
    if not isinstance(data, dict):
        raise UsageError(f"--spec {path}: expected a mapping of run spec fields (engine, model, load, ...)")
    for section in SECTIONS[1:]:
        if section in data and not isinstance(data[section], dict):
            example = "kind: llamacpp" if section == "engine" else "a field per line"
            got = "it is empty" if data[section] is None else f"not {data[section]!r}"
            raise UsageError(f"--spec {path}: field {section} must be a mapping of its fields ({example}); {got}")
    return data


def spec_from_args(args: argparse.Namespace, verb: str = "run") -> RunSpec:
    given = vars(args)
    data: dict[str, Any] = _read_spec_file(given["spec"]) if "spec" in given else {}
    flags: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.path in given:
            _set(flags, flag.path, given[flag.path])
    endpoint, engine = given.get("endpoint"), given.get("engine")
    if endpoint is not None:
        if engine not in (None, "endpoint"):
            raise UsageError("--endpoint measures a running server; leave out --engine (or give --engine endpoint)")
        _set(flags, "engine.kind", "endpoint")
        _set(flags, "engine.url", endpoint)
    elif engine is not None:
        if engine not in ENGINE_KINDS:
            raise UsageError(f"--engine {engine!r} is not known; choose one of: {', '.join(ENGINE_KINDS)}")
        _set(flags, "engine.kind", engine)
    data = _merge(data, flags)
    if "engine" not in data or "kind" not in data.get("engine", {}):
        raise UsageError(f"give --engine (one of: {', '.join(ENGINE_KINDS)}) or --endpoint URL")
    if "model" not in data:
        raise UsageError(f"bench {verb}: --model is required (see bench models)")
    if verb == "eval" and not (data.get("workload") or {}).get("golden"):
        raise UsageError("bench eval needs --golden FILE (a JSONL golden set; see bench/quality.py)")
    _one_plan(data, flags, given.get("spec"))
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_explain(exc, given.get("spec"), flags, data)) from None


def _one_plan(data: dict[str, Any], flags: dict[str, Any], spec_file: Path | None) -> None:
    """Plan settings given beside a plan that ignores them would be dropped without a word (see
    bench.spec.dropped_beside_plan): refused, naming the flags or the spec file's fields."""
    dropped = dropped_beside_plan(data)
    if dropped is None:
        return
    plan, given = dropped

    def name(path: str) -> str:
        return BY_PATH[path].name if has_field(flags, path) else path

    where = f"{spec_file}: " if not all(has_field(flags, p) for p in [plan, *given]) else ""
    if plan == "workload.trace":
        raise UsageError(
            f"{where}{name(plan)} gives the arrivals and the lengths; leave out {', '.join(map(name, given))} "
            "(bound it with --duration, --max-concurrency, --trace-window, --trace-speed)"
        )
    raise UsageError(
        f"{where}{name('load.concurrency')} sets closed-loop streams and {name(plan)} an open-loop plan: give one; "
        "to cap the requests in flight at a rate, use --max-concurrency (load.max_concurrency)"
    )


SECTIONS = ("", "load", "workload", "engine", "output", "telemetry", "client")  # where a whole-model check reports


def _explain(exc: ValidationError, spec_file: Path | None, flags: dict[str, Any], data: dict[str, Any]) -> str:
    """The first validation error in the words the user used: the flag they gave, or the spec file's field."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    kind = str((data.get("engine") or {}).get("kind"))
    if loc[:1] == ["engine"] and len(loc) > 1 and loc[1] in (*ENGINE_KINDS, "endpoint"):
        loc = ["engine", *loc[2:]]  # the union's tag is not part of the field's path
    message = error["msg"].removeprefix("Value error, ")
    path = ".".join(loc)
    flag = BY_PATH.get(path) or BY_PATH.get(".".join(loc[:-1]))  # a list item's location ends in its index
    if flag is not None and has_field(flags, flag.path):
        if error["type"] == "extra_forbidden":
            return f"{flag.name} does not apply to {'--endpoint' if kind == 'endpoint' else f'--engine {kind}'}"
        return f"{flag.name} {_shown(field_at(flags, flag.path))}: {message}"
    if error["type"] == "extra_forbidden":
        engine = f" for engine {kind}" if loc[0] == "engine" else ""
        return f"{spec_file or 'the spec'}: field {path} is not a run spec field{engine}"
    whole_model = path in SECTIONS

    def named(match: re.Match) -> str:  # `field`: the flag that sets it on the command line, the field in a file
        field = f"{path}.{match.group(1)}" if whole_model and path else match.group(1)
        found = BY_PATH.get(field)
        return found.name if found and not spec_file else match.group(0)

    message = re.sub(r"`(\w+)`", named, message)
    if whole_model and not spec_file:
        return message
    return f"{spec_file or 'the spec'}: field {path or '(the spec)'}: {message}"


def _shown(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


# -- the verb ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args, args.command)
    result = execute(spec, display_for())
    print_result(result)
    return result.exit_code


def result_table(result: RunResult, heading: str) -> str:
    """A run's figures as `bench run` prints them, and `bench summarize` from the records again: an embeddings or
    rerank run's own table (inputs/s, tokens/s, E2E), one stage's detailed table with that stage's telemetry, or
    a row per stage; each with the timing error that covers the run."""
    summary, where, bound = result.summary, str(result.run_dir.path), timing_bound(result)
    if summary.pooling is not None:
        return pooling_table(summary, heading, where, bound)
    if len(summary.stages) == 1:
        only = summary.stages[0]
        return summary_table(only, heading, where, only.telemetry, result.manifest.busy_poll, bound)
    return stage_table(summary, heading, where, bound, result.manifest.busy_poll)


def timing_bound(result: RunResult) -> str | None:
    """The client's measured timing error that covers this run (calibration_bound), then what the run's own reads
    say of it (reads_note)."""
    notes = (calibration_bound(result), reads_note(result.manifest.client_reads, result.summary))
    return "; ".join(note for note in notes if note) or None


def reads_note(reads: dict[str, Any] | None, summary: RequestSummary | None) -> str | None:
    """What the run's own reads say of its timing: the share of its kernel-timed reads that came over LATE_READ_NS
    after their bytes (timed by the kernel all the same: the loop's lateness, not an error), and the measured
    requests whose first chunk came in one read with the next (where the two were apart, that TTFT carries the
    later one's time: late by the gap between them)."""
    notes = []
    if reads and reads.get("reads"):
        late = reads.get("late_reads", 0) / reads["reads"]
        notes.append(
            f"{late:.1%} of this run's reads came over {LATE_READ_NS / 1e6:g} ms after their bytes (each timed by "
            "the kernel all the same)"
        )
    together = summary.first_chunk_read_with_the_next if summary is not None else 0
    if together:
        notes.append(
            f"{together} first token(s) read with the next: where the two came apart, that TTFT is late by the gap"
        )
    return "; ".join(notes) or None


def calibration_bound(result: RunResult) -> str | None:
    """The client's measured timing error that covers this run, from its calibration (or that none does),
    with the calibration's warnings (more streams than it covered, another waiting mode, another machine)."""
    calibration = result.manifest.calibration
    streams = max(
        (s.schedule.get("concurrency") or s.schedule.get("max_concurrency") or 1 for s in result.manifest.stages),
        default=1,
    )
    if not calibration or not calibration.get("file"):
        return "unknown: no calibration of this machine (bench calibrate --wire; then --calibration FILE)"
    if "bound" not in calibration:  # a manifest written before the bound travelled with the run
        levels = [lv for shape in calibration.get("shapes", []) for lv in shape.get("levels", [])]
        covering = [lv for lv in levels if lv.get("streams", 0) >= streams]
        if not covering:
            most = max((lv.get("streams", 0) for lv in levels), default=0)
            return f"calibrated up to {most} streams only; this run used {streams} (warning: not covered)"
        level = min(covering, key=lambda lv: lv["streams"])
        p99 = (level.get("ttft_error_ms") or {}).get("p99")
        if p99 is None:
            return None
        return (
            f"p99 TTFT error {p99:+.2f} ms at {level['streams']} streams ({calibration.get('file')}, "
            f"{calibration.get('created_at')})"
        )
    bound = calibration.get("bound") or {}
    warnings = list(calibration.get("warnings") or [])
    most = calibration.get("streams_calibrated") or 0
    if streams > most and not any("streams; its calibration covered" in w for w in warnings):
        warnings.insert(0, f"this run used {streams} streams; its calibration covered up to {most}")
    p99, worst = bound.get("ttft_error_ms_p99"), bound.get("ttft_error_ms_max")
    figure = "unknown" if p99 is None else f"p99 TTFT {p99:+.2f} ms" + (f" (max {worst:+.2f})" if worst else "")
    line = (
        f"{figure} vs the {'wire' if bound.get('truth') == 'wire' else 'server log'} at {bound.get('at_streams')} "
        f"streams, {calibration.get('mode')} mode ({calibration.get('file')}, {calibration.get('created_at')}"
        f"{', found automatically' if calibration.get('found') == 'automatic' else ''})"
    )
    return line + "".join(f"; warning: {w}" for w in warnings)


def print_result(result: RunResult) -> None:
    manifest, summary, run_dir = result.manifest, result.summary, result.run_dir
    spec = manifest.spec
    reason = "" if manifest.status == "complete" else f" ({manifest.incomplete_reason})"
    if summary.requests.measured or summary.requests.warmup:
        workload = manifest.workload
        shape = (
            f"prompts from {workload.path}"
            if workload.kind == "file"
            else f"golden set {workload.path} ({workload.cases} cases)"
            if workload.kind == "golden"
            else f"a {workload.trace['format']} trace ({workload.trace['capped']} capped to the context)"
            if workload.kind == "trace"
            else f"{workload.input_tokens} input / {workload.output_tokens} output tokens"
        )
        if workload.batch_size:  # embeddings, rerank: inputs per request, and each input's length
            batches = ",".join(str(b) for b in workload.batch_size)
            shape = f"batches of {batches} input(s) of {workload.input_tokens} tokens"
        launcher = (manifest.engine.launcher if manifest.engine else None) or manifest.engine_kind
        heading = (
            f"Run {manifest.run_id}: {manifest.status}{reason}\n"
            f"  {manifest.engine_kind} via {launcher}, model {spec.model if spec else ''}, {manifest.api} API, "
            f"{shape}"
        )
        stage = manifest.stages[0].label if len(summary.stages) == 1 and manifest.stages else ""
        print(result_table(result, f"{heading}, {stage}" if stage else heading))
        if manifest.plan_stopped_early:
            print(f"Plan         stopped early: {manifest.plan_stopped_early}")
        if summary.search:
            print(search_line(summary.search))
        if summary.quality:
            print(quality_lines(summary.quality, str(run_dir.file(EVAL))))
    kept = summary.requests.finished
    if result.exit_code == EXIT_OK:
        return
    if result.message:
        say(f"error: {result.message.splitlines()[0]}")
    if result.exit_code == EXIT_ENGINE and result.message and "\n" in result.message:
        say("\n".join(result.message.splitlines()[1:]))
    if result.exit_code == EXIT_INTERRUPTED or manifest.status != "complete":
        say(
            f"run {manifest.status}: {manifest.incomplete_reason}; kept {kept} finished measured request(s) in "
            f"{run_dir.file(REQUESTS)}"
        )
