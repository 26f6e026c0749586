"""`bench calibrate` against its loopback instrument: the figures exist and are consistent."""

import json
import re

import pytest

from .conftest import RUN_GEMMA, needs_xllamacpp, only_run_dir, run_bench

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_calibration(tmp_path_factory):
    """Two stream counts of the latency shape (about 25 s), shared by this module's tests."""
    tmp_path = tmp_path_factory.mktemp("calibration")
    done = run_bench(
        "calibrate",
        "--shape",
        "latency",
        "--streams",
        "1,8",
        "--results-dir",
        str(tmp_path),
        "--run-id",
        "cal",
        results=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done, tmp_path / "cal" / "calibration.json"


def test_calibration_reports_small_client_error(small_calibration):
    done, path = small_calibration
    report = json.loads(path.read_text())
    (shape,) = report["shapes"]
    assert shape["ttft_ms"] == 50 and shape["gap_ms"] == 10 and shape["tokens"] == 64
    assert [level["streams"] for level in shape["levels"]] == [1, 8]
    for level in shape["levels"]:
        assert level["failed"] == 0 and level["judged"] == level["requests"] >= 32
        # every request was judged against the server's own write times; the client sees tokens after
        # they were written (up to the clock read's own granularity) and well within the 50 ms TTFT
        assert -0.1 < level["ttft_error_ms"]["p50"] < 50 and level["ttft_error_ms"]["max"] < 50
        assert abs(level["tpot_error_ms"]["p50"]) < 5
        assert level["output_tokens_per_s"] > 0
    assert "p99 TTFT error within 1 ms" in done.stdout
    assert re.search(r"latency +1 streams .* TTFT err p50", done.stderr)


@needs_xllamacpp
def test_a_run_carries_the_calibration_figures(small_calibration, tmp_path):
    _, calibration = small_calibration
    done = run_bench(
        *RUN_GEMMA,
        "--requests",
        "2",
        "--concurrency",
        "1",
        "--input-tokens",
        "16",
        "--output-tokens",
        "4",
        "--calibration",
        str(calibration),
        results=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((only_run_dir(tmp_path / "runs") / "manifest.json").read_text())
    levels = manifest["calibration"]["shapes"][0]["levels"]
    assert [lv["streams"] for lv in levels] == [1, 8] and "p99" in levels[0]["ttft_error_ms"]
