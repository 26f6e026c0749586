"""The MDR's choice: cheapest per successful task among candidates over the bar; retired ones never picked."""

import datetime

import pytest

from bench.catalog import load_catalog
from bench.decision import decide
from bench.errors import UsageError


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
