"""Traces: each format read, told apart from its content, windowed, sped up and capped; bad files named."""

import pytest

from bench.errors import UsageError
from bench.load.trace import load_trace

TRACES = __import__("pathlib").Path(__file__).resolve().parents[2] / "fixtures" / "traces"


@pytest.mark.parametrize(
    "name, fmt", [("mooncake.jsonl", "mooncake"), ("azure.csv", "azure"), ("bench.jsonl", "bench")]
)
def test_the_shipped_traces_agree_whatever_their_format(name, fmt):
    trace = load_trace(TRACES / name)
    assert trace.format == fmt and len(trace.rows) == 24 and trace.rows[0].t_s == 0.0
    reference = load_trace(TRACES / "mooncake.jsonl")
    # the same 24 requests in every format: times to the millisecond, lengths exactly
    assert [round(r.t_s, 3) for r in trace.rows] == pytest.approx([round(r.t_s, 3) for r in reference.rows], abs=1e-3)
    assert [(r.input_tokens, r.output_tokens) for r in trace.rows] == [
        (r.input_tokens, r.output_tokens) for r in reference.rows
    ]


def test_speed_window_and_capping(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(
            f'{{"t_s": {t}, "input_tokens": {n}, "output_tokens": 8}}\n'
            for t, n in ((10.0, 100), (12.0, 5000), (14.0, 50), (30.0, 10))
        )
    )
    trace = load_trace(path, speed=2.0, window="1:5", max_tokens_per_request=1024)
    # shifted to the first request (10 s), windowed to 1..5 s of that (12 s and 14 s), then twice as fast
    assert [r.t_s for r in trace.rows] == [0.0, 1.0] and trace.capped == 1
    assert trace.rows[0].input_tokens + trace.rows[0].output_tokens <= 1024 and trace.rows[1].input_tokens == 50


@pytest.mark.parametrize(
    "content, fragment",
    [
        (
            '{"timestamp": 0, "input_length": 0, "output_length": 4}\n',
            "line 1: input_length must be a positive integer",
        ),
        ('{"t_s": 0, "output_tokens": 4}\n', "line 1: input_tokens must be a positive integer"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,4\n", "line 2: Invalid isoformat string"),
        ("hello\n", "not a trace"),
        ('{"a": 1}\n', "not a known trace"),
    ],
)
def test_a_bad_trace_names_the_file_and_line(tmp_path, content, fragment):
    path = tmp_path / "bad.trace"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        load_trace(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)
