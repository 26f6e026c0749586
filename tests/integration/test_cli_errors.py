"""Bad input: one line naming what to fix, exit code 2, no traceback, nothing started or written."""

import socket

import pytest

from ..mounts import tmpfs
from .conftest import RUN_GEMMA, needs_xllamacpp, run_bench

RUN = [*RUN_GEMMA, "--requests", "1"]


def assert_usage_error(done, *fragments, results=None):
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    if results is not None:
        assert not results.exists() or not any(results.iterdir()), "bad input left a run directory"


def test_unknown_engine(tmp_path):
    done = run_bench("run", "--engine", "tgi", "--model", "gemma3-270m", results=tmp_path / "r")
    assert_usage_error(done, "--engine 'tgi' is not known", "llamacpp", results=tmp_path / "r")


def test_unknown_model(tmp_path):
    done = run_bench("run", "--engine", "llamacpp", "--model", "gpt-9", results=tmp_path / "r")
    assert_usage_error(done, "unknown model 'gpt-9'", "gemma3-270m", results=tmp_path / "r")


def test_invalid_catalog_field(tmp_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n  m:\n    format: gguf\n    api: chatty\n    source: {path: m.gguf}\n")
    done = run_bench("run", "--engine", "llamacpp", "--model", "m", "--catalog", str(catalog), results=tmp_path / "r")
    assert_usage_error(done, str(catalog), "entry 'm', field 'api'", results=tmp_path / "r")


def test_missing_model_file(tmp_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n  m:\n    format: gguf\n    api: completions\n    source: {path: gone.gguf}\n")
    done = run_bench("run", "--engine", "llamacpp", "--model", "m", "--catalog", str(catalog), results=tmp_path / "r")
    assert_usage_error(done, "gone.gguf", "does not exist", "models.m.source.path", results=tmp_path / "r")


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--concurrency", "0", "--concurrency 0: Input should be greater than 0"),
        ("--output-tokens", "x", "--output-tokens x: 'x': give N, uniform:MIN:MAX or normal:MEAN:STD"),
        ("--launcher", "ollama", "argument --launcher: invalid choice: 'ollama'"),
        ("--rate", "nan", "--rate nan: Input should be a finite number"),
        ("--port", "70000", "--port 70000: Input should be less than or equal to 65535"),
        ("--run-id", "../escaped-run", "a run id is a folder name"),
        ("--output-tokens", "40000", "more than model gemma3-270m's 32,768-token context"),
    ],
)
def test_bad_flag_values(tmp_path, flag, value, fragment):
    assert_usage_error(run_bench(*RUN, flag, value, results=tmp_path / "r"), fragment, results=tmp_path / "r")


@needs_xllamacpp
def test_busy_port_given_explicitly(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_bench(*RUN, "--port", str(port), results=tmp_path / "r")
    assert_usage_error(done, f"--port {port}", "already in use", results=tmp_path / "r")


def test_report_and_cost_input_errors_are_one_line(tmp_path):
    missing = tmp_path / "no-such-run"
    done = run_bench("report", str(missing), "--hardware-offer", "cpu-2-core-vm", results=tmp_path)
    assert_usage_error(done, "no-such-run", "is this a run directory")
    offers = ["--hardware-offer", "cpu-2-core-vm", "--hardware-offer", "l4-on-demand"] * 2
    done = run_bench("report", str(missing), str(missing), *offers[:6], results=tmp_path)
    assert_usage_error(done, "once per run (2), not 3 times")
    done = run_bench(
        "cost", str(missing), "--hardware-offer", "cpu-2-core-vm", "--utilization", "1.5", results=tmp_path
    )
    assert_usage_error(done, "--utilization 1.5", "between 0 and 1")
    assert not (tmp_path / "report").exists()


def test_undated_price_names_the_entry_and_field(tmp_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models: {}\nhardware_offers:\n  box: {rented: {per_hour: 1.0}, source: a quote}\n")
    done = run_bench("cost", str(tmp_path), "--hardware-offer", "box", "--catalog", str(catalog), results=tmp_path)
    assert_usage_error(done, str(catalog), "entry 'box', field 'as_of'")


def test_golden_input_errors_start_nothing(tmp_path):
    results = tmp_path / "r"
    done = run_bench("eval", *RUN_GEMMA[1:], results=results)
    assert_usage_error(done, "bench eval needs --golden FILE", results=results)
    bad = tmp_path / "set.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "checks": [{"type": "number"}]}\n')
    done = run_bench("eval", *RUN_GEMMA[1:], "--golden", str(bad), results=results)
    assert_usage_error(done, f"{bad}, line 1 (case 'a'): field 'checks.0.number.value'", results=results)
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "prompt": "p", "checks": [{"type": "exact", "value": "x"}]}\n')
    done = run_bench("eval", *RUN_GEMMA[1:], "--golden", str(good), "--temperature", "0.7", results=results)
    assert_usage_error(done, "a golden set runs with fixed decoding; leave out --temperature 0.7", results=results)


def test_a_results_folder_that_is_a_file_or_read_only_starts_nothing(tmp_path):
    """Checked before the engine starts: a file where the folder should be, and (as root, which CI is) a
    read-only file system, each one line naming --results-dir and what to do, exit 2."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert_usage_error(run_bench(*RUN, results=a_file), f"--results-dir {a_file}", "is a file, not a folder")
    with tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        done = run_bench(*RUN, results=read_only / "results")
        assert_usage_error(done, f"--results-dir {read_only / 'results'}", "Read-only file system", "writable")
