"""A run's status and exit code come from evidence: bench.run.execute against the in-process fake engine
(attached with an endpoint spec), with faults injected by request number."""

import contextlib
import json
import signal

import pytest

from bench import run as run_module
from bench.errors import UsageError
from bench.records import Manifest
from bench.run import EXIT_INTERNAL, EXIT_NOT_MEASURED, EXIT_OK, execute
from bench.spec import EndpointEngine, LoadSpec, RunSpec, WorkloadSpec
from bench.spec import Length as L

from ..mounts import tmpfs
from .conftest import fake_engine


def spec(url, tmp_path, **load):
    return RunSpec(
        engine=EndpointEngine(url=url),
        model="calibration",
        api="completions",
        workload=WorkloadSpec(input_tokens=L(a=8), output_tokens=L(a=8)),
        load=LoadSpec(concurrency=[2], **{"requests": 8, **load}),
        output={"results_dir": tmp_path, "run_id": "r"},
    )


def manifest_of(result) -> dict:
    return json.loads((result.path / "manifest.json").read_text())


def test_a_clean_run_is_complete_and_exits_0(tmp_path):
    with fake_engine() as url:
        result = execute(spec(url, tmp_path))
    m = manifest_of(result)
    assert result.exit_code == EXIT_OK and m["status"] == "complete" and m["incomplete_reason"] is None
    assert m["exit_code"] == 0 and result.summary.requests.successful == 8
    assert Manifest.load(m).spec == spec(url, tmp_path)  # the manifest keeps the spec it ran
    reads = m["client_reads"]  # how the client read and timed the run's sockets
    if reads["timestamps"] == "kernel receive time":  # Linux: every token, heads and ends came in timed reads
        assert reads["reads"] >= (8 + 2) * 2 and reads["read_path"] in ("compiled", "python")
        assert reads["decode_path"] in ("compiled", "python")


def test_a_run_gives_the_caller_its_signal_handlers_back(tmp_path):
    """A run handles SIGINT and SIGTERM itself and ignores them while it writes its results; afterwards the
    caller's handlers are back (a caller left ignoring Ctrl-C, or with children that inherit an ignored SIGTERM,
    cannot be stopped)."""

    def mine(*_):
        pass

    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with fake_engine() as url:
            assert execute(spec(url, tmp_path)).exit_code == EXIT_OK
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize(
    "fault, fragment",
    [
        ("http-500", "HTTP 500"),
        ("cut:2", "server closed the connection mid-response"),
        ("chat-as-text", "no output in"),
    ],
)
def test_a_run_where_every_request_failed_is_failed_and_exits_4(tmp_path, fault, fragment):
    api = "chat" if fault == "chat-as-text" else "completions"
    with fake_engine(faults=lambda n, body: fault) as url:
        result = execute(spec(url, tmp_path).model_copy(update={"api": api}))
    m = manifest_of(result)
    assert result.exit_code == EXIT_NOT_MEASURED and m["status"] == "failed"
    assert "no measured request succeeded (8 failed)" in m["incomplete_reason"]
    records = [json.loads(line) for line in (result.path / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 10 and all(fragment in r["error"] for r in records)


def test_more_failures_than_allowed_stop_the_stage_and_exit_4(tmp_path):
    with fake_engine(faults=lambda n, body: "http-500" if n % 2 else None) as url:
        result = execute(spec(url, tmp_path, requests=40, max_error_rate=0.2))
    m = manifest_of(result)
    assert result.exit_code == EXIT_NOT_MEASURED and m["status"] == "incomplete"
    assert "stage 0 stopped early: error rate" in m["incomplete_reason"]
    assert 0 < result.summary.requests.successful < 40  # what finished is kept and summarised


def test_more_errors_than_max_errors_stop_the_stage_and_exit_4(tmp_path):
    with fake_engine(faults=lambda n, body: "http-500" if n % 2 else None) as url:
        result = execute(spec(url, tmp_path, requests=40, max_errors=3, warmup="0"))
    m = manifest_of(result)
    assert result.exit_code == EXIT_NOT_MEASURED and m["status"] == "incomplete"
    assert "stage 0 stopped early: more than 3 errors" in m["incomplete_reason"]
    assert result.summary.requests.failed >= 4 and result.summary.requests.successful < 40


def run_on_the_fake_engine(tmp_path):
    """A default run on the fake engine: its result and manifest."""
    with fake_engine() as url:
        result = execute(spec(url, tmp_path))
    return result, manifest_of(result)


def run_with_a_defect(tmp_path, monkeypatch, function: str, error: Exception):
    """A run on the fake engine in which bench.run's `function` raises `error`: its result and manifest."""

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(run_module, function, broken)
    return run_on_the_fake_engine(tmp_path)


def test_an_internal_error_is_one_line_with_its_traceback_kept(tmp_path, monkeypatch):
    error = ValueError("cannot convert float NaN to integer")
    result, m = run_with_a_defect(tmp_path, monkeypatch, "requests_needed", error)
    assert result.exit_code == EXIT_INTERNAL and m["status"] == "failed" and m["error_file"] == "error.txt"
    assert "internal error: ValueError: cannot convert float NaN to integer" in m["incomplete_reason"]
    assert "Traceback" in (result.path / "error.txt").read_text() and "\n" not in result.message
    assert (result.path / "summary.json").exists()


def test_an_analysis_that_fails_still_leaves_the_records_and_a_final_manifest(tmp_path, monkeypatch):
    """An exception while the run's summary is computed escaped the finish: no final status, no end time."""
    result, m = run_with_a_defect(tmp_path, monkeypatch, "analyse", KeyError("a check that broke on the last answer"))
    assert result.exit_code == EXIT_INTERNAL and m["status"] != "complete" and m["ended_at"]
    assert "internal error: KeyError" in m["incomplete_reason"] and m["error_file"] == "error.txt"
    assert len((result.path / "requests.jsonl").read_text().splitlines()) >= 8
    assert "\n" not in result.message and "Traceback" in (result.path / "error.txt").read_text()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only: CI runs as root); skipped with the reason elsewhere."""
    with tmpfs(tmp_path / "disk", "size=64k") as mount:
        yield mount


def test_a_full_disk_stops_the_run_keeps_what_is_on_disk_and_says_so(tiny_disk):
    with fake_engine() as url:
        result = execute(spec(url, tiny_disk, requests=100_000))
    assert result.exit_code == EXIT_INTERNAL
    m = manifest_of(result)  # the last manifest that could be written: never `complete`
    assert m["status"] in ("incomplete", "failed")
    lines = (result.path / "requests.jsonl").read_bytes().splitlines()
    assert 10 < len(lines) < 100_000 and all(json.loads(line)["request_id"] >= 0 for line in lines[:-1])
    assert result.manifest.status != "complete" and "disk is full" in result.manifest.incomplete_reason


def test_an_engine_that_cannot_be_stopped_still_gets_its_summary_and_an_incomplete_status(tmp_path, monkeypatch):
    """The driver's stop fails (an engine stuck past SIGKILL): every record, the summary and the final manifest
    are still written, the run is not complete, and it exits with the engine's code."""
    from bench.engines.endpoint import EndpointDriver
    from bench.errors import EngineError
    from bench.run import EXIT_ENGINE

    def stuck(self):
        raise EngineError("the engine (pid 1) did not exit 10 s after SIGKILL")

    monkeypatch.setattr(EndpointDriver, "stop", stuck)
    result, m = run_on_the_fake_engine(tmp_path)
    assert result.exit_code == EXIT_ENGINE and m["exit_code"] == EXIT_ENGINE and m["status"] == "incomplete"
    assert "the engine could not be stopped: the engine (pid 1) did not exit" in m["incomplete_reason"]
    assert result.summary.requests.successful == 8 and (result.path / "summary.json").exists()
    assert len((result.path / "requests.jsonl").read_text().splitlines()) >= 8
    # stopped early for another reason first (here an internal error): the stuck engine is still said
    result, m = run_with_a_defect(tmp_path / "early", monkeypatch, "requests_needed", ValueError("a defect"))
    assert (
        "internal error: ValueError: a defect; the engine could not be stopped: the engine (pid 1)"
        in (m["incomplete_reason"])
    )
    assert "the engine could not be stopped" in result.message


def test_a_stop_that_no_signal_caused_is_not_reported_as_an_interrupt(tmp_path, monkeypatch):
    """The load stops itself (a limit of this machine, as a ClientLimitError brings, or a lost Ray worker): the
    run exits 1 with the reason, not 130, which a matrix reads as Ctrl-C and stops on."""
    from bench.load.runner import LoadRunner

    original = LoadRunner.run_stage

    async def stopped_by_a_limit(self, stage, seed=0):
        outcome = await original(self, stage, seed)
        self.request_stop("stopped by a limit of this machine: [Errno 99] no free ephemeral port")
        return outcome

    monkeypatch.setattr(LoadRunner, "run_stage", stopped_by_a_limit)
    result, m = run_on_the_fake_engine(tmp_path)
    assert result.exit_code == EXIT_INTERNAL and m["exit_code"] == EXIT_INTERNAL and m["status"] == "incomplete"
    assert "stopped by a limit of this machine" in m["incomplete_reason"]


def test_a_sigint_during_the_load_exits_130_and_keeps_what_was_measured(tmp_path, monkeypatch):
    import os

    from bench.load.runner import LoadRunner
    from bench.run import EXIT_INTERRUPTED

    original = LoadRunner.run_stage

    async def interrupted(self, stage, seed=0):
        os.kill(os.getpid(), signal.SIGINT)  # the loop's handler takes it at its next turn
        return await original(self, stage, seed)

    monkeypatch.setattr(LoadRunner, "run_stage", interrupted)
    with fake_engine() as url:
        result = execute(spec(url, tmp_path))
    m = manifest_of(result)
    assert result.exit_code == EXIT_INTERRUPTED and m["status"] in ("incomplete", "failed")
    assert "interrupted by SIGINT" in m["incomplete_reason"]


def test_a_disk_too_full_for_the_first_manifest_is_one_error_and_leaves_no_directory(tiny_disk):
    """The first write fails (ENOSPC, raised as DiskFull): a UsageError naming --results-dir, nothing left."""
    filler = tiny_disk / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        handle.write(b"x" * 128 * 1024)  # fills the 64 KiB disk
    with fake_engine() as url, pytest.raises(UsageError, match="cannot write the run directory"):
        execute(spec(url, tiny_disk))
    assert [p.name for p in tiny_disk.iterdir()] == ["filler"]


def test_a_ctrl_c_as_the_loop_closes_is_an_interrupted_run_not_a_complete_one(tmp_path, monkeypatch):
    """Closing the event loop puts Python's own SIGINT handler back until the rig's is installed again: a
    Ctrl-C then is a KeyboardInterrupt, which must end the run as interrupted (exit 130), records kept."""
    from bench.engines.endpoint import EndpointDriver
    from bench.run import EXIT_INTERRUPTED

    probes = []
    monkeypatch.setattr(EndpointDriver, "death", lambda self: probes.append(1))
    result, m = run_with_a_defect(tmp_path, monkeypatch, "run_event_loop", KeyboardInterrupt())
    assert result.exit_code == EXIT_INTERRUPTED and m["status"] != "complete"
    assert m["incomplete_reason"] == "interrupted by SIGINT" and (result.path / "summary.json").exists()
    assert not probes  # an interrupted run does not wait on the endpoint's liveness probe


def test_the_readmes_exit_code_table_names_every_code_the_rig_exits_with():
    from pathlib import Path

    from bench.run import EXIT_CODES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| exit | meaning |") :].split("\n\n", 1)[0].splitlines()[2:]
    assert {int(row.split("|")[1]) for row in table} == set(EXIT_CODES)


def test_an_endpoint_that_stops_answering_before_the_run_ends_is_not_a_complete_run(tmp_path, monkeypatch):
    """Attach mode has no process to reap: the endpoint still answering at the end is the evidence it lived.
    Here it shuts down after the stage (as a server taken down mid-run): exit 3, incomplete, records kept."""
    import asyncio

    from bench.load.runner import LoadRunner
    from bench.run import EXIT_ENGINE

    from .conftest import stoppable_fake_engine

    original = LoadRunner.run_stage
    with stoppable_fake_engine() as (url, shut_down):

        async def then_the_server_goes(self, stage, seed=0):
            outcome = await original(self, stage, seed)
            await asyncio.to_thread(shut_down)
            return outcome

        monkeypatch.setattr(LoadRunner, "run_stage", then_the_server_goes)
        result = execute(spec(url, tmp_path))
    m = manifest_of(result)
    assert result.exit_code == EXIT_ENGINE and m["status"] == "incomplete", m["incomplete_reason"]
    assert "no longer answered GET /v1/models at the end of the run" in m["incomplete_reason"]
    assert result.summary.requests.successful == 8


def test_an_endpoints_liveness_at_the_end_is_any_answer_but_a_gateways_with_nothing_behind_it(monkeypatch):
    """Real loopback servers: a 429 or a 500 is a server that is up; a 502 or 504 from a gateway, or no answer in
    three tries, is one that is gone; an endpoint that never became ready is not probed at all."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bench.engines import endpoint as endpoint_module
    from bench.engines.endpoint import EndpointDriver

    monkeypatch.setattr(endpoint_module, "END_PROBE_GAP_S", 0.0)

    def answering(status):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def death_at(url, started=True):
        driver = EndpointDriver(url, "m", "completions", None, 5.0)
        driver._started = started
        return driver.death()

    for status, dead in ((200, False), (429, False), (500, False), (502, True), (504, True)):
        server = answering(status)
        found = death_at(f"http://127.0.0.1:{server.server_address[1]}")
        server.shutdown()
        assert (found is not None) == dead, (status, found)
        if dead:
            assert f"3 tries: HTTP {status} from a gateway with no server behind it" in found
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}"
    assert "no longer answered GET /v1/models at the end of the run (3 tries: " in death_at(closed)
    assert death_at(closed, started=False) is None
