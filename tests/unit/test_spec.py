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
        ("- a list\n", "expected a mapping of run spec fields"),
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
