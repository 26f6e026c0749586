"""The MDR's choice: cheapest per successful task among candidates over the bar; retired ones never picked."""

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.catalog import load_catalog
from bench.decision import decide, read_inputs
from bench.errors import UsageError
from bench.format import money


def entry(name, rate=None, per_task=None, linear=False, deprecation=None):
    e = {"name": name, "candidate": {"deprecation": deprecation}, "meets_bar": rate is not None and rate >= 0.8}
    if per_task is not None:
        e["cost"] = {"per_task": per_task, "linear": linear}
        if rate:
            e["cost"]["per_successful_task"] = per_task / rate
    if rate is not None:
        e["quality"] = {"success_rate": rate}
    return e


TODAY = datetime.date(2026, 11, 24)


def test_cheapest_per_successful_task_over_the_bar_wins():
    cands = [
        entry("cheap-but-bad", 0.5, 0.001),
        entry("good", 0.9, 0.004),
        entry("better-value", 1.0, 0.0042),
        entry("api", None, 0.002, linear=True),
    ]
    default, fallback, how = decide({"candidates": cands}, None, TODAY)
    assert default["name"] == "better-value"  # 0.0042 / 1.0 < 0.004 / 0.9
    assert fallback["name"] == "good" and "lowest measured cost per successful task" in how


def test_no_candidate_over_the_bar_falls_back_to_the_cheapest_live_api():
    cands = [
        entry("small", 0.2, 0.001),
        entry("retired-api", None, 0.0001, linear=True, deprecation="2025-09-24"),
        entry("api", None, 0.002, linear=True),
    ]
    default, fallback, how = decide({"candidates": cands}, None, TODAY)
    assert default is None and fallback["name"] == "api" and "no candidate met the bar" in how


def test_choose_names_the_default_and_says_so():
    default, _, how = decide({"candidates": [entry("a", 0.9, 1.0), entry("b", 0.5, 0.1)]}, "b", TODAY)
    assert default["name"] == "b" and "chosen by hand" in how
    with pytest.raises(UsageError, match="--choose 'c' is not among the candidates"):
        decide({"candidates": [entry("a", 0.9, 1.0)]}, "c", TODAY)


def test_candidate_must_name_a_known_api_offer(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        "models: {}\ncandidates:\n  x: {api_offer: nope, access: api, openness: closed, license: L, "
        "source: s, as_of: 2026-01-01}\n"
    )
    with pytest.raises(UsageError, match="entry 'x', field 'api_offer': 'nope' is not in api_offers"):
        load_catalog(path)
    path.write_text("models: {}\ncandidates:\n  x: {access: api, openness: closed, license: L, source: s}\n")
    with pytest.raises(UsageError, match="entry 'x', field 'as_of'"):
        load_catalog(path)


def test_a_candidate_whose_api_offer_is_deprecated_is_never_picked():
    """The candidate itself names no deprecation, but its API offer was shut down on 2026-11-01: retired."""
    gone = entry("gone-api", None, 0.0001, linear=True)
    gone["cost"]["deprecation"] = {"deprecation": "2026-11-01", "deprecated": True}
    live = entry("api", None, 0.002, linear=True)
    _, fallback, _ = decide({"candidates": [entry("small", 0.2, 0.001), gone, live]}, None, TODAY)
    assert fallback["name"] == "api"


def test_month_dated_candidates_are_refused(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        "models: {}\ncandidates:\n  x: {model: null, access: api, openness: closed, license: L, source: s, "
        "as_of: '2024-10'}\n"
    )
    with pytest.raises(UsageError, match="entry 'x', field 'as_of': '2024-10' is not a date"):
        load_catalog(path)


# -- MDR review triggers that check themselves ----------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def bench_cli(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True)


def write_catalog(path, input_price=0.15, hourly=0.05, deprecation="2027-01-14", as_of="2026-11-20"):
    raw = yaml.safe_load((REPO / "models.yaml").read_text())
    offer = raw["api_offers"]["openai-gpt-4o-mini"]
    offer.update(input_per_1m=input_price, as_of=as_of, deprecation=deprecation)
    raw["hardware_offers"]["cpu-2-core-vm"]["rented"]["per_hour"] = hourly
    raw["hardware_offers"]["cpu-2-core-vm"]["as_of"] = as_of
    path.write_text(yaml.safe_dump(raw))
    return path


GOLDEN = [{"id": f"c{i}", "prompt": f"q{i}", "checks": [{"type": "contains", "value": "yes"}]} for i in range(10)]


@pytest.fixture(scope="module")
def mdr(tmp_path_factory):
    """An MDR of gemma3-270m (a golden run passing 10/10, 100 tokens in and 2 out a case) on cpu-2-core-vm against
    gpt-4o-mini, decided on 2026-12-01 with every price dated 2026-11-20."""
    from .test_check import golden_run

    root = tmp_path_factory.mktemp("mdr")
    run = golden_run(root, "gemma", GOLDEN, {c["id"]: "yes" for c in GOLDEN}, model="gemma3-270m", prompt_tokens=100)
    catalog = write_catalog(root / "models.yaml")
    out = root / "mdr.md"
    done = bench_cli(
        "mdr",
        str(run),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--catalog",
        str(catalog),
        "--today",
        "2026-12-01",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    return root, run, out


def check_mdr(root, out, *args, **catalog):
    catalog_path = write_catalog(root / "now.yaml", **catalog)
    return bench_cli("mdr", "--check", str(out), "--catalog", str(catalog_path), *args)


def fired(done) -> list[str]:
    return [line.split(" | ")[0].strip("| ") for line in done.stdout.splitlines() if " | FIRES | " in line]


def test_the_mdr_embeds_the_inputs_it_decided_on(mdr):
    _, _, out = mdr
    text = out.read_text()
    assert "Default: gemma3-270m" in text and "Fallback: openai-gpt-4o-mini" in text
    inputs = read_inputs(text, "mdr.md")
    gemma = next(c for c in inputs["candidates"] if c["name"] == "gemma3-270m")
    api = next(c for c in inputs["candidates"] if c["name"] == "openai-gpt-4o-mini")
    assert gemma["quality"]["passed"] == 10 and gemma["quality"]["verdicts"] == {f"c{i}": True for i in range(10)}
    assert gemma["price"] == {**gemma["price"], "kind": "hardware", "hourly": 0.05, "as_of": "2026-11-20"}
    assert gemma["throughput"]["requests_per_s"] == pytest.approx(10 / 0.961)
    # 100 input tokens at $0.15/1M + 2 output tokens at $0.60/1M
    assert api["price"]["attempt_cost"] == pytest.approx(100 * 0.15e-6 + 2 * 0.6e-6)
    assert api["price"]["as_of"] == "2026-11-20" and inputs["date"] == "2026-12-01"
    assert inputs["volume"]["tasks_per_month"] == 1_000_000 and inputs["volume"]["instances"] == 1
    # one instance serves 10/0.961 attempts/s at 50% of 2,628,000 s a month
    assert inputs["volume"]["capacity"] == pytest.approx(10 / 0.961 * 0.5 * 2_628_000)


def test_no_trigger_fires_while_nothing_changed(mdr):
    root, run, out = mdr
    done = check_mdr(root, out, "--today", "2026-12-01", "--volume", "1000000", "--runs", str(run))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no trigger fires" in done.stdout and not fired(done)


def test_a_price_change_past_the_threshold_fires(mdr):
    """gpt-4o-mini's input price doubles, $0.15 -> $0.30 per 1M: the task's attempt goes from 100 x 0.15e-6 +
    2 x 0.6e-6 = $0.0000162 to 100 x 0.30e-6 + 2 x 0.6e-6 = $0.0000312, +92.6%, past the MDR's 20%. The VM's
    $0.05 -> $0.055 an hour is +10%: below it."""
    root, _, out = mdr
    done = check_mdr(root, out, "--today", "2026-12-01", input_price=0.30, hourly=0.055)
    assert done.returncode == 1
    assert fired(done) == ["price: openai-gpt-4o-mini"]
    assert "$0.0000162 (prices of 2026-11-20) -> $0.0000312 (prices of 2026-11-20), +92.6%" in done.stdout
    assert "input $0.15 -> $0.3" in done.stdout and "+10.0% (threshold ±20%)" in done.stdout
    assert check_mdr(root, out, "--today", "2026-12-01", "--price-change", "0.05", hourly=0.055).returncode == 1


def test_staleness_deprecation_quality_and_volume_fire(mdr, tmp_path):
    """Three months on, every price is 101 days old (> 90). The fallback's offer deprecated on 2026-11-15. A newer
    golden run passes 6/10: below the MDR's lower bound, Wilson(10, 10) = 72%; paired, b = 4 (now failing),
    c = 0, McNemar p = 2/16 = 0.125, not clear by itself. 20M tasks a month are past the instance's capacity."""
    from .test_check import golden_run

    root, _, out = mdr
    newer = golden_run(
        tmp_path,
        "newer",
        GOLDEN,
        {c["id"]: "yes" if c["id"] < "c6" else "no" for c in GOLDEN},
        model="gemma3-270m",
        prompt_tokens=100,
    )
    done = check_mdr(
        root, out, "--today", "2027-03-01", "--volume", "20000000", "--runs", str(newer), deprecation="2026-11-15"
    )
    assert done.returncode == 1
    assert set(fired(done)) == {
        "price age: gemma3-270m",
        "price age: openai-gpt-4o-mini",
        "deprecation: openai-gpt-4o-mini",
        "quality: gemma3-270m (run newer)",
        "volume",
    }
    assert "6/10 cases passed now (60%), 10/10 (100%, 95% CI 72%-100%) in the MDR" in done.stdout
    assert "4 now fail, 0 now pass, exact McNemar p = 0.125" in done.stdout
    assert "below the MDR's lower 95% bound 72%" in done.stdout
    assert "past the" in done.stdout and "the fallback must be replaced" in done.stdout


def test_a_file_without_the_block_is_bad_input(tmp_path):
    path = tmp_path / "old.md"
    path.write_text("# Model decision record\n")
    done = bench_cli("mdr", "--check", str(path))
    assert done.returncode == 2 and "no decision-inputs block" in done.stderr


def test_a_hand_edited_block_is_one_line_naming_the_field(mdr, tmp_path):
    """A field `bench mdr --check` reads, gone or of another type, was a KeyError or TypeError traceback."""
    import json
    import re

    root, _, out = mdr
    text = out.read_text()
    block = re.search(r"```json\n(.*?)\n```", text, re.S)
    inputs = json.loads(block.group(1))
    edits = [
        (lambda i: i.pop("volume"), "field 'volume': Field required"),
        (lambda i: i["candidates"][0].update(retired="maybe"), "field 'candidates.0.retired'"),
        (lambda i: i["task"].update(input_tokens="many"), "field 'task.input_tokens'"),
        (lambda i: i["candidates"][0]["price"].update(kind="lease"), "field 'candidates.0.price.kind'"),
        (lambda i: i["candidates"][0]["price"].pop("as_of"), "field 'candidates.0.price.as_of'"),
        (lambda i: i["candidates"][0]["price"].update(kind="api"), "a price of kind 'api' needs attempt_cost"),
    ]
    for edit, fragment in edits:
        edited = json.loads(json.dumps(inputs))
        edit(edited)
        path = tmp_path / "edited.md"
        path.write_text(text.replace(block.group(1), json.dumps(edited, indent=2)))
        done = check_mdr(root, path, "--today", "2026-12-01")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and fragment in done.stderr, done.stderr
        assert "was it edited? write it again with `bench mdr`" in done.stderr
    edited = json.loads(json.dumps(inputs)) | {"price_change_threshold": "0.2"}  # a number as text reads as one
    path.write_text(text.replace(block.group(1), json.dumps(edited, indent=2)))
    assert check_mdr(root, path, "--today", "2026-12-01").returncode == 0


def test_an_explicit_stale_after_overrides_the_mdrs_own_even_at_the_default(tmp_path):
    """An MDR written with --stale-after 1000 keeps its own window on --check; --stale-after 90 (the default's
    value, given) replaces it: on 2027-03-01 the prices of 2026-11-20 are 101 days old and fire."""
    from .test_check import golden_run

    run = golden_run(
        tmp_path, "gemma", GOLDEN, {c["id"]: "yes" for c in GOLDEN}, model="gemma3-270m", prompt_tokens=100
    )
    catalog = write_catalog(tmp_path / "models.yaml", deprecation="2027-12-01")
    out = tmp_path / "mdr.md"
    common = ["--catalog", str(catalog)]
    made = bench_cli(
        "mdr", str(run), "--hardware-offer", "cpu-2-core-vm", "--today", "2026-12-01", "--stale-after", "1000",
        "--out", str(out), *common,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    own = bench_cli("mdr", "--check", str(out), "--today", "2027-03-01", *common)
    assert own.returncode == 0 and not fired(own), own.stdout
    given = bench_cli("mdr", "--check", str(out), "--today", "2027-03-01", "--stale-after", "90", *common)
    assert given.returncode == 1
    assert {"price age: gemma3-270m", "price age: openai-gpt-4o-mini"} <= set(fired(given))


def test_success_rates_of_two_golden_sets_are_not_compared(tmp_path):
    """A candidate's 10-case run and an API's 5-case run of another set: bench mdr, compare and cost refuse
    them with the digests named (exit 2), as bench route does."""
    from .test_check import golden_run

    gemma = golden_run(tmp_path, "gemma", GOLDEN, {c["id"]: "yes" for c in GOLDEN}, model="gemma3-270m")
    other = golden_run(tmp_path, "api", GOLDEN[:5], {c["id"]: "yes" for c in GOLDEN[:5]}, model="gpt-4o-mini")
    catalog = ["--catalog", str(write_catalog(tmp_path / "models.yaml")), "--hardware-offer", "cpu-2-core-vm"]
    for args in (
        ["mdr", str(gemma), str(other), "--out", str(tmp_path / "m.md")],
        ["compare", str(gemma), str(other), "--out", str(tmp_path / "c.md")],
        ["cost", str(gemma), "--api-run", f"openai-gpt-4o-mini={other}", "--api-offer", "openai-gpt-4o-mini"],
    ):
        done = bench_cli(*args, *catalog)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "the golden runs are of different golden sets" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.md").exists() and not (tmp_path / "c.md").exists()


def test_cost_cells_say_at_what_volume_and_when_no_task_succeeded(mdr, tmp_path):
    """The self-hosted cell's $/task is at the stated volume on whole instances, with the utilization's own
    figure beside it (0.05 / (A x 3600 x 0.5), A = 10 / 0.961 attempts/s); a run that passed no case is
    unbounded per successful task, not 'not measured'."""
    from .test_check import golden_run

    _, _, out = mdr
    at_u = 0.05 / ((10 / 0.961) * 3600 * 0.5)
    text = out.read_text()
    assert "/task at 1,000,000 tasks/month on 1 whole instance ($" in text
    assert f"({money(at_u)}/task at 50% utilization)" in text
    zero = golden_run(tmp_path, "zero", GOLDEN, {c["id"]: "no" for c in GOLDEN}, model="gemma3-270m")
    catalog = write_catalog(tmp_path / "models.yaml")
    done = bench_cli(
        "compare",
        str(zero),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--catalog",
        str(catalog),
        "--out",
        str(tmp_path / "c.md"),
    )
    assert done.returncode == 0, done.stderr
    assert "no task succeeded on the golden set: unbounded per successful task" in (tmp_path / "c.md").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["cost", "RUN", "--tasks-per-month", "nan"],
        ["compare", "RUN", "--tasks-per-month", "inf"],
        ["route", "RUN", "--utilization", "nan"],
        ["cost", "RUN", "--input-tokens", "inf"],
        ["mdr", "--check", "MDR", "--volume", "nan"],
    ],
)
def test_a_pricing_number_that_is_not_finite_is_a_flag_error(mdr, args):
    """NaN and infinity reached the instance count (math.ceil) as tracebacks: argparse refuses them, exit 2."""
    _, run, out = mdr
    args = [str(run) if a == "RUN" else str(out) if a == "MDR" else a for a in args]
    done = bench_cli(*args, "--hardware-offer", "cpu-2-core-vm") if args[0] != "mdr" else bench_cli(*args)
    assert done.returncode == 2 and "must be a finite number" in done.stderr and "Traceback" not in done.stderr


def test_a_break_even_without_an_interval_says_so():
    from bench.decision import _break_even_text

    text = _break_even_text({"tasks_per_month": 1_460_000, "ci95": None}, 1_000_000)
    assert text.startswith("break-even at 1,460,000 tasks/month (no interval: every input to it is assumed")
    assert "95% CI 1,000-2,000;" in _break_even_text({"tasks_per_month": 1_500, "ci95": [1_000, 2_000]}, 10)


def test_the_apis_break_even_is_priced_against_the_default_else_the_cheapest_live_self_hosted_over_the_bar():
    from bench.decision import _break_even_side

    retired = entry("a-retired", 0.9, 0.0001, deprecation="2025-09-24")
    below_bar = entry("b-below-bar", 0.5, 0.0002)
    over_bar = entry("c-over-bar", 0.9, 0.0009)
    default = entry("d-default", 0.95, 0.002)
    api = entry("api", None, 0.002, linear=True)
    entries = [retired, below_bar, over_bar, default, api]
    assert _break_even_side(entries, default, TODAY) is default
    assert _break_even_side(entries, api, TODAY) is over_bar  # the API is the default: the best self-hosted
    assert _break_even_side([retired, below_bar, api], None, TODAY) is below_bar  # none over the bar
    assert _break_even_side([retired, api], None, TODAY) is None
    unmeasured = entry("e-unmeasured", None, 0.00001)  # cheapest per task, but no success rate to price it by
    assert _break_even_side([below_bar, unmeasured, api], None, TODAY) is below_bar
