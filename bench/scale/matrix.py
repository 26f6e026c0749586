"""`bench matrix PLAN.yaml [--ray ADDRESS] [--resume]`: every cell of a plan, here or on a Ray cluster.

Without --ray the cells run one after another on this machine, each through bench.scale.cells.run_cell,
which calls bench.run.execute as `bench run` does. With --ray each cell is one Ray task with the cell's
resources (`num_cpus`, whole `num_gpus`, `memory`, `accelerator_type`, custom ones), scheduled by Ray onto
a node that has them, running the same run_cell there. Ray's automatic retries are off (`max_retries=0`,
`retry_exceptions=False`): a benchmark re-run behind one's back is a different measurement. A failed cell
gets a new attempt only when the plan allows `retries` or on `--resume`, and every attempt is recorded.

results/<matrix_id>/ holds:

    matrix.json           the state: every cell with its axes, spec, resources and every attempt (status,
                          reason, exit code, node, times); rewritten atomically after each change
    <cell>/               the run directory of the cell's latest attempt (its manifest has `node`, `matrix`)
    attempts/<cell>/<n>/  run directories of earlier attempts, moved aside when a new one starts
    index.csv, index.parquet   one row per cell: axes, status, node, headline figures (bench.scale.index)
    report/               report.md, report.html, plots: latency-throughput and cost per cell vs API offers

A cell that fails (the engine did not start or died, nothing measured, bad input on its node, the worker or
node lost) is marked failed with its reason; the other cells go on. `--resume` runs the cells that are not
complete, keeping the earlier attempts. GPUs are never shared: a cell asks for whole GPUs and Ray gives each
GPU to one task at a time, so two cells on one node never overlap on the same GPU (each manifest records the
GPU ids Ray assigned and when the cell ran; bench.scale.index.gpu_overlaps checks it from the files).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.catalog import load_catalog
from bench.errors import UsageError
from bench.redact import redacted_env_fields
from bench.run import EXIT_INTERRUPTED, EXIT_NOT_MEASURED, EXIT_OK
from bench.scale.cells import CellJob, CellOutcome, Transport, run_cell, unpack
from bench.scale.cluster import alive_nodes, connect, require_ray
from bench.scale.index import write_index
from bench.scale.plan import ID_PATTERN, Cell, MatrixPlan, default_matrix_id, expand, load_plan
from bench.scale.report import write_matrix_report
from bench.scale.state import STATE_FILE, Attempt, CellState, MatrixState, _iso

ATTEMPTS_DIR = "attempts"
CANCEL_GRACE_S = 60.0  # after Ctrl-C, how long cancelled cells get to stop their engines and write their files


@dataclass
class MatrixResult:
    matrix_dir: Path
    state: MatrixState
    exit_code: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.state.cells.values():
            out[cell.status] = out.get(cell.status, 0) + 1
        return out


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    """A cell's spec without where it writes (which an object-store attempt changes on its node)."""
    return {k: v for k, v in spec.items() if k != "output"}


class Matrix:
    """One invocation of a plan: the cells still to run, their state on disk, and how they run."""

    def __init__(
        self,
        plan_path: Path,
        ray_address: str | None = None,
        resume: bool = False,
        matrix_id: str | None = None,
        say=print,
    ) -> None:
        self.plan_path = plan_path
        self.plan: MatrixPlan = load_plan(plan_path)
        self.ray_address = ray_address
        self.say = say
        if matrix_id is not None and not re.fullmatch(ID_PATTERN, matrix_id):
            raise UsageError(
                f"--matrix-id {matrix_id!r}: a matrix id is a folder name: letters, digits, '.', '_' and '-', "
                "no '/' (it names the folder under the results folder)"
            )
        self.matrix_id = matrix_id or self.plan.matrix_id or default_matrix_id(plan_path)
        if ray_address is not None and self.plan.shared_dir is not None:
            self.transport: Transport = "shared-folder"
            root = self.plan.shared_dir
        else:
            self.transport = "object-store" if ray_address is not None else "local"
            root = self.plan.results_dir
        self.matrix_dir = root / self.matrix_id
        self.cells: list[Cell] = expand(self.plan, self.matrix_dir)
        self._check_prices()
        self.state = self._open_state(resume)

    # -- before anything runs ------------------------------------------------------------------
    def _check_prices(self) -> None:
        settings = self.plan.report
        catalog, path = load_catalog(settings.catalog)
        for cell in self.cells:
            if cell.hardware_offer and cell.hardware_offer not in catalog.hardware_offers:
                known = ", ".join(sorted(catalog.hardware_offers)) or "none"
                raise UsageError(f"cell {cell.id}: hardware_offer {cell.hardware_offer!r} is not in {path} ({known})")
        for name in settings.api_offers or []:
            if name not in catalog.api_offers:
                raise UsageError(f"report.api_offers: {name!r} is not in {path} (or prices.yaml beside it)")

    def _open_state(self, resume: bool) -> MatrixState:
        state_file = self.matrix_dir / STATE_FILE
        if self.matrix_dir.exists() and not resume:
            raise UsageError(
                f"{self.matrix_dir} already exists: --resume runs its cells that are not complete, or give "
                "another --matrix-id"
            )
        if resume and not state_file.exists():
            raise UsageError(f"--resume: {state_file} not found; there is no matrix {self.matrix_id!r} to resume")
        now = _iso()
        if not resume:
            state = MatrixState(
                matrix_id=self.matrix_id,
                plan_file=str(self.plan_path.resolve()),
                plan=redacted_env_fields(self.plan.model_dump(mode="json")),
                created_at=now,
                updated_at=now,
            )
        else:
            state = MatrixState.load(self.matrix_dir)
            for cell in self.cells:
                old = state.cells.get(cell.id)
                if (
                    old
                    and old.status == "complete"
                    and _comparable(old.spec) != _comparable(redacted_env_fields(cell.spec_json()))
                ):
                    raise UsageError(
                        f"--resume: cell {cell.id} completed with another spec than the plan now gives; a changed "
                        "cell is a new measurement: give another --matrix-id"
                    )
            state.plan = redacted_env_fields(self.plan.model_dump(mode="json"))
        for cell in self.cells:
            old = state.cells.get(cell.id)
            cell_state = CellState(
                id=cell.id,
                index=cell.index,
                axes=cell.axes,
                spec=redacted_env_fields(cell.spec_json()),
                resources=cell.resources.model_dump(),
                hardware_offer=cell.hardware_offer,
            )
            if old is not None:
                if old.status != "complete":  # a not-complete cell takes the plan's spec as it is now
                    old = old.model_copy(update={"spec": cell_state.spec, "resources": cell_state.resources})
                for attempt in old.attempts:
                    if attempt.status == "running":  # the driver stopped while it ran
                        attempt.status, attempt.reason = "abandoned", "the matrix driver stopped before it ended"
                if old.status == "running":
                    old.status = "interrupted"
                cell_state = old.model_copy(update={"index": cell.index, "hardware_offer": cell.hardware_offer})
            state.cells[cell.id] = cell_state
        return state

    # -- running -------------------------------------------------------------------------------
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if self.state.cells[c.id].status != "complete"]

    def run(self) -> MatrixResult:
        self.matrix_dir.mkdir(parents=True, exist_ok=True)
        todo = self.todo()
        executor = "ray" if self.ray_address is not None else "local"
        invocation: dict[str, Any] = {
            "started_at": _iso(),
            "executor": executor,
            "transport": self.transport,
            "ray_address": self.ray_address,
            "cells": [c.id for c in todo],
        }
        self.state.invocations.append(invocation)
        self.state.save(self.matrix_dir)
        skipped = len(self.cells) - len(todo)
        self.say(
            f"matrix {self.matrix_id}: {len(self.cells)} cells, {len(todo)} to run"
            + (f" ({skipped} already complete)" if skipped else "")
            + f", {'on Ray at ' + self.ray_address if executor == 'ray' else 'one after another on this machine'}"
            + f"; results in {self.matrix_dir}"
        )
        interrupted = False
        try:
            if executor == "ray":
                invocation["cluster"] = self._run_ray(todo)
            else:
                self._run_local(todo)
        except KeyboardInterrupt:
            interrupted = True
        invocation["ended_at"] = _iso()
        self.state.save(self.matrix_dir)
        files = self.write_outputs()
        statuses = [c.status for c in self.state.cells.values()]
        if interrupted or "interrupted" in statuses:
            code = EXIT_INTERRUPTED
        else:
            code = EXIT_OK if all(s == "complete" for s in statuses) else EXIT_NOT_MEASURED
        return MatrixResult(self.matrix_dir, self.state, code, files)

    def write_outputs(self) -> dict[str, Path]:
        files = write_index(self.state, self.matrix_dir)
        files.update(write_matrix_report(self.state, self.matrix_dir, self.plan.report))
        return files

    def _new_attempt(self, cell: Cell, executor: str) -> tuple[CellJob, Attempt]:
        cs = self.state.cells[cell.id]
        current = self.matrix_dir / cell.id
        if current.exists():  # an earlier attempt's directory: kept, moved aside
            previous = cs.attempts[-1].n if cs.attempts else 0
            dest = self.matrix_dir / ATTEMPTS_DIR / cell.id / str(previous)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            current.rename(dest)
            for a in cs.attempts:
                if a.run_dir == cell.id:
                    a.run_dir = str(dest.relative_to(self.matrix_dir))
        n = (cs.attempts[-1].n if cs.attempts else 0) + 1
        attempt = Attempt(n=n, executor=executor, submitted_at=_iso())  # type: ignore[arg-type]
        cs.attempts.append(attempt)
        cs.status, cs.reason = "running", None
        self.state.save(self.matrix_dir)
        job = CellJob(
            matrix_id=self.matrix_id,
            cell=cell.id,
            attempt=n,
            axes=cell.axes,
            spec=cell.spec_json(),
            transport=self.transport,
        )
        return job, attempt

    def _finish(
        self,
        cell: Cell,
        attempt: Attempt,
        outcome: CellOutcome | None,
        failure: str | None = None,
        status: Literal["failed", "interrupted"] = "failed",
    ) -> None:
        """Record how an attempt ended: from its outcome, or from why none came back."""
        cs = self.state.cells[cell.id]
        if outcome is None:
            attempt.status, attempt.reason, attempt.ended_at = status, failure, _iso()
        else:
            if outcome.archive is not None:
                unpack(outcome.archive, self.matrix_dir / cell.id)
            node = outcome.node
            attempt.status = outcome.status
            attempt.reason = outcome.reason
            attempt.exit_code, attempt.run_status = outcome.exit_code, outcome.run_status
            attempt.node = {
                k: node.get(k) for k in ("host", "ip", "ray_node_id", "accelerator_ids", "cuda_visible_devices")
            }
            attempt.started_at, attempt.ended_at = _iso(outcome.started_unix), _iso(outcome.ended_unix)
            submitted = dt.datetime.fromisoformat(attempt.submitted_at).timestamp()
            attempt.wait_s = max(0.0, outcome.started_unix - submitted)
            attempt.run_s = outcome.ended_unix - outcome.started_unix
            attempt.return_s = max(0.0, time.time() - outcome.ended_unix)
            if (self.matrix_dir / cell.id / "manifest.json").exists():
                attempt.run_dir = cell.id
        cs.status = attempt.status if attempt.status in ("complete", "interrupted") else "failed"
        cs.reason = attempt.reason
        self.state.save(self.matrix_dir)
        where = attempt.node.get("host") or "?"
        if attempt.node.get("ray_node_id"):
            where += f" (Ray node {attempt.node['ray_node_id'][:8]})"
        self.say(
            f"  {cell.id} attempt {attempt.n}: {attempt.status}"
            + (f" on {where}" if attempt.node else "")
            + (f": {attempt.reason}" if attempt.reason else "")
        )

    def _attempts_left(self, cell: Cell) -> bool:
        """Whether a failed cell gets another attempt in this invocation (the plan's `retries`)."""
        cs = self.state.cells[cell.id]
        made_now = sum(1 for a in cs.attempts if a.submitted_at >= self.state.invocations[-1]["started_at"])
        return cs.status == "failed" and made_now <= self.plan.retries

    def _run_local(self, todo: list[Cell]) -> None:
        for cell in todo:
            while True:
                job, attempt = self._new_attempt(cell, "local")
                outcome = run_cell(job)
                self._finish(cell, attempt, outcome)
                if outcome.status == "interrupted":
                    raise KeyboardInterrupt
                if not self._attempts_left(cell):
                    break

    def _run_ray(self, todo: list[Cell]) -> dict[str, Any]:
        ray = require_ray("bench matrix --ray")
        cluster = connect(None if self.ray_address in ("", "local") else self.ray_address, "bench matrix --ray")
        nodes = alive_nodes(ray)
        self.say(f"Ray {cluster['ray_version']}: {len(nodes)} node(s) alive ({cluster['how']})")
        remote = ray.remote(run_cell)
        pending: dict[Any, tuple[Cell, Attempt]] = {}

        def submit(cell: Cell) -> None:
            demand = cell.resources.demand()
            if not any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in demand.items()) for n in nodes):
                _, attempt = self._new_attempt(cell, "ray")
                self._finish(cell, attempt, None, f"unschedulable: no node of the cluster has {cell.resources.text()}")
                return
            job, attempt = self._new_attempt(cell, "ray")
            options = cell.resources.ray_options() | {
                "max_retries": 0,
                "retry_exceptions": False,
                "name": f"bench-matrix:{self.matrix_id}:{cell.id}:{attempt.n}",
            }
            pending[remote.options(**options).remote(job.model_dump())] = (cell, attempt)

        for cell in todo:
            submit(cell)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    cell, attempt = pending.pop(ref)
                    self._collect(ray, ref, cell, attempt)
                    if self._attempts_left(cell):
                        submit(cell)
        except KeyboardInterrupt:
            self.say(f"interrupted: cancelling {len(pending)} cell(s); each stops its engine and keeps its files")
            self._cancel(ray, pending)
            raise
        return cluster

    def _collect(self, ray, ref, cell: Cell, attempt: Attempt) -> None:
        try:
            outcome = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            self._finish(cell, attempt, None, "cancelled (the matrix was interrupted)", "interrupted")
        except ray.exceptions.RayError as exc:  # the worker or its node died, or the task could not run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self._finish(cell, attempt, None, f"{type(exc).__name__}: {first}"[:2000])
        else:
            self._finish(cell, attempt, outcome)

    def _cancel(self, ray, pending: dict[Any, tuple[Cell, Attempt]]) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not lose the state
        try:
            for ref in pending:
                ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: execute stops its engine
            deadline = time.monotonic() + CANCEL_GRACE_S
            while pending and time.monotonic() < deadline:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    cell, attempt = pending.pop(ref)
                    self._collect(ray, ref, cell, attempt)
            for cell, attempt in pending.values():
                attempt.status, attempt.reason = "interrupted", "cancelled; it did not end within the grace period"
                self.state.cells[cell.id].status = "interrupted"
            self.state.save(self.matrix_dir)
        finally:
            signal.signal(signal.SIGINT, previous)


def run_matrix(
    plan_path: Path,
    ray_address: str | None = None,
    resume: bool = False,
    matrix_id: str | None = None,
    say=print,
) -> MatrixResult:
    """Check the plan (every cell a valid run spec, every price known), then run the cells not yet complete."""
    return Matrix(plan_path, ray_address, resume, matrix_id, say).run()
