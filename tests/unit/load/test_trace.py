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
    "lengths, capped",
    [
        ((10, 5000), (10, 1014)),  # the prompt fits: kept, the output takes the rest
        ((700, 900), (700, 324)),
        ((5000, 5000), (768, 256)),  # both too long: the output to a quarter, the prompt the rest
        ((5000, 10), (1014, 10)),  # a long prompt keeps a short output
        ((1000, 24), (1000, 24)),  # fits: untouched
    ],
)
def test_a_request_past_the_context_is_cut_on_the_side_that_overflows(tmp_path, lengths, capped):
    path = tmp_path / "t.jsonl"
    path.write_text(f'{{"t_s": 0, "input_tokens": {lengths[0]}, "output_tokens": {lengths[1]}}}\n')
    trace = load_trace(path, max_tokens_per_request=1024)
    assert (trace.rows[0].input_tokens, trace.rows[0].output_tokens) == capped
    assert trace.capped == (capped != lengths)


def test_the_format_is_told_from_a_first_line_of_any_length_and_a_byte_order_mark(tmp_path):
    long_line = tmp_path / "long.jsonl"
    prompt = "word " * 2000  # past any fixed head of the file
    long_line.write_text(f'{{"t_s": 0, "input_tokens": 1, "output_tokens": 4, "prompt": "{prompt}"}}\n')
    assert load_trace(long_line).rows[0].prompt == prompt
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbfTIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,4\n")
    assert load_trace(excel).format == "azure"


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
        ('{"t_s": "nan", "input_tokens": 1, "output_tokens": 4}\n', "line 1: t_s must be a finite number"),
        ('{"timestamp": "5", "input_length": 1, "output_length": 4}\n', "line 1: timestamp must be a finite number"),
        (
            '{"timestamp": 0, "input_length": 1, "output_length": 4, "hash_ids": "123"}\n',
            "line 1: hash_ids must be a list of integers",
        ),
        ("\n\n", "the file is empty"),
        (b"TIMESTAMP,ContextTokens,GeneratedTokens\n\xff,10,4\n", "not UTF-8 text (byte 40)"),
        ('{"a": 1}\n', "not a known trace"),
    ],
)
def test_a_bad_trace_names_the_file_and_line(tmp_path, content, fragment):
    path = tmp_path / "bad.trace"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UsageError) as caught:
        load_trace(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_a_trace_path_that_cannot_be_read_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UsageError, match=r"a-file/t.jsonl: cannot be read \(Not a directory\)"):
        load_trace(tmp_path / "a-file" / "t.jsonl")
