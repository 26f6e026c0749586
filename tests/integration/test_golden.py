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
