"""GPU telemetry: the NVML reader against a hand-written fake of nvidia-ml-py 13.615's API (no GPU runs
here, so no reading was recorded), energy sums."""

import re
from collections import namedtuple

import pytest

from bench.metrics.telemetry import summarize_telemetry
from bench.records import TelemetrySample
from bench.telemetry.nvml import THROTTLE_REASONS, Nvml, open_nvml, throttle_names

Memory = namedtuple("Memory", "total used free")
Util = namedtuple("Util", "gpu memory")
Proc = namedtuple("Proc", "pid usedGpuMemory")


class FakePynvml13_615:
    """A fake of nvidia-ml-py 13.615's module (`import pynvml`): its function names, NVMLError and
    constants, with hand-written values that resemble an H100 (invented, not recorded from a GPU).

    GPU 0 supports the energy counter; GPU 1 raises NVMLError for it, as older boards do. It has only the
    old clocks-reasons call, nvmlDeviceGetCurrentClocksThrottleReasons, as bindings before 12.535 did.
    """

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU, NVML_NVLINK_MAX_LINKS = 1, 2, 0, 4

    class NVMLError(Exception):
        pass

    def __init__(self):
        self.energy = [1_000_000, None]

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if self.energy[h] is None:
            raise self.NVMLError("Not Supported")
        self.energy[h] += 50_000  # 50 J between reads
        return self.energy[h]

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}"

    def nvmlDeviceGetMemoryInfo(self, h):
        return Memory(80 * 2**30, 10 * 2**30, 70 * 2**30)

    def nvmlDeviceGetNvLinkState(self, h, link):
        return 1 if h == 0 else 0

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return 16

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetUtilizationRates(self, h):
        return Util(90, 40)

    def nvmlDeviceGetPowerUsage(self, h):
        return 350_000

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return 0x4

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [Proc(111, 8 * 2**30), Proc(999, 2**30)]

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if kind == 1 else 2619

    def nvmlDeviceGetTemperature(self, h, kind):
        return 61


def test_inventory_and_sample_read_every_field_and_survive_unsupported_calls():
    nvml = Nvml(FakePynvml13_615())
    first, second = nvml.inventory()
    assert first["name"] == "NVIDIA H100 80GB HBM3" and first["driver_version"] == "550.54.15"
    assert first["cuda_driver_version"] == "12.4" and first["nvlink_active_links"] == 4
    assert first["total_energy_counter"] is True and second["total_energy_counter"] is False
    gpu0, gpu1 = nvml.sample(engine_pids={111})
    assert gpu0.engine_memory_bytes == 8 * 2**30  # only the engine's process, not pid 999
    assert gpu0.engine_memory_source == "per-process"
    assert gpu0.power_w == 350 and gpu0.throttle_reasons == ["sw_power_cap"]
    assert gpu0.energy_mj is not None and gpu1.energy_mj is None


def test_in_a_container_the_engines_gpu_memory_is_the_rise_since_it_started():
    """NVML reports host PIDs inside a container, so the engine's own pids are not among them."""
    library = FakePynvml13_615()
    nvml = Nvml(library)
    nvml.mark_engine_start()  # 10 GiB in use before the engine loads
    library.nvmlDeviceGetMemoryInfo = lambda h: Memory(80 * 2**30, 34 * 2**30, 46 * 2**30)
    gpu0, _ = nvml.sample(engine_pids={4242})
    assert gpu0.engine_memory_bytes == 24 * 2**30 and gpu0.engine_memory_source == "device delta since engine start"


def test_a_count_or_handle_error_leaves_the_gpu_out_instead_of_aborting():
    library = FakePynvml13_615()

    def broken(i):
        if i == 1:
            raise library.NVMLError("Unknown Error")
        return i

    library.nvmlDeviceGetHandleByIndex = broken
    nvml = Nvml(library)
    assert nvml.handles == [0] and nvml.unopened == 1
    library.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(library.NVMLError("Uninitialized"))
    assert Nvml(library).handles == []


def test_throttle_reason_bits():
    assert throttle_names(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert throttle_names(0x200 | 0x400) == ["board_limit", "reliability"]
    assert throttle_names(0x4 | 0x1000) == ["sw_power_cap", "0x1000"]  # an unnamed bit is said, not dropped
    assert throttle_names(0) == []


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_throttle_reason_names_are_nvidia_ml_pys_own():
    """Every single-bit nvmlClocksEventReason* (else nvmlClocksThrottleReason*) constant of the installed
    nvidia-ml-py, in snake case, is in the table under its bit."""
    pynvml = pytest.importorskip("pynvml")
    named = {}
    for prefix in ("nvmlClocksThrottleReason", "nvmlClocksEventReason"):  # the event names win
        for attr in dir(pynvml):
            value = getattr(pynvml, attr)
            if attr.startswith(prefix) and isinstance(value, int) and value and value & (value - 1) == 0:
                suffix = attr.removeprefix(prefix)
                if suffix != "UserDefinedClocks":  # a deprecated alias of ApplicationsClocksSetting
                    named[value] = _snake(suffix)
    assert named[0x200] == "board_limit" and named[0x400] == "reliability"
    assert THROTTLE_REASONS == named


def test_the_current_clocks_event_reasons_call_is_preferred():
    library = FakePynvml13_615()
    library.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x200 | 0x400
    gpu0, _ = Nvml(library).sample(engine_pids=set())
    assert gpu0.throttle_reasons == ["board_limit", "reliability"]


def samples_of(rows):
    return [TelemetrySample.from_row(row) for row in rows]


def test_energy_from_the_counter_or_from_integrated_power():
    s = 1_000_000_000
    samples = samples_of(
        [
            {
                "t_ns": 0,
                "gpus": [
                    {"index": 0, "energy_mj": 1_000_000, "power_w": 100.0, "memory_used_bytes": 4},
                    {"index": 1, "energy_mj": None, "power_w": 100.0, "memory_used_bytes": 2},
                ],
            },
            {
                "t_ns": 2 * s,
                "gpus": [
                    {"index": 0, "energy_mj": 1_600_000, "power_w": 500.0, "memory_used_bytes": 8},
                    {"index": 1, "energy_mj": None, "power_w": 300.0, "memory_used_bytes": 6},
                ],
            },
        ]
    )
    tel = summarize_telemetry(samples, output_tokens=100)
    gpu0, gpu1 = tel.gpus
    assert gpu0.energy_j == 600 and gpu0.energy_method == "energy counter"
    assert gpu1.energy_j == pytest.approx(400)  # 2 s at a mean of (100 + 300) / 2 W
    assert gpu1.energy_method == "power integrated over samples"
    assert tel.gpu_energy_j == 1000 and tel.gpu_energy_j_per_output_token == 10
    assert gpu0.memory_peak_bytes == 8 and gpu0.memory_steady_bytes == 6


def test_no_gpu_here_is_said_plainly():
    reader, note = open_nvml()
    if reader is not None:
        pytest.skip("this machine has an NVIDIA GPU")
    assert "no NVIDIA GPU" in note or "nvidia-ml-py is not installed" in note


def test_engine_gauges_are_summarized():
    samples = samples_of(
        [
            {"t_ns": 0, "engine_gauges": {"vllm:kv_cache_usage_perc": 0.2, "vllm:num_requests_waiting": 0.0}},
            {"t_ns": 1, "engine_gauges": {"vllm:kv_cache_usage_perc": 0.6, "vllm:num_requests_waiting": 3.0}},
            {"t_ns": 2, "engine_gauges": None},
        ]
    )
    gauges = summarize_telemetry(samples).engine_gauges
    assert gauges["vllm:kv_cache_usage_perc"].max == 0.6
    assert gauges["vllm:kv_cache_usage_perc"].mean == pytest.approx(0.4)
    assert gauges["vllm:num_requests_waiting"].max == 3.0
