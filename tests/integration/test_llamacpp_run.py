"""`bench run` against the real llama.cpp server (xllamacpp) with Gemma 3 270M on loopback."""

import json
import signal
from pathlib import Path

import pytest

from bench.analysis import analyse, same_figures
from bench.results import RunDirectory

from .conftest import (
    LLAMA_SERVER,
    RUN_GEMMA,
    engine_processes,
    needs_llama_cpp_python,
    needs_llama_server,
    needs_xllamacpp,
    only_run_dir,
    read_records,
    run_bench,
    start_bench,
    wait_for_measured,
)

pytestmark = [pytest.mark.integration, needs_xllamacpp]
SMALL = [*RUN_GEMMA, "--input-tokens", "32", "--output-tokens", "16"]


def max_overlap(records):
    """Most requests in flight at one instant, from their send and end times."""
    edges = sorted([(r["t_send_ns"], 1) for r in records] + [(r["t_end_ns"], -1) for r in records])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_benchmark_of_real_server_records_consistent_requests(tmp_path):
    done = run_bench(
        *SMALL, "--concurrency", "2", "--parallel", "2", "--requests", "16", "--warmup", "2", results=tmp_path
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["incomplete_reason"] is None
    engine = manifest["engine"]
    assert engine["launcher"] == "xllamacpp" and engine["version"]["xllamacpp_version"]
    assert engine["version"]["total_slots"] == 2 and engine["load_time_s"] > 0
    assert "--parallel" in engine["argv"] and engine["exit_code"] is not None
    assert manifest["model"]["file"]["sha256"] == manifest["model"]["entry"]["sha256"]
    assert manifest["hardware"]["cpu_cores_logical"] >= 1
    # the manifest inventories the GPUs NVML sees, or says plainly that there are none
    gpus, note = manifest["hardware"]["gpus"], manifest["hardware"]["gpu_note"]
    assert (gpus and "NVIDIA GPU(s) via NVML" in note) or (gpus == [] and "no " in note and "GPU" in note)
    inputs = manifest["efficiency_inputs"]
    assert inputs["model_shape"]["layers"] == 18 and inputs["hardware_limits"]["memory_bandwidth_bytes_per_s"] > 1e9

    records = read_records(run_dir)
    measured = [r for r in records if r["phase"] == "measured"]
    assert len(measured) == 16 and sum(r["phase"] == "warmup" for r in records) == 2
    for r in measured:
        assert r["status"] == "ok", r
        assert r["tokens_source"] == "usage" and r["output_tokens"] == 16 and r["prompt_tokens"] >= 16
        ttft = r["output_times_ns"][0] - r["t_send_ns"]
        assert 0 < ttft <= r["t_end_ns"] - r["t_send_ns"]
        assert r["output_times_ns"] == sorted(r["output_times_ns"])
        assert r["server_timings"]["predicted_n"] == 16  # llama.cpp's own count agrees with usage
    assert max_overlap(measured) == 2  # two streams really were in flight together

    # summary.json's headline figures, recomputed here by plain arithmetic from requests.jsonl
    summary = json.loads((run_dir / "summary.json").read_text())
    window_s = (max(r["t_end_ns"] for r in measured) - min(r["t_send_ns"] for r in measured)) / 1e9
    assert summary["window_s"] == pytest.approx(window_s, rel=1e-12)
    assert summary["request_throughput_per_s"] == pytest.approx(16 / window_s, rel=1e-12)
    assert summary["output_throughput_tokens_per_s"] == pytest.approx(16 * 16 / window_s, rel=1e-12)
    ttfts = sorted((r["output_times_ns"][0] - r["t_send_ns"]) / 1e6 for r in measured)
    assert summary["ttft_ms"]["p50"] == pytest.approx((ttfts[7] + ttfts[8]) / 2, rel=1e-12)  # 16 values: ranks 7, 8
    assert summary["total_output_tokens"] == 16 * 16 and summary["ttft_ms"]["n"] == 16
    # and the same function of the raw files gives it again (`bench summarize` says so below)
    run = RunDirectory(run_dir)
    assert same_figures(analyse(run).summary.to_json(), summary)
    # llama.cpp's own /metrics counters agree with the client's usage over the stage (warmup included)
    server = summary["stages"][0]["server"]
    assert server["generation_tokens"] == sum(r["output_tokens"] for r in records)
    assert server["processed_prompt_tokens"] == sum(r["prompt_tokens"] for r in records)  # nothing came from cache
    telemetry = [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]
    assert telemetry and summary["telemetry"]["engine_peak_rss_bytes"] > 100 * 2**20
    assert all(row["sample_cost_us"] > 0 and (row["gpus"] is None) == (not gpus) for row in telemetry)
    efficiency = summary["stages"][0]["efficiency"]
    assert 0 < efficiency["decode_bandwidth_utilization"] <= 1.0  # measured against the roofline, not above it
    assert efficiency["decode_streams_mean"] > 1.2 and efficiency["prefill_source"] == "server timings"
    assert "Efficiency   decode" in done.stdout
    again = run_bench("summarize", str(run_dir), results=tmp_path)
    assert "summary.json: matches the recomputation" in again.stderr
    assert not engine_processes(run_dir)
    for label in ("TTFT (ms)", "TPOT (ms)", "ITL (ms)", "E2E latency (ms)", "p99.9", "req/s", str(run_dir)):
        assert label in done.stdout


def test_an_engine_killed_mid_run_is_never_recorded_as_complete(tmp_path):
    """The race of issue 12: the last requests fail faster than the liveness check, so the stage ends by its
    bounds; the status must still come from the reaped engine. Five kills, so a race cannot hide."""
    import os

    for attempt in range(5):
        results = tmp_path / str(attempt)
        proc = start_bench(*SMALL, "--concurrency", "2", "--requests", "24", "--output-tokens", "8", results=results)
        run_dir = wait_for_measured(results, 6 + 2 * attempt, proc)  # 18 down to 10 requests left to fail fast
        engine_pid = json.loads((run_dir / "manifest.json").read_text())["engine"]["pid"]
        os.kill(engine_pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert proc.returncode == 3, (attempt, err)
        assert manifest["status"] == "incomplete" and manifest["exit_code"] == 3, manifest["incomplete_reason"]
        assert f"engine process {engine_pid}" in manifest["incomplete_reason"]
        assert manifest["engine"]["exit_code"] == -9
        assert not engine_processes(run_dir)


@pytest.mark.parametrize("how", ["engine killed", "SIGINT to bench", "SIGTERM to bench"])
def test_interrupted_run_keeps_finished_requests_and_leaves_no_engine(tmp_path, how):
    proc = start_bench(*SMALL, "--concurrency", "2", "--requests", "400", results=tmp_path)
    run_dir = wait_for_measured(tmp_path, 3, proc)
    engine_pid = json.loads((run_dir / "manifest.json").read_text())["engine"]["pid"]
    if how == "engine killed":
        import os

        os.kill(engine_pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGINT if "SIGINT" in how else signal.SIGTERM)
    out, err = proc.communicate(timeout=60)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"
    if how == "engine killed":
        assert proc.returncode == 3, err
        assert f"engine process {engine_pid} exited with code -9" in manifest["incomplete_reason"]
        assert f"run incomplete: engine process {engine_pid}" in err and "Traceback" not in err
    else:
        assert proc.returncode == 130, err
        assert how.split()[0] in manifest["incomplete_reason"] and "Traceback" not in err
        in_flight = [r for r in read_records(run_dir) if r["status"] == "cancelled"]
        assert in_flight and all(r["error"].startswith("cancelled in flight: interrupted by SIG") for r in in_flight)
    records = read_records(run_dir)
    ok = [r for r in records if r["phase"] == "measured" and r["status"] == "ok"]
    assert len(ok) >= 3 and len(records) < 402
    assert json.loads((run_dir / "summary.json").read_text())["requests"]["successful"] == len(ok)
    reads = manifest["client_reads"]  # how the client read the run's sockets: kept however the run ended
    assert reads["read_path"] in ("compiled", "python", "asyncio transport")
    assert reads.get("reads", len(ok)) >= len(ok)  # every finished request's tokens came in counted reads
    assert not engine_processes(run_dir), "an engine process outlived the run"


def gguf_without_a_known_architecture(path: Path) -> Path:
    """A well-formed GGUF (version 3, no tensors) whose architecture llama.cpp does not know."""
    import struct

    key, value = b"general.architecture", b"no-such-architecture"
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    return path


def test_engine_that_cannot_load_the_model_fails_with_its_log(tmp_path):
    bogus = gguf_without_a_known_architecture(tmp_path / "bogus.gguf")
    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"models:\n  bogus:\n    format: gguf\n    api: completions\n    source: {{path: {bogus}}}\n")
    results = tmp_path / "results"
    done = run_bench("run", "--engine", "llamacpp", "--model", "bogus", "--catalog", str(catalog), results=results)
    assert done.returncode == 3, done.stderr
    assert "exited with code" in done.stderr and "before it was ready" in done.stderr
    assert "engine.log, last lines:" in done.stderr and "Traceback" not in done.stderr
    run_dir = only_run_dir(results)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "before it was ready" in manifest["incomplete_reason"]  # nothing measured
    assert not engine_processes(run_dir)


@needs_llama_cpp_python
def test_llama_cpp_python_is_held_to_one_stream_and_counted_by_tokenizer(tmp_path):
    refused = run_bench(*SMALL, "--launcher", "llama-cpp-python", "--concurrency", "2", results=tmp_path)
    assert refused.returncode == 2 and "one request at a time" in refused.stderr
    assert not any(tmp_path.iterdir())

    done = run_bench(
        *SMALL, "--launcher", "llama-cpp-python", "--concurrency", "1", "--requests", "3", results=tmp_path
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["engine"]["limits"]["serializes_requests"] is True
    assert "--interrupt_requests" in manifest["engine"]["argv"]
    for r in read_records(run_dir):
        assert r["status"] == "ok" and r["tokens_source"] == "tokenizer"
        # one token per streamed chunk here, so the tokenizer's count (BOS excluded) must equal the chunks
        assert r["output_tokens"] == len(r["output_times_ns"]) > 0
        assert r["prompt_tokens"] == r["prompt_tokens_expected"]
    assert max_overlap(read_records(run_dir)) == 1


def test_a_prompt_file_sizes_the_context_for_its_longest_prompt_or_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    long_prompt = "word " * 1500  # about 1,500 tokens: more than a default 512-token slot holds
    rows = [{"prompt": "The capital of France is"}, {"prompt": long_prompt}, {"prompt": "Once upon a time"}]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    flags = ["--prompts", str(prompts), "--output-tokens", "8", "--concurrency", "1", "--warmup", "0"]
    done = run_bench(*RUN_GEMMA, *flags, "--requests", "6", results=tmp_path / "r")
    assert done.returncode == 0, done.stderr
    records = read_records(only_run_dir(tmp_path / "r"))
    assert [r["status"] for r in records] == ["ok"] * 6  # file order, wrapped around; the long one fits
    assert records[1]["prompt_tokens"] > 1400

    refused = run_bench(*RUN_GEMMA, *flags, "--ctx-size", "512", results=tmp_path / "small")
    assert refused.returncode == 2 and "--ctx-size 512" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "small").exists() or not any((tmp_path / "small").iterdir())


def test_duration_stops_sending(tmp_path):
    done = run_bench(*SMALL, "--concurrency", "2", "--requests", "1000", "--duration", "3", results=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [r for r in read_records(only_run_dir(tmp_path)) if r["phase"] == "measured"]
    assert 2 <= len(records) < 1000
    first_send = min(r["t_send_ns"] for r in records)
    # nothing new was sent after 3 s; the deadline is checked before t_send is stamped, so a send let through
    # just in time may be stamped a preemption later: 0.1 s of slack, well under one request (0.5-1.2 s here)
    assert max(r["t_send_ns"] for r in records) - first_send < 3e9 + 0.1e9
    # and the stage ran to its deadline: a stream stops only once a request of its own ends past 3 s
    assert max(r["t_end_ns"] for r in records) - first_send >= 2.95e9


def test_three_stage_sweep_finds_the_max_slo_compliant_throughput(tmp_path):
    done = run_bench(
        *SMALL,
        "--sweep",
        "1",
        "--max-concurrency",
        "2",
        "--requests",
        "6",
        "--slo",
        "ttft=20s,tpot=5s",
        "--arrival",
        "constant",
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [s["name"] for s in stages][:2] == ["synchronous", "throughput"] and len(stages) == 3
    assert stages[2]["kind"] == "open-loop" and stages[2]["warmup_requests"] == 0

    summary = json.loads((run_dir / "summary.json").read_text())
    per_stage = summary["stages"]
    assert [s["requests"]["successful"] for s in per_stage] == [6, 6, 6]
    low, high = sorted(s["request_throughput_per_s"] for s in per_stage[:2])
    assert low < stages[2]["schedule"]["rate"] < high  # the swept rate lies between the two probes
    records = read_records(run_dir)
    open_loop = [r for r in records if r["stage"] == 2]
    assert open_loop and all("t_intended_ns" in r for r in open_loop)
    assert all(r["t_send_ns"] >= r["t_intended_ns"] for r in open_loop)  # never sent before its time
    assert "client_queue_ms" in per_stage[2] and per_stage[2]["ci95"]["ttft_p50_ms"]
    best = summary["slo"]["max_slo_compliant"]
    assert best is not None and best["request_throughput_per_s"] == max(
        s["request_throughput_per_s"] for s in per_stage
    )
    assert same_figures(analyse(RunDirectory(run_dir)).summary.to_json(), summary)
    assert "Max SLO-compliant throughput" in done.stdout


@needs_llama_server
def test_llama_server_binary_launcher(tmp_path):
    done = run_bench(*SMALL, "--llama-server", LLAMA_SERVER, "--concurrency", "2", "--requests", "4", results=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    engine = json.loads((run_dir / "manifest.json").read_text())["engine"]
    assert engine["launcher"] == "llama-server" and engine["argv"][0] == str(Path(LLAMA_SERVER).resolve())
    assert "version" in engine["version"]["llama_server_version"] and engine["version"]["total_slots"] == 2
    records = read_records(run_dir)
    assert all(r["status"] == "ok" and r["tokens_source"] == "usage" and r["output_tokens"] == 16 for r in records)
    assert not engine_processes(run_dir)


def test_shared_prefixes_hit_the_prefix_cache_and_conversations_grow(tmp_path):
    done = run_bench(
        *RUN_GEMMA,
        "--prefix-count",
        "2",
        "--prefix-tokens",
        "48",
        "--input-tokens",
        "64",
        "--output-tokens",
        "4",
        "--concurrency",
        "2",
        "--requests",
        "6",
        "--engine-arg",
        "swa_full=true",
        results=tmp_path / "prefix",
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path / "prefix")
    measured = [r for r in read_records(run_dir) if r["phase"] == "measured"]
    assert all(r["cached_prompt_tokens"] >= 40 for r in measured)  # the 48-token prefix came from cache
    assert json.loads((run_dir / "summary.json").read_text())["prefix_cache_hit_rate"] > 0.6

    done = run_bench(
        *RUN_GEMMA,
        "--turns",
        "3",
        "--input-tokens",
        "16",
        "--output-tokens",
        "8",
        "--concurrency",
        "2",
        "--requests",
        "2",
        "--warmup",
        "0",
        results=tmp_path / "turns",
    )
    assert done.returncode == 0, done.stderr
    turns_dir = only_run_dir(tmp_path / "turns")
    records = read_records(turns_dir)
    # two conversations of three turns; a turn that fails ends its conversation, so say which and why
    outcomes = [(r["conversation"], r["turn"], r["status"], r.get("error")) for r in records]
    engine_log = (turns_dir / "engine.log").read_text(errors="replace")[-3000:]
    assert len(records) == 6, f"{outcomes}\nengine.log ends:\n{engine_log}"
    for conversation in {r["conversation"] for r in records}:
        turns = sorted((r for r in records if r["conversation"] == conversation), key=lambda r: r["turn"])
        prompts = [r["prompt_tokens"] for r in turns]
        assert [r["turn"] for r in turns] == [0, 1, 2] and prompts[0] < prompts[1] < prompts[2]
        assert prompts[1] >= prompts[0] + 8  # the second turn holds the first prompt and its 8-token answer
