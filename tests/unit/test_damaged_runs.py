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
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(bench_cli("export", str(empty), "-o", str(tmp_path / "x.csv")), "nothing written")
    assert not (tmp_path / "x.csv").exists()
