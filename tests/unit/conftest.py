import asyncio
import threading
from contextlib import contextmanager

from bench.calibrate.server import running


@contextmanager
def fake_engine(faults=None, ttft_ms=5.0, gap_ms=1.0):
    """The in-process fake engine (bench.calibrate.server) on its own thread and event loop, for runs that
    attach to it with --endpoint; yields its base URL."""
    with stoppable_fake_engine(faults, ttft_ms, gap_ms) as (url, _):
        yield url


@contextmanager
def stoppable_fake_engine(faults=None, ttft_ms=5.0, gap_ms=1.0):
    """fake_engine, yielding (its base URL, a function that shuts it down before the block ends)."""
    ready, stop = threading.Event(), None
    url: list[str] = []

    async def serve():
        nonlocal stop
        stop = asyncio.Event()
        async with running(ttft_ms, gap_ms, faults) as base:
            url.append(base)
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the fake engine did not start"

    def shut_down():
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)

    try:
        yield url[0], shut_down
    finally:
        shut_down()
        loop.close()
