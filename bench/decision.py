"""`bench compare` and `bench mdr`: candidates from the catalog, measured runs matched to them, the
comparison table, and the model decision record.

Every figure comes from a run (marked `measured: run <id>`) or from the catalog (marked `catalog:
<source>, <date>`); a judgement derived from catalog facts by a fixed rule says so. Nothing is typed in
as prose by hand except the MDR's title and context.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from bench.catalog import Candidate, Catalog
from bench.cost import (
    STALE_AFTER_DAYS,
    CostError,
    PricingInputs,
    TaskProfile,
    api_attempt,
    api_section,
    api_success_from_run,
    break_even_entry,
    instance_hourly,
    price_age,
    priced_throughput,
    self_hosted_section,
    self_hosted_success,
    volume_flips,
    with_measured_tokens,
)
from bench.errors import UsageError
from bench.format import ci_text, money, tasks_per_month, volume_text
from bench.quality import mcnemar_exact, require_one_golden_set
from bench.report.render import Heading, Paragraph, Table
from bench.results import RunDirectory, first_error

PRICE_CHANGE = 0.20  # a price change past this share re-opens the decision
INPUTS_FORMAT = "bench-mdr-inputs/1"
INPUTS_MARK = "<!-- bench-mdr-inputs: the figures this record was decided on; `bench mdr --check` reads them -->"

COLUMNS = (
    "task fit",
    "expected quality",
    "latency risk",
    "cost risk",
    "privacy risk",
    "operational burden",
    "migration difficulty",
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _catalog_mark(c: Candidate) -> str:
    return f"(catalog: {c.source}, {c.as_of})"


def _load_runs(run_dirs: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for path in run_dirs:
        run_dir = RunDirectory(path)
        manifest, summary = run_dir.manifest(), run_dir.summary()
        runs.append(
            {
                "path": path,
                "run_id": manifest.run_id,
                "model": manifest.model.name if manifest.model else None,
                "engine": manifest.engine,
                "status": manifest.status,
                "golden": manifest.golden,
                "slo": summary.slo,
                "summary": summary,
                "verdicts": run_dir.own_prompt_verdicts(),
            }
        )
    return runs


def _runs_for(name: str, c: Candidate, runs: list[dict[str, Any]]) -> tuple[dict | None, dict | None]:
    """The candidate's golden run and its load run (a non-golden run if there is one, else the golden run)."""
    names = {n for n in (c.model, c.served_name, name) if n}
    mine = [r for r in runs if r["model"] in names]
    golden = next((r for r in mine if r["golden"]), None)
    load = next((r for r in mine if not r["golden"]), golden)
    return golden, load


def assess(
    catalog: Catalog,
    run_dirs: list[Path],
    names: list[str],
    hardware_offer: str | None,
    pricing: PricingInputs,
) -> dict[str, Any]:
    """Each candidate's measured and catalog figures, priced for the task with bench.cost's workflow model
    (the same as `bench cost`): a self-hosted candidate from its load run on the hardware offer, an API
    candidate from its catalog price; each side's success rate from its own golden run, else assumed."""
    unknown = [n for n in names if n not in catalog.candidates]
    if unknown:
        raise UsageError(
            f"--candidate {unknown[0]!r} is not in the catalog's candidates: "
            f"{', '.join(sorted(catalog.candidates)) or 'none'}"
        )
    if hardware_offer is not None and hardware_offer not in catalog.hardware_offers:
        raise UsageError(
            f"--hardware-offer {hardware_offer!r} is not in the catalog "
            f"(offers: {', '.join(sorted(catalog.hardware_offers))})"
        )
    today = pricing.today or datetime.date.today()
    runs = _load_runs(run_dirs)
    require_one_golden_set(
        [(str(r["path"]), r["summary"].quality) for r in runs if r["golden"]], "compare candidates on"
    )
    paired = {n: _runs_for(n, catalog.candidates[n], runs) for n in names}  # (golden run, load run)
    matched = {r["run_id"] for pair in paired.values() for r in pair if r}
    unmatched = [r["run_id"] for r in runs if r["run_id"] not in matched]
    if unmatched:
        raise UsageError(
            f"run {unmatched[0]} matches no candidate (its model is not a candidate's `model` or "
            "`served_name`); add a candidate for it to models.yaml"
        )
    task = pricing.task
    first_golden = next((r for r in runs if r["golden"]), runs[0] if runs else None)
    if first_golden is not None:
        try:
            task = with_measured_tokens(task, priced_throughput(first_golden["summary"]))
        except CostError as exc:
            raise UsageError(f"{first_golden['path']}: {exc}") from None
    if task.input_tokens is None or task.output_tokens is None:
        raise UsageError("no run to measure the task from: give --input-tokens and --output-tokens")
    candidates = [_candidate(name, catalog, *paired[name], hardware_offer, pricing, task, today) for name in names]
    return {
        "task": task.to_json(),
        "today": today.isoformat(),
        "min_success_rate": pricing.bar,
        "stale_after_days": pricing.stale_after,
        "hardware_offer": hardware_offer,
        "candidates": candidates,
        "runs": [r["run_id"] for r in runs],
    }


def _candidate(
    name: str,
    catalog: Catalog,
    golden: dict[str, Any] | None,
    load: dict[str, Any] | None,
    hardware_offer: str | None,
    pricing: PricingInputs,
    task: TaskProfile,
    today: datetime.date,
) -> dict[str, Any]:
    """One candidate: quality from its golden run, latency and throughput from its load run, and its cost."""
    c = catalog.candidates[name]
    entry: dict[str, Any] = {
        "name": name,
        "candidate": c.model_dump(mode="json"),
        "golden_run": golden and golden["run_id"],
        "load_run": load and load["run_id"],
    }
    if golden:
        q = golden["summary"].quality
        entry["quality"] = {
            "passed": q.passed,
            "cases": q.cases,
            "success_rate": q.success_rate,
            "ci95": q.ci95,
            "golden": q.golden,
            "verdicts": golden["verdicts"],
        }
        entry["meets_bar"] = q.success_rate is not None and q.success_rate >= pricing.bar
    tp = _load_figures(entry, load) if load else None
    try:
        priced = _priced(name, c, catalog, golden, load, tp, hardware_offer, pricing, task, today)
    except CostError as exc:
        raise UsageError(f"candidate {name}: {exc}") from None
    if priced is None:
        return entry
    section, basis = priced
    volume = task.tasks_per_month
    entry["cost"] = {
        "basis": basis,
        "linear": section["kind"] == "api",
        # at the stated volume (self-hosted: whole instances), like the cost per successful task
        "per_task": section["monthly"] / volume if volume else section["per_task"],
        "per_task_at_utilization": section["per_task"],
        "success": section["success"],
        "per_successful_task_at_volume": section["per_successful_task_at_volume"],
        "per_successful_task_at_volume_ci95": section["per_successful_task_at_volume_ci95"],
        "monthly": section["monthly"],
        "volume": volume,
        "instances": section.get("instances"),
        "utilization": task.utilization,
        "price_age": section["price_age"],
        "deprecation": section.get("deprecation"),
    }
    if entry.get("quality") and entry["quality"]["success_rate"]:  # measured quality: a successful task
        entry["cost"]["per_successful_task"] = section["per_successful_task_at_volume"]
        entry["cost"]["per_successful_task_ci95"] = section["per_successful_task_at_volume_ci95"]
    entry["_section"] = section
    return entry


def _load_figures(entry: dict[str, Any], load: dict[str, Any]) -> dict[str, Any]:
    """The load run's priced stage into the entry (latency, throughput, operations); its throughput back."""
    try:
        tp = priced_throughput(load["summary"])
    except CostError as exc:
        raise UsageError(f"run {load['run_id']}: {exc}") from None
    stage = load["summary"].stage(tp["stage"])
    slo = load["slo"]
    entry["latency"] = {
        "stage": tp["label"],
        "ttft_p99_ms": stage.ttft_ms.p99,
        "e2e_p99_ms": stage.e2e_ms.p99,
        "tpot_p50_ms": stage.tpot_ms.p50,
        "slo": slo.model_dump() if slo else None,
        "compliant": bool(slo and slo.max_slo_compliant),
    }
    entry["throughput"] = {"requests_per_s": tp["requests_per_s"], "output_tokens_per_s": tp["output_tokens_per_s"]}
    entry["operations"] = {
        "load_time_s": load["engine"].load_time_s if load["engine"] else None,
        "engine_peak_rss_bytes": stage.telemetry.engine_peak_rss_bytes,
    }
    return tp


def _priced(
    name: str,
    c: Candidate,
    catalog: Catalog,
    golden: dict[str, Any] | None,
    load: dict[str, Any] | None,
    tp: dict[str, Any] | None,
    hardware_offer: str | None,
    pricing: PricingInputs,
    task: TaskProfile,
    today: datetime.date,
) -> tuple[dict[str, Any], str] | None:
    """The candidate's cost section and its basis in words: self-hosted from its load run on the hardware
    offer, an API from its catalog price; None when neither can be priced."""
    success = api_success_from_run(golden["summary"], golden["run_id"]) if golden else None
    if c.access == "self-hosted" and load and hardware_offer:
        offer = catalog.hardware_offers[hardware_offer]
        if success is None:
            success = self_hosted_success(tp, load["run_id"], pricing.self_hosted_success_rate)
        section = self_hosted_section(
            name, load["run_id"], tp, hardware_offer, offer, task, success, today, pricing.stale_after
        )
        age = section["price_age"]
        basis = (
            f"measured throughput on {hardware_offer} ({money(section['instance_hourly'])}/h incl. labour, "
            f"{offer.source}, {offer.as_of}{'; STALE' if age['stale'] else ''}) at "
            f"{task.utilization:.0%} utilization"
            + ("" if section["rate"]["method"] == "measured" else f"; {section['rate']['note']}")
        )
        return section, basis
    if c.api_offer:
        offer = catalog.api_offers[c.api_offer]
        if success is None:
            rate = pricing.api_success_rate
            success = {
                "rate": rate,
                "ci95": None,
                "basis": f"assumed {rate:.0%} (--api-success-rate)",
                "measured": False,
                "source": "flag",
            }
        section = api_section(c.api_offer, offer, task, success, today, pricing.stale_after)
        basis = f"catalog price {offer.source}, {offer.as_of or 'date unknown'}" + (
            "; STALE" if section["price_age"]["stale"] else ""
        )
        return section, basis
    return None


# -- the comparison table ------------------------------------------------------------------------
def cells(e: dict[str, Any], bar: float) -> list[str]:
    c = Candidate.model_validate(e["candidate"])
    mark = _catalog_mark(c)
    q = e.get("quality")
    if q and q["success_rate"] is not None:
        low, high = q["ci95"]
        verdict = "meets" if low >= bar else "below" if high < bar else "uncertain against"
        fit = (
            f"{q['passed']}/{q['cases']} golden cases passed, {_percent(q['success_rate'])} "
            f"(95% CI {_percent(low)}-{_percent(high)}); {verdict} the {_percent(bar)} bar "
            f"(measured: run {e['golden_run']})"
        )
    else:
        fit = "not measured: run `bench eval --golden ...` on it"
    figures = "; ".join(f"{f.metric} {f.value:g}{f.unit} ({f.source}, {f.as_of})" for f in c.leaderboard)
    quality = f"{figures} (catalog, public figure)" if figures else "no public figure in the catalog"
    lat = e.get("latency")
    if lat:
        slo = lat["slo"]
        judged = ("meets its SLO" if lat["compliant"] else "misses its SLO") if slo else "no SLO was set"
        latency = (
            f"TTFT p99 {lat['ttft_p99_ms']:,.0f} ms, E2E p99 {lat['e2e_p99_ms']:,.0f} ms at {lat['stage']}; "
            f"{judged} (measured: run {e['load_run']})"
        )
    else:
        latency = "not measured: no run against it"
    cost = e.get("cost")
    if cost:
        per_success = cost.get("per_successful_task")
        shape = "linear in volume" if cost["linear"] else "steps of one instance"
        quality = e.get("quality")
        success = (
            f"{money(per_success)}{ci_text(cost.get('per_successful_task_ci95'))}/successful task"
            if per_success
            else "no task succeeded on the golden set: unbounded per successful task"
            if quality and quality.get("success_rate") == 0
            else "not measured/successful task"
        )
        per_task = f"{money(cost['per_task'])}/task"
        if cost.get("volume") and not cost["linear"]:  # whole instances at the volume, not the utilization's price
            n = cost.get("instances")
            per_task += (
                f" at {volume_text(cost['volume'])} tasks/month on {n} whole instance{'s' if n != 1 else ''} "
                f"({money(cost['per_task_at_utilization'])}/task at {cost['utilization']:.0%} utilization)"
            )
        cost_text = f"{per_task}, {success}; {shape} ({cost['basis']})"
        dep = (cost.get("deprecation") or {}).get("note")
        if dep:
            cost_text += f"; {dep}"
    else:
        cost_text = "not priced: no hardware offer or API price"
    if c.access == "self-hosted":
        privacy = f"low by rule (self-hosted): {c.data_residency or 'data stays on your machines'} {mark}"
    else:
        privacy = (
            f"medium by rule ({c.access}): {c.data_residency or 'residency not stated'}; retention: "
            f"{c.retention or 'not stated'} {mark}"
        )
    ops = e.get("operations")
    if c.access == "self-hosted":
        measured = ""
        if ops:
            rss = ops.get("engine_peak_rss_bytes")
            measured = (
                (
                    f"; engine ready in {ops['load_time_s']:.1f} s, peak RSS {rss / 2**20:,.0f} MiB "
                    f"(measured: run {e['load_run']})"
                )
                if ops.get("load_time_s") and rss
                else ""
            )
        burden = f"high by rule: you run the engine, upgrades and on-call{measured}"
    else:
        burden = f"low by rule: the provider operates it {mark}"
    if c.openness != "closed":
        migration = f"low by rule: {c.openness} model ({c.license}), served over an OpenAI-compatible API {mark}"
    else:
        migration = (
            f"medium by rule: closed weights ({c.license}); moving means re-running the golden set on the "
            f"replacement {mark}"
        )
    if c.deprecation:
        migration += f"; deprecation date {c.deprecation} (catalog)"
    return [fit, quality, latency, cost_text, privacy, burden, migration]


def comparison_blocks(assessment: dict[str, Any]) -> list:
    task, bar = assessment["task"], assessment["min_success_rate"]
    rows = [[e["name"], *cells(e, bar)] for e in assessment["candidates"]]
    return [
        Heading(2, "Comparison"),
        Paragraph(
            f"Task: {task['input_tokens']:,.0f} input + {task['output_tokens']:,.0f} output tokens, "
            f"{task['tasks_per_month']:,.0f} tasks/month, success bar {_percent(bar)}. Each cell says where it "
            "came from: measured (a run), catalog (models.yaml, with its source and date), or a fixed rule "
            "applied to catalog facts."
        ),
        Table(["candidate", *COLUMNS], rows),
    ]


# -- the model decision record -------------------------------------------------------------------
def decide(
    assessment: dict[str, Any], chosen: str | None, today: datetime.date | None = None
) -> tuple[dict | None, dict | None, str]:
    """(default, fallback, how): the cheapest candidate per successful task among those that meet the bar,
    or the one given by --choose; the fallback is the next such candidate, else the cheapest API."""
    today = today or datetime.date.today()  # a candidate past its deprecation date is never picked
    entries = [e for e in assessment["candidates"] if not _retired(e, today) or e["name"] == chosen]
    eligible = sorted(
        (e for e in entries if e.get("meets_bar") and (e.get("cost") or {}).get("per_successful_task")),
        key=lambda e: e["cost"]["per_successful_task"],
    )
    if chosen:
        default = next((e for e in entries if e["name"] == chosen), None)
        if default is None:
            raise UsageError(
                f"--choose {chosen!r} is not among the candidates: {', '.join(e['name'] for e in entries)}"
            )
        how = "chosen by hand (--choose); the measured ranking is in the evaluation above"
    elif eligible:
        default, how = eligible[0], "the lowest measured cost per successful task among candidates that meet the bar"
    else:
        default, how = None, "no candidate met the bar on the golden set, so none is chosen"
    rest = [e for e in eligible if e is not default]
    apis = sorted(
        (e for e in entries if e is not default and (e.get("cost") or {}).get("linear")),
        key=lambda e: e["cost"].get("per_successful_task_at_volume") or e["cost"]["per_task"],
    )
    fallback = rest[0] if rest else apis[0] if apis else None
    return default, fallback, how


def mdr_blocks(
    assessment: dict[str, Any],
    title: str,
    context: str,
    chosen: str | None,
    today: datetime.date | None = None,
    price_change: float = PRICE_CHANGE,
) -> list:
    bar, entries = assessment["min_success_rate"], assessment["candidates"]
    default, fallback, how = decide(assessment, chosen, today)
    date = (today or datetime.date.today()).isoformat()
    limits = volume_limits(assessment, default, today or datetime.date.today())
    out: list = [Heading(1, f"Model decision record: {title}")]
    out.append(
        Paragraph(
            f"Date: {date}. Runs: {', '.join(assessment['runs']) or 'none'}. Figures marked "
            "'measured' come from those runs; 'catalog' from models.yaml; '(not measured)' marks every "
            "claim no run supports."
        )
    )

    out.append(Heading(2, "Decision and context"))
    decision = f"Default: {default['name']}" if default else "Default: none"
    out.append(Paragraph(f"{decision} ({how}). Fallback: {fallback['name'] if fallback else 'none'}."))
    out.append(Paragraph(f"Context: {context}"))

    out.append(Heading(2, "Candidates"))
    out.append(
        Table(
            ["candidate", "access", "openness", "license", "commercial use", "fine-tuning", "context window", "source"],
            [
                [
                    e["name"],
                    c["access"],
                    c["openness"],
                    c["license"],
                    _yes_no(c["commercial_use"]),
                    _yes_no(c["fine_tuning"]),
                    f"{c['context_window']:,}" if c["context_window"] else "-",
                    f"catalog: {c['source']}, {c['as_of']}",
                ]
                for e in entries
                for c in [e["candidate"]]
            ],
        )
    )

    out.append(Heading(2, "Evaluation"))
    goldens = {e["quality"]["golden"]["path"]: e["quality"]["golden"] for e in entries if e.get("quality")}
    if goldens:
        for g in goldens.values():
            out.append(
                Paragraph(
                    f"Golden set {g['path']}: {g['cases']} cases (sha256 {g['sha256'][:12]}), fixed "
                    f"decoding (temperature {g.get('temperature')}, seed {g.get('seed')}); a case passes when every "
                    "check passes. Metrics: success rate with a 95% Wilson interval, p99 latency at the priced "
                    "stage, cost per successful task = the month's total cost at the stated volume / the tasks that "
                    "succeeded (failures counted once), with a 95% interval from the throughput and success-rate "
                    "intervals (bench cost's model)."
                )
            )
    else:
        out.append(Paragraph("No golden-set run: task fit is not measured for any candidate."))
    out.append(
        Table(
            [
                "candidate",
                "success rate (95% CI)",
                "TTFT p99 ms",
                "E2E p99 ms",
                "req/s",
                "$/task at the volume",
                "$/successful task",
                "from",
            ],
            [_evaluation_row(e) for e in entries],
        )
    )
    out += comparison_blocks(assessment)

    out.append(Heading(2, "Rationale"))
    for e in entries:
        out.append(Paragraph(_rationale(e, bar)))

    out.append(Heading(2, "Default and fallback"))
    out.append(Paragraph(f"Default: {default['name'] if default else 'none'}; {how}."))
    if fallback:
        measured = "measured on the golden set" if fallback.get("quality") else "not measured on the golden set"
        out.append(
            Paragraph(
                f"Fallback: {fallback['name']} ({measured}; {money(fallback['cost']['per_task'])}/task, "
                f"{fallback['cost']['basis']})."
            )
        )
    else:
        out.append(Paragraph("Fallback: none available among the candidates."))

    out.append(Heading(2, "Risks"))
    risks = []
    for e in entries:
        q = e.get("quality")
        if q and q["ci95"] and q["ci95"][1] - q["ci95"][0] > 0.2:
            risks.append(
                f"{e['name']}: the success rate's interval is {_percent(q['ci95'][1] - q['ci95'][0])} wide "
                f"({q['cases']} cases); add cases to narrow it."
            )
        if not q:
            risks.append(f"{e['name']}: task fit not measured; its quality is a public figure at best.")
        if not e.get("latency"):
            risks.append(f"{e['name']}: latency not measured.")
        if e["candidate"]["access"] != "self-hosted":
            risks.append(
                f"{e['name']}: prompts leave your machines; retention: "
                f"{e['candidate']['retention'] or 'not stated'} (catalog)."
            )
    out.append(Table(["risk"], [[r] for r in risks] or [["none found in the measured data"]]))

    out.append(Heading(2, "Review triggers"))
    out.append(Table(["trigger", "threshold"], _triggers(assessment, default, limits, price_change)))

    out.append(Heading(2, "Decision inputs (machine-readable)"))
    inputs = decision_inputs(assessment, title, date, default, fallback, how, limits, price_change)
    out.append(
        Paragraph(
            "The figures this record was decided on: prices with their dates, success rates with each case's "
            "verdict, throughput, the volume and the limits it holds between. `bench mdr --check THIS_FILE "
            "[--runs NEW_GOLDEN_RUN ...] [--volume N]` says which review trigger fires now (exit 1 when any does)."
        )
    )
    out.append(Paragraph(f"{INPUTS_MARK}\n```json\n{json.dumps(inputs, indent=1, sort_keys=True)}\n```"))
    return out


def volume_limits(assessment: dict[str, Any], default: dict | None, today: datetime.date) -> dict[str, Any]:
    """The volumes the decision holds between: the nearest below and above the stated volume at which the
    cheapest candidate meeting the bar changes (bench.cost.volume_flips), and for a self-hosted default the
    volume its priced instances carry."""
    volume = assessment["task"]["tasks_per_month"]
    out: dict[str, Any] = {"tasks_per_month": volume, "below": None, "above": None, "capacity": None}
    if default is None or "_section" not in default or not volume:
        out["basis"] = "no default chosen, so no volume limit" if default is None else "the default is not priced"
        return out
    live = [
        e
        for e in assessment["candidates"]
        if "_section" in e and not _retired(e, today) and (e.get("meets_bar") or e is default)
    ]
    flips = volume_flips([e["_section"] for e in live], volume) if len(live) > 1 else {"below": None, "above": None}
    for side in ("below", "above"):
        if flips[side]:
            out[side] = flips[side]["tasks_per_month"]
            out[f"{side}_cheapest"] = flips[side]["cheapest"]
    section = default["_section"]
    if section["kind"] == "self-hosted":
        out["capacity"] = section["capacity_tasks_per_month"] * section["instances"]
        out["instances"] = section["instances"]
    out["basis"] = (
        "the nearest volumes at which the cheapest candidate meeting the bar changes (a scan of three decades "
        "either way)" + ("; and the volume the default's priced instances carry" if out["capacity"] else "")
    )
    return out


def decision_inputs(
    assessment: dict[str, Any],
    title: str,
    date: str,
    default: dict | None,
    fallback: dict | None,
    how: str,
    limits: dict[str, Any],
    price_change: float,
) -> dict[str, Any]:
    """The machine-readable block of an MDR (see mdr_blocks)."""
    today = datetime.date.fromisoformat(date)
    candidates = []
    for e in assessment["candidates"]:
        c, section = e["candidate"], e.get("_section")
        dep = _deprecation(e)
        item: dict[str, Any] = {
            "name": e["name"],
            "access": c["access"],
            "model": c.get("model"),
            "served_name": c.get("served_name"),
            "api_offer": c.get("api_offer"),
            "deprecation": dep.isoformat() if dep else None,
            "retired": _retired(e, today),
            "meets_bar": e.get("meets_bar"),
            "price": None,
            "quality": None,
            "throughput": None,
            "cost": None,
        }
        if section is not None and section["kind"] == "api":
            item["price"] = {
                "kind": "api",
                "offer": section["offer"],
                **{k: v for k, v in section["prices_per_1m"].items()},
                "attempt_cost": section["per_attempt"],
                "as_of": section["as_of"],
                "source": section["price_source"],
            }
        elif section is not None:
            item["price"] = {
                "kind": "hardware",
                "offer": section["offer"],
                "hourly": section["hourly"],
                "instance_hourly": section["instance_hourly"],
                "as_of": section["as_of"],
                "source": section["price_source"],
            }
        if e.get("quality"):
            q = e["quality"]
            item["quality"] = {
                "run": e["golden_run"],
                "passed": q["passed"],
                "cases": q["cases"],
                "success_rate": q["success_rate"],
                "ci95": q["ci95"],
                "golden_path": q["golden"].get("path"),
                "golden_sha256": q["golden"].get("sha256"),
                "verdicts": q.get("verdicts") or {},
            }
        if e.get("throughput"):
            item["throughput"] = {"run": e["load_run"], **e["throughput"]}
        if e.get("cost"):
            cost = e["cost"]
            item["cost"] = {
                "per_task": cost["per_task"],
                "per_successful_task": cost.get("per_successful_task"),
                "per_successful_task_ci95": cost.get("per_successful_task_ci95"),
                "basis": cost["basis"],
            }
        candidates.append(item)
    return {
        "format": INPUTS_FORMAT,
        "date": date,
        "title": title,
        "default": default["name"] if default else None,
        "fallback": fallback["name"] if fallback else None,
        "how": how,
        "min_success_rate": assessment["min_success_rate"],
        "task": assessment["task"],
        "volume": limits,
        "price_change_threshold": price_change,
        "stale_after_days": assessment.get("stale_after_days", STALE_AFTER_DAYS),
        "hardware_offer": assessment["hardware_offer"],
        "runs": assessment["runs"],
        "candidates": candidates,
    }


def _yes_no(value: bool | None) -> str:
    return "not stated" if value is None else "yes" if value else "no"


def _evaluation_row(e: dict[str, Any]) -> list[str]:
    q, lat, cost, tp = e.get("quality"), e.get("latency"), e.get("cost") or {}, e.get("throughput")
    rate = (
        f"{_percent(q['success_rate'])} ({_percent(q['ci95'][0])}-{_percent(q['ci95'][1])})"
        if q and q["ci95"]
        else "not measured"
    )
    sources = [f"run {r}" for r in dict.fromkeys((e["golden_run"], e["load_run"])) if r]
    return [
        e["name"],
        rate,
        f"{lat['ttft_p99_ms']:,.0f}" if lat else "not measured",
        f"{lat['e2e_p99_ms']:,.0f}" if lat else "not measured",
        f"{tp['requests_per_s']:.3f}" if tp else "not measured",
        money(cost.get("per_task")),
        money(cost.get("per_successful_task")) + ci_text(cost.get("per_successful_task_ci95"))
        if cost.get("per_successful_task")
        else "not measured",
        ", ".join(sources + (["catalog price"] if cost.get("linear") else [])) or "catalog",
    ]


def _rationale(e: dict[str, Any], bar: float) -> str:
    parts = [f"{e['name']}:"]
    q = e.get("quality")
    if q and q["success_rate"] is not None:
        parts.append(
            f"passed {q['passed']} of {q['cases']} golden cases ({_percent(q['success_rate'])}, 95% CI "
            f"{_percent(q['ci95'][0])}-{_percent(q['ci95'][1])}), "
            f"{'at or above' if q['success_rate'] >= bar else 'below'} the {_percent(bar)} bar (measured)."
        )
    else:
        parts.append("task fit not measured.")
    cost = e.get("cost")
    if cost and cost.get("per_successful_task"):
        parts.append(
            f"Costs {money(cost['per_successful_task'])} per successful task (measured quality, {cost['basis']})."
        )
    elif cost:
        parts.append(f"Costs {money(cost['per_task'])} per task at {cost['basis']}; per successful task not measured.")
    return " ".join(parts)


def _break_even_text(be: dict[str, Any], now: float) -> str:
    volume, ci = be["tasks_per_month"], be["ci95"]
    if volume is None:
        favourable = f"; at the favourable end of its 95% interval: {ci[0]:,.0f}" if ci and ci[0] else ""
        return (
            f"no break-even: the API costs less per successful task than a fully used instance (now {now:,.0f} "
            f"tasks/month{favourable}); re-decide if either price, the measured throughput or a success rate changes"
        )
    if ci is None:
        interval = "no interval: every input to it is assumed or unmeasured"
    else:
        interval = f"95% CI {ci[0]:,.0f}-{'never' if ci[1] is None else f'{ci[1]:,.0f}'}"
    return (
        f"break-even at {volume:,.0f} tasks/month ({interval}; now {now:,.0f}); re-decide when "
        "volume crosses it (measured throughput and success rates x catalog prices)"
    )


def _deprecation(e: dict[str, Any]) -> datetime.date | None:
    """The earliest announced deprecation: the candidate's, or its API offer's."""
    dates = [e["candidate"].get("deprecation"), ((e.get("cost") or {}).get("deprecation") or {}).get("deprecation")]
    days = [datetime.date.fromisoformat(str(d)[:10]) for d in dates if d is not None]
    return min(days) if days else None


def _retired(e: dict[str, Any], today: datetime.date) -> bool:
    """Past its deprecation date (the candidate's, or its API offer's): never picked."""
    dep = _deprecation(e)
    return dep is not None and dep <= today


def _limits_text(limits: dict[str, Any]) -> str:
    if limits.get("basis", "").startswith("no default") or limits.get("basis") == "the default is not priced":
        return f"{limits['basis']}"
    parts = [f"decided for {limits['tasks_per_month']:,.0f} tasks/month"]
    below, above = limits.get("below"), limits.get("above")
    if below or above:
        parts.append(
            "the choice holds from "
            + (f"{below:,.0f}" if below else "any lower volume")
            + " to "
            + (f"{above:,.0f}" if above else "any higher volume (within 1000x)")
            + " tasks/month"
            + (f" (below: {limits['below_cheapest']} is cheaper)" if below else "")
            + (f" (above: {limits['above_cheapest']} is cheaper)" if above else "")
        )
    else:
        parts.append("no volume within three decades of it changes the cheapest candidate meeting the bar")
    if limits.get("capacity"):
        parts.append(
            f"the default's {limits['instances']} instance(s) carry {limits['capacity']:,.0f} tasks/month; "
            "past that its cost changes"
        )
    return "; ".join(parts) + "; re-decide when the volume leaves that range"


def _break_even_side(entries: list[dict[str, Any]], default: dict | None, today: datetime.date) -> dict | None:
    """The self-hosted candidate the APIs' break-even is priced against: the default where it is self-hosted,
    else the cheapest per successful task that meets the bar, else the cheapest; never a retired one."""
    hosted = [e for e in entries if (e.get("cost") or {}).get("linear") is False and not _retired(e, today)]
    if default is not None and any(e is default for e in hosted):
        return default

    def rank(e: dict[str, Any]) -> tuple[bool, float, float]:  # like against like: per successful task first
        cost = e["cost"]
        return not e.get("meets_bar"), cost.get("per_successful_task") or math.inf, cost.get("per_task") or math.inf

    return min(hosted, key=rank, default=None)


def _triggers(
    assessment: dict[str, Any], default: dict | None, limits: dict[str, Any] | None = None, price_change: float = 0.2
) -> list[list[str]]:
    task, entries = assessment["task"], assessment["candidates"]
    rows = []
    if limits is not None:
        rows.append(["volume", _limits_text(limits)])
    today = datetime.date.fromisoformat(assessment["today"]) if assessment.get("today") else datetime.date.today()
    self_hosted = _break_even_side(entries, default, today)
    apis = [e for e in entries if (e.get("cost") or {}).get("linear")]
    for api in apis:
        if not self_hosted:
            break
        if _retired(api, today):
            continue
        be = break_even_entry(self_hosted["_section"], api["_section"])
        rows.append(
            [
                f"volume: {self_hosted['name']} against {api['name']}",
                _break_even_text(be, task["tasks_per_month"]),
            ]
        )
        rows.append(
            [
                f"price change: {api['name']}",
                f"a ±50% API price moves break-even to {tasks_per_month(be['by_price']['-50%'])} / "
                f"{tasks_per_month(be['by_price']['+50%'])} tasks/month; re-decide on any price change of "
                f"{price_change:.0%} or more",
            ]
        )
    for e in entries:
        age = (e.get("cost") or {}).get("price_age")
        if age and age["stale"]:
            rows.append([f"price age: {e['name']}", f"{age['note']}: re-check the price against its source now"])
    for e in entries:
        dep = _deprecation(e)
        if dep is None:
            text = f"none in the catalog (as of {e['candidate']['as_of']}); check the provider's notices"
        elif dep <= today:
            text = f"deprecated on {dep} (catalog): never picked; replace it"
        else:
            text = f"announced for {dep}, in {(dep - today).days} days (catalog): plan the move before then"
        rows.append([f"deprecation: {e['name']}", text])
    if default and default.get("quality"):
        q = default["quality"]
        rows.append(
            [
                "quality drift",
                f"re-run `bench eval --golden {q['golden']['path']}` on every model or engine "
                f"upgrade and monthly; re-decide if the success rate falls below {_percent(q['ci95'][0])} "
                f"(today's lower 95% bound)",
            ]
        )
    else:
        rows.append(["quality drift", "no default measured: measure the candidates on a golden set first"])
    rows.append(
        [
            "checked by the rig",
            f"`bench mdr --check` on this file fires on: a price that moved the task's cost by more than "
            f"{price_change:.0%}, a price older than {assessment.get('stale_after_days', STALE_AFTER_DAYS)} days, the "
            "default or fallback deprecated, a newer golden run below the lower 95% bound (or a clear McNemar drop "
            "on the same set), a volume outside the range above",
        ]
    )
    return rows


# -- bench mdr --check: review triggers that check themselves -----------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")  # the fields `bench mdr --check` reads are checked, the rest kept


class _PriceInputs(_Loose):
    kind: Literal["api", "hardware"]
    offer: str
    as_of: str | None
    attempt_cost: float | None = None  # an API's
    instance_hourly: float | None = None  # hardware's

    @model_validator(mode="after")
    def _figure_of_its_kind(self) -> _PriceInputs:
        needed = "attempt_cost" if self.kind == "api" else "instance_hourly"
        if getattr(self, needed) is None:
            raise ValueError(f"a price of kind {self.kind!r} needs {needed}")
        return self


class _CandidateInputs(_Loose):
    name: str
    retired: bool
    deprecation: str | None = None
    model: str | None = None
    served_name: str | None = None
    api_offer: str | None = None
    price: _PriceInputs | None = None
    quality: dict[str, Any] | None = None


class _VolumeInputs(_Loose):
    tasks_per_month: float
    below: float | None = None
    below_cheapest: str | None = None
    above: float | None = None
    above_cheapest: str | None = None
    capacity: float | None = None

    @model_validator(mode="after")
    def _limits_name_their_cheapest(self) -> _VolumeInputs:
        for side in ("below", "above"):
            if getattr(self, side) and getattr(self, f"{side}_cheapest") is None:
                raise ValueError(f"{side} needs {side}_cheapest (the candidate cheaper past it)")
        return self


class DecisionInputs(_Loose):
    """An MDR's machine-readable block, as far as `bench mdr --check` reads it."""

    format: str
    title: str
    date: str
    default: str | None = None
    fallback: str | None = None
    min_success_rate: float | None = None
    price_change_threshold: float
    stale_after_days: int = STALE_AFTER_DAYS
    task: TaskProfile
    candidates: list[_CandidateInputs]
    volume: _VolumeInputs


def read_inputs(text: str, name: str) -> dict[str, Any]:
    """The machine-readable block of an MDR written by `bench mdr`; a field `bench mdr --check` reads that is
    missing or of the wrong type is one line naming it."""
    found = re.search(re.escape(INPUTS_MARK) + r"\s*```json\n(.*?)\n```", text, re.S)
    if not found:
        raise UsageError(
            f"{name}: no decision-inputs block (an MDR written by `bench mdr` of this version has one under "
            "'Decision inputs (machine-readable)'); write it again with `bench mdr`"
        )
    try:
        inputs = json.loads(found.group(1))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name}: the decision-inputs block is not valid JSON ({exc}); was it edited?") from None
    if not isinstance(inputs, dict) or inputs.get("format") != INPUTS_FORMAT:
        raise UsageError(f"{name}: the decision-inputs block is not {INPUTS_FORMAT}")
    try:
        checked = DecisionInputs.model_validate(inputs)
    except ValidationError as exc:
        raise UsageError(
            f"{name}: the decision-inputs block's {first_error(exc)}; was it edited? write it again with `bench mdr`"
        ) from None
    return checked.model_dump()  # the values as checked ("0.2" a number, "false" False), every other field kept


def _trigger(name: str, fires: bool | None, detail: str) -> dict[str, Any]:
    """fires: True, False, or None (not checked: an input is missing)."""
    return {"trigger": name, "fires": fires, "detail": detail}


def _per_1m(value: float | None) -> str:
    return "none" if value is None else f"${value:g}"


def _change(then: float | None, now: float) -> float | None:
    return None if not then else now / then - 1


def _price_triggers(c: dict[str, Any], catalog: Catalog, task: TaskProfile, today, threshold, stale_after) -> list:
    price, out = c["price"], []
    if price["kind"] == "api":
        offer = catalog.api_offers.get(price["offer"])
        if offer is None:
            return [_trigger(f"price: {c['name']}", True, f"API offer {price['offer']!r} is no longer in the catalog")]
        now = api_attempt(offer, task)["total"]
        change = _change(price["attempt_cost"], now)
        moved = [
            f"{label} {_per_1m(price.get(key))} -> {_per_1m(getattr(offer, attr))}"
            for key, attr, label in (
                ("input", "input_per_1m", "input"),
                ("output", "output_per_1m", "output"),
                ("cached_input", "cached_input_per_1m", "cached input"),
                ("cache_write_input", "cache_write_input_per_1m", "cache write"),
            )
            if price.get(key) != getattr(offer, attr)
        ]
        as_of = offer.as_of
        detail = (
            f"the task's attempt {money(price['attempt_cost'])} (prices of {price['as_of'] or 'unknown date'}) -> "
            f"{money(now)} (prices of {as_of or 'unknown date'})"
            + (f", {change:+.1%}" if change is not None else "")
            + (f"; per 1M tokens: {', '.join(moved)}" if moved else "; no price changed")
        )
    else:
        offer = catalog.hardware_offers.get(price["offer"])
        if offer is None:
            return [
                _trigger(f"price: {c['name']}", True, f"hardware offer {price['offer']!r} is no longer in the catalog")
            ]
        now = instance_hourly(offer)
        change = _change(price["instance_hourly"], now)
        as_of = offer.as_of
        detail = (
            f"{price['offer']}: {money(price['instance_hourly'])}/h incl. labour ({price['as_of']}) -> {money(now)}/h "
            f"({as_of})" + (f", {change:+.1%}" if change is not None else "")
        )
    fires = change is not None and abs(change) > threshold + 1e-12
    out.append(_trigger(f"price: {c['name']}", fires, f"{detail} (threshold ±{threshold:.0%})"))
    age = price_age(as_of, today, stale_after)
    out.append(_trigger(f"price age: {c['name']}", age["stale"], f"price as of {as_of or 'unknown'}: {age['note']}"))
    return out


def _deprecation_now(c: dict[str, Any], catalog: Catalog) -> datetime.date | None:
    dates = []
    candidate = catalog.candidates.get(c["name"])
    if candidate is not None and candidate.deprecation:
        dates.append(candidate.deprecation)
    offer = catalog.api_offers.get(c.get("api_offer") or "")
    if offer is not None and offer.deprecation:
        dates.append(offer.deprecation)
    return min(dates) if dates else None


def _quality_trigger(c: dict[str, Any], run_dir: RunDirectory, bar: float | None, mdr_date: str) -> dict[str, Any]:
    manifest, summary = run_dir.manifest(), run_dir.summary()
    q, then = summary.quality, c.get("quality")
    name = f"quality: {c['name']} (run {manifest.run_id})"
    if q is None or q.success_rate is None:
        return _trigger(name, None, f"{run_dir.path} is not a golden run (bench eval --golden FILE)")
    if then is None or then.get("ci95") is None:
        return _trigger(name, None, "the MDR has no measured success rate for this candidate to compare with")
    low = then["ci95"][0]
    reasons = []
    if q.success_rate < low:
        reasons.append(f"below the MDR's lower 95% bound {low:.0%}")
    if bar is not None and then["success_rate"] >= bar > q.success_rate:
        reasons.append(f"now below the {bar:.0%} bar it met")
    detail = (
        f"{q.passed}/{q.cases} cases passed now ({q.success_rate:.0%}), {then['passed']}/{then['cases']} "
        f"({then['success_rate']:.0%}, 95% CI {low:.0%}-{then['ci95'][1]:.0%}) in the MDR"
    )
    same_set = q.golden.get("sha256") == then.get("golden_sha256")
    now = run_dir.own_prompt_verdicts()
    verdicts = then.get("verdicts") or {}
    if same_set and verdicts and now:
        paired = [i for i in verdicts if i in now]
        b = sum(verdicts[i] and not now[i] for i in paired)
        c_ = sum(not verdicts[i] and now[i] for i in paired)
        p = mcnemar_exact(b, c_)
        detail += f"; paired on {len(paired)} cases: {b} now fail, {c_} now pass, exact McNemar p = {p:.3g}"
        if p < 0.05 and b > c_:
            reasons.append("a clear drop on the same cases (McNemar p < 0.05)")
    elif not same_set:
        detail += "; another golden set than the MDR's (its sha256 differs): rates compared, cases not paired"
    if manifest.started_at[:10] < mdr_date:
        detail += f"; note: the run started {manifest.started_at[:10]}, before the MDR ({mdr_date})"
    return _trigger(name, bool(reasons), detail + (f": {'; '.join(reasons)}" if reasons else ""))


def _match(run_dir: RunDirectory, candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    manifest = run_dir.manifest()
    model = manifest.model.name if manifest.model else None
    return next((c for c in candidates if model in {c["name"], c.get("model"), c.get("served_name")} - {None}), None)


def review(
    inputs: dict[str, Any],
    catalog: Catalog,
    today: datetime.date,
    runs: list[Path],
    volume: float | None = None,
    price_change: float | None = None,
    stale_after: int | None = None,
) -> list[dict[str, Any]]:
    """Which of an MDR's review triggers fire now, against today's catalog, newer golden runs and the volume."""
    threshold = inputs["price_change_threshold"] if price_change is None else price_change
    stale = inputs.get("stale_after_days", STALE_AFTER_DAYS) if stale_after is None else stale_after
    task = DecisionInputs.model_validate(inputs).task
    chosen = {inputs.get("default"), inputs.get("fallback")} - {None}
    out = []
    for c in inputs["candidates"]:
        if c["retired"]:
            out.append(_trigger(f"deprecation: {c['name']}", False, f"retired on {c['deprecation']}, before the MDR"))
            continue
        if c.get("price"):
            out += _price_triggers(c, catalog, task, today, threshold, stale)
        dep = _deprecation_now(c, catalog)
        role = "the default" if c["name"] == inputs.get("default") else "the fallback"
        if dep is not None and dep <= today:
            fires = c["name"] in chosen
            text = f"deprecated on {dep} (catalog)" + (
                f": {role} must be replaced" if fires else "; neither the default nor the fallback"
            )
        elif dep is not None:
            fires, text = False, f"announced for {dep}, in {(dep - today).days} days (catalog)"
        else:
            fires, text = False, "no deprecation in the catalog"
        out.append(_trigger(f"deprecation: {c['name']}", fires, text))
    for path in runs:
        run_dir = RunDirectory(path)
        if not run_dir.exists() or not run_dir.has_summary():
            raise UsageError(f"--runs {path}: not a finished run directory")
        c = _match(run_dir, inputs["candidates"])
        if c is None:
            names = ", ".join(x["name"] for x in inputs["candidates"])
            raise UsageError(f"--runs {path}: its model matches none of the MDR's candidates ({names})")
        out.append(_quality_trigger(c, run_dir, inputs.get("min_success_rate"), inputs["date"]))
    limits = inputs["volume"]
    if volume is None:
        out.append(
            _trigger("volume", None, f"not checked: give --volume N (the MDR assumed {limits['tasks_per_month']:,.0f})")
        )
    else:
        reasons = []
        if limits.get("below") and volume < limits["below"]:
            reasons.append(f"below {limits['below']:,.0f}, where {limits['below_cheapest']} is cheaper")
        if limits.get("above") and volume > limits["above"]:
            reasons.append(f"above {limits['above']:,.0f}, where {limits['above_cheapest']} is cheaper")
        if limits.get("capacity") and volume > limits["capacity"]:
            reasons.append(f"past the {limits['capacity']:,.0f} tasks/month the default's instance(s) carry")
        detail = f"{volume:,.0f} tasks/month now, {limits['tasks_per_month']:,.0f} in the MDR"
        if not reasons:
            stated = any(limits.get(k) for k in ("below", "above", "capacity"))
            reasons_text = ": within the range it holds for" if stated else f"; no limit stated ({limits.get('basis')})"
        else:
            reasons_text = f": {'; '.join(reasons)}"
        out.append(_trigger("volume", bool(reasons), detail + reasons_text))
    return out


def review_blocks(name: str, inputs: dict[str, Any], rows: list[dict[str, Any]], today: datetime.date) -> list:
    firing = [r for r in rows if r["fires"]]
    verdict = f"{len(firing)} trigger(s) fire: re-decide" if firing else "no trigger fires"
    return [
        Heading(2, f"Review of {name}: {verdict}"),
        Paragraph(
            f"The MDR '{inputs['title']}' of {inputs['date']} (default {inputs.get('default') or 'none'}, fallback "
            f"{inputs.get('fallback') or 'none'}), checked on {today.isoformat()} against the catalog's prices and "
            "deprecations, the golden runs given and the volume given."
        ),
        Table(
            ["trigger", "fires", "detail"],
            [[r["trigger"], {True: "FIRES", False: "no", None: "not checked"}[r["fires"]], r["detail"]] for r in rows],
        ),
    ]
