"""The telemetry sampler: the engine's process tree (RSS, CPU%), the client's own CPU%, and GPUs via NVML.

One thread samples every `interval_s` into telemetry.jsonl, with times relative to the run's
anchor. CPU% is per process over the interval (100 = one core busy), summed over the engine's
tree. Each row records what taking it cost (`sample_cost_us`), so the sampler's overhead is on
record next to the numbers it could disturb.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psutil

from bench.clients.http import perf_ns
from bench.records import TelemetrySample
from bench.results import JsonlAppender
from bench.telemetry.nvml import Nvml

PID_REFRESH = 10


class TelemetrySampler:
    def __init__(
        self,
        out: JsonlAppender,
        anchor_ns: int,
        engine_pids: Callable[[], list[int]],
        interval_s: float = 1.0,
        gpus: Nvml | None = None,
        gauges: Callable[[], dict[str, float] | None] | None = None,
    ) -> None:
        self.out, self.anchor_ns, self.engine_pids, self.interval_s = out, anchor_ns, engine_pids, interval_s
        self.gpus = gpus
        self.gauges = gauges  # the engine's own gauges (KV-cache use, queue, model size) over time
        self._procs: dict[int, psutil.Process] = {}
        self._pids: list[int] = []
        self._samples = 0
        self._client = psutil.Process()
        self._stop = threading.Event()
        self.write_error: OSError | None = None
        self._thread = threading.Thread(target=self._loop, name="telemetry", daemon=True)

    def start(self) -> None:
        self._client.cpu_percent()
        psutil.cpu_percent()
        self.sample(write=False)  # prime cpu_percent's interval
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self, write: bool = True) -> None:
        started = perf_ns()
        rss = 0
        cpu = 0.0
        # Finding the tree scans every process on the machine (about 1 ms, holding the GIL); the tree
        # rarely changes after start-up, so it is looked up again only every PID_REFRESH samples.
        if self._samples % PID_REFRESH == 0 or not self._pids:
            self._pids = self.engine_pids()
        self._samples += 1
        pids = self._pids
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                    proc.cpu_percent()  # first call primes; counts from the next sample on
                else:
                    cpu += proc.cpu_percent()
                rss += proc.memory_info().rss
            except psutil.Error:
                self._procs.pop(pid, None)
        if not write:
            return
        memory = psutil.virtual_memory()
        row = TelemetrySample(
            t_ns=started - self.anchor_ns,
            engine_processes=len(pids),
            engine_rss_bytes=rss if pids else None,
            engine_cpu_percent=cpu if pids else None,
            client_cpu_percent=self._client.cpu_percent(),
            system_cpu_percent=psutil.cpu_percent(),
            system_memory_used_bytes=memory.total - memory.available,
        )
        if self.gpus is not None:
            row.gpus = self.gpus.sample(set(pids))
        if self.gauges is not None:
            try:
                row.engine_gauges = self.gauges()
            except (OSError, ValueError):
                row.engine_gauges = None
        row.sample_cost_us = (perf_ns() - started) / 1000
        try:
            self.out.append(row)
        except OSError as exc:  # a full disk: stop sampling, say so once; the run decides what to do
            self.write_error = exc
            self._stop.set()
