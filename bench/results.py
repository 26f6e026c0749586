"""The run directory on disk: atomic writes, records appended as they complete, reading them back.

File I/O only: what the files mean is in bench.records and bench.summary; what is derived from them,
in bench.analysis.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from pydantic import ValidationError

from bench.errors import UsageError
from bench.records import EngineMetricsSnapshot, EvaluationFile, Manifest, RequestRecord, TelemetrySample
from bench.summary import RunSummary

MANIFEST, REQUESTS, TELEMETRY, SUMMARY, ENGINE_LOG, ENGINE_METRICS = (
    "manifest.json",
    "requests.jsonl",
    "telemetry.jsonl",
    "summary.json",
    "engine.log",
    "engine-metrics.jsonl",  # the engine's /metrics at each stage's start and end
)
GOLDEN_COPY, EVAL, ERROR_FILE = "golden.jsonl", "eval.json", "error.txt"
T = TypeVar("T")
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
    """Appends one JSON object (a dict or a record dataclass) per line and flushes it, so a crash loses
    nothing already written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("ab")
        self.count = 0

    def append(self, row: Any) -> None:
        self._handle.write(orjson.dumps(row) + b"\n")
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            finally:
                self._handle.close()


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file, one at a time; a torn last line (a crash mid-write) is skipped, any other bad
    line is an error."""
    for _, row in numbered_jsonl(path):
        yield row


def numbered_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """iter_jsonl's rows with their line numbers, for messages."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                if line.endswith(b"\n"):  # only the last line can lack its newline: an interrupted write
                    raise UsageError(f"{path}: line {number} is not valid JSON; the file is damaged") from None
                continue
            if not isinstance(row, dict):
                raise UsageError(f"{path}: line {number} is not a JSON object (a record); the file is damaged")
            yield number, row


def typed_jsonl(path: Path, from_row: Callable[[dict[str, Any]], T]) -> list[T]:
    """A run's JSONL file as records; a row with a field missing or not of its type is one line naming the
    file, the line and the field."""
    out = []
    for number, row in numbered_jsonl(path):
        try:
            out.append(from_row(row))
        except ValidationError as exc:
            raise UsageError(f"{path}: line {number}: {first_error(exc)}; the file is damaged") from None
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def read_input_jsonl(path: Path, name: str) -> Iterator[tuple[int, str, Any]]:
    """A JSONL file a person wrote (prompts, golden sets): (line number, "NAME, line N" for messages,
    parsed value) per non-blank line. Unlike iter_jsonl, every line must parse; `name` names the file."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise UsageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a folder, not a file") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}, line {number}"
        try:
            yield number, where, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None


def read_yaml(path: Path, name: str, missing_hint: str = "") -> Any:
    """A YAML (or JSON) file a person wrote; each way it can fail is a UsageError that starts with `name`."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{name}: not found{missing_hint}") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    except PermissionError:
        raise UsageError(f"{name}: cannot be read (permission denied)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{name}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{path} not found: is this a run directory written by `bench run`?") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a JSON file") from None
    except NotADirectoryError:
        raise UsageError(f"{path.parent} is a file, not a run directory (give the folder `bench run` wrote)") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {field!r}: {first['msg']}{more}"


def _validated(path: Path, load):
    """A run file read into its model; a field missing or of the wrong type is one line naming it."""
    try:
        return load(read_json(path))
    except ValidationError as exc:
        raise UsageError(f"{path}: {first_error(exc)}; the file is damaged") from None
    except (TypeError, AttributeError, KeyError) as exc:  # a version field or nested part of another shape
        raise UsageError(f"{path}: not of the shape this version reads ({exc!r}); the file is damaged") from None


class RunDirectory:
    """results/<run_id>/ and the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

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

    def exists(self) -> bool:
        return self.file(MANIFEST).exists()

    def write_manifest(self, manifest: Manifest) -> None:
        write_json_atomic(self.file(MANIFEST), manifest.to_json())

    def write_summary(self, summary: RunSummary) -> None:
        write_json_atomic(self.file(SUMMARY), summary.to_json())

    def manifest(self) -> Manifest:
        return _validated(self.file(MANIFEST), Manifest.load)

    def summary(self) -> RunSummary:
        return _validated(self.file(SUMMARY), RunSummary.load)

    def has_summary(self) -> bool:
        return self.file(SUMMARY).exists()

    def request_rows(self) -> Iterator[dict[str, Any]]:
        """requests.jsonl as rows, streamed (large runs need not fit in memory as records)."""
        return iter_jsonl(self._requests_path())

    def requests(self) -> list[RequestRecord]:
        return typed_jsonl(self._requests_path(), RequestRecord.from_row)

    def _requests_path(self) -> Path:
        """A run directory always has requests.jsonl (bench run creates it, empty, before the first request):
        one without it is damaged, and reading it as a run of no requests would pass a gate or overwrite a
        summary."""
        path = self.file(REQUESTS)
        if not path.is_file() and self.exists():
            raise UsageError(
                f"{path}: missing; the run's request records are gone (bench run always writes this file), "
                "so nothing can be recomputed or compared from this run"
            )
        return path

    def telemetry(self) -> list[TelemetrySample]:
        return typed_jsonl(self.file(TELEMETRY), TelemetrySample.from_row)

    def engine_metrics(self) -> list[EngineMetricsSnapshot]:
        return typed_jsonl(self.file(ENGINE_METRICS), EngineMetricsSnapshot.from_row)

    def evaluation(self) -> dict[str, Any] | None:
        """eval.json as written (a golden run's; None where there is none), its cases' keys checked."""
        if not self.file(EVAL).exists():
            return None

        def checked(data: dict[str, Any]) -> dict[str, Any]:
            EvaluationFile.model_validate(data)
            return data

        return _validated(self.file(EVAL), checked)

    def golden_evaluation(self) -> dict[str, Any] | None:
        """eval.json of a golden run (None for a run that is not one); a golden run without it is refused,
        since its quality would otherwise read as not measured."""
        evaluation = self.evaluation()
        if evaluation is None and self.manifest().golden:
            raise UsageError(
                f"{self.path}: eval.json missing (a golden run's verdicts, without which its quality cannot be "
                f"compared or priced); `bench summarize {self.path} --write` writes it again"
            )
        return evaluation

    def own_prompt_verdicts(self) -> dict[str, bool]:
        """Each golden case's pass or fail on its own prompt (its variants' verdicts left out); {} for a run
        that is not golden."""
        cases = (self.golden_evaluation() or {}).get("cases") or ()
        return {v["id"]: v["passed"] for v in cases if v.get("variant_of") is None}
