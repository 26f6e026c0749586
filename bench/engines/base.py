"""What every engine driver provides, and the helpers they share (ports, readiness, control calls)."""

from __future__ import annotations

import http.client
import json
import math
import signal
import socket
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.catalog import ModelEntry
from bench.engines.process import ManagedProcess
from bench.engines.prometheus import fetch, gauges_only
from bench.errors import EngineError, UsageError


@dataclass(frozen=True)
class LaunchContext:
    """What a driver needs besides its own settings: the model, the API, and what the load plan asks of it."""

    model: str  # the catalog name (attach mode: the served model's name)
    entry: ModelEntry | None
    model_path: Path | None
    api: str
    max_streams: int  # the most requests the plan has in flight: the default number of slots
    tokens_per_request: int  # input + output of the longest request, to size the context (0: unknown)
    seed: int = 0
    reuses_prefixes: bool | None = None  # requests share prompt prefixes (shared prefixes, conversations, traces)


@dataclass
class Endpoint:
    """Where the load goes and what the load generator must know about the server behind it."""

    base_url: str
    model: str  # the model name to send in requests
    api: str  # "completions" or "chat"
    max_concurrent_requests: int | None = None  # 1 for servers that handle one request at a time
    supports_ignore_eos: bool = False
    # the served model's tokenizer, when exposed: count_tokens(text, add_special) -> tokens
    count_tokens: Callable[..., int] | None = None
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Authorization: never recorded
    # a chat request's prompt tokens as the server renders it (request body -> tokens, its chat template applied),
    # for servers that send no usage in streams (llama-cpp-python)
    count_chat_tokens: Callable[[dict[str, Any]], int] | None = None


class EngineDriver(ABC):
    """Starts, checks, describes and stops one engine. Knows nothing of load or metrics."""

    name: str
    formats: tuple[str, ...] = ()  # the catalog model formats it serves (attach mode: any)
    secrets: list[str] = []  # strings that must never reach a record, log or report (API keys)

    @classmethod
    @abstractmethod
    def from_spec(cls, engine: Any, context: LaunchContext) -> EngineDriver:
        """The driver for a run spec's engine section; every check of its settings happens here, before
        anything starts (bad input never leaves a process behind)."""

    @abstractmethod
    def start(self, run_dir: Path) -> Endpoint:
        """Launch (or attach), wait until the model answers, and return the endpoint."""

    @abstractmethod
    def stop(self) -> None:
        """Stop everything that start() launched; safe to call twice or after a failed start."""

    @abstractmethod
    def record(self) -> dict[str, Any]:
        """What ran: engine, version, launcher, full argument list, model digest, load time."""

    @property
    def process(self) -> ManagedProcess | None:
        """The launched process, when the driver launched one."""
        return None

    @property
    def metrics_url(self) -> str | None:
        """The engine's Prometheus endpoint, when it has one."""
        return None

    def sample_gauges(self) -> dict[str, float | None] | None:
        """The engine's own gauges for the telemetry series (KV-cache use, queue, loaded model size)."""
        if not self.metrics_url:
            return None
        return gauges_only(fetch(self.metrics_url, timeout_s=2.0))

    def failure(self) -> str | None:
        """Why the engine is no longer serving (it exited), or None while it runs."""
        proc = self.process
        if proc is None or proc.exit_code() is None:
            return None
        return f"engine process {proc.pid} exited with code {proc.exit_code()}"

    def death(self) -> str | None:
        """After stop(): why the engine did not live to the end of the run, or None. Read from the reaped
        process: it had exited by itself before the rig stopped it, or someone else killed it."""
        proc = self.process
        if proc is None or proc.popen is None or proc.popen.returncode is None:
            return None
        code = proc.popen.returncode
        if proc.exited_before_stop:
            return f"engine process {proc.pid} exited with code {code} before the run ended"
        if code == -signal.SIGKILL and not proc.escalated:
            return f"engine process {proc.pid} was killed (SIGKILL) by something other than the rig"
        return None


CHARS_PER_TOKEN = 4  # the usual rule of thumb, for servers that expose no tokenizer


def estimate_tokens(text: str, add_special: bool = False) -> int:
    """A length estimate for sizing prompts when the server has no tokenizer endpoint; the token counts
    in records still come from the server's own usage."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class LaunchedEngine(EngineDriver):
    """A driver that launched its engine as a child process: holds it, its record, and stops it."""

    stop_grace_s = 10.0

    def __init__(self) -> None:
        self._process: ManagedProcess | None = None
        self._record: dict[str, Any] = {"engine": self.name}

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def record(self) -> dict[str, Any]:
        return dict(self._record)

    def stop(self) -> None:
        if self._process is not None:
            self._record["exit_code"] = self._process.stop(grace_s=self.stop_grace_s)


# -- ports ---------------------------------------------------------------------------------------
def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ensure_port_free(host: str, port: int, flag: str = "--port") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise UsageError(
                f"{flag} {port}: {host}:{port} is already in use; choose a free port or omit {flag}"
            ) from None


# -- control-plane HTTP (not timed) --------------------------------------------------------------
def http_json(
    method: str, url: str, body: dict | None = None, timeout_s: float = 10.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """(status, decoded JSON or text) for a small control request; raises OSError when unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()  # an error page can be cut short too
    except http.client.HTTPException as exc:  # not an OSError: a body cut short, a garbled status line
        raise ConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_until_ready(
    process: ManagedProcess | None,
    probe: Callable[[], str | None],
    timeout_s: float,
    what: str,
) -> float:
    """Poll probe() until it returns None (ready); return the seconds waited.

    probe returns a short reason while not ready. Fails fast when the process exits, and on timeout,
    with the tail of the engine's log either way.
    """
    start = time.monotonic()
    reason = "not polled yet"
    while True:
        if process is not None and process.exit_code() is not None:
            raise EngineError(
                f"{what} exited with code {process.exit_code()} before it was ready; "
                f"engine log {process.log_path}, last lines:\n{process.log_tail()}"
            )
        try:
            reason = probe()
        except OSError as exc:
            reason = f"not reachable ({getattr(exc, 'reason', exc)})"
        if reason is None:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            tail = f"; engine log {process.log_path}, last lines:\n{process.log_tail()}" if process else ""
            raise EngineError(f"{what} not ready after {timeout_s:g} s (last check: {reason}){tail}")
        time.sleep(0.2)
