"""On a real local Ray cluster (ray.cluster_utils.Cluster: a head and a second node, custom resources standing in
for GPU types, one CPU and one logical GPU each): a benchmark matrix of llama.cpp cells scheduled by resource,
with one cell whose engine fails to start and one whose Ray worker is killed, resumed, and equal in structure to
the same plan run locally; and two load actors against the loopback calibration server.

Ray binds to the machine's primary address, never loopback, so these tests run in a network namespace of their
own that has only loopback (where Ray uses 127.0.0.1): the one test collected outside re-runs this module under
`unshare --net` (root, as CI runs) and passes or fails with it. Where no namespace can be made, or Ray cannot
start, they skip and say why.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import REPO, installed, needs_xllamacpp

pytestmark = pytest.mark.integration
GAP_MS = 25.0  # the calibration server's token gap in the load actors' test
INSIDE = os.environ.get("BENCH_RAY_NETNS") == "1"
NEEDS_RAY = "Ray is not installed: pip install -e '.[ray]'"


if not INSIDE:

    def test_the_ray_tests_pass_in_a_network_namespace_with_only_loopback():
        if not installed("ray"):
            pytest.skip(NEEDS_RAY)
        if not (shutil.which("unshare") and shutil.which("ip")):
            pytest.skip("no unshare/ip here to give Ray a loopback-only network namespace (util-linux, iproute2)")
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot make a network namespace (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}")
        inner = f"{sys.executable} -m pytest -p no:cacheprovider -q -rA {Path(__file__).relative_to(REPO)}"
        proc = subprocess.run(
            ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {inner}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1200,
            env={**os.environ, "BENCH_RAY_NETNS": "1", "RAY_USAGE_STATS_ENABLED": "0"},
        )
        output = proc.stdout + proc.stderr
        print(output[-6000:])
        counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", output))
        if proc.returncode == 0 and not counts.get("passed") and counts.get("skipped"):
            pytest.skip("; ".join(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", output)) or "skipped inside")
        assert proc.returncode == 0, output[-6000:]
        assert counts.get("passed", 0) >= 2, counts


else:
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)

    import pandas as pd

    from bench.analysis import analyse, same_figures
    from bench.calibrate import SERVER_SCRIPT
    from bench.results import RunDirectory, read_jsonl
    from bench.run import execute
    from bench.scale.index import gpu_overlaps
    from bench.scale.matrix import run_matrix
    from bench.spec import EndpointEngine, LoadSpec, RunSpec, WorkloadSpec
    from bench.spec import Length as L

    @contextmanager
    def calibration_server(ttft_ms: float, gap_ms: float):
        """The calibration server in its own process, so its write times are the truth (in-process, a thread
        switch between its write and its timestamp can put the truth after the client's read)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--port",
            str(port),
            "--ttft-ms",
            str(ttft_ms),
            "--gap-ms",
            str(gap_ms),
        ]
        proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, "the calibration server did not start"
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)

    @pytest.fixture(scope="module")
    def cluster():
        from ray.cluster_utils import Cluster

        try:
            c = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 1, "num_gpus": 1, "resources": {"accelerator_type:H100": 1}},
            )
            c.add_node(num_cpus=1, num_gpus=1, resources={"accelerator_type:A10G": 1})
            ray.init(address=c.address, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - whatever stops Ray here is the reason to skip
            pytest.skip(f"Ray cannot start here: {type(exc).__name__}: {exc}")
        nodes = {
            kind: n["NodeID"]
            for n in ray.nodes()
            for kind in ("H100", "A10G")
            if f"accelerator_type:{kind}" in n["Resources"]
        }
        yield c, nodes
        ray.shutdown()
        c.shutdown()

    def wrapper(path: Path, flag: Path, action: str) -> str:
        """An engine interpreter that fails at launch until `flag` exists (its `-c` probes always pass)."""
        path.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = "-c" ] || [ -e {flag} ]; then exec {sys.executable} "$@"; fi\n'
            f"echo 'forced failure for the test' >&2\n{action}\n"
        )
        path.chmod(0o755)
        return str(path)

    def shape(value):
        """A document's structure: its keys all the way down (a list: its first item's)."""
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(value[0])] if value else []
        return None

    def cell_files(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir())

    @needs_xllamacpp
    def test_a_llamacpp_matrix_on_ray_is_scheduled_by_resource_fails_two_cells_resumes_and_matches_local(
        cluster, tmp_path
    ):
        c, nodes = cluster
        flag = tmp_path / "engines-may-start"
        plan = {
            "matrix_id": "ray-llama",
            "results_dir": str(tmp_path / "results"),
            "base": {
                "engine": {"kind": "llamacpp", "threads": 1},
                "model": "gemma3-270m",
                "workload": {"input_tokens": 16, "output_tokens": 8},
                "load": {"requests": 4},
                # a stage here lasts about a second: sampled every 0.1 s, both sides' summaries carry the same
                # telemetry (the engine's gauges among it), whichever second a sample would have fallen in
                "telemetry": {"interval_s": 0.1},
            },
            "resources": {"num_cpus": 1, "num_gpus": 1},
            "axes": {
                "gpu": [
                    {"name": "h100", "resources": {"accelerator_type": "H100"}},
                    {"name": "a10g", "resources": {"accelerator_type": "A10G"}},
                ],
                "load.concurrency": [1, 2],
            },
            "overrides": {  # the engine exits at start; the cell's Ray worker is killed (as a lost node)
                "gpu-h100_concurrency-2": {"set": {"engine.python": wrapper(tmp_path / "fail", flag, "exit 1")}},
                "gpu-a10g_concurrency-2": {"set": {"engine.python": wrapper(tmp_path / "kill", flag, "kill -9 $PPID")}},
            },
            "report": {"hardware_offer": "cpu-2-core-vm", "api_offers": ["openai-gpt-4.1-mini"]},
        }
        path = tmp_path / "plan.yaml"
        path.write_text(yaml.safe_dump(plan, sort_keys=False))
        lines: list[str] = []
        first = run_matrix(path, ray_address=c.address, say=lines.append)
        cells = first.state.cells
        assert first.exit_code == 4 and first.counts == {"complete": 2, "failed": 2}, lines
        crashed = cells["gpu-h100_concurrency-2"].attempts[0]
        assert crashed.exit_code == 3 and "engine" in crashed.reason and crashed.run_dir == "gpu-h100_concurrency-2"
        lost = cells["gpu-a10g_concurrency-2"].attempts[0]
        assert lost.exit_code is None and lost.run_dir is None and "Error" in lost.reason, lost.reason
        for cell_id in ("gpu-h100_concurrency-1", "gpu-a10g_concurrency-1"):
            assert cells[cell_id].status == "complete"

        flag.touch()  # the fault is gone: --resume runs only the two cells that did not complete
        second = run_matrix(path, ray_address=c.address, resume=True, say=lines.append)
        assert second.exit_code == 0 and second.counts == {"complete": 4}, lines
        assert second.state.invocations[-1]["cells"] == ["gpu-h100_concurrency-2", "gpu-a10g_concurrency-2"]
        m = second.matrix_dir
        for cell_id, cs in second.state.cells.items():
            kind = "H100" if "h100" in cell_id else "A10G"
            manifest = json.loads((m / cell_id / "manifest.json").read_text())
            node = manifest["node"]
            assert node["ray_node_id"] == nodes[kind], (cell_id, node)  # scheduled by its resource
            assert node["accelerator_ids"]["GPU"] == ["0"] and node["hardware"]["cpu_model"]
            assert node["assigned_resources"]["GPU"] == 1.0 and node["host"]
            assert manifest["matrix"]["attempt"] == len(cs.attempts) == (2 if cell_id.endswith("2") else 1)
            assert manifest["status"] == "complete" and manifest["spec"]["load"]["concurrency"] == [int(cell_id[-1])]
        kept = m / "attempts" / "gpu-h100_concurrency-2" / "1" / "manifest.json"
        assert json.loads(kept.read_text())["exit_code"] == 3  # the failed attempt's run directory is kept
        assert gpu_overlaps(second.state) == []  # the cells sharing a node took its GPU one at a time

        # the same plan, one cell after another on this machine: the same structure
        local = run_matrix(path, matrix_id="local-llama", say=lines.append)
        assert local.exit_code == 0, lines
        for cell_id in second.state.cells:
            ray_dir, local_dir = m / cell_id, local.matrix_dir / cell_id
            assert cell_files(ray_dir) == cell_files(local_dir)
            for name in ("manifest.json", "summary.json"):
                ray_doc, local_doc = (json.loads((d / name).read_text()) for d in (ray_dir, local_dir))
                if name == "manifest.json":  # the same node keys; only Ray's own values are None locally
                    assert local_doc["node"]["ray_node_id"] is None and local_doc["node"]["assigned_resources"] is None
                    ray_doc["node"], local_doc["node"] = sorted(ray_doc["node"]), sorted(local_doc["node"])
                assert shape(ray_doc) == shape(local_doc), (cell_id, name)
            assert len(read_jsonl(ray_dir / "requests.jsonl")) == len(read_jsonl(local_dir / "requests.jsonl"))
        ray_index, local_index = (pd.read_parquet(d / "index.parquet") for d in (m, local.matrix_dir))
        assert list(ray_index.columns) == list(local_index.columns)
        assert list(ray_index["cell"]) == list(local_index["cell"]) and set(ray_index["status"]) == {"complete"}
        assert ray_index["ray_node_id"].notna().all() and local_index["ray_node_id"].isna().all()
        assert cell_files(m / "report") == cell_files(local.matrix_dir / "report")

    def calibration_spec(url: str, tmp_path: Path, workers: int, run_id: str, ray: str | None = None) -> RunSpec:
        return RunSpec(
            engine=EndpointEngine(url=url),
            model="calibration",
            api="completions",
            workload=WorkloadSpec(input_tokens=L(a=8), output_tokens=L(a=8)),  # 8 tokens: 225 ms at GAP_MS
            load=LoadSpec(concurrency=[4], requests=64, workers=workers, ray_address=ray),
            output={"results_dir": tmp_path, "run_id": run_id},
        )

    def ttft_errors_ms(run_dir: Path, common_clock: bool = False) -> np.ndarray:
        """Client TTFT error per measured request, on the host that measured it, against the server's own
        write times (one machine: every process shares CLOCK_MONOTONIC)."""
        manifest = json.loads((run_dir / "manifest.json").read_text())
        workers = (manifest.get("load_workers") or {}).get("workers")
        errors = []
        for r in read_jsonl(run_dir / "requests.jsonl"):
            if r["phase"] != "measured" or r["status"] != "ok":
                continue
            if workers and not common_clock:  # the worker's clock: its time minus its shift, plus its anchor
                w = workers[r["worker"]]
                t_1 = r["output_times_ns"][0] - w["shift_ns"] + w["anchor_perf_counter_ns"]
            else:
                t_1 = r["output_times_ns"][0] + manifest["clock"]["anchor_perf_counter_ns"]
            errors.append((t_1 - r["server_timings"]["t_first_write_ns"]) / 1e6)
        return np.array(errors)

    def test_load_workers_that_fail_while_starting_leave_no_actor_behind(cluster, tmp_path, monkeypatch):
        """The workers start, then measuring their clocks fails: the run ends with the reason, and both actors
        are killed (each held a CPU of the cluster until it ended: a later cell would have starved)."""
        from bench.scale.workers import WorkerPool

        def broken_clock(self, actor):
            raise RuntimeError("the clock probe failed")

        monkeypatch.setattr(WorkerPool, "_clock", broken_clock)
        with calibration_server(ttft_ms=5, gap_ms=1) as url:
            result = execute(calibration_spec(url, tmp_path, 2, "no-clock"))
        assert result.exit_code != 0 and result.manifest.status != "complete"
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 2, "a load actor still holds its CPU"

    def test_two_load_actors_merge_into_one_run_whose_summary_is_that_of_the_merged_records(cluster, tmp_path):
        c, nodes = cluster
        # a token gap far above a loaded machine's scheduling delays: a first token merges with the second
        # (the read is stamped with the later one's arrival) only when its reader is a whole gap late
        with calibration_server(ttft_ms=50, gap_ms=GAP_MS) as url:
            one = execute(calibration_spec(url, tmp_path, 1, "one"))
            two = execute(calibration_spec(url, tmp_path, 2, "two"))
            actor = execute(calibration_spec(url, tmp_path, 1, "one-actor", ray=c.address))  # --ray alone
        assert one.exit_code == 0 and two.exit_code == 0 and two.manifest.status == "complete"
        assert "load_workers" not in json.loads((one.path / "manifest.json").read_text())  # this process's own
        alone = json.loads((actor.path / "manifest.json").read_text())["load_workers"]
        assert actor.exit_code == 0 and alone["count"] == 1 and alone["workers"][0]["ray_node_id"] in nodes.values()
        assert {r["worker"] for r in read_jsonl(actor.path / "requests.jsonl")} == {0}
        manifest = json.loads((two.path / "manifest.json").read_text())
        section = manifest["load_workers"]
        workers = section["workers"]
        assert {w["ray_node_id"] for w in workers} == set(nodes.values())  # one actor on each node
        for w in workers:  # one machine: the true offset is 0, so the measured one is within its uncertainty
            assert abs(w["clock_start"]["offset_ns"]) <= w["clock_start"]["uncertainty_ns"] + 200_000, w
            assert abs(w["drift_ns"]) <= w["clock_start"]["uncertainty_ns"] + w["clock_end"]["uncertainty_ns"]
        assert [p["schedule"]["concurrency"] for p in section["stages"]["0"]] == [2, 2]
        records = read_jsonl(two.path / "requests.jsonl")
        measured = [r for r in records if r["phase"] == "measured"]
        assert len(measured) == 64 and {r["worker"] for r in measured} == {0, 1}
        assert len({r["request_id"] for r in records}) == len(records)
        # the summary is bench.analysis's function of the merged records, as for one host
        run_dir = RunDirectory(two.path)
        assert same_figures(analyse(run_dir).summary.to_json(), run_dir.summary().to_json())
        stage = two.summary.stages[0]
        window = max(r["t_end_ns"] for r in measured) - min(r["t_send_ns"] for r in measured)
        assert stage.window_s == pytest.approx(window / 1e9)
        tokens = sum(r["output_tokens"] for r in measured if r["status"] == "ok")
        assert stage.output_throughput_tokens_per_s == pytest.approx(tokens / (window / 1e9))
        # timing error, as each host measured it: each run on its own against the server's write times (two
        # timed runs are not compared: on a loaded machine either can have its few slow reads). The median is
        # within 1 ms (the server stamps a token just after writing it, so a preempted server can stamp it
        # after the client read it: small negative errors are the instrument's); the p99 of 64, set by the
        # two slowest, is under one gap: a read a whole gap late merges the first token into the second and
        # costs one gap, and only two such reads would reach it
        single, split = ttft_errors_ms(one.path), ttft_errors_ms(two.path)
        assert len(single) == len(split) == 64
        for name, errors in (("one host", single), ("two actors", split)):
            median, p99 = np.median(errors), np.percentile(errors, 99)
            assert abs(median) < 1.0 and p99 < GAP_MS, (name, median, p99, np.sort(errors)[-4:])
        # on the common clock (one machine: the true offsets are 0) the errors move by the measured offsets only
        common = ttft_errors_ms(two.path, common_clock=True)
        worst = max(w["clock_start"]["uncertainty_ns"] for w in workers) / 1e6
        assert np.abs(common - split).max() <= worst + 0.2
