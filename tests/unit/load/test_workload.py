"""Workloads: lengths, token fitting, shared prefixes, conversations, prompt files."""

import random

import pytest
from pydantic import ValidationError

from bench.errors import UsageError
from bench.load.trace import Trace, TraceRow
from bench.load.workload import (
    SyntheticWorkload,
    TokenFitter,
    file_items,
    load_prompt_file,
    shared_prefixes,
    synthetic_items,
    trace_items,
)
from bench.spec import Length


def words_tokenizer(text: str) -> int:
    """A stand-in tokenizer for the arithmetic: BOS plus one token per word."""
    return 1 + len(text.split())


def merging_tokenizer(text: str) -> int:
    """Not additive over words: every 'time' merges with the word before it."""
    return 1 + len(text.split()) - text.split()[1:].count("time")


def fitter(tokenizer=words_tokenizer):
    return TokenFitter(tokenizer, lambda text: tokenizer(text) - 1)


def test_fitting_hits_the_target_with_one_call_when_costs_add_up():
    f = fitter()
    calls_before = f.calls
    text, tokens = f.fit(random.Random(1), 40)
    assert tokens == words_tokenizer(text) == 40 and f.calls - calls_before == 1 and f.additive


def test_fitting_falls_back_to_search_when_costs_do_not_add_up():
    f = fitter(merging_tokenizer)
    for seed in range(20):
        text, tokens = f.fit(random.Random(seed), 30)
        assert tokens == merging_tokenizer(text) == 30  # one word adds at most one token, so 30 is reachable
    assert f.additive is False


@pytest.mark.parametrize("spec, low, high", [("16", 16, 16), ("uniform:4:9", 4, 9), ("normal:20:3", 1, 60)])
def test_length_distributions(spec, low, high):
    length = Length.model_validate(spec)
    samples = [length.sample(random.Random(i)) for i in range(500)]
    assert low <= min(samples) and max(samples) <= high and length.upper() >= max(samples)
    if spec.startswith("uniform"):
        assert set(samples) == set(range(4, 10))


@pytest.mark.parametrize("spec", ["0", "uniform:9:4", "normal:10", "lognormal:1:2", "abc"])
def test_bad_lengths(spec):
    with pytest.raises(ValidationError, match="give N, uniform:MIN:MAX or normal:MEAN:STD|at least 1"):
        Length.model_validate(spec)


def test_items_are_seeded_distinct_and_sized():
    w = SyntheticWorkload(Length.model_validate("uniform:10:20"), Length.model_validate("8"), seed=3)
    a, b = synthetic_items(w, 6, fitter()), synthetic_items(w, 6, fitter())
    assert [i.turns[0].prompt for i in a] == [i.turns[0].prompt for i in b]
    assert len({i.turns[0].prompt for i in a}) == 6
    for item in a:
        (turn,) = item.turns
        assert 10 <= turn.prompt_tokens_expected <= 20 and turn.max_tokens == 8
    later = synthetic_items(w, 2, fitter(), first=4)  # item i depends on its index only
    assert [i.turns[0].prompt for i in later] == [i.turns[0].prompt for i in a[4:]]


def test_shared_prefixes_are_reused_round_robin():
    w = SyntheticWorkload(Length.model_validate("30"), Length.model_validate("4"), prefix_count=2, prefix_tokens=20)
    items = synthetic_items(w, 4, fitter())
    first, second = shared_prefixes(w, fitter())
    assert words_tokenizer(first) == 20 and first != second
    for index, item in enumerate(items):
        assert item.turns[0].prompt.startswith((first, second)[index % 2] + " ")
        assert words_tokenizer(item.turns[0].prompt) == 30  # prefix and suffix joined: one BOS, as the server adds
    assert len({i.turns[0].prompt for i in items}) == 4


def test_a_trace_rows_blocks_join_to_its_length_and_recur_as_text():
    """Each block after the first is fitted without the BOS the server adds once per prompt: the joined prompt
    is the row's length, and a block is its 16 tokens wherever it recurs."""
    rows = [TraceRow(0.0, 40, 4, (7, 8)), TraceRow(1.0, 37, 4, (7, 8, 9)), TraceRow(2.0, 5, 4, ())]
    items = trace_items(Trace(None, "mooncake", rows, 0), fitter(), seed=1, block_tokens=16)
    prompts = [item.turns[0].prompt for item in items]
    assert [words_tokenizer(p) for p in prompts] == [40, 37, 5]
    assert prompts[1].startswith(" ".join(prompts[0].split()[:31]) + " ")  # blocks 7 and 8: the same 32 tokens


def test_conversations_have_turns():
    w = SyntheticWorkload(Length.model_validate("10"), Length.model_validate("4"), turns=3)
    (item,) = synthetic_items(w, 1, fitter())
    assert len(item.turns) == 3 and item.conversation == 0


def test_prompt_file_rows_and_wrap_around(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"messages": [{"role": "user", "content": "b"}], "output_tokens": 3}\n')
    items = file_items(load_prompt_file(path), output_tokens=9)
    first = [next(items).turns[0] for _ in range(3)]
    assert [t.prompt for t in first] == ["a", [{"role": "user", "content": "b"}], "a"]
    assert [t.max_tokens for t in first] == [9, 3, 9]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"prompt": "a"}\n{oops\n', "line 2: not valid JSON"),
        ('{"text": "a"}\n', 'line 1: give exactly one of "prompt"'),
        ('{"prompt": "a", "max_tokens": 0}\n', '"max_tokens" must be a positive integer'),
        ("\n\n", "no prompts in the file"),
    ],
)
def test_prompt_file_errors_name_the_line(tmp_path, content, expected):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=expected):
        load_prompt_file(path)
