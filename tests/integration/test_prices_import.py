"""`bench prices import` against the price map inside the installed litellm package (no network)."""

import importlib.metadata
import json
import shutil

import pytest
import yaml

from bench.catalog import load_catalog
from bench.prices import LITELLM_PRICE_FILE

from .conftest import REPO, installed, run_bench

pytestmark = pytest.mark.skipif(
    not installed("litellm"), reason="litellm not installed: pip install --no-deps litellm (scripts/test.sh does)"
)


def test_import_reads_the_bundled_file_and_hand_prices_win(tmp_path):
    shutil.copy(REPO / "models.yaml", tmp_path / "models.yaml")
    done = run_bench(
        "prices",
        "import",
        "gpt-4o-mini",
        "claude-haiku-4-5",
        "--catalog",
        str(tmp_path / "models.yaml"),
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    dist = importlib.metadata.distribution("litellm")
    price_map = json.loads(dist.locate_file(LITELLM_PRICE_FILE).read_text())
    imported = yaml.safe_load((tmp_path / "prices.yaml").read_text())["api_offers"]
    haiku = imported["anthropic-claude-haiku-4-5"]
    assert haiku["output_per_1m"] == pytest.approx(price_map["claude-haiku-4-5"]["output_cost_per_token"] * 1e6)
    assert f"litellm {dist.version}" in haiku["source"] and haiku["source_version"] == dist.version
    assert haiku["as_of"] is None and haiku["retrieved"]  # the map carries no date: unknown, not the import's day
    entry = price_map["claude-haiku-4-5"]
    if entry.get("cache_creation_input_token_cost") is not None:
        assert haiku["cache_write_input_per_1m"] == pytest.approx(entry["cache_creation_input_token_cost"] * 1e6)
    if entry.get("input_cost_per_token_batches") is not None:
        expected = 1 - entry["input_cost_per_token_batches"] / entry["input_cost_per_token"]
        assert haiku["batch_input_discount"] == pytest.approx(expected)
    assert "as of unknown: give --source-date" in done.stdout
    catalog, _ = load_catalog(tmp_path / "models.yaml")
    assert catalog.api_offers["anthropic-claude-haiku-4-5"].source == haiku["source"]
    # models.yaml prices gpt-4o-mini by hand: that entry overrides the import of the same name
    assert "openai-gpt-4o-mini" in imported
    assert catalog.api_offers["openai-gpt-4o-mini"].source == "OpenAI API pricing page"
