"""`bench cost`, `report`, `compare`, `mdr`, `prices` and `models`: prices, the catalog and the decisions built
on measured runs."""

from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import replace
from pathlib import Path

from bench.catalog import PRICE_FILE, default_catalog_path, load_catalog
from bench.cli.common import finite_float, output_file, output_folder
from bench.console import say
from bench.cost import (
    SHAPE_TOLERANCE,
    STALE_AFTER_DAYS,
    CostError,
    PricingInputs,
    TaskProfile,
    api_success_from_run,
    cost_report,
    priced_throughput,
    public,
    with_measured_tokens,
)
from bench.errors import UsageError
from bench.format import format_cost, format_embedding_cost
from bench.quality import require_one_golden_set
from bench.results import RunDirectory, write_atomic, write_json_atomic


def add_parsers(sub) -> None:
    for add in (_add_cost, _add_report, _add_decisions, _add_route, _add_prices, _add_models):
        add(sub)


def _add_cost(sub) -> None:
    """`bench cost RUN`: one task priced on both sides."""
    cost = sub.add_parser(
        "cost",
        help="price a task: self-hosted against API offers per successful task, the answer first, itemised",
        description="Price one task (the run's mean request, or --input-tokens/--output-tokens and the workflow "
        "flags) the same way on both sides: self-hosted from the run's measured throughput (its max SLO-compliant "
        "stage when SLOs were set, else its fastest; extrapolated from its prefill and decode rates when its "
        "requests differ from the task, and said so) and a hardware offer's price with operations labour; every API "
        "offer from its token prices. Opens with the answer (the cheapest option per successful task at the "
        "volume, by how much, break-even with its 95% interval, what would flip it, which inputs are assumptions), "
        "then each side itemised. Every price is printed with its source, date and age; stale and deprecated ones "
        "are flagged. Writes cost.json into the run directory.",
    )
    cost.add_argument("run_dir", type=Path, help="a run directory written by `bench run`")
    cost.add_argument("--hardware-offer", required=True, metavar="NAME", help="a hardware_offers entry of models.yaml")
    add_pricing_args(cost)


def _add_report(sub) -> None:
    """`bench report RUN...`: the cost report with plots."""
    report = sub.add_parser(
        "report",
        help="write the self-host-versus-API cost report (Markdown and self-contained HTML with plots)",
        description="Build report.md, report.html (self-contained: plots embedded, nothing fetched), plots/*.png "
        "and report.json from one or more run directories. It leads with the answer bench cost gives (the cheapest "
        "option per successful task at the volume, task and quality bar, by how much, break-even with its 95% "
        "interval, what would flip it, which inputs are assumptions), then the task and workflow, each option "
        "itemised, break-even and monthly cost against volume, latency and throughput by stage, quality, telemetry, "
        "and every price with its source, date and age. "
        "Example: bench report results/RUN --hardware-offer cpu-2-core-vm --min-success-rate 0.9",
    )
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help="run directories written by `bench run`")
    report.add_argument(
        "--hardware-offer",
        required=True,
        action="append",
        metavar="NAME",
        help="hardware_offers entry the runs ran on: once for all runs, or once per run in order",
    )
    report.add_argument(
        "--out", type=output_folder, help="report folder (default: RUN/report for one run, else results/report-<time>)"
    )
    add_pricing_args(report)


def _add_decisions(sub) -> None:
    """`bench compare` and `bench mdr` (with --check): the candidates side by side, and the decision record."""
    for verb, summary, extra in (
        (
            "compare",
            "write the comparison table of the catalog's candidates, from measured runs and catalog facts",
            "Writes compare.md and compare.json.",
        ),
        (
            "mdr",
            "write a model decision record (Markdown) from measured runs and catalog facts",
            "Sections: decision and context, candidates, evaluation, rationale, default and fallback, risks, review "
            "triggers, and the decision inputs in a machine-readable block (prices with their dates, success rates "
            "with each case's verdict, throughput, the volume and the range it holds for) that `bench mdr --check "
            "MDR.md` reads to say which trigger fires now. The default is the cheapest candidate per successful "
            "task among those that meet --min-success-rate on the golden set, unless --choose names one.",
        ),
    ):
        p = sub.add_parser(
            verb,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. Candidates come from models.yaml `candidates:`; runs "
            "are matched to them by model name (a golden run from `bench eval` gives task fit; a load run gives "
            "latency and throughput). Every cell says whether it was measured or read from the catalog. " + extra,
        )
        p.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN", help="run directories to draw figures from")
        p.add_argument(
            "--candidate",
            action="append",
            default=[],
            metavar="NAME",
            help="catalog candidates to include (default: all)",
        )
        p.add_argument("--hardware-offer", metavar="NAME", help="hardware_offers entry that prices self-hosted runs")
        p.add_argument(
            "--min-success-rate",
            type=finite_float,
            default=0.9,
            help="the golden-set success rate a candidate must reach (default 0.9)",
        )
        p.add_argument("--out", type=output_file, help=f"output file (default: results/{verb}-<date>.md)")
        if verb == "mdr":
            p.add_argument("--title", default="model choice", help="what is being decided")
            p.add_argument(
                "--context",
                default="not given (--context TEXT: the task, its users and constraints)",
                help="the task, its users and constraints, in a sentence or two",
            )
            p.add_argument("--choose", metavar="NAME", help="the default model, chosen by hand (the record says so)")
            p.add_argument(
                "--price-change",
                type=finite_float,
                metavar="FRACTION",
                help="a price that moves the task's cost by more than this share re-opens the decision (default 0.2, "
                "bench.decision.PRICE_CHANGE; with --check: the MDR's own)",
            )
            review = p.add_argument_group(
                "checking an MDR (--check)",
                "which review triggers of an MDR written by `bench mdr` fire now: a price that moved the task's cost "
                "past the threshold since the MDR, a price gone stale (--stale-after, --today), the default or "
                "fallback deprecated, a newer golden run of a candidate below the MDR's lower 95% bound or clearly "
                "worse on the same cases (exact McNemar test), a volume outside the range the MDR holds for. Exit 1 "
                "when any fires, 0 when none does.",
            )
            review.add_argument("--check", type=Path, metavar="MDR.md", help="the MDR to check (writes nothing)")
            review.add_argument(
                "--runs", type=Path, nargs="+", default=[], metavar="RUN", help="newer golden runs of its candidates"
            )
            review.add_argument("--volume", type=finite_float, metavar="N", help="today's volume in tasks a month")
        add_pricing_args(p, api_offers=False)


def _add_route(sub) -> None:
    """`bench route`: each tag of a golden set to its cheapest good-enough candidate."""
    route = sub.add_parser(
        "route",
        help="route each tag of a golden set to the cheapest candidate that meets the bar, priced against the best "
        "single model",
        description="Given golden runs of several candidates on one golden set (bench eval --golden FILE, once per "
        "candidate; runs matched to catalog candidates by model name), split the cases by tag (each case to the "
        "first --tag it carries, in order; without --tag, by the first tag it lists), and route each tag to "
        "the candidate with the lowest cost per successful task among those passing at least --min-success of its "
        "cases (else the most accurate). Reports per tag the choice and the others, then the routed mix's blended "
        "success rate, cost per task and cost per successful task against the best single model and every other, "
        "with 95% intervals (Wilson intervals of each tag's success rate and the throughput's t interval, "
        "combined as bench cost does). Each tag is priced at its own cases' mean tokens in each candidate's run; "
        "self-hosted candidates on --hardware-offer at the target utilization. bench/route.py has the formulas. "
        "Writes route.md and route.json.",
    )
    route.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help="golden runs, one per candidate")
    route.add_argument("--hardware-offer", metavar="NAME", help="hardware_offers entry that prices self-hosted runs")
    route.add_argument(
        "--min-success",
        dest="min_success_rate",
        type=finite_float,
        default=0.9,
        help="the success rate a candidate must reach on a tag's cases to take it (default 0.9)",
    )
    route.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="a routing tag, repeatable, in priority order (a case goes to the first it carries)",
    )
    route.add_argument("--out", type=output_file, help="output file (default: results/route-<date>.md)")
    add_pricing_args(route, api_offers=False)


def _add_prices(sub) -> None:
    """`bench prices import`: offers from LiteLLM's bundled price map."""
    prices = sub.add_parser(
        "prices",
        help="import API prices from LiteLLM's bundled price map",
        description="Work with API prices. `bench prices import PATTERN...` reads the model price map that the "
        "litellm package ships (install it with `pip install --no-deps litellm`; no service is called), converts "
        "the chat and completion models whose names match the patterns into api_offers, and merges them into "
        "prices.yaml beside the catalog. The catalog loads that file; an api_offers entry of the same name in "
        "models.yaml overrides an imported one. Example: bench prices import gpt-4.1-mini 'claude-haiku-4-5*'",
    )
    prices_sub = prices.add_subparsers(dest="prices_command", metavar="ACTION", required=True)
    prices_import = prices_sub.add_parser("import", help="import offers matching shell-style patterns")
    prices_import.add_argument("patterns", nargs="+", metavar="PATTERN", help="LiteLLM model names or globs")
    prices_import.add_argument(
        "--from",
        dest="from_file",
        type=Path,
        metavar="FILE",
        help="a LiteLLM-format JSON price map to read instead of the installed one",
    )
    prices_import.add_argument(
        "--source-date",
        type=datetime.date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="the day the price map was published (e.g. the litellm release's date); the map carries no date, so "
        "without this the offers' as_of is null and every output says their date is unknown",
    )
    prices_import.add_argument("--source-version", help="the price map's version (default: the litellm version)")
    prices_import.add_argument("--catalog", type=Path, help="the catalog whose prices.yaml to update")
    prices_import.add_argument(
        "--out", type=output_file, help="where to write (default: prices.yaml beside the catalog)"
    )


def _add_models(sub) -> None:
    """`bench models`: the catalog's models."""
    models = sub.add_parser("models", help="list the models in the catalog")
    models.add_argument("--catalog", type=Path, help="models.yaml to read")


def add_pricing_args(parser, api_offers: bool = True) -> None:
    """Prices, the task and its workflow, shared by `bench cost`, `report`, `compare` and `mdr`. Every option
    defaults to None here so the output can tell a given value from a default (assumptions are listed)."""
    if api_offers:
        parser.add_argument(
            "--api-offer", action="append", default=[], metavar="NAME", help="api_offers to compare (default: all)"
        )
    parser.add_argument("--catalog", type=Path, help="models.yaml to read prices from (and prices.yaml beside it)")
    task = parser.add_argument_group(
        "task profile",
        "what one task is and how many there are; token counts default to the (first) run's measured means",
    )
    for flag, kind, default, text in TASK_FLAGS:
        task.add_argument(flag, type=kind, help=f"{text} (default {default})")
    task.add_argument("--input-tokens", type=finite_float, help="tokens in per task (default: the run's mean)")
    task.add_argument("--output-tokens", type=finite_float, help="tokens out per task (default: the run's mean)")
    task.add_argument(
        "--shape-tolerance",
        type=finite_float,
        help="a run prices the task directly when its mean request is within this relative difference of the task "
        f"(input, output, cached share); else its rate is extrapolated and says so (default {SHAPE_TOLERANCE:g})",
    )
    flow = parser.add_argument_group(
        "workflow (applied to self-hosted and API alike)",
        "the full cost of a task; every term defaults to 0 and is listed as an assumption",
    )
    for flag, kind, default, text in WORKFLOW_FLAGS:
        flow.add_argument(flag, type=kind, help=f"{text} (default {default})")
    flow.add_argument(
        "--tool-context",
        choices=("carried", "reset"),
        help="carried: each later call reads the task and every earlier tool call and result; reset: the task and "
        "the latest result (default carried)",
    )
    flow.add_argument(
        "--escalation-rate",
        type=_escalation,
        help="share of tasks sent to a person, the same on both sides; or `failures`: every task the model fails "
        "after its retries, from each side's own success rate (default 0)",
    )
    flow.add_argument("--retry-rate", type=finite_float, help=argparse.SUPPRESS)  # removed: says what replaced it
    quality = parser.add_argument_group("success rates", "each side's from its own golden run, else assumed")
    if not any(a.dest == "min_success_rate" for a in parser._actions):
        quality.add_argument(
            "--min-success-rate",
            type=finite_float,
            default=None,
            help="the quality bar: options below it are left out of the answer (default: no bar)",
        )
    quality.add_argument(
        "--self-hosted-success-rate",
        type=finite_float,
        help="assume this success rate for the self-hosted runs instead of their measured one (recorded as an "
        "assumption)",
    )
    quality.add_argument(
        "--api-success-rate",
        type=finite_float,
        help="the success rate assumed for API offers without a golden run of their own (default 1)",
    )
    if api_offers:
        quality.add_argument(
            "--api-run",
            action="append",
            default=[],
            metavar="OFFER=RUN",
            help="a golden run (bench eval --endpoint ...) against an API offer's model: its measured success rate "
            "prices that offer",
        )
    ages = parser.add_argument_group("prices")
    ages.add_argument(
        "--stale-after",
        type=int,
        default=None,
        help=f"flag prices older than this many days (default {STALE_AFTER_DAYS}; mdr --check: the MDR's own)",
    )
    ages.add_argument(
        "--today",
        type=datetime.date.fromisoformat,
        help="the date prices are aged and deprecations checked against, YYYY-MM-DD (default: today)",
    )
    ages.add_argument(
        "--electricity-per-kwh",
        type=finite_float,
        help="tariff for the energy cost of rented hardware (owned offers: theirs)",
    )


TASK_FLAGS = (
    ("--tasks-per-month", finite_float, "1,000,000", "monthly volume"),
    ("--utilization", finite_float, "0.5", "share of paid hours doing the work"),
    ("--peak-to-average", finite_float, "1", "traffic peak over its mean"),
)
WORKFLOW_FLAGS = (
    ("--reasoning-tokens", finite_float, 0, "reasoning tokens per model call (generated, and billed as output)"),
    ("--tool-calls", int, 0, "tool calls per attempt: each adds a model call"),
    ("--tool-call-tokens", finite_float, 0, "output tokens of one tool call (its arguments)"),
    ("--tool-result-tokens", finite_float, 0, "input tokens one tool result adds to the context"),
    (
        "--cached-input-share",
        finite_float,
        "none: the API bills 0 cached, self-hosting keeps its run's measured prefix-cache hits",
        "share of input read from the prefix cache, on both sides (API: the cached price; self-hosted: not prefilled)",
    ),
    ("--cache-write-share", finite_float, 0, "share of input written to the cache (API: the cache-write price)"),
    ("--batch-share", finite_float, 0, "share of tasks sent in batch (API: its discount; self-hosted: off-peak)"),
    ("--max-retries", int, 0, "a failed attempt is retried up to this many times; retries cost on both sides"),
    ("--human-review-cost", finite_float, 0, "$ per escalated task, the same whichever side escalates"),
)
DEFAULTS = {
    "tasks_per_month": 1_000_000.0,
    "utilization": 0.5,
    "peak_to_average": 1.0,
    "reasoning_tokens": 0.0,
    "tool_calls": 0,
    "tool_call_tokens": 0.0,
    "tool_result_tokens": 0.0,
    "tool_context": "carried",
    "cached_input_share": None,
    "cache_write_share": 0.0,
    "batch_share": 0.0,
    "max_retries": 0,
    "escalation_rate": 0.0,
    "human_review_cost": 0.0,
    "shape_tolerance": SHAPE_TOLERANCE,
}


def _escalation(text: str) -> float | str:
    if text == "failures":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a fraction between 0 and 1, or `failures`, got {text!r}") from None


def _check_stale_after(days: int | None) -> None:
    if days is not None and days < 0:
        raise UsageError(f"--stale-after {days}: must be 0 or more days")


def _fraction(flag: str, value: float, zero_ok: bool = True) -> None:
    if not (0 < value <= 1 or (zero_ok and value == 0)):
        raise UsageError(f"--{flag.replace('_', '-')} {value:g}: give a fraction between 0 and 1 (0.5 = 50%)")


def _pricing(args) -> PricingInputs:
    if getattr(args, "retry_rate", None) is not None:
        raise UsageError(
            "--retry-rate was removed: retries now follow each side's own success rate and apply to both sides; "
            "give --max-retries N (and --api-success-rate or --api-run for the API's rate)"
        )
    given = {k for k in DEFAULTS if getattr(args, k, None) is not None}
    values = {k: (getattr(args, k) if k in given else v) for k, v in DEFAULTS.items()}
    _fraction("utilization", values["utilization"], zero_ok=False)
    for flag in ("cached_input_share", "cache_write_share", "batch_share"):
        if values[flag] is not None:
            _fraction(flag, values[flag])
    if (values["cached_input_share"] or 0) + values["cache_write_share"] > 1:
        raise UsageError("--cached-input-share and --cache-write-share add up to more than 1")
    if values["escalation_rate"] != "failures":
        _fraction("escalation_rate", values["escalation_rate"])
    for flag in (
        "tasks_per_month",
        "reasoning_tokens",
        "tool_calls",
        "tool_call_tokens",
        "tool_result_tokens",
        "max_retries",
        "human_review_cost",
        "shape_tolerance",
    ):
        if values[flag] < 0:
            raise UsageError(f"--{flag.replace('_', '-')} {values[flag]:g}: must be 0 or more")
    if values["peak_to_average"] < 1:
        raise UsageError(f"--peak-to-average {values['peak_to_average']:g}: must be at least 1")
    for flag in ("min_success_rate", "self_hosted_success_rate", "api_success_rate"):
        value = getattr(args, flag, None)
        if value is not None:
            _fraction(flag, value, zero_ok=flag != "min_success_rate")
    for flag in ("input_tokens", "output_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise UsageError(f"--{flag.replace('_', '-')} {value:g}: must be 0 or more")
    _check_stale_after(args.stale_after)
    task = TaskProfile(input_tokens=args.input_tokens, output_tokens=args.output_tokens, **values)
    for flag in ("input_tokens", "output_tokens"):
        if getattr(args, flag) is not None:
            given.add(flag)
    return PricingInputs(
        task=task,
        given=frozenset(given),
        bar=getattr(args, "min_success_rate", None),
        self_hosted_success_rate=args.self_hosted_success_rate,
        api_success_rate=1.0 if args.api_success_rate is None else args.api_success_rate,
        today=args.today or datetime.date.today(),
        stale_after=STALE_AFTER_DAYS if args.stale_after is None else args.stale_after,
        electricity_per_kwh=args.electricity_per_kwh,
    )


def _pricing_catalog(args, hardware_offers: list[str]):
    """The catalog, the checked hardware offer names and the API offers to compare."""
    catalog, catalog_path = load_catalog(args.catalog)
    for name in hardware_offers:
        if name not in catalog.hardware_offers:
            known = ", ".join(sorted(catalog.hardware_offers)) or "none"
            raise UsageError(f"--hardware-offer {name!r} is not in {catalog_path} (offers: {known})")
    unknown = [name for name in args.api_offer if name not in catalog.api_offers]
    if unknown:
        raise UsageError(
            f"--api-offer {unknown[0]!r} is not in {catalog_path} or its prices.yaml (offers: "
            f"{', '.join(sorted(catalog.api_offers)) or 'none'})"
        )
    # by default the generation offers; an embeddings run is priced against the embedding ones (_embedding_cost)
    return catalog, args.api_offer or sorted(n for n, o in catalog.api_offers.items() if o.mode == "chat")


def _embedding_cost(args, pricing, catalog, run_dir: RunDirectory, summary, offer_name: str) -> dict:
    """An embeddings (or rerank) run priced per 1M embedded tokens against the API embedding offers
    (--api-offer names them; default: every offer of mode embedding)."""
    from bench.cost import embedding_cost

    names = args.api_offer or sorted(n for n, o in catalog.api_offers.items() if o.mode == "embedding")
    try:
        return embedding_cost(
            summary,
            offer_name,
            catalog.hardware_offers[offer_name],
            {n: catalog.api_offers[n] for n in names},
            pricing.task.utilization,
            pricing.today,
            pricing.stale_after,
        )
    except CostError as exc:
        raise UsageError(f"{run_dir.path}: {exc}") from None


def api_successes(args, api_names: list[str], priced_runs: list[Path]) -> dict[str, dict]:
    """--api-run OFFER=RUN: each API offer's success rate from its own golden run, on the golden set the
    priced runs that are golden runs ran."""
    out = {}
    qualities = [(str(path), RunDirectory(path).summary().quality) for path in priced_runs]
    for item in args.api_run:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UsageError(f"--api-run {item!r}: give OFFER=RUN_DIR")
        if name not in api_names:
            raise UsageError(f"--api-run {item!r}: {name!r} is not among the API offers priced here")
        run_dir = RunDirectory(Path(path))
        summary, manifest = run_dir.summary(), run_dir.manifest()
        if summary.quality is None or summary.quality.success_rate is None:
            raise UsageError(f"--api-run {item!r}: {path} is not a golden run (bench eval --golden FILE)")
        out[name] = api_success_from_run(summary, manifest.run_id)
        qualities.append((path, summary.quality))
    require_one_golden_set(qualities, "compare success on")
    return out


def cmd_cost(args) -> int:
    pricing = _pricing(args)
    catalog, api_names = _pricing_catalog(args, [args.hardware_offer])
    pricing = replace(pricing, api_success=api_successes(args, api_names, [args.run_dir]))
    run_dir = RunDirectory(args.run_dir)
    summary, manifest = run_dir.summary(), run_dir.manifest()
    if summary.pooling is not None:  # an embeddings or rerank run: $ per 1M embedded tokens
        report = _embedding_cost(args, pricing, catalog, run_dir, summary, args.hardware_offer)
        write_json_atomic(run_dir.file("cost.json"), report)
        print(format_embedding_cost(report))
        return 0
    try:
        measured = priced_throughput(summary)
        pricing = replace(pricing, task=with_measured_tokens(pricing.task, measured))
        report = cost_report(
            [
                {
                    "run_id": manifest.run_id,
                    "measured": measured,
                    "offer_name": args.hardware_offer,
                    "offer": catalog.hardware_offers[args.hardware_offer],
                }
            ],
            {n: catalog.api_offers[n] for n in api_names},
            pricing,
            measured_from=manifest.run_id,
        )
    except CostError as exc:
        raise UsageError(f"{args.run_dir}: {exc}") from None
    report = public(report)
    text = format_cost(report)
    # one run, one self-hosted option: cost.json names it directly, beside the priced stage's figures
    write_json_atomic(
        run_dir.file("cost.json"), {**report, "self_hosted": report["self_hosted"][0], "throughput": measured}
    )
    print(text)
    return 0


def _pooled(path: Path) -> bool:
    """An embeddings or rerank run (a path that is no run says so in build_report, after the flags' checks)."""
    from bench.report.embedding import is_pooling_run

    try:
        return is_pooling_run(RunDirectory(path).summary())
    except UsageError:
        return False


def _offers_per_run(hardware_offer_names: list[str], run_dirs: list[Path]) -> list[str]:
    """The hardware offer of each run: --hardware-offer once for all, or once per run in order."""
    if len(hardware_offer_names) not in (1, len(run_dirs)):
        raise UsageError(
            f"give --hardware-offer once (for every run) or once per run ({len(run_dirs)}), "
            f"not {len(hardware_offer_names)} times"
        )
    return hardware_offer_names * len(run_dirs) if len(hardware_offer_names) == 1 else hardware_offer_names


def cmd_report(args) -> int:
    from bench.report import build_report, write_report  # matplotlib: loaded only when a report is drawn

    offers = _offers_per_run(args.hardware_offer, args.run_dirs)  # the flags' shape, before any run is read
    pricing = _pricing(args)
    catalog, api_names = _pricing_catalog(args, offers)
    pricing = replace(pricing, api_success=api_successes(args, api_names, args.run_dirs))
    out = args.out
    if out is None:
        out = (
            args.run_dirs[0] / "report"
            if len(args.run_dirs) == 1
            else Path("results") / time.strftime("report-%Y%m%d-%H%M%S")
        )
    from bench.report.embedding import build_embedding_report, write_embedding_report

    pooled = [_pooled(p) for p in args.run_dirs]
    if any(pooled) and not all(pooled):
        raise UsageError("embeddings or rerank runs and generation runs make different reports; give one kind")
    if all(pooled):  # embeddings, rerank: their own table, priced per 1M embedded tokens
        names = args.api_offer or sorted(n for n, o in catalog.api_offers.items() if o.mode == "embedding")
        data = build_embedding_report(args.run_dirs, offers, catalog, names, pricing)
        paths = write_embedding_report(data, out)
    else:
        data = build_report(args.run_dirs, offers, catalog, api_names, pricing)
        say(f"drawing the plots and writing the report of {len(args.run_dirs)} run(s) to {out}")
        paths = write_report(data, out)
    for warning in data["warnings"]:
        say(f"warning: {warning}")
    print(f"report  {paths['markdown']}\nhtml    {paths['html']}  (self-contained)\nplots   {out / 'plots'}")
    return 0


def cmd_prices(args) -> int:
    from bench.prices import import_prices

    catalog_path = args.catalog or default_catalog_path()
    out = args.out or catalog_path.parent / PRICE_FILE
    offers = import_prices(
        args.patterns, out, args.from_file, source_date=args.source_date, source_version=args.source_version
    )
    load_catalog(catalog_path)  # the merged catalog must still load
    for name, offer in sorted(offers.items()):
        extras = [f"{len(offer['tiers'])} long-prompt tier(s)"] if offer.get("tiers") else []
        if offer.get("cache_write_input_per_1m") is not None:
            extras.append(f"cache write ${offer['cache_write_input_per_1m']:g}")
        if offer.get("deprecation"):
            extras.append(f"deprecation {offer['deprecation']}")
        print(
            f"{name:40} ${offer['input_per_1m']:g} in / ${offer['output_per_1m']:g} out per 1M tokens"
            + (f"; {', '.join(extras)}" if extras else "")
            + f" ({offer['source']}, as of {offer['as_of'] or 'unknown: give --source-date'}, "
            f"read {offer['retrieved']})"
        )
    say(f"{len(offers)} offer(s) written to {out}; models.yaml entries of the same name override them")
    return 0


def cmd_mdr_check(args) -> int:
    """bench mdr --check MDR.md: which review triggers fire now (exit 1 when any does)."""
    from bench.decision import read_inputs, review, review_blocks
    from bench.report.render import markdown

    try:
        text = args.check.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"--check {args.check}: no such file") from None
    if args.price_change is not None and not 0 < args.price_change:
        raise UsageError(f"--price-change {args.price_change:g}: give a positive fraction (0.2 = 20%)")
    if args.volume is not None and args.volume < 0:
        raise UsageError(f"--volume {args.volume:g}: must be 0 or more")
    inputs = read_inputs(text, str(args.check))
    catalog, _ = load_catalog(args.catalog)
    today = args.today or datetime.date.today()
    _check_stale_after(args.stale_after)  # None: the MDR's own
    rows = review(
        inputs, catalog, today, [*args.runs, *args.run_dirs], args.volume, args.price_change, args.stale_after
    )
    print(markdown(review_blocks(str(args.check), inputs, rows, today)))
    return 1 if any(r["fires"] for r in rows) else 0


def cmd_decision(args) -> int:
    """bench compare and bench mdr."""
    from bench.decision import PRICE_CHANGE, assess, comparison_blocks, mdr_blocks
    from bench.report.render import markdown

    if args.command == "mdr" and args.check is not None:
        return cmd_mdr_check(args)
    if args.command == "mdr" and (args.runs or args.volume is not None):
        raise UsageError("--runs and --volume go with --check MDR.md (to write an MDR, give its runs as RUN ...)")

    if not 0 < args.min_success_rate <= 1:
        raise UsageError(f"--min-success-rate {args.min_success_rate:g}: give a fraction between 0 and 1")
    pricing = _pricing(args)
    catalog, _ = load_catalog(args.catalog)
    names = args.candidate or sorted(catalog.candidates)
    if not names:
        raise UsageError("the catalog has no candidates: add a `candidates:` section to models.yaml")
    assessment = assess(catalog, args.run_dirs, names, args.hardware_offer, pricing)
    if args.command == "compare":
        blocks = comparison_blocks(assessment)
    else:
        if args.price_change is not None and not 0 < args.price_change:
            raise UsageError(f"--price-change {args.price_change:g}: give a positive fraction (0.2 = 20%)")
        change = PRICE_CHANGE if args.price_change is None else args.price_change
        blocks = mdr_blocks(assessment, args.title, args.context, args.choose, pricing.today, change)
    out = args.out or Path("results") / f"{args.command}-{pricing.today:%Y%m%d}.md"
    text = markdown(blocks)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text)
    write_json_atomic(out.with_suffix(".json"), public(assessment))
    print(text)
    say(f"written: {out} (and {out.with_suffix('.json').name}, the figures behind it)")
    return 0


def cmd_route(args) -> int:
    """bench route: per tag, the cheapest candidate meeting the bar; the routed mix against single models."""
    from bench.report.render import markdown
    from bench.route import route, route_blocks

    if not 0 < args.min_success_rate <= 1:
        raise UsageError(f"--min-success {args.min_success_rate:g}: give a fraction between 0 and 1")
    if args.input_tokens is not None or args.output_tokens is not None:
        raise UsageError(
            "bench route prices each tag at its own cases' measured tokens; leave out --input-tokens/--output-tokens"
        )
    pricing = _pricing(args)
    catalog, _ = load_catalog(args.catalog)
    result = route(args.run_dirs, catalog, args.hardware_offer, pricing, args.min_success_rate, args.tag or None)
    out = args.out or Path("results") / f"route-{pricing.today:%Y%m%d}.md"
    text = markdown(route_blocks(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text)
    write_json_atomic(out.with_suffix(".json"), public(result))
    print(text)
    say(f"written: {out} (and {out.with_suffix('.json').name}, the figures behind it)")
    return 0


def cmd_models(args) -> int:
    catalog, path = load_catalog(args.catalog)
    print(f"catalog {path}")
    for name, entry in sorted(catalog.models.items()):
        engines = ",".join(entry.engines) or "any"
        roles = ",".join(entry.roles)
        print(f"  {name:24} {entry.format:5} {entry.api:12} roles={roles:10} engines={engines:10} {entry.description}")
    return 0
