"""models.yaml validation: one error naming the file, the entry and the field."""

import datetime

import pytest

from bench.catalog import get_model, load_catalog, resolve_model_path, verified_digest
from bench.errors import UsageError

GOOD = """
models:
  tiny:
    format: gguf
    api: completions
    source: {path: tiny.gguf}
"""


def write(tmp_path, text):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_repository_catalog_is_valid_and_has_the_demo_model():
    catalog, _ = load_catalog(None)
    assert catalog.models["gemma3-270m"].api == "completions"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("api: completions", "api: compleetions"), "entry 'tiny', field 'api'"),
        (GOOD.replace("    format: gguf\n", ""), "entry 'tiny', field 'format': Field required"),
        (GOOD + "    colour: blue\n", "entry 'tiny', field 'colour': Extra inputs are not permitted"),
        (GOOD.replace("{path: tiny.gguf}", "{}"), "entry 'tiny', field 'source': give exactly one of"),
    ],
)
def test_invalid_field_is_named(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        load_catalog(path)
    message = str(err.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_broken_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "models:\n  tiny: [unclosed\n")
    with pytest.raises(UsageError, match=r"not valid YAML at line \d"):
        load_catalog(path)


def test_unknown_model_lists_the_known_ones(tmp_path):
    catalog, path = load_catalog(write(tmp_path, GOOD))
    with pytest.raises(UsageError, match="unknown model 'nope'.*known models: tiny"):
        get_model(catalog, path, "nope")


def test_relative_path_resolves_beside_the_catalog_and_missing_file_says_which_field(tmp_path):
    catalog, path = load_catalog(write(tmp_path, GOOD))
    entry = catalog.models["tiny"]
    with pytest.raises(UsageError, match=r"tiny.gguf for 'tiny' does not exist; fix models.tiny.source.path"):
        resolve_model_path("tiny", entry, path)
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    assert resolve_model_path("tiny", entry, path) == tmp_path / "tiny.gguf"


def test_digest_mismatch_is_refused(tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    catalog, path = load_catalog(write(tmp_path, GOOD + "    sha256: '" + "0" * 64 + "'\n"))
    entry = catalog.models["tiny"]
    with pytest.raises(UsageError, match="corrupt or the catalog is out of date"):
        verified_digest("tiny", entry, tmp_path / "tiny.gguf", path)


def test_undated_or_unsourced_price_is_a_catalog_error(tmp_path):
    undated = (
        GOOD
        + "api_offers:\n  x:\n    provider: P\n    model: m\n    input_per_1m: 1\n    output_per_1m: 2\n    source: s\n"
    )
    with pytest.raises(UsageError, match="entry 'x', field 'as_of': Field required"):
        load_catalog(write(tmp_path, undated))
    both = GOOD + (
        "hardware_offers:\n  h:\n    rented: {per_hour: 1}\n    owned: {purchase: 1, amortization_years: 1,"
        " power_w: 1, electricity_per_kwh: 1}\n    source: s\n    as_of: 2026-01-01\n"
    )
    with pytest.raises(UsageError, match="entry 'h', field '\\(the entry itself\\)': give exactly one of"):
        load_catalog(write(tmp_path, both))


def test_repository_catalog_prices_are_sourced_and_dated_to_the_day():
    """Hand-entered prices carry a date (a day, not a month); an import may say its date is unknown (null)
    but then names its source's version and the day it was read."""
    catalog, _ = load_catalog(None)
    assert catalog.api_offers and catalog.hardware_offers
    for offer in catalog.hardware_offers.values():
        assert offer.source and isinstance(offer.as_of, datetime.date) and offer.labour is not None
    for offer in catalog.api_offers.values():
        assert offer.source
        assert isinstance(offer.as_of, datetime.date) or (offer.source_version and offer.retrieved)
    assert catalog.api_offers["google-gemini-1-5-flash"].deprecation == datetime.date(2025, 9, 24)


@pytest.mark.parametrize("as_of", ["'2024-10'", "'2026'", "not-a-date"])
def test_a_price_dated_by_a_month_or_not_at_all_is_refused(tmp_path, as_of):
    text = GOOD + f"hardware_offers:\n  h:\n    rented: {{per_hour: 1}}\n    source: s\n    as_of: {as_of}\n"
    with pytest.raises(UsageError, match="entry 'h', field 'as_of'"):
        load_catalog(write(tmp_path, text))


def test_labour_tiers_and_per_direction_batch_prices_load(tmp_path):
    text = GOOD + (
        "hardware_offers:\n  h:\n    rented: {per_hour: 1}\n    labour: {hours_per_month: 8, per_hour: 90}\n"
        "    source: s\n    as_of: 2026-11-01\n"
        "api_offers:\n  a:\n    provider: P\n    model: m\n    input_per_1m: 1\n    output_per_1m: 2\n"
        "    batch_discount: 0.5\n    batch_output_discount: 0.2\n    cache_write_input_per_1m: 1.25\n"
        "    tiers: [{above_input_tokens: 200000, input_per_1m: 2, output_per_1m: 3}]\n"
        "    deprecation: 2027-01-01\n    source: s\n    as_of: 2026-11-01\n"
    )
    catalog, _ = load_catalog(write(tmp_path, text))
    assert catalog.hardware_offers["h"].labour.hours_per_month == 8
    offer = catalog.api_offers["a"]
    assert offer.batch_discounts == (0.5, 0.2)  # the per-direction figure overrides the shared one
    assert offer.tiers[0].above_input_tokens == 200_000 and offer.deprecation == datetime.date(2027, 1, 1)
