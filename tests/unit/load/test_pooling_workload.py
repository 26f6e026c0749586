"""Embeddings and rerank workloads: the batch size as an axis of stages, and batches of fitted inputs."""

import pytest
from pydantic import ValidationError

from bench.load.plan import build_plan
from bench.load.workload import WorkSource
from bench.metrics.requests import summarize_requests, table_of
from bench.spec import LoadSpec, RunSpec, WorkloadSpec

ENGINE = {"kind": "llamacpp"}


def words(text: str, special: bool = False) -> int:
    """A stand-in tokenizer: one token per word, and [CLS] ... [SEP] as the special tokens."""
    return len(text.split()) + (2 if special else 0)


def test_each_batch_size_is_a_stage_of_each_stream_count_numbered_in_order():
    workload = WorkloadSpec(batch_size="1,8")
    plan = build_plan(LoadSpec(concurrency=[1, 2], requests=4), workload)
    assert [(s.index, s.name, s.batch_size) for s in plan.stages] == [
        (0, "c1-b1", 1),
        (1, "c1-b8", 8),
        (2, "c2-b1", 1),
        (3, "c2-b8", 8),
    ]
    records = [s.record() for s in plan.stages]
    assert records[1].label == "concurrency 1, batch 8" and records[1].batch_size == 8
    assert plan.total_stages == 4
    rates = build_plan(LoadSpec(rate=[2.0], requests=4), WorkloadSpec(batch_size=[4, 16])).stages
    assert [(s.name, s.batch_size) for s in rates] == [("rate-2-b4", 4), ("rate-2-b16", 16)]
    one = build_plan(LoadSpec(concurrency=[2], requests=4), WorkloadSpec(batch_size=32)).stages
    assert [(s.name, s.batch_size) for s in one] == [("c2", 32)]  # one batch size: the stage keeps its name
    assert build_plan(LoadSpec(), WorkloadSpec()).stages[0].batch_size is None


def test_batch_size_is_refused_where_it_means_nothing():
    with pytest.raises(ValidationError, match="has none"):
        RunSpec(engine=ENGINE, model="m", api="chat", workload={"batch_size": 4})
    with pytest.raises(ValidationError, match="one batch size"):
        RunSpec(engine=ENGINE, model="m", api="embeddings", workload={"batch_size": [1, 4]}, load={"sweep": 2})
    with pytest.raises(ValidationError, match="synthetic inputs"):
        WorkloadSpec(batch_size=4, prompts="p.jsonl")
    spec = RunSpec(engine=ENGINE, model="m", api="embeddings", workload={"batch_size": "1,4"})
    assert RunSpec.model_validate(spec.to_json()) == spec and spec.workload.batch_size == [1, 4]


def test_requests_carry_a_batch_of_inputs_each_fitted_to_its_length():
    work = WorkSource(WorkloadSpec(input_tokens=12, batch_size=[3]), 7, words, None, api="embeddings")
    work.prepare(2, 3)
    first = [next(work) for _ in range(2)]
    for item in first:
        (request,) = item.turns
        assert len(request.inputs) == 3 and all(words(text, True) == 12 for text in request.inputs)
        assert request.prompt_tokens_expected == 36 and request.max_tokens == 0
    work.prepare(1, 5)  # another batch size: made anew
    (request,) = next(work).turns
    assert len(request.inputs) == 5
    again = WorkSource(WorkloadSpec(input_tokens=12, batch_size=[3]), 7, words, None, api="embeddings")
    again.prepare(2, 3)
    assert [next(again).turns[0].inputs for _ in range(2)] == [i.turns[0].inputs for i in first]  # seeded
    rerank = WorkSource(WorkloadSpec(input_tokens=10, query_tokens=6), 0, words, None, api="rerank")
    rerank.prepare(1, 4)
    (query,) = next(rerank).turns
    assert words(query.prompt, True) == 6 and len(query.inputs) == 4 and query.prompt_tokens_expected is None


def test_pooling_figures_are_inputs_and_tokens_over_the_window():
    ms = 1_000_000
    records = [
        {"request_id": i, "status": "ok", "t_send_ns": s * ms, "t_end_ns": e * ms, "inputs": n, "prompt_tokens": 10 * n,
         "dimensions": 384, "output_tokens": 0, "max_tokens": 0, "tokens_source": "usage"}
        for i, (s, e, n) in enumerate([(0, 100, 4), (50, 250, 4), (100, 500, 8)])
    ]  # fmt: skip
    records.append({"request_id": 9, "t_send_ns": 0, "t_end_ns": 10 * ms, "status": "error", "error": "x"})
    pool = summarize_requests(table_of(records)).pooling
    assert pool.inputs == 16 and pool.tokens == 160 and pool.dimensions == 384 and pool.api == "embeddings"
    assert pool.inputs_per_s == pytest.approx(16 / 0.5) and pool.tokens_per_s == pytest.approx(160 / 0.5)
    assert pool.tokens_per_input == 10 and pool.batch_size.mean == pytest.approx(16 / 3)
    assert pool.ms_per_input.p50 == pytest.approx(50)  # 100/4, 200/4, 400/8
    assert summarize_requests(table_of(records[:0] + [records[3]])).pooling is None
