"""One cell of a matrix, run exactly as `bench run` runs a spec: `bench.run.execute(spec)`.

The same function runs a cell on this machine (`bench matrix` without --ray) and inside a Ray task on a
node. Afterwards the cell's manifest gets two sections: `node` (host, IP, Ray node id, the resources Ray
assigned and the node's totals, the machine's hardware inventory, when the cell started and ended there)
and `matrix` (matrix id, cell, attempt, axes). What comes back is a `CellOutcome`: complete or failed with
its reason, and, when the results travel through Ray's object store, the run directory as a tar archive.

Transports: `local` and `shared-folder` write the run directory in place (<results>/<matrix_id>/<cell>/,
on a folder the driver also sees); `object-store` writes it to a temporary folder on the node, packs it
and removes it, and the driver unpacks it under results/<matrix_id>/<cell>/.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from bench.console import PlainDisplay
from bench.errors import BenchError
from bench.results import RunDirectory
from bench.run import EXIT_INTERRUPTED, EXIT_OK, execute
from bench.scale.cluster import node_record
from bench.spec import OutputSpec, RunSpec

Transport = Literal["local", "shared-folder", "object-store"]


class CellJob(BaseModel):
    matrix_id: str
    cell: str
    attempt: int
    axes: dict[str, str]
    spec: dict[str, Any]  # a RunSpec as JSON: what travels to the node
    transport: Transport
    submitted_unix: float = Field(default_factory=time.time)


class CellOutcome(BaseModel):
    cell: str
    attempt: int
    status: Literal["complete", "failed", "interrupted"]
    reason: str | None = None
    exit_code: int | None = None
    run_status: str | None = None  # the run's own status (complete, incomplete, failed), when it got that far
    node: dict[str, Any] = Field(default_factory=dict)
    started_unix: float
    ended_unix: float
    run_dir: str | None = None  # where the node wrote it (object-store: gone, packed into `archive`)
    archive: bytes | None = None


def _now_iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="milliseconds")


class CellDisplay(PlainDisplay):
    """Plain progress lines, each naming the cell (a Ray worker's output reaches the driver's terminal)."""

    def __init__(self, cell: str) -> None:
        super().__init__(sys.stderr)
        self.prefix = f"[{cell}] "

    def note(self, message: str) -> None:
        print(self.prefix + message.replace("\n", "\n" + self.prefix), file=self.stream, flush=True)


def pack(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=3) as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


def unpack(archive: bytes, dest: Path) -> Path:
    """The archive's run directory, extracted as dest (which must not exist)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            try:
                tar.extractall(staging, filter="data")  # no absolute paths, links out, or devices
            except TypeError:  # Python before 3.11.4: our own archive, from our own node
                tar.extractall(staging)  # noqa: S202
        (inner,) = list(staging.iterdir())
        inner.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _saved_signals() -> dict[int, Any] | None:
    """execute() installs its own SIGINT/SIGTERM handlers and leaves them ignored; a Ray worker (or the matrix
    loop) needs its own back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore(saved: dict[int, Any] | None) -> None:
    for signum, handler in (saved or {}).items():
        if handler is not None:
            signal.signal(signum, handler)


def run_cell(job: CellJob | dict[str, Any], results_dir: str | None = None) -> CellOutcome:
    """Run one cell here and say how it ended. Never raises for a failed run: the outcome says why."""
    job = CellJob.model_validate(job)
    started = time.time()
    node = node_record(in_ray=job.transport != "local")
    spec = RunSpec.model_validate(job.spec)
    scratch: Path | None = None
    if job.transport == "object-store":
        scratch = Path(tempfile.mkdtemp(prefix=f"bench-{job.matrix_id}-"))
        spec = spec.model_copy(update={"output": OutputSpec(results_dir=scratch, run_id=job.cell)})
    elif results_dir is not None:
        spec = spec.model_copy(update={"output": OutputSpec(results_dir=Path(results_dir), run_id=job.cell)})
    run_path = spec.output.results_dir / job.cell
    command = ["bench", "matrix", f"--cell={job.cell}", f"--attempt={job.attempt}", f"--matrix-id={job.matrix_id}"]
    saved = _saved_signals()
    outcome: dict[str, Any] = {"cell": job.cell, "attempt": job.attempt, "node": node, "started_unix": started}
    try:
        result = execute(spec, CellDisplay(job.cell), command)
    except BenchError as exc:  # bad input found on the node (a model file missing there, a busy port)
        outcome.update(status="failed", reason=f"{type(exc).__name__}: {exc}", exit_code=exc.exit_code)
    except (KeyboardInterrupt, SystemExit) as exc:  # ray.cancel, or a signal before the run began
        outcome.update(status="interrupted", reason=f"interrupted ({type(exc).__name__})", exit_code=EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a defect: one cell's outcome, not the matrix
        text = "".join(traceback.format_exception_only(exc)).strip()
        outcome.update(status="failed", reason=f"internal error: {text}", exit_code=1)
        node["traceback"] = traceback.format_exc()
    else:
        manifest = result.manifest
        complete = result.exit_code == EXIT_OK and manifest.status == "complete"
        status = "complete" if complete else "interrupted" if result.exit_code == EXIT_INTERRUPTED else "failed"
        reason = None if complete else (manifest.incomplete_reason or result.message or "the run did not complete")
        outcome.update(status=status, reason=reason, exit_code=result.exit_code, run_status=manifest.status)
    finally:
        _restore(saved)
    ended = time.time()
    node.update(started_at=_now_iso(started), ended_at=_now_iso(ended))
    run_dir = RunDirectory(run_path)
    if run_dir.exists():
        _record_node(run_dir, node, job)
        outcome["run_dir"] = str(run_path)
        if scratch is not None:
            outcome["archive"] = pack(run_path)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return CellOutcome(**outcome, ended_unix=ended)


def _record_node(run_dir: RunDirectory, node: dict[str, Any], job: CellJob) -> None:
    """The manifest's `node` and `matrix` sections (the Manifest keeps extra sections)."""
    manifest = run_dir.manifest()
    manifest.node = {k: v for k, v in node.items() if k != "traceback"}
    manifest.matrix = {"matrix_id": job.matrix_id, "cell": job.cell, "attempt": job.attempt, "axes": job.axes}
    run_dir.write_manifest(manifest)
