"""Workloads: synthetic prompts of chosen token lengths, or a JSONL file of prompts (a golden set's too).

Synthetic prompts are random words from a fixed vocabulary, drawn from generators seeded by
(seed, item index), so the same seed gives the same prompts whatever else changes, and every
prompt is distinct (no accidental prefix-cache hits) unless shared prefixes are asked for. Each is
cut to its target length with the served model's own tokenizer.

Lengths are distributions (bench.spec.Length): `128` (fixed), `uniform:64:256` (inclusive),
`normal:128:32` (mean, std; rounded, at least 1).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.clients.base import PreparedRequest
from bench.errors import UsageError
from bench.load.trace import Trace
from bench.results import read_input_jsonl
from bench.spec import Length, WorkloadSpec


@dataclass
class WorkItem:
    """One request, or a conversation whose turns go one after another, each holding the earlier turns."""

    turns: list[PreparedRequest]
    conversation: int | None = None
    case_id: str | None = None  # a prompt file's or golden set's id, kept in the record


# Common English words: one or two tokens each for most tokenizers, so lengths are easy to fit.
VOCABULARY = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
foot boy age policy music market sense nation plan college interest death experience effect use class
control care field development role effort rate heart drug show leader light voice wife police mind
price report decision son view relationship town road arm difference value building action model season
society tax director position player record paper space ground form event official matter center couple
site project activity star table need court oil situation cost industry figure street image phone data
picture practice piece land product doctor wall patient worker news test movie north love support
technology step baby computer type attention film tree source organization hair window evidence
population truth song river garden letter answer bridge forest island mountain ocean planet
quickly slowly carefully brightly quietly always never often today tomorrow yesterday together
""".split()


@dataclass(frozen=True)
class SyntheticWorkload:
    input: Length
    output: Length
    seed: int = 0
    prefix_count: int = 0  # N distinct shared prefixes ...
    prefix_tokens: int = 0  # ... of P tokens each, reused round-robin
    turns: int = 1  # >1: conversations, each turn's prompt holding the earlier turns

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "synthetic",
            "input_tokens": str(self.input),
            "output_tokens": str(self.output),
            "seed": self.seed,
            "prefix_count": self.prefix_count,
            "prefix_tokens": self.prefix_tokens,
            "turns": self.turns,
        }


class TokenFitter:
    """Cuts random word sequences to a token count with few tokenizer calls.

    Word costs are measured once per vocabulary word; a candidate is then verified with one call.
    If the tokenizer is not additive over words, it falls back to a binary search.
    """

    def __init__(self, count_prompt_tokens: Callable[[str], int], count_piece: Callable[[str], int]) -> None:
        self.count = count_prompt_tokens  # with the special prefix (BOS) the server adds to prompts
        self.special = count_prompt_tokens("") - count_piece("")
        self.first_cost = {w: count_piece(w) for w in VOCABULARY}
        self.cost = {w: count_piece(" " + w) - count_piece("") for w in VOCABULARY}
        self.calls = 0
        self.additive: bool | None = None  # unknown until the first verified fit

    def fit(self, rng: random.Random, target: int, verify: bool = True) -> tuple[str, int]:
        """verify=False trusts the word costs once they have proved additive (no tokenizer call)."""
        words = [rng.choice(VOCABULARY) for _ in range(2 * target + 16)]
        total, n = self.special + self.first_cost[words[0]], 1
        while n < len(words) and total + self.cost[words[n]] <= target:
            total += self.cost[words[n]]
            n += 1
        text = " ".join(words[:n])
        if not verify and self.additive:
            return text, total
        self.calls += 1
        actual = self.count(text)
        if actual == total:
            self.additive = True if self.additive is None else self.additive
            return text, actual
        self.additive = False
        return self._bisect(words, target)

    def fit_after(self, rng: random.Random, target: int, verify: bool = True) -> tuple[str, int]:
        """Text of `target` tokens to be joined after another piece of one prompt: the server adds its special
        prefix (BOS) once per prompt, which fit counts in every piece."""
        return self.fit(rng, target + self.special, verify)

    def _bisect(self, words: list[str], target: int) -> tuple[str, int]:
        lo, hi = 1, len(words)
        best = (words[0], self.count(words[0]))
        while lo <= hi:
            mid = (lo + hi) // 2
            text = " ".join(words[:mid])
            self.calls += 1
            tokens = self.count(text)
            if tokens <= target:
                best, lo = (text, tokens), mid + 1
            else:
                hi = mid - 1
        return best


def shared_prefixes(workload: SyntheticWorkload, fitter: TokenFitter) -> list[str]:
    return [
        fitter.fit(random.Random(f"{workload.seed}:prefix:{p}"), workload.prefix_tokens)[0]
        for p in range(workload.prefix_count)
    ]


def synthetic_items(
    workload: SyntheticWorkload,
    count: int,
    fitter: TokenFitter,
    first: int = 0,
    prefixes: list[str] | None = None,
    verify: bool = True,
) -> list[WorkItem]:
    """count work items (conversations when turns > 1), item i seeded by (seed, first + i)."""
    if prefixes is None:
        prefixes = shared_prefixes(workload, fitter)
    items = []
    for i in range(first, first + count):
        rng = random.Random(f"{workload.seed}:item:{i}")
        turns = []
        for turn in range(workload.turns):
            input_len, output_len = workload.input.sample(rng), workload.output.sample(rng)
            if prefixes and turn == 0:
                suffix, tokens = fitter.fit_after(rng, max(1, input_len - workload.prefix_tokens), verify)
                text = f"{prefixes[i % len(prefixes)]} {suffix}"
                tokens = None  # the join may merge a token; the server's usage has the exact count
            else:
                text, tokens = fitter.fit(rng, input_len, verify)
            turns.append(PreparedRequest(text, output_len, prompt_tokens_expected=tokens if turn == 0 else None))
        items.append(WorkItem(turns, conversation=i if workload.turns > 1 else None))
    return items


def pooling_items(
    workload: SyntheticWorkload,
    count: int,
    fitter: TokenFitter,
    batch: int,
    first: int = 0,
    query_tokens: int | None = None,
    verify: bool = True,
) -> list[WorkItem]:
    """count embeddings requests of `batch` texts each (input lengths drawn per text), or with query_tokens
    rerank requests: a query of that length and `batch` documents; item i seeded by (seed, first + i), so a
    batch size's requests are the same whatever ran before."""
    items = []
    for i in range(first, first + count):
        rng = random.Random(f"{workload.seed}:pooled:{batch}:{i}")
        texts, expected = [], 0
        for _ in range(batch):
            text, tokens = fitter.fit(rng, workload.input.sample(rng), verify)
            texts.append(text)
            expected += tokens
        query = ""
        if query_tokens is not None:
            query, tokens = fitter.fit(rng, query_tokens, verify)
            expected = None  # the server pairs the query with each document in its own way
        items.append(WorkItem([PreparedRequest(query, 0, prompt_tokens_expected=expected, inputs=texts)]))
    return items


def load_prompt_file(path: Path) -> list[dict[str, Any]]:
    """JSONL, one object per line: {"prompt": str} or {"messages": [...]}, optional "max_tokens"
    (or "output_tokens", the expected output length), and optional "tools" (OpenAI's format: a list of
    {"type": "function", "function": {"name", "parameters": JSON Schema}}) with "tool_choice"."""
    rows = []
    for _, where, row in read_input_jsonl(path, f"--prompts {path}"):
        if not isinstance(row, dict):
            raise UsageError(f"{where}: expected a JSON object")
        has_prompt, has_messages = isinstance(row.get("prompt"), str), isinstance(row.get("messages"), list)
        if has_prompt == has_messages:
            raise UsageError(f'{where}: give exactly one of "prompt" (a string) or "messages" (a list)')
        for key in ("max_tokens", "output_tokens"):
            value = row.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UsageError(f'{where}: "{key}" must be a positive integer')
        tools = row.get("tools")
        if tools is not None and not (
            isinstance(tools, list)
            and all(isinstance(t, dict) and isinstance((t.get("function") or {}).get("name"), str) for t in tools)
        ):
            raise UsageError(f'{where}: "tools" must be a list of {{"type": "function", "function": {{"name": ...}}}}')
        rows.append(row)
    if not rows:
        raise UsageError(f"--prompts {path}: no prompts in the file")
    return rows


def file_items(rows: list[dict[str, Any]], output_tokens: int) -> Iterator[WorkItem]:
    """The file's prompts in order, wrapping around, without end (stages bound the count)."""
    while True:
        for row in rows:
            prompt = row["prompt"] if "prompt" in row else row["messages"]
            max_tokens = row.get("max_tokens") or row.get("output_tokens") or output_tokens
            case_id = row.get("id")
            extra = {k: row[k] for k in ("tools", "tool_choice") if row.get(k) is not None}
            yield WorkItem(
                [PreparedRequest(prompt, max_tokens, extra_body=extra)],
                case_id=None if case_id is None else str(case_id),
            )


class WorkSource:
    """Work items for the stages, made between stages so no tokenizer call competes with measured requests."""

    def __init__(
        self,
        workload: WorkloadSpec,
        seed: int,
        count_tokens: Callable[..., int] | None,
        rows: list[dict[str, Any]] | None,
        trace: Trace | None = None,
        api: str | None = None,
    ) -> None:
        self.rows = file_items(rows, int(workload.output_tokens.a)) if rows else None
        self.ready: deque[WorkItem] = deque()
        self.made_during_stage = 0
        self.next_index = 0
        # embeddings and rerank: requests of `batch` inputs (set per stage), a rerank query of query_tokens
        self.pooled = api in ("embeddings", "rerank")
        self.query_tokens = workload.query_tokens if api == "rerank" else None
        self.batch = 1
        if rows:
            return
        if count_tokens is None:
            raise UsageError("this endpoint exposes no tokenizer, so synthetic prompts cannot be sized; use --prompts")
        self.workload = SyntheticWorkload(
            workload.input_tokens,
            workload.output_tokens,
            seed,
            workload.prefix_count,
            workload.prefix_tokens,
            workload.turns,
        )
        self.fitter = TokenFitter(lambda text: count_tokens(text, True), lambda text: count_tokens(text, False))
        self.prefixes = shared_prefixes(self.workload, self.fitter)
        if trace is not None:  # a trace's requests, all made now (their lengths are the trace's)
            self.rows = iter(trace_items(trace, self.fitter, seed, workload.trace_block_tokens))

    def prepare(self, items: int, batch_size: int | None = None) -> None:
        """Make `items` work items (requests, or conversations with turns) ahead of a stage; embeddings and
        rerank requests of `batch_size` inputs each."""
        self.made_during_stage = 0
        if self.rows is not None:
            return
        if self.pooled:
            if (batch_size or 1) != self.batch:  # another batch size: the requests made for the last one go
                self.ready.clear()
                self.batch = batch_size or 1
            count = max(0, items - len(self.ready))
            self.ready.extend(
                pooling_items(self.workload, count, self.fitter, self.batch, self.next_index, self.query_tokens)
            )
            self.next_index += count
            return
        count = max(0, items - len(self.ready))
        self.ready.extend(synthetic_items(self.workload, count, self.fitter, self.next_index, self.prefixes))
        self.next_index += count

    def __iter__(self):
        return self

    def __next__(self) -> WorkItem:
        if self.rows is not None:
            return next(self.rows)
        if self.ready:
            return self.ready.popleft()
        self.made_during_stage += 1  # more than planned: made now, from word costs, with no tokenizer call
        if self.pooled:
            (item,) = pooling_items(
                self.workload, 1, self.fitter, self.batch, self.next_index, self.query_tokens, verify=False
            )
            self.next_index += 1
            return item
        (item,) = synthetic_items(self.workload, 1, self.fitter, self.next_index, self.prefixes, False)
        self.next_index += 1
        return item


def trace_items(trace: Trace, fitter: TokenFitter, seed: int, block_tokens: int) -> list[WorkItem]:
    """One request per trace row, in the trace's order. A Mooncake row's hash ids become blocks of
    `block_tokens` prompt tokens, each the same text wherever its id recurs (so requests sharing leading
    ids share a prefix, as in the trace); the rest of its input length is text of its own. A row with a
    prompt sends it as it is."""
    blocks: dict[int, str] = {}

    def block(hash_id: int, tokens: int, first: bool) -> str:
        key = (hash_id, tokens, first)  # a block after another is fitted without the prompt's BOS
        if key not in blocks:
            fit = fitter.fit if first else fitter.fit_after
            blocks[key] = fit(random.Random(f"{seed}:block:{hash_id}"), tokens)[0]
        return blocks[key]

    items = []
    for index, row in enumerate(trace.rows):
        if row.prompt is not None:
            items.append(WorkItem([PreparedRequest(row.prompt, row.output_tokens)]))
            continue
        parts, left = [], row.input_tokens
        for hash_id in row.hash_ids:
            if left <= 0:
                break
            take = min(block_tokens, left)
            parts.append(block(hash_id, take, first=not parts))
            left -= take
        if left > 0:
            fit = fitter.fit_after if parts else fitter.fit
            parts.append(fit(random.Random(f"{seed}:trace:{index}"), left)[0])
        expected = row.input_tokens if not row.hash_ids else None  # joined blocks may merge a token
        items.append(WorkItem([PreparedRequest(" ".join(parts), row.output_tokens, prompt_tokens_expected=expected)]))
    return items
