#!/usr/bin/env bash
# Compile llama.cpp once (CPU, shared libraries) from the llama.cpp source that the llama-cpp-python
# sdist on PyPI vendors, into a cache folder, and take from that one build both
#   - llama.cpp's native `llama-server`: its path is printed on stdout;
#   - given a Python (`bash scripts/build_llama_cpp.sh .venv/bin/python`): llama-cpp-python of the
#     same version (`import llama_cpp`, `python -m llama_cpp.server`), installed there with its
#     [server] extra from a wheel whose llama_cpp/lib holds this build's libllama.so, libggml*.so, ...
# About 5 minutes on 2 cores the first time, seconds after. BENCH_SKIP_LLAMA_SERVER=1 leaves the
# server out (and prints nothing), BENCH_SKIP_LLAMA_CPP_PYTHON=1 the Python package. Labs with CUDA
# use their own build instead: `bench run --llama-server /path/to/llama-server --gpu-layers 99`.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_SDIST_VERSION:-0.3.36}"
cache="${BENCH_CACHE:-$HOME/.cache/selfhost-bench}/llama-cpp-$version"
bin="$cache/bin"  # llama-server and the shared libraries it loads ($ORIGIN), flat
server="$bin/llama-server"
wheels="$cache/wheel"  # llama-cpp-python's wheel, this build's libraries inside
python="${1:-}"
want_server=1 want_python=0
[ "${BENCH_SKIP_LLAMA_SERVER:-0}" != 1 ] || want_server=0
[ -z "$python" ] || [ "${BENCH_SKIP_LLAMA_CPP_PYTHON:-0}" = 1 ] || want_python=1
[ "$(uname -s)" = Linux ] || { echo "error: this script builds for Linux only (shared libraries, RUNPATH \$ORIGIN)" >&2; exit 2; }

need_build=0 need_wheel=0
{ [ "$want_server" = 1 ] && [ ! -x "$server" ]; } && need_build=1
{ [ "$want_python" = 1 ] && [ ! -f "$bin/libllama.so" ]; } && need_build=1
wheel="$(ls "$wheels"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true)"
{ [ "$want_python" = 1 ] && { [ "$need_build" = 1 ] || [ -z "$wheel" ]; }; } && need_wheel=1

if [ "$need_build" = 1 ] && ! command -v cmake >/dev/null; then
  echo "error: cmake is needed (apt-get install cmake)" >&2; exit 2
fi
work="$cache/work"
if [ "$need_build" = 1 ] || [ "$need_wheel" = 1 ]; then
  rm -rf "$work" && mkdir -p "$work"
  "${python:-python3}" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work/sdist" >&2
  tar -xzf "$work"/sdist/llama_cpp_python-"$version".tar.gz -C "$work"
fi
src="$work/llama_cpp_python-$version"

if [ "$need_build" = 1 ]; then
  targets=(llama mtmd)  # what llama-cpp-python loads (ggml comes with them)
  [ "$want_server" = 1 ] && targets+=(llama-server)
  echo "== building llama.cpp (${targets[*]}) from $src/vendor/llama.cpp (minutes)" >&2
  # Shared libraries without version suffixes (libllama.so, as llama-cpp-python's loader wants them),
  # all in build/bin, finding each other through RUNPATH $ORIGIN; no HTTPS, no web UI download.
  cmake -S "$src/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$ORIGIN' \
    -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
    >"$work/cmake.log" 2>&1 || { tail -20 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target "${targets[@]}" -j"$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; exit 1; }
  rm -rf "$cache/bin.new" "$wheels" && mkdir -p "$cache/bin.new"
  cp -p "$work"/build/bin/lib*.so "$cache/bin.new/"
  [ "$want_server" = 1 ] && cp -p "$work/build/bin/llama-server" "$cache/bin.new/"
  rm -rf "$bin" && mv "$cache/bin.new" "$bin"
  if [ "$want_server" = 1 ]; then
    "$server" --version >/dev/null 2>&1 || { echo "error: $server --version failed" >&2; exit 1; }
  fi
fi

if [ "$need_wheel" = 1 ]; then
  echo "== packaging llama-cpp-python $version with the libraries above (seconds)" >&2
  # llama-cpp-python's own build backend with its llama.cpp build switched off: the Python package only
  "$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" \
    --config-settings=cmake.define.LLAMA_BUILD=OFF --config-settings=cmake.define.LLAVA_BUILD=OFF \
    "$src" >&2
  built=("$work"/dist/llama_cpp_python-"$version"-*.whl)
  wheel="$wheels/$(basename "${built[0]}")"
  # add the libraries llama_cpp loads (llama, ggml, mtmd) and theirs to llama_cpp/lib, RECORD updated
  "$python" - "${built[0]}" "$wheel" "$bin" <<'EOF'
import base64, hashlib, re, subprocess, sys, zipfile
from pathlib import Path

src, dst, lib_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
libs, todo = set(), ["libllama.so", "libmtmd.so", "libggml.so"]
while todo:
    name = todo.pop()
    if name in libs or not (lib_dir / name).is_file():
        continue
    libs.add(name)
    dyn = subprocess.run(["readelf", "-d", str(lib_dir / name)], capture_output=True, text=True, check=True).stdout
    todo += re.findall(r"\(NEEDED\).*\[(.+)\]", dyn)
if not {"libllama.so", "libmtmd.so", "libggml.so"} <= libs:
    sys.exit(f"error: {lib_dir} lacks libllama.so, libmtmd.so or libggml.so")

def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

dst.parent.mkdir(parents=True, exist_ok=True)
tmp = dst.with_suffix(".tmp")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
    lines = [ln for ln in zin.read(record).decode().splitlines()
             if ln and not ln.startswith(("llama_cpp/lib/", record + ","))]
    for item in zin.infolist():
        if item.filename != record and not item.filename.startswith("llama_cpp/lib/"):
            zout.writestr(item, zin.read(item))
    for name in sorted(libs):
        data = (lib_dir / name).read_bytes()
        info = zipfile.ZipInfo(f"llama_cpp/lib/{name}", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(info, data)
        lines.append(f"llama_cpp/lib/{name},{digest(data)},{len(data)}")
    zout.writestr(zin.getinfo(record), "\n".join([*lines, f"{record},,"]) + "\n")
tmp.replace(dst)
EOF
fi
rm -rf "$work"

if [ "$want_python" = 1 ]; then
  "$python" -m pip install -q --disable-pip-version-check "$wheel[server]" >&2
  # an llama-cpp-python of this version installed otherwise (compiled by pip) stays unless replaced
  installed="$("$python" -c 'import importlib.util as u; print(u.find_spec("llama_cpp").submodule_search_locations[0])')"
  if ! cmp -s "$installed/lib/libllama.so" "$bin/libllama.so"; then
    echo "== replacing the llama-cpp-python in $installed by this build's" >&2
    "$python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel" >&2
  fi
  "$python" -c 'import llama_cpp' || { echo "error: $python cannot import llama_cpp" >&2; exit 1; }
fi
if [ "$want_server" = 1 ]; then echo "$server"; fi
