"""How often does `bench check` fail a build that changed nothing? Runs N pairs of identical-setup benchmarks
of the bundled model on llama.cpp (CPU), checks the second run of each pair against the first, and counts the
pairs it failed (exit 1): the false-alarm rate, with its 95% Wilson interval. Then one deliberately slowed run
(more concurrent streams than the baseline's, so every request shares the cores with more others) checked
against the first run, which the gate must fail. Prints bench check's own output and exit code on an identical
pair and on the slowed pair, every pair's verdict, how many pairs the gate judged (it does not judge timing
when the machine was saturated with other processes) and the false-alarm rate had it judged them all, and per
metric the largest worsening a judged identical pair showed (what the tolerances must absorb on this machine).

    .venv/bin/python scripts/check_false_alarms.py                      # 5 pairs of 24 requests x 16 tokens
    .venv/bin/python scripts/check_false_alarms.py --pairs 8 --tolerance tpot_p50=+20%

Not a test: it starts 2N + 1 real llama.cpp runs (about 25 s each on 2 cores). Writes everything it measured
to RESULTS/false-alarms.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.check import check, parse_tolerances  # noqa: E402
from bench.metrics.stats import wilson_interval  # noqa: E402


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True)


def benchmark(results: Path, run_id: str, concurrency: int, a: argparse.Namespace) -> Path:
    if (results / run_id / "summary.json").exists():  # --results of an earlier call: its runs are checked again
        return results / run_id
    done = bench(
        "run",
        "--engine",
        "llamacpp",
        "--model",
        "gemma3-270m",
        "--concurrency",
        str(concurrency),
        "--requests",
        str(a.requests),
        "--input-tokens",
        str(a.input_tokens),
        "--output-tokens",
        str(a.output_tokens),
        "--results-dir",
        str(results),
        "--run-id",
        run_id,
        *(["--threads", str(a.threads)] if a.threads else []),
    )
    if done.returncode != 0:
        sys.exit(f"bench run {run_id} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return results / run_id


def gate(run: Path, baseline: Path, a: argparse.Namespace, *extra: str) -> subprocess.CompletedProcess:
    return bench(
        "check", str(run), "--baseline", str(baseline), *(["--tolerance", a.tolerance] if a.tolerance else []), *extra
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=5, help="identical-setup pairs (default 5)")
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--input-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=2, help="streams of every identical run (default 2)")
    p.add_argument("--slow-concurrency", type=int, default=8, help="streams of the slowed run (default 8)")
    p.add_argument("--threads", type=int, help="engine threads (default: bench run's)")
    p.add_argument("--tolerance", help="passed to bench check (default: its defaults)")
    p.add_argument(
        "--results",
        type=Path,
        help="where the runs go (default results/false-alarms-<time>); runs already there are reused, not rerun",
    )
    a = p.parse_args()
    results = a.results or REPO / "results" / time.strftime("false-alarms-%Y%m%d-%H%M%S")
    results.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    runs = []
    for i in range(2 * a.pairs):
        runs.append(benchmark(results, f"same-{i:02d}", a.concurrency, a))
        print(f"run {runs[-1].name} done ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    slowed = benchmark(results, "slowed", a.slow_concurrency, a)

    pairs = [(runs[2 * i], runs[2 * i + 1]) for i in range(a.pairs)]
    tolerances = parse_tolerances(a.tolerance)
    codes, judged, raw = [], [], []
    for baseline, run in pairs:
        done = gate(run, baseline, a)
        if done.returncode not in (0, 1):
            sys.exit(f"bench check {run.name} --baseline {baseline.name}: exit {done.returncode}\n{done.stderr}")
        codes.append(done.returncode)
        judged.append("not judged" not in done.stdout)
        raw.append(check(run, baseline, tolerances, max_contention=None).exit_code)
    first = gate(pairs[0][1], pairs[0][0], a)
    slow = gate(slowed, runs[0], a, "--allow-different-workload")
    slow_raw = gate(slowed, runs[0], a, "--allow-different-workload", "--max-contention", "off")
    refused = gate(slowed, runs[0], a)

    # every ordered pair of identical runs (they share runs, so they are not independent trials)
    all_pairs = list(itertools.permutations(runs, 2))
    results_all = [check(r, b, tolerances) for b, r in all_pairs]
    judged_all = [x for x in results_all if not x.not_judged]
    alarms_all = sum(x.exit_code == 1 for x in judged_all)
    largest: dict[str, float] = {}
    for (b, r), ok in zip(pairs, judged, strict=True):
        if ok:
            for f in check(r, b, tolerances).findings:
                if f.change is not None:
                    largest[f.metric] = max(largest.get(f.metric, 0.0), f.change * f.tolerance.worse)

    def rate(k: int, n: int) -> str:
        if not n:
            return "no pair judged"
        low, high = wilson_interval(k, n)
        return f"{k}/{n} = {k / n:.0%} (95% Wilson interval {low:.0%}-{high:.0%})"

    n_judged = sum(judged)
    alarms = sum(c == 1 for c in codes)
    print(
        f"== bench check on identical pair 1 ({pairs[0][1].name} against {pairs[0][0].name}): exit {first.returncode}"
    )
    print(first.stdout)
    print(
        f"== bench check on the slowed run ({slowed.name}, {a.slow_concurrency} streams) against {runs[0].name} "
        f"({a.concurrency} streams), --allow-different-workload: exit {slow.returncode}"
    )
    print(slow.stdout)
    if "not judged" in slow.stdout:
        print(
            f"== the same with --max-contention off (judged however busy the machine was): exit {slow_raw.returncode}"
        )
        print(slow_raw.stdout)
    print(f"== the same without --allow-different-workload: exit {refused.returncode}: {refused.stderr.strip()}")
    print()
    print("== identical-setup pairs (second run checked against the first):")
    for (baseline, run), code, ok, r in zip(pairs, codes, judged, raw, strict=True):
        verdict = "FALSE ALARM" if code == 1 else "pass" if ok else "pass; timing not judged: machine busy"
        print(f"   {run.name} against {baseline.name}: exit {code} ({verdict}); judged regardless: exit {r}")
    print(f"== false alarms (exit 1) over the {len(codes)} disjoint identical pairs: {rate(alarms, len(codes))}")
    print(f"   timing judged in {n_judged} of them; false alarms among those: {rate(alarms, n_judged)}")
    print(f"   judging timing however busy the machine was (--max-contention off): {rate(sum(raw), len(raw))}")
    print(
        f"   over all {len(all_pairs)} ordered pairs of the {len(runs)} identical runs (not independent): timing "
        f"judged in {len(judged_all)}, false alarms {alarms_all}"
    )
    if largest:
        print("== largest worsening in a judged identical pair, per metric:")
        for metric, value in largest.items():
            unit = "pp" if metric.endswith("rate") else "%"
            print(f"   {metric:14} {value * 100:+6.1f}{unit}  tolerance {tolerances[metric].text():>6}")
    told = "told apart" if slow.returncode == 1 else "not told apart"
    print(f"== the slowed run: exit {slow.returncode} ({told}); judged regardless: exit {slow_raw.returncode}")
    print(f"== {2 * a.pairs + 1} runs in {time.monotonic() - started:.0f} s; runs in {results}")
    (results / "false-alarms.json").write_text(
        json.dumps(
            {
                "pairs": [
                    {"baseline": b.name, "run": r.name, "exit": c, "timing_judged": ok, "exit_judged_regardless": x}
                    for (b, r), c, ok, x in zip(pairs, codes, judged, raw, strict=True)
                ],
                "false_alarms": alarms,
                "judged": n_judged,
                "false_alarms_judged_regardless": sum(raw),
                "all_ordered_pairs": {"pairs": len(all_pairs), "judged": len(judged_all), "false_alarms": alarms_all},
                "largest_identical_worsening": largest,
                "slowed": {
                    "exit": slow.returncode,
                    "exit_judged_regardless": slow_raw.returncode,
                    "refused_exit": refused.returncode,
                    "output": slow.stdout,
                },
                "identical_example": {"exit": first.returncode, "output": first.stdout},
                "settings": {k: str(v) for k, v in vars(a).items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
