"""Client error against the calibration server's truth, by hand."""

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
