"""The run directory: atomic writes, records appended as they complete, loading runs back."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.errors import UsageError

MANIFEST, REQUESTS, TELEMETRY, SUMMARY, ENGINE_LOG, ENGINE_METRICS = (
    "manifest.json",
    "requests.jsonl",
    "telemetry.jsonl",
    "summary.json",
    "engine.log",
    "engine-metrics.jsonl",  # the engine's /metrics at each stage's start and end
)
GOLDEN_COPY, EVAL = "golden.jsonl", "eval.json"  # a golden run's cases, and each case's verdict
JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, orjson.dumps(data, option=JSON_OPTIONS) + b"\n")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target: a reader sees the
    old file or the new one, never half of one."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JsonlAppender:
    """Appends one JSON object per line and flushes it, so a crash loses nothing already written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("ab")
        self.count = 0

    def append(self, row: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(row) + b"\n")
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (a crash mid-write) is skipped, any other bad line is an error."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            if number == len(lines):  # the final line with no newline: an interrupted write
                continue
            raise UsageError(f"{path}: line {number} is not valid JSON; the file is damaged") from None
    return rows


def read_input_jsonl(path: Path, name: str) -> Iterator[tuple[int, str, Any]]:
    """A JSONL file a person wrote (prompts, golden sets): (line number, "NAME, line N" for messages,
    parsed value) per non-blank line. Unlike read_jsonl, every line must parse; `name` names the file."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise UsageError(f"{name}: file not found") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}, line {number}"
        try:
            yield number, where, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{path} not found: is this a run directory written by `bench run`?") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None


class RunDirectory:
    """results/<run_id>/ and the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunDirectory:
        path = root / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise UsageError(f"run directory {path} already exists; choose another --run-id") from None
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.file(MANIFEST), manifest)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.file(SUMMARY), summary)

    def manifest(self) -> dict[str, Any]:
        return read_json(self.file(MANIFEST))

    def summary(self) -> dict[str, Any]:
        return read_json(self.file(SUMMARY))

    def requests(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(REQUESTS))

    def telemetry(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(TELEMETRY))

    def engine_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.file(ENGINE_METRICS))

    def recompute_summary(self, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """The summary from the raw files alone (and the manifest's spec: stages, SLOs, efficiency inputs)."""
        return self.recompute(spec)[0]

    def recompute(self, spec: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The summary and, for a golden run, each case's verdict (eval.json), from one read of the raw files."""
        from bench.metrics import summarize_run

        spec = spec if spec is not None else self.manifest().get("spec")
        records = self.requests()
        summary = summarize_run(records, self.telemetry(), spec, self.engine_metrics())
        evaluation = self._evaluation(records, spec)
        if evaluation is not None:
            summary["quality"] = evaluation["summary"]
        return summary, evaluation

    def _evaluation(self, records: list[dict[str, Any]], spec: dict[str, Any] | None) -> dict[str, Any] | None:
        """A golden run's verdicts, from its records and the run's copy of the golden set; else None."""
        from bench.quality import evaluate, load_golden

        if ((spec or {}).get("workload") or {}).get("kind") != "golden":
            return None
        evaluation = evaluate(records, load_golden(self.file(GOLDEN_COPY)))
        golden = {k: spec["workload"][k] for k in ("path", "sha256", "cases")}
        golden.update(temperature=spec.get("temperature"), seed=spec.get("seed"))
        evaluation["summary"]["golden"] = golden
        return evaluation
