"""`bench cost`, `report`, `compare`, `mdr`, `prices` and `models`: prices, the catalog and the decisions built
on measured runs."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from bench.catalog import PRICE_FILE, default_catalog_path, load_catalog
from bench.console import say
from bench.cost import CostError, TaskProfile, cost_report, priced_throughput, with_measured_tokens
from bench.errors import UsageError
from bench.format import format_cost
from bench.results import RunDirectory, write_atomic, write_json_atomic


def add_parsers(sub) -> None:
    cost = sub.add_parser(
        "cost",
        help="price a run: self-hosted cost per token and task against API offers, break-even volume",
        description="Turn a run's measured throughput (its max SLO-compliant throughput when SLOs were set, else "
        "its fastest stage) and a hardware offer's price into cost per 1M tokens, per task and per successful "
        "task at a stated utilization, and compare monthly cost with each API offer in models.yaml. Writes "
        "cost.json into the run directory. Every price is printed with its source and date.",
    )
    cost.add_argument("run_dir", type=Path, help="a run directory written by `bench run`")
    cost.add_argument("--hardware-offer", required=True, metavar="NAME", help="a hardware_offers entry of models.yaml")
    add_pricing_args(cost)

    report = sub.add_parser(
        "report",
        help="write the self-host-versus-API cost report (Markdown and self-contained HTML with plots)",
        description="Build report.md, report.html (self-contained: plots embedded, nothing fetched), plots/*.png "
        "and report.json from one or more run directories: latency against throughput by stage, self-hosted cost "
        "per 1M tokens and per (successful) task at a stated utilization, monthly cost against each API offer with "
        "the break-even volume, and telemetry over time. Every price is printed with its source and date. "
        "Example: bench report results/RUN --hardware-offer cpu-2-core-vm",
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
        "--out", type=Path, help="report folder (default: RUN/report for one run, else results/report-<time>)"
    )
    add_pricing_args(report)

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
            "triggers. The default is the cheapest candidate per successful task among those that meet "
            "--min-success-rate on the golden set, unless --choose names one.",
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
            type=float,
            default=0.9,
            help="the golden-set success rate a candidate must reach (default 0.9)",
        )
        p.add_argument("--out", type=Path, help=f"output file (default: results/{verb}-<date>.md)")
        if verb == "mdr":
            p.add_argument("--title", default="model choice", help="what is being decided")
            p.add_argument(
                "--context",
                default="not given (--context TEXT: the task, its users and constraints)",
                help="the task, its users and constraints, in a sentence or two",
            )
            p.add_argument("--choose", metavar="NAME", help="the default model, chosen by hand (the record says so)")
        add_pricing_args(p, api_offers=False)

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
    prices_import.add_argument("--catalog", type=Path, help="the catalog whose prices.yaml to update")
    prices_import.add_argument("--out", type=Path, help="where to write (default: prices.yaml beside the catalog)")

    models = sub.add_parser("models", help="list the models in the catalog")
    models.add_argument("--catalog", type=Path, help="models.yaml to read")


def add_pricing_args(parser, api_offers: bool = True) -> None:
    """Prices and the task profile, shared by `bench cost`, `report`, `compare` and `mdr`."""
    if api_offers:
        parser.add_argument(
            "--api-offer", action="append", default=[], metavar="NAME", help="api_offers to compare (default: all)"
        )
    parser.add_argument("--catalog", type=Path, help="models.yaml to read prices from (and prices.yaml beside it)")
    task = parser.add_argument_group(
        "task profile",
        "what one task is and how many there are; token counts default to the (first) run's measured means",
    )
    task.add_argument("--tasks-per-month", type=float, default=1_000_000, help="monthly volume (default 1,000,000)")
    task.add_argument("--utilization", type=float, default=0.5, help="share of paid hours doing the work (default 0.5)")
    task.add_argument("--peak-to-average", type=float, default=1.0, help="traffic peak over its mean (default 1)")
    task.add_argument("--input-tokens", type=float, help="tokens in per task (default: the run's mean)")
    task.add_argument("--output-tokens", type=float, help="tokens out per task (default: the run's mean)")
    flow = parser.add_argument_group("API workflow terms", "the full monthly cost of a workflow; each defaults to 0")
    flow.add_argument("--reasoning-tokens", type=float, default=0.0, help="reasoning tokens per call, billed as output")
    flow.add_argument("--tool-calls", type=float, default=0.0, help="extra model calls per task (tool loops)")
    flow.add_argument(
        "--cached-input-share", type=float, help="share of input billed cached (default: the run's prefix-cache hits)"
    )
    flow.add_argument("--batch-share", type=float, default=0.0, help="share of tasks sent at the batch discount")
    flow.add_argument(
        "--retry-rate",
        type=float,
        default=0.0,
        help="extra API calls per task for failed or invalid outputs (the API model's own rate; the run's "
        "failures already count in $ per successful task)",
    )
    flow.add_argument("--escalation-rate", type=float, default=0.0, help="share of tasks escalated to a person")
    flow.add_argument("--human-review-cost", type=float, default=0.0, help="$ per escalated task")
    parser.add_argument(
        "--electricity-per-kwh", type=float, help="tariff for the energy cost of rented hardware (owned offers: theirs)"
    )


def _task_profile(args) -> TaskProfile:
    for flag in ("utilization", "cached_input_share", "batch_share", "retry_rate", "escalation_rate"):
        value = getattr(args, flag)
        if value is None:  # measured from the run
            continue
        low_ok = flag != "utilization" and value == 0
        if not (0 < value <= 1 or low_ok):
            raise UsageError(f"--{flag.replace('_', '-')} {value:g}: give a fraction between 0 and 1 (0.5 = 50%)")
    for flag in ("tasks_per_month", "peak_to_average", "reasoning_tokens", "tool_calls", "human_review_cost"):
        if getattr(args, flag) < 0 or (flag == "peak_to_average" and args.peak_to_average < 1):
            raise UsageError(
                f"--{flag.replace('_', '-')} {getattr(args, flag):g}: must be "
                + ("at least 1" if flag == "peak_to_average" else "0 or more")
            )
    return TaskProfile(
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        tasks_per_month=args.tasks_per_month,
        peak_to_average=args.peak_to_average,
        utilization=args.utilization,
        reasoning_tokens=args.reasoning_tokens,
        tool_calls_per_task=args.tool_calls,
        cached_input_share=args.cached_input_share,
        batch_share=args.batch_share,
        retry_rate=args.retry_rate,
        escalation_rate=args.escalation_rate,
        human_review_cost=args.human_review_cost,
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
    return catalog, args.api_offer or sorted(catalog.api_offers)


def cmd_cost(args) -> int:
    task = _task_profile(args)
    catalog, api_names = _pricing_catalog(args, [args.hardware_offer])
    run_dir = RunDirectory(args.run_dir)
    summary = run_dir.summary()
    try:
        measured = priced_throughput(summary)
        report = cost_report(
            measured,
            args.hardware_offer,
            catalog.hardware_offers[args.hardware_offer],
            {n: catalog.api_offers[n] for n in api_names},
            with_measured_tokens(task, measured),
            args.electricity_per_kwh,
        )
    except CostError as exc:
        raise UsageError(f"{args.run_dir}: {exc}") from None
    write_json_atomic(run_dir.file("cost.json"), report)
    print(format_cost(report))
    return 0


def cmd_report(args) -> int:
    from bench.report import build_report, write_report  # matplotlib: loaded only when a report is drawn

    task = _task_profile(args)
    catalog, api_names = _pricing_catalog(args, args.hardware_offer)
    out = args.out
    if out is None:
        out = (
            args.run_dirs[0] / "report"
            if len(args.run_dirs) == 1
            else Path("results") / time.strftime("report-%Y%m%d-%H%M%S")
        )
    data = build_report(args.run_dirs, args.hardware_offer, catalog, api_names, task, args.electricity_per_kwh)
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
    offers = import_prices(args.patterns, out, args.from_file)
    load_catalog(catalog_path)  # the merged catalog must still load
    for name, offer in sorted(offers.items()):
        print(
            f"{name:40} ${offer['input_per_1m']:g} in / ${offer['output_per_1m']:g} out per 1M tokens "
            f"({offer['source']}, as of {offer['as_of']})"
        )
    say(f"{len(offers)} offer(s) written to {out}; models.yaml entries of the same name override them")
    return 0


def cmd_decision(args) -> int:
    """bench compare and bench mdr."""
    from bench.decision import assess, comparison_blocks, mdr_blocks
    from bench.report.render import markdown

    if not 0 < args.min_success_rate <= 1:
        raise UsageError(f"--min-success-rate {args.min_success_rate:g}: give a fraction between 0 and 1")
    task = _task_profile(args)
    catalog, _ = load_catalog(args.catalog)
    names = args.candidate or sorted(catalog.candidates)
    if not names:
        raise UsageError("the catalog has no candidates: add a `candidates:` section to models.yaml")
    assessment = assess(catalog, args.run_dirs, names, args.hardware_offer, task, args.min_success_rate)
    if args.command == "compare":
        blocks = comparison_blocks(assessment)
    else:
        blocks = mdr_blocks(assessment, args.title, args.context, args.choose)
    out = args.out or Path("results") / f"{args.command}-{datetime.date.today():%Y%m%d}.md"
    text = markdown(blocks)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text)
    write_json_atomic(out.with_suffix(".json"), assessment)
    print(text)
    say(f"written: {out} (and {out.with_suffix('.json').name}, the figures behind it)")
    return 0


def cmd_models(args) -> int:
    catalog, path = load_catalog(args.catalog)
    print(f"catalog {path}")
    for name, entry in sorted(catalog.models.items()):
        engines = ",".join(entry.engines) or "any"
        print(f"  {name:24} {entry.format:5} {entry.api:12} engines={engines:10} {entry.description}")
    return 0
