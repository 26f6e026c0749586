"""`bench prices import`: API offers from LiteLLM's model price map, read from the file the `litellm`
package ships (no service is called; litellm is never imported, because importing it fetches the map
from the network unless told not to).

Imported offers go to `prices.yaml` beside the catalog. The catalog loads that file when it exists,
and any `api_offers` entry of models.yaml with the same name overrides the imported one: hand-entered
prices win.
"""

from __future__ import annotations

import datetime
import fnmatch
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UsageError
from bench.results import write_atomic

LITELLM_PRICE_FILE = "litellm/model_prices_and_context_window_backup.json"
PRICED_MODES = ("chat", "completion", "responses")


def litellm_price_file() -> tuple[Path, str]:
    """The price map inside the installed litellm package, and the package version."""
    try:
        dist = importlib.metadata.distribution("litellm")
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(
            "the litellm package is not installed; run: pip install --no-deps litellm "
            "(only its bundled price file is read), or pass --from FILE"
        ) from None
    path = Path(str(dist.locate_file(LITELLM_PRICE_FILE)))
    if not path.exists():
        raise UsageError(f"litellm {dist.version} has no {LITELLM_PRICE_FILE}; pass --from FILE")
    return path, dist.version


def offer_name(provider: str, model: str) -> str:
    """The catalog name of an offer, e.g. openai + gpt-4o-mini -> openai-gpt-4o-mini."""
    model = model.split("/")[-1].lower()
    name = model if model.startswith(provider.lower()) else f"{provider}-{model}"
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def _per_million(value: Any) -> float | None:
    return None if value is None else round(float(value) * 1e6, 6)


def offer_from_litellm(key: str, entry: dict[str, Any], source: str, as_of: str) -> dict[str, Any] | None:
    """One LiteLLM entry as an `api_offers` entry, or None when it is not a priced text model."""
    if entry.get("mode") not in PRICED_MODES:
        return None
    input_price, output_price = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if input_price is None or output_price is None:
        return None
    offer: dict[str, Any] = {
        "provider": entry.get("litellm_provider") or "unknown",
        "model": key,
        "input_per_1m": _per_million(input_price),
        "output_per_1m": _per_million(output_price),
    }
    cached = _per_million(entry.get("cache_read_input_token_cost"))
    if cached is not None:
        offer["cached_input_per_1m"] = cached
    batch_output = entry.get("output_cost_per_token_batches")
    if batch_output is not None and output_price:
        offer["batch_discount"] = round(max(0.0, 1 - float(batch_output) / float(output_price)), 6)
    window = entry.get("max_input_tokens")
    if isinstance(window, int) and window > 0:
        offer["context_window"] = window
    offer["source"] = source
    offer["as_of"] = as_of
    return offer


def select_offers(price_map: dict[str, Any], patterns: list[str], source: str, as_of: str) -> dict[str, dict]:
    """The offers whose LiteLLM key matches any pattern (shell-style, case-insensitive)."""
    offers: dict[str, dict] = {}
    for pattern in patterns:
        matched = False
        for key, entry in price_map.items():
            if not isinstance(entry, dict) or not fnmatch.fnmatch(key.lower(), pattern.lower()):
                continue
            offer = offer_from_litellm(key, entry, source, as_of)
            if offer is not None:
                offers.setdefault(offer_name(offer["provider"], key), offer)
                matched = True
        if not matched:
            raise UsageError(
                f"no priced chat or completion model in the price map matches {pattern!r}; "
                "try a pattern such as 'gpt-4o*' or 'claude-*haiku*'"
            )
    return offers


def import_prices(
    patterns: list[str], out: Path, from_file: Path | None = None, today: datetime.date | None = None
) -> dict[str, dict]:
    """Read the price map, select offers, and merge them into `out` (earlier imports are kept)."""
    if from_file is not None:
        path, source = from_file, f"LiteLLM-format price map {from_file.name}"
    else:
        path, version = litellm_price_file()
        source = f"LiteLLM price map bundled with litellm {version}"
    try:
        price_map = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--from {path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(price_map, dict):
        raise UsageError(f"{path}: expected a JSON object mapping model names to prices")
    as_of = (today or datetime.date.today()).isoformat()  # the day the map was read
    offers = select_offers(price_map, patterns, source, as_of)
    existing: dict[str, Any] = {}
    if out.exists():
        existing = (yaml.safe_load(out.read_text(encoding="utf-8")) or {}).get("api_offers") or {}
    existing.update(offers)
    header = (
        "# API offers imported by `bench prices import` from LiteLLM's price map (no service was called).\n"
        "# Loaded with the catalog beside it; an api_offers entry of the same name in models.yaml overrides one here.\n"
    )
    write_atomic(out, header + yaml.safe_dump({"api_offers": existing}, sort_keys=True))
    return offers
