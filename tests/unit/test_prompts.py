"""Synthetic prompts fit the target length by the tokenizer given; prompt files are validated."""

import random

import pytest

from bench.errors import UsageError
from bench.load.prompts import _words, file_requests, fit_text, load_prompt_file, synthetic_requests


def char_tokenizer(text: str) -> int:
    """A stand-in tokenizer for the arithmetic: one token per 3 characters, rounded up."""
    return -(-len(text) // 3)


def test_fit_text_is_the_longest_prefix_within_the_target():
    text, tokens = fit_text(random.Random(1), 40, char_tokenizer)
    assert tokens == char_tokenizer(text) <= 40
    words = _words(random.Random(1), 2 * 40 + 16)  # the same draw fit_text made
    n = len(text.split())
    assert text == " ".join(words[:n])
    assert char_tokenizer(" ".join(words[: n + 1])) > 40  # one more word would overflow


def test_same_seed_same_prompts_and_different_seed_different_prompts():
    a = synthetic_requests("measured", 5, 30, 8, seed=7, count_prompt_tokens=char_tokenizer)
    b = synthetic_requests("measured", 5, 30, 8, seed=7, count_prompt_tokens=char_tokenizer)
    c = synthetic_requests("measured", 5, 30, 8, seed=8, count_prompt_tokens=char_tokenizer)
    assert [r.prompt for r in a] == [r.prompt for r in b]
    assert [r.prompt for r in a] != [r.prompt for r in c]
    assert len({r.prompt for r in a}) == 5  # distinct prompts: no accidental prefix-cache hits
    assert all(r.max_tokens == 8 and r.prompt_tokens_expected <= 30 for r in a)


def test_warmup_prompts_do_not_change_measured_prompts():
    alone = synthetic_requests("measured", 3, 20, 4, 0, char_tokenizer)
    _ = synthetic_requests("warmup", 9, 20, 4, 0, char_tokenizer)
    again = synthetic_requests("measured", 3, 20, 4, 0, char_tokenizer, first_id=9)
    assert [r.prompt for r in alone] == [r.prompt for r in again]


def test_prompt_file_rows_and_wrap_around(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"messages": [{"role": "user", "content": "b"}], "max_tokens": 3}\n')
    rows = load_prompt_file(path)
    requests = file_requests(rows, "measured", 3, output_tokens=9, start=0)
    assert [r.prompt for r in requests] == ["a", [{"role": "user", "content": "b"}], "a"]
    assert [r.max_tokens for r in requests] == [9, 3, 9]


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
