"""Check a GPU smoke run's directory and print its figures (scripts/gpu_smoke.sh runs this after bench run).

    python scripts/gpu_smoke_check.py RESULTS/<run_id> [--stages 2] [--json]

Reads only the run's files (manifest.json, telemetry.jsonl, summary.json) with the standard library, so
it checks any run a lab made. It passes when:
  - the run completed, on the llama-server launcher, with an NVIDIA GPU in the manifest's inventory;
  - llama.cpp offloaded to the GPU (the engine record's gpu_offload: layers offloaded, GPU model buffer);
  - NVML telemetry has VRAM in use, utilization above 0, power, and energy (the board's counter or power);
  - the engine's own GPU memory is recorded (per process, or the device's rise since the engine started);
  - every stage reports GPU energy per output token.
Exit code 0 when all hold, 1 when any fails (each failure is printed), 2 when the folder is not a run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MIB = 2**20


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_run(run_dir: Path, stages: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """(figures, failures) of a GPU run: figures to print, and what is missing for a GPU smoke pass."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    telemetry = _read_jsonl(run_dir / "telemetry.jsonl")
    engine = manifest.get("engine") or {}
    hardware = manifest.get("hardware") or {}
    failures: list[str] = []

    if manifest.get("status") != "complete":
        failures.append(f"run status {manifest.get('status')!r}: {manifest.get('incomplete_reason')}")
    if engine.get("launcher") != "llama-server":
        failures.append(f"launcher {engine.get('launcher')!r}, not the CUDA llama-server")
    gpus = hardware.get("gpus") or []
    if not gpus:
        failures.append(f"no GPU in the manifest's inventory ({hardware.get('gpu_note')})")

    offload = engine.get("gpu_offload") or {}
    buffers = offload.get("model_buffers_mib") or {}
    gpu_buffers = {k: v for k, v in buffers.items() if not k.upper().startswith("CPU")}
    if not offload.get("offloaded"):
        failures.append(f"llama.cpp did not offload to the GPU (engine gpu_offload: {offload or 'not recorded'})")

    rows = [g for row in telemetry for g in (row.get("gpus") or [])]

    def seen(field: str, positive: bool = False) -> list[float]:
        values = [g[field] for g in rows if g.get(field) is not None]
        return [v for v in values if v > 0] if positive else values

    vram, util, power = seen("memory_used_bytes", True), seen("utilization_percent", True), seen("power_w", True)
    energy = seen("energy_mj")
    engine_memory = [g for g in rows if g.get("engine_memory_bytes") is not None]
    if not rows:
        failures.append("no GPU rows in telemetry.jsonl (NVML not sampled)")
    for name, values in (("VRAM in use", vram), ("GPU utilization > 0", util), ("power", power)):
        if rows and not values:
            failures.append(f"NVML telemetry has no {name}")
    if rows and not energy and len(power) < 2:
        failures.append("NVML telemetry has neither the energy counter nor two power readings to integrate")
    if rows and not engine_memory:
        failures.append("the engine's own GPU memory is not recorded (neither per process nor the device delta)")

    stage_figures = []
    for stage in summary.get("stages") or []:
        tel = stage.get("telemetry") or {}
        gpu = (tel.get("gpus") or [{}])[0]
        per_token = tel.get("gpu_energy_j_per_output_token")
        if per_token is None or per_token <= 0:
            failures.append(f"stage {stage.get('label') or stage.get('stage')}: no GPU energy per output token")
        stage_figures.append(
            {
                "stage": stage.get("label") or stage.get("stage"),
                "requests_ok": (stage.get("requests") or {}).get("successful"),
                "output_tokens_per_s": stage.get("output_throughput_tokens_per_s"),
                "ttft_p50_ms": (stage.get("ttft_ms") or {}).get("p50"),
                "tpot_p50_ms": (stage.get("tpot_ms") or {}).get("p50"),
                "vram_peak_mib": gpu.get("memory_peak_bytes") and gpu["memory_peak_bytes"] / MIB,
                "engine_vram_peak_mib": gpu.get("engine_memory_peak_bytes") and gpu["engine_memory_peak_bytes"] / MIB,
                "engine_vram_source": gpu.get("engine_memory_source"),
                "utilization_mean_percent": gpu.get("utilization_percent_mean"),
                "power_mean_w": gpu.get("power_w_mean"),
                "energy_j": tel.get("gpu_energy_j"),
                "energy_method": gpu.get("energy_method"),
                "energy_j_per_output_token": per_token,
                "throttle_reasons": gpu.get("throttle_reasons_seen"),
            }
        )
    if stages is not None and len(stage_figures) != stages:
        failures.append(f"{len(stage_figures)} stage(s) in summary.json, expected {stages}")

    figures = {
        "run": run_dir.name,
        "gpu": [f"{g.get('name')} ({(g.get('memory_total_bytes') or 0) / MIB:.0f} MiB)" for g in gpus],
        "driver": gpus[0].get("driver_version") if gpus else None,
        "engine": (engine.get("version") or {}).get("llama_server_version", "").splitlines()[:1],
        "offload": {
            "layers": f"{offload.get('layers_offloaded')}/{offload.get('layers_total')}",
            "gpu_model_buffers_mib": gpu_buffers,
            "kv_buffers_mib": offload.get("kv_buffers_mib"),
        },
        "telemetry_gpu_samples": len(rows),
        "engine_vram_source": sorted({g.get("engine_memory_source") for g in engine_memory if g}),
        "stages": stage_figures,
    }
    return figures, failures


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


def report(figures: dict[str, Any], failures: list[str]) -> str:
    lines = [f"GPU smoke run {figures['run']}"]
    for key in ("gpu", "driver", "engine", "offload", "telemetry_gpu_samples", "engine_vram_source"):
        lines.append(f"  {key:<22} {figures[key]}")
    for stage in figures["stages"]:
        lines.append(f"  stage {stage['stage']}:")
        for key, value in stage.items():
            if key != "stage":
                lines.append(f"    {key:<26} {_format(value)}")
    lines.append("PASS" if not failures else "FAIL:\n" + "\n".join(f"  - {f}" for f in failures))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    stages = int(argv[argv.index("--stages") + 1]) if "--stages" in argv else None
    if stages is not None:
        args.remove(str(stages))
    if len(args) != 1 or not (Path(args[0]) / "manifest.json").exists():
        print("usage: python scripts/gpu_smoke_check.py RUN_DIR [--stages N]  (RUN_DIR holds manifest.json)")
        return 2
    figures, failures = check_run(Path(args[0]), stages)
    print(report(figures, failures))
    if "--json" in argv:  # the figures once more, as one JSON line, for a lab's own records
        print(json.dumps({"figures": figures, "failures": failures}, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
