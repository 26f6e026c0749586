"""A matrix's state on disk (matrix.json): every cell, its axes and resources, and each recorded attempt."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from bench.results import read_json, write_json_atomic

STATE_FILE = "matrix.json"
STATE_VERSION = 1
CellStatus = Literal["pending", "running", "complete", "failed", "interrupted"]


def _iso(unix: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if unix is None else unix, dt.UTC).isoformat(timespec="milliseconds")


class Attempt(BaseModel):
    n: int
    status: Literal["running", "complete", "failed", "interrupted", "abandoned"] = "running"
    reason: str | None = None
    exit_code: int | None = None
    run_status: str | None = None
    executor: Literal["local", "ray"]
    node: dict[str, Any] = Field(default_factory=dict)  # host, ip, ray_node_id, accelerator ids
    submitted_at: str
    started_at: str | None = None
    ended_at: str | None = None
    wait_s: float | None = None  # submitted -> started on its node (Ray: queueing for resources, worker start)
    run_s: float | None = None  # started -> ended on its node
    return_s: float | None = None  # ended on its node -> its results in place on the driver
    run_dir: str | None = None  # relative to the matrix folder


class CellState(BaseModel):
    id: str
    index: int
    axes: dict[str, str]
    spec: dict[str, Any]
    resources: dict[str, Any]
    hardware_offer: str | None = None
    status: CellStatus = "pending"
    reason: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)


class MatrixState(BaseModel):
    state_version: int = STATE_VERSION
    matrix_id: str
    plan_file: str
    plan: dict[str, Any]
    created_at: str
    updated_at: str
    invocations: list[dict[str, Any]] = Field(default_factory=list)
    cells: dict[str, CellState] = Field(default_factory=dict)

    def save(self, matrix_dir: Path) -> None:
        self.updated_at = _iso()
        write_json_atomic(matrix_dir / STATE_FILE, self.model_dump(mode="json"))

    @classmethod
    def load(cls, matrix_dir: Path) -> MatrixState:
        return cls.model_validate(read_json(matrix_dir / STATE_FILE))
