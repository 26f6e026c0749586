"""bench route on golden runs of three candidates (built by bench.analysis from their records): each tag goes to
the cheapest candidate over the bar, and the routed mix's figures are the hand-worked blend of its parts."""

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.catalog import load_catalog
from bench.cost import PricingInputs, TaskProfile
from bench.errors import UsageError
from bench.metrics.stats import wilson_interval
from bench.route import route

from .test_check import golden_run

REPO = Path(__file__).resolve().parents[2]
TODAY = datetime.date(2026, 12, 1)
# 4 classification cases, 6 answers
CASES = [
    {
        "id": f"k{i}",
        "prompt": f"classify {i}",
        "tags": ["classify", "real"],
        "checks": [{"type": "contains", "value": "y"}],
    }
    for i in range(4)
] + [
    {"id": f"a{i}", "prompt": f"answer {i}", "tags": ["answer", "real"], "checks": [{"type": "contains", "value": "y"}]}
    for i in range(6)
]


def answers(classify_passed: int, answer_passed: int) -> dict[str, str]:
    out = {f"k{i}": "y" if i < classify_passed else "n" for i in range(4)}
    return out | {f"a{i}": "y" if i < answer_passed else "n" for i in range(6)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("route")
    raw = yaml.safe_load((REPO / "models.yaml").read_text())
    for name, (p_in, p_out) in {"big": (10.0, 30.0), "mid": (1.0, 2.0)}.items():
        raw["api_offers"][name] = {
            "provider": "P",
            "model": name,
            "input_per_1m": p_in,
            "output_per_1m": p_out,
            "source": "test",
            "as_of": "2026-11-30",
        }
        raw["candidates"][name] = {
            "api_offer": name,
            "served_name": f"{name}-model",
            "access": "api",
            "openness": "closed",
            "license": "L",
            "source": "test",
            "as_of": "2026-11-30",
        }
    catalog_path = root / "models.yaml"
    catalog_path.write_text(yaml.safe_dump(raw))
    runs = [
        golden_run(root, "gemma", CASES, answers(4, 1), model="gemma3-270m", prompt_tokens=100),
        golden_run(root, "big", CASES, answers(4, 6), model="big-model", prompt_tokens=100),
        golden_run(root, "mid", CASES, answers(3, 6), model="mid-model", prompt_tokens=100),
    ]
    return catalog_path, runs


def pricing():
    return PricingInputs(task=TaskProfile(None, None, tasks_per_month=1_000_000), today=TODAY)


def test_each_tag_goes_to_the_cheapest_candidate_over_the_bar(setup):
    """Every request reads 100 tokens and writes 2. big: 100 x $10/1M + 2 x $30/1M = $0.00106 a task; mid:
    100 x $1/1M + 2 x $2/1M = $0.000104. gemma3-270m self-hosted on cpu-2-core-vm ($0.05/h): its run sent 10
    requests 100 ms apart, each 61 ms long, so A = 10 / 0.961 s and a task costs 0.05 / (A x 3600 x 0.5).
    classify (4 cases): gemma 4/4 and big 4/4 pass the 90% bar, mid 3/4 does not: gemma, the cheapest.
    answer (6 cases): big and mid 6/6, gemma 1/6: mid. Routed: success 0.4 x 1 + 0.6 x 1 = 100%; $/task =
    0.4 x gemma's + 0.6 x $0.000104. Single models: gemma 5/10 (below the bar), big 10/10 at $0.00106, mid 9/10 at
    $0.000104 / 0.9 = $0.000116 per successful task: mid is the best single model."""
    catalog_path, runs = setup
    catalog, _ = load_catalog(catalog_path)
    r = route(runs, catalog, "cpu-2-core-vm", pricing(), 0.9, ["classify", "answer"])
    assert [(x["tag"], x["cases"], x["to"]) for x in r["routing"]] == [
        ("classify", 4, "gemma3-270m"),
        ("answer", 6, "mid"),
    ]
    gemma_task = 0.05 / ((10 / 0.961) * 3600 * 0.5)
    by = {(g["tag"], g["candidate"]): g for t in r["by_tag"].values() for g in t}
    assert by[("classify", "gemma3-270m")]["per_task"] == pytest.approx(gemma_task)
    assert by[("answer", "big")]["per_task"] == pytest.approx(0.00106)
    assert by[("answer", "mid")]["per_task"] == pytest.approx(0.000104)
    assert by[("classify", "mid")]["ci95"] == pytest.approx(wilson_interval(3, 4))
    routed = r["routed"]
    assert routed["success_rate"]["value"] == pytest.approx(1.0)
    assert routed["per_task"]["value"] == pytest.approx(0.4 * gemma_task + 0.6 * 0.000104)
    assert routed["per_successful_task"]["value"] == pytest.approx(0.4 * gemma_task + 0.6 * 0.000104)
    singles = {s["candidate"]: s for s in r["singles"]}
    assert singles["mid"]["per_successful_task"]["value"] == pytest.approx(0.000104 / 0.9)
    assert singles["gemma3-270m"]["success_rate"]["value"] == pytest.approx(0.5)
    assert r["best_single"]["candidate"] == "mid"
    expected_saving = 1 - (0.4 * gemma_task + 0.6 * 0.000104) / (0.000104 / 0.9)
    assert r["saving_per_successful_task"] == pytest.approx(expected_saving)
    # intervals: the routed success rate's lower end comes from the Wilson ends of 4/4 and 6/6
    low, high = routed["success_rate"]["ci95"]
    assert low < 1.0 and high == 1.0 and "success on classify (gemma3-270m)" in routed["success_rate"]["parts"]
    lo, hi = routed["per_successful_task"]["ci95"]
    assert lo <= routed["per_successful_task"]["value"] < hi  # every success is at its top: only higher ends


def test_default_tags_come_in_the_order_of_the_set_and_bad_input_is_refused(setup, tmp_path):
    catalog_path, runs = setup
    catalog, _ = load_catalog(catalog_path)
    r = route(runs, catalog, "cpu-2-core-vm", pricing(), 0.9)
    assert [x["tag"] for x in r["routing"]] == ["classify", "answer"]  # each case by the first tag it lists
    r = route(runs, catalog, "cpu-2-core-vm", pricing(), 0.9, ["real", "answer"])
    assert [(x["tag"], x["cases"], x["to"]) for x in r["routing"]] == [("real", 10, "mid")]  # real comes first
    with pytest.raises(UsageError, match="give --hardware-offer"):
        route(runs, catalog, None, pricing(), 0.9)
    with pytest.raises(UsageError, match="no case of the set carries it"):
        route(runs, catalog, "cpu-2-core-vm", pricing(), 0.9, ["extract"])
    other = golden_run(tmp_path, "other", CASES[:5], answers(4, 1), model="big-model")
    with pytest.raises(UsageError, match="different golden sets"):
        route([runs[0], other], catalog, "cpu-2-core-vm", pricing(), 0.9)


def test_a_failed_request_is_priced_at_the_successful_requests_tokens(setup, tmp_path):
    """mid's answer a0 fails (HTTP 500, no output tokens). Its answer tag is still priced at the tokens of the
    requests that succeeded, 100 in and 2 out: 100 x $1/1M + 2 x $2/1M = $0.000104 a task (a mean over all six,
    failure at 0 out, would be 100 x 1e-6 + 2 x 5/6 x 2e-6 = $0.0001033), and per successful task that over
    5/6."""
    catalog_path, runs = setup
    catalog, _ = load_catalog(catalog_path)
    mid = golden_run(tmp_path, "mid-failed", CASES, answers(3, 6) | {"a0": None}, model="mid-model", prompt_tokens=100)
    r = route([runs[0], runs[1], mid], catalog, "cpu-2-core-vm", pricing(), 0.5, ["answer"])
    got = {(g["tag"], g["candidate"]): g for t in r["by_tag"].values() for g in t}[("answer", "mid")]
    assert got["per_task"] == pytest.approx(0.000104)
    assert got["per_successful_task"] == pytest.approx(0.000104 / (5 / 6))


def test_bench_route_writes_the_table(setup, tmp_path):
    catalog_path, runs = setup
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "route",
            *map(str, runs),
            "--hardware-offer",
            "cpu-2-core-vm",
            "--catalog",
            str(catalog_path),
            "--min-success",
            "0.9",
            "--tag",
            "classify",
            "--tag",
            "answer",
            "--today",
            "2026-12-01",
            "--out",
            str(tmp_path / "route.md"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "route.md").read_text()
    assert "| classify | 4 (40%) | gemma3-270m | 4/4 100% (51%-100%) |" in text
    assert "| answer | 6 (60%) | mid | 6/6 100% (61%-100%) |" in text
    assert "mid (best single model)" in text and "The routed mix costs 45% less per successful task than mid" in text
    figures = json.loads((tmp_path / "route.json").read_text())
    assert figures["best_single"]["candidate"] == "mid" and "_section" not in json.dumps(figures)
