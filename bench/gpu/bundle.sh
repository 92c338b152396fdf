#!/usr/bin/env bash
# Package the kiln binary and the shared libraries it needs for the GPU machine.
#
#   bash bench/gpu/bundle.sh [--no-build]
#
# Runs on the development machine. Builds `cargo build --release --bin kiln` (default features:
# the LLVM compiler and the CUDA runtime; extra flags through CARGO_FLAGS, e.g.
# CARGO_FLAGS="--features cuda"), unless --no-build is given, then writes the git-ignored
# .gpu-bundle/kiln.tar.xz:
#
#   bin/kiln     the stripped release binary
#   lib/*.so*    every shared library `ldd` lists for it, except glibc's own libraries and the
#                dynamic loader (the GPU machine has those, in a newer version). libcuda is never
#                bundled: cudarc opens the driver's libcuda.so.1 at run time.
#
# The GPU machine has no Rust, no LLVM and no network; bench/gpu/device.sh unpacks this to
# /tmp/kiln and runs bin/kiln with LD_LIBRARY_PATH=/tmp/kiln/lib (for kiln alone, so that the
# system's Python and PyTorch keep their own libraries). Fails if the bundle exceeds 60 MiB: a
# device call carries at most 64 MiB, the working tree included.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

build=1
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "bundle.sh: unknown argument: $a" >&2; exit 2 ;;
    esac
done

limit_mib=60
out=.gpu-bundle
bin=target/release/kiln

if [[ $build == 1 ]]; then
    # llvm-sys finds LLVM 19 here (as in the Makefile).
    export LLVM_SYS_191_PREFIX="${LLVM_SYS_191_PREFIX:-/usr/lib/llvm-19}"
    # shellcheck disable=SC2086
    cargo build --release --bin kiln ${CARGO_FLAGS:-}
fi
[[ -x $bin ]] || { echo "bundle.sh: $bin missing (run without --no-build)" >&2; exit 1; }

# The binary must be able to emit PTX; warn (not fail) when this build cannot, since a CPU-only
# bundle still gives the device run its correctness baseline.
if ! "$bin" targets 2>/dev/null | grep -qi nvptx; then
    echo "bundle.sh: WARNING: '$bin targets' lists no nvptx target" >&2
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$bin" "$stage/bin/kiln"
strip --strip-all "$stage/bin/kiln"

# glibc's own libraries and the loader come from the target machine; so do the driver's.
skip='^(linux-vdso|linux-gate|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|libresolv\.so|libanl\.so|libnsl\.so|libmvec\.so|libBrokenLocale\.so|libcuda\.so|libnvidia)'
missing=0
while read -r name _arrow path _rest; do
    [[ -n ${name:-} ]] || continue
    if [[ $name =~ $skip || $name == /* ]]; then
        continue
    fi
    if [[ ${path:-} != /* ]]; then
        echo "bundle.sh: ldd cannot resolve $name ($path $_rest)" >&2
        missing=1
        continue
    fi
    # Saved under the name the loader asks for (the soname), dereferenced.
    cp -L "$path" "$stage/lib/$name"
done < <(ldd "$bin")
[[ $missing == 0 ]] || { echo "bundle.sh: unresolved libraries; fix the build machine first" >&2; exit 1; }
strip --strip-unneeded "$stage"/lib/* 2>/dev/null || true

echo "bundle.sh: contents (uncompressed):"
(cd "$stage" && du -b bin/* lib/* | sort -rn | awk '{printf "  %8.1f MiB  %s\n", $1/1048576, $2}')
# Provenance: what was built, from which commit, on which glibc.
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "built: $(date -u +%FT%TZ) on $(uname -m), $(ldd --version | head -1)"
    echo "binary: $(stat -c %y "$bin")"
    "$bin" --version 2>/dev/null || true
    "$bin" targets 2>/dev/null | grep -v '^ *features:' || true
} > "$stage/BUILD-INFO"

mkdir -p "$out"
rm -f "$out/kiln.tar.xz.tmp"
tar -C "$stage" -cf - BUILD-INFO bin lib | xz -9 -T2 -c > "$out/kiln.tar.xz.tmp"
mv "$out/kiln.tar.xz.tmp" "$out/kiln.tar.xz"

size=$(stat -c %s "$out/kiln.tar.xz")
size_mib=$(awk -v s="$size" 'BEGIN{printf "%.1f", s/1048576}')
echo "bundle.sh: $out/kiln.tar.xz is $size_mib MiB ($size bytes)"
if (( size > limit_mib * 1048576 )); then
    echo "bundle.sh: FAILED: the bundle is over $limit_mib MiB; a device call carries at most 64 MiB" >&2
    exit 1
fi
# What travels besides the bundle: tracked and untracked-but-not-ignored files.
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$((tree + size))
echo "bundle.sh: working tree $(awk -v s="$tree" 'BEGIN{printf "%.1f", s/1048576}') MiB + bundle = $(awk -v s="$total" 'BEGIN{printf "%.1f", s/1048576}') MiB of the 64 MiB a device call carries"
if (( total > 64 * 1048576 )); then
    echo "bundle.sh: FAILED: working tree + bundle exceed 64 MiB" >&2
    exit 1
fi
