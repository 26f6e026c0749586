"""A damaged run directory (a file gone, a field missing or of the wrong type, a row that is no record) is a
one-line error naming the file, exit 2: never a traceback, a gate that passes on nothing, or a summary
recomputed from nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_check import golden_run

REPO = Path(__file__).resolve().parents[2]
CASES = [{"id": f"c{i}", "prompt": f"q{i}", "checks": [{"type": "contains", "value": "y"}]} for i in range(4)]


def bench_cli(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture
def runs(tmp_path):
    answers = {c["id"]: "y" for c in CASES}
    return golden_run(tmp_path, "base", CASES, answers), golden_run(tmp_path, "run", CASES, answers)


def one_line_error(done, *fragments):
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_a_run_without_its_records_neither_passes_the_gate_nor_replaces_its_summary(runs):
    base, run = runs
    assert bench_cli("check", str(run), "--baseline", str(base)).returncode == 0  # whole, it passes
    (run / "requests.jsonl").unlink()
    before = (run / "summary.json").read_bytes()
    one_line_error(bench_cli("check", str(run), "--baseline", str(base)), "requests.jsonl: missing")
    one_line_error(bench_cli("check", str(base), "--baseline", str(run)), "requests.jsonl: missing")
    one_line_error(bench_cli("summarize", str(run), "--write"), "requests.jsonl: missing")
    assert (run / "summary.json").read_bytes() == before


def test_a_manifest_field_missing_or_mistyped_is_named(runs):
    _, run = runs
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "run_id"}))
    one_line_error(bench_cli("summarize", str(run)), "manifest.json: field 'run_id': Field required")
    path.write_text(json.dumps({**manifest, "seed": "abc"}))
    one_line_error(bench_cli("summarize", str(run)), "manifest.json: field 'seed'")
    path.write_text(json.dumps({**manifest, "schema_version": "two"}))
    one_line_error(bench_cli("summarize", str(run)), "manifest.json: not of the shape this version reads")


def test_a_row_that_is_no_record_or_has_a_mistyped_field_is_named(runs):
    _, run = runs
    path = run / "requests.jsonl"
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], "[1, 2]", *rows[1:]]) + "\n")
    one_line_error(bench_cli("summarize", str(run)), "requests.jsonl: line 2 is not a JSON object")
    second = json.loads(rows[1]) | {"t_send_ns": "abc"}
    path.write_text("\n".join([rows[0], json.dumps(second), *rows[2:]]) + "\n")
    one_line_error(bench_cli("summarize", str(run)), "requests.jsonl, record 2: a field is not of its type")


def test_an_output_path_that_is_a_folder_or_under_a_file_is_a_flag_error_before_any_work(runs, tmp_path):
    base, run = runs
    folder, afile = tmp_path / "folder", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("x")
    cases = [
        (["export", str(run), "-o", str(folder)], "is a folder; give a file's path"),
        (["report", str(run), "--hardware-offer", "cpu-2-core-vm", "--out", str(afile)], "is a file; give a folder"),
        (["compare", str(run), "--hardware-offer", "cpu-2-core-vm", "--out", str(folder)], "is a folder"),
        (["route", str(run), "--hardware-offer", "cpu-2-core-vm", "--out", str(afile / "r.md")], "is a file, not a"),
        (["check", str(run), "--baseline", str(base), "--junit", str(folder)], "is a folder; give a file's path"),
        (["summarize", str(run / "manifest.json")], "is a file, not a run directory"),
    ]
    for args, fragment in cases:
        one_line_error(bench_cli(*args), fragment)
    assert afile.read_text() == "x" and not list(folder.iterdir())


def test_a_damaged_run_is_listed_as_such_and_an_export_of_nothing_writes_nothing(runs, tmp_path):
    base, run = runs
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "run_id"}))
    listed = bench_cli("runs", str(run.parent))
    assert listed.returncode == 0, listed.stderr
    assert "base" in listed.stdout and "damaged:" in listed.stdout and "Traceback" not in listed.stderr
    (base / "summary.json").unlink()
    listed = bench_cli("runs", str(run.parent))
    assert "complete; no summary.json (bench summarize RUN --write)" in listed.stdout, listed.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(bench_cli("export", str(empty), "-o", str(tmp_path / "x.csv")), "nothing written")
    assert not (tmp_path / "x.csv").exists()


def test_a_golden_run_without_its_verdicts_is_no_quality_pass(runs):
    base, run = runs
    (run / "eval.json").unlink()
    one_line_error(bench_cli("check", str(run), "--baseline", str(base)), "eval.json missing", "--write")
    one_line_error(bench_cli("check", str(base), "--baseline", str(run)), "eval.json missing")
    rewritten = bench_cli("summarize", str(run), "--write")
    assert rewritten.returncode == 0, rewritten.stderr
    assert bench_cli("check", str(run), "--baseline", str(base)).returncode == 0


def test_a_golden_run_without_its_verdicts_is_neither_routed_nor_decided_on(tmp_path):
    """route, compare and mdr price per successful task from the verdicts: without them, an error, not a run
    read as "not a golden run" or an MDR without its paired verdicts."""
    run = golden_run(tmp_path, "gemma", CASES, {c["id"]: "y" for c in CASES}, model="gemma3-270m")
    common = [str(run), "--hardware-offer", "cpu-2-core-vm"]
    commands = [
        ["route", *common, "--out", str(tmp_path / "route.md")],
        ["compare", *common, "--out", str(tmp_path / "compare.md")],
        ["mdr", *common, "--out", str(tmp_path / "mdr.md")],
    ]
    for args in commands:
        assert bench_cli(*args).returncode == 0, args  # whole, each runs
    (run / "eval.json").unlink()
    for args in commands:
        one_line_error(bench_cli(*args), f"{run}: eval.json missing", f"bench summarize {run} --write")
    assert bench_cli("summarize", str(run), "--write").returncode == 0
    assert all(bench_cli(*args).returncode == 0 for args in commands)  # verdicts written again, each runs


def write_rows(path: Path, *rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_damaged_telemetry_metrics_or_verdicts_file_is_named_with_its_line_and_field(runs):
    base, run = runs
    sample = {"t_ns": 5, "engine_cpu_percent": 10.0}
    damaged = [
        (
            "telemetry.jsonl",
            [sample, {"engine_cpu_percent": 3.0}],
            "telemetry.jsonl: line 2: field 't_ns': Field required",
        ),
        (
            "telemetry.jsonl",
            [{"t_ns": "abc"}],
            "telemetry.jsonl: line 1: field 't_ns': Input should be a valid integer",
        ),
        ("telemetry.jsonl", [{"t_ns": 1, "gpus": [{"x": 1}]}], "line 1: field 'gpus.0.index': Field required"),
        ("engine-metrics.jsonl", [{"stage": 0}], "engine-metrics.jsonl: line 1: field 'when': Field required"),
    ]
    for name, rows, fragment in damaged:
        write_rows(run / name, *rows)
        one_line_error(bench_cli("summarize", str(run)), fragment)
        if name == "telemetry.jsonl":  # check reads the samples (other processes' CPU); the metrics, summarize only
            one_line_error(bench_cli("check", str(run), "--baseline", str(base)), fragment)
        (run / name).unlink()
    evaluation = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({"summary": {}}))
    one_line_error(bench_cli("check", str(run), "--baseline", str(base)), "eval.json: field 'cases': Field required")
    case = {k: v for k, v in evaluation["cases"][0].items() if k != "passed"}
    (run / "eval.json").write_text(json.dumps({**evaluation, "cases": [case]}))
    one_line_error(bench_cli("check", str(run), "--baseline", str(base)), "eval.json: field 'cases.0.passed'")


def test_a_golden_record_without_its_id_is_named(runs):
    _, run = runs
    path = run / "requests.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[2]["request_id"]
    write_rows(path, *rows)
    one_line_error(bench_cli("summarize", str(run)), "requests.jsonl, record 3: field 'request_id': Field required")


def test_an_export_of_a_mistyped_record_is_the_error_summarize_gives(runs, tmp_path):
    _, run = runs
    path = run / "requests.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out = tmp_path / "requests.csv"
    for field, value in (("t_send_ns", "abc"), ("output_times_ns", 5), ("output_tokens", "x")):
        write_rows(path, *rows[:1], {**rows[1], field: value}, *rows[2:])
        summarized = bench_cli("summarize", str(run))
        one_line_error(summarized, "requests.jsonl, record 2: a field is not of its type")
        exported = bench_cli("export", str(run), "--table", "requests", "--format", "csv", "-o", str(out))
        one_line_error(exported, "requests.jsonl, record 2: a field is not of its type")
        assert not out.exists()


def test_summarize_write_replaces_a_damaged_summary(runs):
    base, run = runs
    (run / "summary.json").write_text('{"stages": "x"')
    one_line_error(bench_cli("check", str(run), "--baseline", str(base)), "summary.json: not valid JSON")
    shown = bench_cli("summarize", str(run))
    assert shown.returncode == 0 and "summary.json: damaged" in shown.stderr and "--write to replace" in shown.stderr
    written = bench_cli("summarize", str(run), "--write")
    assert written.returncode == 0 and "summary.json: damaged" in written.stderr and "replaced" in written.stderr
    assert bench_cli("summarize", str(run)).stderr.strip().endswith("summary.json: matches the recomputation")
    assert bench_cli("check", str(run), "--baseline", str(base)).returncode == 0


def test_a_golden_run_where_no_request_succeeded_is_one_line_in_every_pricing_command(tmp_path):
    run = golden_run(tmp_path, "gemma", CASES, {c["id"]: None for c in CASES}, model="gemma3-270m")
    common = [str(run), "--hardware-offer", "cpu-2-core-vm"]
    for command in ("compare", "mdr", "report", "cost"):
        out = [] if command == "cost" else ["--out", str(tmp_path / command)]
        one_line_error(bench_cli(command, *common, *out), f"{run}: the run measured no throughput")
    route = bench_cli("route", *common, "--out", str(tmp_path / "route.md"))
    one_line_error(route, "candidate gemma3-270m, tag (untagged): the run measured no throughput")
