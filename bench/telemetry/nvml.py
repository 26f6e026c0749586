"""NVIDIA GPUs through NVML (package nvidia-ml-py, imported as pynvml): inventory and samples.

With no NVML library, no driver or no GPU, `open_nvml()` returns None and a reason; the rig then
says so in the manifest and takes CPU telemetry only.
"""

from __future__ import annotations

from typing import Any

from bench.records import GpuSample

# The clocks event reason bits (nvmlDeviceGetCurrentClocksEventReasons, formerly ...ThrottleReasons) by
# nvidia-ml-py's constant names, in snake case: nvmlClocksEventReason<Name> for 0x1-0x100; 0x200 and
# 0x400 are named only as nvmlClocksThrottleReasonBoardLimit and nvmlClocksThrottleReasonReliability
# (nvidia-ml-py 13.615). A bit outside this table is reported by its hex value, never dropped.
THROTTLE_REASONS = {
    0x1: "gpu_idle",  # nvmlClocksEventReasonGpuIdle
    0x2: "applications_clocks_setting",  # nvmlClocksEventReasonApplicationsClocksSetting
    0x4: "sw_power_cap",  # nvmlClocksEventReasonSwPowerCap
    0x8: "hw_slowdown",  # nvmlClocksEventReasonHwSlowdown
    0x10: "sync_boost",  # nvmlClocksEventReasonSyncBoost
    0x20: "sw_thermal_slowdown",  # nvmlClocksEventReasonSwThermalSlowdown
    0x40: "hw_thermal_slowdown",  # nvmlClocksEventReasonHwThermalSlowdown
    0x80: "hw_power_brake_slowdown",  # nvmlClocksEventReasonHwPowerBrakeSlowdown
    0x100: "display_clock_setting",  # nvmlClocksEventReasonDisplayClockSetting
    0x200: "board_limit",  # nvmlClocksThrottleReasonBoardLimit
    0x400: "reliability",  # nvmlClocksThrottleReasonReliability
}


def throttle_names(mask: int) -> list[str]:
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    bit = 1
    while rest:
        if rest & bit:
            names.append(hex(bit))
            rest &= ~bit
        bit <<= 1
    return names


class Nvml:
    """Reads every GPU. Each call that a GPU does not support yields None for that field."""

    def __init__(self, nvml) -> None:
        self.nvml = nvml
        count = self._try(nvml.nvmlDeviceGetCount) or 0
        found = [self._try(nvml.nvmlDeviceGetHandleByIndex, i) for i in range(count)]
        self.handles = [h for h in found if h is not None]  # a device NVML cannot open is left out, not fatal
        self.unopened = count - len(self.handles)
        self.energy_counter = [self._try(nvml.nvmlDeviceGetTotalEnergyConsumption, h) is not None for h in self.handles]
        self.baseline_used: list[int | None] = []

    def _try(self, call, *args):
        try:
            return call(*args)
        except self.nvml.NVMLError:
            return None

    @staticmethod
    def _text(value) -> str | None:
        return value.decode() if isinstance(value, bytes) else value

    def inventory(self) -> list[dict[str, Any]]:
        n = self.nvml
        cuda = self._try(n.nvmlSystemGetCudaDriverVersion)
        gpus = []
        for index, h in enumerate(self.handles):
            memory = self._try(n.nvmlDeviceGetMemoryInfo, h)
            nvlinks = 0
            for link in range(getattr(n, "NVML_NVLINK_MAX_LINKS", 18)):
                if self._try(n.nvmlDeviceGetNvLinkState, h, link) == 1:
                    nvlinks += 1
            gpus.append(
                {
                    "index": index,
                    "name": self._text(self._try(n.nvmlDeviceGetName, h)),
                    "uuid": self._text(self._try(n.nvmlDeviceGetUUID, h)),
                    "memory_total_bytes": memory.total if memory else None,
                    "driver_version": self._text(self._try(n.nvmlSystemGetDriverVersion)),
                    "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
                    "pcie_generation": self._try(n.nvmlDeviceGetCurrPcieLinkGeneration, h),
                    "pcie_width": self._try(n.nvmlDeviceGetCurrPcieLinkWidth, h),
                    "nvlink_active_links": nvlinks,
                    "power_limit_w": (pl / 1000) if (pl := self._try(n.nvmlDeviceGetEnforcedPowerLimit, h)) else None,
                    "total_energy_counter": self.energy_counter[index],
                }
            )
        return gpus

    def mark_engine_start(self) -> None:
        """Remember each device's memory in use now, before the engine loads (the fallback baseline)."""
        self.baseline_used = [
            getattr(self._try(self.nvml.nvmlDeviceGetMemoryInfo, h), "used", None) for h in self.handles
        ]

    def sample(self, engine_pids: set[int]) -> list[GpuSample]:
        n = self.nvml
        rows = []
        for index, h in enumerate(self.handles):
            memory = self._try(n.nvmlDeviceGetMemoryInfo, h)
            util = self._try(n.nvmlDeviceGetUtilizationRates, h)
            power = self._try(n.nvmlDeviceGetPowerUsage, h)  # mW
            throttle = self._try(_clock_event_reasons(n), h)
            processes = self._try(n.nvmlDeviceGetComputeRunningProcesses, h) or []
            engine_memory = [p.usedGpuMemory for p in processes if p.pid in engine_pids and p.usedGpuMemory]
            engine_bytes, source = (sum(engine_memory), "per-process") if engine_memory else (None, None)
            baseline = self.baseline_used[index] if index < len(self.baseline_used) else None
            if engine_bytes is None and memory is not None and baseline is not None:
                # in a container NVML reports host PIDs, so the engine's own processes are not found
                engine_bytes, source = max(0, memory.used - baseline), "device delta since engine start"
            rows.append(
                GpuSample(
                    index=index,
                    memory_used_bytes=memory.used if memory else None,
                    utilization_percent=util.gpu if util else None,
                    memory_utilization_percent=util.memory if util else None,
                    power_w=power / 1000 if power is not None else None,
                    energy_mj=self._try(n.nvmlDeviceGetTotalEnergyConsumption, h)
                    if self.energy_counter[index]
                    else None,
                    sm_clock_mhz=self._try(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                    memory_clock_mhz=self._try(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                    temperature_c=self._try(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
                    throttle_reasons=throttle_names(throttle) if throttle is not None else None,
                    engine_memory_bytes=engine_bytes,
                    engine_memory_source=source,
                )
            )
        return rows


def _clock_event_reasons(nvml):
    """NVML's current name for the reasons call (ClocksEventReasons), else its older name (ClocksThrottleReasons)."""
    return (
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )


def open_nvml() -> tuple[Nvml | None, str]:
    """(reader, note): the reader is None with a plain reason when there is no usable GPU."""
    try:
        import pynvml
    except ImportError:
        return None, "no GPU telemetry: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"no NVIDIA GPU found (NVML: {exc}); CPU telemetry only"
    reader = Nvml(pynvml)
    if not reader.handles:
        return None, "no NVIDIA GPU found (NVML sees 0 devices); CPU telemetry only"
    return reader, f"{len(reader.handles)} NVIDIA GPU(s) via NVML"
