"""A golden set run against the real llama.cpp server: the checks pass what Gemma 3 270M (a small base
model) can do and fail what it cannot, the success rate carries its Wilson interval into the cost per
successful task, and `bench compare` and `bench mdr` are built from that run."""

import json
import re

import pytest

from bench.metrics.stats import wilson_interval

from .conftest import REPO, RUN_GEMMA, needs_xllamacpp, only_run_dir, run_bench

pytestmark = [pytest.mark.integration, needs_xllamacpp]
GOLDEN = REPO / "tests/integration/fixtures/golden-gemma.jsonl"
# completions a 270M base model continues correctly, and tasks beyond it (JSON, arithmetic, exact recall,
# following a length limit it cannot see): the checks must tell them apart
MUST_PASS = {"count-on", "weekdays", "opposite-of-hot", "alphabet", "water-freezes"}
MUST_FAIL = {"ticket-json", "multiply", "refund-policy-exact", "one-word-reply"}


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    done = run_bench("eval", *RUN_GEMMA[1:], "--golden", str(GOLDEN), "--concurrency", "1", results=results)
    assert done.returncode == 0, done.stderr
    return only_run_dir(results), done.stdout


def test_checks_discriminate_on_a_real_model(golden_run):
    run_dir, stdout = golden_run
    evaluation = json.loads((run_dir / "eval.json").read_text())
    verdicts = {case["id"]: case["passed"] for case in evaluation["cases"]}
    assert {i for i, ok in verdicts.items() if ok} == MUST_PASS
    assert {i for i, ok in verdicts.items() if not ok} == MUST_FAIL
    ticket = next(c for c in evaluation["cases"] if c["id"] == "ticket-json")
    assert ticket["checks"][0]["type"] == "json" and ticket["checks"][0]["detail"].startswith("not JSON")
    quality = json.loads((run_dir / "summary.json").read_text())["quality"]
    assert (quality["passed"], quality["cases"]) == (5, 9)
    assert quality["ci95"] == pytest.approx(wilson_interval(5, 9))
    assert quality["by_tag"]["real"] == {
        "cases": 5,
        "passed": 5,
        "success_rate": 1.0,
        "ci95": pytest.approx(wilson_interval(5, 5)),
    }
    assert sorted(f["id"] for f in quality["failures"]) == sorted(MUST_FAIL)
    assert (run_dir / "golden.jsonl").read_bytes() == GOLDEN.read_bytes()  # the run keeps what it was scored on
    assert "Quality      5/9 cases passed: success rate 56% (95% Wilson interval 27%-81%)" in stdout
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert sorted(r["case_id"] for r in records) == sorted(MUST_PASS | MUST_FAIL)  # one pass, no warmup
    again = run_bench("summarize", str(run_dir), results=run_dir)  # verdicts are recomputed from the raw files
    assert "summary.json: matches the recomputation" in again.stderr and "5/9 cases passed" in again.stdout


def test_cost_per_successful_task_divides_by_the_golden_success_rate(golden_run, tmp_path):
    run_dir, _ = golden_run
    done = run_bench("cost", str(run_dir), "--hardware-offer", "cpu-2-core-vm", results=tmp_path)
    assert done.returncode == 0, done.stderr
    cost = json.loads((run_dir / "cost.json").read_text())
    sh = cost["self_hosted"]
    assert cost["throughput"]["success_basis"] == "golden-set cases passed"
    assert sh["per_successful_task"] == pytest.approx(sh["per_task"] / (5 / 9))
    low, high = wilson_interval(5, 9)  # the success rate's own part of the interval, then combined with throughput's
    parts = sh["per_successful_task_interval"]["parts"]["success rate"]
    assert parts == pytest.approx([sh["per_task"] / low, sh["per_task"] / high])  # at the low, then the high rate
    ci = sh["per_successful_task_ci95"]
    assert ci[0] <= sh["per_task"] / high and ci[1] >= sh["per_task"] / low
    report = run_bench(
        "report", str(run_dir), "--hardware-offer", "cpu-2-core-vm", "--out", str(tmp_path / "r"), results=tmp_path
    )
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## Quality on the golden set" in text and "| 5/9 | 55.6% (26.7%-81.1%) |" in text
    assert "Quality not measured" not in text  # success here means a passed case


def test_mdr_and_comparison_from_the_golden_run(golden_run, tmp_path):
    run_dir, _ = golden_run
    common = [str(run_dir), "--hardware-offer", "cpu-2-core-vm"]
    out = ["--out", str(tmp_path / "mdr.md")]
    done = run_bench(
        "mdr",
        *common,
        "--min-success-rate",
        "0.5",
        "--title",
        "support triage",
        "--context",
        "Tickets in English.",
        *out,
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    mdr = (tmp_path / "mdr.md").read_text()
    assert mdr.strip() == done.stdout.strip()  # printed and written alike
    for section in (
        "Decision and context",
        "Candidates",
        "Evaluation",
        "Rationale",
        "Default and fallback",
        "Risks",
        "Review triggers",
    ):
        assert f"\n## {section}\n" in mdr
    assert "Default: gemma3-270m (the lowest measured cost per successful task" in mdr
    assert "Fallback: openai-gpt-4o-mini." in mdr  # gemini-1.5-flash is past its deprecation date
    assert f"{GOLDEN}: 9 cases" in mdr and "| gemma3-270m | 56% (27%-81%) |" in mdr
    assert "passed 5 of 9 golden cases (56%, 95% CI 27%-81%), at or above the 50% bar (measured)" in mdr
    assert "re-decide if the success rate falls below 27% (today's lower 95% bound)" in mdr
    figures = json.loads((tmp_path / "mdr.json").read_text())
    gemma = next(c for c in figures["candidates"] if c["name"] == "gemma3-270m")
    assert f"| gemma3-270m | 56% (27%-81%) | {gemma['latency']['ttft_p99_ms']:,.0f} |" in mdr
    for api in ("openai-gpt-4o-mini", "google-gemini-1-5-flash"):
        assert re.search(rf"\| {api} \| not measured: run `bench eval", mdr)  # unmeasured claims say so
        assert f"| {api} | not measured | not measured |" in mdr

    strict = run_bench("mdr", *common, "--out", str(tmp_path / "strict.md"), results=tmp_path)
    assert strict.returncode == 0, strict.stderr
    assert "Default: none (no candidate met the bar" in (tmp_path / "strict.md").read_text()

    compare = run_bench("compare", *common, "--out", str(tmp_path / "compare.md"), results=tmp_path)
    assert compare.returncode == 0, compare.stderr
    table = (tmp_path / "compare.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| candidate"))
    assert header.count("|") == 9  # candidate + the seven columns
    row = next(line for line in table.splitlines() if line.startswith("| gemma3-270m"))
    assert "(measured: run" in row and "(catalog:" in row


def test_variants_consistency_and_invalid_output_on_the_real_model(tmp_path):
    """The fixture set with variants and a format regex. count-on gets two variants: its own prompt again
    (temperature 0, seed 0: the same answer, a pass) and the multiply prompt, which its `^\\s*6\\b` check fails:
    inconsistent. alphabet's variant is its own prompt (consistent, passing), multiply's its own prompt
    (consistent, failing). Consistency: 2 of 3 cases = 67%, Wilson 21%-94%. count-on's regex is marked a format:
    with ticket-json (not JSON, as above), 2 cases with a format check; 1 invalid output (50%), 0 wrong answers
    among them. The success rate still counts the 9 cases' own prompts: 5/9."""
    lines = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    by_id = {c["id"]: c for c in lines}
    by_id["count-on"]["variants"] = [by_id["count-on"]["prompt"], by_id["multiply"]["prompt"]]
    by_id["count-on"]["checks"][0]["format"] = True
    by_id["alphabet"]["variants"] = [by_id["alphabet"]["prompt"]]
    by_id["multiply"]["variants"] = [by_id["multiply"]["prompt"]]
    path = tmp_path / "variants.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in lines))
    results = tmp_path / "results"
    done = run_bench("eval", *RUN_GEMMA[1:], "--golden", str(path), "--concurrency", "1", results=results)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(results)
    quality = json.loads((run_dir / "summary.json").read_text())["quality"]
    assert (quality["passed"], quality["cases"], quality["golden"]["prompts"]) == (5, 9, 13)
    c = quality["consistency"]
    assert (c["cases"], c["consistent"], c["consistent_passing"], c["consistent_failing"]) == (3, 2, 1, 1)
    assert c["ci95"] == pytest.approx(wilson_interval(2, 3))
    assert [x["id"] for x in c["inconsistent"]] == ["count-on"]
    assert c["inconsistent"][0]["verdicts"] == {"count-on": True, "count-on~1": True, "count-on~2": False}
    v = quality["output_validity"]
    assert (v["cases"], v["invalid"], v["wrong_answer"], v["invalid_cases"]) == (2, 1, 0, ["ticket-json"])
    assert v["by_kind"] == {"not JSON": 1}
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert sum(r["case_id"].startswith("count-on") for r in records) == 3  # every variant was sent


def test_bench_check_of_two_golden_runs_pairs_their_verdicts(golden_run, tmp_path):
    run_dir, _ = golden_run
    done = run_bench("check", str(run_dir), "--baseline", str(run_dir), results=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "golden cases paired: 9; passed before 55.6%, now 55.6%" in done.stdout
    assert "exact McNemar p = 1" in done.stdout


def test_an_mdr_review_trigger_fires_after_a_price_change(golden_run, tmp_path):
    """The MDR of the real golden run against a catalog whose prices are dated a week before; then gpt-4o-mini's
    prices rise by half: the task's attempt costs 50% more, past the 20% threshold: exit 1."""
    import yaml

    run_dir, _ = golden_run
    raw = yaml.safe_load((REPO / "models.yaml").read_text())
    raw["api_offers"]["openai-gpt-4o-mini"]["as_of"] = "2026-11-24"
    (tmp_path / "then.yaml").write_text(yaml.safe_dump(raw))
    mdr = tmp_path / "mdr.md"
    common = ["--today", "2026-12-01"]
    args = ["--hardware-offer", "cpu-2-core-vm", "--catalog", str(tmp_path / "then.yaml"), "--min-success-rate", "0.5"]
    done = run_bench("mdr", str(run_dir), *args, "--out", str(mdr), *common, results=tmp_path)
    assert done.returncode == 0, done.stderr
    quiet = run_bench("mdr", "--check", str(mdr), "--catalog", str(tmp_path / "then.yaml"), *common, results=tmp_path)
    assert quiet.returncode == 0, quiet.stdout
    offer = raw["api_offers"]["openai-gpt-4o-mini"]
    offer["input_per_1m"], offer["output_per_1m"] = offer["input_per_1m"] * 1.5, offer["output_per_1m"] * 1.5
    (tmp_path / "now.yaml").write_text(yaml.safe_dump(raw))
    fired = run_bench("mdr", "--check", str(mdr), "--catalog", str(tmp_path / "now.yaml"), *common, results=tmp_path)
    assert fired.returncode == 1, fired.stdout
    line = next(x for x in fired.stdout.splitlines() if x.startswith("| price: openai-gpt-4o-mini |"))
    assert "| FIRES |" in line and "+50.0%" in line
