#!/usr/bin/env bash
# The runtime must run compiled artifacts without a compiler: kiln-runtime (with
# every feature, on every platform) must not depend on LLVM. Fails if inkwell or
# llvm-sys shows up among its normal dependencies.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$KILN_ROOT"

tree="$(cargo tree -p kiln-runtime --features cuda -e normal --target all \
    --prefix none --format '{p}' 2>/dev/null)" \
    || die "cargo tree -p kiln-runtime failed (run it by hand to see why)"
crates="$(awk '{print $1}' <<<"$tree" | sort -u)"

forbidden="$(grep -E '^(inkwell|inkwell_internals|llvm-sys)$' <<<"$crates" || true)"
if [[ -n "$forbidden" ]]; then
    log "check-runtime-deps: FAILED: kiln-runtime depends on LLVM through:"
    cargo tree -p kiln-runtime --features cuda -e normal --target all \
        $(printf -- '-i %s ' $forbidden) >&2 || true
    exit 1
fi
# Guard against a vacuous pass: the cuda feature must really pull in cudarc.
grep -qx cudarc <<<"$crates" || die "check-runtime-deps: cudarc missing; is the cuda feature wired up?"

log "check-runtime-deps: ok ($(wc -l <<<"$crates") crates, no inkwell/llvm-sys)"
