"""Every wire dialect the rig speaks, by the name `--api` gives it: adding a dialect is adding an entry."""

from __future__ import annotations

from bench.clients import ollama, openai, pooling
from bench.clients.base import Dialect

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (openai.COMPLETIONS, openai.CHAT, ollama.GENERATE, ollama.CHAT, pooling.EMBEDDINGS, pooling.RERANK)
}


def dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown API {name!r}; known: {', '.join(DIALECTS)}") from None
