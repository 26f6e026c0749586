"""`bench route`: route each kind of task to the cheapest model that does it well enough, priced.

Input: golden runs of several candidates on one golden set (the same sha256), each matched to a catalog
candidate by model name, like `bench mdr`. The set's cases are split by tag: each case goes to the first of
the routing tags (`--tag`, in the order given) that it carries, or to "(untagged)"; without `--tag`, each case
goes to the first tag it lists. For each tag and candidate:

    success  p = cases passed / cases of the tag (their own prompts; variants are not counted), Wilson 95 %
    $/task   bench.cost's workflow model for a task of that tag's mean input and output tokens, measured in
             that candidate's own run: an API from its token prices; a self-hosted candidate from its run's
             throughput (extrapolated by prefill and decode rate to the tag's shape when it differs) on the
             hardware offer at the target utilization (no whole-instance steps, so mixes add linearly)
    $/successful task = $/task / S (S the successful share: p, or more with retries or escalation)

Each tag is routed to the candidate with the lowest $/successful task among those with p >= the bar
(`--min-success`) and not deprecated; when none reaches the bar, to the most accurate one (said so). With w_g
the tag's share of the cases, a mix (the routed one, or one candidate for every tag) has

    success = sum w_g p_g,   $/task = sum w_g $/task_g,   $/successful task = $/task / sum w_g S_g

The best single model is the candidate whose own mix (all tags to it) reaches the bar at the lowest $/successful
task (else the most accurate). 95 % intervals: bench.cost's method: each uncertain input (each tag's success
rate of the candidate it goes to, at its Wilson ends; each self-hosted candidate's throughput, at its t interval's
ends) set to either end with the others at their points, the log deviations combined in quadrature.

The mix is chosen on the cases it is scored on, so its success rate is optimistic (the best of several on few
cases per tag); confirm a routing on a fresh golden set before relying on it.
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.catalog import Catalog
from bench.cost import CostError, PricingInputs, api_section, combine, priced_throughput, self_hosted_section
from bench.errors import UsageError
from bench.format import ci_text, money
from bench.metrics.stats import wilson_interval
from bench.quality import require_one_golden_set
from bench.report.render import Heading, Paragraph, Table
from bench.results import RunDirectory

UNTAGGED = "(untagged)"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ci_percent(ci: list[float | None] | None) -> str:
    if not ci:
        return ""
    low, high = ci
    return f" ({_percent(low)}-{_percent(high) if high is not None else 'unbounded'})"


def load_candidates(run_dirs: list[Path], catalog: Catalog) -> list[dict[str, Any]]:
    """Each golden run with its candidate, its own-prompt verdicts and each case's tokens."""
    out = []
    for path in run_dirs:
        run_dir = RunDirectory(path)
        if not run_dir.exists() or not run_dir.has_summary():
            raise UsageError(f"{path}: not a finished run directory")
        manifest, summary, evaluation = run_dir.manifest(), run_dir.summary(), run_dir.golden_evaluation()
        if summary.quality is None or not evaluation:
            raise UsageError(f"{path}: not a golden run (bench eval --golden FILE)")
        model = manifest.model.name if manifest.model else None
        name = next(
            (n for n, c in catalog.candidates.items() if model in {n, c.model, c.served_name} - {None}),
            None,
        )
        if name is None:
            raise UsageError(
                f"{path}: its model {model!r} matches no catalog candidate (a candidate's name, `model` or "
                "`served_name`); add one to models.yaml"
            )
        if any(o["name"] == name for o in out):
            raise UsageError(f"{path}: a second golden run of candidate {name!r}; give one run per candidate")
        records = {r.request_id: r for r in run_dir.requests()}
        cases = {}
        for v in evaluation["cases"]:
            if v.get("variant_of") is not None:
                continue
            r = records.get(v["request_id"])
            answered = r is not None and r.ok  # a failed request's tokens are no answer's: priced as bench cost does
            cases[v["id"]] = {
                "passed": v["passed"],
                "tags": v["tags"],
                "answered": answered,
                "input_tokens": (r.prompt_tokens or 0) if answered else 0,
                "output_tokens": (r.output_tokens or 0) if answered else 0,
            }
        out.append(
            {
                "name": name,
                "candidate": catalog.candidates[name],
                "run_id": manifest.run_id,
                "summary": summary,
                "sha256": summary.quality.golden.get("sha256"),
                "golden": summary.quality.golden.get("path"),
                "cases": cases,
            }
        )
    if not out:
        raise UsageError("give the golden runs of the candidates to route between")
    require_one_golden_set([(o["run_id"], o["summary"].quality) for o in out], "route between")
    return out


def groups(cases: dict[str, dict[str, Any]], tags: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(the routing tags in order, each case's tag): the first routing tag a case carries, else UNTAGGED; with no
    routing tags, the first tag the case lists."""
    if not tags:  # each case by the first tag it lists
        of = {i: c["tags"][0] if c["tags"] else UNTAGGED for i, c in cases.items()}
        return list(dict.fromkeys(of.values())), of
    unknown = [t for t in tags if not any(t in c["tags"] for c in cases.values())]
    if unknown:
        raise UsageError(f"--tag {unknown[0]!r}: no case of the set carries it")
    of = {i: next((t for t in tags if t in c["tags"]), UNTAGGED) for i, c in cases.items()}
    order = [t for t in tags if t in of.values()] + ([UNTAGGED] if UNTAGGED in of.values() else [])
    return order, of


def _deprecated(candidate, catalog: Catalog, today: datetime.date) -> datetime.date | None:
    dates = [candidate.deprecation] if candidate.deprecation else []
    offer = catalog.api_offers.get(candidate.api_offer or "")
    if offer is not None and offer.deprecation:
        dates.append(offer.deprecation)
    dep = min(dates) if dates else None
    return dep if dep is not None and dep <= today else None


def price_group(
    c: dict[str, Any],
    ids: list[str],
    tag: str,
    catalog: Catalog,
    hardware_offer: str | None,
    pricing: PricingInputs,
    today: datetime.date,
) -> dict[str, Any]:
    """One candidate on one tag's cases: success with its Wilson interval and the cost section."""
    answered = [c["cases"][i] for i in ids if i in c["cases"]]
    n, passed = len(answered), sum(a["passed"] for a in answered)
    if not n:
        raise UsageError(f"run {c['run_id']} answered no case tagged {tag!r}")
    priced = [a for a in answered if a["answered"]] or answered  # token means over the requests that succeeded
    task = replace(
        pricing.task,
        input_tokens=sum(a["input_tokens"] for a in priced) / len(priced),
        output_tokens=sum(a["output_tokens"] for a in priced) / len(priced),
    )
    success = {
        "rate": passed / n,
        "ci95": wilson_interval(passed, n),
        "basis": f"golden run {c['run_id']}: {passed}/{n} cases tagged {tag} passed",
        "measured": True,
        "source": f"run {c['run_id']}",
    }
    cand = c["candidate"]
    try:
        if cand.access == "self-hosted":
            if hardware_offer is None:
                raise UsageError(f"candidate {c['name']} is self-hosted: give --hardware-offer to price it")
            measured = priced_throughput(c["summary"])
            section = self_hosted_section(
                c["name"],
                c["run_id"],
                measured,
                hardware_offer,
                catalog.hardware_offers[hardware_offer],
                task,
                success,
                today,
                pricing.stale_after,
            )
        elif cand.api_offer:
            section = api_section(
                cand.api_offer, catalog.api_offers[cand.api_offer], task, success, today, pricing.stale_after
            )
        else:
            raise UsageError(f"candidate {c['name']} has neither an API offer nor self-hosted access to price")
    except CostError as exc:
        raise UsageError(f"candidate {c['name']}, tag {tag}: {exc}") from None
    return {
        "candidate": c["name"],
        "tag": tag,
        "cases": n,
        "passed": passed,
        "success_rate": passed / n,
        "ci95": success["ci95"],
        "input_tokens": task.input_tokens,
        "output_tokens": task.output_tokens,
        "per_task": section["per_task"],
        "per_successful_task": section["per_successful_task"],
        "rate_method": (section.get("rate") or {}).get("method"),
        "_section": section,
    }


def mix_figures(choice: dict[str, dict[str, Any]], weights: dict[str, float], options=None) -> dict[str, float]:
    """Success, $/task and $/successful task of a mix: tag -> its priced group (options: tag -> an Option that
    replaces the group's own, for the interval ends)."""
    options = options or {}
    per_task = success = successful = 0.0
    for tag, g in choice.items():
        o = options.get(tag) or g["_section"]["_option"]
        per_task += weights[tag] * o.per_task()
        success += weights[tag] * o.success_rate
        successful += weights[tag] * o.outcome.successful
    return {
        "success_rate": success,
        "per_task": per_task,
        "per_successful_task": per_task / successful if successful > 0 else None,
    }


def mix_intervals(choice: dict[str, dict[str, Any]], weights: dict[str, float]) -> dict[str, Any]:
    """95 % intervals of a mix's figures (see the module docstring)."""
    point = mix_figures(choice, weights)
    ends: dict[str, list[dict[str, float]]] = {}
    for tag, g in choice.items():
        varied = g["_section"]["_variations"].get("success rate")
        if varied:
            ends[f"success on {tag} ({g['candidate']})"] = [mix_figures(choice, weights, {tag: o}) for o in varied]
    for name in dict.fromkeys(g["candidate"] for g in choice.values()):
        tags = [t for t, g in choice.items() if g["candidate"] == name and "throughput" in g["_section"]["_variations"]]
        if tags:
            ends[f"throughput of {name}"] = [
                mix_figures(choice, weights, {t: choice[t]["_section"]["_variations"]["throughput"][k] for t in tags})
                for k in (0, 1)
            ]
    out = {}
    for key in ("success_rate", "per_task", "per_successful_task"):
        interval = combine(point[key], {name: [f[key] for f in fs] for name, fs in ends.items()})
        out[key] = {"value": point[key], "ci95": interval["ci95"], "parts": interval["parts"]}
    if out["success_rate"]["ci95"] and out["success_rate"]["ci95"][1] is not None:
        out["success_rate"]["ci95"][1] = min(1.0, out["success_rate"]["ci95"][1])
    return out


def route(
    run_dirs: list[Path],
    catalog: Catalog,
    hardware_offer: str | None,
    pricing: PricingInputs,
    bar: float,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """The routing table, the routed mix and every single model, priced (see the module docstring)."""
    if hardware_offer is not None and hardware_offer not in catalog.hardware_offers:
        raise UsageError(f"--hardware-offer {hardware_offer!r} is not in the catalog")
    today = pricing.today or datetime.date.today()
    cands = load_candidates(run_dirs, catalog)
    order, of = groups(cands[0]["cases"], tags)
    ids = {t: [i for i, g in of.items() if g == t] for t in order}
    total = sum(len(v) for v in ids.values())
    weights = {t: len(ids[t]) / total for t in order}
    priced = {t: [price_group(c, ids[t], t, catalog, hardware_offer, pricing, today) for c in cands] for t in order}
    retired = {c["name"]: d for c in cands if (d := _deprecated(c["candidate"], catalog, today))}

    def cost_key(g):
        return (g["per_successful_task"] is None, g["per_successful_task"] or 0.0)

    routing, choice = [], {}
    for t in order:
        live = [g for g in priced[t] if g["candidate"] not in retired]
        if not live:
            raise UsageError("every candidate is past its deprecation date")
        eligible = sorted((g for g in live if g["success_rate"] >= bar), key=cost_key)
        if eligible:
            chosen, how = eligible[0], f"the cheapest per successful task with success >= {bar:.0%}"
        else:
            chosen = max(live, key=lambda g: (g["success_rate"], -(g["per_task"] or 0)))
            how = f"no candidate reaches {bar:.0%} on this tag: the most accurate"
        choice[t] = chosen
        routing.append({"tag": t, "cases": len(ids[t]), "share": weights[t], "to": chosen["candidate"], "how": how})

    singles = []
    for c in cands:
        mix = {t: next(g for g in priced[t] if g["candidate"] == c["name"]) for t in order}
        singles.append({"candidate": c["name"], "retired": c["name"] in retired, **mix_intervals(mix, weights)})
    live_singles = [s for s in singles if not s["retired"]]
    meeting = [s for s in live_singles if s["success_rate"]["value"] >= bar and s["per_successful_task"]["value"]]
    if meeting:
        best = min(meeting, key=lambda s: s["per_successful_task"]["value"])
        best_how = f"the cheapest per successful task of the single models with success >= {bar:.0%}"
    else:
        best = max(live_singles, key=lambda s: s["success_rate"]["value"])
        best_how = f"no single model reaches {bar:.0%} on the whole set: the most accurate"
    routed = mix_intervals(choice, weights)
    a, b = routed["per_successful_task"]["value"], best["per_successful_task"]["value"]
    return {
        "golden": cands[0]["golden"],
        "sha256": cands[0]["sha256"],
        "cases": total,
        "min_success": bar,
        "hardware_offer": hardware_offer,
        "today": today.isoformat(),
        "task": pricing.task.to_json(),
        "runs": {c["name"]: c["run_id"] for c in cands},
        "retired": {k: v.isoformat() for k, v in retired.items()},
        "routing": routing,
        "by_tag": {t: [{k: v for k, v in g.items() if not k.startswith("_")} for g in priced[t]] for t in order},
        "routed": routed,
        "singles": singles,
        "best_single": {"candidate": best["candidate"], "how": best_how},
        "saving_per_successful_task": (b - a) / b if a is not None and b else None,
    }


def route_blocks(r: dict[str, Any]) -> list:
    bar = r["min_success"]
    out: list = [Heading(1, "Routing by tag")]
    out.append(
        Paragraph(
            f"Golden set {r['golden']} ({r['cases']} cases, sha256 {str(r['sha256'])[:12]}), runs: "
            + ", ".join(f"{n} (run {run})" for n, run in r["runs"].items())
            + f". Each tag goes to the cheapest candidate per successful task among those that pass at least "
            f"{_percent(bar)} of its cases. Costs per task at the target utilization "
            f"({r['task']['utilization']:.0%}) for self-hosted candidates (no whole-instance steps), at list price "
            "for APIs, each tag priced at its own cases' mean tokens; 95% intervals from the success rates' Wilson "
            "intervals and the throughput's t interval (bench cost's method)."
            + (f" Past their deprecation date, left out: {', '.join(r['retired'])}." if r["retired"] else "")
        )
    )
    rows = []
    for item in r["routing"]:
        groups_ = r["by_tag"][item["tag"]]
        chosen = next(g for g in groups_ if g["candidate"] == item["to"])
        others = "; ".join(
            f"{g['candidate']} {g['passed']}/{g['cases']}, {money(g['per_task'])}/task"
            + ("" if g["success_rate"] >= bar else " (below the bar)")
            for g in groups_
            if g is not chosen
        )
        rows.append(
            [
                item["tag"],
                f"{item['cases']} ({item['share']:.0%})",
                item["to"],
                f"{chosen['passed']}/{chosen['cases']} {_percent(chosen['success_rate'])}{_ci_percent(chosen['ci95'])}",
                money(chosen["per_task"]),
                money(chosen["per_successful_task"]),
                item["how"],
                others or "-",
            ]
        )
    out.append(
        Table(
            ["tag", "cases", "routed to", "success (95% CI)", "$/task", "$/successful task", "why", "the others"],
            rows,
        )
    )
    out.append(Heading(2, "The routed mix against single models"))
    best = r["best_single"]["candidate"]

    def row(name: str, f: dict[str, Any]) -> list[str]:
        return [
            name,
            f"{_percent(f['success_rate']['value'])}{_ci_percent(f['success_rate']['ci95'])}",
            money(f["per_task"]["value"]) + ci_text(f["per_task"]["ci95"]),
            money(f["per_successful_task"]["value"]) + ci_text(f["per_successful_task"]["ci95"]),
        ]

    table = [row("routed mix", r["routed"])]
    for s in r["singles"]:
        label = s["candidate"] + (" (best single model)" if s["candidate"] == best else "")
        table.append(row(label + (" (deprecated)" if s["retired"] else ""), s))
    out.append(Table(["option", "blended success (95% CI)", "$/task", "$/successful task"], table))
    saving = r["saving_per_successful_task"]
    text = f"Best single model: {best} ({r['best_single']['how']})."
    if saving is not None:
        text += (
            f" The routed mix costs {abs(saving):.0%} {'less' if saving >= 0 else 'more'} per successful task "
            f"than {best}, at a blended success rate of {_percent(r['routed']['success_rate']['value'])} against "
            f"{_percent(next(s for s in r['singles'] if s['candidate'] == best)['success_rate']['value'])}."
        )
    text += (
        " The mix is chosen on the same cases it is scored on, so its success rate is optimistic: confirm the "
        "routing on a fresh golden set."
    )
    out.append(Paragraph(text))
    return out
