"""selfhost-bench: measure self-hosted LLM inference with real engines and honest numbers."""

__version__ = "0.1.0"
