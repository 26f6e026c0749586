"""A matrix on this machine (no Ray): cells one after another through run_cell -> bench.run.execute, against the
in-process fake engine; a failed cell, its new attempt on --resume, the index, the report and the node record."""

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.analysis import analyse, same_figures
from bench.errors import UsageError
from bench.results import RunDirectory
from bench.scale.index import gpu_overlaps
from bench.scale.matrix import Attempt, CellState, MatrixState, run_matrix

from ..conftest import fake_engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_plan(tmp_path: Path, url: str, **extra) -> Path:
    plan = {
        "matrix_id": "m",
        "results_dir": str(tmp_path / "results"),
        "base": {
            "engine": {"kind": "endpoint", "url": url, "ready_timeout_s": 1},
            "model": "calibration",
            "api": "completions",
            "workload": {"input_tokens": 8, "output_tokens": 8},
            "load": {"requests": 6},
        },
        "axes": {"load.concurrency": [1, 2], "workload.output_tokens": [4, 8]},
        "report": {"hardware_offer": "cpu-2-core-vm", "api_offers": ["openai-gpt-4.1-mini"]},
        **extra,
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def quiet(_line: str) -> None:
    pass


def test_a_local_matrix_runs_every_cell_through_bench_run_and_indexes_them(tmp_path):
    with fake_engine() as url:
        result = run_matrix(write_plan(tmp_path, url), say=quiet)
    assert result.exit_code == 0 and result.counts == {"complete": 4}
    m = result.matrix_dir
    cells = [
        "concurrency-1_output_tokens-4",
        "concurrency-1_output_tokens-8",
        "concurrency-2_output_tokens-4",
        "concurrency-2_output_tokens-8",
    ]
    assert sorted(p.name for p in m.iterdir() if (p / "manifest.json").exists()) == cells
    manifest = json.loads((m / cells[3] / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["spec"]["load"]["concurrency"] == [2]
    assert manifest["spec"]["workload"]["output_tokens"] == "8"
    assert manifest["matrix"] == {
        "matrix_id": "m",
        "cell": cells[3],
        "attempt": 1,
        "axes": {"load.concurrency": "2", "workload.output_tokens": "8"},
    }
    node = manifest["node"]
    assert node["host"] == socket.gethostname() and node["ray_node_id"] is None and node["hardware"]["cpu_model"]
    # each cell's summary is bench.analysis's of its own records, as for `bench run`
    run_dir = RunDirectory(m / cells[3])
    assert same_figures(analyse(run_dir).summary.to_json(), run_dir.summary().to_json())
    index = pd.read_parquet(m / "index.parquet")
    assert list(index["cell"]) == cells and set(index["status"]) == {"complete"}
    assert list(index["load.concurrency"]) == ["1", "1", "2", "2"] and list(index["attempts"]) == [1] * 4
    assert (index["successful"] == 6).all() and (index["output_throughput_tokens_per_s"] > 0).all()
    csv = pd.read_csv(m / "index.csv")  # the same table
    assert list(csv.columns) == list(index.columns) and list(csv["successful"]) == list(index["successful"])
    report = (m / "report" / "report.md").read_text()
    for cell in cells:
        assert report.count(f"| {cell} | concurrency") == 1  # its latency-throughput row
        assert (
            f"| {cell} | self-hosted on cpu-2-core-vm |" in report and f"| {cell} | API openai-gpt-4.1-mini |" in report
        )
    data = json.loads((m / "report" / "report.json").read_text())
    cost = data["cells"][0]["cost"]
    self_hosted, api = cost["rows"]
    assert self_hosted["per_task"] < api["per_task"]  # a CPU VM's cost of an 8-token answer, against the API's
    assert (m / "report" / "report.html").exists() and (m / "report" / "plots" / "latency_throughput.png").exists()
    state = json.loads((m / "matrix.json").read_text())
    assert [a["executor"] for c in state["cells"].values() for a in c["attempts"]] == ["local"] * 4


def test_a_failed_cell_is_marked_with_its_reason_the_others_go_on_and_resume_runs_only_it(tmp_path):
    def failing(n, body):
        return "http-500"

    with fake_engine() as url, fake_engine(faults=failing) as broken:
        plan = {
            "axes": {
                "target": [{"name": "live"}, {"name": "broken", "set": {"engine.url": broken}}],
                "load.concurrency": [1, 2],
            }
        }
        path = write_plan(tmp_path, url, **plan)
        first = run_matrix(path, say=quiet)
        assert first.exit_code == 4 and first.counts == {"complete": 2, "failed": 2}
        failed = first.state.cells["target-broken_concurrency-1"]
        assert failed.status == "failed" and failed.attempts[0].exit_code == 4
        assert failed.reason == "no measured request succeeded (6 failed)"
        live_manifest = (first.matrix_dir / "target-live_concurrency-1" / "manifest.json").read_bytes()
        index = pd.read_csv(first.matrix_dir / "index.csv")
        assert dict(zip(index["cell"], index["status"], strict=True))["target-broken_concurrency-2"] == "failed"
        assert "not priced: the cell is failed" in (first.matrix_dir / "report" / "report.md").read_text()

        with pytest.raises(UsageError, match="already exists: --resume"):
            run_matrix(path, say=quiet)
        # the server is mended: the plan now sends the failed cells to a healthy one, and they resume
        path.write_text(path.read_text().replace(broken, url))
        second = run_matrix(path, resume=True, say=quiet)
    assert second.exit_code == 0 and second.counts == {"complete": 4}
    assert (second.matrix_dir / "target-live_concurrency-1" / "manifest.json").read_bytes() == live_manifest
    cell = second.state.cells["target-broken_concurrency-1"]
    assert [(a.n, a.status) for a in cell.attempts] == [(1, "failed"), (2, "complete")]
    assert cell.attempts[0].run_dir == "attempts/target-broken_concurrency-1/1"  # the first attempt is kept
    kept = json.loads((second.matrix_dir / cell.attempts[0].run_dir / "manifest.json").read_text())
    assert kept["matrix"]["attempt"] == 1 and kept["status"] == "failed" and kept["exit_code"] == 4
    now = json.loads((second.matrix_dir / "target-broken_concurrency-1" / "manifest.json").read_text())
    assert now["matrix"]["attempt"] == 2 and now["status"] == "complete"
    assert [i["cells"] for i in second.state.invocations] == [
        [
            "target-live_concurrency-1",
            "target-live_concurrency-2",
            "target-broken_concurrency-1",
            "target-broken_concurrency-2",
        ],
        ["target-broken_concurrency-1", "target-broken_concurrency-2"],
    ]
    assert list(pd.read_csv(second.matrix_dir / "index.csv")["attempts"]) == [1, 1, 2, 2]


def test_bad_input_found_where_the_cell_runs_fails_that_cell_without_a_run_directory(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the run's own checks refuse it
    result = run_matrix(write_plan(tmp_path, dead, axes={"load.concurrency": [1]}), say=quiet)
    (cell,) = result.state.cells.values()
    assert result.exit_code == 4 and cell.attempts[0].exit_code == 2 and cell.attempts[0].run_dir is None
    assert cell.reason.startswith(f"UsageError: --endpoint {dead}: not reachable")


def test_resume_refuses_a_completed_cell_whose_spec_changed_and_a_matrix_that_does_not_exist(tmp_path):
    with fake_engine() as url:
        path = write_plan(tmp_path, url, axes={"load.concurrency": [1]})
        with pytest.raises(UsageError, match="there is no matrix 'm' to resume"):
            run_matrix(path, resume=True, say=quiet)
        assert run_matrix(path, say=quiet).exit_code == 0
        path.write_text(path.read_text().replace("requests: 6", "requests: 7"))
        with pytest.raises(UsageError, match="completed with another spec"):
            run_matrix(path, resume=True, say=quiet)
        assert run_matrix(path, matrix_id="m2", say=quiet).exit_code == 0  # a changed cell: a new matrix


def test_retries_are_new_recorded_attempts(tmp_path):
    with fake_engine(faults=lambda n, body: "http-500") as broken:
        result = run_matrix(write_plan(tmp_path, broken, axes={"load.concurrency": [1]}, retries=1), say=quiet)
    (cell,) = result.state.cells.values()
    assert result.exit_code == 4 and [(a.n, a.status) for a in cell.attempts] == [(1, "failed"), (2, "failed")]
    assert (result.matrix_dir / "attempts" / cell.id / "1" / "manifest.json").exists()


def test_an_unknown_price_is_an_error_before_anything_runs(tmp_path):
    path = write_plan(tmp_path, "http://127.0.0.1:9", report={"hardware_offer": "nope"})
    with pytest.raises(UsageError, match="hardware_offer 'nope' is not in"):
        run_matrix(path, say=quiet)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("matrix_id", ["../../escape", "/etc/x", "a/b", ""])
def test_a_matrix_id_that_is_no_folder_name_is_refused_before_anything_is_written(tmp_path, matrix_id):
    path = write_plan(tmp_path, "http://127.0.0.1:9")
    with pytest.raises(UsageError, match="a matrix id is a folder name"):
        run_matrix(path, matrix_id=matrix_id, say=quiet)
    assert not (tmp_path / "results").exists() and not (tmp_path.parent / "escape").exists()


def attempt(n, node, gpu, start, end):
    return Attempt(
        n=n,
        executor="ray",
        submitted_at=start,
        started_at=start,
        ended_at=end,
        status="complete",
        node={"ray_node_id": node, "accelerator_ids": {"GPU": [gpu]}},
    )


def test_gpu_overlaps_finds_two_cells_on_one_gpu_of_one_node_at_once():
    def state(*attempts):
        cells = {
            f"c{i}": CellState(id=f"c{i}", index=i, axes={}, spec={}, resources={}, attempts=[a])
            for i, a in enumerate(attempts)
        }
        return MatrixState(matrix_id="m", plan_file="p", plan={}, created_at="", updated_at="", cells=cells)

    t = "2026-01-01T00:00:{:02d}+00:00".format
    apart = state(
        attempt(1, "n1", "0", t(0), t(10)),
        attempt(1, "n1", "0", t(10), t(20)),
        attempt(1, "n2", "0", t(5), t(15)),
        attempt(1, "n1", "1", t(5), t(15)),
    )
    assert gpu_overlaps(apart) == []
    clash = state(
        attempt(1, "n1", "0", t(0), t(30)), attempt(1, "n1", "1", t(1), t(2)), attempt(1, "n1", "0", t(20), t(25))
    )
    assert gpu_overlaps(clash) == ["c0#1 and c2#1 both held GPU 0 of node n1 for 5.000 s"]


def test_a_secret_in_the_plans_engine_env_is_kept_by_name_in_the_matrix_state(tmp_path):
    """The state file keeps the plan and each cell's spec; an engine variable holding a token is recorded by
    name (the cell's own run still gets the value: only what is written is redacted)."""
    from bench.redact import NOT_RECORDED
    from bench.scale.matrix import Matrix

    path = write_plan(tmp_path, "http://127.0.0.1:9")
    plan = yaml.safe_load(path.read_text())
    plan["base"]["engine"] = {"kind": "vllm", "env": {"HF_TOKEN": "hf_secret123", "VLLM_LOGGING_LEVEL": "DEBUG"}}
    plan["base"]["model"] = "tiny-llama"
    plan["resources"] = {"num_gpus": 1}
    path.write_text(yaml.safe_dump(plan))
    matrix = Matrix(path, say=quiet)
    assert matrix.state.plan["base"]["engine"]["env"] == {"HF_TOKEN": NOT_RECORDED, "VLLM_LOGGING_LEVEL": "DEBUG"}
    for cell in matrix.state.cells.values():
        assert cell.spec["engine"]["env"]["HF_TOKEN"] == NOT_RECORDED
    assert all(c.spec_json()["engine"]["env"]["HF_TOKEN"] == "hf_secret123" for c in matrix.cells)


def test_an_embeddings_cell_is_sent_to_bench_report_not_priced_as_a_task_of_no_tokens(tmp_path):
    """A pooling cell generates nothing: the matrix report names the command that prices it per 1M embedded
    tokens, where the task pricing read its missing token counts as a server that reported no usage."""
    from bench.scale.plan import ReportSettings
    from bench.scale.report import matrix_data
    from bench.summary import PoolingFigures, RequestCounts, RunSummary, StageSummary

    stage = StageSummary(stage=0, requests=RequestCounts(measured=4, successful=4), request_throughput_per_s=2.0)
    cell_dir = RunDirectory(tmp_path / "cell-a")
    cell_dir.path.mkdir()
    cell_dir.write_summary(RunSummary(stages=[stage], pooling=PoolingFigures(api="embeddings", tokens_per_s=900.0)))
    attempt = Attempt(n=1, status="complete", executor="local", submitted_at="2026-12-04T10:00:00Z", run_dir="cell-a")
    cell = CellState(
        id="cell-a", index=0, axes={}, spec={}, resources={}, hardware_offer="cpu-2-core-vm", status="complete",
        attempts=[attempt],
    )  # fmt: skip
    state = MatrixState(
        matrix_id="m", plan_file="p.yaml", plan={}, created_at="x", updated_at="x", cells={"cell-a": cell}
    )
    view = matrix_data(state, tmp_path, ReportSettings())["cells"][0]
    assert view["cost"] is None
    assert view["cost_note"].startswith("not priced here: an embeddings or rerank cell; `bench report ")
    assert "--hardware-offer cpu-2-core-vm` prices it per 1M embedded tokens" in view["cost_note"]
