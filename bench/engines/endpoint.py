"""Attach mode: measure a server that is already running, a hosted API included.

Nothing is launched or stopped. The API key is read from the environment variable the user names
and goes only into the Authorization header: it is never recorded, and any echo of it in a
server's answer is masked before a record is written. The manifest keeps the endpoint's scheme,
host and path (no credentials or query) and the model name.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.engines.base import (
    CHARS_PER_TOKEN,
    Endpoint,
    EngineDriver,
    LaunchContext,
    estimate_tokens,
    http_json,
    wait_until_ready,
)
from bench.errors import UsageError
from bench.spec import EndpointEngine


def public_url(url: str) -> str:
    """scheme://host[:port]/path, without user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
END_PROBES, END_PROBE_GAP_S, END_PROBE_TIMEOUT_S = 3, 1.0, 5.0  # the endpoint's liveness check after the load
GATEWAY_WITHOUT_SERVER = (502, 504)  # a proxy or a hosted gateway in front of a server that is gone


class EndpointDriver(EngineDriver):
    name = "endpoint"

    @classmethod
    def from_spec(cls, engine: EndpointEngine, context: LaunchContext) -> EndpointDriver:
        driver = cls(engine.url, context.model, context.api, engine.api_key_env, engine.ready_timeout_s)
        driver.preflight()
        return driver

    def __init__(self, url: str, model: str, api: str, api_key_env: str | None, ready_timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--endpoint {url!r}: give an http:// or https:// base URL, e.g. http://127.0.0.1:8000")
        if parts.username or parts.password:
            raise UsageError("--endpoint: put no credentials in the URL; use --api-key-env NAME")
        self.base_url = url.rstrip("/").removesuffix("/v1")
        self.model, self.api, self.ready_timeout_s = model, api, ready_timeout_s
        self._started = False  # became ready: only then can it be said to have stopped answering
        self.headers: dict[str, str] = {}
        if api_key_env:
            if not ENV_NAME.fullmatch(api_key_env):  # a key given in the name's place: never echo it
                raise UsageError(
                    "--api-key-env: give the name of the environment variable that holds the key (e.g. "
                    "OPENAI_API_KEY), not the key itself; the value given is not repeated here"
                )
            key = os.environ.get(api_key_env)
            if not key:
                raise UsageError(f"--api-key-env {api_key_env}: the environment variable is not set or empty")
            self.headers["Authorization"] = f"Bearer {key}"
            self.secrets = [key]
        else:
            self.secrets = []
        self._record: dict[str, Any] = {
            "engine": self.name,
            "launcher": "attach",
            "endpoint": public_url(self.base_url),
            "model": model,
            "api_key": f"from ${api_key_env}" if api_key_env else None,
        }

    def preflight(self) -> None:
        """One check before anything is written: reachable, key accepted, model served."""
        try:
            reason = self._probe()
        except OSError as exc:
            raise UsageError(
                f"--endpoint {public_url(self.base_url)}: not reachable ({getattr(exc, 'reason', exc)})"
            ) from None
        if reason:
            raise UsageError(f"--endpoint {public_url(self.base_url)}: {reason}")

    def start(self, run_dir: Path) -> Endpoint:
        started = time.monotonic()
        wait_until_ready(None, self._probe, self.ready_timeout_s, f"endpoint {public_url(self.base_url)}")
        self._record["ready_after_s"] = time.monotonic() - started
        self._started = True
        count_tokens = self._tokenizer()
        return Endpoint(
            self.base_url,
            self.model,
            self.api,
            None,
            supports_ignore_eos=False,
            count_tokens=count_tokens,
            headers=self.headers,
        )

    def _probe(self) -> str | None:
        ollama = self.api.startswith("ollama")
        path = "/api/tags" if ollama else "/v1/models"  # Ollama's native model list, or OpenAI's
        status, body = http_json("GET", f"{self.base_url}{path}", timeout_s=10, headers=self.headers)
        if status in (401, 403):
            raise UsageError(f"--endpoint answered {status} to GET {path}: check --api-key-env")
        if status != 200:
            return f"GET {path} answered {status}"
        listed = (body.get("models") if ollama else body.get("data")) if isinstance(body, dict) else None
        served = [m.get("name") if ollama else m.get("id") for m in listed or []]
        self._record["served_models"] = served[:20]
        if served and self.model not in served:
            raise UsageError(
                f"--model {self.model!r} is not served at the endpoint; it serves: {', '.join(served[:10])}"
            )
        return None

    def _tokenizer(self):
        """The server's tokenizer where it has one (llama.cpp, vLLM), else a characters-per-token estimate."""
        probes = (
            []
            if self.api.startswith("ollama")
            else [
                ("/tokenize", lambda text, special: {"content": text, "add_special": special}),  # llama.cpp
                (
                    "/tokenize",
                    lambda text, special: {"model": self.model, "prompt": text, "add_special_tokens": special},
                ),  # vLLM
            ]
        )
        for path, body in probes:
            status, answer = http_json("POST", f"{self.base_url}{path}", body("probe", False), headers=self.headers)
            if status == 200 and isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
                self._record["tokenizer"] = f"server {path}"

                def count(text: str, add_special: bool = False, path=path, body=body) -> int:
                    return len(
                        http_json("POST", f"{self.base_url}{path}", body(text, add_special), headers=self.headers)[1][
                            "tokens"
                        ]
                    )

                return count
        self._record["tokenizer"] = (
            f"none at the endpoint: prompt lengths are estimated at {CHARS_PER_TOKEN} "
            "characters per token; token counts come from the server's usage"
        )
        return estimate_tokens

    def record(self) -> dict[str, Any]:
        return dict(self._record)

    def stop(self) -> None:
        """Nothing to stop: attach mode launched nothing."""

    def death(self) -> str | None:
        """After the load: with no process to read, the evidence that the endpoint lived to the end is that it
        still answers its model list. Any status but a gateway's 502 or 504 (nothing behind it) is a server that
        is up, a 429 or an error page included; a network blip is retried (END_PROBES tries, END_PROBE_GAP_S
        apart). An endpoint that never became ready has nothing to say here: its start said it."""
        if not self._started:
            return None
        path = "/api/tags" if self.api.startswith("ollama") else "/v1/models"
        reason = ""
        for attempt in range(END_PROBES):
            if attempt:
                time.sleep(END_PROBE_GAP_S)
            try:
                status, _ = http_json(
                    "GET", f"{self.base_url}{path}", timeout_s=END_PROBE_TIMEOUT_S, headers=self.headers
                )
            except OSError as exc:
                reason = str(getattr(exc, "reason", exc))
                continue
            if status not in GATEWAY_WITHOUT_SERVER:
                return None
            reason = f"HTTP {status} from a gateway with no server behind it"
        return (
            f"endpoint {public_url(self.base_url)} no longer answered GET {path} at the end of the run "
            f"({END_PROBES} tries: {reason})"
        )
