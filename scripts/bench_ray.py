"""Benchmark of the Ray scale-out (a script, not a test): on a local Ray cluster (a head and a second node, one CPU
and one logical GPU each, as tests/integration/test_ray.py makes it),

1. dispatch overhead per matrix cell: CELLS cells that attach to the loopback calibration server (each a real
   `bench run`, about a second), run one after another here and as Ray tasks. Per Ray cell: dispatch = its start
   on the node minus the later of its submission and the end of the cell before it on the same node (what Ray
   adds: lease, worker, task start), and return = its end on the node until its run directory is unpacked on the
   driver (packing, object store, unpacking). Also the matrix's wall time both ways.
2. this process's load generator against one load actor (`bench run --ray ADDRESS`) and two
   (`bench run --load-workers 2 --ray ADDRESS`) on the calibration server (its own
   process): delivered output tokens/s and the client's TTFT and TPOT error (measured minus the server's
   recorded truth, on the host that measured it) at p50 and p99.

    python scripts/bench_ray.py            # re-runs itself in a loopback-only network namespace when it can (root)

Everything shares this machine's cores (the server, Ray's processes, the actors), so on a 2-core VM the figures
are a floor for what separate hosts give.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CELLS = 8
REQUESTS = 256


def in_namespace() -> None:
    if os.environ.get("BENCH_RAY_NETNS") == "1" or os.geteuid() != 0 or not shutil.which("unshare"):
        return
    argv = " ".join([sys.executable, *sys.argv])
    env = {**os.environ, "BENCH_RAY_NETNS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    sys.exit(subprocess.call(["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {argv}"], env=env))


@contextmanager
def calibration_server(ttft_ms: float, gap_ms: float):
    from bench.calibrate import SERVER_SCRIPT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, str(SERVER_SCRIPT), "--port", str(port), "--ttft-ms", str(ttft_ms), "--gap-ms", str(gap_ms)]
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def dispatch(address: str, url: str, root: Path) -> dict:
    import datetime as dt

    from bench.scale.matrix import run_matrix

    plan = {
        "matrix_id": "dispatch",
        "results_dir": str(root),
        "base": {
            "engine": {"kind": "endpoint", "url": url},
            "model": "calibration",
            "api": "completions",
            "workload": {"input_tokens": 8, "output_tokens": 16},
            "load": {"requests": 16, "concurrency": [2]},
        },
        "resources": {"num_cpus": 1},
        "axes": {"seed": list(range(CELLS))},
        "report": {"hardware_offer": "cpu-2-core-vm", "api_offers": ["openai-gpt-4.1-mini"]},
    }
    path = root / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    out = {}
    for mode, ray_address in (("local", None), ("ray", address)):
        started = time.monotonic()
        result = run_matrix(path, ray_address=ray_address, matrix_id=f"dispatch-{mode}", say=lambda _: None)
        out[f"{mode}_wall_s"] = time.monotonic() - started
        assert result.exit_code == 0, result.counts
        attempts = [c.attempts[-1] for c in result.state.cells.values()]
        out[f"{mode}_cell_run_s_mean"] = statistics.mean(a.run_s for a in attempts)
        if mode == "ray":

            def ts(text):
                return dt.datetime.fromisoformat(text).timestamp()

            by_node: dict[str, list] = {}
            for a in attempts:
                by_node.setdefault(a.node["ray_node_id"], []).append(a)
            gaps = []
            for spans in by_node.values():
                spans.sort(key=lambda a: ts(a.started_at))
                previous_end = 0.0
                for a in spans:
                    gaps.append(ts(a.started_at) - max(ts(a.submitted_at), previous_end))
                    previous_end = ts(a.ended_at)
            out["ray_dispatch_s"] = {"mean": statistics.mean(gaps), "max": max(gaps), "first": gaps[0]}
            out["ray_return_s"] = {
                "mean": statistics.mean(a.return_s for a in attempts),
                "max": max(a.return_s for a in attempts),
            }
            out["ray_nodes_used"] = len(by_node)
    return out


def errors(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    workers = (manifest.get("load_workers") or {}).get("workers")
    ttft, tpot = [], []
    for line in (run_dir / "requests.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["phase"] != "measured" or r["status"] != "ok":
            continue
        if workers:
            w = workers[r["worker"]]
            base = w["anchor_perf_counter_ns"] - w["shift_ns"]
        else:
            base = manifest["clock"]["anchor_perf_counter_ns"]
        truth = r["server_timings"]
        times = r["output_times_ns"]
        ttft.append((times[0] + base - truth["t_first_write_ns"]) / 1e6)
        n = truth["tokens"]
        if n >= 2 and r["output_tokens"] == n:
            measured = (times[-1] - times[0]) / (n - 1)
            true = (truth["t_last_write_ns"] - truth["t_first_write_ns"]) / (n - 1)
            tpot.append((measured - true) / 1e6)
    return {
        "ttft_error_ms": {"p50": float(np.percentile(ttft, 50)), "p99": float(np.percentile(ttft, 99))},
        "tpot_error_ms": {"p50": float(np.percentile(tpot, 50)), "p99": float(np.percentile(tpot, 99))},
        "judged": len(ttft),
    }


def load_actors(url: str, root: Path, streams: int, tokens: int, address: str) -> dict:
    from bench.console import RunDisplay
    from bench.run import execute
    from bench.spec import EndpointEngine, LoadSpec, RunSpec, WorkloadSpec
    from bench.spec import Length as L

    out = {}
    # this process's own load generator, then one and two Ray actors on the cluster
    for name, workers, ray_address in (("in_process", 1, None), ("1_actor", 1, address), ("2_actors", 2, address)):
        spec = RunSpec(
            engine=EndpointEngine(url=url),
            model="calibration",
            api="completions",
            workload=WorkloadSpec(input_tokens=L(a=8), output_tokens=L(a=tokens)),
            load=LoadSpec(concurrency=[streams], requests=REQUESTS, workers=workers, ray_address=ray_address),
            output={"results_dir": root, "run_id": f"c{streams}-{name}"},
        )
        result = execute(spec, RunDisplay())
        assert result.exit_code == 0, result.message
        stage = result.summary.stages[0]
        out[name] = {
            "output_tokens_per_s": stage.output_throughput_tokens_per_s,
            **errors(result.path),
        }
    return out


def main() -> int:
    in_namespace()
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    report = {"cells": CELLS, "requests_per_load_run": REQUESTS, "cpus": os.cpu_count()}
    try:
        with calibration_server(ttft_ms=20, gap_ms=5) as url:
            report["dispatch"] = dispatch(cluster.address, url, root)
            report["load_latency_shape"] = {"ttft_ms": 20, "gap_ms": 5, "tokens": 64, "streams": 16}
            report["load_latency"] = load_actors(url, root, streams=16, tokens=64, address=cluster.address)
        with calibration_server(ttft_ms=5, gap_ms=1) as url:
            report["load_capacity_shape"] = {"ttft_ms": 5, "gap_ms": 1, "tokens": 256, "streams": 64}
            report["load_capacity"] = load_actors(url, root, streams=64, tokens=256, address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
