#!/usr/bin/env bash
# A `kiln` built without the compiler (`--no-default-features --features cuda`: no LLVM) must run
# artifacts compiled elsewhere. Compiles a small model with the full `kiln`, builds the
# runtime-only binary into its own folder, checks that it links no LLVM and has no `compile`
# command, and runs the artifact with it (`run` and `logits`, compared with the full kiln's).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$KILN_ROOT"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --quiet --bin kiln
full=target/debug/kiln
"$full" gen-model --arch qwen2 --seed 9 -o "$work/m" >/dev/null 2>&1
"$full" compile "$work/m" -o "$work/a.kiln" >/dev/null 2>&1
"$full" logits "$work/a.kiln" --ids 5,6,7 --decode 3 --out "$work/full.json"
"$full" compile "$work/m" -o "$work/c.kiln" --target cuda:sm_80 >/dev/null 2>&1

# Same target folder (the dependencies are shared); the binary is copied out at once.
cargo build --quiet --bin kiln --no-default-features --features cuda
rt="$work/kiln-rt"
cp target/debug/kiln "$rt"
if ldd "$rt" | grep -qi llvm; then
    die "check-runtime-only: the runtime-only kiln links LLVM: $(ldd "$rt" | grep -i llvm)"
fi
if "$rt" compile --help >/dev/null 2>&1; then
    die "check-runtime-only: the runtime-only kiln has a compile command"
fi
"$rt" run "$work/a.kiln" --prompt "hello" --max-tokens 4 >/dev/null 2>&1
"$rt" logits "$work/a.kiln" --ids 5,6,7 --decode 3 --out "$work/rt.json"
cmp -s "$work/full.json" "$work/rt.json" || die "check-runtime-only: the two kilns' logits differ"
# A CUDA artifact: run on a GPU when there is one, else the clean no-driver error.
if out="$("$rt" run "$work/c.kiln" --prompt "hello" --max-tokens 4 2>&1)"; then
    log "check-runtime-only: ran the CUDA artifact on a GPU"
else
    grep -q "CUDA" <<<"$out" || die "check-runtime-only: unexpected error for a CUDA artifact: $out"
fi
# Leave target/debug/kiln as the full kiln for whatever runs next.
cargo build --quiet --bin kiln
log "check-runtime-only: ok (no LLVM; ran a CPU artifact compiled by the full kiln with identical logits)"
