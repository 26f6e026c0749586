"""`bench prices import`: LiteLLM's price map to api_offers, merged under hand-entered prices."""

import datetime
import json

import pytest

from bench.catalog import load_catalog
from bench.errors import UsageError
from bench.prices import import_prices, offer_name

PRICE_MAP = {
    "sample_spec": {"mode": "one of: chat, embedding", "input_cost_per_token": 0.0},
    "gpt-4o-mini": {
        "litellm_provider": "openai",
        "mode": "chat",
        "max_input_tokens": 128000,
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 7.5e-08,
        "output_cost_per_token_batches": 3e-07,
        "deprecation_date": "2027-01-14",
        "deprecation_source": "https://example.com/deprecations",
    },
    "claude-long": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_read_input_token_cost": 3e-07,
        "input_cost_per_token_batches": 1.5e-06,
        "output_cost_per_token_batches": 1.125e-05,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "input_cost_per_token_above_200k_tokens_priority": 9e-06,
    },
    "gpt-4o": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
    },
    "text-embedding-3-small": {
        "litellm_provider": "openai",
        "mode": "embedding",
        "input_cost_per_token": 2e-08,
        "output_cost_per_token": 0.0,
    },
    "gemini/gemini-2.5-flash": {
        "litellm_provider": "gemini",
        "mode": "chat",
        "input_cost_per_token": 3e-07,
        "output_cost_per_token": 2.5e-06,
    },
}

CATALOG = """
models:
  tiny: {format: gguf, api: completions, source: {path: tiny.gguf}}
api_offers:
  openai-gpt-4o:
    provider: OpenAI
    model: gpt-4o
    input_per_1m: 2.0
    output_per_1m: 8.0
    source: our negotiated contract
    as_of: 2026-10-01
"""


@pytest.fixture
def price_map(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICE_MAP))
    return path


def test_offers_are_converted_to_dollars_per_million_dated_by_their_source_not_the_import(tmp_path, price_map):
    """The map carries no date: as_of is null (unknown), the day it was read is `retrieved`."""
    out = tmp_path / "prices.yaml"
    offers = import_prices(["gpt-4o*", "gemini/*"], out, price_map, today=datetime.date(2026, 11, 24))
    assert sorted(offers) == ["gemini-2.5-flash", "openai-gpt-4o", "openai-gpt-4o-mini"]  # no embedding model
    mini = offers["openai-gpt-4o-mini"]
    assert (mini["input_per_1m"], mini["output_per_1m"], mini["cached_input_per_1m"]) == (0.15, 0.6, 0.075)
    assert mini["batch_output_discount"] == 0.5 and "batch_input_discount" not in mini
    assert mini["context_window"] == 128000
    assert mini["as_of"] is None and mini["retrieved"] == "2026-11-24" and "prices.json" in mini["source"]
    assert (mini["deprecation"], mini["deprecation_source"]) == ("2027-01-14", "https://example.com/deprecations")
    assert "cached_input_per_1m" not in offers["openai-gpt-4o"]
    dated = import_prices(["gpt-4o"], out, price_map, source_date=datetime.date(2026, 11, 2), source_version="map-7")[
        "openai-gpt-4o"
    ]
    assert (dated["as_of"], dated["source_version"]) == ("2026-11-02", "map-7")


def test_tiers_cache_writes_and_per_direction_batch_prices_are_imported(tmp_path, price_map):
    """claude-long: $3 in / $15 out; cache write 3.75e-6 = $3.75, read $0.3; batch input 1.5e-6 = 50 % off,
    output 1.125e-5 = 25 % off; above 200k prompt tokens $6 in / $22.5 out / $0.6 cached (the _priority
    variant is another service tier and is not imported)."""
    (offer,) = import_prices(["claude-long"], tmp_path / "prices.yaml", price_map).values()
    assert (offer["cache_write_input_per_1m"], offer["cached_input_per_1m"]) == (3.75, 0.3)
    assert (offer["batch_input_discount"], offer["batch_output_discount"]) == (0.5, 0.25)
    assert offer["tiers"] == [
        {"above_input_tokens": 200_000, "input_per_1m": 6.0, "output_per_1m": 22.5, "cached_input_per_1m": 0.6}
    ]
    (tmp_path / "models.yaml").write_text(CATALOG)
    catalog, _ = load_catalog(tmp_path / "models.yaml")  # what was written loads as a priced offer
    loaded = catalog.api_offers["anthropic-claude-long"]
    assert loaded.batch_discounts == (0.5, 0.25) and loaded.tiers[0].above_input_tokens == 200_000
    assert loaded.as_of is None and loaded.retrieved is not None


def test_hand_entered_prices_override_imported_ones(tmp_path, price_map):
    catalog_path = tmp_path / "models.yaml"
    catalog_path.write_text(CATALOG)
    import_prices(["gpt-4o", "gpt-4o-mini"], tmp_path / "prices.yaml", price_map)
    catalog, _ = load_catalog(catalog_path)
    assert catalog.api_offers["openai-gpt-4o"].source == "our negotiated contract"  # models.yaml wins
    assert catalog.api_offers["openai-gpt-4o"].output_per_1m == 8.0
    assert catalog.api_offers["openai-gpt-4o-mini"].output_per_1m == 0.6  # imported


def test_a_second_import_keeps_the_first(tmp_path, price_map):
    out = tmp_path / "prices.yaml"
    import_prices(["gpt-4o-mini"], out, price_map)
    import_prices(["gemini/*"], out, price_map)
    (tmp_path / "models.yaml").write_text(CATALOG)
    catalog, _ = load_catalog(tmp_path / "models.yaml")
    assert {"openai-gpt-4o-mini", "gemini-2.5-flash"} <= set(catalog.api_offers)


def test_no_match_and_bad_files_are_clear_errors(tmp_path, price_map):
    with pytest.raises(UsageError, match="matches 'mistral-\\*'"):
        import_prices(["mistral-*"], tmp_path / "prices.yaml", price_map)
    assert not (tmp_path / "prices.yaml").exists()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UsageError, match="broken.json: not valid JSON"):
        import_prices(["x"], tmp_path / "prices.yaml", broken)


def test_an_undated_imported_price_is_named_with_its_file(tmp_path):
    (tmp_path / "models.yaml").write_text(CATALOG)
    (tmp_path / "prices.yaml").write_text(
        "api_offers:\n  x: {provider: p, model: m, input_per_1m: 1, output_per_1m: 2, source: s}\n"
    )
    with pytest.raises(UsageError, match=r"prices.yaml: entry 'x', field 'as_of': Field required"):
        load_catalog(tmp_path / "models.yaml")


def test_offer_names_do_not_repeat_the_provider():
    assert offer_name("openai", "gpt-4o-mini") == "openai-gpt-4o-mini"
    assert offer_name("gemini", "gemini/gemini-2.5-flash") == "gemini-2.5-flash"
    assert offer_name("bedrock", "anthropic.claude-3-haiku:0") == "bedrock-anthropic.claude-3-haiku-0"


def test_a_bad_entry_or_a_file_that_is_no_prices_file_writes_nothing(tmp_path, price_map):
    """A negative or non-numeric price is refused before the write (saved, it broke every later load of the
    catalog, imports included); so is an --out that holds something other than a prices file, or a folder."""
    out = tmp_path / "prices.yaml"
    import_prices(["gpt-4o"], out, price_map)
    before = out.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "gpt-neg": {"mode": "chat", "input_cost_per_token": -1e-6, "output_cost_per_token": 1e-6},
                "gpt-str": {"mode": "chat", "input_cost_per_token": "abc", "output_cost_per_token": 1e-6},
            }
        )
    )
    with pytest.raises(UsageError, match="price map entry 'gpt-neg': input_per_1m: Input should be greater"):
        import_prices(["gpt-neg"], out, bad)
    with pytest.raises(UsageError, match="price map entry 'gpt-str': a price is not a number"):
        import_prices(["gpt-str"], out, bad)
    assert out.read_text() == before
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(UsageError, match="list.yaml: not a prices file"):
        import_prices(["gpt-4o"], listed, price_map)
    assert listed.read_text() == "- a\n"
    with pytest.raises(UsageError, match="is a folder"):
        import_prices(["gpt-4o"], out, tmp_path)
