#!/usr/bin/env bash
# Fetches NVIDIA's PTX assembler, `ptxas`, into .cache/ptxas/ so the test suite can check that
# every PTX module Kiln emits assembles for sm_80 and sm_90 — on machines without a GPU or CUDA.
# `ptxas` ships inside the PyPI wheel `nvidia-cuda-nvcc-cu12`, pinned here by version and SHA-256.
#
# Idempotent: when ptxas is already there and runs, this exits at once. The wheel is verified
# before anything is extracted, so an interrupted download leaves nothing half-written.
#
# Environment:
#   KILN_PTXAS_DIR    where to put it (default: <repo>/.cache/ptxas)
#   KILN_NVCC_WHEEL   use this local nvidia-cuda-nvcc-cu12 12.8.93 wheel instead of downloading
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WHEEL_REQ="nvidia-cuda-nvcc-cu12==12.8.93"
WHEEL_FILE="nvidia_cuda_nvcc_cu12-12.8.93-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl"
WHEEL_SHA256="2d6dc36fb7cb5ac9c0b8825bc13d193c35487a315664007287d0126531238011"
MEMBER="nvidia/cuda_nvcc/bin/ptxas"

dest_dir="${KILN_PTXAS_DIR:-$KILN_ROOT/.cache/ptxas}"
dest="$dest_dir/ptxas"

if [[ -x "$dest" ]] && "$dest" --version >/dev/null 2>&1; then
    log "ptxas: up to date: $dest"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || apt_install python3
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip

mkdir -p "$dest_dir"
tmp="$(mktemp -d "$dest_dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

wheel_member ptxas "$WHEEL_REQ" "$WHEEL_FILE" "$WHEEL_SHA256" "$MEMBER" "$tmp/ptxas" \
    "${KILN_NVCC_WHEEL:-}" --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64
chmod +x "$tmp/ptxas"
"$tmp/ptxas" --version >/dev/null || die "the extracted ptxas does not run"
mv "$tmp/ptxas" "$dest"
log "ptxas: $("$dest" --version | tail -1) → $dest"
