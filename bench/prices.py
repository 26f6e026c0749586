"""`bench prices import`: API offers from LiteLLM's model price map, read from the file the `litellm`
package ships (no service is called; litellm is never imported, because importing it fetches the map
from the network unless told not to).

Imported offers go to `prices.yaml` beside the catalog. The catalog loads that file when it exists,
and any `api_offers` entry of models.yaml with the same name overrides the imported one: hand-entered
prices win.

An imported price is dated by its source, not by the import: the price map carries no date and neither does
the litellm package, so `as_of` is null (every output then says the date is unknown) unless `--source-date`
gives the day the map was published (e.g. the litellm release's date on PyPI). `source_version` names the
litellm version, `retrieved` the day it was read. Besides the base prices the import keeps the cache-read
and cache-write prices, separate batch prices for input and output (as discounts), long-prompt tiers
(`*_above_<N>k_tokens`) and the model's announced deprecation date. Embedding models (`mode: embedding`) are
imported too, as offers of mode `embedding` (input prices only, and their vector size): `bench cost` prices an
embeddings run per 1M embedded tokens against them, and never a generation run.
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
from pydantic import ValidationError

from bench.catalog import ApiOffer
from bench.errors import UsageError
from bench.results import read_yaml, write_atomic

LITELLM_PRICE_FILE = "litellm/model_prices_and_context_window_backup.json"
PRICED_MODES = ("chat", "completion", "responses", "embedding")  # embedding: offers with input prices only
TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost)"
    r"_above_(\d+)k_tokens$"
)
TIER_FIELDS = {
    "input_cost_per_token": "input_per_1m",
    "output_cost_per_token": "output_per_1m",
    "cache_read_input_token_cost": "cached_input_per_1m",
    "cache_creation_input_token_cost": "cache_write_input_per_1m",
}


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


def _discount(batch: Any, base: Any) -> float | None:
    if batch is None or not base:
        return None
    return round(max(0.0, 1 - float(batch) / float(base)), 6)


def _tiers(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-prompt prices: `input_cost_per_token_above_200k_tokens` and its kin, one tier per threshold."""
    tiers: dict[int, dict[str, Any]] = {}
    for key, value in entry.items():
        match = TIER_KEY.match(key)
        if match and value is not None:
            tier = tiers.setdefault(int(match.group(2)) * 1000, {})
            tier[TIER_FIELDS[match.group(1)]] = _per_million(value)
    out = []
    for above, tier in sorted(tiers.items()):
        tier.setdefault("input_per_1m", _per_million(entry["input_cost_per_token"]))
        tier.setdefault("output_per_1m", _per_million(entry["output_cost_per_token"]))
        out.append({"above_input_tokens": above, **tier})
    return out


def offer_from_litellm(key: str, entry: dict[str, Any], source: str, dates: dict[str, Any]) -> dict[str, Any] | None:
    """One LiteLLM entry as an `api_offers` entry, or None when it is not a priced text model. `dates`: as_of
    (the source's own date, or None), retrieved (the day it was read), source_version."""
    if entry.get("mode") not in PRICED_MODES:
        return None
    embedding = entry["mode"] == "embedding"
    input_price, output_price = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if embedding and output_price is None:
        output_price = 0.0  # an embeddings API bills its input alone
    if input_price is None or output_price is None:
        return None
    offer: dict[str, Any] = {
        "provider": entry.get("litellm_provider") or "unknown",
        "model": key,
        "input_per_1m": _per_million(input_price),
        "output_per_1m": _per_million(output_price),
    }
    if embedding:
        offer["mode"] = "embedding"
        vector = entry.get("output_vector_size")
        if isinstance(vector, int) and vector > 0:
            offer["output_vector_size"] = vector
    cached = _per_million(entry.get("cache_read_input_token_cost"))
    if cached is not None:
        offer["cached_input_per_1m"] = cached
    write = _per_million(entry.get("cache_creation_input_token_cost"))
    if write is not None:
        offer["cache_write_input_per_1m"] = write
    batch_in = _discount(entry.get("input_cost_per_token_batches"), input_price)
    batch_out = _discount(entry.get("output_cost_per_token_batches"), output_price)
    if batch_in is not None:
        offer["batch_input_discount"] = batch_in
    if batch_out is not None:
        offer["batch_output_discount"] = batch_out
    tiers = _tiers(entry)
    if tiers:
        offer["tiers"] = tiers
    window = entry.get("max_input_tokens")
    if isinstance(window, int) and window > 0:
        offer["context_window"] = window
    deprecation = entry.get("deprecation_date")
    try:
        offer["deprecation"] = datetime.date.fromisoformat(str(deprecation)).isoformat() if deprecation else None
    except ValueError:
        offer["deprecation"] = None
    if offer["deprecation"] is None:
        del offer["deprecation"]
    elif entry.get("deprecation_source"):
        offer["deprecation_source"] = str(entry["deprecation_source"])
    offer["source"] = source
    if dates.get("source_version"):
        offer["source_version"] = dates["source_version"]
    offer["as_of"] = dates.get("as_of")
    offer["retrieved"] = dates.get("retrieved")
    return offer


def _checked_offer(key: str, entry: dict[str, Any], source: str, dates: dict[str, Any]) -> dict[str, Any] | None:
    """offer_from_litellm, checked as the catalog will read it: a bad entry is refused before anything is written
    (a negative or non-numeric price once saved broke every later load of the catalog)."""
    try:
        offer = offer_from_litellm(key, entry, source, dates)
        if offer is not None:
            ApiOffer.model_validate(offer)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"price map entry {key!r}: {field}: {first['msg']}; fix the entry or match it out") from None
    except (TypeError, ValueError) as exc:  # a price that is not a number
        raise UsageError(f"price map entry {key!r}: a price is not a number ({exc}); fix the entry") from None
    return offer


def select_offers(
    price_map: dict[str, Any], patterns: list[str], source: str, dates: dict[str, Any]
) -> dict[str, dict]:
    """The offers whose LiteLLM key matches any pattern (shell-style, case-insensitive)."""
    offers: dict[str, dict] = {}
    for pattern in patterns:
        matched = False
        for key, entry in price_map.items():
            if not isinstance(entry, dict) or not fnmatch.fnmatch(key.lower(), pattern.lower()):
                continue
            offer = _checked_offer(key, entry, source, dates)
            if offer is not None:
                offers.setdefault(offer_name(offer["provider"], key), offer)
                matched = True
        if not matched:
            raise UsageError(
                f"no priced chat, completion or embedding model in the price map matches {pattern!r}; "
                "try a pattern such as 'gpt-4o*', 'claude-*haiku*' or 'text-embedding-3-*'"
            )
    return offers


def import_prices(
    patterns: list[str],
    out: Path,
    from_file: Path | None = None,
    today: datetime.date | None = None,
    source_date: datetime.date | None = None,
    source_version: str | None = None,
) -> dict[str, dict]:
    """Read the price map, select offers, and merge them into `out` (earlier imports are kept). The offers are
    dated `source_date` (the map's own date) or left undated; `today` is recorded as the day they were read."""
    if from_file is not None:
        path, source = from_file, f"LiteLLM-format price map {from_file.name}"
    else:
        path, version = litellm_price_file()
        source, source_version = f"LiteLLM price map bundled with litellm {version}", source_version or version
    try:
        price_map = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--from {path}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"--from {path}: is a folder; give the price map's JSON file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(price_map, dict):
        raise UsageError(f"{path}: expected a JSON object mapping model names to prices")
    dates = {
        "as_of": source_date.isoformat() if source_date else None,  # the map's own date; None: unknown
        "retrieved": (today or datetime.date.today()).isoformat(),
        "source_version": source_version,
    }
    offers = select_offers(price_map, patterns, source, dates)
    existing: dict[str, Any] = {}
    if out.exists():
        kept = read_yaml(out, str(out)) or {}
        existing = (kept.get("api_offers") or {}) if isinstance(kept, dict) else None
        if not isinstance(existing, dict):
            raise UsageError(f"{out}: not a prices file (a mapping with `api_offers`); give another --out or fix it")
    existing.update(offers)
    header = (
        "# API offers imported by `bench prices import` from LiteLLM's price map (no service was called).\n"
        "# Loaded with the catalog beside it; an api_offers entry of the same name in models.yaml overrides one here.\n"
        "# as_of is the price source's own date (null: the map carries none); retrieved is the day it was read.\n"
    )
    write_atomic(out, header + yaml.safe_dump({"api_offers": existing}, sort_keys=True))
    return offers
