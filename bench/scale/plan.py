"""A matrix plan: a base run spec, axes whose values change it, and the resources each cell needs.

    matrix_id: gemma-threads            # results/<matrix_id>/ (default: the plan file's name)
    base:                               # a run spec (bench.spec.RunSpec) every cell starts from
      engine: {kind: llamacpp}
      model: gemma3-270m
      workload: {input_tokens: 128, output_tokens: 64}
      load: {requests: 64}
    resources: {num_cpus: 2}            # what every cell needs (Ray's scheduling terms)
    axes:                               # cells: the product of the axes, in this order
      engine.threads: [1, 2]            # a spec field: each value sets it
      load.concurrency: [1, "1,4"]
      hardware:                         # named values: each sets fields, adds resources, names its price
        - name: cpu
          resources: {num_cpus: 2}
          hardware_offer: cpu-2-core-vm
        - name: h100
          set: {engine: {gpu_layers: 99}}
          resources: {num_gpus: 1, accelerator_type: H100}
          hardware_offer: h100-sxm-on-demand
    report: {hardware_offer: cpu-2-core-vm, tasks_per_month: 1000000, utilization: 0.5}

An axis is either a spec field's dotted path (`engine.threads`, `model`, `load.concurrency`), whose values
set that field, or any name whose values are mappings with `name`, `set` (spec fields, nested or dotted),
`resources` and `hardware_offer`. Values merge into the base in axis order; a value that sets
`engine.kind` to another engine replaces the engine section instead of merging into it.

Resources: `num_cpus` (default 1), `num_gpus` (whole GPUs only, so cells never share one: Ray gives each
GPU to one task at a time), `memory` (bytes, or `16GiB`), `accelerator_type` (Ray's GPU type, e.g. H100:
the node must have the resource `accelerator_type:H100`, which Ray sets on nodes with such GPUs) and
`custom` (any other Ray resources). `overrides` changes particular cells by id (`set`, `resources`,
`hardware_offer`), e.g. a larger context for one model. A cell that offloads to a GPU (`gpu_layers` > 0,
or vLLM) must ask for whole GPUs, or it could land beside another cell on the same one.

Each cell is one typed RunSpec, validated here, before anything starts: a cell that is not a valid run
spec is an error naming the cell and the field. Relative paths in cell specs are made absolute against
the folder the matrix is started from, and must exist at that path on every node.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import UsageError
from bench.results import read_yaml
from bench.spec import RunSpec, dropped_beside_plan

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
MEMORY_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6}
MEMORY_UNITS |= {"gb": 10**9, "tb": 10**12, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
# spec fields that name files: made absolute, so a cell means the same on every node
PATH_FIELDS = (
    ("catalog",),
    ("calibration",),
    ("workload", "prompts"),
    ("workload", "golden"),
    ("engine", "python"),
    ("engine", "server_binary"),
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def parse_memory(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if not match or match.group(2).lower() not in MEMORY_UNITS:
            raise ValueError(f"{value!r}: give bytes, or a number with a unit such as 16GiB or 512MiB")
        return int(float(match.group(1)) * MEMORY_UNITS[match.group(2).lower()])
    return value


class Resources(Strict):
    """What one cell needs of a node, in Ray's terms. None: not set here (a later setting or the default)."""

    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: int | None = Field(default=None, ge=0, description="whole GPUs: a GPU is never shared by two cells")
    memory: int | None = Field(default=None, ge=0, description="bytes of memory Ray reserves for the cell")
    accelerator_type: str | None = Field(default=None, description="e.g. H100: the node has accelerator_type:H100")
    custom: dict[str, float] = Field(default_factory=dict, description="other Ray resources, e.g. {nvlink: 1}")

    _memory = field_validator("memory", mode="before")(classmethod(lambda cls, v: parse_memory(v)))

    @field_validator("num_gpus", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(
                f"{value:g}: cells take whole GPUs, so two cells never share one (a shared GPU would make "
                "both measurements wrong)"
            )
        return value

    def merged(self, top: Resources | None) -> Resources:
        if top is None:
            return self
        values = self.model_dump()
        for name, value in top.model_dump().items():
            if name == "custom":
                values["custom"] = {**values["custom"], **value}
            elif value is not None:
                values[name] = value
        return Resources(**values)

    def ray_options(self) -> dict[str, Any]:
        """The options of a Ray task that needs these resources."""
        options: dict[str, Any] = {"num_cpus": 1 if self.num_cpus is None else self.num_cpus}
        options["num_gpus"] = self.num_gpus or 0
        if self.memory:
            options["memory"] = self.memory
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        if self.custom:
            options["resources"] = dict(self.custom)
        return options

    def demand(self) -> dict[str, float]:
        """The node resources a cell takes, by Ray's resource names (for checking that some node has them)."""
        o = self.ray_options()
        demand = {"CPU": o["num_cpus"], "GPU": o["num_gpus"], "memory": o.get("memory", 0), **o.get("resources", {})}
        if self.accelerator_type:
            demand[f"accelerator_type:{self.accelerator_type}"] = 0.001  # what Ray's accelerator_type option asks
        return {k: v for k, v in demand.items() if v}

    def text(self) -> str:
        parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.demand().items()]
        return ", ".join(parts) or "nothing"


class AxisValue(Strict):
    name: str | None = Field(default=None, description="the value's label in cell ids and the index")
    set: dict[str, Any] = Field(default_factory=dict, description="spec fields: nested, or dotted paths")
    resources: Resources | None = None
    hardware_offer: str | None = Field(default=None, description="models.yaml hardware offer pricing this cell")


class ReportSettings(Strict):
    hardware_offer: str | None = Field(default=None, description="the offer pricing cells whose axes name none")
    api_offers: list[str] | None = Field(default=None, description="API offers to compare against (default: all)")
    tasks_per_month: float = Field(default=1_000_000, gt=0)
    utilization: float = Field(default=0.5, gt=0, le=1)
    catalog: Path | None = Field(default=None, description="models.yaml with the prices (default: the usual)")


class MatrixPlan(Strict):
    matrix_id: str | None = Field(default=None, pattern=f"^{ID_PATTERN}$")
    base: dict[str, Any]
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    resources: Resources = Resources()
    results_dir: Path = Path("results")
    shared_dir: Path | None = Field(
        default=None,
        description="a folder that the driver and every node mount at this same path: cells write their run "
        "directories straight into <shared_dir>/<matrix_id>/ (else they come back through Ray's object store)",
    )
    retries: int = Field(default=0, ge=0, description="new attempts for a failed cell, each recorded")
    overrides: dict[str, AxisValue] = Field(
        default_factory=dict, description="changes to particular cells, by cell id: set, resources, hardware_offer"
    )
    report: ReportSettings = ReportSettings()

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in axes.items():
            if not values:
                raise ValueError(f"axis {name!r} has no values")
        return axes

    @model_validator(mode="after")
    def _base(self) -> MatrixPlan:
        output = self.base.get("output") or {}
        if "run_id" in output or "results_dir" in output:
            raise ValueError("base.output: cells name their own run directories (results/<matrix_id>/<cell>/)")
        return self


class Cell(BaseModel):
    """One cell: its id, the axis labels it came from, its run spec and what it needs."""

    model_config = ConfigDict(frozen=True)

    id: str
    index: int
    axes: dict[str, str]
    spec: RunSpec
    resources: Resources
    hardware_offer: str | None = None

    def spec_json(self) -> dict[str, Any]:
        return self.spec.to_json()


def _label(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_label(v) for v in value)
    if isinstance(value, dict):
        return "+".join(f"{k}-{_label(v)}" for k, v in value.items())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}
        data = child
    data[leaf] = value


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    """{"engine.threads": 2, "load": {...}} -> nested mappings."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        one: dict[str, Any] = {}
        _set_path(one, key, value)
        out = merge(out, one)
    return out


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; an engine section of another kind replaces the base's instead of merging into it."""
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            other_kind = "kind" in value and "kind" in old and value["kind"] != old["kind"]
            out[key] = dict(value) if other_kind else merge(old, value)
        else:
            out[key] = value
    return out


def _axis_values(name: str, values: list[Any]) -> list[AxisValue]:
    out = []
    for value in values:
        if isinstance(value, dict):
            try:
                out.append(AxisValue.model_validate(value))
            except ValidationError as exc:
                raise UsageError(f"axis {name}: value {value!r}: {_first_error(exc)}") from None
            if out[-1].name is None:
                out[-1] = out[-1].model_copy(update={"name": _label(out[-1].set) or str(len(out) - 1)})
        else:
            out.append(AxisValue(name=_label(value), set={name: value}))
    return out


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}"


def _short(axis: str, axes: list[str]) -> str:
    leaf = axis.rsplit(".", 1)[-1]
    return leaf if sum(a.rsplit(".", 1)[-1] == leaf for a in axes) == 1 else axis


def _absolute_paths(data: dict[str, Any], root: Path) -> dict[str, Any]:
    for path in PATH_FIELDS:
        section = data
        for part in path[:-1]:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict) and isinstance(section.get(path[-1]), str | Path):
            value = Path(section[path[-1]]).expanduser()
            if not value.is_absolute():
                section[path[-1]] = str((root / value).resolve())
    return data


def _offloads(spec: RunSpec) -> bool:
    engine = spec.engine
    return engine.kind == "vllm" or getattr(engine, "gpu_layers", 0) > 0


def expand(plan: MatrixPlan, matrix_dir: Path, root: Path | None = None) -> list[Cell]:
    """Every cell of the plan, each a validated RunSpec writing to <matrix_dir>/<cell>/."""
    root = root or Path.cwd()
    names = list(plan.axes)
    per_axis = [_axis_values(n, plan.axes[n]) for n in names]
    cells: list[Cell] = []
    seen: dict[str, dict[str, str]] = {}
    for index, combo in enumerate(itertools.product(*per_axis) if names else [()]):
        data = dict(plan.base)
        resources = plan.resources
        offer = plan.report.hardware_offer
        labels: dict[str, str] = {}
        for axis, value in zip(names, combo, strict=True):
            data = merge(data, _nested(value.set))
            resources = resources.merged(value.resources)
            offer = value.hardware_offer or offer
            labels[axis] = value.name or ""
        cell_id = "_".join(f"{_safe(_short(a, names))}-{_safe(labels[a])}" for a in names) or "cell"
        if cell_id in plan.overrides:
            extra = plan.overrides[cell_id]
            data = merge(data, _nested(extra.set))
            resources = resources.merged(extra.resources)
            offer = extra.hardware_offer or offer
        if not re.fullmatch(ID_PATTERN, cell_id):
            raise UsageError(
                f"cell {labels}: its id {cell_id!r} is not a folder name of at most 128 characters; give the "
                "axes' values shorter `name`s"
            )
        if cell_id in seen:
            raise UsageError(
                f"cells {seen[cell_id]} and {labels} have the same id {cell_id!r}; give their values names"
            )
        seen[cell_id] = labels
        data = merge(
            _absolute_paths(merge({}, data), root), {"output": {"results_dir": str(matrix_dir), "run_id": cell_id}}
        )
        dropped = dropped_beside_plan(data)
        if dropped is not None:  # the plan would run without them, and the cell's label would say otherwise
            plan_path, given = dropped
            raise UsageError(
                f"cell {cell_id}: {', '.join(given)} would be ignored beside {plan_path}; take "
                f"{'them' if len(given) > 1 else 'it'} out of the base or the axis that sets "
                f"{'them' if len(given) > 1 else 'it'}"
            )
        try:
            spec = RunSpec.model_validate(data)
        except ValidationError as exc:
            raise UsageError(f"cell {cell_id}: not a valid run spec: {_first_error(exc)}") from None
        if _offloads(spec) and not resources.num_gpus:
            raise UsageError(
                f"cell {cell_id}: its engine runs on a GPU ({spec.engine.kind}"
                f"{', gpu_layers ' + str(getattr(spec.engine, 'gpu_layers', '')) if spec.engine.kind != 'vllm' else ''}"
                ") but the cell asks for no GPU; give resources: {num_gpus: 1} so no other cell shares it"
            )
        tp = getattr(spec.engine, "tensor_parallel_size", None) or 1
        if spec.engine.kind == "vllm" and (resources.num_gpus or 0) < tp:
            raise UsageError(f"cell {cell_id}: tensor_parallel_size {tp} needs num_gpus >= {tp}")
        cells.append(Cell(id=cell_id, index=index, axes=labels, spec=spec, resources=resources, hardware_offer=offer))
    unknown = sorted(set(plan.overrides) - {c.id for c in cells})
    if unknown:
        raise UsageError(f"overrides: no cell is named {', '.join(unknown)} (cells: {', '.join(c.id for c in cells)})")
    return cells


def load_plan(path: Path) -> MatrixPlan:
    raw = read_yaml(path, f"plan file {path}")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a plan is a mapping with base, axes and resources (see examples/)")
    try:
        return MatrixPlan.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"{path}: {_first_error(exc)}") from None


def default_matrix_id(path: Path) -> str:
    return _safe(path.stem)[:128]
