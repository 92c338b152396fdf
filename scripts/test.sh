#!/usr/bin/env bash
# Runs Kiln's whole test suite and ends with one summary line:
#   summary: N passed, N failed, N skipped
# Uses cargo-nextest when installed (plus `cargo test --doc`, which nextest
# cannot run), plain `cargo test` otherwise; KILN_TEST_RUNNER=cargo forces the
# latter. Snapshots are never written (INSTA_UPDATE=no): commit them by hand
# after `cargo insta review`.
#
# Called by `make test`, which installs LLVM and fetches the model first.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$KILN_ROOT"

export INSTA_UPDATE=no
# Test the CUDA code paths too: they build without CUDA and must fail cleanly.
FEATURES=(--features kiln-runtime/cuda)

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
passed=0 failed=0 skipped=0 broken=()

strip_ansi() { sed -E 's/\x1b\[[0-9;]*[A-Za-z]//g' "$1"; }

# sum_counts FILE LINE_PATTERN WORD: adds up "N WORD" over the lines matching.
sum_counts() {
    strip_ansi "$1" | grep -E "$2" | grep -oE "[0-9]+ $3" | awk '{s += $1} END {print s + 0}'
}

# run NAME CMD...: runs a step, keeping its output for the counts.
run() {
    local name="$1"; shift
    log ""
    log "==> $name: $*"
    "$@" 2>&1 | tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    [[ $rc -eq 0 ]] || broken+=("$name (exit $rc)")
    return "$rc"
}

# count_libtest NAME: adds the "test result:" lines of a libtest run.
count_libtest() {
    local f="$logs/$1.log"
    passed=$((passed + $(sum_counts "$f" '^test result:' passed)))
    failed=$((failed + $(sum_counts "$f" '^test result:' failed)))
    skipped=$((skipped + $(sum_counts "$f" '^test result:' ignored)))
}

# count_nextest NAME: adds nextest's "Summary ... N tests run: ..." line.
count_nextest() {
    local f="$logs/$1.log"
    passed=$((passed + $(sum_counts "$f" 'tests? run:' passed)))
    failed=$((failed + $(sum_counts "$f" 'tests? run:' failed)))
    failed=$((failed + $(sum_counts "$f" 'tests? run:' 'timed out')))
    skipped=$((skipped + $(sum_counts "$f" 'tests? run:' skipped)))
}

if [[ "${KILN_TEST_RUNNER:-}" != cargo ]] && cargo nextest --version >/dev/null 2>&1; then
    run nextest cargo nextest run --workspace "${FEATURES[@]}" --no-fail-fast --no-tests=warn
    count_nextest nextest
    run doctests cargo test --workspace "${FEATURES[@]}" --doc
    count_libtest doctests
    # The runtime without CUDA takes a different path (NotCompiledWithCuda).
    run runtime-no-cuda cargo nextest run -p kiln-runtime --no-fail-fast
    count_nextest runtime-no-cuda
else
    run cargo-test cargo test --workspace "${FEATURES[@]}" --no-fail-fast
    count_libtest cargo-test
    run runtime-no-cuda cargo test -p kiln-runtime --no-fail-fast
    count_libtest runtime-no-cuda
fi

if run runtime-deps bash scripts/check-runtime-deps.sh; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi

if run runtime-only bash scripts/check-runtime-only.sh; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi

log ""
if [[ ${#broken[@]} -gt 0 ]]; then
    log "failed steps: ${broken[*]}"
    # A step that failed without a failing test (a build error, say) still fails.
    [[ $failed -gt 0 ]] || failed=1
fi
echo "summary: $passed passed, $failed failed, $skipped skipped"
[[ ${#broken[@]} -eq 0 ]]
