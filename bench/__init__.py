"""selfhost-bench: measure self-hosted LLM inference with real engines and honest numbers."""

__version__ = "0.1.0"

_PUBLIC = {
    "RunSpec": "bench.spec",
    "execute": "bench.run",
    "load_run": "bench.runs",
}


def __getattr__(name: str):
    """bench.RunSpec, bench.execute(spec) and bench.load_run(path), imported when first used (pandas is heavy)."""
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
