#!/usr/bin/env bash
# Installs the system packages Kiln builds against: LLVM 19 (llvm-sys links
# libLLVM-19 through llvm-config) from Debian 12's own archive.
#
# Idempotent and quiet when nothing is missing: `apt-get update` only runs when
# a package has to be installed. A non-Debian machine can skip all of this by
# pointing LLVM_SYS_191_PREFIX at an LLVM 19 install (see docs/setup.md).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

LLVM_PACKAGES=(llvm-19-dev libpolly-19-dev libzstd-dev)
prefix="${LLVM_SYS_191_PREFIX:-/usr/lib/llvm-19}"

llvm_ok() {
    [[ -x "$prefix/bin/llvm-config" ]] \
        && [[ "$("$prefix/bin/llvm-config" --version 2>/dev/null)" == 19.* ]]
}

if command -v dpkg-query >/dev/null 2>&1; then
    # Debian: install exactly the packages that are missing.
    apt_install "${LLVM_PACKAGES[@]}"
elif ! llvm_ok; then
    die "LLVM 19 not found at $prefix; install LLVM 19 and set LLVM_SYS_191_PREFIX (see docs/setup.md)"
fi

llvm_ok || die "$prefix/bin/llvm-config is not LLVM 19; set LLVM_SYS_191_PREFIX to an LLVM 19 install"
log "deps: LLVM $("$prefix/bin/llvm-config" --version) at $prefix"
