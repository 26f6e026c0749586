"""bench check: tolerances, the statistics it judges by (each against a hand-worked figure), and the gate on
runs made through the whole load path against the in-process fake engine, whose timing is set exactly, and
copies of one of them with their times changed by a known factor: the same setup passes, a slowed one fails,
a different workload is refused, and golden runs drift."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import orjson
import pytest

from bench.analysis import analyse
from bench.check import (
    Finding,
    _interval_finding,
    check,
    expanded_tail,
    judge,
    junit_xml,
    markdown_report,
    newcombe_interval,
    parse_tolerances,
    relative_change_interval,
)
from bench.errors import UsageError
from bench.quality import golden_digest, mcnemar_exact
from bench.records import Manifest, ModelRecord, RequestRecord, StageRecord, WorkloadRecord
from bench.results import GOLDEN_COPY, RunDirectory, write_json_atomic
from bench.run import execute
from bench.spec import EndpointEngine, Length, LoadSpec, RunSpec, WorkloadSpec

from .conftest import fake_engine

REPO = Path(__file__).resolve().parents[2]


# -- tolerances --------------------------------------------------------------------------------------------
def test_tolerances_keep_the_defaults_the_flag_does_not_name():
    t = parse_tolerances("ttft_p99=+10%,tpot_p50=+5%,output_tok_s=-5%,success_rate=-2pp,e2e_p99=off")
    assert (t["ttft_p99"].limit, t["tpot_p50"].limit, t["output_tok_s"].limit) == (0.10, 0.05, 0.05)
    assert t["success_rate"].limit == pytest.approx(0.02) and t["success_rate"].text() == "-2pp"
    assert t["e2e_p99"].limit is None and t["e2e_p99"].text() == "off"
    assert t["ttft_p50"].text() == "+25%" and t["error_rate"].text() == "+1pp"  # defaults kept
    assert parse_tolerances("tpot_mean=7.5%")["tpot_mean"].text() == "+7.5%"  # the sign may be left out


@pytest.mark.parametrize(
    "text, message",
    [
        ("ttft_p99=-10%", "gets worse as it rises, so its tolerance is +10%"),
        ("output_tok_s=+5%", "gets worse as it falls"),
        ("success_rate=-2%", "give its tolerance in percentage points"),
        ("ttft_p50=+2pp", "in percent"),
        ("latency=+5%", "unknown metric 'latency'"),
        ("ttft_p99", "give METRIC=VALUE"),
        ("ttft_p99=fast", "a signed amount with its unit"),
    ],
)
def test_bad_tolerances_say_what_to_write(text, message):
    with pytest.raises(UsageError) as caught:
        parse_tolerances(text)
    assert message in str(caught.value)


# -- the statistics --------------------------------------------------------------------------------------
def test_mcnemar_exact_against_hand_worked_values():
    """b = passed before and failed now, c = the reverse; p = min(1, 2 * sum_{k<=min(b,c)} C(b+c,k) / 2^(b+c)).

    b=6, c=1: (C(7,0) + C(7,1)) / 2^7 = 8/128 = 0.0625, two-sided 0.125.
    b=7, c=0: 1/128, two-sided 0.015625.
    b=10, c=2: (1 + 12 + 66) / 4096 = 79/4096, two-sided 158/4096 = 0.03857421875.
    b=3, c=3: the tail reaches past half, capped at 1."""
    assert mcnemar_exact(6, 1) == 0.125
    assert mcnemar_exact(1, 6) == 0.125  # symmetric
    assert mcnemar_exact(7, 0) == 0.015625
    assert mcnemar_exact(10, 2) == 158 / 4096
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_newcombe_interval_matches_the_published_example():
    """Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80 = 0.2250, method 10 gives
    0.0524 to 0.3339."""
    low, high = newcombe_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_the_bootstrap_interval_covers_no_change_and_finds_a_doubling():
    rng = np.random.default_rng(1)
    base = rng.gamma(4.0, 25.0, 400)  # a latency-like distribution, mean 100
    again = rng.gamma(4.0, 25.0, 400)
    low, high = relative_change_interval(base, again, "p50")
    assert low < 0 < high
    low, high = relative_change_interval(base, 2 * base, "p99")  # the sides are resampled independently
    assert 0 < low < 1.0 < high
    low, high = relative_change_interval(base, 2 * again, "mean")
    assert 0.8 < low < 1.0 < high < 1.2
    assert relative_change_interval(base, again, "p50") == relative_change_interval(base, again, "p50")  # seeded
    big = rng.gamma(4.0, 25.0, 30_000)  # past LARGE_N: the order-statistic interval on the log scale
    low, high = relative_change_interval(big, big * 1.1, "p99")
    assert low < 0.1 < high and high - low < 0.1


def _noise_called_clear_and_change_found(statistic: str, factor: float, seed: int) -> tuple[int, int]:
    """Over 300 seeded pairs of ten gamma values a side: how many pairs of one distribution the interval calls
    clearly different, and how many with the new side multiplied by `factor` it finds clearly higher."""
    rng = np.random.default_rng(seed)
    clear_noise = found = 0
    for _ in range(300):
        base, new = rng.gamma(20.0, 5.0, 10), rng.gamma(20.0, 5.0, 10)
        low, high = relative_change_interval(base, new, statistic, resamples=500, seed=int(rng.integers(1 << 30)))
        clear_noise += low > 0 or high < 0
        low, _ = relative_change_interval(base, factor * new, statistic, resamples=500, seed=int(rng.integers(1 << 30)))
        found += low > 0
    return clear_noise, found


def test_the_interval_of_a_mean_of_ten_values_calls_noise_clear_about_as_often_as_it_says():
    """Ten values a side, as the ten time slices of a stage's throughput: over 300 pairs of samples of one
    distribution, the interval excludes no change in about 5 % of pairs (the percentile bootstrap it replaces, in
    16.5 %: 50 of these 300), and it finds a 50 % change in nearly every pair."""
    clear_noise, found = _noise_called_clear_and_change_found("mean", 1.5, seed=7)
    assert clear_noise <= 27, clear_noise  # 9 %: a nominal 5 % (15 of 300) with room for the draw
    assert found >= 285, found
    constant = np.full(10, 40.0)
    assert relative_change_interval(constant, constant * 1.25, "mean") == pytest.approx([0.25, 0.25])


def test_the_interval_of_a_median_of_ten_values_is_expanded_to_call_noise_clear_about_as_often_as_it_says():
    """Ten values a side at p50 (the fewest bench check judges a median from): over 300 pairs of samples of one
    distribution the expanded interval excludes no change in about 5 % of pairs (the plain percentile interval, in
    33 of these 300: 11 %; the expanded one 17), and still finds a doubling in nearly every pair."""
    clear_noise, found = _noise_called_clear_and_change_found("p50", 2.0, seed=8)
    assert clear_noise <= 27, clear_noise
    assert found >= 285, found
    assert expanded_tail(10) == pytest.approx(0.855, abs=1e-3) and expanded_tail(20_000) == pytest.approx(2.5, abs=1e-3)


@pytest.mark.parametrize("n", [2_000, 30_000], ids=["block-bootstrap", "batch-means"])
def test_a_means_interval_widens_for_serially_correlated_values(n):
    """The same values in time order (an AR(1) series, rho 0.9: each request like the one before) and shuffled: in
    order, a mean is pinned about sqrt((1 + rho) / (1 - rho)) = 4.4 times less well, and the interval says so,
    below LARGE_N (the block bootstrap's variance) and above it (the batch means')."""
    rng = np.random.default_rng(11)

    def series():
        draws, values = rng.gamma(20.0, 5.0, n + 200), np.empty(n + 200)
        values[0] = draws[0]
        for i in range(1, n + 200):
            values[i] = 0.9 * values[i - 1] + 0.1 * draws[i]
        return values[200:]

    base, new = series(), series()
    low, high = relative_change_interval(base, new, "mean", resamples=500)
    shuffled_low, shuffled_high = relative_change_interval(rng.permutation(base), rng.permutation(new), "mean", 500)
    assert (high - low) > 2.5 * (shuffled_high - shuffled_low), (high - low, shuffled_high - shuffled_low)


def _finding(metric, change, ci, limit_text):
    tol = parse_tolerances(f"{metric}={limit_text}", base="")[metric]
    return judge(Finding("s", metric, tol, change=change, ci95=ci), ci[0] * tol.worse > 0, ci[1] * tol.worse < 0)


def test_a_regression_needs_the_tolerance_and_a_clear_difference():
    assert _finding("ttft_p99", 0.30, [0.12, 0.50], "+10%").verdict == "regression"
    assert _finding("ttft_p99", 0.30, [-0.05, 0.60], "+10%").verdict == "not clear"  # past it, but could be 0
    assert _finding("ttft_p99", 0.05, [0.01, 0.09], "+10%").verdict == "within tolerance"  # clear, but small
    assert _finding("ttft_p99", -0.30, [-0.40, -0.20], "+10%").verdict == "improved"
    assert _finding("output_tok_s", -0.30, [-0.40, -0.20], "-5%").verdict == "regression"  # lower is worse
    assert _finding("output_tok_s", 0.30, [0.20, 0.40], "-5%").verdict == "improved"


# -- real runs against the fake engine -------------------------------------------------------------------
def _run(url, root, run_id, streams=2, output_tokens=8):
    spec = RunSpec(
        engine=EndpointEngine(url=url),
        model="calibration",
        api="completions",
        workload=WorkloadSpec(input_tokens=Length(a=8), output_tokens=Length(a=output_tokens)),
        load=LoadSpec(concurrency=[streams], requests=40),
        telemetry={"interval_s": 0.2},
        output={"results_dir": root, "run_id": run_id},
    )
    assert execute(spec).exit_code == 0
    return root / run_id


def _copy_run(src: Path, dst: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A new run directory `dst` holding src's files (those named in leave_out apart)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name not in leave_out:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _stretched(src: Path, dst: Path, factor: float, jitter: float = 0.0) -> Path:
    """A copy of a run with every time stretched `factor`-fold about its first send (sends, first tokens, tokens,
    ends), summarized again: every latency changes by exactly factor - 1 and throughput by 1/factor - 1, whatever
    the machine did. `jitter` > 0 also stretches each request's own durations by a seeded factor within
    1 +- jitter: a run of the same setup, noisy but no slower."""
    _copy_run(src, dst, leave_out=("requests.jsonl", "summary.json"))
    records = [orjson.loads(line) for line in (src / "requests.jsonl").read_bytes().splitlines()]
    origin = min(r["t_send_ns"] for r in records)
    noise = np.random.default_rng(7).uniform(1 - jitter, 1 + jitter, len(records))
    rows = []
    for r, own in zip(records, noise, strict=True):
        send = origin + round(factor * (r["t_send_ns"] - origin))
        r["output_times_ns"] = [send + round(factor * own * (t - r["t_send_ns"])) for t in r["output_times_ns"]]
        r["t_end_ns"] = send + round(factor * own * (r["t_end_ns"] - r["t_send_ns"]))
        r["t_send_ns"] = send
        rows.append(orjson.dumps(r) + b"\n")
    (dst / "requests.jsonl").write_bytes(b"".join(rows))
    run_dir = RunDirectory(dst)
    run_dir.write_summary(analyse(run_dir).summary)
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real run against the fake engine (TTFT 30 ms, a token every 6 ms) and one with another output length;
    made from the first: the same setup again (each request within +-5% of its time) and a run twice as slow
    (every time doubled). Two timed runs differ by whatever else the machine did; these differ by construction,
    so the gate's verdicts are checked, not the machine's calm."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    with fake_engine(ttft_ms=30.0, gap_ms=6.0) as url:
        out["base"] = _run(url, root, "base")
        out["longer"] = _run(url, root, "longer", output_tokens=16)
    out["same"] = _stretched(out["base"], root / "same", 1.0, jitter=0.05)
    out["slow"] = _stretched(out["base"], root / "slow", 2.0)
    return out


def cli(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True)


def test_identical_setups_pass_and_a_slowed_run_fails(runs, tmp_path):
    same = check(runs["same"], runs["base"])
    assert same.exit_code == 0, [(f.metric, f.verdict, f.change) for f in same.findings]
    assert not same.warnings  # one engine, one setup: nothing differs
    slow = check(runs["slow"], runs["base"])
    assert slow.exit_code == 1
    verdicts = {f.metric: f for f in slow.findings}
    for metric in ("ttft_p50", "tpot_p50", "output_tok_s"):  # every time doubled: +100%, -50%
        assert verdicts[metric].verdict == "regression" and verdicts[metric].ci95 is not None
    assert verdicts["ttft_p50"].change == pytest.approx(1.0) and verdicts["tpot_p50"].change == pytest.approx(1.0)
    assert verdicts["output_tok_s"].change == pytest.approx(-0.5, abs=0.01)
    assert verdicts["error_rate"].verdict == "ok"

    done = cli("check", str(runs["slow"]), "--baseline", str(runs["base"]), "--junit", str(tmp_path / "j" / "c.xml"))
    assert done.returncode == 1, done.stderr
    assert "REGRESSION" in done.stdout and done.stdout.rstrip().splitlines()[-1].startswith("FAIL: ")
    suite = ET.parse(tmp_path / "j" / "c.xml").getroot().find("testsuite")
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == {f.metric for f in slow.regressions} and suite.get("failures") == str(len(failed))
    assert int(suite.get("tests")) == len(slow.findings)
    ok = cli("check", str(runs["same"]), "--baseline", str(runs["base"]), "--markdown", str(tmp_path / "s.md"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "s.md").read_text().startswith("## bench check: PASS")
    cli("check", str(runs["same"]), "--baseline", str(runs["base"]), "--markdown", str(tmp_path / "s.md"))
    assert (tmp_path / "s.md").read_text().count("## bench check") == 2  # a job summary is appended to
    (tmp_path / "step.md").write_text("an earlier step's line without its newline")
    cli("check", str(runs["same"]), "--baseline", str(runs["base"]), "--markdown", str(tmp_path / "step.md"))
    assert "\n## bench check: PASS" in (tmp_path / "step.md").read_text()  # a heading on a line of its own


def test_a_percentile_with_too_few_requests_above_it_is_not_judged(runs):
    """40 requests a run: 40 x (1 - 0.99) = 0.4 requests above a p99, fewer than 5: shown, not judged (it would
    need 500 requests); 40 x 0.5 = 20 above a p50: judged."""
    slow = {f.metric: f for f in check(runs["slow"], runs["base"]).findings}
    assert slow["ttft_p99"].verdict == "too few requests" and slow["ttft_p99"].change == pytest.approx(1.0)
    assert "would be regression" in slow["ttft_p99"].note and "judged from 500 requests" in slow["ttft_p99"].note
    assert slow["ttft_p50"].verdict == "regression"
    p90 = check(runs["slow"], runs["base"], parse_tolerances("tpot_p90=+10%", base="")).findings
    assert [f.verdict for f in p90] == ["too few requests"]  # 40 x 0.1 = 4 < 5: from 50


@pytest.mark.parametrize("n, judged", [(49, False), (50, True)])
def test_a_p90_is_judged_from_50_requests_as_the_readme_says(n, judged):
    """50 x (1 - 0.9) is 4.999...: a p90 of 50 requests was refused as having fewer than 5 above it."""
    tolerance = parse_tolerances("ttft_p90=+10%", base="")["ttft_p90"]
    finding = Finding("c1", "ttft_p90", tolerance, method="bootstrap of the per-request values")
    values = np.arange(1.0, n + 1)
    done = _interval_finding(finding, values, values * 2, "p90", 200)
    assert (done.verdict != "too few requests") is judged, done.note


def _changed(src: Path, dst: Path, manifest: dict, record) -> Path:
    """A copy of a run with manifest fields replaced and each record passed through `record` (None drops it),
    summarized again."""
    _copy_run(src, dst, leave_out=("requests.jsonl", "summary.json", "manifest.json"))
    data = orjson.loads((src / "manifest.json").read_bytes())
    write_json_atomic(dst / "manifest.json", {**data, **manifest})
    records = [record(orjson.loads(line)) for line in (src / "requests.jsonl").read_bytes().splitlines()]
    (dst / "requests.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records if r is not None))
    run_dir = RunDirectory(dst)
    run_dir.write_summary(analyse(run_dir).summary)
    return dst


def _cancelled(r: dict) -> dict:
    if r["phase"] != "measured":
        return r
    return {**r, "status": "cancelled", "output_times_ns": [], "output_tokens": 0, "ttft_ms": None}


def test_a_run_that_measured_nothing_or_stopped_early_fails_its_gates(runs, tmp_path):
    """Every request of the stage cancelled (an engine that hung until the stage's time ran out) left every
    metric "not measured" and passed; a run whose engine died was refused as another workload (exit 2), or
    passed with --allow-different-workload."""
    hung = check(_changed(runs["base"], tmp_path / "hung", {}, _cancelled), runs["base"])
    assert [(g.scope, g.name) for g in hung.failed_gates] == [("concurrency 2", "measured")] and hung.exit_code == 1
    assert "no measured request succeeded in the run's stage (the baseline's 40 did)" in hung.failed_gates[0].detail
    died = {"status": "incomplete", "incomplete_reason": "the engine exited with code -9 during stage 0"}
    early = check(_changed(runs["base"], tmp_path / "died", {**died, "stages": []}, lambda r: None), runs["base"])
    assert early.exit_code == 1 and not early.workload_differences
    assert [g.name for g in early.failed_gates] == ["status", "measured"]
    assert "the run is incomplete: the engine exited with code -9" in early.failed_gates[0].detail
    assert early.failed_gates[1].detail == "the run has no such stage (it stopped before it)"
    done = cli("check", str(tmp_path / "died"), "--baseline", str(runs["base"]))
    assert done.returncode == 1 and done.stdout.rstrip().splitlines()[-1].startswith("FAIL: "), done.stdout


def test_tolerances_change_the_verdict_and_gates_hold_absolutely(runs):
    lax = parse_tolerances(
        "ttft_p50=+150%,ttft_p99=+150%,tpot_p50=+150%,tpot_p99=+150%,e2e_p50=+150%,e2e_p99=+150%,output_tok_s=-60%"
    )
    doubling = check(runs["slow"], runs["base"], lax)
    assert doubling.exit_code == 0  # a doubling is within 150%
    # absolute gates on the run alone: its TTFT is at least 2 x 30 ms (the engine's), so a 45 ms SLO fails, and
    # one 20% above its own p99 holds
    tight = check(runs["slow"], runs["base"], lax, slo={"ttft": 45.0}, max_error_rate=0.0)
    assert tight.exit_code == 1 and [g.name for g in tight.failed_gates] == ["slo ttft p99"]
    assert "against 45.0 ms" in tight.failed_gates[0].detail
    own_p99 = next(f.new for f in doubling.findings if f.metric == "ttft_p99")
    assert check(runs["slow"], runs["base"], lax, slo={"ttft": 1.2 * own_p99}).exit_code == 0
    assert "slo ttft p99" in junit_xml(tight) and "**Gates**" in markdown_report(tight)


def test_different_workloads_are_refused_unless_allowed(runs):
    with pytest.raises(UsageError, match=r"different workloads \(workload workload.output_tokens: '8' -> '16'"):
        check(runs["longer"], runs["base"])
    allowed = check(runs["longer"], runs["base"], allow_different_workload=True)
    assert any("different workload (allowed)" in w for w in allowed.warnings)
    done = cli("check", str(runs["longer"]), "--baseline", str(runs["base"]))
    assert done.returncode == 2 and "--allow-different-workload" in done.stderr
    assert cli("check", str(runs["base"]), "--baseline", str(runs["base"] / "nope")).returncode == 2
    bad = cli("check", str(runs["base"]), "--baseline", str(runs["base"]), "--tolerance", "ttft_p99=-3%")
    assert bad.returncode == 2 and "tolerance is +3%" in bad.stderr


def test_what_differs_in_the_measurement_is_warned(runs, tmp_path):
    """Another engine version, model digest and hardware are warnings, not refusals."""
    copy = _copy_run(runs["same"], tmp_path / "other")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["engine"]["version"] = "9.9"
    manifest["model"]["file"] = {"sha256": "0" * 64}
    manifest["hardware"]["cpu_model"] = "Another CPU"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = check(copy, runs["base"])
    text = "\n".join(result.warnings)
    assert "engine version: None -> '9.9'" in text
    assert "model digest" in text and "hardware cpu_model" in text and "'Another CPU'" in text


def _with_telemetry(src: Path, dst: Path, system: float, engine: float = 50.0, client: float = 5.0) -> Path:
    """A copy of a run as if measured on a 2-core machine, with flat telemetry over its measured window."""
    _copy_run(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["hardware"]["cpu_cores_logical"] = 2
    (dst / "manifest.json").write_text(json.dumps(manifest))
    sends = [r["t_send_ns"] for r in map(json.loads, (dst / "requests.jsonl").read_text().splitlines())]
    rows = [
        {"t_ns": t, "engine_cpu_percent": engine, "client_cpu_percent": client, "system_cpu_percent": system}
        for t in np.linspace(min(sends), max(sends), 5).astype(int).tolist()
    ]
    (dst / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def test_timing_is_not_judged_when_other_processes_held_the_saturated_cpus(runs, tmp_path):
    """The slowed run again, as if measured on a 2-core machine 98% busy while the engine got half a core and the
    client 5%: other processes held 0.98 x 2 - 0.5 - 0.05 = 1.41 cores (70%) of a saturated machine. Its latency
    and throughput are shown, not judged; the gate passes and says so. At 80% busy (other processes on
    1.6 - 0.55 = 1.05 cores, but a core's worth idle) the machine had room: judged, failed. Judged regardless
    (max_contention=None) it fails as before."""
    busy = _with_telemetry(runs["slow"], tmp_path / "busy", system=98.0)
    result = check(busy, runs["base"])
    assert result.exit_code == 0 and result.status.startswith("PASS (timing not judged")
    judged = {f.metric: f.verdict for f in result.findings}
    assert judged["ttft_p50"] == "not judged" and judged["error_rate"] == "ok"
    (label,) = result.contention
    assert result.contention[label]["run"]["other_cores"] == pytest.approx(1.41)
    assert result.contention[label]["run"]["busy"] == pytest.approx(0.98)
    assert result.contention[label]["baseline"] is None  # an --endpoint run: the engine's CPU is not the rig's
    assert "the machine was saturated during the run" in result.warnings[0]
    assert 'skipped message="not judged' in junit_xml(result)
    assert check(busy, runs["base"], max_contention=None).exit_code == 1
    roomy = _with_telemetry(runs["slow"], tmp_path / "roomy", system=80.0)
    result = check(roomy, runs["base"])
    assert result.exit_code == 1 and "machine 80% busy, 1.05 of 2 cores used by other processes" in result.notes[0]


# -- golden runs ---------------------------------------------------------------------------------------------
def golden_run(
    root: Path, run_id: str, cases: list[dict], answers: dict[str, str | None], model="m", prompt_tokens=None
) -> Path:
    """A golden run directory as `bench eval` leaves it: the set's copy, the manifest, one record per prompt
    (answers[id] is its output; None, a failed request), then summary.json and eval.json from bench.analysis."""
    path = root / run_id
    path.mkdir(parents=True)
    run_dir = RunDirectory(path)
    golden = path / GOLDEN_COPY
    golden.write_text("".join(json.dumps(c) + "\n" for c in cases))
    manifest = Manifest(
        run_id=run_id,
        status="complete",
        incomplete_reason=None,
        started_at="2026-12-01T10:00:00+00:00",
        workload=WorkloadRecord(
            kind="golden", path="set.jsonl", sha256=golden_digest(golden), cases=len(answers), copy=GOLDEN_COPY
        ),
        stages=[StageRecord(index=0, name="c1", kind="closed-loop", label="concurrency 1", schedule={}, requests=1)],
        model=ModelRecord(name=model),
    )
    run_dir.write_manifest(manifest)
    with (path / "requests.jsonl").open("wb") as handle:
        for i, (case_id, text) in enumerate(answers.items()):
            t = i * 100_000_000
            record = RequestRecord(
                request_id=i,
                case_id=case_id,
                status="ok" if text is not None else "error",
                error=None if text is not None else "HTTP 500",
                t_send_ns=t,
                output_times_ns=[t + 40_000_000, t + 60_000_000] if text is not None else [],
                t_end_ns=t + 61_000_000,
                output_tokens=2 if text is not None else None,
                prompt_tokens=20 + i % 3 if prompt_tokens is None else prompt_tokens,
                tokens_source="usage",
                max_tokens=8,
                output_text=text,
            )
            handle.write(orjson.dumps(record) + b"\n")
    analysis = analyse(run_dir)
    run_dir.write_summary(analysis.summary)
    write_json_atomic(path / "eval.json", analysis.evaluation)
    return path


CASES = [{"id": f"c{i}", "prompt": f"q{i}", "checks": [{"type": "contains", "value": "yes"}]} for i in range(12)]


def test_golden_drift_is_judged_by_mcnemar_on_the_paired_cases(tmp_path):
    """12 paired cases. Before: c0-c9 pass. After: c0-c2 pass, c10 and c11 now pass too: b = 7 (c3-c9 now
    fail), c = 2 (c10, c11 now pass); success 10/12 -> 5/12 = -41.7pp; p = 2 * (1 + 9 + 36) / 512 =
    92/512 = 0.1797: not clear, so no regression although far past -2pp. With c10, c11 failing too:
    b = 7, c = 0, p = 2/128 = 0.015625: a regression."""
    before = golden_run(tmp_path, "before", CASES, {f"c{i}": "yes" if i < 10 else "no" for i in range(12)})
    after = golden_run(tmp_path, "after", CASES, {f"c{i}": "yes" if i < 3 or i >= 10 else "no" for i in range(12)})
    result = check(after, before)
    d = result.drift
    assert (d["b"], d["c"], d["paired"]) == (7, 2, 12)
    assert d["regressed"] == [f"c{i}" for i in range(3, 10)] and d["fixed"] == ["c10", "c11"]
    assert d["p_value"] == pytest.approx(92 / 512)
    success = next(f for f in result.findings if f.metric == "success_rate")
    assert success.change == pytest.approx(5 / 12 - 10 / 12) and success.verdict == "not clear"
    worse = golden_run(tmp_path, "worse", CASES, {f"c{i}": "yes" if i < 3 else "no" for i in range(12)})
    result = check(worse, before)
    success = next(f for f in result.findings if f.metric == "success_rate")
    assert (result.drift["b"], result.drift["c"], success.p_value) == (7, 0, 0.015625)
    assert success.verdict == "regression" and result.exit_code == 1
    assert "now failing: c3, c4, c5, c6, c7, c8, c9" in markdown_report(result)


def test_a_different_golden_set_is_a_different_workload(tmp_path):
    before = golden_run(tmp_path, "a", CASES, {c["id"]: "yes" for c in CASES})
    other = [dict(c, checks=[{"type": "contains", "value": "no"}]) for c in CASES]
    after = golden_run(tmp_path, "b", other, {c["id"]: "yes" for c in CASES})
    with pytest.raises(UsageError, match="workload.sha256"):
        check(after, before)


# -- the CI examples --------------------------------------------------------------------------------------------
def _bench_commands(text: str) -> list[list[str]]:
    """Every `.venv/bin/bench ...` command in a CI file, with CI variables replaced by plain words."""
    import re
    import shlex

    text = re.sub(r"\$\{\{[^}]*\}\}", "x", text).replace("\\\n", " ")
    commands = []
    for match in re.finditer(r"\.venv/bin/bench ((?:[^\n]|\n(?=\s+--))+)", text):
        words = shlex.split(match.group(1).replace("\n", " "))
        commands.append([w.replace("$RUN_ID", "ci-1").replace("$GITHUB_STEP_SUMMARY", "summary.md") for w in words])
    return commands


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_the_ci_examples_run_the_smoke_benchmark_and_the_gate_with_flags_bench_accepts(name):
    import yaml

    from bench.cli import build_parser

    text = (REPO / "examples" / "ci" / name).read_text()
    yaml.safe_load(text)  # valid YAML
    assert "bash scripts/setup.sh llamacpp" in text
    commands = _bench_commands(text)
    verbs = [c[0] for c in commands]
    assert verbs == ["run", "check"], commands
    run, gate = (build_parser().parse_args(c) for c in commands)
    settings = vars(run)
    assert (run.engine, run.model, settings["load.concurrency"], settings["load.requests"]) == (
        "llamacpp",
        "gemma3-270m",
        "2",
        "24",
    )
    assert gate.baseline == Path("ci/baseline") and gate.junit == Path("results/bench-check.xml")
    assert gate.run_dir.name.startswith("ci-") and gate.markdown is not None


@pytest.mark.parametrize("verb", ["check", "route", "mdr"])
def test_the_help_of_each_new_verb_renders(verb, capsys):
    from bench.cli import build_parser

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([verb, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: bench {verb}")
    if verb == "check":
        assert "--max-contention SHARE|off" in text and ">= 90% busy" in text
