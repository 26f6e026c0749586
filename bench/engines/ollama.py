"""Ollama: `ollama serve` on a private port, a GGUF imported as a model (or an existing tag).

Launch: OLLAMA_HOST=127.0.0.1:<port>, its own OLLAMA_MODELS folder (a cache shared between runs,
since an import copies the weights), OLLAMA_NUM_PARALLEL. A GGUF file becomes a model through
`ollama create NAME -f Modelfile` (`FROM <path>` plus PARAMETER lines). Requests use Ollama's
native NDJSON API (bench/clients/ollama.py), or its OpenAI-compatible /v1 path on request. The
loaded model's size and size_vram (from /api/ps) are telemetry gauges; the model is unloaded at
the end (keep_alive 0) before the server stops.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.engines.base import (
    CHARS_PER_TOKEN,
    Endpoint,
    LaunchContext,
    LaunchedEngine,
    ensure_port_free,
    estimate_tokens,
    free_port,
    http_json,
    wait_until_ready,
)
from bench.engines.process import ManagedProcess
from bench.errors import EngineError, UsageError
from bench.spec import OllamaEngine

DEFAULT_MODELS_DIR = Path.home() / ".cache" / "selfhost-bench" / "ollama-models"


@dataclass
class OllamaSettings:
    binary: str = "ollama"
    model_path: Path | None = None  # a GGUF file to import ...
    tag: str | None = None  # ... or a model Ollama already has
    num_ctx: int | None = None
    num_gpu: int | None = None  # layers on the GPU
    num_thread: int | None = None
    num_parallel: int = 1
    keep_alive: str = "10m"
    models_dir: Path = DEFAULT_MODELS_DIR
    openai_compatible: bool = False  # use /v1 instead of the native API
    host: str = "127.0.0.1"
    port: int | None = None
    ready_timeout_s: float = 300.0


def model_name(settings: OllamaSettings) -> str:
    """A tag for an imported file, derived from its path so re-imports reuse it."""
    if settings.tag:
        return settings.tag
    assert settings.model_path is not None
    digest = hashlib.sha256(str(settings.model_path.resolve()).encode()).hexdigest()[:10]
    return f"bench-{settings.model_path.stem.lower().replace('_', '-')[:40]}-{digest}"


def modelfile(settings: OllamaSettings) -> str:
    lines = [f"FROM {settings.model_path}"]
    for key in ("num_ctx", "num_gpu", "num_thread"):
        if (value := getattr(settings, key)) is not None:
            lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


# -- the HTTP side, also exercised against recorded traffic in the contract tests --------------
def version(base_url: str) -> str | None:
    status, body = http_json("GET", f"{base_url}/api/version", timeout_s=5)
    return body.get("version") if status == 200 and isinstance(body, dict) else None


def loaded_models(base_url: str) -> dict[str, dict[str, Any]]:
    """/api/ps: the loaded models with their size and size_vram (bytes)."""
    status, body = http_json("GET", f"{base_url}/api/ps", timeout_s=5)
    if status != 200 or not isinstance(body, dict):
        return {}
    return {m.get("name") or m.get("model"): m for m in body.get("models") or []}


def unload(base_url: str, model: str) -> None:
    http_json("POST", f"{base_url}/api/generate", {"model": model, "keep_alive": 0}, timeout_s=30)


class OllamaDriver(LaunchedEngine):
    name = "ollama"
    formats = ("gguf",)

    @classmethod
    def from_spec(cls, engine: OllamaEngine, context: LaunchContext) -> OllamaDriver:
        settings = OllamaSettings(
            binary=engine.binary,
            model_path=None if engine.tag else context.model_path,
            tag=engine.tag,
            num_ctx=engine.ctx_size,
            num_gpu=engine.gpu_layers or None,
            num_thread=engine.threads,
            num_parallel=engine.parallel or context.max_streams,
            keep_alive=engine.keep_alive,
            openai_compatible=engine.openai_compatible,
            host=engine.host,
            port=engine.port,
            ready_timeout_s=engine.ready_timeout_s,
        )
        return cls(settings, context.api)

    def __init__(self, settings: OllamaSettings, api: str) -> None:
        self.settings = settings
        self.model = model_name(settings)
        self.api = (
            ("chat" if api == "chat" else "completions")
            if settings.openai_compatible
            else ("ollama-chat" if api == "chat" else "ollama-generate")
        )
        binary = shutil.which(settings.binary)
        if binary is None:
            raise UsageError(
                f"`{settings.binary}` is not on PATH: install Ollama (https://ollama.com/download) or "
                "pass --ollama-binary PATH; to measure a running Ollama, use --endpoint URL "
                "--api ollama-generate"
            )
        settings.binary = binary
        if settings.model_path is None and not settings.tag:
            raise UsageError("--engine ollama needs a GGUF model from the catalog or --ollama-tag NAME")
        if settings.port is not None:
            ensure_port_free(settings.host, settings.port)
        super().__init__()
        self._base_url: str | None = None
        self._record.update(launcher="ollama serve", model=self.model)

    def _env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "OLLAMA_HOST": f"{s.host}:{s.port}",
            "OLLAMA_MODELS": str(s.models_dir),
            "OLLAMA_NUM_PARALLEL": str(s.num_parallel),
            "OLLAMA_KEEP_ALIVE": s.keep_alive,
        }

    def start(self, run_dir: Path) -> Endpoint:
        s = self.settings
        s.port = s.port or free_port(s.host)
        s.models_dir.mkdir(parents=True, exist_ok=True)
        base_url = self._base_url = f"http://{s.host}:{s.port}"
        argv = [s.binary, "serve"]
        self._process = ManagedProcess(argv, run_dir / "engine.log", env=self._env())
        started = time.monotonic()
        self._process.start()
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}
        env = {k: v for k, v in self._env().items() if k.startswith("OLLAMA_")}
        self._record.update(argv=argv, base_url=base_url, pid=self._process.pid, env=env, settings=settings)
        wait_until_ready(
            self._process,
            lambda: None if version(base_url) else "no /api/version yet",
            s.ready_timeout_s,
            "ollama serve",
        )
        self._record["version"] = version(base_url)
        if s.model_path is not None:
            self._import(run_dir)
        load = http_json(
            "POST",
            f"{base_url}/api/generate",
            {"model": self.model, "prompt": "", "keep_alive": s.keep_alive},
            timeout_s=s.ready_timeout_s,
        )
        if load[0] != 200:
            raise EngineError(f"ollama could not load {self.model}: {str(load[1])[:300]}")
        self._record["load_time_s"] = time.monotonic() - started
        self._record["loaded"] = loaded_models(base_url).get(self.model)
        self._record["tokenizer"] = (
            f"none in Ollama's API: prompt lengths are estimated at {CHARS_PER_TOKEN} "
            "characters per token; token counts come from Ollama's eval counts"
        )
        return Endpoint(base_url, self.model, self.api, s.num_parallel, count_tokens=estimate_tokens)

    def _import(self, run_dir: Path) -> None:
        path = run_dir / "Modelfile"
        path.write_text(modelfile(self.settings))
        argv = [self.settings.binary, "create", self.model, "-f", str(path)]
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=600)
        self._record["import"] = {"argv": argv, "modelfile": path.read_text(), "exit_code": done.returncode}
        if done.returncode != 0:
            raise EngineError(f"`ollama create` failed: {(done.stderr or done.stdout)[-500:]}")

    def sample_gauges(self) -> dict[str, float] | None:
        if not self._base_url:
            return None
        model = loaded_models(self._base_url).get(self.model) or {}
        return {"ollama_size_bytes": model.get("size"), "ollama_size_vram_bytes": model.get("size_vram")}

    def stop(self) -> None:
        if self._process is not None and self._process.exit_code() is None and self._base_url:
            try:
                unload(self._base_url, self.model)
                self._record["unloaded"] = True
            except OSError:
                self._record["unloaded"] = False
        super().stop()
