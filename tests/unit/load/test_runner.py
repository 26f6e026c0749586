"""The load path (LoadRunner, the streaming client, the HTTP reader) against the in-process fake engine:
bench.calibrate.server run inside the test's event loop, with faults injected by request number."""

import asyncio
import time

import pytest

from bench.calibrate.server import running
from bench.clients.base import PreparedRequest
from bench.clients.dialects import DIALECTS
from bench.clients.http import HttpClient, perf_ns
from bench.clients.streaming import StreamingClient
from bench.load.plan import Stage
from bench.load.runner import LoadRunner
from bench.load.schedules import ClosedLoop, OpenLoop
from bench.load.workload import WorkItem

TOKENS = 8


def work(max_tokens=TOKENS):
    while True:
        yield WorkItem([PreparedRequest("hello", max_tokens)])


async def drive(stage, faults=None, api="completions", timeout_s=30.0, ttft_ms=5.0, gap_ms=1.0, stop_at=None):
    """Run one stage against the fake engine; returns (records, outcome, runner). stop_at: the request number
    whose arrival at the engine makes the test stop the run (the engine runs on this loop: the stop comes
    right after)."""
    records = []
    loop = asyncio.get_running_loop()

    def stopping(n, body):
        if n == stop_at:
            loop.call_soon(runner.request_stop, "interrupted by the test")
        return faults(n, body) if faults else None

    async with running(ttft_ms, gap_ms, faults if stop_at is None else stopping) as url:
        anchor = perf_ns()
        client = StreamingClient(HttpClient(url), DIALECTS[api], "fake", {}, timeout_s, anchor)
        runner = LoadRunner(client, work(), records.append)
        try:
            outcome = await runner.run_stage(stage)
        finally:
            await client.http.close()
    return records, outcome, runner


def stage(schedule=None, **bounds):
    return Stage(0, "s", schedule or ClosedLoop(2), **{"requests": 10, **bounds})


def test_phases_and_records_of_a_clean_closed_loop_stage():
    records, outcome, _ = asyncio.run(drive(stage(warmup_requests=2, cooldown_requests=2)))
    phases = [r.phase for r in records]
    assert (phases.count("warmup"), phases.count("measured"), phases.count("cooldown")) == (2, 10, 2)
    assert outcome.stop_reason is None and outcome.sent == {"warmup": 2, "measured": 10, "cooldown": 2}
    for r in records:
        assert r.status == "ok" and r.output_tokens == TOKENS and len(r.output_times_ns) == TOKENS
        assert r.tokens_source == "usage" and r.t_send_ns < r.output_times_ns[0] <= r.t_end_ns
        assert r.server_timings["tokens"] == TOKENS  # the fake engine's own truth rides along
    assert len({r.request_id for r in records}) == len(records)


def test_error_rate_stops_the_stage_after_ten_finished():
    records, outcome, _ = asyncio.run(drive(stage(requests=100, max_error_rate=0.5), faults=lambda n, body: "http-500"))
    assert outcome.stop_reason == "error rate 100% above 50%"
    failed = [r for r in records if r.status == "error"]
    assert 10 <= len(failed) < 100 and all(r.error.startswith("HTTP 500:") for r in failed)


def test_max_errors_stops_the_stage():
    def every_third(n, body):
        return "http-500" if n % 3 == 0 else None

    records, outcome, _ = asyncio.run(drive(stage(requests=100, max_errors=3), faults=every_third))
    assert outcome.stop_reason == "more than 3 errors"
    assert sum(r.status == "error" for r in records) >= 4 and len(records) < 100


def test_a_stop_cancels_what_is_in_flight_and_records_it_as_cancelled():
    # Requests of about 145 ms (8 tokens 20 ms apart). The stop comes as request 2 reaches the engine: a stream
    # sends it only once its first response has ended, and then both streams are inside a request.
    records, _, runner = asyncio.run(drive(stage(requests=1000), gap_ms=20.0, stop_at=2))
    assert runner.stop_reason == "interrupted by the test"
    cancelled = [r for r in records if r.status == "cancelled"]
    assert len(cancelled) == 2  # both streams were mid-response
    assert all("cancelled in flight: interrupted by the test" == r.error for r in cancelled)
    ok = sum(r.status == "ok" for r in records)
    assert ok >= 1 and len(records) == ok + 2  # nothing more was sent after the stop


def test_a_stream_cut_mid_way_keeps_what_arrived():
    records, _, _ = asyncio.run(drive(stage(ClosedLoop(1), requests=2), faults=lambda n, b: "cut:3"))
    for r in records:
        assert r.status == "error" and r.cut and len(r.output_times_ns) == 3
        assert "server closed the connection mid-response" in r.error and "cut after 3 output chunk(s)" in r.error
        assert r.output_tokens == 3 and r.tokens_source == "chunks"  # no usage from a stream that did not end


def test_a_reply_in_the_wrong_dialect_is_an_error_that_names_it():
    records, _, _ = asyncio.run(drive(stage(ClosedLoop(1), requests=2), faults=lambda n, b: "chat-as-text", api="chat"))
    for r in records:
        assert r.status == "error" and r.output_times_ns == []
        assert "no output in choices[].delta.content (chat dialect)" in r.error and '"text"' in r.error


def test_the_request_timeout_ends_a_request_that_never_answers_and_says_so():
    records, _, _ = asyncio.run(drive(stage(ClosedLoop(1), requests=1), faults=lambda n, b: "silent", timeout_s=0.3))
    (record,) = records
    assert record.status == "error" and "the request timeout (0.3 s) ended it" in record.error
    # the timer starts before the connect and t_send after it (0.5 ms apart once on a loaded machine): so the
    # 0.3 s less the connect, with room for a slow one
    assert 0.25e9 <= record.t_end_ns - record.t_send_ns < 2e9


def test_constant_arrivals_are_intended_exactly_one_over_rate_apart_and_never_sent_early():
    records, _, _ = asyncio.run(drive(stage(OpenLoop(50.0, "constant"), requests=20)))
    intended = sorted(r.t_intended_ns for r in records)
    assert [b - a for a, b in zip(intended, intended[1:], strict=False)] == [20_000_000] * 19
    assert all(r.t_send_ns >= r.t_intended_ns for r in records)


def test_a_duration_bound_stage_sends_until_its_deadline_and_no_later():
    records, outcome, _ = asyncio.run(drive(stage(OpenLoop(40.0, "constant"), requests=1000, duration_s=1.0)))
    sends = sorted(r.t_intended_ns for r in records if r.phase == "measured")
    assert outcome.stop_reason is None
    assert 0.95e9 <= sends[-1] - sends[0] < 1.0e9  # it ran to its deadline (40/s for 1 s: 40 sends)
    assert len(sends) == pytest.approx(40, abs=1)


def test_a_duration_bound_closed_loop_stage_keeps_every_stream_busy_until_its_deadline():
    # requests of about 40 ms (5 ms TTFT, then 7 gaps of 5 ms)
    records, outcome, _ = asyncio.run(drive(stage(ClosedLoop(2), requests=1000, duration_s=0.5), gap_ms=5.0))
    measured = [r for r in records if r.phase == "measured"]
    first = min(r.t_send_ns for r in measured)
    assert outcome.stop_reason is None and all(r.status == "ok" for r in measured)
    # Nothing new was sent after the deadline. The deadline is checked before t_send is stamped, so a last send
    # let through just in time may be stamped a preemption later: 20 ms of slack, half a request. A stream that
    # went on sending past the deadline would pass that by its second request after it at the latest.
    assert max(r.t_send_ns for r in measured) - first < 0.5e9 + 20e6
    # a stream stops only when a request of its own ends past the deadline (its clock read after the read that
    # ended it; the first send may be stamped late too: 20 ms of slack, half a request)
    for worker in (0, 1):
        assert max(r.t_end_ns for r in measured if r.worker == worker) - first >= 0.5e9 - 20e6, worker


def test_a_chat_conversation_carries_the_earlier_turns_and_answers():
    bodies = []

    def capture(n, body):
        bodies.append(body)

    async def go():
        records = []
        async with running(2.0, 0.5, capture) as url:
            client = StreamingClient(HttpClient(url), DIALECTS["chat"], "fake", {}, 30.0, perf_ns())
            turns = [PreparedRequest(f"{n} question", 3) for n in ("first", "second", "third")]
            runner = LoadRunner(client, iter([WorkItem(turns, conversation=0)] * 1), records.append)
            await runner.run_stage(stage(ClosedLoop(1), requests=1))
            await client.http.close()
        return records

    records = asyncio.run(go())
    assert [r.turn for r in records] == [0, 1, 2] and all(r.status == "ok" for r in records)
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": " tok tok tok"},  # the first answer, as the fake engine streamed it
        {"role": "user", "content": "second question"},
    ]
    assert bodies[2]["messages"] == [  # the third turn carries the whole conversation so far, as messages
        *bodies[1]["messages"],
        {"role": "assistant", "content": " tok tok tok"},
        {"role": "user", "content": "third question"},
    ]


def test_while_the_load_runs_the_collector_sweeps_the_young_generation_as_it_fills_and_nothing_older():
    """run_event_loop: objects from before the load are frozen, young garbage is collected as it fills (a few
    hundred objects at a time, so no single collection holds a wave of request starts), the older generations
    never (their sweep paused the loop for 100-190 ms); the collector's settings come back afterwards."""
    import gc

    from bench.load.runner import YOUNG_THRESHOLD, run_event_loop

    before = gc.get_threshold()
    seen = {}

    def count(phase, info):
        if phase == "stop":
            seen[info["generation"]] = seen.get(info["generation"], 0) + 1

    async def allocate():
        seen["threshold"], seen["frozen"] = gc.get_threshold(), gc.get_freeze_count()
        kept = []
        for i in range(20_000):  # tracked objects, as a wave of request starts allocates them
            kept.append([i])
            if i % 1000 == 0:
                await asyncio.sleep(0)
        seen["young_left"] = gc.get_count()[0]
        return len(kept)

    gc.callbacks.append(count)
    try:
        assert run_event_loop(allocate) == 20_000
    finally:
        gc.callbacks.remove(count)
    assert seen["threshold"][0] == YOUNG_THRESHOLD and min(seen["threshold"][1:]) > 10**9
    assert seen["frozen"] > 0
    assert seen.get(0, 0) >= 20_000 // (YOUNG_THRESHOLD + 50)  # collected as it filled, not once at the end
    assert seen.get(1, 0) == 0 and seen["young_left"] <= YOUNG_THRESHOLD + 1
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_decoded_records_are_swept_from_the_young_generation_before_their_output_times_pile_up():
    """A wave of decodes frees about as much as it allocates, so Python's count alone let the records of ~100
    decodes (their lists of output times) wait for one young collection that took over a token gap. LoadRunner
    counts each finished record's output times toward the next collection: none follows much more than
    YOUNG_WORK_PER_COLLECTION of them."""
    import gc

    from bench.load.runner import YOUNG_WORK_PER_COLLECTION, run_event_loop
    from bench.records import RequestRecord

    tokens, followed = 256, []

    def young_output_times(phase, info):
        if phase == "start" and info["generation"] == 0:
            followed.append(sum(len(o) for o in gc.get_objects(0) if type(o) is list and len(o) == tokens))

    async def finish_a_wave():  # as the finalizer does after a wave of completions: one record after another
        kept = []
        runner = LoadRunner(None, work(), kept.append)  # type: ignore[arg-type]
        for i in range(128):
            record = RequestRecord(request_id=i, worker=0, status="ok", output_times_ns=list(range(tokens)))
            runner._finalize(stage(), record)
        return kept

    gc.callbacks.append(young_output_times)
    try:
        kept = run_event_loop(finish_a_wave)
    finally:
        gc.callbacks.remove(young_output_times)
    assert len(kept) == 128
    assert len(followed) >= 128 * tokens // YOUNG_WORK_PER_COLLECTION
    assert max(followed) <= YOUNG_WORK_PER_COLLECTION + tokens, followed


def test_a_stop_while_a_conversation_turn_is_counted_keeps_that_turns_record():
    """A conversation decodes each turn in its worker (the next turn needs the answer); a stop that cancels the
    worker while the tokenizer counts a finished answer must not cost that answer's record."""
    counting = []

    async def go():
        records = []
        loop = asyncio.get_running_loop()
        async with running(2.0, 0.5, lambda n, body: "no-usage") as url:

            def count_tokens(text, add_special):  # in a thread: the stop lands while the worker awaits it
                counting.append(text)
                loop.call_soon_threadsafe(runner.request_stop, "interrupted by the test")
                time.sleep(0.2)
                return 3

            client = StreamingClient(
                HttpClient(url), DIALECTS["chat"], "fake", {}, 30.0, perf_ns(), count_tokens=count_tokens
            )
            turns = [PreparedRequest(f"{n} question", 3) for n in ("first", "second")]
            runner = LoadRunner(client, iter([WorkItem(turns, conversation=0)] * 1), records.append)
            await runner.run_stage(stage(ClosedLoop(1), requests=1))
            await client.http.close()
        return records, runner

    records, runner = asyncio.run(go())
    assert runner.stop_reason == "interrupted by the test"
    assert counting == [" tok tok tok", "first question"]  # the answer, then the prompt: the stop came at the first
    (record,) = records  # the first turn's, kept; the second was never sent
    assert (record.turn, record.status, record.output_tokens, record.tokens_source) == (0, "ok", 3, "tokenizer")
