"""Typed records: they round-trip, validate against the shipped JSON Schemas, and version-1 files still load."""

import jsonschema
import orjson
import pytest

from bench.records import Manifest, RequestRecord, TelemetrySample
from bench.schemas import main as schemas_main
from bench.schemas import schema
from bench.summary import RunSummary


def test_the_shipped_schemas_are_current():
    assert schemas_main(["--check"]) == 0


def test_records_as_written_validate_against_their_schemas():
    record = RequestRecord(
        request_id=7,
        phase="warmup",
        status="error",
        error="HTTP 500: x",
        t_send_ns=1,
        t_end_ns=2,
        output_times_ns=[1, 2],
        cut=True,
        server_timings={"predicted_n": 2},
    )
    row = orjson.loads(orjson.dumps(record))
    jsonschema.validate(row, schema("request-record"))
    assert RequestRecord.from_row(row) == record
    sample = TelemetrySample.from_row({"t_ns": 5, "gpus": [{"index": 0, "power_w": 300.0}], "engine_gauges": {"a": 1}})
    jsonschema.validate(orjson.loads(orjson.dumps(sample)), schema("telemetry-sample"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**row, "phase": "preheat"}, schema("request-record"))


def test_a_record_from_an_older_or_newer_writer_keeps_what_it_knows():
    row = {"request_id": 1, "status": "ok", "t_send_ns": 0, "t_end_ns": 5, "a_future_field": True}
    assert RequestRecord.from_row(row).phase == "measured"  # written without a phase: measured, for every reader


VERSION_1_MANIFEST = {
    "schema_version": 1,
    "run_id": "old",
    "status": "complete",
    "incomplete_reason": None,
    "started_at": "2026-11-20T10:00:00.000+00:00",
    "ended_at": "2026-11-20T10:02:00.000+00:00",
    "command": ["bench", "run"],
    "model": {
        "name": "gemma3-270m",
        "catalog": "models.yaml",
        "entry": None,
        "file": {"sha256": "ab", "size_bytes": 1},
    },
    "engine": {"engine": "llamacpp", "launcher": "xllamacpp", "pid": 4, "exit_code": 0},
    "clock": {"anchor_perf_counter_ns": 1, "anchor_unix_ns": 2, "note": "n"},
    "hardware": {"cpu_model": "cpu", "gpus": [], "gpu_note": "none"},
    "software": {"python": "3.11"},
    "calibration": None,
    "spec": {
        "engine": "llamacpp",
        "model": "gemma3-270m",
        "api": "completions",
        "plan": "stages",
        "sweep_rates": 0,
        "workload": {
            "kind": "synthetic",
            "input_tokens": "128",
            "output_tokens": "64",
            "prefix_count": 0,
            "prefix_tokens": 0,
            "turns": 1,
        },
        "ignore_eos": True,
        "busy_poll": False,
        "seed": 3,
        "temperature": 0.0,
        "request_timeout_s": 600.0,
        "slo": {"thresholds_ms": {"ttft": 500.0}, "percentile": 90.0},
        "efficiency_inputs": {"model_shape": None, "hardware_limits": None, "notes": []},
        "stages": [
            {
                "index": 0,
                "name": "c4",
                "kind": "closed-loop",
                "label": "concurrency 4",
                "schedule": {"concurrency": 4},
                "requests": 64,
                "warmup_requests": 4,
                "outcome": {"stop_reason": None, "sent": {"measured": 64}},
            }
        ],
    },
}


def test_a_version_1_manifest_loads_with_its_fields_in_place():
    manifest = Manifest.load(VERSION_1_MANIFEST)
    assert manifest.spec is None and manifest.schema_version == 1
    assert manifest.stages[0].label == "concurrency 4" and manifest.stages[0].outcome.sent == {"measured": 64}
    assert manifest.slo.thresholds_ms == {"ttft": 500.0} and manifest.slo.percentile == 90.0
    assert manifest.workload.kind == "synthetic" and manifest.seed == 3 and manifest.engine_kind == "llamacpp"
    jsonschema.validate(manifest.to_json(), schema("manifest"))


def test_a_version_1_summary_names_its_slo_value_by_the_percentile():
    raw = {
        "stages": [
            {
                "stage": 0,
                "slo": {
                    "percentile": 90.0,
                    "requests_judged": 3,
                    "compliant": True,
                    "by_metric": {"ttft": {"threshold_ms": 500.0, "p90": 420.0}},
                },
            }
        ]
    }
    summary = RunSummary.load(raw)
    assert summary.stages[0].slo.by_metric["ttft"].at_percentile == 420.0
