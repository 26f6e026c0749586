"""Every engine driver by the name a run spec gives it: adding an engine is adding an entry."""

from __future__ import annotations

from bench.engines.base import EngineDriver, LaunchContext
from bench.engines.endpoint import EndpointDriver
from bench.engines.llamacpp import LlamaCppDriver
from bench.engines.ollama import OllamaDriver
from bench.engines.vllm import VllmDriver
from bench.errors import UsageError

DRIVERS: dict[str, type[EngineDriver]] = {
    "llamacpp": LlamaCppDriver,
    "vllm": VllmDriver,
    "ollama": OllamaDriver,
    "endpoint": EndpointDriver,
}


def make_driver(engine, context: LaunchContext) -> EngineDriver:
    """The driver for the spec's engine, after checking the catalog entry suits it."""
    driver = DRIVERS[engine.kind]
    entry = context.entry
    if entry is not None and engine.kind != "endpoint":
        if entry.engines and engine.kind not in entry.engines:
            raise UsageError(f"--model {context.model} lists engines {entry.engines} in the catalog, not {engine.kind}")
        if entry.format not in driver.formats:
            kinds = " or ".join("GGUF files" if f == "gguf" else "Hugging Face folders" for f in driver.formats)
            raise UsageError(f"--engine {engine.kind} serves {kinds}; model {context.model} has format {entry.format}")
    return driver.from_spec(engine, context)
