"""Embeddings priced per 1M embedded tokens; LiteLLM's embedding offers imported; catalog roles and folder digests."""

import datetime
import json

import pytest

from bench.catalog import ApiOffer, HardwareOffer, ModelEntry, file_digest, load_catalog
from bench.cost import CostError, embedding_cost
from bench.prices import import_prices
from bench.summary import PoolingFigures, RunSummary, StageSummary, Stats

TODAY = datetime.date(2026, 12, 1)
VM = HardwareOffer(rented={"per_hour": 0.36}, source="quote", as_of="2026-11-01")  # $0.36/h: $1e-4 a second


def stage(index: int, tokens_per_s: float, batch: float) -> StageSummary:
    pool = PoolingFigures(api="embeddings", inputs=10, inputs_per_s=tokens_per_s / 100, tokens=1000,
                          tokens_per_s=tokens_per_s, batch_size=Stats(n=1, mean=batch))  # fmt: skip
    return StageSummary(stage=index, label=f"batch {batch:g}", pooling=pool, e2e_ms=Stats(n=1, p99=12.0))


def offer(price: float, batch: float = 0.0) -> ApiOffer:
    return ApiOffer(provider="p", model="e", mode="embedding", input_per_1m=price, batch_input_discount=batch,
                    source="map", as_of=None)  # fmt: skip


def test_self_hosted_is_priced_at_its_fastest_stage_against_each_offer():
    summary = RunSummary(stages=[stage(0, 500.0, 1), stage(1, 2000.0, 8)])
    report = embedding_cost(summary, "vm", VM, {"small": offer(0.02, 0.5), "large": offer(0.13)}, 0.5, TODAY)
    # $0.36/h over 2,000 tokens/s x 3600 x 0.5 = 3.6M tokens an hour: $0.1 per 1M
    assert report["priced_stage"]["stage"] == 1 and report["priced_stage"]["per_1m_tokens"] == pytest.approx(0.1)
    assert report["stages"][0]["per_1m_tokens"] == pytest.approx(0.4)
    assert report["stages"][1]["per_1m_inputs"] == pytest.approx(0.36 / (20 * 3600 * 0.5) * 1e6)
    large, small = report["apis"]  # sorted by name
    assert small["batch_per_1m_tokens"] == pytest.approx(0.01) and large["batch_per_1m_tokens"] is None
    assert large["self_hosted_ratio"] == pytest.approx(0.1 / 0.13) and small["self_hosted_ratio"] == pytest.approx(5)
    # break-even: $0.36 x 730 a month over $0.13 per 1M = 2.02B tokens, within one instance's 2.63B
    assert report["tokens_per_month_one_instance"] == pytest.approx(2000 * 3600 * 0.5 * 730)
    assert large["break_even_tokens_per_month"] == pytest.approx(0.36 * 730 / 0.13e-6)
    assert small["break_even_tokens_per_month"] is None  # 13.1B tokens: more than one instance carries
    assert report["cheaper_apis"] == ["small"]


def test_a_run_that_embedded_nothing_cannot_be_priced():
    with pytest.raises(CostError, match="embedded anything"):
        embedding_cost(RunSummary(stages=[StageSummary(stage=0)]), "vm", VM, {}, 1.0, TODAY)


def test_litellm_embedding_models_import_as_embedding_offers(tmp_path):
    price_map = {
        "text-embedding-3-small": {"mode": "embedding", "litellm_provider": "openai", "input_cost_per_token": 2e-8,
                                   "input_cost_per_token_batches": 1e-8, "output_vector_size": 1536},
        "mistral/mistral-embed": {"mode": "embedding", "litellm_provider": "mistral", "input_cost_per_token": 1e-7},
        "rerank-v3": {"mode": "rerank", "litellm_provider": "cohere", "input_cost_per_query": 0.002},
    }  # fmt: skip
    source = tmp_path / "map.json"
    source.write_text(json.dumps(price_map))
    out = tmp_path / "prices.yaml"
    offers = import_prices(["*embed*"], out, from_file=source, today=TODAY)
    small, mistral = offers["openai-text-embedding-3-small"], offers["mistral-embed"]
    assert small["mode"] == "embedding" and small["output_per_1m"] == 0 and small["output_vector_size"] == 1536
    assert small["input_per_1m"] == pytest.approx(0.02) and small["batch_input_discount"] == pytest.approx(0.5)
    assert mistral["output_per_1m"] == 0.0  # the map gives no output price for it: an embedding bills input only
    (tmp_path / "models.yaml").write_text("models: {}\n")
    catalog, _ = load_catalog(tmp_path / "models.yaml")
    assert catalog.api_offers["mistral-embed"].mode == "embedding"
    with pytest.raises(Exception, match="no priced chat, completion or embedding model"):
        import_prices(["rerank-*"], out, from_file=source, today=TODAY)


def test_roles_default_to_the_apis_and_a_folder_has_one_digest(tmp_path):
    entry = {"format": "gguf", "source": {"path": "m.gguf"}}
    assert ModelEntry(api="embeddings", **entry).roles == ["embedder"]
    assert ModelEntry(api="chat", **entry).roles == ["generator"]
    assert ModelEntry(api="rerank", roles=["reranker", "classifier"], **entry).roles == ["reranker", "classifier"]
    catalog, _ = load_catalog()
    assert catalog.models["all-minilm-l6-v2"].roles == ["embedder"]
    assert catalog.models["gemma3-270m"].roles == ["generator"]
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"abc")
    first = file_digest(folder)["sha256"]
    assert len(first) == 64 and file_digest(folder)["sha256"] == first
    (folder / "sub" / "w.bin").write_bytes(b"abd")
    assert file_digest(folder)["sha256"] != first


def test_the_hardware_price_is_dated_and_aged_like_the_apis():
    """The instance's price carries its source, date and age, and is flagged stale past the window."""
    from bench.format import format_embedding_cost

    summary = RunSummary(stages=[stage(0, 2000.0, 8)])
    report = embedding_cost(summary, "vm", VM, {"small": offer(0.02)}, 0.5, datetime.date(2027, 6, 1))
    assert report["as_of"] == VM.as_of.isoformat() and report["price_source"] == VM.source
    assert (
        report["price_age"]["stale"] and report["price_age"]["age_days"] == (datetime.date(2027, 6, 1) - VM.as_of).days
    )
    assert f"{VM.source}, as of {VM.as_of.isoformat()}: {report['price_age']['note']}" in format_embedding_cost(report)
    fresh = embedding_cost(summary, "vm", VM, {}, 0.5, VM.as_of)
    assert not fresh["price_age"]["stale"]
