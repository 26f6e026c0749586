"""Matrix plans: axes x resources -> cells, each a validated RunSpec; every mistake found before anything runs."""

from pathlib import Path

import pytest
import yaml

from bench.errors import UsageError
from bench.scale.plan import MatrixPlan, Resources, expand, load_plan, parse_memory

BASE = {"engine": {"kind": "llamacpp", "threads": 1}, "model": "gemma3-270m", "load": {"requests": 4}}


def plan(**fields) -> MatrixPlan:
    return MatrixPlan.model_validate({"base": BASE, **fields})


def test_cells_are_the_product_of_the_axes_in_order_each_a_run_spec(tmp_path):
    cells = expand(
        plan(
            axes={
                "engine.threads": [1, 2],
                "load.concurrency": [1, "1,4"],
                "hardware": [
                    {"name": "cpu", "hardware_offer": "cpu-2-core-vm"},
                    {
                        "name": "h100",
                        "set": {"engine.gpu_layers": 99},
                        "resources": {"num_gpus": 1, "accelerator_type": "H100"},
                    },
                ],
            },
            resources={"num_cpus": 2},
            report={"hardware_offer": "l4-on-demand"},
        ),
        tmp_path / "m",
    )
    assert [c.id for c in cells[:3]] == [
        "threads-1_concurrency-1_hardware-cpu",
        "threads-1_concurrency-1_hardware-h100",
        "threads-1_concurrency-1-4_hardware-cpu",
    ]
    assert len(cells) == 8 and [c.index for c in cells] == list(range(8))
    last = cells[-1]
    assert last.axes == {"engine.threads": "2", "load.concurrency": "1,4", "hardware": "h100"}
    assert last.spec.engine.threads == 2 and last.spec.engine.gpu_layers == 99 and last.spec.load.concurrency == [1, 4]
    assert last.spec.load.requests == 4 and last.spec.model == "gemma3-270m"  # the base stays under the axes
    assert last.spec.output.results_dir == tmp_path / "m" and last.spec.output.run_id == last.id
    assert last.resources.ray_options() == {"num_cpus": 2, "num_gpus": 1, "accelerator_type": "H100"}
    assert last.resources.demand() == {"CPU": 2, "GPU": 1, "accelerator_type:H100": 0.001}
    assert cells[0].hardware_offer == "cpu-2-core-vm" and last.hardware_offer == "l4-on-demand"  # else the default


def test_a_value_of_another_engine_replaces_the_engine_section(tmp_path):
    (cell,) = expand(
        plan(axes={"engine": [{"name": "vllm", "set": {"engine": {"kind": "vllm"}}}]}, resources={"num_gpus": 1}),
        tmp_path,
    )
    assert cell.spec.engine.kind == "vllm"  # llama.cpp's threads did not leak into vLLM's section


def test_overrides_change_one_cell_and_must_name_a_cell(tmp_path):
    cells = expand(plan(axes={"engine.threads": [1, 2]}, overrides={"threads-2": {"set": {"seed": 7}}}), tmp_path)
    assert [c.spec.seed for c in cells] == [0, 7]
    with pytest.raises(UsageError, match="overrides: no cell is named threads-3"):
        expand(plan(axes={"engine.threads": [1, 2]}, overrides={"threads-3": {"set": {"seed": 7}}}), tmp_path)


def test_relative_paths_become_absolute_so_a_cell_means_the_same_on_every_node(tmp_path):
    (cell,) = expand(plan(axes={"catalog": ["models.yaml"]}), tmp_path, root=Path("/srv/lab"))
    assert cell.spec.catalog == Path("/srv/lab/models.yaml")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"axes": {"load.concurrency": [0]}}, "cell concurrency-0: not a valid run spec: load.concurrency.0"),
        ({"axes": {"engine.gpu_layers": [99]}}, "its engine runs on a GPU .* asks for no GPU"),
        (
            {"axes": {"engine.threads": [1, 1.0]}},
            r"cells \{'engine.threads': '1'\} and \{'engine.threads': '1'\} have the same id",
        ),
        ({"axes": {"engine.bogus": [1]}}, "cell bogus-1: not a valid run spec: engine.llamacpp.bogus"),
        # settings the cell's plan would drop without a word (its label would still name them)
        (
            {"axes": {"load.concurrency": [2], "load.rate": [1]}},
            "cell concurrency-2_rate-1: load.concurrency would be ignored beside load.rate",
        ),
        (
            {"axes": {"workload.trace": [{"name": "bench", "set": {"workload.trace": "bench.jsonl"}}]}},
            "cell trace-bench: load.requests would be ignored beside workload.trace",
        ),
    ],
)
def test_a_bad_cell_is_named_before_anything_runs(tmp_path, fields, message):
    with pytest.raises(UsageError, match=message):
        expand(plan(**fields), tmp_path)


def test_gpus_are_whole_so_no_two_cells_share_one():
    with pytest.raises(ValueError, match="cells take whole GPUs"):
        Resources(num_gpus=0.5)
    assert Resources(num_gpus=1.0).num_gpus == 1


def test_resources_merge_in_axis_order_and_memory_takes_units():
    merged = Resources(num_cpus=2, custom={"a": 1}).merged(Resources(memory="2GiB", custom={"b": 2}))
    assert merged.num_cpus == 2 and merged.memory == 2 * 2**30 and merged.custom == {"a": 1, "b": 2}
    assert parse_memory("512MiB") == 512 * 2**20 and parse_memory(1000) == 1000
    with pytest.raises(ValueError, match="give bytes"):
        parse_memory("lots")


def test_plan_file_errors_are_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"base": {**BASE, "output": {"run_id": "x"}}}))
    with pytest.raises(UsageError, match="cells name their own run directories"):
        load_plan(path)
    path.write_text(yaml.safe_dump({"base": BASE, "axes": {"model": []}}))
    with pytest.raises(UsageError, match="axis 'model' has no values"):
        load_plan(path)
    path.write_text("base: [")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_plan(path)
    with pytest.raises(UsageError, match="plan file .*missing.yaml: not found"):
        load_plan(tmp_path / "missing.yaml")


def test_the_example_plans_expand(tmp_path):
    examples = sorted((Path(__file__).resolve().parents[3] / "examples").glob("matrix-*.yaml"))
    assert examples, "examples/matrix-*.yaml"
    for path in examples:
        cells = expand(load_plan(path), tmp_path / path.stem)
        assert len(cells) >= 4, path
