"""Traces replayed on the real llama.cpp server: intended send times from the trace, Mooncake's hash ids as
shared prefixes that the prefix cache serves, the Azure format's lengths."""

import json
from pathlib import Path

import pytest

from .conftest import RUN_GEMMA, needs_xllamacpp, only_run_dir, read_records, run_bench

pytestmark = [pytest.mark.integration, needs_xllamacpp]
TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def replay(name, results, *flags):
    done = run_bench(*RUN_GEMMA, "--trace", str(TRACES / name), "--trace-speed", "4", *flags, results=results)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(results)
    return run_dir, json.loads((run_dir / "manifest.json").read_text()), read_records(run_dir), done


def test_a_mooncake_trace_keeps_its_times_and_its_shared_prefixes(tmp_path):
    rows = [json.loads(line) for line in (TRACES / "mooncake.jsonl").read_text().splitlines()]
    run_dir, manifest, records, done = replay("mooncake.jsonl", tmp_path, "--trace-block-tokens", "16")
    assert manifest["workload"]["kind"] == "trace" and manifest["workload"]["trace"]["format"] == "mooncake"
    assert len(records) == len(rows) == 24 and all(r["status"] == "ok" and r["phase"] == "measured" for r in records)
    intended = sorted(r["t_intended_ns"] for r in records)
    expected = [(row["timestamp"] - rows[0]["timestamp"]) / 4 / 1000 for row in rows]  # ms, four times as fast
    assert [(t - intended[0]) / 1e9 for t in intended] == pytest.approx(expected, abs=1e-6)
    assert all(r["t_send_ns"] >= r["t_intended_ns"] for r in records)
    by_order = sorted(records, key=lambda r: r["t_intended_ns"])
    assert [r["output_tokens"] for r in by_order] == [row["output_length"] for row in rows]
    # the two recurring 16-token blocks open most prompts: the prefix cache serves them after their first use
    assert sum(r["cached_prompt_tokens"] or 0 for r in records) >= 16 * 12
    assert manifest["engine"]["swa_full"]["on"] is True  # Gemma 3 reuses prefixes only with it: set for the trace
    assert "client queue (ms)" in done.stdout and "TTFT from intended" in done.stdout
    # the report draws the replay over time: arrivals as the trace sent them, each request's latency from its
    # intended send (the timeline is the records', in the trace's order); a run that is not a trace has none
    from bench.report import _run_view
    from bench.results import RunDirectory

    line = _run_view(RunDirectory(run_dir))["timeline"]
    assert line["t_s"] == pytest.approx([e - expected[0] for e in expected], abs=1e-6) and all(line["ok"])
    assert line["ttft_ms"] == pytest.approx([(r["output_times_ns"][0] - r["t_intended_ns"]) / 1e6 for r in by_order])
    out = tmp_path / "report"
    built = run_bench("report", str(run_dir), "--hardware-offer", "cpu-2-core-vm", "--out", str(out), results=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (out / "plots" / "trace.png").stat().st_size > 10_000 and "plots/trace.png" in (
        out / "report.md"
    ).read_text()


def test_an_azure_trace_gives_its_lengths_and_a_window_takes_a_slice(tmp_path):
    run_dir, manifest, records, _ = replay("azure.csv", tmp_path, "--trace-window", "0:4")
    trace = manifest["workload"]["trace"]
    assert trace["format"] == "azure" and trace["window"] == "0:4" and 0 < trace["requests"] < 24
    assert len(records) == trace["requests"] and all(r["status"] == "ok" for r in records)
    lines = (TRACES / "azure.csv").read_text().splitlines()[1:]
    first = [line.split(",") for line in lines[: len(records)]]
    by_order = sorted(records, key=lambda r: r["t_intended_ns"])
    assert [r["output_tokens"] for r in by_order] == [int(row[2]) for row in first]
    assert [r["prompt_tokens"] for r in by_order] == [int(row[1]) for row in first]  # fitted by the model's tokenizer
