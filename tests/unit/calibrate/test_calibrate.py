"""Client error against the calibration server's truth, by hand; the bound a run carries from its calibration."""

from pathlib import Path

import pytest

from bench.calibrate import request_errors
from bench.records import RequestRecord

ANCHOR = 1_000_000_000  # records are relative to the anchor; the server's truth is absolute


def test_errors_against_truth():
    record = RequestRecord.from_row(
        {
            "request_id": 0,
            "status": "ok",
            "t_send_ns": 0,
            "output_tokens": 3,
            "output_times_ns": [50_300_000, 60_300_000, 70_500_000],  # client saw tokens at +50.3, +60.3, +70.5 ms
            "server_timings": {
                "t_received_ns": ANCHOR + 100_000,
                "t_first_write_ns": ANCHOR + 50_100_000,
                "t_last_write_ns": ANCHOR + 70_100_000,
                "tokens": 3,
            },
        }
    )
    errors = request_errors(record, ANCHOR)
    assert abs(errors["ttft_error_ms"] - 0.2) < 1e-9  # saw the first token 0.2 ms after it was written
    assert abs(errors["request_leg_ms"] - 0.1) < 1e-9
    assert abs(errors["tpot_error_ms"] - 0.1) < 1e-9  # (20.2 - 20.0) / 2


def test_unjudgeable_records():
    assert request_errors(RequestRecord(request_id=0, status="error"), 0) is None
    assert request_errors(RequestRecord(request_id=1, output_times_ns=[1], server_timings={}), 0) is None


def test_tags_name_requests_and_the_wire_is_the_truth_when_captured():
    from bench.calibrate import level_bound, request_tag

    assert request_tag(RequestRecord(request_id=0, server_timings={"prompt": "calibrate #17"})) == 17
    assert request_tag(RequestRecord(request_id=0, server_timings={"prompt": "hello"})) is None
    log_only = {"ttft_error_ms": {"p99": 0.4}, "wire": None}
    assert level_bound(log_only) == (0.4, "server log")
    assert level_bound(log_only | {"wire": {"paired": 64, "ttft_error_ms": {"p99": 0.3}}}) == (0.3, "wire")


def _report(busy_poll=False, streams=(1, 64, 256), hostname=None, wire=True):
    from bench.calibrate import machine

    here = machine() | ({"hostname": hostname} if hostname else {})

    def level(n):
        figures = {"p50": 0.01 * n, "p99": 0.1 + n / 1000, "max": 0.2 + n / 1000}
        return {
            "streams": n,
            "ttft_error_ms": {"p50": 1.0, "p99": 2.0, "max": 3.0},  # the log's, worse than the wire's
            "tpot_error_ms": {"p99": 0.01},
            "wire": {"paired": 64, "ttft_error_ms": figures, "tpot_error_ms": {"p99": 0.02}} if wire else None,
        }

    return {
        "busy_poll": busy_poll,
        "machine": here,
        "created_at": "2025-01-01T00:00:00+00:00",
        "wire": {"method": "tcpdump" if wire else None},
        "shapes": [
            {"name": "latency", "levels": [level(n) for n in streams]},
            {"name": "capacity", "levels": [level(n) for n in streams if n >= 64]},
        ],
    }


def test_a_run_within_its_calibration_carries_the_bound_at_its_stream_count():
    from bench.calibrate import calibration_cover

    cover = calibration_cover(_report(), Path("cal.json"), 48, False, "given")
    assert cover["covered"] and cover["warnings"] == []
    assert (cover["file"], cover["mode"], cover["streams_calibrated"], cover["run_streams"]) == (
        "cal.json",
        "default",
        256,
        48,
    )
    bound = cover["bound"]
    assert bound["shape"] == "latency" and bound["at_streams"] == 64 and bound["truth"] == "wire"
    assert bound["ttft_error_ms_p99"] == pytest.approx(0.164) and bound["ttft_error_ms_max"] == pytest.approx(0.264)
    assert [b["shape"] for b in cover["bounds_by_shape"]] == ["latency", "capacity"]
    assert cover["machine"]["cpu_model"] and cover["created_at"].startswith("2025")


def test_more_streams_another_mode_another_machine_or_no_wire_are_warned():
    from bench.calibrate import calibration_cover

    cover = calibration_cover(_report(busy_poll=True, hostname="elsewhere", wire=False), None, 1024, False, "automatic")
    assert not cover["covered"] and cover["bound"]["at_streams"] == 256  # the nearest it has, said to fall short
    text = " | ".join(cover["warnings"])
    assert "this run used 1024 streams; its calibration covered up to 256" in text
    assert "busy-poll waiting mode; this run used the default mode" in text
    assert "another machine (elsewhere" in text and "not the wire" in text
    assert cover["bound"]["truth"] == "server log" and cover["bound"]["ttft_error_ms_p99"] == 2.0


def test_no_calibration_says_so():
    from bench.calibrate import no_calibration

    none = no_calibration(8, True, Path("results"))
    assert none["file"] is None and not none["covered"] and none["bound"] is None and none["run_mode"] == "busy-poll"
    assert "no calibration of this machine under results" in none["warnings"][0]


def test_the_newest_calibration_of_this_machine_in_the_run_mode_is_found(tmp_path):
    import json

    from bench.calibrate import find_calibration

    def write(name, **kw):
        report = _report(**{k: v for k, v in kw.items() if k != "created"}) | {"created_at": kw.get("created", "")}
        (tmp_path / name).mkdir()
        (tmp_path / name / "calibration.json").write_text(json.dumps(report))
        return tmp_path / name / "calibration.json"

    old = write("calibration-1", created="2025-01-01")
    new = write("calibration-2", created="2025-02-01")
    busy = write("calibration-3", created="2025-03-01", busy_poll=True)
    write("calibration-4", created="2025-04-01", hostname="elsewhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "calibration.json").write_text("{")
    small = write("calibration-5", created="2025-05-01", streams=(1, 16))  # the newest, but only up to 16 streams
    assert find_calibration(tmp_path, busy_poll=False, streams=64) == new != old  # the newest that covers 64
    assert find_calibration(tmp_path, busy_poll=False, streams=8) == small
    assert find_calibration(tmp_path, busy_poll=True) == busy
    assert find_calibration(tmp_path / "nothing-here", busy_poll=False) is None


def test_the_timing_line_under_the_latency_table():
    from types import SimpleNamespace

    from bench.calibrate import calibration_cover, no_calibration
    from bench.cli.run import timing_bound

    def result(calibration, concurrency, client_reads=None, together=0):
        stage = SimpleNamespace(schedule={"concurrency": concurrency})
        manifest = SimpleNamespace(calibration=calibration, stages=[stage], client_reads=client_reads)
        return SimpleNamespace(manifest=manifest, summary=SimpleNamespace(first_chunk_read_with_the_next=together))

    covered = timing_bound(result(calibration_cover(_report(), Path("c.json"), 16, False, "automatic"), 16))
    assert covered.startswith("p99 TTFT +0.16 ms (max +0.26) vs the wire at 64 streams, default mode (c.json")
    assert "found automatically" in covered and "warning" not in covered
    beyond = timing_bound(result(calibration_cover(_report(), Path("c.json"), 512, False, "given"), 512))
    assert "warning: this run used 512 streams; its calibration covered up to 256" in beyond
    assert timing_bound(result(no_calibration(4, False, None), 4)).startswith("unknown: no calibration")
    assert timing_bound(result(None, 4)).startswith("unknown: no calibration")  # a manifest from before
    old_style = {
        "file": "c.json",
        "created_at": "x",
        "shapes": [{"levels": [{"streams": 8, "ttft_error_ms": {"p99": 0.5}}]}],
    }
    assert timing_bound(result(old_style, 4)) == "p99 TTFT error +0.50 ms at 8 streams (c.json, x)"
    # then what the run's own reads say: how many came late, how many first tokens were read with the next
    reads = {"timestamps": "kernel receive time", "reads": 400, "late_reads": 6}
    line = timing_bound(result(old_style, 4, reads, together=3))
    assert line.startswith("p99 TTFT error +0.50 ms at 8 streams (c.json, x); 1.5% of this run's reads came over 1 ms")
    assert line.endswith(
        "; 3 first token(s) read with the next: where the two came apart, that TTFT is late by the gap"
    )
    quiet = timing_bound(result(None, 4, reads))
    assert quiet.startswith("unknown: no calibration")
    assert quiet.endswith("1 ms after their bytes (each timed by the kernel all the same)")
    assert timing_bound(result(None, 4, {"timestamps": "event-loop read time"})).startswith("unknown")  # no counts


def _calibrate_with_levels(monkeypatch, tmp_path, capsys, p99s: dict[int, tuple[float | None, float]]):
    """`bench calibrate` with every level's figures given (streams -> (wire p99 or None, log p99)), no server
    started: returns the report's latency shape and what it printed."""
    import json

    import bench.calibrate as calibrate
    from bench.cli import main

    class NoServer:
        pid = 0

        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            pass

        def stop(self):
            pass

    def level(url, shape, streams, requests, pid, busy_poll=False, capture=None):
        wire, log = p99s[streams]
        return {
            "streams": streams,
            "ttft_error_ms": {"p50": 0.1, "p99": log, "max": log},
            "wire": {"paired": 64, "ttft_error_ms": {"p99": wire}} if wire is not None else None,
            "output_tokens_per_s": 100.0 * streams,  # tokens/s that tell the levels apart
        }

    monkeypatch.setattr(calibrate, "ManagedProcess", NoServer)
    monkeypatch.setattr(calibrate, "wait_until_ready", lambda *args, **kwargs: None)
    monkeypatch.setattr(calibrate, "run_level", level)
    monkeypatch.setattr(calibrate, "format_level", lambda shape, level: f"level {level['streams']}")
    streams = ",".join(str(n) for n in p99s)
    argv = ["calibrate", "--shape", "latency", "--streams", streams, "--results-dir", str(tmp_path), "--run-id", "c"]
    assert main(argv) == 0
    (shape,) = json.loads((tmp_path / "c" / "calibration.json").read_text())["shapes"]
    return shape, capsys.readouterr().out


def test_the_most_streams_within_1_ms_ends_before_the_first_level_over_it(monkeypatch, tmp_path, capsys):
    # wire p99 0.4, 1.0 (on the budget: within), 1.3 (over), 0.7 (within, but after a level that was not); the
    # log's p99 is within everywhere and must not count where the wire was captured
    levels = {1: (0.4, 0.2), 8: (1.0, 0.2), 64: (1.3, 0.2), 256: (0.7, 0.2)}
    shape, out = _calibrate_with_levels(monkeypatch, tmp_path, capsys, levels)
    assert [lv["streams"] for lv in shape["levels"]] == [1, 8, 64, 256]
    assert shape["max_streams_p99_ttft_error_within_1ms"] == 8
    assert shape["output_tokens_per_s_at_that_level"] == 800.0 and shape["max_output_tokens_per_s"] == 25600.0
    assert "p99 TTFT error within 1 ms up to 8 streams (800 tok/s); most delivered 25,600 tok/s" in out


def test_without_a_wire_the_log_decides_and_a_first_level_over_budget_leaves_none(monkeypatch, tmp_path, capsys):
    shape, out = _calibrate_with_levels(monkeypatch, tmp_path, capsys, {1: (None, 0.9), 16: (None, 1.01)})
    assert shape["max_streams_p99_ttft_error_within_1ms"] == 1 and shape["output_tokens_per_s_at_that_level"] == 100
    assert "within 1 ms up to 1 streams (100 tok/s)" in out

    shape, out = _calibrate_with_levels(monkeypatch, tmp_path / "2", capsys, {1: (1.5, 0.1), 16: (0.2, 0.1)})
    assert shape["max_streams_p99_ttft_error_within_1ms"] is None
    assert shape["output_tokens_per_s_at_that_level"] is None
    assert "p99 TTFT error within 1 ms up to no tested streams; most delivered 1,600 tok/s" in out
