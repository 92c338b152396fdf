#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-quantize from the llama-cpp-python sdist on PyPI (which
# vendors llama.cpp) into .cache/bench/llama.cpp, once. Prints the build directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/.cache/bench"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
src="$cache/llama_cpp_python-$version"
build="$cache/llama.cpp-build-$version-noamx"
mkdir -p "$cache"
if [[ -x "$build/bin/llama-bench" && -x "$build/bin/llama-quantize" ]]; then
    echo "$build"
    exit 0
fi
if ! command -v cmake >/dev/null; then
    echo "installing cmake from PyPI" >&2
    pip install --quiet cmake >&2
fi
if [[ ! -d "$src" ]]; then
    echo "downloading the llama-cpp-python $version sdist" >&2
    # `pip download` would build the package's metadata (needing its build backend); fetch the
    # sdist file itself, found through PyPI's JSON API.
    url="$(python3 -c 'import json,sys,urllib.request,urllib.parse
api = "https://pypi.org/pypi/llama-cpp-python/json"
d = json.load(urllib.request.urlopen(api))
print(urllib.parse.urljoin(api, next(u["url"] for u in d["releases"][sys.argv[1]] if u["packagetype"] == "sdist")))' "$version")"
    python3 -c 'import sys,urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$url" "$cache/llama_cpp_python-$version.tar.gz"
    tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
fi
echo "building llama.cpp (vendored in llama-cpp-python $version); this takes several minutes" >&2
# Every x86 extension this CPU has except AMX: machines (VMs) that advertise AMX without letting a
# process use its tile state kill llama.cpp's AMX path with SIGILL. Kiln does not use AMX either.
x86=()
if grep -q avx2 /proc/cpuinfo; then x86+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON); fi
if grep -q avx_vnni /proc/cpuinfo; then x86+=(-DGGML_AVX_VNNI=ON); fi
if grep -q avx512f /proc/cpuinfo; then x86+=(-DGGML_AVX512=ON); fi
if grep -q avx512vbmi /proc/cpuinfo; then x86+=(-DGGML_AVX512_VBMI=ON); fi
if grep -q avx512_vnni /proc/cpuinfo; then x86+=(-DGGML_AVX512_VNNI=ON); fi
if grep -q avx512_bf16 /proc/cpuinfo; then x86+=(-DGGML_AVX512_BF16=ON); fi
cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF "${x86[@]}" -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$build" --target llama-bench llama-quantize -j "$(nproc)" >&2
echo "$build"
