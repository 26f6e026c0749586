"""Ollama: `ollama serve` on a private port, a GGUF imported as a model (or a derived model of a tag).

Checked against Ollama v0.32.15's source (server/routes.go, server/sched.go, llm/llama_server.go,
middleware/openai.go, api/types.go) and docs/api.md:

- Management calls (create, blob upload, show, ps, load, unload, delete) go through the official
  `ollama` Python client, which follows Ollama's API as it changes (a GGUF now becomes a model by
  uploading it as a blob and creating the model with `files`); the client has no version call, so
  /api/version is read directly. The timed generation stream stays in the rig's own client
  (bench/clients/ollama.py).
- Context: Ollama's `num_ctx` is per request. It launches its runner with `-c num_ctx x
  num_parallel -np num_parallel` (llm/llama_server.go), so the driver passes the per-slot size
  (`--ctx-size` is the total across slots, as for llama.cpp) and checks that a request fits it.
  /api/ps reports the `context_length` it loaded with, which the record keeps.
- Settings (`num_ctx`, `num_gpu`, `num_thread`) are model parameters, so requests never carry
  options that would make Ollama reload the model. An imported GGUF gets them at creation; with
  `--ollama-tag` a derived model (`from` the tag plus the parameters) is created and deleted at
  the end, so no flag is silently ignored.
- /api/ps lists models by their short name with the tag (`DisplayShortest`: `bench-x:latest`);
  names are compared in that form.
- The load call (an empty prompt) answers one JSON object with `done_reason: "load"`.
- A prompt longer than the context is cut silently by default (context shift, logged as
  `msg="truncating input prompt"`): the driver counts those lines in the engine log at the end
  and says so in the record.
- `--gpu-layers N` > 0 with nothing of the model in VRAM (/api/ps `size_vram` 0) is an error, not
  a silent CPU run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import urllib.error
import urllib.request
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
from bench.engines.llamacpp import default_ctx_size
from bench.engines.process import ManagedProcess
from bench.errors import EngineError, UsageError
from bench.redact import recorded_env
from bench.spec import OllamaEngine

# OLLAMA_MODELS for imported GGUFs: a cache shared between runs (an import copies the weights)
DEFAULT_MODELS_DIR = Path(
    os.environ.get("BENCH_OLLAMA_MODELS") or Path.home() / ".cache" / "selfhost-bench" / "ollama-models"
)
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
TRUNCATION_MESSAGE = 'msg="truncating input prompt"'
CONTROL_TIMEOUT_S = 30.0


@dataclass
class OllamaSettings:
    binary: str = "ollama"
    model_path: Path | None = None  # a GGUF file to import ...
    tag: str | None = None  # ... or a model Ollama already has (a derived model carries the settings)
    num_ctx: int | None = None  # per request (per slot); Ollama's runner gets num_ctx x num_parallel
    num_gpu: int | None = None  # layers on the GPU; None: Ollama's own placement
    num_thread: int | None = None
    num_parallel: int = 1
    keep_alive: str = "10m"
    models_dir: Path | None = None  # OLLAMA_MODELS; None: Ollama's own store (where a tag lives)
    openai_compatible: bool = False  # use /v1 instead of the native API
    host: str = "127.0.0.1"
    port: int | None = None
    ready_timeout_s: float = 300.0


def short_name(name: str) -> str:
    """A model name as Ollama lists it in /api/ps and /api/tags (model.ParseName(...).DisplayShortest()):
    the default host and namespace left out, the tag always present (`latest` by default)."""
    rest, tag = name, DEFAULT_TAG
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
    parts = rest.split("/")
    host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[-1]
    if len(parts) == 2:
        namespace = parts[0]
    elif len(parts) >= 3:
        host, namespace = parts[0], "/".join(parts[1:-1])
    if host.lower() != DEFAULT_HOST:
        prefix = f"{host}/{namespace}/"
    elif namespace.lower() != DEFAULT_NAMESPACE:
        prefix = f"{namespace}/"
    else:
        prefix = ""
    return f"{prefix}{model}:{tag}"


def parameters(settings: OllamaSettings) -> dict[str, int]:
    """The model parameters the run sets (a Modelfile's PARAMETER lines)."""
    return {key: value for key in ("num_ctx", "num_gpu", "num_thread") if (value := getattr(settings, key)) is not None}


def model_name(settings: OllamaSettings) -> str:
    """The model the run serves, with its tag: an imported file's name derives from its path (re-imports
    reuse it); a tag's derived model also from the settings, so runs with different settings never share one."""
    if settings.tag:
        key = f"{short_name(settings.tag)} {sorted(parameters(settings).items())}"
        slug = re.sub(r"[^a-z0-9.-]+", "-", short_name(settings.tag).lower()).strip("-")[:40]
    else:
        assert settings.model_path is not None
        key = str(settings.model_path.resolve())
        slug = settings.model_path.stem.lower().replace("_", "-")[:40]
    return f"bench-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}:{DEFAULT_TAG}"


def modelfile(settings: OllamaSettings) -> str:
    """The Modelfile equivalent of what is created (for the record: the creation itself goes through the API)."""
    source = settings.tag or settings.model_path
    return "\n".join([f"FROM {source}", *(f"PARAMETER {k} {v}" for k, v in parameters(settings).items())]) + "\n"


def truncations(log_text: str) -> list[dict[str, str]]:
    """Ollama's `truncating input prompt` warnings in its log (slog text: key=value pairs)."""
    found = []
    for line in log_text.splitlines():
        if TRUNCATION_MESSAGE in line:
            found.append({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line) if k != "msg"})
    return found


# -- the HTTP side ----------------------------------------------------------------------------------
def version(base_url: str) -> str | None:
    status, body = http_json("GET", f"{base_url}/api/version", timeout_s=5)
    return body.get("version") if status == 200 and isinstance(body, dict) else None


def _client(base_url: str, timeout_s: float = CONTROL_TIMEOUT_S):
    import ollama  # the official client; imported here so the rest of the rig never needs it

    return ollama.Client(host=base_url, timeout=timeout_s)


def loaded_models(base_url: str, client=None) -> dict[str, dict[str, Any]]:
    """/api/ps by short name with tag: each loaded model's size, size_vram (bytes), digest, details and
    context_length."""
    answer = (client or _client(base_url, 5.0)).ps()
    out = {}
    for m in answer.models:
        row = m.model_dump(mode="json", exclude_none=True)
        out[short_name(m.model or m.name or "")] = row
    return out


def unload(base_url: str, model: str) -> str | None:
    """keep_alive 0 with no prompt: Ollama unloads the model and answers done_reason "unload"."""
    return _client(base_url).generate(model=model, keep_alive=0).done_reason


def _blob_exists(base_url: str, digest: str) -> bool:
    request = urllib.request.Request(f"{base_url}/api/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=CONTROL_TIMEOUT_S) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


class OllamaDriver(LaunchedEngine):
    name = "ollama"
    formats = ("gguf",)

    @classmethod
    def from_spec(cls, engine: OllamaEngine, context: LaunchContext) -> OllamaDriver:
        parallel = engine.parallel or context.max_streams
        if parallel < 1:
            raise UsageError(f"--parallel {parallel}: must be at least 1")
        total = engine.ctx_size or default_ctx_size(parallel, context.tokens_per_request)
        per_slot = total // parallel
        if context.tokens_per_request and per_slot < context.tokens_per_request:
            raise UsageError(
                f"--ctx-size {total} over {parallel} slot(s) gives {per_slot} tokens per request, fewer than "
                f"the {context.tokens_per_request} input+output tokens of a request (Ollama's num_ctx is per "
                "request and it would cut the prompt silently); raise --ctx-size or omit it"
            )
        settings = OllamaSettings(
            binary=engine.binary,
            model_path=None if engine.tag else context.model_path,
            tag=engine.tag,
            num_ctx=per_slot,
            num_gpu=engine.gpu_layers or None,
            num_thread=engine.threads,
            num_parallel=parallel,
            keep_alive=engine.keep_alive,
            models_dir=None if engine.tag else DEFAULT_MODELS_DIR,
            openai_compatible=engine.openai_compatible,
            host=engine.host,
            port=engine.port,
            ready_timeout_s=engine.ready_timeout_s,
        )
        return cls(settings, context.api)

    def __init__(self, settings: OllamaSettings, api: str) -> None:
        self.settings = settings
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
        try:
            import ollama  # noqa: F401
        except ImportError:
            raise UsageError(
                "--engine ollama needs the official Ollama client: pip install ollama (it is a dependency "
                "of selfhost-bench; reinstall with pip install -e .)"
            ) from None
        if settings.port is not None:
            ensure_port_free(settings.host, settings.port)
        self.model = model_name(settings)
        super().__init__()
        self._base_url: str | None = None
        self._derived = False  # a model this run created from a tag, deleted at the end
        self._ps_client = None  # one client for the telemetry's /api/ps reads (its connection kept alive)
        self._record.update(launcher="ollama serve", model=self.model, parameters=parameters(settings))

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = {
            **os.environ,
            "OLLAMA_HOST": f"{s.host}:{s.port}",
            "OLLAMA_NUM_PARALLEL": str(s.num_parallel),
            "OLLAMA_KEEP_ALIVE": s.keep_alive,
        }
        if s.models_dir is not None:
            env["OLLAMA_MODELS"] = str(s.models_dir)
        return env

    def start(self, run_dir: Path) -> Endpoint:
        s = self.settings
        s.port = s.port or free_port(s.host)
        if s.models_dir is not None:
            s.models_dir.mkdir(parents=True, exist_ok=True)
        base_url = self._base_url = f"http://{s.host}:{s.port}"
        argv = [s.binary, "serve"]
        self._process = ManagedProcess(argv, run_dir / "engine.log", env=self._env())
        started = time.monotonic()
        self._process.start()
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}
        env = recorded_env(self._env(), ("OLLAMA_",))
        self._record.update(argv=argv, base_url=base_url, pid=self._process.pid, env=env, settings=settings)
        wait_until_ready(
            self._process,
            lambda: None if version(base_url) else "no /api/version yet",
            s.ready_timeout_s,
            "ollama serve",
        )
        self._record["version"] = version(base_url)
        try:
            self._create(run_dir)
            self._load()
        except EngineError:
            raise
        except Exception as exc:  # the client's ResponseError, httpx's errors: one line, with the log's tail
            raise EngineError(
                f"ollama: {type(exc).__name__}: {str(exc)[:300]}; engine log {self._process.log_path}, last "
                f"lines:\n{self._process.log_tail()}"
            ) from None
        self._record["load_time_s"] = time.monotonic() - started
        self._record["tokenizer"] = (
            f"none in Ollama's API: prompt lengths are estimated at {CHARS_PER_TOKEN} "
            "characters per token; token counts come from Ollama's eval counts"
        )
        return Endpoint(base_url, self.model, self.api, s.num_parallel, count_tokens=estimate_tokens)

    def _create(self, run_dir: Path) -> None:
        """The served model: a GGUF uploaded as a blob and created with `files`, or derived from a tag."""
        s = self.settings
        client = _client(self._base_url, s.ready_timeout_s)
        (run_dir / "Modelfile").write_text(modelfile(s))  # what was created, in Modelfile form
        params = parameters(s)
        if s.tag:
            try:
                client.show(s.tag)
            except Exception as exc:
                raise EngineError(
                    f"--ollama-tag {s.tag}: Ollama has no such model ({str(exc)[:200]}); `ollama pull {s.tag}` "
                    "first (it is looked up in Ollama's own store)"
                ) from None
            answer = client.create(model=self.model, from_=s.tag, parameters=params, stream=False)
            self._derived = True
            self._record["import"] = {"from": s.tag, "parameters": params, "status": answer.status}
            return
        assert s.model_path is not None
        digest = _sha256(s.model_path)
        uploaded = not _blob_exists(self._base_url, digest)
        if uploaded:
            if client.create_blob(s.model_path) != digest:
                raise EngineError(f"ollama: the uploaded blob of {s.model_path} changed while it was read")
        files = {s.model_path.name: digest}
        answer = client.create(model=self.model, files=files, parameters=params, stream=False)
        self._record["import"] = {
            "files": files,
            "blob_uploaded": uploaded,
            "parameters": params,
            "status": answer.status,
        }

    def _load(self) -> None:
        """An empty prompt loads the model: one JSON object, done_reason "load"; then /api/ps says how."""
        s = self.settings
        loaded = _client(self._base_url, s.ready_timeout_s).generate(model=self.model, keep_alive=s.keep_alive)
        if not loaded.done:
            raise EngineError(f"ollama: the load call for {self.model} did not answer done: {loaded!r:.300}")
        self._record["load_done_reason"] = loaded.done_reason
        ps = loaded_models(self._base_url).get(short_name(self.model))
        if ps is None:
            raise EngineError(f"ollama: {self.model} is not in /api/ps after loading it")
        self._record["loaded"] = ps
        self._record["context_length"] = ps.get("context_length")
        if s.num_ctx and ps.get("context_length") not in (None, s.num_ctx):
            self._record.setdefault("notes", []).append(
                f"asked for num_ctx {s.num_ctx} per request, Ollama loaded context_length {ps['context_length']}"
            )
        if s.num_gpu and not ps.get("size_vram"):
            raise EngineError(
                f"--gpu-layers {s.num_gpu} asked for GPU offload, but Ollama holds none of {self.model} in VRAM "
                f"(/api/ps size_vram 0 of size {ps.get('size')}): no usable GPU (driver, container --gpus, or a "
                "CPU-only Ollama); a CPU run is not what was asked. Omit --gpu-layers to benchmark the CPU."
            )

    def sample_gauges(self) -> dict[str, float] | None:
        if not self._base_url:
            return None
        try:
            self._ps_client = self._ps_client or _client(self._base_url, 5.0)
            model = loaded_models(self._base_url, self._ps_client).get(short_name(self.model)) or {}
        except Exception:  # a telemetry tick never fails the run: no reading this time
            return None
        return {"ollama_size_bytes": model.get("size"), "ollama_size_vram_bytes": model.get("size_vram")}

    def stop(self) -> None:
        if self._process is not None and self._process.exit_code() is None and self._base_url:
            try:
                self._record["unloaded"] = unload(self._base_url, self.model) == "unload"
            except Exception:
                self._record["unloaded"] = False
            if self._derived:
                try:
                    self._record["derived_model_deleted"] = (
                        _client(self._base_url).delete(self.model).status == "success"
                    )
                except Exception:
                    self._record["derived_model_deleted"] = False
        if self._ps_client is not None:
            self._ps_client.close()
        super().stop()
        self._record_truncations()

    def _record_truncations(self) -> None:
        """Ollama cuts a prompt longer than num_ctx without an error; its log says when."""
        if self._process is None:
            return
        try:
            cut = truncations(self._process.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return
        self._record["truncated_prompts"] = len(cut)
        if cut:
            self._record.setdefault("notes", []).append(
                f"Ollama truncated {len(cut)} prompt(s) to fit num_ctx {self.settings.num_ctx} (engine log: "
                f'"truncating input prompt", first: prompt={cut[0].get("prompt")} kept={cut[0].get("new")}); '
                "those requests measured shorter prompts than asked: raise --ctx-size"
            )
