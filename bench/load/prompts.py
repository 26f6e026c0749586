"""Prompts for a run: synthetic text of a target token length, or a JSONL file of prompts.

Synthetic prompts are random words from a fixed vocabulary, drawn from a generator seeded by
(seed, phase, request index), so the same seed gives the same prompts whatever else changes.
Each is cut to the target length with the served model's own tokenizer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.clients.openai import PreparedRequest
from bench.errors import UsageError

# Common English words: each is one or two tokens for most tokenizers, so lengths are easy to fit.
VOCABULARY = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
foot boy age policy music market sense nation plan college interest death experience effect use class
control care field development role effort rate heart drug show leader light voice wife police mind
price report decision son view relationship town road arm difference value building action model season
society tax director position player record paper space ground form event official matter center couple
site project activity star table need court oil situation cost industry figure street image phone data
picture practice piece land product doctor wall patient worker news test movie north love support
technology step baby computer type attention film tree source organization hair window evidence
population truth song river garden letter answer bridge forest island mountain ocean planet
quickly slowly carefully brightly quietly always never often today tomorrow yesterday together
""".split()


def _words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(VOCABULARY) for _ in range(count)]


def fit_text(rng: random.Random, target_tokens: int, count_tokens: Callable[[str], int]) -> tuple[str, int]:
    """The longest prefix of a random word sequence with at most target_tokens tokens (binary search)."""
    words = _words(rng, 2 * target_tokens + 16)
    lo, hi = 1, len(words)
    best_n, best_tokens = 1, count_tokens(words[0])
    while lo <= hi:
        mid = (lo + hi) // 2
        tokens = count_tokens(" ".join(words[:mid]))
        if tokens <= target_tokens:
            best_n, best_tokens = mid, tokens
            lo = mid + 1
        else:
            hi = mid - 1
    return " ".join(words[:best_n]), best_tokens


def synthetic_requests(
    phase: str,
    count: int,
    input_tokens: int,
    output_tokens: int,
    seed: int,
    count_prompt_tokens: Callable[[str], int],
    first_id: int = 0,
) -> list[PreparedRequest]:
    requests = []
    for i in range(count):
        rng = random.Random(f"{seed}:{phase}:{i}")
        text, tokens = fit_text(rng, input_tokens, count_prompt_tokens)
        requests.append(PreparedRequest(first_id + i, phase, text, output_tokens, prompt_tokens_expected=tokens))
    return requests


def load_prompt_file(path: Path) -> list[dict[str, Any]]:
    """JSONL, one object per line: {"prompt": str} or {"messages": [...]}, optional "max_tokens"."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise UsageError(f"--prompts {path}: file not found") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"--prompts {path}, line {number}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}: expected a JSON object")
        has_prompt, has_messages = isinstance(row.get("prompt"), str), isinstance(row.get("messages"), list)
        if has_prompt == has_messages:
            raise UsageError(f'{where}: give exactly one of "prompt" (a string) or "messages" (a list)')
        max_tokens = row.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise UsageError(f'{where}: "max_tokens" must be a positive integer')
        rows.append(row)
    if not rows:
        raise UsageError(f"--prompts {path}: no prompts in the file")
    return rows


def file_requests(
    rows: list[dict[str, Any]], phase: str, count: int, output_tokens: int, start: int, first_id: int = 0
) -> list[PreparedRequest]:
    """count requests taken in order from rows, starting at row `start` and wrapping around."""
    requests = []
    for i in range(count):
        row = rows[(start + i) % len(rows)]
        prompt = row["prompt"] if "prompt" in row else row["messages"]
        requests.append(PreparedRequest(first_id + i, phase, prompt, row.get("max_tokens") or output_tokens))
    return requests
