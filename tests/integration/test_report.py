"""`bench report` on a real CPU run: its numbers are the cost formulas applied to the run's summary.json,
its HTML is self-contained, and a real headless Chromium renders its plots."""

import base64
import io
import json
import math
import re
import shutil
import subprocess

import pytest
import yaml
from PIL import Image

from bench.catalog import load_catalog
from bench.format import money

from .conftest import REPO, RUN_GEMMA, needs_xllamacpp, only_run_dir, run_bench

pytestmark = [pytest.mark.integration, needs_xllamacpp]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOURLY = 0.05  # models.yaml: cpu-2-core-vm rents at $0.05 an hour
UTILIZATION, VOLUME = 0.4, 300_000
HOURS_PER_MONTH, SECONDS_PER_MONTH = 730, 730 * 3600


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    done = run_bench(
        *RUN_GEMMA,
        "--concurrency",
        "1,2",
        "--requests",
        "6",
        "--input-tokens",
        "32",
        "--output-tokens",
        "16",
        "--slo",
        "ttft=10s",
        results=results,
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(results)
    out = results / "report"
    built = run_bench(
        "report",
        str(run_dir),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--utilization",
        str(UTILIZATION),
        "--tasks-per-month",
        str(VOLUME),
        "--today",
        "2026-12-01",
        "--out",
        str(out),
        results=results,
    )
    assert built.returncode == 0, built.stderr
    return run_dir, out


def test_report_numbers_follow_the_formulas_on_summary_json(report):
    """The priced stage is the max SLO-compliant one; $/attempt = $0.05 / (attempts/s x 3600 x 0.4) with
    attempts/s = (ok + failed) / window; $/successful task = $/task / (ok / finished); instances =
    ceil(300,000 / (attempts/s x 0.4 x 2,628,000)); the API's task = input x input price + output x output
    price (no cached share given: the API bills none cached); the monthly curve is the step function."""
    run_dir, out = report
    summary = json.loads((run_dir / "summary.json").read_text())
    data = json.loads((out / "report.json").read_text())
    priced_stage = summary["stages"][summary["slo"]["max_slo_compliant"]["stage"]]
    req = priced_stage["requests"]
    finished = req["successful"] + req["failed"]
    attempts = finished / priced_stage["window_s"]
    out_tps, total_tps = (
        priced_stage["output_throughput_tokens_per_s"],
        priced_stage["total_token_throughput_tokens_per_s"],
    )
    (run,) = data["runs"]
    (sh,) = data["cost"]["self_hosted"]
    assert run["priced"]["stage"] == priced_stage["stage"] and run["cost"]["name"] == sh["name"]
    assert sh["per_attempt"] == pytest.approx(HOURLY / (attempts * 3600 * UTILIZATION))
    assert sh["per_successful_task"] == pytest.approx(sh["per_task"] / (req["successful"] / finished))
    assert sh["per_1m_output_tokens"] == pytest.approx(HOURLY / (out_tps * 3600 * UTILIZATION) * 1e6)
    assert sh["per_1m_total_tokens"] == pytest.approx(HOURLY / (total_tps * 3600 * UTILIZATION) * 1e6)
    capacity = attempts * UTILIZATION * SECONDS_PER_MONTH
    assert sh["instances"] == max(1, math.ceil(VOLUME / capacity))
    assert sh["monthly"] == pytest.approx(sh["instances"] * HOURLY * HOURS_PER_MONTH)

    catalog, _ = load_catalog(None)
    # every generation offer; the embedding offers price embeddings runs (tests/integration/test_embeddings.py)
    chat_offers = {n: o for n, o in catalog.api_offers.items() if o.mode == "chat"}
    assert {a["name"] for a in data["cost"]["apis"]} == set(chat_offers)
    assert len(chat_offers) < len(catalog.api_offers)
    i, o = priced_stage["prompt_tokens"]["mean"], priced_stage["output_tokens"]["mean"]
    # at least one break-even exists (the dearer offers cost more a month at this volume than one instance),
    # so the checks below are not all of a figure that is never there
    assert any(api["break_even"][0]["tasks_per_month"] is not None for api in data["cost"]["apis"])
    for api in data["cost"]["apis"]:
        offer = catalog.api_offers[api["name"]]
        expected = (i * offer.input_per_1m + o * offer.output_per_1m) / 1e6
        assert api["per_task"] == pytest.approx(expected) and api["monthly"] == pytest.approx(expected * VOLUME)
        point = HOURLY * 730 / expected
        assert api["break_even"][0]["tasks_per_month"] == (pytest.approx(point) if point <= capacity else None)
    for v, monthly in zip(data["volumes"], run["monthly_curve"], strict=True):
        steps = max(1, math.ceil(v / capacity - 1e-12))
        assert monthly == pytest.approx(steps * HOURLY * HOURS_PER_MONTH)

    text = (out / "report.md").read_text()
    assert text.index("## Answer") < text.index("## Task and workflow") < text.index("## Self-hosted cost, itemised")
    assert text.index("## Answer") == text.index("## ")  # the answer comes first
    answer = text[text.index("## Answer") : text.index("## Task and workflow")]
    for phrase in ("Cheapest per successful task", "Break-even", "What would flip it", "Assumptions, not measurements"):
        assert phrase in answer
    deprecated = [
        n for n, o in catalog.api_offers.items() if o.deprecation and o.deprecation.isoformat() <= "2026-12-01"
    ]
    for name in deprecated:  # flagged, and never the answer
        assert f"Cheapest per successful task: API {name}," not in answer and f"{name} (deprecated on" in answer
    for figure in (money(sh["per_attempt"]), money(sh["per_1m_output_tokens"]), "concurrency 2", f"{attempts:.4g}"):
        assert figure in text
    for name, offer in [*chat_offers.items(), ("cpu-2-core-vm", catalog.hardware_offers["cpu-2-core-vm"])]:
        as_of = offer.as_of.isoformat() if offer.as_of else "unknown"
        assert re.search(rf"\| {re.escape(name)} \|.*\| {re.escape(offer.source)}.*\| {re.escape(as_of)} \|", text)
    assert "older than 90 days: stale" in text and "STALE" in text


def test_html_is_self_contained_with_four_valid_plots(report):
    _, out = report
    page = (out / "report.html").read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page) and "<script" not in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 4
    for encoded, name in zip(
        images, ("cost_per_successful_task", "monthly_cost", "latency_throughput", "telemetry"), strict=True
    ):
        png = base64.b64decode(encoded)
        assert png == (out / "plots" / f"{name}.png").read_bytes()
        width, height = Image.open(io.BytesIO(png)).size
        assert width > 600 and height > 200


@pytest.mark.skipif(not CHROMIUM, reason="no chromium: apt-get install chromium (scripts/test.sh does this as root)")
def test_headless_chromium_renders_the_plots(report, tmp_path):
    _, out = report
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-default-apps",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,8000",
            (out / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = Image.open(shot).convert("RGB")
    colors = pixels.getcolors(maxcolors=1 << 24)

    def near(target, tolerance=40):
        return sum(n for n, c in colors if all(abs(a - b) <= tolerance for a, b in zip(c, target, strict=True)))

    # the page's own text and tables are grey on white; these saturated colours come only from the plots:
    # the self-hosted bar (matplotlib tab:blue) and the API bars (tab:orange) of the cost chart
    assert near((31, 119, 180)) > 2000, "no plot lines or bars were drawn"
    assert near((255, 127, 14)) > 2000, "the API cost bars were not drawn"
    assert near((255, 255, 255)) < 0.95 * pixels.width * pixels.height  # not a blank page


def test_every_stage_is_priced_and_no_api_offers_is_stated(report, tmp_path):
    run_dir, _ = report
    raw = yaml.safe_load((REPO / "models.yaml").read_text())
    del raw["api_offers"], raw["candidates"]  # candidates name API offers; no prices.yaml sits beside this copy
    catalog = tmp_path / "models.yaml"
    catalog.write_text(yaml.safe_dump(raw))
    out = tmp_path / "report"
    done = run_bench(
        "report",
        str(run_dir),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--catalog",
        str(catalog),
        "--out",
        str(out),
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "No API offers to compare with" in (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    (run,) = data["runs"]
    assert data["cost"]["apis"] == [] and data["cost"]["decision"]["winner"] == run["cost"]["name"]
    stages = json.loads((run_dir / "summary.json").read_text())["stages"]
    assert len(run["stage_costs"]) == len(stages) == 2
    for priced, stage in zip(run["stage_costs"], stages, strict=True):
        u = 0.5  # the default utilization; each stage at its own workload, over its successful requests
        assert priced["per_successful_request"] == pytest.approx(
            HOURLY / (stage["request_throughput_per_s"] * 3600 * u)
        )
        tps = stage["output_throughput_tokens_per_s"]
        assert priced["per_1m_output_tokens"] == pytest.approx(HOURLY / (tps * 3600 * u) * 1e6)


def test_several_runs_each_on_its_own_hardware_offer(report, tmp_path):
    run_dir, _ = report
    out = tmp_path / "two"
    done = run_bench(
        "report",
        str(run_dir),
        str(run_dir),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--hardware-offer",
        "l4-on-demand",
        "--out",
        str(out),
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    cpu, l4 = json.loads((out / "report.json").read_text())["runs"]
    assert (cpu["hardware_offer"], l4["hardware_offer"]) == ("cpu-2-core-vm", "l4-on-demand")
    # the same throughput priced at $0.80/h against $0.05/h
    assert l4["cost"]["per_attempt"] == pytest.approx(16 * cpu["cost"]["per_attempt"])
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 4
