"""The progress a person reads: the plain lines CI logs get, counted from the records as they land."""

from __future__ import annotations

import io

from bench.console import PlainDisplay
from bench.load.plan import Stage
from bench.load.schedules import ClosedLoop
from bench.records import RequestRecord


def _stage(requests: int = 4) -> Stage:
    return Stage(index=0, name="c2", schedule=ClosedLoop(concurrency=2), requests=requests, warmup_requests=1)


def test_plain_lines_count_phases_failures_and_output_tokens():
    out = io.StringIO()
    display = PlainDisplay(out)
    display.stage_started(_stage(), total_stages=2)
    display.record(RequestRecord(request_id=0, phase="warmup", status="ok", output_tokens=16))
    for i in (1, 2):
        display.record(RequestRecord(request_id=i, phase="measured", status="ok", output_tokens=16))
    display.record(RequestRecord(request_id=3, phase="measured", status="error"))
    display.current.started -= 2.0  # as if two seconds had passed: 3 ok / 2 s, 48 tokens / 2 s
    display.stage_ended()
    line = out.getvalue().strip()
    assert line.startswith("stage 1/2 concurrency 2 | measured 3/4 (+1 warmup, +0 cooldown) | ok 3 failed 1 |")
    assert "1.50 req/s" in line and "24.0 out tok/s" in line
    assert display.current is None


def test_embedding_stages_show_inputs_and_input_tokens_not_output():
    """An embeddings request generates nothing: the line says inputs/s and the tokens embedded per second."""
    out = io.StringIO()
    display = PlainDisplay(out)
    display.stage_started(_stage(2), total_stages=1)
    for i in (0, 1):
        record = RequestRecord(request_id=i, phase="measured", status="ok", inputs=8, prompt_tokens=512)
        display.record(record)
    display.current.started -= 4.0  # 16 inputs / 4 s, 1024 tokens / 4 s
    display.tick()
    line = out.getvalue().strip()
    assert "4.0 inputs/s" in line and "256.0 in tok/s" in line and "out tok/s" not in line
