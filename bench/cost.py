"""Prices and measured throughput -> cost per token, per task and per successful task; self-hosting
against API offers by monthly volume, with the break-even point.

Self-hosting costs by the hour whether busy or not. At a measured throughput T (tokens/s or
requests/s) and a utilization u (the share of paid hours doing that work):

    hourly cost, rented = the offer's price per hour
    hourly cost, owned  = purchase / (years * 8760) + power_kW * $/kWh + hosting per month / 730
    $ per 1M tokens     = hourly / (T_tokens * 3600 * u) * 1e6
    $ per task          = hourly / (T_requests * 3600 * u)
    $ per successful task = $ per task / success rate

Monthly (730 h), for V tasks a month with peak-to-average ratio p and target utilization u:

    instances = ceil(V / seconds_per_month * p / (T_requests * u))      (a step function of V)
    self-hosted monthly = instances * hourly * 730
    API monthly = V * API $ per task                                      (linear in V)

The break-even volume is the smallest V at which the API costs at least as much as self-hosting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from bench.summary import RunSummary

HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
HOURS_PER_YEAR = 8760.0
UTILIZATION_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the sensitivity range


class CostError(ValueError):
    """An input that makes a cost meaningless (no throughput, utilization out of range)."""


@dataclass(frozen=True)
class TaskProfile:
    input_tokens: float | None  # None: measured, filled from a run by with_measured_tokens
    output_tokens: float | None
    tasks_per_month: float = 0.0
    peak_to_average: float = 1.0
    utilization: float = 0.5  # target share of paid hours doing this work
    # the full monthly cost of an API workflow; every term defaults to zero
    reasoning_tokens: float = 0.0  # billed as output
    tool_calls_per_task: float = 0.0  # extra model calls per task, each the size of the task
    cached_input_share: float | None = 0.0  # share of input billed at the cached price; None: the run's prefix cache
    batch_share: float = 0.0  # share of tasks sent through the batch API
    retry_rate: float = 0.0  # failed or invalid outputs that are retried
    escalation_rate: float = 0.0  # share of tasks escalated to a person ...
    human_review_cost: float = 0.0  # ... at this cost each


def with_measured_tokens(task: TaskProfile, tp: dict[str, Any]) -> TaskProfile:
    """The task with the run's figures wherever the task leaves them unset: mean input and output tokens,
    and the share of input the engine served from its prefix cache (what an API would bill as cached)."""
    cached = task.cached_input_share
    return replace(
        task,
        input_tokens=tp["input_tokens_mean"] if task.input_tokens is None else task.input_tokens,
        output_tokens=tp["output_tokens_mean"] if task.output_tokens is None else task.output_tokens,
        cached_input_share=(tp.get("prefix_cache_hit_rate") or 0.0) if cached is None else cached,
    )


def hourly_rented(per_hour: float) -> float:
    return per_hour


def hourly_owned(
    purchase: float,
    amortization_years: float,
    power_w: float,
    electricity_per_kwh: float,
    hosting_per_month: float = 0.0,
) -> float:
    return (
        purchase / (amortization_years * HOURS_PER_YEAR)
        + power_w / 1000 * electricity_per_kwh
        + hosting_per_month / HOURS_PER_MONTH
    )


def _check_utilization(utilization: float) -> None:
    if not 0 < utilization <= 1:
        raise CostError(f"utilization must be in (0, 1], got {utilization}")


def per_million_tokens(hourly: float, tokens_per_s: float | None, utilization: float) -> float:
    _check_utilization(utilization)
    if not tokens_per_s or tokens_per_s <= 0:
        raise CostError("no throughput was measured, so no cost per token can be given")
    return hourly / (tokens_per_s * 3600 * utilization) * 1e6


def per_task(hourly: float, requests_per_s: float | None, utilization: float, success_rate: float = 1.0) -> float:
    _check_utilization(utilization)
    if not requests_per_s or requests_per_s <= 0:
        raise CostError("no request throughput was measured, so no cost per task can be given")
    if not 0 < success_rate <= 1:
        raise CostError(f"success rate must be in (0, 1], got {success_rate}: no task succeeded")
    return hourly / (requests_per_s * 3600 * utilization) / success_rate


def api_per_task(offer: dict[str, Any], task: TaskProfile) -> float:
    """The full cost of one task through an API: tokens, reasoning, tool loops, caching and batch
    discounts, retries and human escalation."""
    calls = 1 + task.tool_calls_per_task
    cached_price = offer.get("cached_input_per_1m")
    cached_price = offer["input_per_1m"] if cached_price is None else cached_price
    input_cost = (
        task.input_tokens
        * ((1 - task.cached_input_share) * offer["input_per_1m"] + task.cached_input_share * cached_price)
        / 1e6
    )
    output_cost = (task.output_tokens + task.reasoning_tokens) * offer["output_per_1m"] / 1e6
    model_cost = calls * (input_cost + output_cost)
    model_cost *= 1 - task.batch_share * (offer.get("batch_discount") or 0.0)
    return model_cost * (1 + task.retry_rate) + task.escalation_rate * task.human_review_cost


def energy_per_million_tokens(joules_per_token: float, per_kwh: float) -> float:
    """Electricity for 1M tokens at a measured energy per token (1 kWh = 3.6e6 J)."""
    return joules_per_token * 1e6 / 3.6e6 * per_kwh


def instances_needed(tasks_per_month: float, peak_to_average: float, requests_per_s: float, utilization: float) -> int:
    _check_utilization(utilization)
    if tasks_per_month <= 0:
        return 0
    peak_rate = tasks_per_month / SECONDS_PER_MONTH * peak_to_average
    return math.ceil(peak_rate / (requests_per_s * utilization) - 1e-12)


def self_hosted_monthly(tasks_per_month: float, task: TaskProfile, hourly: float, requests_per_s: float) -> float:
    instances = max(1, instances_needed(tasks_per_month, task.peak_to_average, requests_per_s, task.utilization))
    return instances * hourly * HOURS_PER_MONTH


def break_even(task: TaskProfile, hourly: float, requests_per_s: float, api_task_cost: float) -> float | None:
    """The smallest monthly volume at which the API costs at least as much as self-hosting.

    With one instance costing M a month and serving up to C tasks a month, the API (c per task)
    reaches M at V = M / c; that is the break-even if one instance can serve it (V <= C). If not, the
    API is cheaper per task than even a fully used instance, at every volume: None. (Past V, each new
    instance makes self-hosting briefly dearer again; the monthly curve shows those steps.)
    """
    if api_task_cost <= 0:
        return None
    monthly_per_instance = hourly * HOURS_PER_MONTH
    capacity = requests_per_s * task.utilization * SECONDS_PER_MONTH / task.peak_to_average
    volume = monthly_per_instance / api_task_cost
    return volume if volume <= capacity else None


def priced_throughput(summary: RunSummary) -> dict[str, Any]:
    """The throughput to price: the max SLO-compliant stage when SLOs were set, else the fastest stage."""
    stages = [s for s in summary.stages if s.request_throughput_per_s]
    if not stages:
        raise CostError("the run measured no throughput (no successful requests), so nothing can be priced")
    best = summary.slo.max_slo_compliant if summary.slo else None
    if best:
        stage, basis = next(s for s in stages if s.stage == best.stage), "max SLO-compliant throughput"
    else:
        stage, basis = max(stages, key=lambda s: s.request_throughput_per_s), "highest measured throughput"
    finished = stage.requests.finished
    quality = summary.quality
    if quality is not None and quality.success_rate is not None:  # a golden run: success means every check passed
        success_rate, success_basis = quality.success_rate, "golden-set cases passed"
    else:
        success_rate, success_basis = (
            stage.requests.successful / finished if finished else 0.0,
            "requests that succeeded",
        )
    return {
        "basis": basis,
        "stage": stage.stage,
        "label": stage.label,
        "requests_per_s": stage.request_throughput_per_s,
        "output_tokens_per_s": stage.output_throughput_tokens_per_s,
        "total_tokens_per_s": stage.total_token_throughput_tokens_per_s,
        "output_tokens_per_s_ci95": stage.ci95.output_throughput_tokens_per_s,
        "input_tokens_mean": stage.prompt_tokens.mean or 0.0,
        "output_tokens_mean": stage.output_tokens.mean or 0.0,
        "success_rate": success_rate,
        "success_basis": success_basis,
        "success_rate_ci95": quality.ci95 if quality else None,
        "gpu_energy_j_per_output_token": stage.telemetry.gpu_energy_j_per_output_token,
        "prefix_cache_hit_rate": stage.prefix_cache_hit_rate,
    }


def offer_hourly(offer) -> float:
    if offer.rented is not None:
        return hourly_rented(offer.rented.per_hour)
    o = offer.owned
    return hourly_owned(o.purchase, o.amortization_years, o.power_w, o.electricity_per_kwh, o.hosting_per_month)


def cost_report(
    tp: dict[str, Any],
    offer_name: str,
    offer,
    api_offers: dict[str, Any],
    task: TaskProfile,
    electricity_per_kwh: float | None = None,
) -> dict[str, Any]:
    """Self-hosted cost at the priced throughput (see priced_throughput), against each API offer, with
    break-even and sensitivity. Energy is priced at the owned offer's tariff, else at `electricity_per_kwh`."""
    hourly = offer_hourly(offer)
    u, rps = task.utilization, tp["requests_per_s"]
    self_hosted = {
        "offer": offer_name,
        "hourly": hourly,
        "utilization": u,
        "price_source": offer.source,
        "as_of": offer.as_of,
        "per_1m_output_tokens": per_million_tokens(hourly, tp["output_tokens_per_s"], u),
        "per_1m_total_tokens": per_million_tokens(hourly, tp["total_tokens_per_s"], u),
        "per_task": per_task(hourly, rps, u),
        "per_successful_task": per_task(hourly, rps, u, tp["success_rate"]) if tp["success_rate"] else None,
        "monthly": self_hosted_monthly(task.tasks_per_month, task, hourly, rps),
        "instances": max(1, instances_needed(task.tasks_per_month, task.peak_to_average, rps, u)),
        "per_task_by_utilization": {f"{v:.0%}": per_task(hourly, rps, v) for v in UTILIZATION_LEVELS},
        # $/successful task is $/task with every failure retried: (1 - s) / s extra attempts per task
        "retry_rate": (1 - tp["success_rate"]) / tp["success_rate"] if tp["success_rate"] else None,
    }
    per_kwh = offer.owned.electricity_per_kwh if offer.owned is not None else electricity_per_kwh
    joules = tp.get("gpu_energy_j_per_output_token")
    self_hosted["electricity_per_kwh"] = per_kwh
    self_hosted["energy_j_per_output_token"] = joules
    self_hosted["energy_per_1m_output_tokens"] = (
        energy_per_million_tokens(joules, per_kwh) if joules is not None and per_kwh is not None else None
    )
    quality_ci = tp.get("success_rate_ci95")
    if quality_ci and self_hosted["per_successful_task"] is not None:  # a lower success rate, a dearer success
        low, high = quality_ci
        self_hosted["per_successful_task_ci95"] = [
            self_hosted["per_task"] / high,
            self_hosted["per_task"] / low if low > 0 else None,
        ]
    ci = tp["output_tokens_per_s_ci95"]
    if ci and ci[0] > 0:  # slower throughput, dearer tokens: the interval flips
        self_hosted["per_1m_output_tokens_ci95"] = [
            per_million_tokens(hourly, ci[1], u),
            per_million_tokens(hourly, ci[0], u),
        ]
    apis = []
    for name, api in api_offers.items():
        prices = api.model_dump()
        api_task = api_per_task(prices, task)
        apis.append(
            {
                "offer": name,
                "provider": api.provider,
                "model": api.model,
                "price_source": api.source,
                "as_of": api.as_of,
                "per_task": api_task,
                "monthly": api_task * task.tasks_per_month,
                "break_even_tasks_per_month": break_even(task, hourly, rps, api_task),
                "break_even_by_price": {
                    f"{k:+.0%}": break_even(task, hourly, rps, api_task * (1 + k)) for k in (-0.5, 0.0, 0.5)
                },
                "break_even_by_utilization": {
                    f"{v:.0%}": break_even(replace(task, utilization=v), hourly, rps, api_task)
                    for v in UTILIZATION_LEVELS
                },
            }
        )
    return {"throughput": tp, "task": task.__dict__, "self_hosted": self_hosted, "apis": apis}


def stage_costs(summary: RunSummary, hourly: float, utilization: float) -> list[dict[str, Any]]:
    """Per stage of a run: $ per 1M output and total tokens and $ per task at its measured throughput."""
    rows = []
    for stage in summary.stages:
        rps, out_tps = stage.request_throughput_per_s, stage.output_throughput_tokens_per_s
        measured = bool(rps and out_tps)
        rows.append(
            {
                "stage": stage.stage,
                "label": stage.label,
                "requests_per_s": rps,
                "per_1m_output_tokens": per_million_tokens(hourly, out_tps, utilization) if measured else None,
                "per_1m_total_tokens": per_million_tokens(
                    hourly, stage.total_token_throughput_tokens_per_s, utilization
                )
                if measured
                else None,
                "per_task": per_task(hourly, rps, utilization) if measured else None,
            }
        )
    return rows


def monthly_curve(task: TaskProfile, hourly: float, requests_per_s: float, volumes: list[float]) -> list[float]:
    """Self-hosted monthly cost at each volume: the instance count steps up with the peak rate."""
    return [self_hosted_monthly(v, task, hourly, requests_per_s) for v in volumes]
