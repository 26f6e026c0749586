"""llama.cpp: one driver, three ways to launch its HTTP server.

- llama-server: the native binary, given by path or found on PATH (what CUDA labs run; `auto` takes it
  first when one exists, since PyPI's xllamacpp wheels are CPU builds);
- xllamacpp: llama.cpp's native server embedded in a prebuilt wheel (the CPU default);
- llama-cpp-python: `python -m llama_cpp.server`, which serves one request at a time.

With `--gpu-layers N` > 0 the engine logs at verbosity 4, so its load lines (`load_tensors: offloaded
N/M layers to GPU`, each device's model buffer) reach engine.log: they are recorded as `gpu_offload`,
and a run that offloaded nothing (a CPU build, no visible GPU) fails at start instead of measuring the
CPU. Models with sliding-window attention (Gemma 3: `<arch>.attention.sliding_window` in the GGUF)
reuse a cached prefix only with a full-size SWA cache (`--swa-full`): it is turned on when the workload
reuses prefixes (shared prefixes, multi-turn conversations) and recorded as `swa_full`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.engines.base import (
    Endpoint,
    LaunchContext,
    LaunchedEngine,
    ensure_port_free,
    free_port,
    http_json,
    wait_until_ready,
)
from bench.engines.process import ManagedProcess, die_with_parent
from bench.errors import EngineError, UsageError
from bench.spec import LlamaCppEngine

LAUNCHERS = ("auto", "xllamacpp", "llama-server", "llama-cpp-python")
XLLAMACPP_SCRIPT = Path(__file__).with_name("xllamacpp_server.py")
PROMPT_SCRIPT = Path(__file__).with_name("llama_cpp_python_prompt.py")  # llama-cpp-python's chat prompts, counted
PROMPT_COUNT_TIMEOUT_S = 60.0  # one chat prompt counted by llama-cpp-python (milliseconds when well)
CTX_MARGIN_TOKENS = 64
# One setting, three spellings: (xllamacpp_server.py, llama-server, llama-cpp-python); None: no such flag
# (llama-cpp-python serves one request at a time, so it has no parallel slots).
FLAG_SPELLINGS: dict[str, tuple[str | None, str | None, str | None]] = {
    "model": ("--model", "-m", "--model"),
    "host": ("--host", "--host", "--host"),
    "port": ("--port", "--port", "--port"),
    "ctx_size": ("--ctx-size", "-c", "--n_ctx"),
    "parallel": ("--parallel", "-np", None),
    "threads": ("--threads", "-t", "--n_threads"),
    "batch_threads": ("--batch-threads", "-tb", "--n_threads_batch"),
    "gpu_layers": ("--gpu-layers", "-ngl", "--n_gpu_layers"),
}


# Embeddings and rerank: the server computes pooled vectors (--embedding, with the model's pooling) or
# query-document scores (--reranking: pooling "rank", the model's classifier head). What each launcher takes,
# for a pooling name P: (xllamacpp CommonParams fields, llama-server flags, llama-cpp-python flags); None: no such mode.
POOLING_SPELLINGS: dict[str, tuple[list[str] | None, list[str] | None, list[str] | None]] = {
    "embeddings": (["embedding=true", "pooling_type=P"], ["--embedding", "--pooling", "P"], ["--embedding", "True"]),
    "rerank": (["embedding=true", "pooling_type=rank"], ["--reranking"], None),
}
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}  # llama.h enum llama_pooling_type


def pooling_type(path: Path) -> str | None:
    """The pooling an embedding model's GGUF header names (`<arch>.pooling_type`), or None."""
    meta = gguf_metadata(path, lambda k: k == "general.architecture" or k.endswith(".pooling_type"))
    return POOLING_NAMES.get(meta.get(f"{meta.get('general.architecture')}.pooling_type"))


GPU_LOG_VERBOSITY = 4  # llama.cpp logs its own load lines (offload, buffers) at trace level, 4
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
MODEL_BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")
KV_BUFFER = re.compile(r"llama_kv_cache:\s+(\S+) KV buffer size =\s+([\d.]+) MiB")
DEVICE = re.compile(r"common_param:\s+- (\S+)\s+: (.+?) \((\d+) MiB, (\d+) MiB free\)")


def gpu_offload(log_text: str) -> dict[str, Any]:
    """What llama.cpp's load lines say about the GPU: layers offloaded, model and KV buffers per device (MiB),
    the devices it saw. `offloaded` is True when a layer or a model buffer went to a non-CPU device."""
    layers = OFFLOADED.findall(log_text)
    buffers: dict[str, float] = {}
    for device, mib in MODEL_BUFFER.findall(log_text):
        buffers[device] = buffers.get(device, 0.0) + float(mib)
    kv: dict[str, float] = {}
    for device, mib in KV_BUFFER.findall(log_text):
        kv[device] = kv.get(device, 0.0) + float(mib)
    devices = [
        {"name": name, "description": desc, "memory_mib": int(total), "free_mib": int(free)}
        for name, desc, total, free in DEVICE.findall(log_text)
    ]
    offloaded_layers, total_layers = (int(layers[-1][0]), int(layers[-1][1])) if layers else (None, None)
    on_gpu = bool(offloaded_layers) or any(not d.upper().startswith("CPU") for d in buffers)
    return {
        "offloaded": on_gpu,
        "layers_offloaded": offloaded_layers,
        "layers_total": total_layers,
        "model_buffers_mib": buffers,
        "kv_buffers_mib": kv,
        "devices": devices,
    }


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: Path, wanted) -> dict[str, Any]:
    """Scalar and string metadata of a GGUF header whose keys `wanted(key)` accepts, arrays skipped."""
    found: dict[str, Any] = {}
    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                return found
            _version, _tensors, count = struct.unpack("<IQQ", handle.read(20))

            def take(fmt: str):
                return struct.unpack("<" + fmt, handle.read(struct.calcsize("<" + fmt)))[0]

            def string() -> str:
                return handle.read(take("Q")).decode("utf-8", "replace")

            def skip(kind: int) -> None:
                if kind in _GGUF_SCALARS:
                    handle.seek(struct.calcsize("<" + _GGUF_SCALARS[kind]), 1)
                elif kind == 8:
                    handle.seek(take("Q"), 1)
                elif kind == 9:
                    item, n = take("I"), take("Q")
                    if item in _GGUF_SCALARS:
                        handle.seek(n * struct.calcsize("<" + _GGUF_SCALARS[item]), 1)
                    else:
                        for _ in range(n):
                            skip(item)
                else:
                    raise ValueError(f"GGUF value type {kind}")

            for _ in range(count):
                key, kind = string(), take("I")
                if wanted(key) and (kind in _GGUF_SCALARS or kind == 8):
                    found[key] = take(_GGUF_SCALARS[kind]) if kind != 8 else string()
                else:
                    skip(kind)
    except (OSError, struct.error, ValueError):
        pass
    return found


def sliding_window(path: Path) -> int | None:
    """The model's sliding-window attention size from its GGUF header, or None (full attention)."""
    meta = gguf_metadata(path, lambda k: k == "general.architecture" or k.endswith(".attention.sliding_window"))
    arch = meta.get("general.architecture")
    return meta.get(f"{arch}.attention.sliding_window") or None


def default_threads() -> int:
    """Physical cores minus one, at least one: the load generator keeps a core of its own.

    On a 2-core machine one llama.cpp thread beats two whenever anything else runs.
    """
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores - 1)


def default_ctx_size(parallel: int, tokens_per_request: int) -> int:
    """Total context so every slot holds one request: llama.cpp splits n_ctx evenly over the slots."""
    per_slot = max(512, -(-(tokens_per_request + CTX_MARGIN_TOKENS) // 256) * 256)
    return per_slot * parallel


@dataclass
class LlamaCppSettings:
    model_path: Path
    launcher: str = "auto"
    server_binary: str | None = None  # llama-server path; implies launcher llama-server
    python: str = sys.executable  # interpreter for the xllamacpp and llama-cpp-python launchers
    ctx_size: int | None = None
    threads: int = field(default_factory=default_threads)
    batch_threads: int | None = None
    parallel: int = 1
    gpu_layers: int = 0
    extra_args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int | None = None
    ready_timeout_s: float = 300.0
    tokens_per_request: int = 0  # input + output of the longest request, to size the context
    swa_full: bool | None = None  # full-size sliding-window cache; None: on when prefixes are reused on an SWA model
    reuses_prefixes: bool | None = None  # the workload's requests share prefixes (None: not told)


def _python_has(python: str, distribution: str) -> str | None:
    """The installed version of a distribution in another interpreter, or None."""
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class LlamaCppDriver(LaunchedEngine):
    name = "llamacpp"
    formats = ("gguf",)

    @classmethod
    def from_spec(cls, engine: LlamaCppEngine, context: LaunchContext) -> LlamaCppDriver:
        settings = LlamaCppSettings(
            model_path=context.model_path,
            launcher=engine.launcher,
            server_binary=engine.server_binary,
            python=engine.python or sys.executable,
            ctx_size=engine.ctx_size,
            threads=engine.threads or default_threads(),
            batch_threads=engine.batch_threads,
            parallel=engine.parallel or context.max_streams,
            gpu_layers=engine.gpu_layers,
            extra_args=list(engine.extra_args),
            host=engine.host,
            port=engine.port,
            ready_timeout_s=engine.ready_timeout_s,
            tokens_per_request=context.tokens_per_request,
            swa_full=engine.swa_full,
            reuses_prefixes=context.reuses_prefixes,
        )
        driver = cls(settings, context.api)
        if driver.serializes_requests and context.max_streams > 1:
            raise UsageError(
                f"the {driver.launcher} server handles one request at a time, so {context.max_streams} streams "
                "would measure queueing, not concurrency; use --concurrency 1 (and --max-concurrency 1 with "
                "--rate) or --launcher xllamacpp"
            )
        return driver

    def __init__(self, settings: LlamaCppSettings, api: str) -> None:
        self.settings = settings
        self.api = api
        self.run_dir: Path | None = None
        super().__init__()
        self._special_prefix: int | None = None
        self._prompt_counter: subprocess.Popen | None = None  # llama-cpp-python: the chat prompt counter
        self._counter_pending = b""  # what the counter wrote after its last line read (see _counter_line)
        self._prompt_lock = threading.Lock()
        self.launcher, self._launcher_version = self._choose_launcher()
        self._validate()

    # -- choosing and validating (before anything starts: bad input never leaves a process) ------
    def _choose_launcher(self) -> tuple[str, str | None]:
        s = self.settings
        if s.launcher not in LAUNCHERS:
            raise UsageError(f"--launcher {s.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
        if s.server_binary and s.launcher not in ("auto", "llama-server"):
            raise UsageError(f"--llama-server goes with --launcher llama-server, not {s.launcher}")
        wanted = "llama-server" if s.server_binary else s.launcher
        # a llama-server that exists comes first: it is what a CUDA build is (PyPI's xllamacpp is a CPU build)
        if wanted in ("auto", "llama-server"):
            binary = s.server_binary or shutil.which("llama-server")
            if binary and Path(binary).exists() and os.access(binary, os.X_OK):
                s.server_binary = str(Path(binary).resolve())
                return "llama-server", None
            if s.server_binary:
                raise UsageError(f"--llama-server {s.server_binary}: no executable file there")
        if wanted in ("auto", "xllamacpp") and (version := _python_has(s.python, "xllamacpp")):
            return "xllamacpp", version
        if wanted in ("auto", "llama-cpp-python") and (version := _python_has(s.python, "llama-cpp-python")):
            return "llama-cpp-python", version
        hints = {
            "xllamacpp": f"{s.python} -m pip install xllamacpp",
            "llama-server": "put llama-server on PATH or pass --llama-server PATH",
            "llama-cpp-python": f"{s.python} -m pip install 'llama-cpp-python[server]' (compiles llama.cpp)",
        }
        if wanted != "auto":
            raise UsageError(f"--launcher {wanted}: not installed; {hints[wanted]}")
        raise UsageError("no llama.cpp server found; " + "; or ".join(hints.values()))

    def _validate(self) -> None:
        s = self.settings
        if not s.model_path.is_file():
            raise UsageError(f"model file {s.model_path} does not exist or is not a file")
        for flag, value in (("--threads", s.threads), ("--parallel", s.parallel)):
            if value < 1:
                raise UsageError(f"{flag} {value}: must be at least 1")
        if s.batch_threads is None:
            s.batch_threads = s.threads
        if self.serializes_requests:
            s.parallel = 1  # it has no parallel slots
        if s.ctx_size is None:
            s.ctx_size = default_ctx_size(s.parallel, s.tokens_per_request)
        per_slot = s.ctx_size // s.parallel
        if s.tokens_per_request and per_slot < s.tokens_per_request:
            raise UsageError(
                f"--ctx-size {s.ctx_size} over {s.parallel} slot(s) gives {per_slot} tokens per slot, fewer than "
                f"the {s.tokens_per_request} input+output tokens of a request; raise --ctx-size or omit it"
            )
        if s.port is not None:
            ensure_port_free(s.host, s.port)
        self._swa = self._choose_swa_full()
        self._pooling = self._choose_pooling()

    def _choose_pooling(self) -> dict[str, Any] | None:
        """Embeddings or rerank: the server's mode and the pooling it uses (recorded), or None for generation."""
        if self.api not in POOLING_SPELLINGS:
            return None
        column = LAUNCHERS.index(self.launcher) - 1
        if POOLING_SPELLINGS[self.api][column] is None:
            raise UsageError(
                f"--api {self.api}: the {self.launcher} server has no such mode; use --launcher llama-server"
            )
        if self.api == "rerank":
            return {"mode": "reranking", "pooling": "rank", "why": "a reranker scores with its classifier head"}
        named = pooling_type(self.settings.model_path)
        if named == "rank":
            raise UsageError(
                f"--api embeddings: {self.settings.model_path.name} is a reranker (pooling rank); use --api rerank"
            )
        return {
            "mode": "embedding",
            "pooling": named or "mean",
            "why": "the model's own (GGUF pooling_type)" if named else "mean: the GGUF names no pooling",
        }

    def _choose_swa_full(self) -> dict[str, Any]:
        """Whether the sliding-window cache is full-size, and why (recorded)."""
        s = self.settings
        window = sliding_window(s.model_path)
        given = any("swa_full" in a or "swa-full" in a for a in s.extra_args)
        if given:
            return {"on": None, "sliding_window": window, "why": "set by --engine-arg"}
        if window is None:
            if s.swa_full:
                raise UsageError(f"swa_full: model {s.model_path.name} has no sliding-window attention")
            return {"on": False, "sliding_window": None, "why": "the model has no sliding-window attention"}
        if s.swa_full is not None:
            on, why = s.swa_full, "set in the run spec"
        elif s.reuses_prefixes:
            on, why = True, "the workload reuses prefixes, which a sliding-window cache cannot serve"
        elif s.reuses_prefixes is None:
            on, why = False, "not told whether the workload reuses prefixes"
        else:
            on, why = False, "the workload shares no prefixes"
        if on and self.launcher == "llama-cpp-python":
            return {"on": False, "sliding_window": window, "why": "llama-cpp-python's server has no swa_full setting"}
        swa = {"on": on, "sliding_window": window, "why": why}
        if not on:
            swa["note"] = (
                f"sliding-window attention ({window} tokens): llama.cpp reuses a cached prefix only with "
                "--swa-full (spec `swa_full: true`, or --engine-arg swa_full=true / --engine-arg --swa-full)"
            )
        return swa

    # -- launching -------------------------------------------------------------------------------
    def _argv(self, port: int) -> list[str]:
        s = self.settings
        values = {
            "model": str(s.model_path),
            "host": s.host,
            "port": port,
            "ctx_size": s.ctx_size,
            "parallel": s.parallel,
            "threads": s.threads,
            "batch_threads": s.batch_threads,
            "gpu_layers": s.gpu_layers,
        }
        column = LAUNCHERS.index(self.launcher) - 1
        head = {
            "xllamacpp": [s.python, str(XLLAMACPP_SCRIPT)],
            "llama-server": [s.server_binary],
            "llama-cpp-python": [s.python, "-m", "llama_cpp.server"],
        }[self.launcher]
        argv = list(head)
        for setting, spellings in FLAG_SPELLINGS.items():
            if spellings[column] is not None:
                argv += [spellings[column], str(values[setting])]
        gpu = s.gpu_layers > 0
        swa = bool(self._swa.get("on"))
        pooled: list[str] = []
        if self._pooling is not None:
            pooled = [
                a.replace("P", self._pooling["pooling"]) if a in ("P", "pooling_type=P") else a
                for a in POOLING_SPELLINGS[self.api][column] or ()
            ]
        if self.launcher == "xllamacpp":
            argv += ["--info-file", str((self.run_dir / "engine-info.json").resolve())]
            own = [f"verbosity={GPU_LOG_VERBOSITY}"] * gpu + ["swa_full=true"] * swa + pooled
            for arg in [*own, *s.extra_args]:
                argv += ["--set", arg]
            return argv
        if self.launcher == "llama-server":
            own = ["-lv", str(GPU_LOG_VERBOSITY)] * gpu + ["--swa-full"] * swa + pooled
            return [*argv, "--metrics", *own, *s.extra_args]
        # without --interrupt_requests False a new request cuts off a running stream
        return [*argv, "--interrupt_requests", "False", *pooled, *s.extra_args]

    def start(self, run_dir: Path) -> Endpoint:
        s = self.settings
        self.run_dir = run_dir
        port = s.port or free_port(s.host)
        base_url = f"http://{s.host}:{port}"
        argv = self._argv(port)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = ManagedProcess(argv, self.run_dir / "engine.log", env=env)
        started = time.monotonic()
        self._process.start()
        self._record.update(
            launcher=self.launcher,
            argv=argv,
            base_url=base_url,
            pid=self._process.pid,
            settings={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()},
        )
        what = f"llama.cpp ({self.launcher})"
        wait_until_ready(self._process, lambda: self._probe(base_url), s.ready_timeout_s, what)
        self._record["load_time_s"] = time.monotonic() - started
        self._record["swa_full"] = self._swa
        if self._pooling is not None:
            self._record["pooling"] = self._pooling
        self._check_offload()
        model_id = self._served_model(base_url)
        self._describe(base_url)
        serialized = self.serializes_requests
        self._record["limits"] = self._limits(serialized)
        count_chat = None
        if self.api == "chat":
            count_chat = self._chat_prompt_counter(base_url)
        return Endpoint(
            base_url=base_url,
            model=model_id,
            api=self.api,
            max_concurrent_requests=1 if serialized else s.parallel,
            supports_ignore_eos=not serialized,
            count_tokens=lambda text, add_special=False: self.count_tokens(base_url, text, add_special),
            count_chat_tokens=count_chat,
        )

    # -- a chat prompt's tokens, template included (used where a stream carries no usage) ---------------
    def _chat_prompt_counter(self, base_url: str):
        """body -> prompt tokens, as the server renders and tokenizes a chat request. The native server (llama-server,
        xllamacpp): POST /apply-template (its own template code, tools included) then /tokenize with the flags its
        chat handler tokenizes with (add_special, parse_special). llama-cpp-python: its own chat-format code run
        in its interpreter on the model's vocabulary (bench/engines/llama_cpp_python_prompt.py)."""
        if self.launcher != "llama-cpp-python":
            self._record["chat_prompt_tokens"] = {"how": "POST /apply-template, then /tokenize add_special=true"}
            return lambda body: self._native_chat_tokens(base_url, body)
        argv = [self.settings.python, str(PROMPT_SCRIPT), "--model", str(self.settings.model_path)]
        counter = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._prompt_counter = counter
        first = self._counter_line(counter, self.settings.ready_timeout_s, "start")
        try:
            ready = json.loads(first)
        except ValueError:
            ready = {}
        if not ready.get("ready"):
            self._stop_prompt_counter()
            raise EngineError(f"llama-cpp-python's chat prompt counter did not start ({first.strip()[:200]!r})")
        self._record["chat_prompt_tokens"] = {
            "how": "llama-cpp-python's create_chat_completion on the vocabulary, in its interpreter "
            "(bench/engines/llama_cpp_python_prompt.py)",
            "chat_format": ready.get("chat_format"),
        }
        return self._python_chat_tokens

    def _native_chat_tokens(self, base_url: str, body: dict[str, Any]) -> int:
        status, answer = http_json("POST", f"{base_url}/apply-template", body)
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("prompt"), str):
            raise EngineError(f"{base_url}/apply-template answered {status}: {str(answer)[:200]}")
        request = {"content": answer["prompt"], "add_special": True, "parse_special": True}
        return len(self._tokenize(f"{base_url}/tokenize", request))

    def _python_chat_tokens(self, body: dict[str, Any]) -> int:
        counter = self._prompt_counter
        if counter is None or counter.stdin is None or counter.stdout is None:
            raise EngineError("llama-cpp-python's chat prompt counter is not running")
        with self._prompt_lock:
            counter.stdin.write(json.dumps(body) + "\n")
            counter.stdin.flush()
            line = self._counter_line(counter, PROMPT_COUNT_TIMEOUT_S, "count a prompt")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = {"error": f"no answer ({line.strip()[:120]!r})"}
        if "tokens" not in answer:
            raise EngineError(f"llama-cpp-python's chat prompt counter: {answer.get('error')}")
        return int(answer["tokens"])

    def _counter_line(self, counter: subprocess.Popen, timeout_s: float, what: str) -> str:
        """The counter's next line ("" once it has ended), waited for at most timeout_s in all: a stalled counter must
        not hold the start past its ready timeout, nor a run's decoding (and with it Ctrl-C) forever. Read from the
        pipe's descriptor into this driver's own buffer: a buffered reader's readline could take two lines at once
        and leave the second where select does not look, or block on a line that never ends."""
        if counter.stdout is None:
            return ""
        fd = counter.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._counter_pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._stop_prompt_counter()
                raise EngineError(f"llama-cpp-python's chat prompt counter did not {what} within {timeout_s:g} s")
            piece = os.read(fd, 65536)
            if not piece:  # it ended: what it left, if anything, is its last word
                line, self._counter_pending = self._counter_pending, b""
                return line.decode("utf-8", "replace")
            self._counter_pending += piece
        line, _, self._counter_pending = self._counter_pending.partition(b"\n")
        return line.decode("utf-8", "replace") + "\n"

    def _stop_prompt_counter(self) -> None:
        counter, self._prompt_counter = self._prompt_counter, None
        self._counter_pending = b""
        if counter is None:
            return
        if counter.stdin:
            counter.stdin.close()  # it ends at the end of its input
        try:
            counter.wait(timeout=5)
        except subprocess.TimeoutExpired:
            counter.kill()
            counter.wait()
        if counter.stdout:
            counter.stdout.close()

    def stop(self) -> None:
        self._stop_prompt_counter()
        super().stop()

    def _check_offload(self) -> None:
        """With --gpu-layers > 0, the engine's load lines must show layers on a GPU: else the run would
        measure the CPU while its manifest says GPU. Recorded either way."""
        s = self.settings
        if s.gpu_layers <= 0:
            return
        offload = gpu_offload(self._process.log_path.read_text(encoding="utf-8", errors="replace"))
        self._record["gpu_offload"] = offload
        if not offload["offloaded"]:
            said = (
                f"offloaded {offload['layers_offloaded']}/{offload['layers_total']} layers"
                if offload["layers_offloaded"] is not None
                else "no GPU in its load lines (a CPU build, or no GPU visible to it)"
            )
            devices = ", ".join(d["name"] for d in offload["devices"]) or "none listed"
            raise EngineError(
                f"--gpu-layers {s.gpu_layers} asked for GPU offload, but llama.cpp ({self.launcher}) {said}; "
                f"devices: {devices}. A CPU run is not what was asked: use a CUDA build (--llama-server "
                f"PATH, e.g. from scripts/gpu_smoke.sh), or omit --gpu-layers. Engine log: {self._process.log_path}"
            )

    def _probe(self, base_url: str) -> str | None:
        """Ready when the server lists a model and a one-token completion succeeds (embeddings: one text
        embedded; rerank: one document scored)."""
        status, models = http_json("GET", f"{base_url}/v1/models", timeout_s=5)
        if status != 200:
            return f"GET /v1/models answered {status}"
        model = models["data"][0]["id"]
        if self.api in POOLING_SPELLINGS:
            path, body = (
                ("/v1/rerank", {"model": model, "query": "Hello", "documents": ["Hello"]})
                if self.api == "rerank"
                else ("/v1/embeddings", {"model": model, "input": "Hello"})
            )
            status, answer = http_json("POST", f"{base_url}{path}", body, timeout_s=60)
            return None if status == 200 else f"test {self.api} request answered {status}: {str(answer)[:200]}"
        status, body = http_json(
            "POST", f"{base_url}/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 1}, timeout_s=60
        )
        if status != 200:
            return f"test completion answered {status}: {str(body)[:200]}"
        return None

    def _served_model(self, base_url: str) -> str:
        _, models = http_json("GET", f"{base_url}/v1/models")
        return models["data"][0]["id"]

    def _describe(self, base_url: str) -> None:
        """Version and build facts the server or launcher reports."""
        version: dict[str, Any] = {}
        if self.launcher == "xllamacpp":
            info_path = self.run_dir / "engine-info.json"
            if info_path.exists():
                version.update(json.loads(info_path.read_text()))
        elif self.launcher == "llama-server":
            out = subprocess.run([self.settings.server_binary, "--version"], capture_output=True, text=True, timeout=30)
            version["llama_server_version"] = (out.stdout + out.stderr).strip()
        else:
            version["llama_cpp_python_version"] = self._launcher_version
        if self.launcher != "llama-cpp-python":
            status, props = http_json("GET", f"{base_url}/props")
            if status == 200 and isinstance(props, dict):
                version["server_build_info"] = props.get("build_info")
                version["total_slots"] = props.get("total_slots")
                version["n_ctx_per_slot"] = (props.get("default_generation_settings") or {}).get("n_ctx")
        self._record["version"] = version

    @staticmethod
    def _limits(serialized: bool) -> dict[str, Any]:
        if not serialized:
            return {"serializes_requests": False, "usage_in_stream": True, "ignore_eos": True}
        return {
            "serializes_requests": True,
            "usage_in_stream": False,
            "ignore_eos": False,
            "notes": "llama-cpp-python serves one request at a time (runs are held to concurrency 1) and "
            "sends no usage in streams (output tokens are counted with the model's tokenizer)",
        }

    def count_tokens(self, base_url: str, text: str, add_special: bool) -> int:
        """Tokens in text by the served model's own tokenizer."""
        if self.launcher != "llama-cpp-python":
            return len(self._tokenize(f"{base_url}/tokenize", {"content": text, "add_special": add_special}))
        # llama-cpp-python always adds its special prefix (BOS); measure it once and take it off.
        tokens = len(self._tokenize(f"{base_url}/extras/tokenize", {"input": text}))
        if add_special:
            return tokens
        if self._special_prefix is None:
            self._special_prefix = len(self._tokenize(f"{base_url}/extras/tokenize", {"input": ""}))
        return tokens - self._special_prefix

    @staticmethod
    def _tokenize(url: str, body: dict) -> list:
        status, answer = http_json("POST", url, body)
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("tokens"), list):
            raise EngineError(f"tokenizer endpoint {url} answered {status}: {str(answer)[:200]}")
        return answer["tokens"]

    @property
    def metrics_url(self) -> str | None:
        if self.launcher == "llama-cpp-python" or "base_url" not in self._record:
            return None  # llama-cpp-python has no /metrics; the native server does (enabled at launch)
        return f"{self._record['base_url']}/metrics"

    @property
    def serializes_requests(self) -> bool:
        return self.launcher == "llama-cpp-python"
