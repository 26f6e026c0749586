"""The run spec: one typed description of a run, equal after a round trip, built the same from flags, a file or
Python, with errors that name the flag or the file's field."""

import json

import pytest
import yaml
from pydantic import ValidationError

from bench.cli import build_parser
from bench.cli.run import spec_from_args
from bench.errors import UsageError
from bench.spec import Length, LlamaCppEngine, LoadSpec, RunSpec, WorkloadSpec

FULL = {
    "engine": {"kind": "vllm", "max_num_seqs": 8, "env": ["A=1"], "prefix_caching": False},
    "model": "tiny-llama",
    "seed": 7,
    "workload": {
        "input_tokens": "uniform:64:256",
        "output_tokens": "normal:64:8",
        "prefix_count": 2,
        "prefix_tokens": 32,
        "turns": 2,
    },
    "load": {
        "rate": "0.5,2",
        "arrival": "gamma",
        "burstiness": 0.5,
        "max_concurrency": 8,
        "warmup": "5s",
        "cooldown": 2,
        "slo": "ttft=500ms,tpot=50ms",
        "slo_percentile": 95,
        "max_error_rate": 0.1,
    },
    "telemetry": {"interval_s": 0.5},
    "client": {"busy_poll": True},
    "output": {"results_dir": "out", "run_id": "a-run"},
}


def test_spec_to_json_to_spec_is_equal_and_keeps_short_forms():
    spec = RunSpec.model_validate(FULL)
    text = json.loads(spec.model_dump_json())
    assert RunSpec.model_validate(text) == spec
    assert RunSpec.model_validate(yaml.safe_load(yaml.safe_dump(text))) == spec
    assert text["workload"]["input_tokens"] == "uniform:64:256" and text["load"]["warmup"] == "5s"
    assert text["load"]["slo"] == {"ttft": 500.0, "tpot": 50.0} and text["engine"]["env"] == {"A": "1"}


def test_python_flags_and_a_file_build_the_same_spec(tmp_path):
    in_python = RunSpec(
        engine=LlamaCppEngine(threads=2),
        model="gemma3-270m",
        workload=WorkloadSpec(output_tokens=Length(a=16)),
        load=LoadSpec(concurrency=[1, 2]),
    )
    flags = [
        "run",
        "--engine",
        "llamacpp",
        "--model",
        "gemma3-270m",
        "--threads",
        "2",
        "--output-tokens",
        "16",
        "--concurrency",
        "1,2",
    ]
    from_flags = spec_from_args(build_parser().parse_args(flags))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(in_python.model_dump(mode="json")))
    from_file = spec_from_args(build_parser().parse_args(["run", "--spec", str(path)]))
    assert in_python == from_flags == from_file


def test_flags_override_the_spec_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("engine: {kind: llamacpp, threads: 1}\nmodel: gemma3-270m\nload: {concurrency: [4], requests: 8}\n")
    spec = spec_from_args(build_parser().parse_args(["run", "--spec", str(path), "--requests", "3"]))
    assert spec.load.requests == 3 and spec.load.concurrency == [4] and spec.engine.threads == 1


@pytest.mark.parametrize(
    "content, fragment",
    [
        (
            "engine: {kind: llamacpp}\nmodel: m\nload: {concurency: 4}\n",
            "field load.concurency is not a run spec field",
        ),
        ("engine: {kind: llamacpp, dtype: half}\nmodel: m\n", "field engine.dtype is not a run spec field for engine"),
        ("engine: {kind: llamacpp}\nmodel: m\nload: {rate: [1], sweep: 2}\n", "field load: `rate` and `sweep`"),
        ("engine: {kind: llamacpp}\nmodel: m\nworkload: {input_tokens: 0}\n", "field workload.input_tokens"),
        (
            "engine: {kind: llamacpp}\nmodel: m\nload: {concurrency: [2], rate: [1]}\n",
            "load.concurrency sets closed-loop streams and load.rate an open-loop plan",
        ),
        ("- a list\n", "expected a mapping of run spec fields"),
        ("engine:\nmodel: m\n", "field engine must be a mapping of its fields (kind: llamacpp); it is empty"),
        ("engine: llamacpp\nmodel: m\n", "field engine must be a mapping of its fields (kind: llamacpp); not 'llama"),
        ("engine: {kind: llamacpp}\nmodel: m\nload: [1, 2]\n", "field load must be a mapping of its fields"),
        ("engine: {kind: llamacpp}\nmodel: m\nload: {concurrency: []}\n", "field load.concurrency: expected at least"),
        ("engine: {kind: llamacpp}\nmodel: m\nload: {rate: []}\n", "field load.rate: expected at least one number"),
        (
            "engine: {kind: llamacpp}\nmodel: m\nworkload: {trace: t.jsonl}\nload: {rate: [1], ramp_s: 10}\n",
            "workload.trace gives the arrivals and the lengths; leave out load.rate, load.ramp_s",
        ),
        (
            "engine: {kind: llamacpp}\nmodel: m\nworkload: {trace: t.jsonl, prefix_count: 2, prefix_tokens: 8}\n",
            "leave out `prompts`, `golden`, `turns`, `prefix_count`",
        ),
        ("engine: {kind: llamacpp}\nmodel: m\nworkload: {trace_speed: 2}\n", "shape a `trace`; give one"),
        (
            "engine: {kind: llamacpp}\nmodel: m\nworkload: {prompts: p.jsonl, turns: 3}\n",
            "a prompt file gives each prompt whole; leave out `turns` and `prefix_count`",
        ),
        (
            "engine: {kind: llamacpp}\nmodel: m\nworkload: {input_tokens: 100, prefix_count: 2, prefix_tokens: 500}\n",
            "`prefix_tokens` 500 must be below the shortest `input_tokens` (100)",
        ),
        ("engine: {kind: llamacpp}\nmodel: m\nworkload: {input_tokens: .inf}\n", "give N, uniform:MIN:MAX"),
        ("engine: {kind: llamacpp}\nmodel: m\nworkload: {input_tokens: 'uniform:1.5:9'}\n", "whole token counts"),
        (
            "engine: {kind: llamacpp}\nmodel: m\nload: {concurrency: [4], ramp_s: 5, ramp_from: 2.5}\n",
            "`ramp_from` 2.5: a closed loop ramps from a whole number of streams",
        ),
        ("engine: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_spec_file_names_the_file_and_field(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        spec_from_args(build_parser().parse_args(["run", "--spec", str(path)]))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_nan_and_infinity_are_never_numbers():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            LoadSpec(rate=[bad])


def test_a_spec_runs_from_python_without_the_command_line():
    import bench

    assert bench.RunSpec is RunSpec and callable(bench.execute) and callable(bench.load_run)


def test_streams_given_with_a_rate_are_refused_not_dropped():
    """--concurrency 2 beside --rate 1 ran one open-loop stage and recorded no trace of the 2 streams; the spec
    a run keeps (its default streams beside a rate) still loads."""
    args = ["run", "--engine", "llamacpp", "--model", "m", "--concurrency", "2", "--rate", "1"]
    with pytest.raises(UsageError, match="--concurrency sets closed-loop streams and --rate an open-loop plan"):
        spec_from_args(build_parser().parse_args(args))
    kept = RunSpec.model_validate(
        json.loads(spec_from_args(build_parser().parse_args(args[:-4] + args[-2:])).model_dump_json())
    )
    assert kept.load.rate == [1.0] and kept.load.concurrency == [4]


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--ramp", "10"], "--trace gives the arrivals and the lengths; leave out --ramp"),
        (["--concurrency", "8", "--requests", "5"], "leave out --concurrency, --requests"),
        (["--sweep", "4"], "leave out --sweep"),
        (["--input-tokens", "999", "--output-tokens", "7"], "leave out --input-tokens, --output-tokens"),
    ],
)
def test_what_a_trace_gives_is_refused_beside_it_not_dropped(flags, fragment):
    """A trace's stage took none of these: --ramp made every request warmup (nothing measured), the rest were
    dropped without a word."""
    args = ["run", "--engine", "llamacpp", "--model", "m", "--trace", "t.jsonl", *flags]
    with pytest.raises(UsageError) as caught:
        spec_from_args(build_parser().parse_args(args))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    # a trace alone, bounded in time and in flight, is a plan
    bounded = [*args[:7], "--duration", "30", "--max-concurrency", "4"]
    assert spec_from_args(build_parser().parse_args(bounded)).workload.trace is not None


def test_an_infinite_length_is_a_flag_error_not_a_traceback():
    args = ["run", "--engine", "llamacpp", "--model", "m", "--input-tokens", "inf"]
    with pytest.raises(UsageError, match="--input-tokens inf: 'inf': give N, uniform:MIN:MAX or normal:MEAN:STD"):
        spec_from_args(build_parser().parse_args(args))
